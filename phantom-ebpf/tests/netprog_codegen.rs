//! Code generation of the cgroup programs: determinism, policy lines on
//! every rule instruction, the straight-line / LPM switch, and the size of
//! the example policy's programs.

mod netprog_common;

use netprog_common::*;
use phantom_dsl::ir::DevicePolicy;
use phantom_dsl::values::Protocol;
use phantom_ebpf::bpf::disasm;
use phantom_ebpf::netprog::{self, compile_parts, Locator, Options, ProgKind, BPF_MAP_TYPE_LPM_TRIE};
use std::collections::BTreeSet;

#[test]
fn same_ir_gives_the_same_bytes() {
    let mut paths: Vec<_> =
        std::fs::read_dir(repo_root().join("policies")).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    for p in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let Some(policy) = phantom_dsl::compile_file(p).unwrap().policy else { continue };
        let a = netprog::compile(&policy).unwrap();
        let b = netprog::compile(&policy.clone()).unwrap();
        assert_eq!(a, b, "{}", p.display());
        for (x, y) in a.programs.iter().zip(&b.programs) {
            assert_eq!(x.bytes(), y.bytes());
        }
    }
    let mut rng = Rng(7);
    let net = random_network(&mut rng, 30, 20);
    let dev = random_devices(&mut rng);
    let l = Locator::new(&["p.yaml".into()]);
    let a = compile_parts(&net, &dev, &l, &Options::default()).unwrap();
    let b = compile_parts(&net.clone(), &dev.clone(), &l, &Options::default()).unwrap();
    assert!(a.maps.iter().any(|m| m.map_type == 11), "30 rules of up to 20 CIDRs take an LPM trie");
    assert_eq!(a, b);
}

#[test]
fn web_fetcher_programs_carry_their_policy_lines() {
    let policy = load_policy("web-fetcher.yaml");
    let set = netprog::compile(&policy).unwrap();
    let names: Vec<&str> = set.maps.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, [phantom_ebpf::audit::RINGBUF_MAP], "no LPM trie, only the audit ring buffer");
    let kinds: Vec<ProgKind> = set.programs.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, ProgKind::ALL.to_vec());

    let egress_lines: BTreeSet<u32> = policy.network.egress.iter().map(|r| r.origin.line).collect();
    let bind_lines: BTreeSet<u32> = policy.network.bind.iter().map(|r| r.origin.line).collect();
    let dev_lines: BTreeSet<u32> = policy.devices.allow.iter().map(|r| r.origin.line).collect();
    let all_rule_lines: BTreeSet<u32> = policy
        .network
        .egress
        .iter()
        .chain(&policy.network.ingress)
        .map(|r| r.origin.line)
        .chain(bind_lines.iter().copied())
        .collect();
    let mut report = String::new();
    for prog in &set.programs {
        let lines: BTreeSet<u32> = prog.encoded.lines.values().map(|l| l.line).collect();
        assert!(prog.encoded.lines.values().all(|l| l.file.ends_with("web-fetcher.yaml")));
        let want = match prog.kind {
            ProgKind::Connect4 | ProgKind::Sendmsg4 => {
                // Every egress rule with an IPv4 CIDR (all three here).
                egress_lines.clone()
            }
            ProgKind::Connect6 | ProgKind::Sendmsg6 => egress_lines.clone(),
            ProgKind::Bind4 | ProgKind::Bind6 => bind_lines.clone(),
            ProgKind::Device => dev_lines.clone(),
            ProgKind::SockCreate => lines.iter().copied().filter(|l| all_rule_lines.contains(l)).collect(),
        };
        assert_eq!(lines, want, "{}", prog.kind.section());
        // Every instruction between the prologue and the verdicts is a rule's.
        let text = disasm::disassemble(&prog.encoded).unwrap();
        report.push_str(&format!("# {} ({} instructions)\n{text}\n", prog.kind.section(), prog.encoded.insns.len()));
    }
    let counts: Vec<(String, usize)> =
        set.programs.iter().map(|p| (p.kind.section().to_string(), p.encoded.insns.len())).collect();
    eprintln!("web-fetcher instruction counts: {counts:?}\n{report}");
    // Small: straight-line compares for 3 rules, 4 CIDRs, plus the
    // denial's audit record (36 instructions at most).
    for (section, n) in &counts {
        assert!(*n <= 120, "{section}: {n} instructions");
    }
}

#[test]
fn more_than_64_cidrs_in_a_family_switches_to_an_lpm_trie() {
    let l = Locator::new(&["p.yaml".into()]);
    let dev = DevicePolicy { allow: Vec::new() };
    let v4 = |n: usize| -> Vec<String> { (0..n).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect() };
    for (n, want_map) in [(64, false), (65, true)] {
        let cidrs = v4(n);
        let refs: Vec<&str> = cidrs.iter().map(String::as_str).collect();
        let net = allowlist(
            vec![rule(&refs, &[(443, 443)], Protocol::Tcp, 3), rule(&["::1"], &[], Protocol::Any, 4)],
            vec![],
        );
        let set = compile_parts(&net, &dev, &l, &Options::default()).unwrap();
        assert_eq!(set.map("egress_v4").is_some(), want_map, "{n} CIDRs");
        assert!(set.map("egress_v6").is_none());
        let c4 = set.get(ProgKind::Connect4).unwrap();
        let audit = phantom_ebpf::audit::RINGBUF_MAP;
        assert_eq!(c4.maps(), if want_map { vec!["egress_v4", audit] } else { vec![audit] });
        eprintln!("{n} IPv4 CIDRs: connect4 has {} instructions", c4.encoded.insns.len());
        if want_map {
            let m = set.map("egress_v4").unwrap();
            assert_eq!((m.map_type, m.key_size, m.value_size, m.entries.len()), (BPF_MAP_TYPE_LPM_TRIE, 8, 4, 65));
            assert!(c4.encoded.insns.len() < 80, "the trie keeps the program small (the audit record is 36)");
        }
    }
    // Nested prefixes: the longest entry's bitmap includes its ancestors' rules.
    let net = allowlist(
        vec![rule(&["10.0.0.0/8"], &[(1, 1)], Protocol::Tcp, 3), rule(&["10.1.0.0/16"], &[(2, 2)], Protocol::Tcp, 4)],
        vec![],
    );
    let set = compile_parts(&net, &dev, &l, &Options { lpm_threshold: 0, ..Options::default() }).unwrap();
    let m = set.map("egress_v4").unwrap();
    let bits: Vec<(u8, u32)> =
        m.entries.iter().map(|(k, v)| (k[4], u32::from_ne_bytes(v[..4].try_into().unwrap()))).collect();
    assert!(bits.contains(&(10, 0b01)) && bits.len() == 2);
    assert!(m.entries.iter().any(|(k, v)| k[5] == 1 && u32::from_ne_bytes(v[..4].try_into().unwrap()) == 0b11));
}

#[test]
fn non_allowlist_modes_get_only_the_device_program() {
    let mut net = allowlist(vec![rule(&["10.0.0.0/8"], &[], Protocol::Any, 3)], vec![]);
    net.mode = phantom_dsl::ir::NetMode::LoopbackOnly;
    let set =
        compile_parts(&net, &DevicePolicy { allow: Vec::new() }, &Locator::new(&[]), &Options::default()).unwrap();
    assert_eq!(set.programs.iter().map(|p| p.kind).collect::<Vec<_>>(), vec![ProgKind::Device]);
}
