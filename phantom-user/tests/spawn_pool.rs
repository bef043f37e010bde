//! Sandboxes prepared ahead of time by a `Spawner`: each serves exactly one
//! request, nothing of one request is visible to the next, every layer is
//! applied (the same enforcement report as a direct spawn, denials
//! witnessed), stdio, exit status, timeout and workspaces work through it.

mod common;

use phantom_user::apply::LoadedBundle;
use phantom_user::spawn::{run, RunResult, SpawnRequest, Spawner, Stdio, SANDBOX_ID_BASE};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

const POLICY: &str = "profile: pool\nmode: sandbox\nsecurity:\n  seccomp:\n    default: allow\n    deny: [uname]\n  landlock:\n    paths:\n      - path: /usr\n        access: read-only\n      - path: /tmp\n        access: read-write\nnetwork:\n  mode: loopback-only\n";

fn load(text: &str) -> (phantom_dsl::ir::Policy, LoadedBundle) {
    let c = phantom_dsl::compile_str("pool.yaml", text);
    let p = c.policy.unwrap_or_else(|| panic!("{:#?}", c.diagnostics.items));
    let b = LoadedBundle::from_bundle(&phantom_ebpf::bundle::build(&p).unwrap()).unwrap();
    (p, b)
}

fn sh(script: &str, workspace: Option<PathBuf>, timeout_ms: u64) -> SpawnRequest {
    SpawnRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![("GREETING".into(), "hi".into())],
        workspace,
        timeout: Some(Duration::from_millis(timeout_ms)),
        output_cap: 1 << 16,
    }
}

fn full_spawner(size: usize) -> Spawner {
    let (p, b) = load(POLICY);
    let s = Spawner::new(&p, &b, size).unwrap();
    assert!(s.wait_full(Duration::from_secs(20)), "the pool did not fill: {:?}", s.refill_error());
    s
}

#[test]
fn each_prepared_sandbox_serves_one_request_and_keeps_nothing_from_the_last() {
    let spawner = full_spawner(2);
    // In a row: each request is pid 1 of its own namespace and sees none
    // of the files the previous one left in /tmp and /workspace.
    let script = "echo $$; ls -A /tmp /workspace | tr '\\n' ' '; echo; touch /tmp/left-behind /workspace/left-behind";
    for _ in 0..4 {
        let r = spawner.run(&sh(script, None, 10_000)).unwrap();
        assert_eq!(r.exit_code, Some(0), "{r:?}");
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[0], "1", "the command is pid 1 of its own namespace: {r:?}");
        // `ls -A /tmp /workspace` prints only the headers: both are empty.
        let listed: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(listed, ["/tmp:", "/workspace:"], "a previous request's files are visible: {r:?}");
    }
    // At the same time (namespace ids are only unique among live ones):
    // every request has its own pid, mount, network and ipc namespaces.
    let script = "readlink /proc/self/ns/pid /proc/self/ns/mnt /proc/self/ns/net /proc/self/ns/ipc; sleep 0.5";
    let runs: Vec<RunResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| spawner.run(&sh(script, None, 10_000)).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut namespaces = std::collections::HashSet::new();
    for r in &runs {
        assert_eq!(r.stdout.lines().count(), 4, "{r:?}");
        for ns in r.stdout.lines() {
            assert!(namespaces.insert(ns.to_string()), "namespace {ns} seen by two live requests");
        }
    }
}

#[test]
fn the_pooled_path_applies_every_layer_a_direct_spawn_does() {
    let (p, b) = load(POLICY);
    let spawner = full_spawner(1);
    let script = "uname; echo uname=$?; cat /etc/hostname; echo cat=$?; echo x > /usr/x; echo write=$?";
    let pooled = spawner.run(&sh(script, None, 10_000)).unwrap();
    let direct = run(&p, &b, &sh(script, None, 10_000)).unwrap();
    let layers = |r: &RunResult| -> Vec<(String, String)> {
        r.enforcement.iter().map(|l| (l.layer.clone(), format!("{:?}", l.enforcement))).collect()
    };
    assert_eq!(layers(&pooled), layers(&direct));
    for layer in ["namespaces", "seccomp", "landlock", "cgroup-bpf", "network"] {
        assert!(layers(&pooled).iter().any(|(l, e)| l == layer && e == "Full"), "{layer}: {:?}", pooled.enforcement);
    }
    // seccomp denies uname, /etc is not in the root, /usr is read-only.
    assert_eq!(pooled.stdout, direct.stdout);
    let out: Vec<&str> = pooled.stdout.lines().collect();
    assert_eq!(out, ["uname=1", "cat=1", "write=2"], "{pooled:?}");
}

