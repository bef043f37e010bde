//! A resident zygote serves sandbox runs over its socket (output captured
//! or written to descriptors the client passes, workspace passed as a
//! descriptor), refuses bad requests, and exits when idle leaving nothing
//! behind: socket, prepared sandboxes, cgroups, scratch directories,
//! mounts, descriptors, children.

mod common;

use common::{count_fds, count_mounts, no_children_left, sandbox_residue};
use phantom_user::apply::LoadedBundle;
use phantom_user::spawn::SANDBOX_ID_BASE;
use phantom_user::zygote::{self, Request};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

/// The tests of this binary count descriptors: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn zygote_serves_runs_and_exits_when_idle() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let text = "profile: zyg\nsecurity:\n  level: low\n  landlock:\n    paths:\n      - path: /usr\n        access: read-only\nnetwork:\n  mode: loopback-only\n";
    let policy = phantom_dsl::compile_str("z.yaml", text).policy.unwrap();
    let bundle = LoadedBundle::from_bundle(&phantom_ebpf::bundle::build(&policy).unwrap()).unwrap();
    let sock = std::env::temp_dir().join(format!("phantom-zygote-test-{}.sock", std::process::id()));
    let path = sock.clone();
    let (fds, mounts) = (count_fds(), count_mounts());
    let server = std::thread::spawn(move || zygote::serve(&path, policy, bundle, Duration::from_millis(400), None));
    assert!(zygote::wait_ready(&sock, Duration::from_secs(5)), "the zygote did not come up");

    for i in 0..3 {
        let req = Request {
            argv: vec!["/bin/sh".into(), "-c".into(), format!("echo run {i}; echo $$; exit {i}")],
            env: vec![],
            workspace: None,
            timeout_ms: Some(10_000),
            output_cap: 4096,
        };
        let r = zygote::run(&sock, &req).unwrap();
        assert_eq!((r.stdout.as_str(), r.exit_code), (format!("run {i}\n1\n").as_str(), Some(i)), "{r:?}");
    }
    // A malformed request gets an error answer, not a hang or a crash.
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(b"not json\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert!(line.contains("bad request"), "{line}");
    drop(s);

    // stdout and stderr passed as descriptors; the workspace as a directory
    // descriptor, bound into a prepared sandbox.
    let ws = std::env::temp_dir().join(format!("phantom-zygote-ws-{}", std::process::id()));
    std::fs::create_dir_all(&ws).unwrap();
    std::os::unix::fs::chown(&ws, Some(SANDBOX_ID_BASE), Some(SANDBOX_ID_BASE)).unwrap();
    let (mut rd, wr) = std::io::pipe().unwrap();
    let req = Request {
        argv: vec!["/bin/sh".into(), "-c".into(), "pwd; echo to-err >&2; echo kept > file".into()],
        env: vec![],
        workspace: Some(ws.clone()),
        timeout_ms: Some(10_000),
        output_cap: 4096,
    };
    let r = zygote::run_passing(&sock, &req, Some((wr.as_fd(), wr.as_fd()))).unwrap();
    drop(wr);
    let mut got = String::new();
    rd.read_to_string(&mut got).unwrap();
    assert_eq!((got.as_str(), r.stdout.as_str(), r.exit_code), ("/workspace\nto-err\n", "", Some(0)), "{r:?}");
    drop(rd);
    assert_eq!(std::fs::read_to_string(ws.join("file")).unwrap(), "kept\n");
    std::fs::remove_dir_all(&ws).unwrap();

    server.join().unwrap().unwrap();
    assert!(!sock.exists(), "the idle zygote left its socket behind");
    assert_eq!(sandbox_residue("zyg"), Vec::<String>::new(), "cgroups or scratch directories left behind");
    assert_eq!((count_fds(), count_mounts()), (fds, mounts), "descriptors or mounts left behind");
    assert!(no_children_left(), "a prepared sandbox was not reaped");
}

#[test]
fn sigterm_stops_the_zygote_leaving_nothing_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let text = "profile: zygterm\nsecurity:\n  level: low\n  landlock:\n    paths:\n      - path: /usr\n        access: read-only\nnetwork:\n  mode: loopback-only\n";
    let policy = phantom_dsl::compile_str("z.yaml", text).policy.unwrap();
    let bundle = LoadedBundle::from_bundle(&phantom_ebpf::bundle::build(&policy).unwrap()).unwrap();
    let sock = std::env::temp_dir().join(format!("phantom-zygote-term-{}.sock", std::process::id()));
    let (fds, mounts) = (count_fds(), count_mounts());
    let path = sock.clone();
    // An idle timeout far away: only the signal ends it.
    let server = std::thread::spawn(move || zygote::serve(&path, policy, bundle, Duration::from_secs(3600), None));
    assert!(zygote::wait_ready(&sock, Duration::from_secs(5)), "the zygote did not come up");
    let req = Request {
        argv: vec!["/bin/true".into()],
        env: vec![],
        workspace: None,
        timeout_ms: Some(10_000),
        output_cap: 4096,
    };
    assert_eq!(zygote::run(&sock, &req).unwrap().exit_code, Some(0));
    // SAFETY: the zygote installed its handler before it listened.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    server.join().unwrap().unwrap();
    assert!(!sock.exists(), "the stopped zygote left its socket behind");
    assert_eq!(sandbox_residue("zygterm"), Vec::<String>::new(), "cgroups or scratch directories left behind");
    assert_eq!((count_fds(), count_mounts()), (fds, mounts), "descriptors or mounts left behind");
    assert!(no_children_left(), "a prepared sandbox was not reaped");
}

#[test]
fn a_zero_wait_still_probes_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sock = std::env::temp_dir().join(format!("phantom-zygote-probe-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    assert!(!zygote::wait_ready(&sock, Duration::ZERO), "nothing listens yet");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    assert!(zygote::wait_ready(&sock, Duration::ZERO), "a listening socket must be seen without waiting");
    drop(listener);
    std::fs::remove_file(&sock).unwrap();
}
