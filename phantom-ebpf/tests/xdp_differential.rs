//! Differential: both XDP programs, loaded into this kernel with their maps
//! (BPF_PROG_LOAD, type XDP) and run with BPF_PROG_TEST_RUN, give the same
//! verdict as the reference interpreter on well over 10,000 random frames:
//! small, random and 1,000-CIDR policies (straight-line and LPM paths),
//! both IP versions, TCP/UDP/ICMP and other protocols, frames biased to
//! CIDR and port boundaries, malformed, truncated and fragmented frames,
//! extension headers, ARP and neighbour discovery, and replies to earlier
//! allowed packets (the flow map), whose contents must equal the
//! reference's flow table at the end of every case. Needs root; a kernel
//! refusal fails the test with the verifier log (never a skip). Every fd is
//! checked closed afterwards.

mod xdp_common;

use phantom_dsl::ir::NetworkPolicy;
use phantom_dsl::values::Protocol;
use phantom_ebpf::bpf::sys;
use phantom_ebpf::netprog::Locator;
use phantom_ebpf::xdp::reference::{Reason, Reference, Verdict};
use phantom_ebpf::xdp::{
    compile_network, AddrStrategy, Direction, LargeSets, Options, XdpPrograms, FLOW_KEY_SIZE, FLOW_MAP, XDP_DROP,
    XDP_PASS,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use xdp_common::*;

struct Case {
    name: String,
    net: NetworkPolicy,
    opts: Options,
    packets: usize,
}

fn cases() -> Vec<Case> {
    let mut rng = Rng(0x0dd5_eed5_cafe_0001);
    let opts = Options { flow_entries: 65536, ..Options::default() };
    let small = allowlist(
        vec![
            rule(&["10.0.0.0/8", "2001:db8::/32"], &[(443, 443)], Protocol::Tcp, 3),
            rule(&["192.0.2.53"], &[(53, 53)], Protocol::Udp, 4),
            rule(&["198.51.100.0/24", "2001:db8:1::/48"], &[], Protocol::Icmp, 5),
            rule(&["203.0.113.7"], &[], Protocol::Any, 6),
            rule(&[], &[(8000, 8100)], Protocol::Any, 7),
        ],
        vec![
            rule(&["10.1.0.0/16", "fd00:1::/32"], &[(8080, 8080)], Protocol::Tcp, 10),
            rule(&["192.0.2.0/24"], &[], Protocol::Icmp, 11),
            rule(&[], &[(5353, 5353)], Protocol::Udp, 12),
        ],
    );
    let egress_only = allowlist(
        vec![
            rule(&["10.0.0.0/8"], &[(443, 443), (80, 80)], Protocol::Tcp, 3),
            rule(&["::/0"], &[(53, 53)], Protocol::Udp, 4),
            rule(&["0.0.0.0/0"], &[], Protocol::Icmp, 5),
        ],
        vec![],
    );
    let everything = allowlist(
        vec![rule(&["0.0.0.0/0", "::/0"], &[], Protocol::Any, 3), rule(&["10.0.0.0/8"], &[(1, 2)], Protocol::Tcp, 4)],
        vec![rule(&[], &[], Protocol::Any, 8), rule(&["10.0.0.0/8"], &[], Protocol::Tcp, 9)],
    );
    let mut out = vec![
        Case { name: "small".into(), net: small.clone(), opts: opts.clone(), packets: 1500 },
        Case {
            name: "small-lpm".into(),
            net: small.clone(),
            opts: Options { table_threshold: 0, large_sets: LargeSets::LpmTrie, ..opts.clone() },
            packets: 1000,
        },
        Case {
            name: "small-search".into(),
            net: small,
            opts: Options { table_threshold: 0, ..opts.clone() },
            packets: 1000,
        },
        Case { name: "egress-only".into(), net: egress_only, opts: opts.clone(), packets: 600 },
        Case { name: "match-all".into(), net: everything, opts: opts.clone(), packets: 300 },
        Case { name: "nothing".into(), net: allowlist(vec![], vec![]), opts: opts.clone(), packets: 200 },
    ];
    for i in 0..24 {
        let (ne, ni) = (1 + rng.below(6) as usize, rng.below(4) as usize);
        let net = allowlist(random_rules(&mut rng, ne, 4, 10), random_rules(&mut rng, ni, 4, 100));
        out.push(Case { name: format!("random-{i}"), net, opts: opts.clone(), packets: 250 });
    }
    for i in 0..6 {
        let (ne, ni) = (1 + rng.below(6) as usize, 1 + rng.below(4) as usize);
        let net = allowlist(random_rules(&mut rng, ne, 4, 10), random_rules(&mut rng, ni, 4, 100));
        out.push(Case {
            name: format!("random-lpm-{i}"),
            net,
            opts: Options { table_threshold: 0, large_sets: LargeSets::LpmTrie, ..opts.clone() },
            packets: 250,
        });
    }
    // The compiled search on nested, overlapping and adjacent CIDRs of
    // every prefix length (IPv6 /96../128 need the inner low-half search).
    for i in 0..10 {
        let (ne, ni) = (1 + rng.below(8) as usize, 1 + rng.below(4) as usize);
        let net = allowlist(random_rules(&mut rng, ne, 12, 10), random_rules(&mut rng, ni, 8, 100));
        out.push(Case {
            name: format!("random-search-{i}"),
            net,
            opts: Options { table_threshold: rng.below(3) as usize, ..opts.clone() },
            packets: 250,
        });
    }
    for i in 0..3 {
        let n = 30 + rng.below(20) as usize;
        let net = allowlist(random_rules(&mut rng, n, 40, 10), random_rules(&mut rng, 8, 40, 200));
        // The first one keeps every rule in straight-line compares.
        let table_threshold = if i == 0 { usize::MAX } else { opts.table_threshold };
        out.push(Case {
            name: format!("random-large-{i}"),
            net,
            opts: Options { table_threshold, ..opts.clone() },
            packets: 500,
        });
    }
    out.push(Case { name: "1000-cidrs".into(), net: large_policy(1000, 100, 20), opts: opts.clone(), packets: 2500 });
    out.push(Case {
        name: "1000-cidrs-wide".into(),
        net: large_policy(1000, 70, 1),
        opts: opts.clone(),
        packets: 1500,
    });
    out.push(Case {
        name: "1000-cidrs-lpm".into(),
        net: large_policy(1000, 100, 20),
        opts: Options { large_sets: LargeSets::LpmTrie, ..opts },
        packets: 500,
    });
    out
}

/// Generates frames for one policy, keeping the packets that rules passed
/// so that replies to them can follow.
struct Gen<'a> {
    rng: Rng,
    net: &'a NetworkPolicy,
    opened: Vec<(Direction, Pkt)>,
}

