//! A resident zygote serves sandbox runs over its socket, refuses bad
//! requests, and exits (removing its socket) when idle.

use phantom_user::apply::LoadedBundle;
use phantom_user::zygote::{self, Request};
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

#[test]
fn zygote_serves_runs_and_exits_when_idle() {
    let text = "profile: zyg\nsecurity:\n  level: low\n  landlock:\n    paths:\n      - path: /usr\n        access: read-only\nnetwork:\n  mode: loopback-only\n";
    let policy = phantom_dsl::compile_str("z.yaml", text).policy.unwrap();
    let bundle = LoadedBundle::from_bundle(&phantom_ebpf::bundle::build(&policy).unwrap()).unwrap();
    let sock = std::env::temp_dir().join(format!("phantom-zygote-test-{}.sock", std::process::id()));
    let path = sock.clone();
    let server = std::thread::spawn(move || zygote::serve(&path, policy, bundle, Duration::from_millis(400)));
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

    server.join().unwrap().unwrap();
    assert!(!sock.exists(), "the idle zygote left its socket behind");
}

#[test]
fn a_zero_wait_still_probes_once() {
    let sock = std::env::temp_dir().join(format!("phantom-zygote-probe-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    assert!(!zygote::wait_ready(&sock, Duration::ZERO), "nothing listens yet");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    assert!(zygote::wait_ready(&sock, Duration::ZERO), "a listening socket must be seen without waiting");
    drop(listener);
    std::fs::remove_file(&sock).unwrap();
}
