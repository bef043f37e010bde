//! BPF-LSM on a real kernel: the VM tier (see README.md, "The VM tier").
//!
//! The host kernel refuses `BPF_PROG_TYPE_LSM` programs, so these tests run
//! inside a VM booted by `cargo xtask vm-test`: Debian's 6.12 kernel with
//! `lsm=landlock,lockdown,yama,bpf`, the host's filesystem shared into the
//! guest, this binary built on the host and run inside with
//! `PHANTOM_VM=1`, as root.
//!
//! The whole file is behind phantom-user's `vm-tests` cargo feature, which
//! `cargo test --workspace` does not enable and `cargo xtask vm-test` does:
//! on the host tier this binary has no tests at all (it is not a skipped
//! test, it is a different tier). Built with the feature and run anywhere
//! but the VM (no `PHANTOM_VM=1`), every test fails and says how to run it;
//! in the VM, a kernel without BPF-LSM fails, never skips.

#![cfg(feature = "vm-tests")]

mod common;

use aya::programs::LsmCgroup;
use aya::{Btf, Ebpf};
use common::{fork_child, ChildEnd, Shared};
use phantom_ebpf::bpf::{encode, Insn, Reg::*, SourceLoc};
use phantom_ebpf::elf::{ObjectBuilder, Program};
use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};

const SECURITYFS: &str = "/sys/kernel/security";

/// Every test starts here: these tests mean something only in the VM.
fn in_vm() {
    assert_eq!(
        std::env::var("PHANTOM_VM").as_deref(),
        Ok("1"),
        "this is the VM test tier: run it with `cargo xtask vm-test` (it boots a kernel with BPF-LSM \
         and sets PHANTOM_VM=1); the host kernel cannot load BPF-LSM programs"
    );
    assert!(is_root(), "the VM tests run as root in the guest (cargo xtask vm-test does that)");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The active LSMs, from securityfs (mounted here if the guest has not).
fn active_lsms() -> Vec<String> {
    let list = Path::new(SECURITYFS).join("lsm");
    if !list.exists() {
        let src = CString::new("securityfs").unwrap();
        let dst = CString::new(SECURITYFS).unwrap();
        // SAFETY: valid NUL-terminated strings; no data argument.
        let r = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
        assert_eq!(r, 0, "mount securityfs on {SECURITYFS}: {}", std::io::Error::last_os_error());
    }
    let text = std::fs::read_to_string(&list).unwrap_or_else(|e| panic!("read {}: {e}", list.display()));
    text.trim().split(',').map(str::to_string).collect()
}

#[test]
fn bpf_lsm_is_active() {
    in_vm();
    let lsms = active_lsms();
    assert!(
        lsms.iter().any(|l| l == "bpf"),
        "BPF-LSM is not active in this kernel (active: {}); boot with `lsm=...,bpf`",
        lsms.join(",")
    );
    assert!(Path::new("/sys/kernel/btf/vmlinux").exists(), "the kernel has no BTF; lsm_cgroup needs it");
}

const POLICY_PATH: &str = "policies/vm-deny-all.yaml";
const POLICY: &str = "version: 1\nfiles:\n  open: deny\n";

/// `lsm_cgroup/file_open` returning 0 (deny) for every open: the simplest
/// witness that our instructions, our ELF writer and an lsm_cgroup
/// attachment enforce on a real kernel.
fn deny_all_object() -> Vec<u8> {
    let code = encode(&[Insn::mov64_imm(R0, 0).at(SourceLoc::new(POLICY_PATH, 3, 3)), Insn::exit()])
        .expect("deny-all encodes");
    ObjectBuilder::new("GPL")
        .program(Program::new("lsm_cgroup/file_open", "open_deny_all", code))
        .source(POLICY_PATH, POLICY)
        .build()
        .expect("object builds")
}

/// The guest's cgroup v2 hierarchy (virtme-ng mounts it at /sys/fs/cgroup).
fn cgroup2_root() -> PathBuf {
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if Path::new(root).join("cgroup.procs").exists() && Path::new(root).join("cgroup.subtree_control").exists() {
            return root.into();
        }
    }
    panic!("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified");
}

/// A cgroup v2 directory for one test, removed on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(name: &str) -> TestCgroup {
        let path = cgroup2_root().join(format!("phantom-vm-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestCgroup(path)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A scratch file, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("phantom-vm-{}-{name}", std::process::id()));
        std::fs::write(&path, b"witness\n").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What `open(path)` did in a child that first moved itself into `cgroup`:
/// `Ok(())` or the errno.
fn open_in_cgroup(cgroup: &Path, path: &Path) -> Result<(), i32> {
    let procs = cgroup.join("cgroup.procs");
    let path = path.to_path_buf();
    // Exit codes: 0 opened, 100 + errno refused, 99 could not join.
    let end = fork_child(move || {
        // Opened before joining: the deny-all program must not see this open.
        if let Err(e) = std::fs::write(&procs, "0") {
            let line = format!("child: joining {}: {e}\n", procs.display());
            // SAFETY: writes a live buffer to stderr (the harness does not
            // capture a forked child's eprintln!).
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(99) };
        }
        match File::open(&path) {
            Ok(_) => Ok(()),
            Err(e) => {
                // SAFETY: ends the child at once with the errno in the code.
                unsafe { libc::_exit(100 + e.raw_os_error().unwrap_or(0).min(100)) }
            }
        }
    });
    match end {
        ChildEnd::Exited(0) => Ok(()),
        ChildEnd::Exited(99) => panic!("the child could not join {} (message above)", cgroup.display()),
        ChildEnd::Exited(c) if c >= 100 => Err(c - 100),
        other => panic!("the child ended with {other:?}"),
    }
}

#[test]
fn lsm_cgroup_file_open_deny_all_applies_to_its_cgroup_only() {
    in_vm();
    let cgroup = TestCgroup::new("deny-all");
    let file = TempFile::new("deny-all");
    assert_eq!(open_in_cgroup(&cgroup.0, &file.0), Ok(()), "before attaching, the child opens the file");

    let bytes = deny_all_object();
    let mut ebpf = Ebpf::load(&bytes).unwrap_or_else(|e| panic!("aya parses our object: {e:?}"));
    let btf = Btf::from_sys_fs().unwrap_or_else(|e| panic!("the guest kernel's BTF (/sys/kernel/btf/vmlinux): {e:?}"));
    let prog: &mut LsmCgroup = ebpf
        .program_mut("open_deny_all")
        .expect("aya lists open_deny_all")
        .try_into()
        .expect("lsm_cgroup/file_open is an LsmCgroup program");
    prog.load("file_open", &btf).unwrap_or_else(|e| panic!("the kernel accepts open_deny_all: {e:?}"));
    let cg = File::open(&cgroup.0).unwrap_or_else(|e| panic!("open {}: {e}", cgroup.0.display()));
    let link = prog.attach(&cg).unwrap_or_else(|e| panic!("BPF_LSM_CGROUP attach to {}: {e:?}", cgroup.0.display()));

    assert_eq!(open_in_cgroup(&cgroup.0, &file.0), Err(libc::EPERM), "inside the cgroup, open() is refused with EPERM");
    File::open(&file.0).unwrap_or_else(|e| panic!("outside the cgroup, open() still works: {e}"));
    let other = TestCgroup::new("sibling");
    assert_eq!(open_in_cgroup(&other.0, &file.0), Ok(()), "a sibling cgroup is unaffected");

    prog.detach(link).expect("detach");
    assert_eq!(
        after_detach(|| open_in_cgroup(&cgroup.0, &file.0)),
        Ok(()),
        "after detaching, the child opens the file again"
    );
    drop(ebpf);

    for cg in [cgroup, other] {
        let path = cg.0.clone();
        drop(cg);
        assert!(!path.exists(), "{} is removed", path.display());
    }
}

// ------------------------------------------- programs compiled from policies

use phantom_ebpf::lsm::{self as lsm_backend, Hook};
use phantom_user::lsm::LoadedLsm;

/// Compiles `body` (a policy without its `profile:` line) and loads its
/// LSM programs into the guest kernel.
fn load_policy(name: &str, body: &str) -> LoadedLsm {
    let path = format!("vm-{name}.yaml");
    let text = format!("profile: vm-{name}\n{body}");
    let c = phantom_dsl::compile_str(&path, &text);
    assert!(!c.has_errors(), "{text}\n{:#?}", c.diagnostics);
    let policy = c.policy.unwrap();
    let progs = lsm_backend::compile(&policy, &lsm_backend::Options::default().source(&path, &text))
        .unwrap_or_else(|e| panic!("compile {name}: {e}"));
    LoadedLsm::load(&progs).unwrap_or_else(|e| panic!("the kernel loads {name}'s programs: {e}"))
}

/// Every kernel switch, all allowed but `deny`.
fn switches(deny: &[&str]) -> String {
    let mut s = String::from("kernel:\n");
    for k in ["ptrace", "mount", "bpf", "user_namespaces", "io_uring", "kernel_modules", "signals", "raw_sockets"] {
        s += &format!("  {k}: {}\n", if deny.contains(&k) { "deny" } else { "allow" });
    }
    s
}

/// Runs `action` in a forked child: after `setup`, and after moving itself
/// into `cgroup` when there is one. `Ok(())` when `action` returned 0, else
/// the errno it returned.
fn child_result(cgroup: Option<&Path>, setup: impl FnOnce() -> i32, action: impl FnOnce() -> i32) -> Result<(), i32> {
    child_run(cgroup, setup, action).0
}

/// [`child_result`] and the child's pid (as the kernel's audit records
/// name it: the tgid in the initial pid namespace).
fn child_run(
    cgroup: Option<&Path>,
    setup: impl FnOnce() -> i32,
    action: impl FnOnce() -> i32,
) -> (Result<(), i32>, u32) {
    let mut fds = [0i32; 2];
    // SAFETY: a two-element array for pipe2.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2");
    let (rd, wr) = (fds[0], fds[1]);
    let action = move || {
        // SAFETY: getpid has no preconditions; writes 4 bytes of a live value.
        unsafe {
            let pid = libc::getpid() as u32;
            libc::write(wr, (&pid as *const u32).cast(), 4);
        }
        action()
    };
    let result = child_result_inner(cgroup, setup, action);
    let mut pid = 0u32;
    // SAFETY: reads 4 bytes into a live u32; both fds are ours.
    unsafe {
        libc::close(wr);
        let n = libc::read(rd, (&mut pid as *mut u32).cast(), 4);
        libc::close(rd);
        assert_eq!(n, 4, "the child reports its pid before acting");
    }
    (result, pid)
}

fn child_result_inner(
    cgroup: Option<&Path>,
    setup: impl FnOnce() -> i32,
    action: impl FnOnce() -> i32,
) -> Result<(), i32> {
    let procs = cgroup.map(|c| c.join("cgroup.procs"));
    // Exit codes: 0 done, 100 + errno refused, 98 setup failed, 99 could not join.
    let end = fork_child(move || {
        let say = |line: String| {
            // SAFETY: writes a live buffer to stderr.
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
        };
        let e = setup();
        if e != 0 {
            say(format!("child: setup failed: errno {e}\n"));
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(98) };
        }
        if let Some(procs) = &procs {
            if let Err(e) = std::fs::write(procs, "0") {
                say(format!("child: joining {}: {e}\n", procs.display()));
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(99) };
            }
        }
        let e = action();
        // SAFETY: ends the child at once with the errno in the code.
        unsafe { libc::_exit(if e == 0 { 0 } else { 100 + e.min(100) }) }
    });
    match end {
        ChildEnd::Exited(0) => Ok(()),
        ChildEnd::Exited(98) => panic!("the child's setup failed (message above)"),
        ChildEnd::Exited(99) => panic!("the child could not join its cgroup (message above)"),
        ChildEnd::Exited(c) if c >= 100 => Err(c - 100),
        other => panic!("the child ended with {other:?}"),
    }
}

