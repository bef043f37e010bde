//! `bench spawn`: a sandbox started through the library API until its exit
//! is observed, next to a plain fork+exec of the same command in the same
//! run (the floor). Needs root.
//!
//! Cases, for `/bin/true` and `python3 -c pass`:
//! - direct: `spawn::run_with` prepares the sandbox on the request's path
//!   (namespaces, root, cgroups, then handover), with pre-made network
//!   namespaces — what every spawn cost before prepared sandboxes;
//! - prepared, ready: a `Spawner` whose pool is full when the request comes
//!   (the wait for the refill is not timed): the latency a request sees
//!   when a prepared sandbox is ready. Timed in turns with the floor too;
//!   the targets are checked as ratios (TARGETS.md), see [`check_targets`];
//! - prepared, back to back: requests with no pause, so the rate is bounded
//!   by how fast the pool refills (the sustained rate).
//!
//! In sandbox mode (namespaces, pivoted root, Landlock, seccomp,
//! cgroup-BPF) and hardened mode (+ memory/pids/cpu limits: cgroup v1 on a
//! hybrid host).

use super::{Case, Harness, Section, Stats};
use anyhow::{bail, Result};
use phantom_user::apply::LoadedBundle;
use phantom_user::spawn::{self, SpawnRequest, Spawner};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

/// TARGETS.md's floor: plain fork+exec of /bin/true, p50 0.60 ms. Its
/// spawn targets are times at that floor, and it checks every target as a
/// ratio to a floor timed in the same run (see [`check_targets`]).
const FLOOR_NS: u64 = 600_000;
/// TARGETS.md, through a resident zygote: sandbox mode p50 <= 1.0 ms and
/// p99 <= 2.5 ms; hardened mode p50 <= 1.5 ms.
const SANDBOX_P50_NS: u64 = 1_000_000;
const SANDBOX_P99_NS: u64 = 2_500_000;
const HARDENED_P50_NS: u64 = 1_500_000;
/// Prepared sandboxes per spawner.
const POOL: usize = 2;

const SANDBOX: &str = "profile: bench-sandbox\nsecurity:\n  level: low\n  seccomp:\n    default: allow\n    deny: [ptrace, kexec_load, bpf]\n  landlock:\n    paths:\n      - path: /usr\n        access: read-only\nnetwork:\n  mode: loopback-only\n";

/// Hardened mode refuses to start without every layer the policy has; this
/// host cannot run BPF-LSM, so the kernel switches that only BPF-LSM
/// enforces are allowed here (seccomp still denies ptrace, kexec_load and
/// bpf). Every other layer is required, plus memory/pids/cpu limits.
fn hardened() -> String {
    format!(
        "mode: hardened\n{SANDBOX}resources:\n  memory: 256MiB\n  pids: 64\n  cpu: 1\nkernel:\n  mount: allow\n  bpf: allow\n  kernel_modules: allow\n"
    )
    .replace("bench-sandbox", "bench-hardened")
}

fn load(text: &str) -> Result<(phantom_dsl::ir::Policy, LoadedBundle)> {
    let c = phantom_dsl::compile_str("bench.yaml", text);
    let Some(p) = c.policy else { bail!("bench policy has errors: {:?}", c.diagnostics.items) };
    let b = LoadedBundle::from_bundle(&phantom_ebpf::bundle::build(&p)?)?;
    Ok((p, b))
}

