//! The spawner on the real kernel: isolation witnessed from inside the
//! sandbox, limits that stop what they should, exact output and exit
//! codes, and nothing left behind. Runs as root on the host tier.

use phantom_user::apply::LoadedBundle;
use phantom_user::spawn::{run, RunResult, SpawnRequest};
use std::time::Duration;

fn policy(text: &str) -> (phantom_dsl::ir::Policy, LoadedBundle) {
    let c = phantom_dsl::compile_str("test.yaml", text);
    let p = c.policy.unwrap_or_else(|| panic!("{:#?}", c.diagnostics.items));
    let b = phantom_ebpf::bundle::build(&p).unwrap();
    let loaded = LoadedBundle::from_bundle(&b).unwrap();
    (p, loaded)
}

fn sh(text: &str, script: &str, timeout_ms: u64) -> RunResult {
    let (p, b) = policy(text);
    let req = SpawnRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![],
        workspace: None,
        timeout: Some(Duration::from_millis(timeout_ms)),
        output_cap: 1 << 16,
    };
    run(&p, &b, &req).unwrap_or_else(|e| panic!("spawn failed: {e}"))
}

/// `python3 -c script`, 20 s at most, 64 KiB of output kept.
fn python(script: impl Into<String>) -> SpawnRequest {
    SpawnRequest {
        argv: vec!["python3".into(), "-c".into(), script.into()],
        env: vec![],
        workspace: None,
        timeout: Some(Duration::from_secs(20)),
        output_cap: 1 << 16,
    }
}

const BASE: &str =
    "profile: t\nmode: sandbox\nsecurity:\n  landlock:\n    paths:\n      - path: /usr\n        access: read-only\n";

#[test]
fn output_and_exit_code_are_exact() {
    let r = sh(BASE, "printf 'out\\n'; printf 'err' >&2; exit 7", 10_000);
    assert_eq!((r.stdout.as_str(), r.stderr.as_str(), r.exit_code, r.signal), ("out\n", "err", Some(7), None));
    assert!(!r.timed_out);
}

#[test]
fn host_processes_are_invisible() {
    let r = sh(BASE, "echo $$; ls /proc | grep -c '^[0-9]'", 10_000);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"1"), "the shell is pid 1: {r:?}");
    // The shell and the `ls` and `grep` it forked; the host has hundreds.
    let n: u32 = lines[1].parse().unwrap();
    assert!(n <= 4, "{n} pids visible: {r:?}");
}

#[test]
fn reads_and_writes_outside_the_policy_fail() {
    let r = sh(
        BASE,
        "cat /etc/passwd; echo rc=$?; echo x > /usr/evil; echo rc=$?; echo ok > /workspace/f && cat /workspace/f; ls /root; echo rc=$?",
        10_000,
    );
    let out: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(out, ["rc=1", "rc=2", "ok", "rc=2"], "{r:?}");
    assert!(r.stderr.contains("/etc/passwd: No such file"), "{}", r.stderr);
    assert!(
        r.stderr.contains("/usr/evil") && (r.stderr.contains("Read-only") || r.stderr.contains("Permission denied")),
        "{}",
        r.stderr
    );
}

#[test]
fn landlock_denies_a_visible_path_outside_the_allowed_ones() {
    // /etc is visible (bound) but Landlock grants only /etc/hostname's directory... none:
    // allow /usr and /etc read-only, then deny listing via a policy that omits /etc.
    let text = "profile: t\nsecurity:\n  landlock:\n    paths:\n      - path: /usr\n        access: read-only\n      - path: /etc/hostname\n        access: [read]\n";
    let r = sh(
        text,
        "cat /etc/hostname >/dev/null; echo rc=$?; ls /proc/1 >/dev/null; echo rc=$?; ls / >/dev/null; echo rc=$?",
        10_000,
    );
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), ["rc=0", "rc=0", "rc=2"], "{r:?}");
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
}