/// `check` until it succeeds, for at most 5 s. LoadedLsm attaches lsm_cgroup
/// programs with BPF links, and a link lives while any process holds its
/// fd: a child that another test forks at that moment (the tests share one
/// multi-threaded process) inherits a copy, so detaching takes effect when
/// that child exits, not at once.
fn after_detach(check: impl Fn() -> Result<(), i32>) -> Result<(), i32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = check();
        if r.is_ok() || std::time::Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn no_setup() -> i32 {
    0
}

/// `open(path, flags, 0600)` and close: 0 or the errno.
fn try_open(path: &Path, flags: i32) -> i32 {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; the fd is closed right away.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        return errno();
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    0
}

/// A scratch directory tree, removed on drop.
struct TempTree(PathBuf);

impl TempTree {
    fn new(name: &str, files: &[&str]) -> TempTree {
        let root = std::env::temp_dir().join(format!("phantom-vm-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        for f in files {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"witness\n").unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        }
        TempTree(root.canonicalize().unwrap())
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes the cgroups and checks that nothing is left behind.
fn remove_cgroups(cgroups: Vec<TestCgroup>) {
    for cg in cgroups {
        let path = cg.0.clone();
        drop(cg);
        assert!(!path.exists(), "{} is removed", path.display());
    }
}

#[test]
fn lsm_file_open_denies_the_carve_outs_by_access_and_whole_components() {
    in_vm();
    let tree = TempTree::new(
        "file-open",
        &[
            "ws/.git/hooks/pre-commit",
            "ws/.git/hooksX/pre-commit",
            "ws/ok.txt",
            "ws/build-1/out",
            "ws/buil/out",
            "secret",
        ],
    );
    let ws = tree.0.join("ws");
    let secret = tree.0.join("secret");
    let body = format!(
        "{}filesystem:\n  rules:\n    - deny: {ws}/.git/hooks\n      access: [write, create, remove]\n    - deny: {secret}\n    - deny: {ws}/build*\n      access: [write]\n",
        switches(&[]),
        ws = ws.display(),
        secret = secret.display(),
    );
    let mut lsm = load_policy("file-open", &body);
    assert_eq!(lsm.hooks(), [Hook::FileOpen]);
    let cgroup = TestCgroup::new("file-open");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));

    let hook = ws.join(".git/hooks/pre-commit");
    let inside = |path: &Path, flags: i32| {
        let path = path.to_path_buf();
        child_result(Some(&cgroup.0), no_setup, move || try_open(&path, flags))
    };
    use libc::{O_CREAT, O_DIRECTORY, O_RDONLY, O_RDWR, O_WRONLY};
    // .git/hooks: write and create denied, read allowed.
    assert_eq!(inside(&hook, O_RDONLY), Ok(()), "reading a hook is allowed (the rule denies write only)");
    assert_eq!(inside(&hook, O_WRONLY), Err(libc::EPERM), "writing a hook is denied");
    assert_eq!(inside(&hook, O_RDWR), Err(libc::EPERM), "read-write includes write");
    assert_eq!(inside(&ws.join(".git/hooks"), O_RDONLY | O_DIRECTORY), Ok(()), "listing the directory is reading");
    assert_eq!(inside(&ws.join(".git/hooks/new"), O_CREAT | O_WRONLY), Err(libc::EPERM), "creating a hook is denied");
    // Component boundary: a sibling that only shares the prefix is not denied.
    assert_eq!(inside(&ws.join(".git/hooksX/pre-commit"), O_WRONLY), Ok(()), "hooksX is not hooks");
    assert_eq!(inside(&ws.join("ok.txt"), O_RDWR), Ok(()), "the rest of the workspace is writable");
    // The secret: every access denied.
    assert_eq!(inside(&secret, O_RDONLY), Err(libc::EPERM), "the secret is never readable");
    assert_eq!(inside(&secret, O_WRONLY), Err(libc::EPERM), "nor writable");
    // Prefix glob on the last component: build-1 is covered, buil is not.
    assert_eq!(inside(&ws.join("build-1/out"), O_WRONLY), Err(libc::EPERM), "build* covers build-1");
    assert_eq!(inside(&ws.join("build-1/out"), O_RDONLY), Ok(()), "build* denies write only");
    assert_eq!(inside(&ws.join("buil/out"), O_WRONLY), Ok(()), "buil does not start with build");

    // Outside the cgroup nothing changes.
    let outside = |path: &Path, flags: i32| {
        let path = path.to_path_buf();
        child_result(None, no_setup, move || try_open(&path, flags))
    };
    assert_eq!(outside(&hook, O_WRONLY), Ok(()), "outside the cgroup, hooks are writable");
    assert_eq!(outside(&secret, O_RDONLY), Ok(()), "outside the cgroup, the secret is readable");
    let sibling = TestCgroup::new("file-open-sibling");
    assert_eq!(
        child_result(Some(&sibling.0), no_setup, || try_open(&secret, O_RDONLY)),
        Ok(()),
        "a sibling cgroup is unaffected"
    );

    drop(lsm);
    assert_eq!(after_detach(|| inside(&secret, O_RDONLY)), Ok(()), "dropping the loader detaches the programs");
    remove_cgroups(vec![cgroup, sibling]);
}

/// `mount -t tmpfs` on `target` in the child's own mount namespace (made
/// private in `setup`, before the child joins the cgroup).
fn private_mount_ns() -> i32 {
    // SAFETY: affects only this (forked) child.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return errno();
    }
    let root = CString::new("/").unwrap();
    // SAFETY: valid strings; a propagation change takes no source or data.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return errno();
    }
    0
}