/// Checks `ours` against TARGETS.md's times at its floor, as ratios to the
/// lower of two floors of this run: timed alone in a loop, and timed in
/// turns with ours. The second sees the same host moment as ours but also
/// the kernel's clean-up of the sandbox before it (10-57% slower here); the
/// first is quieter but earlier. The lower one is the stricter test.
fn check_targets(h: &Harness, case: &str, ours: &Stats, floors: (&Stats, &Stats), targets: &[(&str, u64)]) {
    let floor = floors.0.p50.min(floors.1.p50).max(1);
    for (quantile, at_floor) in targets {
        let value = if *quantile == "p99" { ours.p99 } else { ours.p50 };
        let (ratio, limit) = (value as f64 / floor as f64, *at_floor as f64 / FLOOR_NS as f64);
        h.check(
            format!("{case}: {quantile} <= {:.1} ms at a {:.2} ms floor, i.e. <= {limit:.2}x the floor's p50", ms(*at_floor), ms(FLOOR_NS)),
            ratio <= limit,
            format!(
                "{quantile} {:.0} µs = {ratio:.2}x the floor's p50 {:.0} µs (alone {:.0}, in turns {:.0}); absolute {quantile} < {:.1} ms: {}",
                value as f64 / 1e3,
                floor as f64 / 1e3,
                floors.0.p50 as f64 / 1e3,
                floors.1.p50 as f64 / 1e3,
                ms(*at_floor),
                if value < *at_floor { "yes" } else { "no" }
            ),
        );
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn rate(s: &Stats) -> f64 {
    1e9 / s.mean.max(1) as f64
}

pub fn run(h: &Harness) -> Result<Vec<Case>> {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench spawn needs root (namespaces, cgroups); run it as root");
    }
    let sandbox = load(SANDBOX)?;
    let hard = load(&hardened())?;
    // Fresh network namespaces made ahead of time, off the spawn path.
    let netns = spawn::netns::NetnsPool::new(8);
    let mut cases = Vec::new();
    let mut rows = Vec::new();
    let mut rates = Vec::new();
    for argv in [vec!["/bin/true"], vec!["/usr/bin/python3", "-c", "pass"]] {
        let cmd = argv.join(" ");
        let req = SpawnRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            workspace: None,
            timeout: Some(Duration::from_secs(30)),
            output_cap: 4096,
        };
        let plain = || Command::new(argv[0]).args(&argv[1..]).stdout(Stdio::null()).status().expect("plain exec");
        let floor = h.measure(&format!("fork+exec {cmd}"), plain);
        // The targets are for /bin/true (TARGETS.md); python3's start-up dominates its case.
        let targeted = argv == ["/bin/true"];
        let mut case = |name: String, detail: &str, ours: Stats, floor: &Stats| {
            cases.push(Case {
                name,
                detail: detail.into(),
                ours,
                peer: Some(("fork+exec", floor.clone())),
                target: None,
            })
        };
        let direct = h.measure(&format!("direct sandbox {cmd}"), || {
            spawn::run_with(&sandbox.0, &sandbox.1, &req, Some(&netns)).expect("spawn")
        });
        case(format!("sandbox, direct: {cmd}"), "prepared on the request's path (netns pool)", direct, &floor);
        for (mode, (policy, bundle), targets) in [
            ("sandbox", &sandbox, &[("p50", SANDBOX_P50_NS), ("p99", SANDBOX_P99_NS)][..]),
            ("hardened", &hard, &[("p50", HARDENED_P50_NS)][..]),
        ] {
            let spawner = Spawner::new(policy, bundle, POOL)?;
            if !spawner.wait_full(Duration::from_secs(30)) {
                bail!("{mode}: the pool did not fill: {:?}", spawner.refill_error());
            }
            let check = spawner.run(&req)?;
            if check.exit_code != Some(0) {
                bail!("{mode} {cmd}: exit {:?}, stderr {}", check.exit_code, check.stderr);
            }
            let (ready, turns_floor) = h.measure_turns(
                (&format!("{mode} prepared, ready {cmd}"), &format!("fork+exec {cmd}, in turns")),
                || {
                    spawner.wait_full(Duration::from_secs(30));
                },
                || spawner.run(&req).expect("spawn"),
                plain,
            );
            if targeted {
                check_targets(h, &format!("{mode}, prepared ready: {cmd}"), &ready, (&floor, &turns_floor), targets);
            }
            let sustained =
                h.measure(&format!("{mode} prepared, back to back {cmd}"), || spawner.run(&req).expect("spawn"));
            rows.push(vec![
                format!("{mode}: {cmd}"),
                format!("{:.0}", rate(&sustained)),
                format!("{:.0}", rate(&floor)),
                format!("{:.2}", rate(&floor) / rate(&sustained)),
            ]);
            rates.push(json!({ "case": format!("{mode}: {cmd}"), "runs_per_s": rate(&sustained), "fork_exec_per_s": rate(&floor) }));
            case(
                format!("{mode}, prepared ready: {cmd}"),
                "a prepared sandbox is ready when the request comes (refill wait untimed); exit observed; the floor timed in turns",
                ready,
                &turns_floor,
            );
            case(
                format!("{mode}, back to back: {cmd}"),
                "requests without pause: bounded by the pool's refill",
                sustained,
                &floor,
            );
        }
    }
    h.section(Section {
        title: "sustained rate, back to back (one caller)".into(),
        columns: vec!["case".into(), "runs/s".into(), "fork+exec/s".into(), "× slower".into()],
        rows,
        notes: vec![format!("{POOL} prepared sandboxes per spawner, refilled by one thread")],
        json: json!(rates),
    });
    Ok(cases)
}
