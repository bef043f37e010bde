//! cgroup-BPF enforcement on the host kernel (root; cgroup v2 at
//! /sys/fs/cgroup/unified). Every test creates its own cgroup
//! `phantom-test-<pid>-<name>`, attaches the generated programs, forks a
//! child that moves itself into the cgroup and tries allowed and denied
//! operations on loopback only, checks that the parent (outside the
//! cgroup) is unaffected, then detaches and removes the cgroup (asserting
//! nothing is left). Nothing here skips: a missing feature fails.

mod common;

use common::{in_cgroup, Shared, TestCgroup};
use phantom_dsl::ir::{
    BindRule, DeviceAccess, DevicePolicy, DeviceRule, DeviceType, NetMode, NetRule, NetworkPolicy, Origin,
};
use phantom_dsl::source::{FileId, Span};
use phantom_dsl::values::{Cidr, PortRange, Protocol};
use phantom_ebpf::netprog::{compile_parts, CgroupPrograms, Locator, Options, ProgKind};
use phantom_user::bundle_object::{self, BundleObject};
use phantom_user::cgroup_bpf::{self, LoadedPrograms};
use std::ffi::CString;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn origin(line: u32) -> Origin {
    Origin { file: FileId(0), line, col: 5, span: Span { file: FileId(0), start: 0, end: 0 } }
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn ports(ps: &[u16]) -> Vec<PortRange> {
    ps.iter().map(|&p| PortRange { start: p, end: p }).collect()
}

fn egress(cidrs: &[&str], ps: &[u16], protocol: Protocol, line: u32) -> NetRule {
    NetRule { cidrs: cidrs.iter().map(|c| cidr(c)).collect(), ports: ports(ps), protocol, origin: origin(line) }
}

/// What the compiler makes of these rules (to check its choices).
fn compile(net: &NetworkPolicy, dev: &DevicePolicy) -> CgroupPrograms {
    compile_parts(net, dev, &Locator::new(&["test.yaml".into()]), &Options::default()).unwrap()
}

/// LPM tries among a program set's maps (the audit ring buffer is always
/// there).
fn lpm_maps(set: &CgroupPrograms) -> usize {
    set.maps.iter().filter(|m| m.map_type == 11).count()
}

/// The programs of a policy with these rules, the way sandboxes get them:
/// the bundle's `cgroup.bpf.o` (+ `cgroup-maps.json`) loaded with aya.
fn load(net: &NetworkPolicy, dev: &DevicePolicy) -> LoadedPrograms {
    let mut policy = phantom_dsl::compile_str("test.yaml", "profile: t\n").policy.unwrap();
    policy.network = net.clone();
    policy.devices = dev.clone();
    load_policy(&policy)
}

fn load_policy(policy: &phantom_dsl::ir::Policy) -> LoadedPrograms {
    let b = phantom_ebpf::bundle::build(policy).unwrap();
    let obj = BundleObject::from_bundle(&b, phantom_ebpf::bundle::CGROUP_OBJECT, phantom_ebpf::bundle::CGROUP_MAPS)
        .unwrap()
        .expect("every bundle has a cgroup object");
    // What a sandbox of an unpinned bundle gets (bpf(2) directly); the
    // aya path is exercised by the pinning loader's tests and below.
    let s = bundle_object::for_sandboxes(&obj).unwrap_or_else(|e| panic!("{e}"));
    assert!(!s.pinned);
    s.programs
}

/// A scratch directory for device nodes, removed on drop (also on failure).
struct TmpDir(PathBuf);

impl TmpDir {
    /// `tag` keeps concurrent tests of this binary apart.
    fn new(tag: &str) -> TmpDir {
        let p = std::env::temp_dir().join(format!("phantom-cgbpf-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        TmpDir(p)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn listener(ip: &str) -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0)).unwrap_or_else(|e| panic!("listen on {ip}: {e}"));
    let a = l.local_addr().unwrap();
    (l, a)
}

fn connect(a: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&a, Duration::from_secs(5))
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

fn socket(family: i32, ty: i32, proto: i32) -> io::Result<()> {
    // SAFETY: plain syscall; the fd is closed right away.
    let fd = unsafe { libc::socket(family, ty, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    Ok(())
}

fn mknod_char(path: &Path, major: u32, minor: u32) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: c is a valid C string.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(major, minor)) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn open_dev(path: &Path, write: bool) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new().read(true).write(write).open(path)
}

/// Detaches, checks that no program is left on any attach type, removes the cgroup.
fn teardown(att: cgroup_bpf::Attachment, cg: TestCgroup) {
    att.detach().unwrap();
    for kind in ProgKind::ALL {
        let ids = cgroup_bpf::query(&cg.path, kind.attach_type()).unwrap();
        assert!(ids.is_empty(), "{} still has programs {ids:?} after detach", kind.section());
    }
    cg.remove();
}

#[test]
fn tcp_egress_bind_sock_create_and_devices_are_enforced() {
    let (_la, a) = listener("127.0.0.1"); // allowed
    let (_lb, b) = listener("127.0.0.1"); // denied port
    let (_lc, c) = listener("127.0.0.2"); // allowed port, denied address
    let (_ld, d6) = listener("::1"); // allowed over IPv6
    let (_le, e6) = listener("::1"); // denied port over IPv6
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

    let net = NetworkPolicy {
        mode: NetMode::Allowlist,
        egress: vec![
            egress(&["127.0.0.1"], &[a.port(), c.port()], Protocol::Tcp, 3),
            egress(&["::1"], &[d6.port()], Protocol::Tcp, 4),
        ],
        ingress: Vec::new(),
        bind: vec![BindRule { ports: ports(&[free]), protocol: Protocol::Tcp, origin: origin(6) }],
    };
    let dev = DevicePolicy {
        allow: vec![DeviceRule {
            kind: DeviceType::Char,
            major: Some(1),
            minor: Some(5),
            access: [DeviceAccess::Mknod, DeviceAccess::Read].into(),
            origin: origin(9),
        }],
    };
    let set = compile(&net, &dev);
    assert_eq!(lpm_maps(&set), 0, "a small policy compiles to straight-line code");
    let loaded = load(&net, &dev);
    let cg = TestCgroup::new("tcp");
    let att = loaded.attach(&cg.path).unwrap_or_else(|e| panic!("{e}"));

    let tmp_guard = TmpDir::new("tcp");
    let tmp = tmp_guard.0.clone();
    // Made outside the cgroup: a /dev/mem node (1:1) and a /dev/null node (1:3).
    mknod_char(&tmp.join("mem"), 1, 1).unwrap();
    mknod_char(&tmp.join("null"), 1, 3).unwrap();

    let mapped = |s: SocketAddr| match s.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    let tmp2 = tmp.clone();
    in_cgroup(&cg.path, move || {
        expect_ok("connect to the allowed 127.0.0.1 port", connect(a))?;
        expect_eperm("connect to a denied port", connect(b))?;
        expect_eperm("connect to a denied address", connect(c))?;
        expect_ok("connect to the allowed [::1] port", connect(d6))?;
        expect_eperm("connect to a denied [::1] port", connect(e6))?;
        expect_ok("connect to ::ffff:127.0.0.1 (allowed as IPv4)", connect(mapped(a)))?;
        expect_eperm("connect to ::ffff:127.0.0.2 (denied as IPv4)", connect(mapped(c)))?;

        expect_eperm("UDP socket when only TCP is allowed", socket(libc::AF_INET, libc::SOCK_DGRAM, 0))?;
        expect_eperm("UDP6 socket when only TCP is allowed", socket(libc::AF_INET6, libc::SOCK_DGRAM, 0))?;
        // (Ping sockets are refused by net.ipv4.ping_group_range with EACCES
        // before the hook runs on this host, so they witness nothing here.)
        expect_eperm("raw socket", socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP))?;
        expect_ok("TCP6 socket", socket(libc::AF_INET6, libc::SOCK_STREAM, 0))?;
        expect_ok("unix socket (not an inet family)", socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0))?;

        expect_ok("bind to the allowed port", TcpListener::bind(("127.0.0.1", free)))?;
        expect_ok("bind to port 0", TcpListener::bind(("127.0.0.1", 0)))?;
        expect_eperm("bind to another port", TcpListener::bind(("127.0.0.1", free.wrapping_add(1).max(1))))?;

        expect_ok("open /dev/null read-write", open_dev(Path::new("/dev/null"), true))?;
        expect_ok("open /dev/urandom", open_dev(Path::new("/dev/urandom"), false))?;
        expect_ok("open a 1:3 node elsewhere", open_dev(&tmp2.join("null"), true))?;
        expect_eperm("open a 1:1 (/dev/mem) node for reading", open_dev(&tmp2.join("mem"), false))?;
        expect_eperm("mknod 1:1", mknod_char(&tmp2.join("mem2"), 1, 1))?;
        expect_eperm("mknod 1:3 (no mknod right)", mknod_char(&tmp2.join("null2"), 1, 3))?;
        expect_ok("mknod 1:5 (rule line 9 grants mknod)", mknod_char(&tmp2.join("zero2"), 1, 5))?;
        expect_ok("open the new 1:5 node for reading", open_dev(&tmp2.join("zero2"), false))?;
        // Rule line 9 covers 1:5, so it alone decides: no write (the
        // minimal-/dev default no longer applies to /dev/zero).
        expect_eperm("open /dev/zero for writing", open_dev(Path::new("/dev/zero"), true))?;
        Ok(())
    });

    // Outside the cgroup nothing is filtered.
    connect(b).expect("the parent reaches the port denied in the cgroup");
    connect(c).expect("the parent reaches the address denied in the cgroup");
    socket(libc::AF_INET, libc::SOCK_DGRAM, 0).expect("the parent creates UDP sockets");

    // Detached: the same cgroup filters nothing any more.
    att.detach().unwrap();
    in_cgroup(&cg.path, move || {
        expect_ok("connect to the formerly denied port after detach", connect(b))?;
        expect_ok("UDP socket after detach", socket(libc::AF_INET, libc::SOCK_DGRAM, 0))?;
        Ok(())
    });
    for kind in ProgKind::ALL {
        assert!(cgroup_bpf::query(&cg.path, kind.attach_type()).unwrap().is_empty(), "{kind:?} left attached");
    }
    cg.remove();
    drop(tmp_guard);
}

#[test]
fn udp_sendmsg_is_enforced() {
    let ru = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pu = ru.local_addr().unwrap();
    let rv = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pv = rv.local_addr().unwrap();
    let r2 = UdpSocket::bind(("127.0.0.2", 0)).unwrap();
    let p2 = r2.local_addr().unwrap();
    let net = NetworkPolicy {
        mode: NetMode::Allowlist,
        egress: vec![egress(&["127.0.0.1"], &[pu.port()], Protocol::Udp, 5)],
        ingress: Vec::new(),
        bind: Vec::new(),
    };
    let loaded = load(&net, &DevicePolicy { allow: Vec::new() });
    let cg = TestCgroup::new("udp");
    let att = loaded.attach(&cg.path).unwrap_or_else(|e| panic!("{e}"));
    in_cgroup(&cg.path, move || {
        let s = expect_ok("UDP socket", UdpSocket::bind("127.0.0.1:0"))?;
        expect_ok("sendto the allowed port", s.send_to(b"ok", pu))?;
        expect_eperm("sendto a denied port", s.send_to(b"no", pv))?;
        expect_eperm("sendto a denied address", s.send_to(b"no", p2))?;
        expect_eperm("connect a UDP socket to a denied port", s.connect(pv))?;
        let s6 = expect_ok("UDP6 socket", UdpSocket::bind("[::]:0"))?;
        let mapped = |a: SocketAddr| match a.ip() {
            IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
            _ => a,
        };
        expect_ok("sendto ::ffff:127.0.0.1 on the allowed port", s6.send_to(b"ok6", mapped(pu)))?;
        expect_eperm("sendto ::ffff:127.0.0.1 on a denied port", s6.send_to(b"no", mapped(pv)))?;
        expect_eperm("TCP socket when only UDP is allowed", socket(libc::AF_INET, libc::SOCK_STREAM, 0))?;
        Ok(())
    });
    ru.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = ru.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ok");
    let (n, _) = ru.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ok6");
    rv.set_nonblocking(true).unwrap();
    assert!(rv.recv_from(&mut buf).is_err(), "a denied datagram arrived");
    teardown(att, cg);
}

#[test]
fn large_cidr_sets_use_lpm_tries_and_are_enforced() {
    let (_la, a) = listener("127.0.0.1");
    let (_lc, c) = listener("127.0.0.2");
    let (_ld, d6) = listener("::1");
    let mut v4: Vec<String> = (0..200).map(|i| format!("10.{}.{}.0/24", i / 16, i % 16 * 16)).collect();
    v4.push("127.0.0.1/32".into());
    let mut v6: Vec<String> = (0..100).map(|i| format!("2001:db8:{i:x}::/48")).collect();
    v6.push("::1/128".into());
    let all: Vec<&str> = v4.iter().chain(&v6).map(String::as_str).collect();
    let net = NetworkPolicy {
        mode: NetMode::Allowlist,
        egress: vec![
            egress(&["0.0.0.0/0"], &[9], Protocol::Udp, 2),
            egress(&all, &[a.port(), c.port(), d6.port()], Protocol::Tcp, 3),
        ],
        ingress: Vec::new(),
        bind: Vec::new(),
    };
    let set = compile(&net, &DevicePolicy { allow: Vec::new() });
    assert_eq!(lpm_maps(&set), 2, "both families are past the threshold");
    let loaded = load(&net, &DevicePolicy { allow: Vec::new() });
    let cg = TestCgroup::new("lpm");
    let att = loaded.attach(&cg.path).unwrap_or_else(|e| panic!("{e}"));
    in_cgroup(&cg.path, move || {
        expect_ok("connect to 127.0.0.1 (in the trie)", connect(a))?;
        expect_eperm("connect to 127.0.0.2 (not in the trie)", connect(c))?;
        expect_ok("connect to [::1] (in the trie)", connect(d6))?;
        let m = SocketAddr::new(IpAddr::V6(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped()), a.port());
        expect_ok("connect to ::ffff:127.0.0.1 (IPv4 trie)", connect(m))?;
        Ok(())
    });
    teardown(att, cg);
}

#[test]
fn every_example_policy_loads_and_web_fetcher_is_accepted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut loaded_any = 0;
    let mut names: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for p in names.iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let c = phantom_dsl::compile_file(p).unwrap();
        let Some(policy) = c.policy else { continue };
        let set = phantom_ebpf::netprog::compile(&policy).unwrap();
        let loaded = load_policy(&policy);
        assert_eq!(loaded.programs.len(), set.programs.len());
        loaded_any += loaded.programs.len();
    }
    assert!(loaded_any >= 8, "only {loaded_any} programs loaded");
}

