//! Properties of the generated XDP programs that the differential does not
//! show: which policies get them, determinism, policy lines, the strategy
//! switch, and the frames BPF_PROG_TEST_RUN cannot run (the reference must
//! still drop them). Needs root for the kernel parts.

mod xdp_common;

use phantom_dsl::ir::NetMode;
use phantom_dsl::values::Protocol;
use phantom_ebpf::bpf::sys;
use phantom_ebpf::netprog::Locator;
use phantom_ebpf::xdp::reference::{parse, Reason, Reference};
use phantom_ebpf::xdp::{
    compile_network, AddrStrategy, Direction, LargeSets, Options, XdpPrograms, FLOW_CACHE_MAP, FLOW_MAP, XDP_DROP,
    XDP_PASS,
};
use std::os::fd::AsFd;
use xdp_common::*;

fn compile(net: &phantom_dsl::ir::NetworkPolicy, opts: &Options) -> XdpPrograms {
    compile_network(net, &Locator::new(&["p.yaml".into()]), opts).unwrap().unwrap()
}

fn small() -> phantom_dsl::ir::NetworkPolicy {
    allowlist(
        vec![rule(&["10.0.0.0/8", "2001:db8::/32"], &[(443, 443)], Protocol::Tcp, 3)],
        vec![rule(&["192.0.2.0/24"], &[(22, 22)], Protocol::Tcp, 7)],
    )
}

#[test]
fn only_allowlist_policies_get_xdp_programs() {
    for mode in [NetMode::None, NetMode::LoopbackOnly] {
        let mut net = small();
        net.mode = mode;
        assert!(compile_network(&net, &Locator::new(&[]), &Options::default()).unwrap().is_none(), "{mode:?}");
    }
}

#[test]
fn compiling_twice_gives_identical_bytes() {
    let net = large_policy(1000, 100, 20);
    let (a, b) = (compile(&net, &Options::default()), compile(&net, &Options::default()));
    assert_eq!(a.egress.bytes(), b.egress.bytes());
    assert_eq!(a.ingress.bytes(), b.ingress.bytes());
    assert_eq!(a.maps, b.maps);
    assert_eq!(phantom_ebpf::xdp::object(&a, &[]).unwrap(), phantom_ebpf::xdp::object(&b, &[]).unwrap());
}

/// Every compare of the compiled search carries the line of a rule with a
/// CIDR that starts or ends (last address + 1) at the boundary it tests:
/// for IPv4 the whole address, for IPv6 the high (r2) or low (r3) half; a
/// high-half compare that closes an inner (low-half) search tests the high
/// half + 1 of such a boundary.
#[test]
fn search_compares_carry_the_line_of_a_rule_owning_their_boundary() {
    let mut rng = Rng(0x005e_ed0f_11e5);
    let nested = allowlist(random_rules(&mut rng, 40, 12, 10), random_rules(&mut rng, 20, 12, 5000));
    let mut checked = [0usize; 3];
    for (net, opts) in [
        (large_policy(1000, 100, 20), Options::default()),
        (nested, Options { table_threshold: 0, ..Options::default() }),
    ] {
        boundary_lines(&net, &compile(&net, &opts), &mut checked);
    }
    assert!(checked.iter().all(|&n| n > 20), "compares checked (IPv4, IPv6 high, IPv6 low): {checked:?}");
}

fn boundary_lines(net: &phantom_dsl::ir::NetworkPolicy, set: &XdpPrograms, checked: &mut [usize; 3]) {
    use phantom_ebpf::bpf::{Op, Reg, Source, Width};
    for (prog, rules, first_line) in [(&set.egress, &net.egress, 10), (&set.ingress, &net.ingress, 5000)] {
        let mut last_const = None;
        for insn in &prog.insns {
            if let Op::LdImm64 { dst: Reg::R1, imm } = insn.op {
                last_const = Some(imm as u64);
            }
            let Op::Jmp { width, dst, src, .. } = &insn.op else { continue };
            let (kind, c) = match (width, dst, src) {
                (Width::W32, Reg::R2, Source::Imm(i)) => (0, u64::from(*i as u32)),
                (Width::W64, Reg::R2 | Reg::R3, Source::Imm(i)) => (1 + (*dst == Reg::R3) as usize, *i as i64 as u64),
                (Width::W64, Reg::R2 | Reg::R3, Source::Reg(Reg::R1)) => {
                    (1 + (*dst == Reg::R3) as usize, last_const.expect("a constant loaded into r1"))
                }
                _ => continue,
            };
            let line = insn.meta.loc.as_ref().expect("a search compare has a policy line").line;
            let rule = &rules[(line - first_line) as usize];
            let owns = rule.cidrs.iter().any(|cidr| match cidr.addr {
                std::net::IpAddr::V4(a) if kind == 0 => {
                    let host = u32::MAX.checked_shr(u32::from(cidr.prefix)).unwrap_or(0);
                    let (s, e) = (u64::from(u32::from(a) & !host), u64::from(u32::from(a) | host));
                    c == s || c == e + 1
                }
                std::net::IpAddr::V6(a) if kind > 0 => {
                    let host = u128::MAX.checked_shr(u32::from(cidr.prefix)).unwrap_or(0);
                    let (s, e) = (u128::from(a) & !host, u128::from(a) | host);
                    let half = |x: u128| if kind == 1 { (x >> 64) as u64 } else { x as u64 };
                    let after = |x: u128| if kind == 1 { half(x).checked_add(1) } else { None };
                    c == half(s)
                        || Some(c) == e.checked_add(1).map(half)
                        || Some(c) == after(s)
                        || Some(c) == e.checked_add(1).and_then(after)
                }
                _ => false,
            });
            assert!(
                owns,
                "{:?}: compare with {c:#x} carries line {line}, whose rule has no such boundary",
                prog.direction
            );
            checked[kind] += 1;
        }
    }
}

