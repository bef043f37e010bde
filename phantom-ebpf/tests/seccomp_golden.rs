//! Golden disassembly of every example policy's seccomp filter, per
//! architecture, in tests/golden/seccomp/. A codegen change shows up as a
//! reviewable diff; bless intended changes with `PHANTOM_BLESS=1`.

use phantom_dsl::syscalls::Arch;
use std::path::Path;

#[test]
fn seccomp_filters_match_their_golden_listing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let golden = root.join("tests/golden/seccomp");
    let bless = std::env::var_os("PHANTOM_BLESS").is_some();
    if bless {
        std::fs::create_dir_all(&golden).unwrap();
    }
    let mut policies: Vec<_> = std::fs::read_dir(root.join("policies")).unwrap().map(|e| e.unwrap().path()).collect();
    policies.sort();
    let mut failures = Vec::new();
    let mut checked = 0;
    for p in policies.iter().filter(|p| p.extension().is_some_and(|x| x == "yaml")) {
        let c = phantom_dsl::compile_file(p).unwrap();
        let policy = c.policy.unwrap_or_else(|| panic!("{}: {:#?}", p.display(), c.diagnostics.items));
        if !policy.seccomp.enabled {
            continue;
        }
        for arch in Arch::POLICY_ARCHES {
            let f = phantom_ebpf::seccomp::compile(&policy.seccomp, arch).unwrap();
            let text = format!("# {} ({}), {} instructions\n{}", policy.profile, arch.name(), f.len(), f.disassemble());
            let file = golden.join(format!("{}.{}.txt", policy.profile, arch.name()));
            checked += 1;
            if bless {
                std::fs::write(&file, &text).unwrap();
            } else if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
                failures.push(format!("{} differs (PHANTOM_BLESS=1 to accept):\n{text}", file.display()));
            }
        }
    }
    assert!(checked >= 8, "only {checked} filters checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
