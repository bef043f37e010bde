//! The `phantom-policy` binary end to end: exit codes, JSON output, bundle
//! files and their determinism, fmt modes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_phantom-policy"));
    c.current_dir(repo());
    c
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("phantom-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn check_exit_codes() {
    let ok = run(&["check", "policies/python-ai-turbo.yaml"]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(stderr.contains("warning[P0204]"), "{stderr}");
    assert!(stderr.contains("policies/python-ai-turbo.yaml:8:14"), "{stderr}");

    let bad = run(&["check", "tests/policies/bad/many-errors.yaml"]);
    assert_eq!(bad.status.code(), Some(1));
    let strict = run(&["check", "--deny-warnings", "policies/python-ai-turbo.yaml"]);
    assert_eq!(strict.status.code(), Some(1));
    let missing = run(&["check", "no/such/file.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read no/such/file.yaml"));
}

#[test]
fn check_json_reports_every_error_with_positions() {
    let out = run(&["check", "--format", "json", "tests/policies/bad/many-errors.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let diags = v[0]["diagnostics"].as_array().unwrap();
    assert_eq!(v[0]["errors"], 6);
    let first = &diags[0];
    assert_eq!((first["line"].as_u64(), first["col"].as_u64()), (Some(2), Some(7)));
    assert_eq!(first["code"], "P0104");
    assert_eq!(first["help"], "did you mean `sandbox`?");
    assert!(diags.iter().all(|d| d["file"] == "tests/policies/bad/many-errors.yaml"));
}

#[test]
fn compile_writes_a_deterministic_bundle() {
    let a = scratch("bundle-a");
    let b = scratch("bundle-b");
    for d in [&a, &b] {
        let out = run(&["compile", "policies/agent-workspace.yaml", "-o", d.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for f in ["policy.ir.json", "manifest.json"] {
        let x = std::fs::read(a.join(f)).unwrap();
        let y = std::fs::read(b.join(f)).unwrap();
        assert_eq!(x, y, "{f} differs between two compiles");
    }
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["profile"], "agent-workspace");
    let src = std::fs::read(repo().join("policies/agent-workspace.yaml")).unwrap();
    assert_eq!(m["sources"][0]["sha256"], phantom_dsl::source::sha256_hex(&src));
    let ir = std::fs::read(a.join("policy.ir.json")).unwrap();
    assert_eq!(m["artifacts"][0]["sha256"], phantom_dsl::source::sha256_hex(&ir));
    for f in ["seccomp-x86_64.bpf", "seccomp-aarch64.bpf", "landlock.json", "cgroup.bpf.o"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between two compiles"
        );
    }
    let _ = std::fs::remove_dir_all(a);
    let _ = std::fs::remove_dir_all(b);
    // The eBPF object of an allowlist policy (socket programs, line_info
    // with the policy's text) is byte-identical too.
    let (a, b) = (scratch("bundle-wf-a"), scratch("bundle-wf-b"));
    for d in [&a, &b] {
        let out = run(&["compile", "policies/web-fetcher.yaml", "-o", d.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for f in ["cgroup.bpf.o", "manifest.json"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    let _ = std::fs::remove_dir_all(a);
    let _ = std::fs::remove_dir_all(b);
}

#[test]
fn inspect_shows_ebpf_programs_with_policy_lines_and_detects_tampering() {
    let d = scratch("inspect-ebpf");
    let out = run(&["compile", "policies/web-fetcher.yaml", "-o", d.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap()).unwrap();
    let art = m["artifacts"].as_array().unwrap().iter().find(|a| a["name"] == "cgroup.bpf.o").expect("cgroup.bpf.o");
    assert_eq!(art["layer"], "cgroup-bpf");
    let progs = art["programs"].as_array().unwrap();
    let sections: Vec<&str> = progs.iter().map(|p| p["section"].as_str().unwrap()).collect();
    assert_eq!(
        sections,
        [
            "cgroup/sock_create",
            "cgroup/connect4",
            "cgroup/connect6",
            "cgroup/sendmsg4",
            "cgroup/sendmsg6",
            "cgroup/bind4",
            "cgroup/bind6",
            "cgroup/dev"
        ]
    );
    let total: u64 = progs.iter().map(|p| p["instructions"].as_u64().unwrap()).sum();
    assert_eq!(art["instructions"].as_u64(), Some(total));
    assert!(progs[1]["lines"].as_array().unwrap().iter().any(|l| l[1] == 19), "connect4 maps to line 19");

    let text = run(&["inspect", d.to_str().unwrap()]);
    assert_eq!(text.status.code(), Some(0), "{}", String::from_utf8_lossy(&text.stderr));
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains("== cgroup.bpf.o"), "{text}");
    assert!(text.contains("-- cgroup/connect4 phantom_conn4 ("), "{text}");
    assert!(text.contains("(16) if w8 == 0x1bb goto pc+2           ; policies/web-fetcher.yaml:19"), "{text}");
    assert!(text.contains("-- cgroup/dev phantom_dev ("), "{text}");

    let json = run(&["inspect", "--json", d.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let obj = v["artifacts"].as_array().unwrap().iter().find(|a| a["name"] == "cgroup.bpf.o").unwrap();
    let conn4 = obj["programs"].as_array().unwrap().iter().find(|p| p["name"] == "phantom_conn4").unwrap();
    let insn = conn4["instructions"].as_array().unwrap().iter().find(|i| i["text"] == "(16) if w8 == 0x1bb goto pc+2");
    let insn = insn.expect("the port compare is listed");
    assert_eq!(
        (&insn["file"], &insn["line"]),
        (&serde_json::json!("policies/web-fetcher.yaml"), &serde_json::json!(19))
    );
    assert_eq!(insn["source"], "    - to: [198.51.100.0/24, 2001:db8:100::/48]");

    // The object alone: same listing, lines from its own line_info.
    let one = run(&["inspect", d.join("cgroup.bpf.o").to_str().unwrap()]);
    assert_eq!(one.status.code(), Some(0), "{}", String::from_utf8_lossy(&one.stderr));
    assert!(String::from_utf8_lossy(&one.stdout).contains("; policies/web-fetcher.yaml:19"));

    // Tampering: one flipped immediate in connect4.
    let mut bytes = std::fs::read(d.join("cgroup.bpf.o")).unwrap();
    let pos = bytes.windows(4).position(|w| w == 0x1bb_i32.to_le_bytes()).expect("port 443 in the object");
    bytes[pos] ^= 1;
    std::fs::write(d.join("cgroup.bpf.o"), &bytes).unwrap();
    let bad = run(&["inspect", d.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cgroup.bpf.o: content does not match the manifest"));
    let garbage = d.join("garbage.o");
    std::fs::write(&garbage, b"\x7fELF\x02\x01\x01").unwrap();
    let bad = run(&["inspect", garbage.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a readable BPF object"));
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn compile_refuses_a_bad_policy_and_writes_nothing() {
    let d = scratch("bad");
    let out_dir = d.join("out");
    let out = run(&["compile", "tests/policies/bad/contradictory-fs.yaml", "-o", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!out_dir.exists());
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn fmt_check_and_write() {
    let d = scratch("fmt");
    let f = d.join("p.yaml");
    std::fs::write(&f, "profile:   messy   # name\nsecurity:\n    level:    high\n").unwrap();
    let check = run(&["fmt", "--check", f.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1));
    let write = run(&["fmt", "--write", f.to_str().unwrap()]);
    assert_eq!(write.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "profile: messy # name\nsecurity:\n  level: high\n");
    assert_eq!(run(&["fmt", "--check", f.to_str().unwrap()]).status.code(), Some(0));
    // A file with syntax errors is left alone.
    std::fs::write(&f, "profile: x\n\tmode: y\n").unwrap();
    assert_eq!(run(&["fmt", "--write", f.to_str().unwrap()]).status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "profile: x\n\tmode: y\n");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn help_has_examples() {
    for cmd in [vec!["--help"], vec!["check", "--help"], vec!["compile", "--help"], vec!["fmt", "--help"]] {
        let out = run(&cmd);
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Example"), "{cmd:?}");
    }
}

#[test]
fn import_seccomp_writes_a_policy_that_compiles() {
    let d = scratch("import");
    let out = d.join("docker.yaml");
    let r = run(&[
        "import",
        "seccomp",
        "tests/data/docker-default-seccomp.json",
        "--name",
        "docker-default",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text,
        std::fs::read_to_string(repo().join("policies/docker-default.yaml")).unwrap(),
        "policies/docker-default.yaml is stale: regenerate it"
    );
    let c = phantom_dsl::compile_str("docker.yaml", &text);
    assert!(!c.has_errors());
    // An unknown architecture is a usage error with a clear message.
    let bad = run(&["import", "seccomp", "tests/data/docker-default-seccomp.json", "--arch", "mips"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use x86_64 or aarch64"));
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn inspect_shows_programs_with_policy_lines_and_detects_tampering() {
    let d = scratch("inspect");
    let out = run(&["compile", "policies/agent-workspace.yaml", "-o", d.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["seccomp-x86_64.bpf", "seccomp-aarch64.bpf", "landlock.json", "manifest.json", "policy.ir.json"] {
        assert!(d.join(f).exists(), "{f} missing from the bundle");
    }
    let text = run(&["inspect", d.to_str().unwrap()]);
    assert_eq!(text.status.code(), Some(0), "{}", String::from_utf8_lossy(&text.stderr));
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains("== seccomp-x86_64.bpf"), "{text}");
    assert!(text.contains("A = arch") && text.contains("; line 15"), "{text}");
    assert!(text.contains("allow /workspace: "), "{text}");
    let json = run(&["inspect", "--json", d.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let first = &v["artifacts"][0]["instructions"][0];
    assert_eq!(first["text"], "A = arch");
    assert_eq!(first["line"], 15);
    // A single artifact file can be inspected without its manifest.
    let one = run(&["inspect", d.join("seccomp-x86_64.bpf").to_str().unwrap()]);
    assert_eq!(one.status.code(), Some(0));
    // Tampering is detected.
    let mut bytes = std::fs::read(d.join("seccomp-x86_64.bpf")).unwrap();
    bytes[4] ^= 1;
    std::fs::write(d.join("seccomp-x86_64.bpf"), bytes).unwrap();
    let bad = run(&["inspect", d.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not match the manifest"));
    let _ = std::fs::remove_dir_all(d);
}
