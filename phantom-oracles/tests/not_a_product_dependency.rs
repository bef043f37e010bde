//! The oracles check the product; the product must never link them. Only
//! xtask may depend on phantom-oracles normally; every other workspace
//! crate only as a dev-dependency.

use serde_json::Value;
use std::process::Command;

const MAY_DEPEND: &[&str] = &["xtask", "phantom-oracles"];

#[test]
fn only_tests_and_xtask_depend_on_the_oracles() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path", manifest])
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("packages");
    assert!(packages.len() >= 5, "expected the whole workspace, got {} packages", packages.len());
    let mut offenders = Vec::new();
    for p in packages {
        let name = p["name"].as_str().unwrap_or_default();
        for d in p["dependencies"].as_array().into_iter().flatten() {
            if d["name"] == "phantom-oracles" && d["kind"] != "dev" && !MAY_DEPEND.contains(&name) {
                offenders.push(format!("{name} ({} dependency)", d["kind"].as_str().unwrap_or("normal")));
            }
        }
    }
    assert!(offenders.is_empty(), "product crates depend on phantom-oracles: {offenders:?}");
}