#[test]
fn rule_instructions_carry_their_policy_line() {
    let set = compile(&small(), &Options::default());
    let lines = |d: Direction| -> Vec<u32> {
        let mut l: Vec<u32> = set.get(d).encoded.lines.values().map(|loc| loc.line).collect();
        l.dedup();
        l
    };
    assert!(lines(Direction::Egress).contains(&3), "{:?}", lines(Direction::Egress));
    assert!(lines(Direction::Ingress).contains(&7), "{:?}", lines(Direction::Ingress));
}

#[test]
fn large_sets_use_compiled_searches_and_small_ones_do_not() {
    use AddrStrategy::*;
    // The flow map, its per-CPU cache, the refusal counter and the audit
    // ring: no map of addresses.
    let mut no_tables =
        vec![FLOW_CACHE_MAP, FLOW_MAP, phantom_ebpf::xdp::REFUSALS_MAP, phantom_ebpf::audit::RINGBUF_MAP];
    no_tables.sort_unstable();
    let set = compile(&small(), &Options::default());
    assert_eq!(set.egress.strategy, [StraightLine, StraightLine]);
    assert_eq!(set.egress.maps(), no_tables);
    let set = compile(&large_policy(1000, 100, 20), &Options::default());
    assert_eq!(set.egress.strategy, [Search, Search]);
    assert_eq!(set.ingress.strategy, [Search, Search], "100 ingress CIDRs: 75 IPv4, 25 IPv6");
    // No map of addresses: the search is code.
    assert_eq!(set.egress.maps(), no_tables);
    assert_eq!(set.maps.len(), 4);
}

#[test]
fn large_sets_can_still_use_lpm_tries() {
    let opts = Options { large_sets: LargeSets::LpmTrie, ..Options::default() };
    let set = compile(&large_policy(1000, 100, 20), &opts);
    assert_eq!(set.egress.strategy, [AddrStrategy::LpmTrie, AddrStrategy::LpmTrie]);
    assert_eq!(set.ingress.strategy, [AddrStrategy::LpmTrie, AddrStrategy::LpmTrie]);
    let v4 = set.map("xdp_eg_v4").expect("IPv4 trie");
    assert_eq!(v4.key_size, 8);
    assert_eq!(v4.entries.len(), 750);
    // One class per (protocol, ports) shape, not one bit per rule.
    assert_eq!(v4.value_size, 4);
}

#[test]
fn runt_frames_cannot_be_test_run_and_the_reference_drops_them() {
    // The kernel refuses test frames shorter than an Ethernet header, so
    // the differential starts at 14 bytes; below, only the reference (and
    // the verifier-checked bounds test at the program's start) speak.
    let loaded = Loaded::new(&compile(&small(), &Options::default()));
    let err = sys::prog_test_run_repeat(loaded.egress.fd.as_fd(), &[0u8; 13], 1).unwrap_err();
    assert!(err.to_string().contains("Invalid argument"), "{err}");
    for n in 0..14 {
        assert_eq!(parse(&vec![0x08; n]), Err(Reason::Malformed), "{n} bytes");
    }
}

#[test]
fn an_egress_packet_opens_its_flow_and_only_its_reply_gets_in() {
    let net = small();
    let loaded = Loaded::new(&compile(&net, &Options::default()));
    let mut reference = Reference::new(&net);
    let out = Pkt {
        src: "10.200.0.2".parse().unwrap(),
        dst: "10.1.2.3".parse().unwrap(),
        proto: 6,
        sport: 40000,
        dport: 443,
        icmp_type: 0,
        icmp_id: 0,
        frag: Frag::None,
        ihl: 5,
        ext: Vec::new(),
        tcp_flags: TCP_SYN,
    };
    let reply = out.reply();
    let mut other = reply.clone();
    other.sport = 444;
    // Before the egress packet, the reply is dropped.
    assert_eq!(loaded.run(Direction::Ingress, &frame(&reply)), XDP_DROP);
    assert_eq!(reference.run(Direction::Ingress, &frame(&reply)), Reason::NoMatch);
    assert_eq!(loaded.run(Direction::Egress, &frame(&out)), XDP_PASS);
    assert_eq!(reference.run(Direction::Egress, &frame(&out)), Reason::Rule(0));
    assert_eq!(loaded.run(Direction::Ingress, &frame(&reply)), XDP_PASS);
    assert_eq!(reference.run(Direction::Ingress, &frame(&reply)), Reason::Flow);
    assert_eq!(loaded.run(Direction::Ingress, &frame(&other)), XDP_DROP);
    // Ingress-opened: a connection to the sandbox's port 22 lets the
    // sandbox answer although no egress rule covers 192.0.2.9.
    let inbound =
        Pkt { src: "192.0.2.9".parse().unwrap(), dst: "10.200.0.2".parse().unwrap(), sport: 5555, dport: 22, ..out };
    assert_eq!(loaded.run(Direction::Egress, &frame(&inbound.reply())), XDP_DROP);
    assert_eq!(loaded.run(Direction::Ingress, &frame(&inbound)), XDP_PASS);
    assert_eq!(loaded.run(Direction::Egress, &frame(&inbound.reply())), XDP_PASS);
    assert_eq!(sys::map_keys(loaded.maps[FLOW_MAP].as_fd(), 40).unwrap().len(), 2);
}