#[test]
fn no_network_to_the_host_in_loopback_only_mode() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let text = format!("{BASE}network:\n  mode: loopback-only\n");
    let script = format!(
        "python3 -c \"import socket\ntry:\n  socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')\nexcept OSError as e: print('refused', e.errno)\""
    );
    let r = sh(&text, &script, 20_000);
    assert_eq!(r.stdout.trim(), "refused 111", "{r:?}");
}

#[test]
fn denied_syscall_fails_with_its_errno() {
    let text = format!(
        "{BASE}  seccomp:\n    default: allow\n    rules:\n      - syscall: uname\n        action: errno EACCES\n"
    );
    let r = sh(&text, "uname; echo rc=$?", 10_000);
    assert_eq!(r.stdout.trim(), "rc=1", "{r:?}");
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
}

#[test]
fn timeout_kills_the_whole_sandbox() {
    let r = sh(BASE, "sleep 30 & sleep 30", 300);
    assert!(r.timed_out, "{r:?}");
    assert_eq!(r.signal, Some(libc::SIGKILL));
    assert!(r.duration_ms < 5_000.0, "{}", r.duration_ms);
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    let text = format!("{BASE}resources:\n  pids: 8\n");
    let r = sh(&text, "i=0; while [ $i -lt 40 ]; do sleep 5 & i=$((i+1)); done 2>/dev/null; echo forked", 20_000);
    // The loop runs into the limit: sh reports failed forks.
    assert!(
        r.stderr.contains("fork") || r.stderr.contains("Resource temporarily unavailable") || r.exit_code != Some(0),
        "{r:?}"
    );
    let r2 = sh(&text, "n=0; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do (sleep 3) & n=$((n+1)); done 2>/dev/null; ls /proc | grep -c '^[0-9]'", 20_000);
    let visible: u32 = r2.stdout.trim().parse().unwrap_or(0);
    assert!(visible <= 8, "more than 8 processes alive: {r2:?}");
}

#[test]
fn memory_limit_stops_a_memory_hog() {
    let text = format!("{BASE}resources:\n  memory: 64MiB\n");
    let r = sh(&text, "python3 -c 'b = bytearray(512 * 1024 * 1024); print(len(b))'", 30_000);
    assert_ne!(r.exit_code, Some(0), "{r:?}");
    assert!(!r.stdout.contains("536870912"), "{r:?}");
    assert!(r.oom_killed || r.signal == Some(libc::SIGKILL) || r.stderr.contains("MemoryError"), "{r:?}");
}

#[test]
fn pooled_network_namespaces_are_fresh_isolated_and_have_loopback() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (p, b) = policy(&format!("{BASE}network:\n  mode: loopback-only\n  bind:\n    - ports: 8080\n"));
    let pool = phantom_user::spawn::netns::NetnsPool::new(2);
    let script = format!(
        "import socket\ns = socket.socket(); s.bind(('127.0.0.1', 8080)); s.listen()\nc = socket.create_connection(s.getsockname(), timeout=2); print('loopback ok')\ntry:\n  socket.create_connection(('127.0.0.1', {port}), timeout=2); print('host reached')\nexcept OSError as e: print('host refused', e.errno)\nprint(open('/proc/net/dev').read().count(':'))"
    );
    let req = python(script);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let r = phantom_user::spawn::run_with(&p, &b, &req, Some(&pool)).unwrap();
        assert_eq!(r.stdout, "loopback ok\nhost refused 111\n1\n", "{r:?}");
        seen.insert(r.stdout.clone());
    }
    assert_eq!(seen.len(), 1);
}

