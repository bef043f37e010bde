//! `bench xdp`: ns per packet of the generated XDP programs through
//! `BPF_PROG_TEST_RUN` (the kernel runs the program `repeat` times on the
//! same frame and returns the average duration), for policies of 10, 100
//! and 1,000 egress CIDR rules, on packets that take every path: allowed
//! established TCP (rules only), allowed IPv6, denied (no CIDR contains
//! the address; a CIDR does but the port is wrong), the flow-opening
//! packets (a TCP SYN, a UDP datagram: rules plus the flow cache or map) and,
//! on the sandbox end, a reply admitted by its flow (cache or map). Two designs: the
//! default (compiled binary search over the CIDR intervals) and, at 100 and
//! 1,000 rules, the earlier LPM-trie design as a peer. The floor is an XDP
//! program that only returns XDP_PASS, run the same way in the same
//! rounds. Rounds interleave every program so drift hits them alike; the
//! median of the rounds is reported. Needs root.
//!
//! Target (TARGETS.md): <= 50 ns per packet with 1,000 CIDR rules, checked
//! on every egress packet of the default design (a repeated flow-opening
//! packet is a per-CPU flow-cache hit); the first packet of a new flow pays
//! one hash-map lookup (~25-35 ns on this machine whatever the key size),
//! shown by the `no flow cache` rows and reported beside the check. The
//! peer named there (an iptables/nftables rule set of the same size) is
//! measured only if trivially available; it is not on this host.

use super::{Case, Harness, Section};
use anyhow::{bail, Context, Result};
use phantom_dsl::ir::{NetMode, NetRule, NetworkPolicy, Origin};
use phantom_dsl::values::{Cidr, PortRange, Protocol};
use phantom_ebpf::bpf::sys::{self, LoadedProg};
use phantom_ebpf::bpf::{encode, Insn, Reg};
use phantom_ebpf::netprog::Locator;
use phantom_ebpf::xdp::reference::{Reference, Verdict};
use phantom_ebpf::xdp::{
    compile_network, Direction, LargeSets, Options, XdpPrograms, BPF_PROG_TYPE_XDP, XDP_DROP, XDP_PASS,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// TARGETS.md: at most 50 ns per packet with 1,000 CIDR rules.
const TARGET_NS: f64 = 50.0;
/// Runs per BPF_PROG_TEST_RUN call (TARGETS.md: >= 1e5).
const REPEAT: u32 = 200_000;
const SIZES: [usize; 3] = [10, 100, 1000];

/// Rule `i` of the generated policy: one CIDR (IPv6 /48 for every fourth,
/// else an IPv4 /24) and one of four (protocol, ports) shapes.
fn bench_rule(i: usize) -> NetRule {
    let shapes: [(Protocol, &[(u16, u16)]); 4] = [
        (Protocol::Tcp, &[(443, 443)]),
        (Protocol::Tcp, &[(80, 80), (8080, 8089)]),
        (Protocol::Udp, &[(53, 53)]),
        (Protocol::Any, &[(3000, 3999)]),
    ];
    let (protocol, ports) = shapes[i % 4];
    let cidr = if i % 4 == 3 {
        Cidr { addr: IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | ((i as u128) << 80))), prefix: 48 }
    } else {
        Cidr { addr: IpAddr::V4(Ipv4Addr::new(10, (i / 256) as u8, (i % 256) as u8, 0)), prefix: 24 }
    };
    NetRule {
        cidrs: vec![cidr],
        ports: ports.iter().map(|&(start, end)| PortRange { start, end }).collect(),
        protocol,
        origin: Origin::NONE,
    }
}

