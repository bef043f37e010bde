//! The pinning loader on the host kernel (root; bpffs at /sys/fs/bpf,
//! cgroup v2 at /sys/fs/cgroup/unified; bpftool for one map check). Nothing
//! here skips: a missing feature fails the test.
//!
//! - policies/web-fetcher.yaml (profile renamed web-fetcher-<pid>, so that
//!   concurrent test runs never share pins) compiled to a bundle loads and
//!   pins, a second load reuses the pins, `status` lists it;
//! - attached to a test cgroup, the pinned programs enforce the policy's
//!   rules on a forked child (a denied connect, sendmsg and device open fail
//!   with EPERM, allowed binds, opens and a UDP connect work);
//! - a process that attached and was killed with SIGKILL leaves the
//!   programs attached and enforcing; `detach_pinned` removes them;
//! - a verifier rejection carries the whole log mapped to policy lines;
//! - a 1,000-CIDR bundle's LPM trie is pinned and filled;
//! - leak check: after `unload` the pin directory is gone and the kernel
//!   has freed the programs; the test cgroups are removed.

mod common;

use common::{in_cgroup, TestCgroup};
use phantom_dsl::extends::FileLoader;
use phantom_ebpf::bpf::{encode, Insn, Reg::*, SourceLoc};
use phantom_ebpf::bundle::{self, Bundle, ProgramInfo, CGROUP_MAPS, CGROUP_OBJECT, MANIFEST};
use phantom_ebpf::elf::{ObjectBuilder, Program};
use phantom_ebpf::netprog::ProgKind;
use phantom_user::cgroup_bpf;
use phantom_user::loader::{self, BundleRef, LoaderError};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WEB_FETCHER: &str = "policies/web-fetcher.yaml";

struct RootLoader(PathBuf);