#[test]
fn stdio_exit_status_and_timeout_through_the_pool() {
    let spawner = full_spawner(2);
    let r = spawner.run(&sh("printf 'out:%s\\n' \"$GREETING\"; printf err >&2; exit 7", None, 10_000)).unwrap();
    assert_eq!((r.stdout.as_str(), r.stderr.as_str(), r.exit_code, r.timed_out), ("out:hi\n", "err", Some(7), false));

    // A signal that kills the command (not pid 1: the kernel protects it
    // from its own namespace) is reported as the shell's status.
    let r = spawner.run(&sh("/bin/sh -c 'kill -9 $$'; echo $?", None, 10_000)).unwrap();
    assert_eq!(r.stdout, "137\n", "{r:?}");

    let r = spawner.run(&sh("sleep 1000 & sleep 1000; echo not reached", None, 300)).unwrap();
    assert!(r.timed_out, "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");

    // Passed-through descriptors: the sandbox writes into our pipe directly.
    let (mut rd, wr) = std::io::pipe().unwrap();
    let r = spawner
        .run_stdio(
            &sh("echo straight; echo also >&2", None, 10_000),
            Stdio::Pass { stdout: wr.as_fd(), stderr: wr.as_fd() },
        )
        .unwrap();
    drop(wr);
    let mut got = String::new();
    rd.read_to_string(&mut got).unwrap();
    assert_eq!((got.as_str(), r.stdout.as_str(), r.exit_code), ("straight\nalso\n", "", Some(0)));
}

#[test]
fn a_command_that_cannot_be_executed_is_an_error_not_an_exit_status() {
    // The sandbox reports a failure before exec on its status pipe, which
    // the supervisor reads after the exit: the caller still gets the stage
    // and the kernel's reason, pooled and direct alike.
    let spawner = full_spawner(1);
    let (p, b) = load(POLICY);
    let mut req = sh("", None, 10_000);
    req.argv = vec!["/usr/bin/phantom-no-such-command".into()];
    for (how, got) in [("pooled", spawner.run(&req)), ("direct", run(&p, &b, &req))] {
        match got {
            Err(phantom_user::spawn::SpawnError::Child { stage, message }) => {
                assert_eq!(stage, "exec", "{how}: {message}");
                assert!(message.contains("No such file"), "{how}: {message}");
            }
            other => panic!("{how}: expected an exec error, got {other:?}"),
        }
    }
    // The next request is served as usual.
    let r = spawner.run(&sh("echo fine", None, 10_000)).unwrap();
    assert_eq!((r.stdout.as_str(), r.exit_code), ("fine\n", Some(0)), "{r:?}");
}

#[test]
fn a_workspace_is_bound_into_a_prepared_sandbox_at_request_time() {
    let spawner = full_spawner(2);
    let ws = std::env::temp_dir().join(format!("phantom-pool-ws-{}", std::process::id()));
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("input"), "from the host\n").unwrap();
    std::os::unix::fs::chown(&ws, Some(SANDBOX_ID_BASE), Some(SANDBOX_ID_BASE)).unwrap();
    let r = spawner.run(&sh("pwd; cat input; echo written > output", Some(ws.clone()), 10_000)).unwrap();
    assert_eq!((r.stdout.as_str(), r.exit_code), ("/workspace\nfrom the host\n", Some(0)), "{r:?}");
    assert_eq!(std::fs::read_to_string(ws.join("output")).unwrap(), "written\n");
    // The next request (no workspace) gets its own empty one.
    let r = spawner.run(&sh("ls -A /workspace | wc -l", None, 10_000)).unwrap();
    assert_eq!(r.stdout.trim(), "0", "{r:?}");
    std::fs::remove_dir_all(&ws).unwrap();
}

#[test]
fn an_empty_pool_prepares_inline_with_the_same_layers() {
    let (p, b) = load(POLICY);
    let spawner = Spawner::new(&p, &b, 0).unwrap();
    assert_eq!(spawner.ready(), 0);
    let r = spawner.run(&sh("uname; echo $?", None, 10_000)).unwrap();
    assert_eq!((r.stdout.as_str(), r.exit_code), ("1\n", Some(0)), "{r:?}");
    assert!(r.enforcement.iter().any(|l| l.layer == "seccomp"), "{:?}", r.enforcement);
}