fn policy(n: usize) -> NetworkPolicy {
    NetworkPolicy { mode: NetMode::Allowlist, egress: (0..n).map(bench_rule).collect(), ingress: vec![], bind: vec![] }
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// A TCP header (20 bytes) with `flags`, or a UDP header (8) and 12 bytes.
fn l4(proto: u8, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = sport.to_be_bytes().to_vec();
    t.extend(dport.to_be_bytes());
    if proto == 6 {
        t.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        t.extend([0, 20, 0, 0]);
        t.extend([0x11; 12]);
    }
    t
}

/// An Ethernet + IPv4 + TCP (6) or UDP (17) frame.
fn ip4(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend([0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    f.extend(src);
    f.extend(dst);
    f.extend(l4(proto, sport, dport, flags));
    f
}

/// An Ethernet + IPv6 + TCP frame.
fn tcp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
    f.extend([0x60, 0, 0, 0, 0, 20, 6, 64]);
    f.extend(src.octets());
    f.extend(dst.octets());
    f.extend(l4(6, sport, dport, flags));
    f
}

/// The address at host `host` of rule `k`'s CIDR (an IPv4 /24 unless
/// `k % 4 == 3`).
fn in_rule4(k: usize, host: u8) -> [u8; 4] {
    assert_ne!(k % 4, 3, "rule {k} has an IPv6 CIDR");
    [10, (k / 256) as u8, (k % 256) as u8, host]
}

/// The packets measured, in the order they run in each round (the SYN
/// before the reply it opens the flow for): (label, rule-decided, direction,
/// frame).
fn packets(n: usize) -> Vec<(&'static str, bool, Direction, Vec<u8>)> {
    let sandbox = [10, 200, 0, 2];
    // Rule m has the tcp/443 shape, m + 2 udp/53, m + 3 an IPv6 /48 with
    // any protocol on ports 3000-3999.
    let m = (n / 2) & !3;
    let inside = in_rule4(m, 77);
    let v6_rule = (0x2001_0db8u128 << 96) | (((m + 3) as u128) << 80);
    let (me6, peer6) = (Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2), Ipv6Addr::from(v6_rule | 0x77));
    vec![
        (
            "egress allowed, established tcp/443 (rules only)",
            true,
            Direction::Egress,
            ip4(6, sandbox, inside, 40000, 443, ACK),
        ),
        ("egress allowed, IPv6 tcp/3000 (rules only)", true, Direction::Egress, tcp6(me6, peer6, 40000, 3000, ACK)),
        ("egress denied (no CIDR)", true, Direction::Egress, ip4(6, sandbox, [192, 0, 2, 1], 40000, 443, ACK)),
        ("egress denied (CIDR, wrong port)", true, Direction::Egress, ip4(6, sandbox, inside, 40000, 444, ACK)),
        ("egress allowed, TCP SYN (opens a flow)", false, Direction::Egress, ip4(6, sandbox, inside, 40001, 443, SYN)),
        (
            "egress allowed, udp/53 (opens a flow)",
            false,
            Direction::Egress,
            ip4(17, sandbox, in_rule4(m + 2, 53), 40002, 53, 0),
        ),
        ("ingress reply of an allowed flow", false, Direction::Ingress, ip4(6, inside, sandbox, 443, 40001, SYN | ACK)),
    ]
}

struct Loaded {
    progs: BTreeMap<Direction, LoadedProg>,
    _maps: Vec<OwnedFd>,
}

fn load(set: &XdpPrograms) -> Result<Loaded> {
    let mut maps = BTreeMap::new();
    for spec in &set.maps {
        let fd = sys::map_create_flags(
            spec.map_type,
            spec.key_size,
            spec.value_size,
            spec.max_entries,
            spec.flags,
            &spec.name,
        )
        .with_context(|| format!("creating map {}", spec.name))?;
        for (k, v) in &spec.entries {
            sys::map_update(fd.as_fd(), k, v, sys::BPF_ANY)?;
        }
        maps.insert(spec.name.clone(), fd);
    }
    let mut progs = BTreeMap::new();
    for d in [Direction::Egress, Direction::Ingress] {
        let prog = set.get(d);
        let mut enc = prog.encoded.clone();
        for name in prog.maps() {
            enc.bind_map(name, maps[name].as_raw_fd())?;
        }
        progs.insert(d, sys::prog_load(BPF_PROG_TYPE_XDP, &enc.insns, c"GPL", d.name())?);
    }
    Ok(Loaded { progs, _maps: maps.into_values().collect() })
}

/// "processed N insns" from a verifier log.
fn verified_insns(log: &str) -> Option<u64> {
    let at = log.rfind("processed ")?;
    log[at + 10..].split_whitespace().next()?.parse().ok()
}

/// One measured (program, frame) pair.
struct Row {
    rules: usize,
    /// Index into the compiled sets.
    set: usize,
    design: &'static str,
    what: &'static str,
    /// Decided by the rules alone (the target applies).
    rules_only: bool,
    direction: Direction,
    frame: Vec<u8>,
    expect: u32,
    samples: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

pub fn run(h: &Harness) -> Result<Vec<Case>> {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench xdp needs root (BPF_PROG_LOAD, BPF_PROG_TEST_RUN); run it as root");
    }
    let floor_enc = encode(&[Insn::mov64_imm(Reg::R0, XDP_PASS as i32), Insn::exit()])?;
    let floor = sys::prog_load(BPF_PROG_TYPE_XDP, &floor_enc.insns, c"GPL", "phantom_floor")?;

    // (rules, design, options): the default; at 1,000 rules the same
    // without the flow cache (every flow-opening packet looks the map up,
    // as the first packet of a flow does); and the earlier LPM design
    // (without the cache) as a peer where it applied.
    let no_cache = Options { flow_cache_slots: 0, ..Options::default() };
    let configs: Vec<(usize, &'static str, Options)> = SIZES
        .iter()
        .flat_map(|&n| {
            let mut v = vec![(n, "search", Options::default())];
            if n == 1000 {
                v.push((n, "search, no flow cache", no_cache.clone()));
            }
            if n >= 100 {
                v.push((n, "LPM trie", Options { large_sets: LargeSets::LpmTrie, ..no_cache.clone() }));
            }
            v
        })
        .collect();
    let mut sets = Vec::new();
    let mut loaded = Vec::new();
    let mut rows = Vec::new();
    for (i, (n, design, opts)) in configs.iter().enumerate() {
        let net = policy(*n);
        let set = compile_network(&net, &Locator::new(&["bench.yaml".into()]), opts)?
            .context("allowlist policy compiles to XDP programs")?;
        let mut reference = Reference::new(&net);
        for (what, rules_only, direction, frame) in packets(*n) {
            let expect = match reference.run(direction, &frame).verdict() {
                Verdict::Pass => XDP_PASS,
                Verdict::Drop => XDP_DROP,
            };
            rows.push(Row {
                rules: *n,
                set: i,
                design,
                what,
                rules_only,
                direction,
                frame,
                expect,
                samples: Vec::new(),
            });
        }
        loaded.push(load(&set)?);
        sets.push(set);
    }
    let mut floor_samples = Vec::new();
    let rounds = 9;
    h.note(&format!("  {rounds} rounds of {} programs x BPF_PROG_TEST_RUN repeat {REPEAT}", rows.len() + 1));
    for round in 0..rounds {
        let r = sys::prog_test_run_repeat(floor.fd.as_fd(), &rows[0].frame, REPEAT)?;
        floor_samples.push(f64::from(r.duration_ns));
        for row in &mut rows {
            let prog = &loaded[row.set].progs[&row.direction];
            let r = sys::prog_test_run_repeat(prog.fd.as_fd(), &row.frame, REPEAT)?;
            if r.retval != row.expect {
                bail!(
                    "{} rules ({}), {}: the program returned {}, the reference says {}",
                    row.rules,
                    row.design,
                    row.what,
                    r.retval,
                    row.expect
                );
            }
            row.samples.push(f64::from(r.duration_ns));
        }
        h.note(&format!("  round {}: floor {} ns", round + 1, floor_samples.last().copied().unwrap_or(0.0)));
    }
    let floor_ns = median(&floor_samples);

    let mut table = Vec::new();
    let mut json_rows = Vec::new();
    let mut worst_1000: f64 = 0.0;
    let mut first_packet_1000: f64 = 0.0;
    let mut lpm_1000: f64 = 0.0;
    for row in &rows {
        let prog = sets[row.set].get(row.direction);
        let verified = verified_insns(&loaded[row.set].progs[&row.direction].log.0);
        let strategy = if prog.strategy[0] == prog.strategy[1] {
            prog.strategy[0].name().to_string()
        } else {
            format!("v4 {}, v6 {}", prog.strategy[0].name(), prog.strategy[1].name())
        };
        let (med, lo) = (median(&row.samples), min(&row.samples));
        if row.rules == 1000 && row.direction == Direction::Egress {
            match (row.design, row.rules_only) {
                ("search", _) => worst_1000 = worst_1000.max(med),
                ("search, no flow cache", false) => first_packet_1000 = first_packet_1000.max(med),
                ("LPM trie", _) => lpm_1000 = lpm_1000.max(med),
                _ => {}
            }
        }
        table.push(vec![
            row.rules.to_string(),
            row.design.to_string(),
            row.what.to_string(),
            if row.expect == XDP_PASS { "PASS" } else { "DROP" }.to_string(),
            strategy.to_string(),
            prog.encoded.insns.len().to_string(),
            verified.map_or("?".into(), |v| v.to_string()),
            format!("{med:.0}"),
            format!("{lo:.0}"),
            format!("{:.2}x", med / floor_ns.max(1.0)),
            format!("{:.0}", med - floor_ns),
        ]);
        json_rows.push(json!({
            "rules": row.rules, "design": row.design, "rules_only": row.rules_only, "packet": row.what, "direction": format!("{:?}", row.direction),
            "verdict": if row.expect == XDP_PASS { "pass" } else { "drop" }, "strategy": strategy,
            "slots": prog.encoded.insns.len(), "verifier_processed_insns": verified,
            "ns_median": med, "ns_min": lo, "samples_ns": row.samples,
            "ratio_to_floor": med / floor_ns.max(1.0),
        }));
    }
    let peer = ["iptables", "nft"].iter().any(|tool| {
        std::process::Command::new(tool)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let peer_note = if peer {
        "iptables/nftables is installed but not measured: a same-size rule set needs a veth pair and traffic \
         generation, which this bench does not set up."
    } else {
        "Peer not measured: neither iptables nor nft is installed on this host."
    };
    h.section(Section {
        title: format!(
            "XDP ns per packet (BPF_PROG_TEST_RUN, repeat {REPEAT}, median of {rounds} interleaved rounds); floor: \
             an XDP program returning XDP_PASS = {floor_ns:.0} ns"
        ),
        columns: ["rules", "design", "packet", "verdict", "strategy", "slots", "verified", "ns/pkt", "min", "x floor", "- floor"]
            .iter()
            .map(|c| c.to_string())
            .collect(),
        rows: table,
        notes: vec![
            "rules: egress rules of one CIDR each (3/4 IPv4 /24, 1/4 IPv6 /48), four (protocol, ports) shapes; \
             design `search`: straight-line compares up to 4 CIDRs per family, the compiled binary search above; \
             `LPM trie`: the earlier design (an LPM-trie lookup above 4 CIDRs, no flow cache), same run."
                .into(),
            "(opens a flow): a TCP SYN or a UDP datagram records its flow. Repeated, it is the same flow again: \
             with the per-CPU flow cache a hit skips the map; `no flow cache` shows what the first packet of a \
             flow pays (one LRU-hash lookup; the insert happens once). Established TCP packets never touch the map."
                .into(),
            "slots: program size in 8-byte instructions; verified: instructions the verifier processed (all paths)."
                .into(),
            "ns/pkt is the kernel's average over `repeat` runs, which includes the test-run loop itself (see the \
             floor); `- floor` is the program's own cost."
                .into(),
            peer_note.into(),
        ],
        json: json!({ "repeat": REPEAT, "rounds": rounds, "floor_ns_median": floor_ns, "floor_samples_ns": floor_samples, "rows": json_rows, "peer": peer_note }),
    });
    h.check(
        format!("xdp <= {TARGET_NS:.0} ns/packet with 1,000 CIDR rules"),
        worst_1000 <= TARGET_NS,
        format!(
            "worst egress case at 1,000 rules: {worst_1000:.0} ns median ({:.2}x the floor of {floor_ns:.0} ns; \
             the LPM-trie design: {lpm_1000:.0} ns); the first packet of a new flow (flow-map lookup, no cache \
             hit): {first_packet_1000:.0} ns",
            worst_1000 / floor_ns.max(1.0)
        ),
    );
    Ok(Vec::new())
}