impl FileLoader for RootLoader {
    fn load(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(self.0.join(path))
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `phantom-policy compile`: the bundle of `text` named `name`, with sources.
fn bundle_of(name: &str, text: &str) -> Bundle {
    let c = phantom_dsl::compile_source(name, text, &RootLoader(root()));
    let policy = c.policy.unwrap_or_else(|| panic!("{name}: {:#?}", c.diagnostics.items));
    let texts: Vec<(String, String)> = c.sources.texts();
    bundle::build_with_sources(&policy, &texts).expect("the bundle builds")
}

/// web-fetcher.yaml's rules under the profile `web-fetcher-<pid>`: a bundle
/// hash of its own, so that two test runs at once never share pins.
fn web_fetcher_text() -> String {
    std::fs::read_to_string(root().join(WEB_FETCHER))
        .unwrap()
        .replace("profile: web-fetcher\n", &format!("profile: web-fetcher-{}\n", std::process::id()))
}

fn web_fetcher() -> Bundle {
    bundle_of(WEB_FETCHER, &web_fetcher_text())
}

/// A bundle written to a scratch directory (removed on drop) and unloaded
/// on drop if a failed assertion left it loaded.
struct Written {
    dir: PathBuf,
    hash: String,
}

impl Written {
    fn new(tag: &str, b: &Bundle) -> Written {
        let dir = std::env::temp_dir().join(format!("phantom-loader-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        bundle::write(&dir, b).unwrap();
        let hash = BundleRef::Dir(dir.clone()).hash().unwrap();
        // A pin left by an earlier, crashed run of this test.
        if loader::pin_dir(&hash).exists() {
            loader::unload(&BundleRef::Hash(hash.clone())).unwrap();
        }
        Written { dir, hash }
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        if loader::pin_dir(&self.hash).exists() {
            let _ = loader::unload(&BundleRef::Hash(self.hash.clone()));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn expect_ok<T>(what: &str, r: io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: expected success, got {e}"))
}

fn expect_eperm<T>(what: &str, r: io::Result<T>) -> Result<(), String> {
    match r {
        Ok(_) => Err(format!("{what}: expected EPERM, but it succeeded")),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        Err(e) => Err(format!("{what}: expected EPERM, got {e}")),
    }
}

fn connect(a: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&a, Duration::from_secs(5))
}

/// The denied actions of web-fetcher.yaml: loopback is not in its egress
/// rules (TCP connect, UDP sendmsg), only 8080 may be bound, and /dev/mem
/// (1:1) is neither in its devices nor in the minimal-/dev default.
fn denied(listener: SocketAddr, mem: &Path) -> Result<(), String> {
    expect_eperm("TCP connect to 127.0.0.1 (no egress rule)", connect(listener))?;
    let udp = expect_ok("UDP socket", UdpSocket::bind("0.0.0.0:0"))?;
    expect_eperm("UDP sendto 127.0.0.1:53 (no egress rule)", udp.send_to(b"x", "127.0.0.1:53"))?;
    expect_eperm("TCP bind to port 8081 (only 8080 is allowed)", TcpListener::bind("127.0.0.1:8081"))?;
    expect_eperm("open a char 1:1 node (/dev/mem: not allowed)", std::fs::File::open(mem))?;
    Ok(())
}

/// A char 1:1 (/dev/mem) node made by the test process, outside any
/// cgroup; removed on drop.
struct MemNode(PathBuf);

impl MemNode {
    fn new() -> MemNode {
        let p = std::env::temp_dir().join(format!("phantom-loader-mem-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: c is a valid C string.
        let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 1)) };
        assert_eq!(r, 0, "mknod {}: {}", p.display(), io::Error::last_os_error());
        MemNode(p)
    }
}

impl Drop for MemNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The allowed ones: bind 8080/tcp (line 31), open /dev/null (1:3), and a UDP
/// connect to the DNS server 192.0.2.53:53 (line 22; connect(2) on UDP only
/// picks a route: no packet leaves).
fn allowed() -> Result<(), String> {
    expect_ok("TCP bind to 127.0.0.1:8080", TcpListener::bind("127.0.0.1:8080"))?;
    expect_ok("open /dev/null", std::fs::OpenOptions::new().read(true).write(true).open("/dev/null"))?;
    let udp = expect_ok("UDP socket", UdpSocket::bind("0.0.0.0:0"))?;
    match udp.connect("192.0.2.53:53") {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            Err(format!("UDP connect to 192.0.2.53:53 (allowed by line 22) was denied: {e}"))
        }
        // Reaching the cgroup program is what counts; a host without a
        // route answers ENETUNREACH after it.
        _ => Ok(()),
    }
}

/// Waits (programs are freed after an RCU grace period) until none of `ids` is loaded.
fn assert_freed(ids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .filter(|id| ids.contains(id))
            .collect();
        if live.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "programs {live:?} are still loaded after unload");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn attached_ids(cg: &Path, kind: ProgKind) -> Vec<u32> {
    cgroup_bpf::query(cg, kind.attach_type()).unwrap()
}

fn assert_nothing_attached(cg: &Path) {
    for kind in ProgKind::ALL {
        let ids = attached_ids(cg, kind);
        assert!(ids.is_empty(), "{} of {} still has programs {ids:?}", kind.section(), cg.display());
    }
}

#[test]
fn web_fetcher_loads_once_is_shared_and_survives_its_attacher() {
    let w = Written::new("web-fetcher", &web_fetcher());
    let mem = MemNode::new();
    let (listener, addr) = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    };
    assert!(
        TcpListener::bind("127.0.0.1:8080").is_ok(),
        "port 8080 on 127.0.0.1 must be free for this test (web-fetcher allows binding it)"
    );

    // First load: fresh pins.
    let first = loader::load(&w.dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(!first.reused, "{first:?}");
    assert_eq!(first.profile, format!("web-fetcher-{}", std::process::id()));
    assert_eq!(first.hash, w.hash);
    assert_eq!(first.dir, Path::new("/sys/fs/bpf/phantom").join(&w.hash));
    let names: Vec<&str> = first.programs.iter().map(|p| p.name.as_str()).collect();
    let expected: Vec<&str> = ProgKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names, expected, "all eight cgroup programs are pinned");
    for p in &first.programs {
        assert!(p.pin.exists(), "{} is pinned", p.pin.display());
    }
    assert!(std::fs::symlink_metadata(first.dir.join("info")).is_ok(), "the info record exists");
    assert!(
        !std::fs::read_dir("/sys/fs/bpf/phantom")
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy() == format!("loading-{}-{}", w.hash, std::process::id())),
        "no temporary directory is left"
    );

    // Second load: the same pins, nothing loaded.
    let second = loader::load(&w.dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(second.reused, "the second load reuses the pins: {second:?}");
    let ids = |r: &loader::LoadReport| r.programs.iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&second), "the same kernel programs");

    // Status lists it.
    let status = loader::status().unwrap();
    let mine = status.iter().find(|b| b.hash == w.hash).unwrap_or_else(|| panic!("status lists it: {status:?}"));
    assert_eq!(mine.profile, first.profile);
    assert_eq!(mine.programs.len(), 8);
    assert!(mine.attached_cgroups.is_empty(), "{mine:?}");

    // Attached to a cgroup: enforcement for a child in it, none outside.
    let cg = TestCgroup::new("loader");
    let att = loader::attach_pinned(&w.hash, &cg.path).unwrap_or_else(|e| panic!("{e}"));
    for p in &first.programs {
        let kind = ProgKind::ALL.into_iter().find(|k| k.name() == p.name).unwrap();
        assert_eq!(attached_ids(&cg.path, kind), vec![p.id], "{} is attached", p.name);
    }
    let status = loader::status().unwrap();
    let mine = status.iter().find(|b| b.hash == w.hash).unwrap();
    assert_eq!(mine.attached_cgroups, vec![cg.path.clone()], "{mine:?}");
    assert!(mine.programs.iter().all(|p| p.attached_cgroups == Some(1)), "{mine:?}");
    in_cgroup(&cg.path, || {
        denied(addr, &mem.0)?;
        allowed()
    });
    connect(addr).expect("outside the cgroup, the parent still connects to loopback");

    // A second sandbox cgroup shares the same load; its attacher dies by SIGKILL.
    let orphan = TestCgroup::new("loader-orphan");
    let hash = w.hash.clone();
    let orphan_path = orphan.path.clone();
    let mut pipe = [0i32; 2];
    // SAFETY: pipe fills two fds.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child attaches, reports and waits to be killed; it never returns.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = match loader::attach_pinned(&hash, &orphan_path) {
            Ok(a) => {
                std::mem::forget(a);
                b'1'
            }
            Err(_) => b'0',
        };
        // SAFETY: writes one byte to the pipe, then sleeps until killed.
        unsafe {
            libc::write(pipe[1], [ok].as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    // SAFETY: closes our copy of the write end; reads one byte.
    let mut byte = [0u8];
    unsafe {
        libc::close(pipe[1]);
        assert_eq!(libc::read(pipe[0], byte.as_mut_ptr().cast(), 1), 1);
        libc::close(pipe[0]);
    }
    assert_eq!(byte[0], b'1', "the child attached the pinned programs");
    // SAFETY: pid is our child.
    unsafe {
        assert_eq!(libc::kill(pid, libc::SIGKILL), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    }
    for p in &first.programs {
        let kind = ProgKind::ALL.into_iter().find(|k| k.name() == p.name).unwrap();
        assert_eq!(attached_ids(&orphan.path, kind), vec![p.id], "{} stays attached after SIGKILL", p.name);
    }
    in_cgroup(&orphan.path, || {
        denied(addr, &mem.0)?;
        allowed()
    });
    assert_eq!(loader::detach_pinned(&w.hash, &orphan.path).unwrap(), 8, "the orphaned attachment is removed");
    assert_nothing_attached(&orphan.path);
    in_cgroup(&orphan.path, || expect_ok("connect to 127.0.0.1 once detached", connect(addr)).map(drop));
    orphan.remove();

    // Detach (drop) and remove the first cgroup.
    att.detach().unwrap();
    assert_nothing_attached(&cg.path);
    cg.remove();

    // Unload: pins gone, programs freed.
    let report = loader::unload(&BundleRef::Dir(w.dir.clone())).unwrap();
    assert_eq!((report.programs, report.maps), (8, 1), "eight programs and the audit ring buffer");
    assert!(report.still_attached.is_empty(), "{report:?}");
    assert!(!loader::pin_dir(&w.hash).exists(), "{} is gone after unload", loader::pin_dir(&w.hash).display());
    assert!(!loader::status().unwrap().iter().any(|b| b.hash == w.hash));
    assert_freed(&ids(&first));
    match loader::unload(&BundleRef::Hash(w.hash.clone())) {
        Err(LoaderError::NotLoaded(h)) => assert_eq!(h, w.hash),
        other => panic!("a second unload says it is not loaded: {other:?}"),
    }
    drop(listener);
}

#[test]
fn a_verifier_rejection_carries_the_whole_log_with_policy_lines() {
    // web-fetcher's bundle with its object replaced by one whose
    // sock_create program reads r2, which the verifier never initialised.
    let mut b = web_fetcher();
    let loc = |line| SourceLoc::new(WEB_FETCHER, line, 3);
    let code =
        encode(&[Insn::mov64_imm(R0, 1).at(loc(17)), Insn::mov64_reg(R0, R2).at(loc(18)), Insn::exit().at(loc(18))])
            .unwrap();
    let object = ObjectBuilder::new("GPL")
        .program(Program::new("cgroup/sock_create", "phantom_sock", code))
        .source(WEB_FETCHER, web_fetcher_text())
        .build()
        .unwrap();
    b.files.retain(|(n, _)| n != CGROUP_MAPS && n != MANIFEST);
    b.files.iter_mut().find(|(n, _)| n == CGROUP_OBJECT).unwrap().1 = object.clone();
    b.manifest.artifacts.retain(|a| a.name != CGROUP_MAPS);
    let a = b.manifest.artifacts.iter_mut().find(|a| a.name == CGROUP_OBJECT).unwrap();
    a.bytes = object.len();
    a.sha256 = phantom_dsl::source::sha256_hex(&object);
    a.instructions = Some(3);
    a.programs = vec![ProgramInfo {
        section: "cgroup/sock_create".into(),
        name: "phantom_sock".into(),
        instructions: 3,
        lines: vec![(0, 17), (1, 18), (2, 18)],
    }];
    b.files.push((MANIFEST.into(), serde_json::to_vec_pretty(&b.manifest).unwrap()));
    let w = Written::new("rejected", &b);

    let err = loader::load(&w.dir).expect_err("the verifier rejects r0 = r2");
    let LoaderError::Rejected(r) = &err else { panic!("expected a verifier rejection, got {err}") };
    eprintln!("{err}");
    assert_eq!(r.program, "phantom_sock");
    assert!(r.log.contains("R2 !read_ok"), "the whole verifier log:\n{}", r.log);
    assert_eq!(r.insn, Some(1), "{}", r.log);
    assert_eq!(r.line, Some(18));
    assert!(r.annotated.contains("r0 = r2    ; policy line 18"), "{}", r.annotated);
    let text = err.to_string();
    assert!(text.contains("instruction 1, which implements policy line 18") && text.contains("R2 !read_ok"), "{text}");
    assert!(!loader::pin_dir(&w.hash).exists(), "a failed load leaves no pins");
    assert!(
        !std::fs::read_dir("/sys/fs/bpf/phantom")
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy() == format!("loading-{}-{}", w.hash, std::process::id())),
        "nor a temporary directory"
    );
}

#[test]
fn a_1000_cidr_bundle_pins_a_filled_lpm_trie() {
    let mut text = format!(
        "profile: cidr-1000-{}\nmode: sandbox\nnetwork:\n  mode: allowlist\n  egress:\n    - to: [",
        std::process::id()
    );
    for i in 0..1000u32 {
        let sep = if i == 0 { "" } else { ", " };
        text += &format!("{sep}10.{}.{}.0/24", i / 256, i % 256);
    }
    text += "]\n      ports: [443]\n      protocol: tcp\n";
    let b = bundle_of("cidr-1000.yaml", &text);
    let contents: Vec<bundle::MapContents> =
        serde_json::from_slice(&b.files.iter().find(|(n, _)| n == CGROUP_MAPS).expect("LPM contents").1).unwrap();
    let w = Written::new("cidr-1000", &b);

    let r = loader::load(&w.dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(!r.reused);
    let audit = phantom_ebpf::audit::RINGBUF_MAP;
    assert!(r.maps.iter().any(|m| m.name == audit), "the audit ring buffer is pinned: {r:?}");
    assert!(r.maps.iter().any(|m| m.name != audit), "{r:?}");
    for m in r.maps.iter().filter(|m| m.name != audit) {
        let c = contents.iter().find(|c| c.name == m.name).unwrap();
        assert_eq!(m.entries_written, Some(c.entries.len()), "{}", m.name);
        let out = std::process::Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(&m.pin)
            .output()
            .expect("bpftool must be installed for this test (Debian package bpftool)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v.as_array().unwrap().len(), c.entries.len(), "the kernel's copy of {} holds every entry", m.name);
    }
    let ids: Vec<u32> = r.programs.iter().map(|p| p.id).collect();
    let again = loader::load(&w.dir).unwrap();
    assert!(again.reused && again.maps.len() == r.maps.len());
    loader::unload(&BundleRef::Hash(w.hash.clone())).unwrap();
    assert!(!loader::pin_dir(&w.hash).exists());
    assert_freed(&ids);
}

/// The ids of the programs in `set` (BPF_OBJ_GET_INFO_BY_FD).
fn prog_ids(set: &phantom_user::cgroup_bpf::LoadedPrograms) -> Vec<u32> {
    set.programs.iter().map(|(_, fd)| phantom_bpf_sys::object_id(std::os::fd::AsFd::as_fd(fd)).unwrap()).collect()
}

#[test]
fn sandboxes_attach_the_pinned_programs_once_the_bundle_is_loaded() {
    use phantom_ebpf::bundle::{CGROUP_MAPS, CGROUP_OBJECT};
    use phantom_user::bundle_object::{for_sandboxes, BundleObject};
    let text = web_fetcher_text().replace("profile: web-fetcher-", "profile: web-fetcher-sandboxes-");
    let w = Written::new("sandboxes", &bundle_of(WEB_FETCHER, &text));
    let obj =
        BundleObject::from_dir(&w.dir, CGROUP_OBJECT, CGROUP_MAPS).unwrap().expect("the bundle has a cgroup object");
    assert_eq!(obj.hash(), w.hash);

    // Not loaded: the sandbox gets its own copy of the same object.
    let s = for_sandboxes(&obj).unwrap_or_else(|e| panic!("{e}"));
    let (own, pinned) = (s.programs, s.pinned);
    assert!(s.audit.is_some(), "the object's audit ring comes along");
    assert!(!pinned);
    let own_ids = prog_ids(&own);
    assert_eq!(own.programs.len(), ProgKind::ALL.len(), "every program of the object");

    // Loaded: the pinned programs themselves, no new load.
    let report = loader::load(&w.dir).unwrap_or_else(|e| panic!("{e}"));
    let s = for_sandboxes(&obj).unwrap_or_else(|e| panic!("{e}"));
    let (shared, pinned) = (s.programs, s.pinned);
    assert!(s.audit.is_some(), "the pinned audit ring opens");
    assert!(pinned);
    let pinned_ids: Vec<u32> = report.programs.iter().map(|p| p.id).collect();
    assert_eq!(prog_ids(&shared), pinned_ids, "the sandbox's programs are the pinned ones");
    assert!(own_ids.iter().all(|id| !pinned_ids.contains(id)), "the unpinned copy was a separate load");
    let kinds = |s: &phantom_user::cgroup_bpf::LoadedPrograms| s.programs.iter().map(|(k, _)| *k).collect::<Vec<_>>();
    assert_eq!(kinds(&own), kinds(&shared), "same programs, same order");
    drop((own, shared));
    loader::unload(&BundleRef::Hash(w.hash.clone())).unwrap();
    assert!(!loader::pin_dir(&w.hash).exists(), "no pin left");
}