const SANDBOX4: [u8; 4] = [10, 200, 0, 2];

impl Gen<'_> {
    fn sandbox(&mut self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2 + self.rng.below(3) as u16))
        } else {
            let mut a = SANDBOX4;
            a[3] += self.rng.below(3) as u8;
            IpAddr::V4(Ipv4Addr::from(a))
        }
    }

    /// A peer address: at, just inside or just outside a rule CIDR of
    /// either direction, or random; IPv6 sometimes IPv4-mapped.
    fn peer(&mut self, v6: bool) -> IpAddr {
        let rng = &mut self.rng;
        let cidrs: Vec<_> = self.net.egress.iter().chain(&self.net.ingress).flat_map(|r| &r.cidrs).copied().collect();
        let v4 = |rng: &mut Rng| -> Ipv4Addr {
            let v4s: Vec<_> = cidrs.iter().filter(|c| c.is_v4()).collect();
            if !v4s.is_empty() && rng.chance(80) {
                let c = v4s[rng.below(v4s.len() as u64) as usize];
                let IpAddr::V4(a) = c.addr else { unreachable!() };
                let (base, size) = (u64::from(u32::from(a)), 1u64 << (32 - c.prefix));
                let x = match rng.below(5) {
                    0 => base,
                    1 => base + size - 1,
                    2 => base + size,
                    3 => base.wrapping_sub(1),
                    _ => base + rng.below(size),
                };
                Ipv4Addr::from(x as u32)
            } else {
                Ipv4Addr::from(pick!(rng, [rng.next() as u32, 0x0a00_0001, 0xc000_0235, 0]))
            }
        };
        if !v6 {
            return IpAddr::V4(v4(rng));
        }
        if rng.chance(15) {
            return IpAddr::V6(v4(rng).to_ipv6_mapped());
        }
        let v6s: Vec<_> = cidrs.iter().filter(|c| !c.is_v4()).collect();
        let a = if !v6s.is_empty() && rng.chance(80) {
            let c = v6s[rng.below(v6s.len() as u64) as usize];
            let IpAddr::V6(a) = c.addr else { unreachable!() };
            let base = u128::from(a);
            let host = u128::MAX.checked_shr(u32::from(c.prefix)).unwrap_or(0);
            let r = (u128::from(rng.next()) << 64) | u128::from(rng.next());
            match rng.below(5) {
                0 => base,
                1 => base | host,
                2 => (base | host).wrapping_add(1),
                3 => base.wrapping_sub(1),
                _ => base | (r & host),
            }
        } else {
            pick!(rng, [(u128::from(rng.next()) << 64) | u128::from(rng.next()), 1, 0x2001_0db8u128 << 96])
        };
        IpAddr::V6(Ipv6Addr::from(a))
    }

    fn port(&mut self) -> u16 {
        let edges: Vec<u16> = self
            .net
            .egress
            .iter()
            .chain(&self.net.ingress)
            .flat_map(|r| &r.ports)
            .flat_map(|p| [p.start, p.end, p.start.wrapping_sub(1), p.end.wrapping_add(1)])
            .collect();
        if !edges.is_empty() && self.rng.chance(70) {
            *self.rng.pick(&edges)
        } else {
            pick!(self.rng, [0, self.rng.next() as u16, 443, 53, 8080, 40000 + self.rng.below(100) as u16])
        }
    }

    fn packet(&mut self, dir: Direction) -> Pkt {
        let v6 = self.rng.chance(45);
        let (me, peer) = (self.sandbox(v6), self.peer(v6));
        let (src, dst) = match dir {
            Direction::Egress => (me, peer),
            Direction::Ingress => (peer, me),
        };
        let icmp = if v6 { 58 } else { 1 };
        let proto = match self.rng.below(100) {
            0..=29 => 6,
            30..=54 => 17,
            55..=84 => icmp,
            _ => pick!(self.rng, [0, 47, 132, 255, 59, if v6 { 1 } else { 58 }, self.rng.next() as u8]),
        };
        let icmp_type = if v6 {
            pick!(self.rng, [128, 128, 129, 129, 133, 134, 135, 136, 137, 1, 2, self.rng.next() as u8])
        } else {
            pick!(self.rng, [8, 8, 0, 0, 3, 11, self.rng.next() as u8])
        };
        Pkt {
            src,
            dst,
            proto,
            sport: self.port(),
            dport: self.port(),
            icmp_type,
            icmp_id: pick!(self.rng, [1, 0x1234, self.rng.next() as u16]),
            frag: Frag::None,
            ihl: 5,
            ext: Vec::new(),
            // SYN opens a TCP flow; the others only pass by a rule.
            tcp_flags: pick!(self.rng, [TCP_SYN, TCP_SYN, TCP_SYN | TCP_ACK, TCP_ACK, 0x18, 0x11, 0x04, 0x03]),
        }
    }

    /// A frame for direction `dir`, and what was done to it.
    fn frame(&mut self, dir: Direction) -> (Vec<u8>, Option<Pkt>, &'static str) {
        // A reply (or a near miss) to a packet a rule passed earlier.
        if !self.opened.is_empty() && self.rng.chance(30) {
            let i = self.rng.below(self.opened.len() as u64) as usize;
            let (d, p) = self.opened[i].clone();
            let (mut r, what) = if d == dir { (p, "repeat") } else { (p.reply(), "reply") };
            let what = match self.rng.below(10) {
                0 => {
                    r.sport = r.sport.wrapping_add(1);
                    "reply, source port + 1"
                }
                1 => {
                    r.icmp_id ^= 1;
                    r.dport ^= 1;
                    "reply, id / port changed"
                }
                _ => what,
            };
            if d != dir || what != "repeat" {
                return (frame(&r), Some(r), what);
            }
        }
        if self.rng.chance(4) {
            return (arp_frame(), None, "arp");
        }
        let mut p = self.packet(dir);
        let mut what = "plain";
        if self.rng.chance(18) {
            what = match self.rng.below(9) {
                0 => {
                    p.frag = Frag::First;
                    "first fragment"
                }
                1 => {
                    p.frag = Frag::Later(1 + self.rng.below(100) as u16);
                    "later fragment"
                }
                2 if !p.v6() => {
                    p.ihl = 6 + self.rng.below(10) as u8;
                    "ipv4 options"
                }
                3 if p.v6() => {
                    p.ext = vec![pick!(self.rng, [0, 43, 60, 51, 135, 139, 140, 253, 254, 44])];
                    "extension header"
                }
                4 if p.v6() => {
                    p.frag = Frag::First;
                    p.ext = vec![44];
                    "two fragment headers"
                }
                _ => "plain",
            };
        }
        let mut f = frame(&p);
        let mutation = self.rng.below(100);
        if mutation < 8 {
            let len = 14 + self.rng.below(f.len() as u64 - 14) as usize;
            f.truncate(len);
            what = "truncated";
        } else if mutation < 10 {
            f[14] = (f[14] & 0x0f) | pick!(self.rng, [0x00, 0x40, 0x60, 0x50, 0xf0]);
            what = "version changed";
        } else if mutation < 12 && !p.v6() {
            f[14] = 0x40 | self.rng.below(5) as u8;
            what = "ihl < 5";
        } else if mutation < 13 {
            f[12..14]
                .copy_from_slice(&pick!(self.rng, [0x8100u16, 0x88cc, 0x0801, self.rng.next() as u16]).to_be_bytes());
            what = "other ethertype";
        }
        let keep = what == "plain" || what == "first fragment" || what == "ipv4 options";
        (f, keep.then_some(p), what)
    }
}

