//! Golden disassembly of every example policy's cgroup-BPF programs, in
//! tests/golden/ebpf/<profile>.txt: the bundle's `cgroup.bpf.o` read back
//! from its bytes (sections, symbols, map relocations, line_info) and
//! listed in bpftool syntax with the policy line of every instruction, as
//! `phantom-policy inspect` shows it. A codegen or object-layout change
//! shows up as a reviewable diff; bless intended changes with
//! `PHANTOM_BLESS=1`.

mod golden;

use phantom_dsl::extends::FileLoader;
use phantom_ebpf::bpf::disasm;
use phantom_ebpf::bundle;
use phantom_ebpf::elf::read::read_object;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Resolves policy paths against the repository root, so that the paths
/// recorded in line_info are `policies/<name>.yaml` on every machine.
struct RootLoader(PathBuf);

impl FileLoader for RootLoader {
    fn load(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(self.0.join(path))
    }
}

#[test]
fn cgroup_programs_match_their_golden_listing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut golden = golden::Goldens::new("ebpf");
    let mut policies: Vec<_> = std::fs::read_dir(root.join("policies")).unwrap().map(|e| e.unwrap().path()).collect();
    policies.sort();
    let mut programs = 0;
    for p in policies.iter().filter(|p| p.extension().is_some_and(|x| x == "yaml")) {
        let name = format!("policies/{}", p.file_name().unwrap().to_string_lossy());
        let text = std::fs::read_to_string(p).unwrap();
        let c = phantom_dsl::compile_source(&name, &text, &RootLoader(root.clone()));
        let Some(policy) = c.policy else {
            // Only base.yaml, which exists to be extended, may fail alone.
            assert!(name.ends_with("base.yaml"), "{name}: {:#?}", c.diagnostics.items);
            continue;
        };
        let texts: Vec<(String, String)> = c.sources.texts();
        let (object, _) = bundle::cgroup_object(&policy, &texts).unwrap();
        let obj = read_object(&object).unwrap();
        let n = obj.programs.len();
        let mut out =
            format!("# {} ({name}): cgroup.bpf.o, {n} program{}\n", policy.profile, if n == 1 { "" } else { "s" });
        if !obj.maps.is_empty() {
            writeln!(out, "# maps: {}", obj.maps.join(", ")).unwrap();
        }
        for prog in &obj.programs {
            writeln!(out, "-- {} {} ({} instructions)", prog.section, prog.name, prog.code.insns.len()).unwrap();
            out += &disasm::disassemble(&prog.code).unwrap();
            programs += 1;
        }
        golden.check(&format!("{}.txt", policy.profile), &out);
    }
    let checked = golden.checked;
    assert!(checked >= 7, "only {checked} policies checked");
    assert!(programs >= checked + 7, "only {programs} programs listed: no policy in allowlist mode?");
    golden.finish();
}
