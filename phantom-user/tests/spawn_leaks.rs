//! Scale without residue: 1,000 sandboxes in a row and 50 at once leave no
//! fd, mount, cgroup, scratch directory or zombie behind, spawned directly
//! and through a `Spawner` with prepared sandboxes (once it is dropped).
//! One test in its own binary, so no other test changes the counts while
//! it runs.

mod common;

use common::{count_fds, count_mounts, no_children_left, sandbox_residue as residue};
use phantom_user::apply::LoadedBundle;
use phantom_user::spawn::{run, SpawnRequest, Spawner};
use std::time::Duration;

#[test]
fn a_thousand_spawns_and_fifty_concurrent_leave_nothing_behind() {
    let text = "profile: leak\nsecurity:\n  seccomp:\n    default: allow\n    deny: [uname]\n  landlock:\n    paths:\n      - path: /usr\n        access: read-only\nresources:\n  memory: 64MiB\n  pids: 16\nnetwork:\n  mode: loopback-only\n";
    let c = phantom_dsl::compile_str("leak.yaml", text);
    let policy = c.policy.unwrap();
    let bundle = LoadedBundle::from_bundle(&phantom_ebpf::bundle::build(&policy).unwrap()).unwrap();
    let req = |argv: &[&str]| SpawnRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        workspace: None,
        timeout: Some(Duration::from_secs(20)),
        output_cap: 4096,
    };
    // Warm up once so lazily created state (the phantom/ cgroup parents) exists.
    assert_eq!(run(&policy, &bundle, &req(&["/bin/true"])).unwrap().exit_code, Some(0));
    let (fds, mounts) = (count_fds(), count_mounts());

    let t = std::time::Instant::now();
    for i in 0..1000 {
        let r = run(&policy, &bundle, &req(&["/bin/true"])).unwrap_or_else(|e| panic!("spawn {i}: {e}"));
        assert_eq!(r.exit_code, Some(0), "spawn {i}: {r:?}");
    }
    let serial = t.elapsed();

    let t = std::time::Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| s.spawn(|| run(&policy, &bundle, &req(&["/bin/sh", "-c", "sleep 0.5; echo done"]))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let concurrent = t.elapsed();
    for r in &results {
        let r = r.as_ref().unwrap();
        assert_eq!((r.exit_code, r.stdout.as_str()), (Some(0), "done\n"), "{r:?}");
    }
    // All 50 slept at the same time, not one after the other.
    assert!(concurrent < Duration::from_secs(20), "50 concurrent sandboxes took {concurrent:?}");

    // The same through a pool of prepared sandboxes; dropping the spawner
    // kills the unused ones and removes everything.
    let spawner = Spawner::new(&policy, &bundle, 4).unwrap();
    for i in 0..1000 {
        let r = spawner.run(&req(&["/bin/true"])).unwrap_or_else(|e| panic!("pooled spawn {i}: {e}"));
        assert_eq!(r.exit_code, Some(0), "pooled spawn {i}: {r:?}");
    }
    let pooled: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..50).map(|_| s.spawn(|| spawner.run(&req(&["/bin/sh", "-c", "sleep 0.5; echo done"])))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &pooled {
        let r = r.as_ref().unwrap();
        assert_eq!((r.exit_code, r.stdout.as_str()), (Some(0), "done\n"), "{r:?}");
    }
    assert!(spawner.wait_full(Duration::from_secs(20)), "the pool did not refill: {:?}", spawner.refill_error());
    drop(spawner);

    assert_eq!(count_fds(), fds, "file descriptors leaked");
    assert_eq!(count_mounts(), mounts, "mounts leaked into the supervisor's namespace");
    assert_eq!(residue("leak"), Vec::<String>::new(), "cgroups or scratch directories left behind");
    assert!(no_children_left(), "a child was not reaped");
    eprintln!("1000 spawns in {serial:?} ({:.2} ms each); 50 concurrent in {concurrent:?}", serial.as_secs_f64());
}