#[derive(Default)]
struct Stats {
    frames: usize,
    pass: usize,
    reasons: BTreeMap<String, usize>,
    kinds: BTreeMap<&'static str, usize>,
    flows: usize,
    lpm_programs: usize,
    search_programs: usize,
    straight_programs: usize,
    slots: BTreeMap<String, usize>,
}

fn compile(c: &Case) -> XdpPrograms {
    compile_network(&c.net, &Locator::new(&["p.yaml".into()]), &c.opts).unwrap().unwrap()
}

fn reason_name(r: Reason) -> String {
    match r {
        Reason::Rule(_) => "rule".into(),
        r => format!("{r:?}"),
    }
}

fn run_case(case: &Case, seed: u64, stats: &mut Stats) {
    let set = compile(case);
    let loaded = Loaded::new(&set);
    let uses = |s: AddrStrategy| [&set.egress, &set.ingress].iter().filter(|p| p.strategy.contains(&s)).count();
    stats.lpm_programs += uses(AddrStrategy::LpmTrie);
    stats.search_programs += uses(AddrStrategy::Search);
    stats.straight_programs += uses(AddrStrategy::StraightLine);
    for p in [&set.egress, &set.ingress] {
        stats.slots.insert(format!("{} {:?}", case.name, p.direction), p.encoded.insns.len());
    }
    let mut reference = Reference::new(&case.net);
    let mut gen = Gen { rng: Rng(seed), net: &case.net, opened: Vec::new() };
    for i in 0..case.packets {
        let dir = if gen.rng.chance(55) { Direction::Egress } else { Direction::Ingress };
        let (f, pkt, what) = gen.frame(dir);
        let want = reference.run(dir, &f);
        let got = loaded.run(dir, &f);
        let want_code = match want.verdict() {
            Verdict::Pass => XDP_PASS,
            Verdict::Drop => XDP_DROP,
        };
        assert_eq!(
            got, want_code,
            "{} frame {i} ({dir:?}, {what}): kernel {got}, reference {want:?}\npacket {pkt:?}\nframe {f:02x?}",
            case.name
        );
        if let (Reason::Rule(_), Some(p)) = (want, pkt) {
            if gen.opened.len() < 256 {
                gen.opened.push((dir, p));
            } else {
                let k = gen.rng.below(256) as usize;
                gen.opened[k] = (dir, p);
            }
        }
        stats.frames += 1;
        stats.pass += usize::from(got == XDP_PASS);
        *stats.reasons.entry(format!("{dir:?} {}", reason_name(want))).or_default() += 1;
        *stats.kinds.entry(what).or_default() += 1;
    }
    // The kernel's flow map holds exactly the reference's flows.
    let flows = &loaded.maps[FLOW_MAP];
    let mut keys = sys::map_keys(flows.as_fd(), FLOW_KEY_SIZE).unwrap();
    keys.sort();
    let want: Vec<Vec<u8>> = reference.flows().keys().map(|k| k.to_vec()).collect();
    assert_eq!(keys, want, "{}: flow map differs from the reference's flow table", case.name);
    for (k, d) in reference.flows() {
        let mut v = [0u8; 8];
        assert!(sys::map_contains(flows.as_fd(), k, &mut v).unwrap());
        assert_eq!(u64::from_ne_bytes(v), d.opened_by(), "{}: flow opened by {d:?}", case.name);
    }
    stats.flows += want.len();
    // No fd outlives the case.
    let ids = loaded.ids();
    drop(loaded);
    for (key, id) in ids {
        assert_eq!(open_fds(key, id), 0, "{}: {key} {id} still open", case.name);
    }
}

