//! Golden disassembly of every example policy's seccomp filter, per
//! architecture, in tests/golden/seccomp/. A codegen change shows up as a
//! reviewable diff; bless intended changes with `PHANTOM_BLESS=1`.

mod golden;

use phantom_dsl::syscalls::Arch;
use std::path::Path;

#[test]
fn seccomp_filters_match_their_golden_listing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut golden = golden::Goldens::new("seccomp");
    let mut policies: Vec<_> = std::fs::read_dir(root.join("policies")).unwrap().map(|e| e.unwrap().path()).collect();
    policies.sort();
    for p in policies.iter().filter(|p| p.extension().is_some_and(|x| x == "yaml")) {
        let c = phantom_dsl::compile_file(p).unwrap();
        let policy = c.policy.unwrap_or_else(|| panic!("{}: {:#?}", p.display(), c.diagnostics.items));
        if !policy.seccomp.enabled {
            continue;
        }
        for arch in Arch::POLICY_ARCHES {
            let f = phantom_ebpf::seccomp::compile(&policy.seccomp, arch).unwrap();
            let text = format!("# {} ({}), {} instructions\n{}", policy.profile, arch.name(), f.len(), f.disassemble());
            golden.check(&format!("{}.{}.txt", policy.profile, arch.name()), &text);
        }
    }
    assert!(golden.checked >= 8, "only {} filters checked", golden.checked);
    golden.finish();
}
