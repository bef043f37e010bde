//! A policy update reaches a running sandbox (host tier: cgroup-BPF; the
//! BPF-LSM half is in vm_lsm.rs): the sandbox, started under version 1,
//! keeps trying a write both versions deny and a write only version 2
//! allows, while the bundle's running sandboxes are moved to version 2.

mod common;

use phantom_user::apply::LoadedBundle;
use phantom_user::spawn::{run, SpawnRequest};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn policy(text: &str) -> (phantom_dsl::ir::Policy, LoadedBundle) {
    let c = phantom_dsl::compile_str("test.yaml", text);
    let p = c.policy.unwrap_or_else(|| panic!("{:#?}", c.diagnostics.items));
    let b = phantom_ebpf::bundle::build(&p).unwrap();
    (p.clone(), LoadedBundle::from_bundle(&b).unwrap())
}

const BASE: &str =
    "profile: t\nmode: sandbox\nsecurity:\n  landlock:\n    paths:\n      - path: /usr\n        access: read-only\n";

/// A world-writable scratch directory (the sandbox's users are not host
/// root), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    /// `tag` keeps this binary's tests apart.
    fn new(tag: &str) -> Scratch {
        let p = PathBuf::from(format!("/var/tmp/phantom-update-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `argv` in a sandbox of `(p, b)` with `ws` as its workspace, on a
/// thread, and returns once the command has created `/workspace/ready`.
fn start(
    p: &phantom_dsl::ir::Policy,
    b: &LoadedBundle,
    ws: &Scratch,
    argv: Vec<String>,
) -> std::thread::JoinHandle<Result<phantom_user::spawn::RunResult, phantom_user::spawn::SpawnError>> {
    let req = SpawnRequest {
        argv,
        env: vec![],
        workspace: Some(ws.0.clone()),
        timeout: Some(Duration::from_secs(60)),
        output_cap: 1 << 16,
    };
    let (p, b) = (p.clone(), b.clone());
    let sandbox = std::thread::spawn(move || run(&p, &b, &req));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ws.0.join("ready").exists() {
        assert!(Instant::now() < deadline && !sandbox.is_finished(), "the sandbox never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    sandbox
}

#[test]
fn a_policy_update_moves_a_running_sandbox_to_the_new_cgroup_programs() {
    let devices = |access: &str| {
        format!(
            "{BASE}devices:\n  allow:\n    - {{type: char, major: 1, minor: 9, access: [{access}]}}\n    - {{type: char, major: 1, minor: 5, access: [read]}}\n"
        )
    };
    let (p1, b1) = policy(&devices("read"));
    let (p2, b2) = policy(&devices("read, write"));
    let ws = Scratch::new("devices");
    // /dev/zero (1:5) is writable under neither version (a rule for a
    // default device replaces its default); /dev/urandom (1:9) under
    // version 2 only.
    // Shared with the other crate's update test: tests/data/README.md.
    let script = include_str!("../../tests/data/device_update_probe.py");
    let sandbox = start(&p1, &b1, &ws, vec!["python3".into(), "-c".into(), script.into()]);
    // Let it loop under version 1 for a moment, then update.
    std::thread::sleep(Duration::from_millis(50));
    let report = b1.live.supersede(&b2, &p2);
    assert_eq!(report.sandboxes, 1, "{report:?}");
    assert_eq!(report.cgroup_bpf, [1, 0, 0], "the device program (network mode none has no other), replaced in place");
    assert!(report.errors.is_empty(), "{report:?}");
    let r = sandbox.join().expect("sandbox thread").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.stdout, "v1 EPERM EPERM\nv2 ok EPERM\nleaks 0 tries many\n", "{r:#?}");
    assert_eq!(r.exit_code, Some(0), "{r:#?}");
    // Moved sandboxes belong to version 2 now; version 1 has none left.
    assert_eq!(b1.live.supersede(&b2, &p2).sandboxes, 0, "version 1 keeps no sandbox");
}

/// The XDP program ids on the host ends of the sandboxes' veth pairs
/// (`phv*`), read with iproute2 as an outside witness.
fn host_end_xdp_ids() -> Vec<u64> {
    let out = std::process::Command::new("ip").args(["-d", "-j", "link", "show", "type", "veth"]).output().unwrap();
    assert!(out.status.success(), "ip link: {}", String::from_utf8_lossy(&out.stderr));
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ifname"].as_str().is_some_and(|n| n.starts_with("phv")))
        .map(|l| l["xdp"]["prog"]["id"].as_u64().unwrap_or(0))
        .collect()
}

#[test]
fn a_policy_update_swaps_the_xdp_programs_of_a_running_allowlist_sandbox() {
    use std::os::fd::AsFd;
    let version = |port: u16| {
        policy(&format!(
            "{BASE}network:\n  mode: allowlist\n  egress:\n    - to: 10.200.0.0/16\n      ports: {port}\n      protocol: tcp\n"
        ))
    };
    let (p1, b1) = version(7);
    let (p2, b2) = version(9);
    let id = |b: &LoadedBundle| phantom_bpf_sys::object_id(b.xdp_programs().unwrap().egress.as_fd()).unwrap() as u64;
    let (v1, v2) = (id(&b1), id(&b2));
    let ws = Scratch::new("xdp");
    let wait =
        "touch /workspace/ready; i=0; while [ ! -e /workspace/go ] && [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.01; done";
    let sandbox = start(&p1, &b1, &ws, vec!["/bin/sh".into(), "-c".into(), wait.into()]);
    assert_eq!(host_end_xdp_ids(), [v1], "the running sandbox's pair carries version 1");
    let report = b1.live.supersede(&b2, &p2);
    std::fs::write(ws.0.join("go"), "").unwrap();
    assert_eq!((report.sandboxes, report.xdp), (1, 1), "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    let after = host_end_xdp_ids();
    let r = sandbox.join().expect("sandbox thread").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.exit_code, Some(0), "{r:#?}");
    assert_eq!(after, [v2], "the pair carries version 2 after the update (version 1: id {v1})");
}

/// The race the registry closes: a sandbox attached version 1's programs,
/// the update ran before it stored them, and storing them moves them to
/// version 2 at once; a later update finds it exactly once.
#[test]
fn attachments_stored_after_an_update_began_move_to_the_new_version() {
    use std::os::fd::AsFd;
    let devices = |access: &str| {
        policy(&format!("{BASE}devices:\n  allow:\n    - {{type: char, major: 1, minor: 9, access: [{access}]}}\n"))
    };
    let (p1, b1) = devices("read");
    let (p2, b2) = devices("read, write");
    let cg = common::TestCgroup::new("update-race");
    let ids = |b: &LoadedBundle, p: &phantom_dsl::ir::Policy| -> Vec<u32> {
        let progs = b.cgroup_programs(p).unwrap();
        progs.programs.iter().map(|(_, fd)| phantom_bpf_sys::object_id(fd.as_fd()).unwrap()).collect()
    };
    let attached = || -> Vec<u32> {
        let mut v: Vec<u32> = phantom_ebpf::netprog::ProgKind::ALL
            .iter()
            .flat_map(|k| phantom_user::cgroup_bpf::query(&cg.path, k.attach_type()).unwrap())
            .collect();
        v.sort();
        v
    };
    let a = b1.cgroup_programs(&p1).unwrap().attach(&cg.path).unwrap();
    assert_eq!(attached(), ids(&b1, &p1));
    let report = b1.live.supersede(&b2, &p2);
    assert_eq!(report.sandboxes, 0, "nothing stored yet: {report:?}");
    let handle = b1.live.enter(&cg.path);
    handle.set_cgroup_bpf(a);
    assert_eq!(attached(), ids(&b2, &p2), "stored after the update began: moved to version 2");
    // Updates only go forward: back to the replaced bundle is refused.
    let refused = b2.live.supersede(&b1, &p1);
    assert_eq!(refused.sandboxes, 0, "{refused:?}");
    assert_eq!(refused.errors.len(), 1, "{refused:?}");
    // A second update (version 1's rules in a new bundle) finds the
    // sandbox once.
    let (p3, b3) = devices("read");
    let back = b2.live.supersede(&b3, &p3);
    assert_eq!((back.sandboxes, back.cgroup_bpf), (1, [1, 0, 0]), "{back:?}");
    assert_eq!(attached(), ids(&b3, &p3));
    drop(handle);
    assert_eq!(attached(), Vec::<u32>::new(), "dropping the entry detaches");
    cg.remove();
}