#[test]
fn xdp_programs_agree_with_the_reference_interpreter() {
    let mut stats = Stats::default();
    for (i, case) in cases().iter().enumerate() {
        run_case(case, 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1), &mut stats);
    }
    eprintln!(
        "xdp differential: {} frames, {} PASS, {} DROP, {} flows recorded, {} programs with LPM tries, {} with \
         compiled searches",
        stats.frames,
        stats.pass,
        stats.frames - stats.pass,
        stats.flows,
        stats.lpm_programs,
        stats.search_programs
    );
    eprintln!("  by reason: {:?}", stats.reasons);
    eprintln!("  by frame kind: {:?}", stats.kinds);
    eprintln!(
        "  program sizes (slots): 1000-cidrs egress {} ingress {}, small egress {} ingress {}",
        stats.slots["1000-cidrs Egress"],
        stats.slots["1000-cidrs Ingress"],
        stats.slots["small Egress"],
        stats.slots["small Ingress"]
    );
    assert!(stats.frames >= 10_000, "only {} frames", stats.frames);
    assert!(stats.lpm_programs >= 4, "the LPM path ran in {} programs", stats.lpm_programs);
    assert!(stats.search_programs >= 10, "the search path ran in {} programs", stats.search_programs);
    assert!(stats.straight_programs >= 10, "straight-line compares ran in {} programs", stats.straight_programs);
    // Every kind of verdict was exercised in both directions.
    for dir in ["Egress", "Ingress"] {
        for r in ["rule", "NoMatch", "Malformed", "Fragment", "Arp", "NeighbourDiscovery", "ExtensionHeader"] {
            assert!(stats.reasons.contains_key(&format!("{dir} {r}")), "no {dir} frame ended as {r}");
        }
    }
    assert!(stats.reasons.get("Ingress Flow").copied().unwrap_or(0) >= 100, "replies: {:?}", stats.reasons);
    assert!(stats.reasons.contains_key("Egress Flow"), "no ingress-opened flow answered: {:?}", stats.reasons);
}

