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
use common::{fork_child, ChildEnd};
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
    assert_eq!(open_in_cgroup(&cgroup.0, &file.0), Ok(()), "after detaching, the child opens the file again");
    drop(ebpf);

    for cg in [cgroup, other] {
        let path = cg.0.clone();
        drop(cg);
        assert!(!path.exists(), "{} is removed", path.display());
    }
}