fn mount_tmpfs(target: &Path) -> i32 {
    let src = CString::new("tmpfs").unwrap();
    let dst = CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings; no data.
    let r = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        return errno();
    }
    0
}

/// The new mount API: fsopen, fsconfig(CREATE), fsmount, move_mount.
fn move_mount_tmpfs(target: &Path) -> i32 {
    let fstype = CString::new("tmpfs").unwrap();
    let dst = CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
    let empty = CString::new("").unwrap();
    // SAFETY: raw syscalls with valid strings; fds are closed on exit.
    unsafe {
        let fs = libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), 1 /* FSOPEN_CLOEXEC */) as i32;
        if fs < 0 {
            return errno();
        }
        let null = std::ptr::null::<libc::c_char>();
        if libc::syscall(libc::SYS_fsconfig, fs, 6 /* FSCONFIG_CMD_CREATE */, null, null, 0) < 0 {
            return errno();
        }
        let mnt = libc::syscall(libc::SYS_fsmount, fs, 1 /* FSMOUNT_CLOEXEC */, 0) as i32;
        if mnt < 0 {
            return errno();
        }
        let r = libc::syscall(
            libc::SYS_move_mount,
            mnt,
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            4, /* MOVE_MOUNT_F_EMPTY_PATH */
        );
        if r < 0 {
            return errno();
        }
    }
    0
}

#[test]
fn lsm_sb_mount_and_move_mount_are_denied_in_the_cgroup_only() {
    in_vm();
    let tree = TempTree::new("mount", &["mnt/.keep"]);
    let target = tree.0.join("mnt");
    let mut lsm = load_policy("mount", &switches(&["mount"]));
    assert_eq!(lsm.hooks(), [Hook::SbMount, Hook::MoveMount]);
    let cgroup = TestCgroup::new("mount");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));

    let t = target.clone();
    assert_eq!(child_result(Some(&cgroup.0), private_mount_ns, move || mount_tmpfs(&t)), Err(libc::EPERM), "mount(2)");
    let t = target.clone();
    assert_eq!(
        child_result(Some(&cgroup.0), private_mount_ns, move || move_mount_tmpfs(&t)),
        Err(libc::EPERM),
        "fsmount + move_mount(2)"
    );
    let t = target.clone();
    assert_eq!(child_result(None, private_mount_ns, move || mount_tmpfs(&t)), Ok(()), "outside: mount(2) works");
    let t = target.clone();
    assert_eq!(child_result(None, private_mount_ns, move || move_mount_tmpfs(&t)), Ok(()), "outside: move_mount works");

    drop(lsm);
    assert_eq!(
        after_detach(|| {
            let t = target.clone();
            child_result(Some(&cgroup.0), private_mount_ns, move || mount_tmpfs(&t))
        }),
        Ok(()),
        "detached"
    );
    remove_cgroups(vec![cgroup]);
}

fn unshare_user() -> i32 {
    // SAFETY: affects only this (forked) child.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return errno();
    }
    0
}

#[test]
fn lsm_userns_create_is_denied_in_the_cgroup_only() {
    in_vm();
    let mut lsm = load_policy("userns", &switches(&["user_namespaces"]));
    assert_eq!(lsm.hooks(), [Hook::UsernsCreate]);
    let cgroup = TestCgroup::new("userns");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));
    assert_eq!(child_result(Some(&cgroup.0), no_setup, unshare_user), Err(libc::EPERM), "unshare(CLONE_NEWUSER)");
    assert_eq!(child_result(None, no_setup, unshare_user), Ok(()), "outside the cgroup it works");
    drop(lsm);
    assert_eq!(after_detach(|| child_result(Some(&cgroup.0), no_setup, unshare_user)), Ok(()), "detached");
    remove_cgroups(vec![cgroup]);
}

/// `bpf(BPF_MAP_CREATE)` of a one-entry array; the fd is closed.
fn create_map() -> i32 {
    let mut attr = [0u32; 32]; // union bpf_attr: map_type, key_size, value_size, max_entries, ...
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4;
    attr[2] = 8;
    attr[3] = 1;
    // SAFETY: BPF_MAP_CREATE (0) reads `size_of_val(&attr)` bytes of a live buffer.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), std::mem::size_of_val(&attr)) } as i32;
    if fd < 0 {
        return errno();
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    0
}

#[test]
fn lsm_bpf_is_denied_in_the_cgroup_only() {
    in_vm();
    let mut lsm = load_policy("bpf", &switches(&["bpf"]));
    assert_eq!(lsm.hooks(), [Hook::Bpf]);
    let cgroup = TestCgroup::new("bpf");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));
    assert_eq!(child_result(Some(&cgroup.0), no_setup, create_map), Err(libc::EPERM), "bpf(BPF_MAP_CREATE)");
    assert_eq!(child_result(None, no_setup, create_map), Ok(()), "outside the cgroup it works");
    drop(lsm);
    assert_eq!(after_detach(|| child_result(Some(&cgroup.0), no_setup, create_map)), Ok(()), "detached");
    remove_cgroups(vec![cgroup]);
}

#[test]
fn lsm_all_hooks_of_one_policy_attach_together() {
    in_vm();
    let tree = TempTree::new("all", &["secret", "mnt/.keep"]);
    let secret = tree.0.join("secret");
    let body = format!(
        "{}filesystem:\n  rules:\n    - deny: {}\n",
        switches(&["mount", "bpf", "user_namespaces"]),
        secret.display()
    );
    let mut lsm = load_policy("all", &body);
    assert_eq!(lsm.hooks(), [Hook::FileOpen, Hook::SbMount, Hook::MoveMount, Hook::Bpf, Hook::UsernsCreate]);
    let cgroup = TestCgroup::new("all");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));
    let cg = Some(cgroup.0.as_path());
    let s = secret.clone();
    assert_eq!(child_result(cg, no_setup, move || try_open(&s, libc::O_RDONLY)), Err(libc::EPERM));
    let t = tree.0.join("mnt");
    assert_eq!(child_result(cg, private_mount_ns, move || mount_tmpfs(&t)), Err(libc::EPERM));
    assert_eq!(child_result(cg, no_setup, unshare_user), Err(libc::EPERM));
    assert_eq!(child_result(cg, no_setup, create_map), Err(libc::EPERM));
    // Other files still open (the program allows what no rule denies).
    let ok = tree.0.join("mnt/.keep");
    assert_eq!(child_result(cg, no_setup, move || try_open(&ok, libc::O_RDWR)), Ok(()));
    lsm.detach_all();
    assert_eq!(after_detach(|| child_result(cg, no_setup, create_map)), Ok(()), "detached");
    drop(lsm);
    remove_cgroups(vec![cgroup]);
}

/// Opens (creating when `create`) the directory chain `names` under `dir`
/// with openat, so the whole path may exceed PATH_MAX. Returns the fd of
/// the deepest directory, or -errno.
fn descend(dir: &Path, names: &[String], create: bool) -> i32 {
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path; fds are closed as the walk goes down.
    let mut fd = unsafe { libc::open(c.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC) };
    for n in names {
        if fd < 0 {
            return -errno();
        }
        let n = CString::new(n.as_str()).unwrap();
        // SAFETY: fd is a directory we own; n is a valid name.
        unsafe {
            if create {
                libc::mkdirat(fd, n.as_ptr(), 0o700);
            }
            let next = libc::openat(fd, n.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC);
            libc::close(fd);
            fd = next;
        }
    }
    if fd < 0 {
        -errno()
    } else {
        fd
    }
}

