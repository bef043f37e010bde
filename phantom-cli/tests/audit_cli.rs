//! `phantom audit` on the host tier: this kernel refuses BPF-LSM programs,
//! so no audit ring buffer can be pinned, and the command must say so
//! (exit 1) instead of printing nothing. The VM tier (tests/vm_audit.rs)
//! reads real records.

use std::process::Command;

#[test]
fn audit_with_nothing_loaded_fails_and_says_why() {
    let out = Command::new(env!("CARGO_BIN_EXE_phantom")).arg("audit").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("nothing is loaded that records denials"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn audit_of_a_missing_pin_names_it() {
    let pin = std::env::temp_dir().join(format!("phantom-audit-missing-{}", std::process::id()));
    let out =
        Command::new(env!("CARGO_BIN_EXE_phantom")).args(["audit", "--json", "--pin"]).arg(&pin).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains(&pin.display().to_string()), "{err}");
}