/// cgroup sock_addr, sock and device programs have no BPF_PROG_TEST_RUN
/// on this kernel, which is why the differential runs the encoded bytes
/// through the test interpreter (phantom-ebpf/tests/netprog_differential.rs)
/// and the tests above run a sample for real. If a kernel adds it, this
/// test fails and says so, so the kernel differential can be switched on.
#[test]
fn cgroup_programs_have_no_test_run() {
    let net = NetworkPolicy {
        mode: NetMode::Allowlist,
        egress: vec![egress(&["127.0.0.1"], &[80], Protocol::Tcp, 1)],
        ingress: Vec::new(),
        bind: Vec::new(),
    };
    let loaded = load(&net, &DevicePolicy { allow: Vec::new() });
    for (kind, fd) in &loaded.programs {
        let r = cgroup_bpf::test_run_ctx(std::os::fd::AsFd::as_fd(fd), &[0u8; 72]);
        let errno = r.as_ref().err().and_then(io::Error::raw_os_error);
        eprintln!("{}: BPF_PROG_TEST_RUN -> {r:?}", kind.section());
        assert!(
            errno == Some(524), // ENOTSUPP: no test_run for this program type
            "{}: BPF_PROG_TEST_RUN gave {r:?}; if it works now, run the differential on the kernel",
            kind.section()
        );
    }
}

