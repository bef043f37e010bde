//! `bench spawn`: a sandbox started through the library API
//! (`phantom_user::spawn::run`) until its exit is observed, next to a plain
//! fork+exec of the same command in the same run (the floor). Needs root.
//!
//! Cases: `/bin/true` and `python3 -c pass`, in sandbox mode without
//! resource limits (namespaces, pivoted root, Landlock, seccomp), the same
//! with a pool of pre-made network namespaces, and with
//! memory/pids/cpu limits (on a hybrid host those are cgroup v1 and cost a
//! cgroup migration per spawn).

use super::{Case, Harness, Target};
use anyhow::{bail, Result};
use phantom_user::apply::LoadedBundle;
use phantom_user::spawn::{self, SpawnRequest};
use std::process::{Command, Stdio};
use std::time::Duration;

/// TARGETS.md: sandbox mode p50 <= 1.0 ms through a resident zygote.
const SANDBOX_TARGET_NS: u64 = 1_000_000;

const SANDBOX: &str = "profile: bench-sandbox\nsecurity:\n  level: low\n  seccomp:\n    default: allow\n    deny: [ptrace, kexec_load, bpf]\n  landlock:\n    paths:\n      - path: /usr\n        access: read-only\nnetwork:\n  mode: loopback-only\n";

fn with_limits() -> String {
    format!("{SANDBOX}resources:\n  memory: 256MiB\n  pids: 64\n  cpu: 1\n").replace("bench-sandbox", "bench-limits")
}

fn load(text: &str) -> Result<(phantom_dsl::ir::Policy, LoadedBundle)> {
    let c = phantom_dsl::compile_str("bench.yaml", text);
    let Some(p) = c.policy else { bail!("bench policy has errors: {:?}", c.diagnostics.items) };
    let b = LoadedBundle::from_bundle(&phantom_ebpf::bundle::build(&p)?)?;
    Ok((p, b))
}

pub fn run(h: &Harness) -> Result<Vec<Case>> {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench spawn needs root (namespaces, cgroups); run it as root");
    }
    let sandbox = load(SANDBOX)?;
    let limits = load(&with_limits())?;
    // Fresh network namespaces made ahead of time, off the spawn path.
    let pool = spawn::netns::NetnsPool::new(8);
    let mut cases = Vec::new();
    for argv in [vec!["/bin/true"], vec!["/usr/bin/python3", "-c", "pass"]] {
        let req = SpawnRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            workspace: None,
            timeout: Some(Duration::from_secs(30)),
            output_cap: 4096,
        };
        let floor = h.measure(&format!("fork+exec {}", argv.join(" ")), || {
            Command::new(argv[0]).args(&argv[1..]).stdout(Stdio::null()).status().expect("plain exec")
        });
        for (label, (policy, bundle), target, pool) in [
            ("sandbox", &sandbox, Some(Target { p50_below: SANDBOX_TARGET_NS }), None),
            ("sandbox, netns pool", &sandbox, Some(Target { p50_below: SANDBOX_TARGET_NS }), Some(&pool)),
            ("sandbox + limits", &limits, None, None),
        ] {
            let check = spawn::run_with(policy, bundle, &req, pool)?;
            if check.exit_code != Some(0) {
                bail!("{label} {}: exit {:?}, stderr {}", argv.join(" "), check.exit_code, check.stderr);
            }
            let ours = h.measure(&format!("spawn::run {label} {}", argv.join(" ")), || {
                spawn::run_with(policy, bundle, &req, pool).expect("spawn")
            });
            cases.push(Case {
                name: format!("{label}: {}", argv.join(" ")),
                detail: "library API, exit observed; peer: plain fork+exec (no isolation), same run".into(),
                ours,
                peer: Some(("fork+exec", floor.clone())),
                target: target.clone(),
            });
        }
    }
    Ok(cases)
}