#[test]
fn lsm_file_open_denies_paths_longer_than_its_buffer() {
    in_vm();
    let tree = TempTree::new("long-path", &["short"]);
    // 24 components of 200 bytes: the path is longer than the 4096-byte buffer.
    let names: Vec<String> = (0..24).map(|i| format!("{i:02}{}", "d".repeat(198))).collect();
    let deep = descend(&tree.0, &names, true);
    assert!(deep >= 0, "building the deep tree: errno {}", -deep);
    let f = CString::new("f").unwrap();
    // SAFETY: deep is our directory fd; the new file's fd is closed at once.
    unsafe {
        let fd = libc::openat(deep, f.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o600);
        assert!(fd >= 0, "creating the deep file: errno {}", errno());
        libc::close(fd);
        libc::close(deep);
    }
    let body = format!("{}filesystem:\n  rules:\n    - deny: {}/unrelated\n", switches(&[]), tree.0.display());
    let mut lsm = load_policy("long-path", &body);
    let cgroup = TestCgroup::new("long-path");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));

    // The walk down happens before the child joins the cgroup.
    let open_deep = |cg: Option<&Path>| {
        let fd = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(-1));
        let (fd1, fd2) = (fd.clone(), fd);
        let (root, names) = (tree.0.clone(), names.clone());
        child_result(
            cg,
            move || {
                let d = descend(&root, &names, false);
                fd1.store(d, std::sync::atomic::Ordering::SeqCst);
                if d < 0 {
                    -d
                } else {
                    0
                }
            },
            move || {
                let f = CString::new("f").unwrap();
                // SAFETY: the directory fd opened in setup; closed at exit.
                let r =
                    unsafe { libc::openat(fd2.load(std::sync::atomic::Ordering::SeqCst), f.as_ptr(), libc::O_RDONLY) };
                if r < 0 {
                    errno()
                } else {
                    0
                }
            },
        )
    };
    assert_eq!(open_deep(Some(&cgroup.0)), Err(libc::EPERM), "a path longer than the buffer is denied, never allowed");
    assert_eq!(open_deep(None), Ok(()), "outside the cgroup the deep file opens");
    let short = tree.0.join("short");
    assert_eq!(
        child_result(Some(&cgroup.0), no_setup, move || try_open(&short, libc::O_RDONLY)),
        Ok(()),
        "short paths open"
    );
    drop(lsm);
    remove_cgroups(vec![cgroup]);
}

// ------------------------------------------------------------ audit records

use phantom_ebpf::audit::{AuditRecord, Layer, Object, Verdict, NO_RULE};
use phantom_user::lsm::AuditReader;
use std::os::unix::fs::MetadataExt;

/// A cgroup v2 directory's id (its inode number, what the kernel's
/// `kn->id` and `bpf_get_current_cgroup_id` return).
fn cgroup_id(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).ino()
}

/// Every record the programs wrote so far (they write before the
/// syscall returns, so a finished child's records are all there).
fn records(reader: &mut AuditReader) -> Vec<AuditRecord> {
    reader.drain().into_iter().map(|r| r.unwrap_or_else(|e| panic!("a record decodes: {e}"))).collect()
}

/// The one record of `hook` by `pid`, checked for layer, verdict and
/// sandbox (the cgroup's id).
fn the_record<'a>(recs: &'a [AuditRecord], hook: Hook, pid: u32, cgroup: &Path, verdict: Verdict) -> &'a AuditRecord {
    let mine: Vec<&AuditRecord> = recs.iter().filter(|r| r.hook == hook.id() && r.pid == pid).collect();
    assert_eq!(mine.len(), 1, "one {hook:?} record by pid {pid}; all records: {recs:#?}");
    let r = mine[0];
    assert_eq!(r.layer, Layer::BpfLsm.code(), "{r:?}");
    assert_eq!(r.verdict, verdict.code(), "{r:?}");
    assert_eq!(r.sandbox, cgroup_id(cgroup), "the record names the sandbox's cgroup: {r:?}");
    assert_eq!(r.tid, pid, "a single-threaded child: {r:?}");
    assert!(!r.comm().is_empty(), "{r:?}");
    r
}

/// Compiles and loads a policy, and takes its audit reader.
fn load_with_audit(name: &str, body: &str) -> (LoadedLsm, AuditReader, String) {
    let mut lsm = load_policy(name, body);
    let reader = lsm.audit().unwrap_or_else(|e| panic!("audit reader: {e}"));
    (lsm, reader, format!("profile: vm-{name}\n{body}"))
}

fn line_of(text: &str, needle: &str) -> u32 {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("`{needle}` in {text}")) as u32 + 1
}

#[test]
fn lsm_file_open_denials_are_recorded_with_path_rule_and_line() {
    in_vm();
    let tree = TempTree::new("audit-open", &["secret", "ok"]);
    let secret = tree.0.join("secret");
    let body = format!("{}filesystem:\n  rules:\n    - deny: {}\n", switches(&[]), secret.display());
    let (mut lsm, mut reader, text) = load_with_audit("audit-open", &body);
    let cgroup = TestCgroup::new("audit-open");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));
    let s = secret.clone();
    let (r, pid) = child_run(Some(&cgroup.0), no_setup, move || try_open(&s, libc::O_RDONLY));
    assert_eq!(r, Err(libc::EPERM));
    let ok = tree.0.join("ok");
    let (r, ok_pid) = child_run(Some(&cgroup.0), no_setup, move || try_open(&ok, libc::O_RDONLY));
    assert_eq!(r, Ok(()));
    let s = secret.clone();
    let (r, out_pid) = child_run(None, no_setup, move || try_open(&s, libc::O_RDONLY));
    assert_eq!(r, Ok(()), "outside the cgroup the secret opens");

    let recs = records(&mut reader);
    let rec = the_record(&recs, Hook::FileOpen, pid, &cgroup.0, Verdict::Deny);
    assert_eq!(rec.object, Object::Path(secret.as_os_str().as_encoded_bytes().to_vec()));
    assert_eq!(rec.rule, 0, "filesystem.rules[0]");
    assert_eq!(rec.line, line_of(&text, "- deny:"));
    assert_eq!(rec.file, 0);
    assert_eq!(rec.detail & phantom_ebpf::lsm::FMODE_READ, phantom_ebpf::lsm::FMODE_READ, "f_mode has read");
    assert!(recs.iter().all(|r| r.pid != ok_pid && r.pid != out_pid), "allowed opens are not recorded: {recs:#?}");
    drop(lsm);
    remove_cgroups(vec![cgroup]);
}

/// Copies of /bin/true under `dir/allowed/` and `dir/denied/`.
fn true_copies(tree: &TempTree) -> (PathBuf, PathBuf) {
    let mut out = Vec::new();
    for d in ["allowed", "denied"] {
        let dir = tree.0.join(d);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("true");
        std::fs::copy("/bin/true", &p).unwrap_or_else(|e| panic!("copy /bin/true: {e}"));
        out.push(p);
    }
    (out[0].clone(), out[1].clone())
}

/// execv(path) in the child: returns only on failure (the errno); a
/// successful exec of `true` exits 0.
fn exec(path: &Path) -> i32 {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let argv = [c.as_ptr(), std::ptr::null()];
    // SAFETY: a NUL-terminated path and a NULL-terminated argv.
    unsafe { libc::execv(c.as_ptr(), argv.as_ptr()) };
    errno()
}