/// Denials leave audit records in the object's ring buffer (docs/audit.md):
/// a refused connect4 with the address and port, a refused device open
/// with the device, both naming the cgroup as the sandbox; an allowed
/// action leaves none.
#[test]
fn denials_are_recorded_in_the_ring_buffer() {
    use phantom_ebpf::audit::{AuditRecord, Layer, Object, Verdict, NO_RULE, RINGBUF_MAP};
    use std::os::unix::fs::MetadataExt;
    let (_la, a) = listener("127.0.0.1"); // allowed
    let (_lb, b) = listener("127.0.0.1"); // denied port
    let net = NetworkPolicy {
        mode: NetMode::Allowlist,
        egress: vec![egress(&["127.0.0.1"], &[a.port()], Protocol::Tcp, 3)],
        ingress: Vec::new(),
        bind: Vec::new(),
    };
    let mut policy = phantom_dsl::compile_str("test.yaml", "profile: t\n").policy.unwrap();
    policy.network = net;
    let bundle = phantom_ebpf::bundle::build(&policy).unwrap();
    let obj =
        BundleObject::from_bundle(&bundle, phantom_ebpf::bundle::CGROUP_OBJECT, phantom_ebpf::bundle::CGROUP_MAPS)
            .unwrap()
            .unwrap();
    let mut loaded = bundle_object::load(&obj).unwrap_or_else(|e| panic!("{e}"));
    let progs = loaded.program_fds(&obj).unwrap();
    let ring = loaded.ebpf.take_map(RINGBUF_MAP).expect("the object has the audit ring buffer");
    let mut ring = aya::maps::RingBuf::try_from(ring).unwrap();
    let cg = TestCgroup::new("audit");
    let att = progs.attach(&cg.path).unwrap_or_else(|e| panic!("{e}"));
    let tmp_guard = TmpDir::new("audit");
    let mem = tmp_guard.0.join("mem");
    mknod_char(&mem, 1, 1).unwrap();
    in_cgroup(&cg.path, move || {
        expect_ok("connect to the allowed port", connect(a))?;
        expect_eperm("connect to another port", connect(b))?;
        expect_eperm("open /dev/mem (1:1)", open_dev(&mem, false))?;
        Ok(())
    });
    let mut records = Vec::new();
    while let Some(item) = ring.next() {
        records.push(AuditRecord::decode(&item).unwrap());
    }
    let sandbox = std::fs::metadata(&cg.path).unwrap().ino();
    assert_eq!(records.len(), 2, "one record per denial, none for the allowed connect: {records:#?}");
    for r in &records {
        assert_eq!(
            (r.layer, r.verdict, r.sandbox, r.rule),
            (Layer::CgroupBpf.code(), Verdict::Deny.code(), sandbox, NO_RULE)
        );
        assert_ne!(r.pid, std::process::id(), "the child acted, not the test process");
    }
    assert_eq!(records[0].hook, ProgKind::Connect4.audit_id());
    assert_eq!(records[0].object, Object::Inet4 { addr: [127, 0, 0, 1], port: b.port() });
    assert_eq!(records[1].hook, ProgKind::Device.audit_id());
    assert_eq!(records[1].object, Object::Device { access_type: (2 << 16) | 2, major: 1, minor: 1 });
    teardown(att, cg);
}