/// Every edge of the compiled search: for each CIDR of the policy, its
/// first and last address and their outer neighbours (the interval
/// boundaries and both sides of each), as IPv4, IPv6 and IPv4-mapped IPv6
/// peers, in both directions, with each protocol and port shape of the
/// policy and near misses. Kernel and reference agree on every frame.
#[test]
fn the_compiled_search_agrees_at_every_interval_edge() {
    let mut rng = Rng(0x0bad_cafe_0000_0007);
    let opts = Options { flow_entries: 1 << 17, ..Options::default() };
    let nested = allowlist(random_rules(&mut rng, 8, 12, 10), random_rules(&mut rng, 4, 12, 100));
    let cases = [
        ("1000-cidrs", large_policy(1000, 100, 20), opts.clone()),
        ("nested", nested, Options { table_threshold: 0, ..opts }),
    ];
    let shapes: [(u8, u16); 9] =
        [(6, 443), (6, 444), (6, 80), (6, 8085), (17, 53), (17, 3999), (6, 3000), (1, 0), (47, 0)];
    let mut frames = 0;
    for (name, net, opts) in cases {
        let set = compile_network(&net, &Locator::new(&["p.yaml".into()]), &opts).unwrap().unwrap();
        assert!(set.egress.strategy.contains(&AddrStrategy::Search), "{name}: {:?}", set.egress.strategy);
        let loaded = Loaded::new(&set);
        let mut reference = Reference::new(&net);
        let mut peers: Vec<IpAddr> = Vec::new();
        for c in net.egress.iter().chain(&net.ingress).flat_map(|r| &r.cidrs) {
            match c.addr {
                IpAddr::V4(a) => {
                    let host = u32::MAX.checked_shr(u32::from(c.prefix)).unwrap_or(0);
                    let (s, e) = (u32::from(a) & !host, u32::from(a) | host);
                    for x in [s.wrapping_sub(1), s, e, e.wrapping_add(1)] {
                        peers.push(IpAddr::V4(x.into()));
                        if x % 3 == 0 {
                            peers.push(IpAddr::V6(Ipv4Addr::from(x).to_ipv6_mapped()));
                        }
                    }
                }
                IpAddr::V6(a) => {
                    let host = u128::MAX.checked_shr(u32::from(c.prefix)).unwrap_or(0);
                    let (s, e) = (u128::from(a) & !host, u128::from(a) | host);
                    for x in [s.wrapping_sub(1), s, e, e.wrapping_add(1)] {
                        peers.push(IpAddr::V6(x.into()));
                    }
                }
            }
        }
        for (i, peer) in peers.iter().enumerate() {
            let (proto, port) = shapes[i % shapes.len()];
            for dir in [Direction::Egress, Direction::Ingress] {
                let me = if peer.is_ipv6() {
                    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2))
                } else {
                    IpAddr::V4(Ipv4Addr::new(10, 200, 0, 2))
                };
                let proto = if proto == 1 && peer.is_ipv6() { 58 } else { proto };
                let p = Pkt {
                    src: if dir == Direction::Egress { me } else { *peer },
                    dst: if dir == Direction::Egress { *peer } else { me },
                    proto,
                    sport: 40000 + (i % 1000) as u16,
                    dport: port,
                    icmp_type: if proto == 58 { 128 } else { 8 },
                    icmp_id: i as u16,
                    frag: Frag::None,
                    ihl: 5,
                    ext: Vec::new(),
                    tcp_flags: if i % 2 == 0 { TCP_SYN } else { TCP_ACK },
                };
                let f = frame(&p);
                let want = match reference.run(dir, &f).verdict() {
                    Verdict::Pass => XDP_PASS,
                    Verdict::Drop => XDP_DROP,
                };
                assert_eq!(loaded.run(dir, &f), want, "{name}: {dir:?} {p:?}");
                frames += 1;
            }
        }
    }
    assert!(frames >= 8_000, "only {frames} frames");
}