/// Every sandbox joins a network namespace the supervisor made (owned by
/// the host's user namespace), pooled or not: its root holds no capability
/// there, so it cannot reconfigure the namespace (nor reach netfilter) or
/// open raw sockets. Witnessed in a direct spawn (no pool) and through a
/// `Spawner`, with loopback and without.
#[test]
fn the_sandbox_holds_no_capability_over_its_network_namespace() {
    let script = "import fcntl, socket, struct\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        flags = struct.unpack('16sH', fcntl.ioctl(s, 0x8913, struct.pack('16sH22x', b'lo', 0))[:18])[1]\n\
        print('lo up' if flags & 1 else 'lo down')\n\
        try:\n    fcntl.ioctl(s, 0x8914, struct.pack('16sH22x', b'lo', flags ^ 1)); print('lo reconfigured')\n\
        except OSError as e: print('reconfigure errno', e.errno)\n\
        try:\n    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print('raw socket')\n\
        except OSError as e: print('raw errno', e.errno)\n";
    let req = python(script);
    for (mode, lo) in [("loopback-only", "lo up"), ("none", "lo down")] {
        let (p, b) = policy(&format!("{BASE}network:\n  mode: {mode}\n"));
        let want = format!("{lo}\nreconfigure errno 1\nraw errno 1\n");
        let direct = run(&p, &b, &req).unwrap();
        assert_eq!(direct.stdout, want, "{mode}, direct: {direct:?}");
        let spawner = phantom_user::spawn::Spawner::new(&p, &b, 1).unwrap();
        let pooled = spawner.run(&req).unwrap();
        assert_eq!(pooled.stdout, want, "{mode}, pooled: {pooled:?}");
    }
}

#[test]
fn cgroup_bpf_rules_apply_inside_the_sandbox() {
    let text = format!(
        "{BASE}network:\n  mode: allowlist\n  egress:\n    - to: 198.51.100.0/24\n      ports: [443]\n      protocol: tcp\ndevices:\n  allow:\n    - {{type: char, major: 1, minor: 9, access: [read]}}\n"
    );
    let (p, b) = policy(&text);
    let script = "import socket, errno\nfor kind, name in [(socket.SOCK_STREAM, 'tcp'), (socket.SOCK_DGRAM, 'udp')]:\n  try:\n    socket.socket(socket.AF_INET, kind).close(); print(name, 'ok')\n  except OSError as e: print(name, errno.errorcode[e.errno])\nopen('/dev/urandom', 'rb').read(1); print('urandom read ok')\ntry:\n  open('/dev/urandom', 'wb'); print('urandom write ok')\nexcept OSError as e: print('urandom write', errno.errorcode[e.errno])\nopen('/dev/null', 'wb').write(b'x'); print('null ok')";
    let req = python(script);
    let r = run(&p, &b, &req).unwrap();
    assert_eq!(r.stdout, "tcp ok\nudp EPERM\nurandom read ok\nurandom write EPERM\nnull ok\n", "{r:?}");
    // Both denials are in the run's audit events, from cgroup-BPF.
    let events: Vec<(&str, &str, &str)> =
        r.audit.iter().map(|e| (e.layer.as_str(), e.hook.as_str(), e.verdict.as_str())).collect();
    assert_eq!(
        events,
        [("cgroup-bpf", "cgroup/sock_create", "deny"), ("cgroup-bpf", "cgroup/dev", "deny")],
        "{:#?}",
        r.audit
    );
    assert_eq!(r.audit[0].object, "socket(family 2, type 2, protocol 17)", "{:#?}", r.audit);
    assert_eq!(r.audit[1].object, "char 1:9 write", "{:#?}", r.audit);
    assert!(
        r.enforcement
            .iter()
            .any(|l| l.layer == "cgroup-bpf" && l.enforcement == phantom_user::report::Enforcement::Full),
        "{r:?}"
    );
    // Outside the sandbox, the same actions work.
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
}