#[test]
fn policy_update_replaces_the_programs_of_a_running_cgroup_without_a_gap() {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::Instant;
    let (_l1, v1_port) = listener("127.0.0.1");
    let (_l2, v2_port) = listener("127.0.0.1");
    let (_l3, never) = listener("127.0.0.1");
    let net = |mode: NetMode, allowed: SocketAddr| NetworkPolicy {
        mode,
        egress: match mode {
            NetMode::Allowlist => vec![egress(&["127.0.0.1"], &[allowed.port()], Protocol::Tcp, 3)],
            _ => Vec::new(),
        },
        ingress: Vec::new(),
        bind: Vec::new(),
    };
    let no_devices = DevicePolicy { allow: Vec::new() };
    let v1 = load(&net(NetMode::Allowlist, v1_port), &no_devices);
    let v2 = load(&net(NetMode::Allowlist, v2_port), &no_devices);
    // Without the allowlist there are no address programs: an update to
    // it removes programs, the way back adds them.
    let v3 = load(&net(NetMode::LoopbackOnly, v2_port), &no_devices);
    let kinds = |p: &LoadedPrograms| p.programs.iter().map(|(k, _)| *k).collect::<Vec<_>>();
    assert_eq!(kinds(&v1), kinds(&v2));
    let dropped = kinds(&v2).iter().filter(|k| !kinds(&v3).contains(k)).count();
    assert!(dropped > 0 && kinds(&v3).iter().all(|k| kinds(&v2).contains(k)), "{:?} vs {:?}", kinds(&v2), kinds(&v3));
    let cg = TestCgroup::new("update");
    let mut att = v1.attach(&cg.path).unwrap_or_else(|e| panic!("{e}"));

    // A process in the cgroup connects to a port neither version allows,
    // as fast as it can, while the versions are swapped under it.
    let shared = std::sync::Arc::new(Shared::new());
    let s = shared.clone();
    let path = cg.path.clone();
    let opener = std::thread::spawn(move || {
        in_cgroup(&path, move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while s.at(2).load(SeqCst) == 0 && Instant::now() < deadline {
                if connect(never).is_ok() {
                    s.at(1).fetch_add(1, SeqCst);
                }
                s.at(0).fetch_add(1, SeqCst);
            }
            Ok(())
        })
    });
    let wait_for = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while shared.at(0).load(SeqCst) < n {
            // A leaked connect fills the listener's backlog (nothing
            // accepts), after which connects hang: report the leak.
            assert_eq!(shared.at(1).load(SeqCst), 0, "connects that both versions deny succeeded during the updates");
            assert!(Instant::now() < deadline, "the connecting child made no progress");
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    wait_for(100);
    let mut during = 0;
    for round in 0..40 {
        let before = shared.at(0).load(SeqCst);
        let to = if round % 2 == 0 { &v2 } else { &v1 };
        let report = att.replace_with(to).unwrap_or_else(|e| panic!("update {round}: {e}"));
        assert_eq!(report, (v1.programs.len(), 0, 0), "every program replaced in place");
        wait_for(shared.at(0).load(SeqCst) + 20);
        during += shared.at(0).load(SeqCst) - before;
    }
    shared.at(2).store(1, SeqCst);
    opener.join().expect("the connecting thread");
    let (attempts, leaks) = (shared.at(0).load(SeqCst), shared.at(1).load(SeqCst));
    assert_eq!(leaks, 0, "{leaks} of {attempts} connects that both versions deny succeeded during the updates");
    assert!(during >= 40 * 20, "the child ran through the updates ({during} connects)");

    // After an even number of updates v1 enforces; one more: v2.
    in_cgroup(&cg.path, move || {
        expect_ok("v1's port", connect(v1_port))?;
        expect_eperm("v2's port under v1", connect(v2_port))
    });
    att.replace_with(&v2).unwrap_or_else(|e| panic!("{e}"));
    in_cgroup(&cg.path, move || {
        expect_eperm("v1's port under v2", connect(v1_port))?;
        expect_ok("v2's port", connect(v2_port))?;
        expect_eperm("the port no version allows", connect(never))
    });
    let attached = |cg: &TestCgroup| -> usize {
        ProgKind::ALL.iter().map(|k| cgroup_bpf::query(&cg.path, k.attach_type()).unwrap().len()).sum()
    };
    assert_eq!(attached(&cg), v2.programs.len(), "exactly v2's programs are attached");
    let report = att.replace_with(&v3).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report, (v3.programs.len(), 0, dropped), "v3 drops the address programs");
    assert_eq!(attached(&cg), v3.programs.len());
    let report = att.replace_with(&v2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report, (v3.programs.len(), dropped, 0), "back to v2 adds them");
    assert_eq!(attached(&cg), v2.programs.len());
    teardown(att, cg);
}
