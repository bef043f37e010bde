//! Landlock on the real kernel, in forked children: a compiled policy denies
//! reads, writes and TCP connects outside what it allows, and allowed ones
//! still work. Needs Landlock ABI >= 4 (TCP rules); this host has 7, so a
//! missing Landlock fails the test rather than skipping it.

mod common;

use common::in_child;
use phantom_user::landlock::{apply, expand};
use phantom_user::report::Enforcement;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::PathBuf;

struct Scratch(PathBuf);
impl Scratch {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("phantom-landlock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for sub in ["allowed", "denied", "libs/python3.11", "libs/python3.12", "libs/python2.7"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("allowed/in.txt"), "inside").unwrap();
        std::fs::write(d.join("denied/out.txt"), "outside").unwrap();
        Scratch(d)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ruleset(text: &str) -> phantom_ebpf::landlock::LandlockRuleset {
    let c = phantom_dsl::compile_str("test.yaml", text);
    let p = c.policy.unwrap_or_else(|| panic!("{:#?}", c.diagnostics.items));
    phantom_ebpf::landlock::compile(&p)
}

fn expect_denied<T>(what: &str, r: std::io::Result<T>) -> Result<(), String> {
    match r {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(format!("{what}: expected EACCES, got {e}")),
        Ok(_) => Err(format!("{what}: expected EACCES, but it succeeded")),
    }
}

#[test]
fn files_outside_the_allowed_paths_are_denied() {
    let s = Scratch::new("fs");
    let root = s.0.display().to_string();
    let spec = ruleset(&format!(
        "profile: t\nsecurity:\n  landlock:\n    paths:\n      - path: {root}/allowed\n        access: read-write\n      - path: {root}/libs/python3*\n        access: read-only\n"
    ));
    let code = in_child(|| {
        let report = apply(&spec).map_err(|e| e.to_string())?;
        if report.enforcement != Enforcement::Full {
            return Err(format!("expected full enforcement, got {report:?}"));
        }
        // Allowed: read and write inside.
        let got = std::fs::read_to_string(format!("{root}/allowed/in.txt")).map_err(|e| format!("read inside: {e}"))?;
        if got != "inside" {
            return Err(format!("read inside returned {got:?}"));
        }
        std::fs::write(format!("{root}/allowed/new.txt"), "x").map_err(|e| format!("write inside: {e}"))?;
        std::fs::read_dir(format!("{root}/libs/python3.12")).map_err(|e| format!("glob-expanded dir: {e}"))?;
        // Denied: read outside, write outside, a sibling the glob does not match.
        expect_denied("read outside", std::fs::read_to_string(format!("{root}/denied/out.txt")))?;
        expect_denied("write outside", std::fs::write(format!("{root}/denied/new.txt"), "x"))?;
        expect_denied("non-matching glob sibling", std::fs::read_dir(format!("{root}/libs/python2.7")))?;
        expect_denied("read-only dir written", std::fs::write(format!("{root}/libs/python3.11/x"), "x"))?;
        expect_denied("/etc/passwd", std::fs::read_to_string("/etc/passwd"))?;
        Ok(())
    });
    assert_eq!(code, 0, "the sandboxed child saw wrong results (see its stderr)");
    // The parent is unaffected.
    assert_eq!(std::fs::read_to_string(s.0.join("denied/out.txt")).unwrap(), "outside");
    assert!(!s.0.join("denied/new.txt").exists());
}

#[test]
fn tcp_connect_only_to_allowed_ports() {
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let (ap, dp) = (allowed.local_addr().unwrap().port(), denied.local_addr().unwrap().port());
    let spec = ruleset(&format!(
        "profile: t\nrequire: [landlock]\nnetwork:\n  mode: allowlist\n  egress:\n    - to: 127.0.0.0/8\n      ports: [{ap}]\n      protocol: tcp\n"
    ));
    assert_eq!(spec.connect_tcp, Some(vec![ap]));
    let code = in_child(|| {
        apply(&spec).map_err(|e| e.to_string())?;
        std::net::TcpStream::connect(("127.0.0.1", ap)).map_err(|e| format!("allowed connect: {e}"))?;
        expect_denied("connect to a port the policy does not allow", std::net::TcpStream::connect(("127.0.0.1", dp)))?;
        expect_denied("bind without a bind rule", TcpListener::bind("127.0.0.1:0"))?;
        Ok(())
    });
    assert_eq!(code, 0, "the sandboxed child saw wrong results (see its stderr)");
    // The parent can still connect to both.
    std::net::TcpStream::connect(("127.0.0.1", dp)).unwrap();
}

#[test]
fn globs_expand_to_existing_paths_and_missing_ones_are_reported() {
    let s = Scratch::new("glob");
    let root = s.0.display().to_string();
    let got = expand(&format!("{root}/libs/python3"), true);
    assert_eq!(got, vec![s.0.join("libs/python3.11"), s.0.join("libs/python3.12")]);
    assert!(expand(&format!("{root}/libs/ruby"), true).is_empty());
    let spec = ruleset(&format!(
        "profile: t\nsecurity:\n  landlock:\n    paths:\n      - path: {root}/allowed\n        access: read-only\n      - path: {root}/nope\n        access: read-only\n      - path: {root}/libs/ruby*\n        access: read-only\n"
    ));
    let code = in_child(|| {
        let r = apply(&spec).map_err(|e| e.to_string())?;
        let missing: Vec<(String, u32)> = r.missing.iter().map(|m| (m.pattern.clone(), m.line)).collect();
        let want = vec![(format!("{root}/nope"), 7), (format!("{root}/libs/ruby*"), 9)];
        if missing != want {
            return Err(format!("missing = {missing:?}, want {want:?}"));
        }
        if r.paths != vec![PathBuf::from(format!("{root}/allowed"))] {
            return Err(format!("paths = {:?}", r.paths));
        }
        Ok(())
    });
    assert_eq!(code, 0);
}