/// Allowlist mode end to end: the sandbox gets a veth pair whose host end
/// is its default gateway. A TCP connect to the gateway on the allowed
/// port crosses the pair both ways (XDP passes the SYN on the host end and
/// the host's RST back in through the flow map: ECONNREFUSED, no listener
/// needed); another port is refused before it leaves (Landlock's TCP port
/// rule answers first: EACCES; cgroup connect4 would say EPERM). The host
/// end is an interface this test's sandbox created, with a private address.
#[test]
fn allowlist_sandboxes_get_a_veth_pair_with_xdp() {
    let text = format!(
        "{BASE}network:\n  mode: allowlist\n  egress:\n    - to: 10.200.0.0/16\n      ports: 7\n      protocol: tcp\n"
    );
    let (p, b) = policy(&text);
    let script = [
        "import socket, errno",
        "gw = None",
        "for line in open('/proc/net/route').read().splitlines()[1:]:",
        "  f = line.split()",
        "  if f[1] == '00000000': gw = socket.inet_ntoa(bytes.fromhex(f[2])[::-1])",
        "print('gateway', gw is not None and gw.startswith('10.200.'))",
        "for port in (7, 8):",
        "  s = socket.socket(); s.settimeout(5)",
        "  try:",
        "    s.connect((gw, port)); print(port, 'connected')",
        "  except OSError as e: print(port, errno.errorcode.get(e.errno, 'timeout') if e.errno else 'timeout')",
    ]
    .join("\n");
    let req = SpawnRequest { timeout: Some(Duration::from_secs(30)), ..python(script) };
    let r = run(&p, &b, &req).unwrap();
    assert_eq!(r.stdout, "gateway True\n7 ECONNREFUSED\n8 EACCES\n", "{r:?}");
    let layer = |name: &str| r.enforcement.iter().find(|l| l.layer == name).unwrap_or_else(|| panic!("{name}: {r:?}"));
    assert_eq!(layer("xdp").enforcement, phantom_user::report::Enforcement::Full, "{r:?}");
    assert_eq!(layer("network").enforcement, phantom_user::report::Enforcement::Full, "{r:?}");
    // The pair goes away with the sandbox's namespace (asynchronously).
    let reason = layer("xdp").reason.clone().unwrap();
    let name = reason.split_whitespace().find(|w| w.starts_with("phv")).unwrap().trim_end_matches(',').to_string();
    let c = std::ffi::CString::new(name.clone()).unwrap();
    // SAFETY: a valid NUL-terminated interface name.
    let exists = || unsafe { libc::if_nametoindex(c.as_ptr()) } != 0;
    for _ in 0..500 {
        if !exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!exists(), "{name} outlived its sandbox");
}

/// A `--workspace` owned by a user is attached idmapped: inside, the
/// owner's files belong to the sandbox's root and it can write there; on
/// disk, what it creates belongs to the owner (not to the sandbox's
/// unprivileged host uid). A root-owned workspace is not idmapped.
#[test]
fn a_user_owned_workspace_is_idmapped_to_the_sandbox_root() {
    use std::os::unix::fs::MetadataExt;
    let dir = std::path::PathBuf::from(format!("/var/tmp/phantom-idmap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mine"), "owner's\n").unwrap();
    let owner = 4242;
    for p in [dir.clone(), dir.join("mine")] {
        std::os::unix::fs::chown(&p, Some(owner), Some(owner)).unwrap();
    }
    let (p, b) = policy(BASE);
    let req = SpawnRequest {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            "stat -c '%u:%g %n' mine; cat mine; echo made > made && echo written".into(),
        ],
        env: vec![],
        workspace: Some(dir.clone()),
        timeout: Some(Duration::from_secs(20)),
        output_cap: 1 << 16,
    };
    let r = run(&p, &b, &req).unwrap_or_else(|e| panic!("{e}"));
    let made = std::fs::metadata(dir.join("made"));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r.stdout, "0:0 mine\nowner's\nwritten\n", "{r:#?}");
    let made = made.expect("the sandbox's file exists on the host");
    assert_eq!((made.uid(), made.gid()), (owner, owner), "on disk it belongs to the workspace's owner");
}
