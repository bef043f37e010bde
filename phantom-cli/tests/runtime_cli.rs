//! The `phantom` binary end to end (root): exit codes, JSON results,
//! timeouts, and `doctor`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn phantom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phantom")).current_dir(repo()).args(args).output().unwrap()
}

#[test]
fn run_passes_output_and_exit_status_through() {
    let out = phantom(&[
        "run",
        "-q",
        "--no-zygote",
        "--policy",
        "policies/python-runnable.yaml",
        "--",
        "python3",
        "-c",
        "import sys; print(6*7); sys.exit(3)",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
}

#[test]
fn run_json_reports_result_and_enforcement() {
    let out = phantom(&[
        "run",
        "--json",
        "--no-zygote",
        "--timeout",
        "300ms",
        "--policy",
        "policies/python-runnable.yaml",
        "--",
        "python3",
        "-c",
        "while True: pass",
    ]);
    assert_eq!(
        out.status.code(),
        Some(124),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["signal"], 9);
    let layers: Vec<(&str, &str)> = v["enforcement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["layer"].as_str().unwrap(), l["enforcement"].as_str().unwrap()))
        .collect();
    for want in [("namespaces", "full"), ("seccomp", "full"), ("landlock", "full"), ("bpf-lsm", "none")] {
        assert!(layers.contains(&want), "{want:?} not in {layers:?}");
    }
}

#[test]
fn run_refuses_a_policy_requiring_a_missing_layer() {
    let dir = std::env::temp_dir().join(format!("phantom-cli-req-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("req.yaml");
    std::fs::write(&p, "profile: req\nrequire: [bpf-lsm]\nkernel:\n  ptrace: deny\n").unwrap();
    let out = phantom(&["run", "--no-zygote", "--policy", p.to_str().unwrap(), "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("requires bpf-lsm"), "{err}");
    // With --json, the refusal is a JSON document too.
    let out = phantom(&["run", "--json", "--no-zygote", "--policy", p.to_str().unwrap(), "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("requires bpf-lsm"), "{v}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_json_reports_a_command_that_cannot_start_as_an_error_document() {
    let out = phantom(&[
        "run",
        "--json",
        "--no-zygote",
        "--policy",
        "policies/python-runnable.yaml",
        "--",
        "/usr/bin/phantom-no-such-command",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["error"],
        "the sandbox could not start: exec: /usr/bin/phantom-no-such-command: No such file or directory (os error 2)"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not start"));
}

#[test]
fn doctor_reports_every_layer() {
    let out = phantom(&["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers: Vec<&str> = v["probes"].as_array().unwrap().iter().map(|p| p["layer"].as_str().unwrap()).collect();
    assert_eq!(
        layers,
        ["seccomp", "landlock", "cgroups", "cgroup-bpf", "xdp", "allowlist-net", "bpf-lsm", "user-namespaces"]
    );
    // This host tier has seccomp and Landlock; a missing one must fail here.
    for p in v["probes"].as_array().unwrap() {
        if matches!(p["layer"].as_str(), Some("seccomp" | "landlock" | "cgroup-bpf" | "xdp")) {
            assert_eq!(p["available"], true, "{p}");
        }
        if p["available"] == false {
            assert!(p["fix"].is_string(), "a missing layer must say how to fix it: {p}");
        }
    }
}

/// `phantom run ...` is parsed by a parser of its own (start-up time); its
/// help and errors must stay those of the `run` subcommand.
#[test]
fn run_parses_like_the_run_subcommand() {
    let fast = phantom(&["run", "--help"]);
    let full = phantom(&["help", "run"]);
    assert!(fast.status.success() && full.status.success());
    assert!(!fast.stdout.is_empty());
    assert_eq!(String::from_utf8_lossy(&fast.stdout), String::from_utf8_lossy(&full.stdout));
    let bad = phantom(&["run", "--bogus"]);
    assert_eq!(bad.status.code(), Some(2), "a usage error exits 2 like every clap error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Usage: phantom run"));
}