#[test]
fn lsm_exec_allow_list_denies_other_executables_in_the_cgroup_only() {
    in_vm();
    let tree = TempTree::new("exec", &[]);
    let (allowed, denied) = true_copies(&tree);
    // The dynamic loader is opened for exec too (PT_INTERP): it must be on
    // the list, by its real path (bpf_d_path resolves symlinks).
    let ld = std::fs::canonicalize("/lib64/ld-linux-x86-64.so.2").expect("the x86_64 dynamic loader");
    let body = format!("{}exec:\n  allow: [{}, {}]\n", switches(&[]), allowed.display(), ld.display());
    let (mut lsm, mut reader, text) = load_with_audit("exec", &body);
    assert_eq!(lsm.hooks(), [Hook::FileOpen]);
    let cgroup = TestCgroup::new("exec");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));

    let a = allowed.clone();
    let allowed_run = child_result(Some(&cgroup.0), no_setup, move || exec(&a));
    let d = denied.clone();
    let (r, pid) = child_run(Some(&cgroup.0), no_setup, move || exec(&d));
    if allowed_run != Ok(()) || r != Err(libc::EPERM) {
        panic!(
            "allowed exec: {allowed_run:?} (want Ok), denied exec: {r:?} (want EPERM); records: {:?}",
            records(&mut reader).iter().map(|r| (r.pid, r.object.display(), r.detail, r.comm())).collect::<Vec<_>>()
        );
    }
    // Reading the same file is not executing it.
    let d = denied.clone();
    assert_eq!(child_result(Some(&cgroup.0), no_setup, move || try_open(&d, libc::O_RDONLY)), Ok(()));
    let d = denied.clone();
    assert_eq!(child_result(None, no_setup, move || exec(&d)), Ok(()), "outside the cgroup it runs");

    let recs = records(&mut reader);
    let rec = the_record(&recs, Hook::FileOpen, pid, &cgroup.0, Verdict::Deny);
    assert_eq!(rec.object, Object::Path(denied.as_os_str().as_encoded_bytes().to_vec()));
    assert_eq!(rec.rule, NO_RULE, "an allow-list miss has no rule");
    assert_eq!(rec.line, line_of(&text, "allow: ["));
    assert_ne!(rec.detail & phantom_ebpf::lsm::FMODE_EXEC, 0, "f_mode has FMODE_EXEC: {rec:?}");
    assert_eq!(recs.len(), 1, "only the refused exec is recorded: {recs:#?}");
    drop(lsm);
    remove_cgroups(vec![cgroup]);
}

fn unix_connect_path(path: &Path) -> i32 {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
    }
}

fn unix_connect_abstract(name: &str) -> i32 {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    match std::os::unix::net::UnixStream::connect_addr(&addr) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
    }
}

#[test]
fn lsm_unix_connect_allows_listed_paths_and_abstract_names_only() {
    in_vm();
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    let tree = TempTree::new("unix", &[]);
    let ok_path = tree.0.join("ok.sock");
    let no_path = tree.0.join("no.sock");
    let ok_name = format!("phantom-vm-{}-ok", std::process::id());
    let no_name = format!("phantom-vm-{}-no", std::process::id());
    let _listeners = [
        UnixListener::bind(&ok_path).unwrap(),
        UnixListener::bind(&no_path).unwrap(),
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(ok_name.as_bytes()).unwrap()).unwrap(),
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(no_name.as_bytes()).unwrap()).unwrap(),
    ];
    let body = format!("{}  unix_sockets:\n    connect: [{}, \"@{ok_name}\"]\n", switches(&[]), ok_path.display());
    let (mut lsm, mut reader, text) = load_with_audit("unix", &body);
    assert_eq!(lsm.hooks(), [Hook::SocketConnect]);
    let cgroup = TestCgroup::new("unix");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));
    let cg = Some(cgroup.0.as_path());

    let p = ok_path.clone();
    assert_eq!(child_result(cg, no_setup, move || unix_connect_path(&p)), Ok(()), "a listed path");
    let n = ok_name.clone();
    assert_eq!(child_result(cg, no_setup, move || unix_connect_abstract(&n)), Ok(()), "a listed abstract name");
    let p = no_path.clone();
    let (r, path_pid) = child_run(cg, no_setup, move || unix_connect_path(&p));
    assert_eq!(r, Err(libc::EPERM), "an unlisted path");
    let n = no_name.clone();
    let (r, name_pid) = child_run(cg, no_setup, move || unix_connect_abstract(&n));
    assert_eq!(r, Err(libc::EPERM), "an unlisted abstract name");
    // A prefix of a listed abstract name is another name.
    let n = ok_name[..ok_name.len() - 1].to_string();
    assert_eq!(child_result(cg, no_setup, move || unix_connect_abstract(&n)), Err(libc::EPERM), "a prefix");
    // Other families are not this hook's business.
    assert_eq!(
        child_result(cg, no_setup, || {
            match std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.connect("127.0.0.1:9")) {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
            }
        }),
        Ok(()),
        "a UDP connect"
    );
    let p = no_path.clone();
    assert_eq!(child_result(None, no_setup, move || unix_connect_path(&p)), Ok(()), "outside: any path");
    let n = no_name.clone();
    assert_eq!(child_result(None, no_setup, move || unix_connect_abstract(&n)), Ok(()), "outside: any name");

    let recs = records(&mut reader);
    let rec = the_record(&recs, Hook::SocketConnect, path_pid, &cgroup.0, Verdict::Deny);
    assert_eq!(rec.object.display(), no_path.display().to_string(), "{rec:?}");
    assert_eq!(rec.line, line_of(&text, "unix_sockets:"));
    let rec = the_record(&recs, Hook::SocketConnect, name_pid, &cgroup.0, Verdict::Deny);
    assert_eq!(rec.object.display(), format!("@{no_name}"), "{rec:?}");
    assert_eq!(recs.len(), 3, "the three refusals only: {recs:#?}");
    drop(lsm);
    remove_cgroups(vec![cgroup]);
}

fn socket_errno(family: i32, kind: i32, protocol: i32) -> i32 {
    // SAFETY: plain socket(2); the fd is closed at once.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return errno();
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    0
}

#[test]
fn lsm_raw_and_packet_sockets_are_denied_in_the_cgroup_only() {
    in_vm();
    let (mut lsm, mut reader, text) = load_with_audit("raw", &switches(&["raw_sockets"]));
    assert_eq!(lsm.hooks(), [Hook::SocketCreate]);
    let cgroup = TestCgroup::new("raw");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));
    let cg = Some(cgroup.0.as_path());
    use libc::{AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_UNIX, SOCK_DGRAM, SOCK_RAW, SOCK_STREAM};
    let (r, raw_pid) = child_run(cg, no_setup, || socket_errno(AF_INET, SOCK_RAW, libc::IPPROTO_ICMP));
    assert_eq!(r, Err(libc::EPERM), "raw ICMP");
    assert_eq!(child_result(cg, no_setup, || socket_errno(AF_INET6, SOCK_RAW, libc::IPPROTO_ICMPV6)), Err(libc::EPERM));
    let (r, packet_pid) = child_run(cg, no_setup, || socket_errno(AF_PACKET, SOCK_DGRAM, 0));
    assert_eq!(r, Err(libc::EPERM), "packet sockets of any type");
    for (f, k, p) in
        [(AF_INET, SOCK_DGRAM, 0), (AF_INET6, SOCK_STREAM, 0), (AF_UNIX, SOCK_STREAM, 0), (AF_NETLINK, SOCK_RAW, 0)]
    {
        assert_eq!(child_result(cg, no_setup, move || socket_errno(f, k, p)), Ok(()), "socket({f}, {k}, {p})");
    }
    assert_eq!(child_result(None, no_setup, || socket_errno(AF_INET, SOCK_RAW, libc::IPPROTO_ICMP)), Ok(()), "outside");

    let recs = records(&mut reader);
    let rec = the_record(&recs, Hook::SocketCreate, raw_pid, &cgroup.0, Verdict::Deny);
    assert_eq!(rec.object, Object::Socket { family: 2, kind: 3, protocol: 1 });
    assert_eq!(rec.line, line_of(&text, "raw_sockets:"));
    let rec = the_record(&recs, Hook::SocketCreate, packet_pid, &cgroup.0, Verdict::Deny);
    assert_eq!(rec.object, Object::Socket { family: 17, kind: 2, protocol: 0 });
    assert_eq!(recs.len(), 3, "{recs:#?}");
    drop(lsm);
    remove_cgroups(vec![cgroup]);
}

/// A process outside every test cgroup, killed on drop.
struct Outsider(std::process::Child);

impl Outsider {
    fn new() -> Outsider {
        Outsider(std::process::Command::new("sleep").arg("60").spawn().expect("spawn sleep"))
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill_errno(pid: i32, sig: i32) -> i32 {
    // SAFETY: kill(2) on a pid this test owns.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return errno();
    }
    0
}

/// PTRACE_SEIZE (no stop); the tracer's exit detaches.
fn seize_errno(pid: i32) -> i32 {
    // SAFETY: ptrace(2) on a pid this test owns; no data pointers.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize) } != 0 {
        return errno();
    }
    0
}