#[test]
fn only_a_tcp_syn_opens_a_flow_and_later_packets_skip_the_map() {
    let net = small();
    let loaded = Loaded::new(&compile(&net, &Options::default()));
    let mut reference = Reference::new(&net);
    let syn = Pkt {
        src: "10.200.0.2".parse().unwrap(),
        dst: "10.9.8.7".parse().unwrap(),
        proto: 6,
        sport: 41000,
        dport: 443,
        icmp_type: 0,
        icmp_id: 0,
        frag: Frag::None,
        ihl: 5,
        ext: Vec::new(),
        tcp_flags: TCP_SYN,
    };
    let ack = Pkt { tcp_flags: TCP_ACK, ..syn.clone() };
    let flows = || sys::map_keys(loaded.maps[FLOW_MAP].as_fd(), 40).unwrap().len();
    // An ACK passes by its rule but records nothing: its reply stays out.
    for (dir, p, verdict, reason) in [
        (Direction::Egress, &ack, XDP_PASS, Reason::Rule(0)),
        (Direction::Ingress, &ack.reply(), XDP_DROP, Reason::NoMatch),
    ] {
        assert_eq!(loaded.run(dir, &frame(p)), verdict, "{dir:?} {p:?}");
        assert_eq!(reference.run(dir, &frame(p)), reason);
    }
    assert_eq!(flows(), 0);
    // The SYN opens the flow: the SYN-ACK and later ACKs of the peer get in.
    assert_eq!(loaded.run(Direction::Egress, &frame(&syn)), XDP_PASS);
    assert_eq!(reference.run(Direction::Egress, &frame(&syn)), Reason::Rule(0));
    assert_eq!(flows(), 1);
    for p in [syn.reply(), ack.reply()] {
        assert_eq!(loaded.run(Direction::Ingress, &frame(&p)), XDP_PASS, "{p:?}");
        assert_eq!(reference.run(Direction::Ingress, &frame(&p)), Reason::Flow);
    }
    assert_eq!(loaded.run(Direction::Egress, &frame(&ack)), XDP_PASS);
    assert_eq!(flows(), 1);
}

/// A family whose CIDRs flatten into more intervals than
/// `max_search_intervals` takes the LPM trie; the other keeps its search,
/// the program loads, and it judges as the reference does.
#[test]
fn too_many_intervals_fall_back_to_an_lpm_trie() {
    let net = large_policy(1000, 0, 20);
    let opts = Options { max_search_intervals: 300, ..Options::default() };
    let set = compile(&net, &opts);
    // 750 IPv4 CIDRs (well over 300 intervals), 250 IPv6 /48s (~500).
    assert_eq!(set.egress.strategy, [AddrStrategy::LpmTrie, AddrStrategy::LpmTrie]);
    let opts = Options { max_search_intervals: 600, ..Options::default() };
    let set = compile(&net, &opts);
    assert_eq!(set.egress.strategy, [AddrStrategy::LpmTrie, AddrStrategy::Search]);
    assert!(set.map("xdp_eg_v4").is_some() && set.map("xdp_eg_v6").is_none());
    let loaded = Loaded::new(&set);
    let mut reference = Reference::new(&net);
    for (dst, dport) in [("10.0.2.9", 443), ("10.0.2.9", 444), ("192.0.2.1", 443), ("2001:db8:3::1", 80)] {
        let src = if dst.contains(':') { "fd00::2" } else { "10.200.0.2" };
        let p = Pkt {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: 6,
            sport: 40000,
            dport,
            icmp_type: 0,
            icmp_id: 0,
            frag: Frag::None,
            ihl: 5,
            ext: Vec::new(),
            tcp_flags: TCP_ACK,
        };
        let want = match reference.run(Direction::Egress, &frame(&p)).verdict() {
            phantom_ebpf::xdp::reference::Verdict::Pass => XDP_PASS,
            phantom_ebpf::xdp::reference::Verdict::Drop => XDP_DROP,
        };
        assert_eq!(loaded.run(Direction::Egress, &frame(&p)), want, "{p:?}");
    }
}
