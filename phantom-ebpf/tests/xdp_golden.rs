//! Golden disassembly of the XDP programs, in
//! tests/golden/ebpf/<profile>.xdp.txt: every example policy in allowlist
//! mode, and `xdp-search`, a policy written here whose CIDR sets take the
//! compiled binary search (nested IPv4 networks, IPv6 /32 to /128, so the
//! 64-bit outer tree, the inner low-half trees and the `lddw` constants all
//! show). Each listing is the object of [`phantom_ebpf::xdp::object`] read
//! back from its bytes, in bpftool syntax with the policy line of every
//! instruction. Bless intended changes with `PHANTOM_BLESS=1`.

mod golden;

use phantom_dsl::extends::FileLoader;
use phantom_ebpf::bpf::disasm;
use phantom_ebpf::elf::read::read_object;
use phantom_ebpf::xdp::{self, AddrStrategy};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Resolves policy paths against the repository root.
struct RootLoader(PathBuf);

impl FileLoader for RootLoader {
    fn load(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(self.0.join(path))
    }
}

const SEARCH_POLICY: &str = "\
profile: xdp-search
mode: sandbox

network:
  mode: allowlist
  egress:
    - to: [10.0.0.0/8, 10.1.0.0/16, 192.168.1.0/24, 2001:db8::/32]
      ports: [443]
      protocol: tcp
    - to: [10.1.2.3, 172.16.0.0/12, 10.1.0.0/16, 2001:db8:1::/48]
      ports: 53
      protocol: udp
    - to: [203.0.113.0/24, 2001:db8:2::/100, 2001:db8:3::1]
      protocol: icmp
    - to: [198.51.100.0/24, 2001:db8:3::/64, fd00::/8, 2001:db8:2::8000:0/97]
      ports: 8000-8100
      protocol: any
  ingress:
    - from: [10.200.0.0/16, 10.201.0.0/16, 10.202.0.0/16, 10.203.0.0/16, 10.204.0.0/16]
      ports: 22
      protocol: tcp
";

/// The listing of a policy's XDP object, `None` unless it is in allowlist
/// mode.
fn listing(name: &str, text: &str, root: &Path) -> Option<(String, String, [AddrStrategy; 2])> {
    let c = phantom_dsl::compile_source(name, text, &RootLoader(root.to_path_buf()));
    let policy = c.policy.unwrap_or_else(|| panic!("{name}: {:#?}", c.diagnostics.items));
    let set = xdp::compile(&policy).unwrap()?;
    let texts: Vec<(String, String)> = c.sources.texts();
    let obj = read_object(&xdp::object(&set, &texts).unwrap()).unwrap();
    let mut out = format!("# {} ({name}): XDP object, {} programs\n", policy.profile, obj.programs.len());
    writeln!(out, "# maps: {}", obj.maps.join(", ")).unwrap();
    for prog in &obj.programs {
        let strategy =
            if prog.name == set.egress.direction.name() { set.egress.strategy } else { set.ingress.strategy };
        writeln!(
            out,
            "-- {} {} ({} instructions; IPv4 {}, IPv6 {})",
            prog.section,
            prog.name,
            prog.code.insns.len(),
            strategy[0].name(),
            strategy[1].name()
        )
        .unwrap();
        out += &disasm::disassemble(&prog.code).unwrap();
    }
    Some((policy.profile.clone(), out, set.egress.strategy))
}

#[test]
fn xdp_programs_match_their_golden_listing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut policies: Vec<_> = std::fs::read_dir(root.join("policies")).unwrap().map(|e| e.unwrap().path()).collect();
    policies.sort();
    let mut listings = Vec::new();
    for p in policies.iter().filter(|p| p.extension().is_some_and(|x| x == "yaml")) {
        let name = format!("policies/{}", p.file_name().unwrap().to_string_lossy());
        if name.ends_with("base.yaml") {
            continue; // exists to be extended
        }
        listings.extend(listing(&name, &std::fs::read_to_string(p).unwrap(), &root));
    }
    assert!(!listings.is_empty(), "no example policy in allowlist mode");
    let search = listing("xdp-search.yaml", SEARCH_POLICY, &root).expect("allowlist");
    assert_eq!(search.2, [AddrStrategy::Search, AddrStrategy::Search], "the search policy takes the search");
    listings.push(search);
    let mut golden = golden::Goldens::new("ebpf");
    for (profile, out, _) in &listings {
        golden.check(&format!("{profile}.xdp.txt"), out);
    }
    golden.finish();
}