/// Forks a grandchild (in the caller's cgroup) that sleeps, applies `f` to
/// it, kills and reaps it; returns what `f` returned.
fn on_sibling(f: impl FnOnce(i32) -> i32) -> i32 {
    // SAFETY: the grandchild only pauses until killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        loop {
            // SAFETY: waits for a signal.
            unsafe { libc::pause() };
        }
    }
    let r = f(pid);
    // SAFETY: our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    r
}

#[test]
fn lsm_ptrace_and_signals_toward_other_cgroups_are_denied() {
    in_vm();
    let outsider = Outsider::new();
    let target = outsider.pid();
    let (mut lsm, mut reader, text) = load_with_audit("task", &switches(&["ptrace", "signals"]));
    assert_eq!(lsm.hooks(), [Hook::PtraceAccessCheck, Hook::TaskKill]);
    let cgroup = TestCgroup::new("task");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));
    let cg = Some(cgroup.0.as_path());

    let (r, kill_pid) = child_run(cg, no_setup, move || kill_errno(target, libc::SIGCONT));
    assert_eq!(r, Err(libc::EPERM), "a signal to a process outside");
    let (r, probe_pid) = child_run(cg, no_setup, move || kill_errno(target, 0));
    assert_eq!(r, Err(libc::EPERM), "even the existence probe (signal 0)");
    let (r, trace_pid) = child_run(cg, no_setup, move || seize_errno(target));
    assert_eq!(r, Err(libc::EPERM), "ptrace of a process outside");
    // Inside the sandbox both work.
    assert_eq!(child_result(cg, no_setup, || on_sibling(|p| kill_errno(p, libc::SIGCONT))), Ok(()), "signal inside");
    assert_eq!(child_result(cg, no_setup, || on_sibling(seize_errno)), Ok(()), "ptrace inside");
    // Outside the cgroup nothing changes.
    assert_eq!(child_result(None, no_setup, move || kill_errno(target, libc::SIGCONT)), Ok(()), "outside: signal");
    assert_eq!(child_result(None, no_setup, move || seize_errno(target)), Ok(()), "outside: ptrace");

    let recs = records(&mut reader);
    let own = cgroup_id(&cgroup.0);
    let rec = the_record(&recs, Hook::TaskKill, kill_pid, &cgroup.0, Verdict::Deny);
    assert!(
        matches!(rec.object, Object::Task { pid, cgroup } if pid == target as u32 && cgroup != own && cgroup != 0),
        "{rec:?}"
    );
    assert_eq!(rec.detail, libc::SIGCONT as u32);
    assert_eq!(rec.line, line_of(&text, "signals:"));
    assert_eq!(the_record(&recs, Hook::TaskKill, probe_pid, &cgroup.0, Verdict::Deny).detail, 0);
    let rec = the_record(&recs, Hook::PtraceAccessCheck, trace_pid, &cgroup.0, Verdict::Deny);
    assert!(matches!(rec.object, Object::Task { pid, .. } if pid == target as u32), "{rec:?}");
    assert_eq!(rec.line, line_of(&text, "ptrace:"));
    assert_eq!(recs.len(), 3, "inside-the-cgroup actions are not recorded: {recs:#?}");
    drop(lsm);
    remove_cgroups(vec![cgroup]);
}

#[test]
fn lsm_complain_mode_allows_and_records() {
    in_vm();
    let tree = TempTree::new("complain", &["secret"]);
    let secret = tree.0.join("secret");
    let body = format!(
        "audit:\n  mode: complain\n{}filesystem:\n  rules:\n    - deny: {}\n",
        switches(&["raw_sockets", "bpf"]),
        secret.display()
    );
    let (mut lsm, mut reader, text) = load_with_audit("complain", &body);
    assert_eq!(lsm.hooks(), [Hook::FileOpen, Hook::Bpf, Hook::SocketCreate]);
    let cgroup = TestCgroup::new("complain");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));
    let cg = Some(cgroup.0.as_path());
    let s = secret.clone();
    let (r, open_pid) = child_run(cg, no_setup, move || try_open(&s, libc::O_RDONLY));
    assert_eq!(r, Ok(()), "complain mode allows the open");
    let (r, raw_pid) = child_run(cg, no_setup, || socket_errno(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP));
    assert_eq!(r, Ok(()), "and the raw socket");
    let (r, bpf_pid) = child_run(cg, no_setup, create_map);
    assert_eq!(r, Ok(()), "and bpf(2)");

    let recs = records(&mut reader);
    let rec = the_record(&recs, Hook::FileOpen, open_pid, &cgroup.0, Verdict::Complain);
    assert_eq!(rec.object, Object::Path(secret.as_os_str().as_encoded_bytes().to_vec()));
    the_record(&recs, Hook::SocketCreate, raw_pid, &cgroup.0, Verdict::Complain);
    let rec = the_record(&recs, Hook::Bpf, bpf_pid, &cgroup.0, Verdict::Complain);
    assert_eq!(rec.line, line_of(&text, "bpf: deny"));
    drop(lsm);
    remove_cgroups(vec![cgroup]);
}

#[test]
fn lsm_switch_denials_are_recorded() {
    in_vm();
    let tree = TempTree::new("audit-switches", &["mnt/.keep"]);
    let (mut lsm, mut reader, text) =
        load_with_audit("audit-switches", &switches(&["mount", "bpf", "user_namespaces"]));
    let cgroup = TestCgroup::new("audit-switches");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));
    let cg = Some(cgroup.0.as_path());
    let t = tree.0.join("mnt");
    let (r, mount_pid) = child_run(cg, private_mount_ns, move || mount_tmpfs(&t));
    assert_eq!(r, Err(libc::EPERM));
    let t = tree.0.join("mnt");
    let (r, move_pid) = child_run(cg, private_mount_ns, move || move_mount_tmpfs(&t));
    assert_eq!(r, Err(libc::EPERM));
    let (r, userns_pid) = child_run(cg, no_setup, unshare_user);
    assert_eq!(r, Err(libc::EPERM));
    let (r, bpf_pid) = child_run(cg, no_setup, create_map);
    assert_eq!(r, Err(libc::EPERM));
    let recs = records(&mut reader);
    for (hook, pid, key) in [
        (Hook::SbMount, mount_pid, "mount: deny"),
        (Hook::MoveMount, move_pid, "mount: deny"),
        (Hook::UsernsCreate, userns_pid, "user_namespaces: deny"),
        (Hook::Bpf, bpf_pid, "bpf: deny"),
    ] {
        let rec = the_record(&recs, hook, pid, &cgroup.0, Verdict::Deny);
        assert_eq!(rec.line, line_of(&text, key), "{hook:?}");
        assert_eq!(rec.object, Object::None);
    }
    drop(lsm);
    remove_cgroups(vec![cgroup]);
}

#[test]
fn lsm_pinned_audit_ring_buffer_is_readable_by_another_reader() {
    in_vm();
    phantom_user::loader::ensure_bpffs().unwrap_or_else(|e| panic!("bpffs: {e}"));
    let dir = PathBuf::from(format!("/sys/fs/bpf/phantom-vm-{}-pin", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut lsm = load_policy("pin", &switches(&["bpf"]));
    lsm.pin(&dir, &["vm-pin.yaml".to_string()]).unwrap_or_else(|e| panic!("pin: {e}"));
    let info = phantom_user::lsm::PinnedInfo::read(&dir).expect("info symlink");
    assert_eq!(info.files, ["vm-pin.yaml"]);
    assert!(dir.join("programs/phantom_bpf").exists());
    let mut reader = AuditReader::open_pinned(&dir.join(phantom_user::lsm::AUDIT_PIN)).expect("open the pin");
    let cgroup = TestCgroup::new("pin");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));
    let (r, pid) = child_run(Some(&cgroup.0), no_setup, create_map);
    assert_eq!(r, Err(libc::EPERM));
    assert!(reader.wait(std::time::Duration::from_secs(5)), "the pinned ring buffer signals a record");
    let recs = records(&mut reader);
    the_record(&recs, Hook::Bpf, pid, &cgroup.0, Verdict::Deny);
    drop(lsm);
    std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("rm {}: {e}", dir.display()));
    remove_cgroups(vec![cgroup]);
}

