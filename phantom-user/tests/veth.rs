//! The allowlist sandbox's veth pair, on the host kernel (root). Both
//! namespaces are made by the test (a stand-in "host" and a "sandbox"), so
//! nothing touches the real host's network; they are destroyed at the end
//! and take the pair with them, which the test checks.

use phantom_user::net::veth::{self, SANDBOX_IF};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A fresh network namespace (made on a thread: unshare affects only it).
fn new_netns() -> OwnedFd {
    std::thread::spawn(|| {
        // SAFETY: unshare of this thread's network namespace.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare: {}", io::Error::last_os_error());
        // SAFETY: opens our thread's namespace file; the fd is ours.
        let fd = unsafe { libc::open(c"/proc/thread-self/ns/net".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        assert!(fd >= 0, "open ns: {}", io::Error::last_os_error());
        // SAFETY: a fresh fd we own.
        unsafe { OwnedFd::from_raw_fd(fd) }
    })
    .join()
    .unwrap()
}

fn listen_in(ns: BorrowedFd<'_>, ip: IpAddr) -> TcpListener {
    veth::in_netns(Some(ns), || TcpListener::bind(SocketAddr::new(ip, 0))).unwrap()
}

/// A TCP connection from inside `ns`. Allowed connections get 3 s: on a
/// pair made while other namespaces churn, the first SYN is now and then
/// lost and resent after 1 s (not understood yet; see the notes).
fn connect_from(ns: BorrowedFd<'_>, to: SocketAddr) -> io::Result<TcpStream> {
    veth::in_netns(Some(ns), || TcpStream::connect_timeout(&to, Duration::from_secs(3)))
}

/// A connection that must not be made: it times out after 1.5 s, past
/// TCP's first SYN retransmission (1 s), so one lost SYN cannot pass for
/// a drop.
fn expect_dropped(ns: BorrowedFd<'_>, to: SocketAddr, what: &str) {
    let r = veth::in_netns(Some(ns), || TcpStream::connect_timeout(&to, Duration::from_millis(1500)));
    match r {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
        other => panic!("{what}: expected the SYN to be dropped (a timeout), got {other:?}"),
    }
}

/// `r0 = XDP_DROP; exit`, loaded as an XDP program.
fn xdp_drop_all() -> OwnedFd {
    let insns: [u64; 2] = [0xb7 | (1u64 << 32), 0x95];
    let bytes: Vec<u8> = insns.iter().flat_map(|i| i.to_le_bytes()).collect();
    let load = phantom_bpf_sys::ProgLoad {
        prog_type: phantom_bpf_sys::BPF_PROG_TYPE_XDP,
        expected_attach_type: 0,
        insns: &bytes,
        license: c"GPL",
        name: "test_drop",
        attach_btf_id: 0,
    };
    phantom_bpf_sys::prog_load(&load, phantom_bpf_sys::INITIAL_LOG_SIZE).unwrap().0
}

/// Whether namespace `ns` (the test's own when `None`) has interface
/// `name` (if_nametoindex asks a socket of the thread's namespace; sysfs
/// would show the namespace that mounted it).
fn has_link(ns: Option<BorrowedFd<'_>>, name: &str) -> bool {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid NUL-terminated name.
    veth::in_netns(ns, || Ok(unsafe { libc::if_nametoindex(c.as_ptr()) } != 0)).unwrap()
}

#[test]
fn a_veth_pair_connects_the_sandbox_and_xdp_on_either_end_cuts_it() {
    let host = new_netns();
    let sandbox = new_netns();
    // An index real sandboxes on this machine are unlikely to hold, so the
    // last check (nothing in the real host namespace) means something.
    let start = 9000 + std::process::id() % 1000;
    let v = veth::create_any(Some(host.as_fd()), sandbox.as_fd(), start).unwrap_or_else(|e| panic!("create: {e}"));
    assert_eq!(v.addrs.index, start, "the test's own host namespace has no pair yet");
    assert!(has_link(Some(host.as_fd()), &v.addrs.host_name()));
    assert!(has_link(Some(sandbox.as_fd()), SANDBOX_IF));

    // Sandbox -> host, both families; host -> sandbox.
    let l4 = listen_in(host.as_fd(), v.addrs.host_v4.into());
    let l6 = listen_in(host.as_fd(), v.addrs.host_v6.into());
    let ls = listen_in(sandbox.as_fd(), v.addrs.sandbox_v4.into());
    connect_from(sandbox.as_fd(), l4.local_addr().unwrap()).expect("sandbox -> host over IPv4");
    connect_from(sandbox.as_fd(), l6.local_addr().unwrap()).expect("sandbox -> host over IPv6");
    connect_from(host.as_fd(), ls.local_addr().unwrap()).expect("host -> sandbox over IPv4");
    // The default route goes through the host end: an address beyond it
    // is routed (no forwarding here, so nothing answers: a timeout, not
    // "network unreachable").
    expect_dropped(sandbox.as_fd(), "192.0.2.1:80".parse().unwrap(), "a connection past the host end");

    // XDP on the host end sees what the sandbox sends: dropping all of it
    // cuts sandbox -> host; detaching restores it.
    let drop_all = xdp_drop_all();
    veth::attach_xdp(Some(host.as_fd()), v.host_ifindex, Some(drop_all.as_fd())).unwrap();
    expect_dropped(sandbox.as_fd(), l4.local_addr().unwrap(), "XDP_DROP on the host end");
    veth::attach_xdp(Some(host.as_fd()), v.host_ifindex, None).unwrap();
    connect_from(sandbox.as_fd(), l4.local_addr().unwrap()).expect("after detaching");

    // XDP on the sandbox end sees what enters the sandbox.
    veth::attach_xdp(Some(sandbox.as_fd()), v.sandbox_ifindex, Some(drop_all.as_fd())).unwrap();
    expect_dropped(host.as_fd(), ls.local_addr().unwrap(), "XDP_DROP on the sandbox end");
    veth::attach_xdp(Some(sandbox.as_fd()), v.sandbox_ifindex, None).unwrap();

    // A second pair in the same host namespace takes the next index.
    let sandbox2 = new_netns();
    let v2 = veth::create_any(Some(host.as_fd()), sandbox2.as_fd(), start).unwrap();
    assert_eq!(v2.addrs.index, start + 1);
    v2.delete(Some(host.as_fd())).unwrap();
    assert!(!has_link(Some(host.as_fd()), &v2.addrs.host_name()), "delete removes the host end");
    assert!(!has_link(Some(sandbox2.as_fd()), SANDBOX_IF), "and the sandbox end");

    // The sandbox namespace going away takes the pair with it.
    drop((l4, l6, ls));
    drop(sandbox);
    let name = v.addrs.host_name();
    let mut gone = false;
    for _ in 0..200 {
        if !has_link(Some(host.as_fd()), &name) {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(gone, "{name} outlived the sandbox's namespace");
    for n in [&name, &v2.addrs.host_name()] {
        assert!(!has_link(None, n), "{n} exists in the real host namespace");
    }
}

/// The policy's XDP programs on the pair, alone (no cgroup programs here):
/// egress judged on the host end, ingress and replies on the sandbox end.
#[test]
fn allowlist_xdp_programs_enforce_the_rules_on_the_pair() {
    let start = 9000 + std::process::id() % 1000 + 500;
    let a = veth::PairAddrs::new(start);
    let text = format!(
        "profile: xdp-veth\nnetwork:\n  mode: allowlist\n  egress:\n    - to: [{h4}, {h6}]\n      ports: 8443\n      protocol: tcp\n  ingress:\n    - from: {h4}\n      ports: 9000\n      protocol: tcp\n",
        h4 = a.host_v4,
        h6 = a.host_v6
    );
    let c = phantom_dsl::compile_str("xdp-veth.yaml", &text);
    assert!(!c.has_errors(), "{text}\n{:#?}", c.diagnostics);
    // Through the bundle, as sandboxes get them: `xdp.bpf.o` loaded with aya.
    let b = phantom_ebpf::bundle::build(&c.policy.unwrap()).unwrap();
    let obj = phantom_user::bundle_object::BundleObject::from_bundle(
        &b,
        phantom_ebpf::bundle::XDP_OBJECT,
        phantom_ebpf::bundle::XDP_MAPS,
    )
    .unwrap()
    .expect("allowlist mode has an XDP object");
    let loaded = phantom_user::net::xdp::load(&obj).unwrap_or_else(|e| panic!("{e}"));

    let host = new_netns();
    let sandbox = new_netns();
    let v = phantom_user::net::setup_allowlist(Some(host.as_fd()), sandbox.as_fd(), &loaded, start)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.addrs, a);
    let at = |ip: IpAddr, port: u16| SocketAddr::new(ip, port);
    let listen = |ns: BorrowedFd<'_>, s: SocketAddr| veth::in_netns(Some(ns), || TcpListener::bind(s)).unwrap();
    let _h = [
        listen(host.as_fd(), at(a.host_v4.into(), 8443)),
        listen(host.as_fd(), at(a.host_v4.into(), 8444)),
        listen(host.as_fd(), at(a.host_v6.into(), 8443)),
    ];
    let _s = [
        listen(sandbox.as_fd(), at(a.sandbox_v4.into(), 9000)),
        listen(sandbox.as_fd(), at(a.sandbox_v4.into(), 9001)),
    ];

    // Egress: the rule's port passes (and its SYN-ACK comes back through
    // the flow map), another port is dropped on the host end.
    connect_from(sandbox.as_fd(), at(a.host_v4.into(), 8443)).expect("egress to an allowed port (IPv4)");
    connect_from(sandbox.as_fd(), at(a.host_v6.into(), 8443)).expect("egress to an allowed port (IPv6)");
    expect_dropped(sandbox.as_fd(), at(a.host_v4.into(), 8444), "egress to a port no rule allows");
    // Ingress: the rule's port is admitted (and the reply leaves through
    // the flow map), another is dropped on the sandbox end.
    connect_from(host.as_fd(), at(a.sandbox_v4.into(), 9000)).expect("ingress to an allowed port");
    expect_dropped(host.as_fd(), at(a.sandbox_v4.into(), 9001), "ingress to a port no rule allows");
}