#[test]
fn lsm_objects_load_with_libbpf_too() {
    in_vm();
    // bpftool (libbpf) is the independent loader; the guest sees the host's
    // filesystem, where it is installed.
    let bpftool = ["/usr/sbin/bpftool", "/usr/bin/bpftool"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("bpftool is installed on the host (apt-get install bpftool) and visible in the guest");
    phantom_user::loader::ensure_bpffs().unwrap_or_else(|e| panic!("bpffs: {e}"));
    let policy_body = format!(
        "{}  unix_sockets:\n    connect: [/run/x.sock, \"@y\"]\nfilesystem:\n  rules:\n    - deny: /etc/shadow\nexec:\n  allow: [/usr/bin/py*]\n",
        switches(&["ptrace", "mount", "bpf", "user_namespaces", "signals", "raw_sockets"])
    );
    let text = format!("profile: vm-libbpf\n{policy_body}");
    let c = phantom_dsl::compile_str("vm-libbpf.yaml", &text);
    assert!(!c.has_errors(), "{:#?}", c.diagnostics);
    let progs =
        lsm_backend::compile(&c.policy.unwrap(), &lsm_backend::Options::default().source("vm-libbpf.yaml", &text))
            .expect("compile");
    assert_eq!(progs.programs.len(), 9);
    let layout = phantom_user::lsm::kernel_layout().expect("layout");
    // The object with CO-RE relocations (libbpf resolves them) and the one
    // with offsets patched from the kernel's BTF both load.
    for (what, bytes) in [("CO-RE", progs.object_core().unwrap()), ("patched", progs.object(&layout).unwrap())] {
        let obj = std::env::temp_dir().join(format!("phantom-vm-{}-lsm.o", std::process::id()));
        std::fs::write(&obj, bytes).unwrap();
        let pins = PathBuf::from(format!("/sys/fs/bpf/phantom-vm-{}-libbpf", std::process::id()));
        let out = std::process::Command::new(bpftool)
            .args(["prog", "loadall"])
            .arg(&obj)
            .arg(&pins)
            .output()
            .expect("run bpftool");
        let _ = std::fs::remove_file(&obj);
        assert!(
            out.status.success(),
            "bpftool prog loadall ({what} object): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let pinned: Vec<String> =
            std::fs::read_dir(&pins).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        std::fs::remove_dir_all(&pins).unwrap_or_else(|e| panic!("rm {}: {e}", pins.display()));
        for h in Hook::ALL {
            assert!(pinned.iter().any(|p| p == h.prog_name()), "libbpf loaded {} ({what}): {pinned:?}", h.prog_name());
        }
    }
}

#[test]
fn lsm_patched_offsets_enforce_like_co_re() {
    in_vm();
    // load() uses CO-RE (every other test); load_with() the offsets this
    // crate reads from the kernel's BTF. Both must enforce the task hooks,
    // which walk four kernel structs.
    let outsider = Outsider::new();
    let target = outsider.pid();
    let text = format!("profile: vm-patched\n{}", switches(&["signals"]));
    let c = phantom_dsl::compile_str("vm-patched.yaml", &text);
    let progs = lsm_backend::compile(&c.policy.unwrap(), &lsm_backend::Options::default()).unwrap();
    let layout = phantom_user::lsm::kernel_layout().expect("layout");
    let mut lsm = LoadedLsm::load_with(&progs, &layout).unwrap_or_else(|e| panic!("load_with: {e}"));
    let cgroup = TestCgroup::new("patched");
    lsm.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach: {e}"));
    assert_eq!(child_result(Some(&cgroup.0), no_setup, move || kill_errno(target, libc::SIGCONT)), Err(libc::EPERM));
    assert_eq!(child_result(Some(&cgroup.0), no_setup, || on_sibling(|p| kill_errno(p, libc::SIGCONT))), Ok(()));
    drop(lsm);
    remove_cgroups(vec![cgroup]);
}

// ------------------------------------------------- phantom run's sandboxes

/// The spawner attaches the policy's BPF-LSM programs to each sandbox's
/// cgroup after the sandbox's own mounts (the workspace included, which the
/// `mount: deny` switch would refuse) and before exec: inside, the deny
/// carve-out and the user-namespace switch refuse with EPERM while the
/// allowed read works, and the enforcement report says bpf-lsm is full.
/// A policy text compiled and its bundle built, as `phantom run` gets them.
fn runtime_policy(name: &str, text: &str) -> (phantom_dsl::ir::Policy, phantom_user::apply::LoadedBundle) {
    let c = phantom_dsl::compile_str(name, text);
    assert!(!c.has_errors(), "{text}\n{:#?}", c.diagnostics);
    let policy = c.policy.unwrap();
    let bundle =
        phantom_user::apply::LoadedBundle::from_bundle(&phantom_ebpf::bundle::build(&policy).unwrap()).unwrap();
    (policy, bundle)
}

#[test]
fn sandboxes_get_the_bpf_lsm_programs_before_exec() {
    in_vm();
    let ws = TempTree::new("spawn-ws", &["ok", "secret"]);
    std::fs::set_permissions(&ws.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    for f in ["ok", "secret"] {
        std::fs::set_permissions(ws.0.join(f), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    let text = "profile: vm-spawn\nmode: sandbox\nrequire: [bpf-lsm]\nsecurity:\n  landlock:\n    paths:\n      - {path: /usr, access: read-only}\nfilesystem:\n  rules:\n    - deny: /workspace/secret\n      access: [read]\nkernel:\n  mount: deny\n  user_namespaces: deny\n";
    let (policy, bundle) = runtime_policy("vm-spawn.yaml", text);
    let req = phantom_user::spawn::SpawnRequest {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            "cat ok; cat secret || echo secret refused; unshare -U true || echo userns refused".into(),
        ],
        env: vec![],
        workspace: Some(ws.0.clone()),
        timeout: Some(std::time::Duration::from_secs(60)),
        output_cap: 1 << 16,
    };
    let r = phantom_user::spawn::run(&policy, &bundle, &req).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.stdout, "witness\nsecret refused\nuserns refused\n", "{r:#?}");
    assert!(r.stderr.contains("secret: Operation not permitted"), "EPERM from file_open: {r:#?}");
    assert!(r.stderr.contains("Operation not permitted"), "{r:#?}");
    let lsm = r.enforcement.iter().find(|l| l.layer == "bpf-lsm").unwrap_or_else(|| panic!("{r:#?}"));
    assert_eq!(lsm.enforcement, phantom_user::report::Enforcement::Full, "{r:#?}");
    // The run's audit events carry both denials, from BPF-LSM.
    let has = |hook: &str, object: &str| {
        r.audit
            .iter()
            .any(|e| e.layer == "bpf-lsm" && e.hook == hook && e.verdict == "deny" && e.object.contains(object))
    };
    assert!(has("file_open", "/workspace/secret"), "{:#?}", r.audit);
    assert!(has("userns_create", ""), "{:#?}", r.audit);
    // Outside the sandbox the file reads and nothing stays attached.
    std::fs::read(ws.0.join("secret")).expect("outside, the secret reads");
}

// ------------------------------------------------- policy update, no gap

#[test]
fn lsm_policy_update_swaps_the_programs_of_a_running_cgroup_without_a_gap() {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};
    in_vm();
    let tree = TempTree::new("reload", &["both", "v1-only", "v2-only"]);
    let (both, v1_only, v2_only) = (tree.0.join("both"), tree.0.join("v1-only"), tree.0.join("v2-only"));
    let rules = |a: &Path, b: &Path| {
        format!("filesystem:\n  rules:\n    - deny: {}\n    - deny: {}\n", a.display(), b.display())
    };
    // Version 2 also denies bpf(2): the update adds a hook, the way back removes it.
    let mut v1 = load_policy("reload-v1", &format!("{}{}", switches(&[]), rules(&both, &v1_only)));
    let mut v2 = load_policy("reload-v2", &format!("{}{}", switches(&["bpf"]), rules(&both, &v2_only)));
    assert_eq!(v2.hooks(), [Hook::FileOpen, Hook::Bpf]);
    let cgroup = TestCgroup::new("reload");
    v1.attach(&cgroup.0).unwrap_or_else(|e| panic!("attach v1: {e}"));

    // A process in the sandbox's cgroup opens the file both versions deny,
    // as fast as it can, while the versions are swapped under it.
    let shared = std::sync::Arc::new(Shared::new());
    let (s, cg, path) = (shared.clone(), cgroup.0.clone(), both.clone());
    let opener = std::thread::spawn(move || {
        child_result(Some(&cg), no_setup, move || {
            // Copies of the link fds inherited from this process would keep
            // a detached version alive: a gap would go unseen.
            // SAFETY: closes fds this child does not use (std's own are not kept).
            unsafe { libc::close_range(3, u32::MAX, 0) };
            let deadline = Instant::now() + Duration::from_secs(60);
            while s.at(2).load(SeqCst) == 0 && Instant::now() < deadline {
                if try_open(&path, libc::O_RDONLY) == 0 {
                    s.at(1).fetch_add(1, SeqCst);
                }
                s.at(0).fetch_add(1, SeqCst);
            }
            0
        })
    });
    let wait_for = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while shared.at(0).load(SeqCst) < n {
            assert!(Instant::now() < deadline, "the opener made no progress");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_for(100);
    let (mut swaps, mut during) = (0, 0);
    for round in 0..20 {
        let before = shared.at(0).load(SeqCst);
        let (to, from) = if round % 2 == 0 { (&mut v2, &mut v1) } else { (&mut v1, &mut v2) };
        let report = to.take_over(from, &cgroup.0).unwrap_or_else(|e| panic!("update {round}: {e}"));
        assert_eq!(report.swapped, [Hook::FileOpen], "{report:?}");
        if round % 2 == 0 {
            assert_eq!((report.added.as_slice(), report.removed), ([Hook::Bpf].as_slice(), 0), "{report:?}");
        } else {
            assert_eq!((report.added.len(), report.removed), (0, 1), "v1 has no bpf hook: {report:?}");
        }
        swaps += 1;
        // Let the opener run between swaps, so every swap lands mid-loop.
        wait_for(shared.at(0).load(SeqCst) + 50);
        during += shared.at(0).load(SeqCst) - before;
    }
    shared.at(2).store(1, SeqCst);
    assert_eq!(opener.join().expect("opener thread"), Ok(()), "the opener ran to its end");
    let (opens, leaks) = (shared.at(0).load(SeqCst), shared.at(1).load(SeqCst));
    assert_eq!(leaks, 0, "{leaks} of {opens} opens of a file both versions deny succeeded during {swaps} swaps");
    assert!(during >= 20 * 50, "the opener ran through the swaps ({during} opens)");

    // After an even number of swaps v1 enforces again; one more: v2.
    let inside = |path: &Path| {
        let path = path.to_path_buf();
        child_result(Some(&cgroup.0), no_setup, move || try_open(&path, libc::O_RDONLY))
    };
    assert_eq!(inside(&v1_only), Err(libc::EPERM), "v1 is back");
    assert_eq!(child_result(Some(&cgroup.0), no_setup, create_map), Ok(()), "v1 allows bpf(2)");
    v2.take_over(&mut v1, &cgroup.0).unwrap_or_else(|e| panic!("update: {e}"));
    assert_eq!(inside(&v1_only), Ok(()), "v1's rule is gone with v1");
    assert_eq!(inside(&v2_only), Err(libc::EPERM), "v2's rule enforces");
    assert_eq!(inside(&both), Err(libc::EPERM), "the common rule enforces");
    assert_eq!(child_result(Some(&cgroup.0), no_setup, create_map), Err(libc::EPERM), "v2's added hook enforces");
    assert!(v1.attached_cgroups().is_empty(), "v1 holds no attachment");
    // The old version can be unloaded without touching the sandbox.
    drop(v1);
    assert_eq!(inside(&v2_only), Err(libc::EPERM), "dropping v1 leaves v2 attached");
    drop(v2);
    assert_eq!(after_detach(|| inside(&both)), Ok(()), "detached with v2");
    remove_cgroups(vec![cgroup]);
}

/// The runtime's half of a policy update: a running sandbox of version 1
/// is moved to version 2 (`LiveRegistry::supersede`, what `phantom
/// reload` does in a zygote) while it keeps opening a file both versions
/// deny; it sees version 2's rules from then on, and never an open of the
/// common file.
#[test]
fn a_running_sandbox_is_moved_to_the_updated_policy_without_a_gap() {
    in_vm();
    let ws = TempTree::new("update-ws", &["both", "v1-only", "v2-only"]);
    std::fs::set_permissions(&ws.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    for f in ["both", "v1-only", "v2-only"] {
        std::fs::set_permissions(ws.0.join(f), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    let version = |denied: &str| {
        let text = format!(
            "profile: vm-update\nmode: sandbox\nrequire: [bpf-lsm]\nsecurity:\n  landlock:\n    paths:\n      - {{path: /usr, access: read-only}}\nfilesystem:\n  rules:\n    - deny: /workspace/both\n    - deny: /workspace/{denied}\n"
        );
        runtime_policy("vm-update.yaml", &text)
    };
    let (p1, b1) = version("v1-only");
    let (p2, b2) = version("v2-only");
    let script = "import errno, time\n\
def r(p):\n  try:\n    open(p, 'rb').close(); return 'ok'\n  except OSError as e: return errno.errorcode[e.errno]\n\
print('v1', r('both'), r('v1-only'), r('v2-only'))\n\
open('ready', 'w').close()\n\
leaks = tries = 0\n\
deadline = time.time() + 120\n\
while time.time() < deadline:\n  tries += 1\n  if r('both') == 'ok': leaks += 1\n  if r('v1-only') == 'ok': break\n\
print('v2', r('both'), r('v1-only'), r('v2-only'))\n\
print('leaks', leaks, 'tries', 'many' if tries > 1 else tries)\n";
    let req = phantom_user::spawn::SpawnRequest {
        argv: vec!["python3".into(), "-c".into(), script.into()],
        env: vec![],
        workspace: Some(ws.0.clone()),
        timeout: Some(std::time::Duration::from_secs(180)),
        output_cap: 1 << 16,
    };
    let sandbox = {
        let (p1, b1) = (p1.clone(), b1.clone());
        std::thread::spawn(move || phantom_user::spawn::run(&p1, &b1, &req))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !ws.0.join("ready").exists() {
        assert!(std::time::Instant::now() < deadline && !sandbox.is_finished(), "the sandbox never got ready");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let report = b1.live.supersede(&b2, &p2);
    // Every hook of the level's defaults and file_open switched in place;
    // both versions have the same hooks.
    assert_eq!(report.sandboxes, 1, "{report:?}");
    assert!(report.bpf_lsm[0] >= 1 && report.bpf_lsm[1..] == [0, 0], "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    let r = sandbox.join().expect("sandbox thread").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.stdout, "v1 EPERM EPERM ok\nv2 EPERM ok EPERM\nleaks 0 tries many\n", "{r:#?}");
}

/// An exec allow-list as users write it, through the runtime: entries by
/// their usual names (`/usr/bin/python3` is a symlink to `python3.11`,
/// which the runtime adds because the kernel names the real file) plus
/// the dynamic loader (P0210). The command itself (`/bin/sh`, i.e. dash)
/// is always allowed; `ls` is not on the list.
#[test]
fn an_exec_allow_list_with_symlinked_entries_and_the_loader_runs_what_it_lists() {
    in_vm();
    let text = "profile: vm-exec\nmode: sandbox\nrequire: [bpf-lsm]\nsecurity:\n  landlock:\n    paths:\n      - {path: /usr, access: read-only}\nexec:\n  allow: [/usr/bin/python3, /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2]\n";
    let c = phantom_dsl::compile_str("vm-exec.yaml", text);
    assert!(c.diagnostics.items.iter().all(|d| d.code != "P0210"), "the loader is listed: {:#?}", c.diagnostics);
    let (policy, bundle) = runtime_policy("vm-exec.yaml", text);
    let req = phantom_user::spawn::SpawnRequest {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            "python3 -c 'print(6 * 7)'; ls / > /dev/null && echo ls ran || echo ls refused".into(),
        ],
        env: vec![],
        workspace: None,
        timeout: Some(std::time::Duration::from_secs(120)),
        output_cap: 1 << 16,
    };
    let r = phantom_user::spawn::run(&policy, &bundle, &req).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.stdout, "42\nls refused\n", "{r:#?}");
    assert!(r.stderr.contains("Operation not permitted"), "ls: EPERM from the exec allow-list: {r:#?}");
    let denied_exec = r.audit.iter().any(|e| e.hook == "file_open" && e.verdict == "deny" && e.object.contains("/ls"));
    assert!(denied_exec, "the refused exec is in the run's audit events: {:#?}", r.audit);
}
