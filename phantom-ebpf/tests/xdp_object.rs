//! The XDP programs as one ELF object ([`phantom_ebpf::xdp::object`]):
//! libbpf (`bpftool prog loadall`) and aya 0.14 both load the two programs
//! of a 1,000-CIDR policy (compiled searches) and of the LPM-trie design,
//! with their maps, and the kernel's copy carries the policy lines. A
//! program loaded through aya still judges frames as the reference does.
//! Needs root and bpftool; a refusal fails the test (never a skip).
mod bpftool;
use bpftool::bpftool;

mod xdp_common;

use phantom_ebpf::bpf::sys;
use phantom_ebpf::netprog::Locator;
use phantom_ebpf::xdp::reference::{Reference, Verdict};
use phantom_ebpf::xdp::{
    compile_network, object, AddrStrategy, Direction, LargeSets, Options, XdpPrograms, FLOW_CACHE_MAP,
    FLOW_CACHE_REVALIDATE, FLOW_MAP, XDP_DROP, XDP_PASS,
};
use std::os::fd::AsFd;
use std::path::PathBuf;
use xdp_common::*;

const POLICY_PATH: &str = "policies/xdp-large.yaml";

/// A policy text long enough for every rule line, each line naming itself.
fn policy_text() -> String {
    (1..=5200).map(|l| format!("# policy line {l}\n")).collect()
}

fn compile(opts: &Options) -> (phantom_dsl::ir::NetworkPolicy, XdpPrograms) {
    let net = large_policy(1000, 100, 20);
    let set = compile_network(&net, &Locator::new(&[POLICY_PATH.into()]), opts).unwrap().unwrap();
    (net, set)
}

/// A pin directory and an object file, both removed on drop.
struct Scratch {
    pins: PathBuf,
    obj: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.pins) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.pins);
        let _ = std::fs::remove_file(&self.obj);
    }
}

#[test]
fn bpftool_loads_both_programs_with_policy_lines() {
    for (tag, opts) in
        [("search", Options::default()), ("lpm", Options { large_sets: LargeSets::LpmTrie, ..Options::default() })]
    {
        let (_, set) = compile(&opts);
        let bytes = object(&set, &[(POLICY_PATH.into(), policy_text())]).unwrap();
        let id = std::process::id();
        let s = Scratch {
            pins: PathBuf::from(format!("/sys/fs/bpf/phantom-xdp-{tag}-{id}")),
            obj: std::env::temp_dir().join(format!("phantom-xdp-{tag}-{id}.o")),
        };
        std::fs::write(&s.obj, &bytes).unwrap();
        let pins = s.pins.to_str().unwrap();
        bpftool(&["prog", "loadall", s.obj.to_str().unwrap(), pins]);
        for d in [Direction::Egress, Direction::Ingress] {
            let pin = format!("{pins}/{}", d.name());
            let show = bpftool(&["prog", "show", "pinned", &pin]);
            assert!(show.contains("xdp") && show.contains(d.name()) && show.contains("btf_id"), "{tag}: {show}");
            let xlated = bpftool(&["prog", "dump", "xlated", "pinned", &pin, "linum"]);
            assert!(xlated.contains(&format!("int {}(struct xdp_md * ctx):", d.name())), "{tag}: {xlated}");
            // The first rule (line 10) of each direction's CIDRs: egress 10,
            // ingress 5000, with its text.
            let line = if d == Direction::Egress { 10 } else { 5000 };
            let needle = format!("# policy line {line} [file:{POLICY_PATH} line_num:{line} line_col:5]");
            assert!(xlated.contains(&needle), "{tag} {d:?}: no `{needle}` in\n{xlated}");
            assert!(xlated.contains("map[id:"), "{tag}: the flow map was relocated");
        }
    }
}

#[test]
fn aya_loads_both_programs_and_they_judge_as_the_reference() {
    let (net, set) = compile(&Options::default());
    assert_eq!(set.egress.strategy, [AddrStrategy::Search, AddrStrategy::Search]);
    let bytes = object(&set, &[]).unwrap();
    let mut ebpf = aya::Ebpf::load(&bytes).unwrap_or_else(|e| panic!("aya parses and creates maps: {e:?}"));
    assert!(ebpf.map(FLOW_MAP).is_some(), "aya created the flow map");
    for d in [Direction::Egress, Direction::Ingress] {
        let xdp: &mut aya::programs::Xdp = ebpf.program_mut(d.name()).expect("program").try_into().expect("XDP");
        xdp.load().unwrap_or_else(|e| panic!("the kernel accepts {} through aya: {e:?}", d.name()));
    }
    // Rule 0 (line 10): tcp/443 to 10.0.0.0/24 ... 10.0.18.0/24 among others.
    let mut reference = Reference::new(&net);
    let pkt = |dst: &str, dport: u16| Pkt::tcp("10.200.0.2", dst, 40000, dport, TCP_SYN);
    let cases = [(pkt("10.0.2.9", 443), Direction::Egress), (pkt("10.0.2.9", 444), Direction::Egress)];
    let mut verdicts = Vec::new();
    for (p, d) in &cases {
        let f = frame(p);
        let want = match reference.run(*d, &f).verdict() {
            Verdict::Pass => XDP_PASS,
            Verdict::Drop => XDP_DROP,
        };
        let xdp: &aya::programs::Xdp = ebpf.program(d.name()).unwrap().try_into().unwrap();
        let got = sys::prog_test_run_repeat(xdp.fd().unwrap().as_fd(), &f, 1).unwrap().retval;
        assert_eq!(got, want, "{d:?} {p:?}");
        verdicts.push(got);
    }
    assert_eq!(verdicts, [XDP_PASS, XDP_DROP], "one allowed, one denied");
    // The reply of the allowed SYN gets in through the aya-loaded pair.
    let reply = frame(&cases[0].0.reply());
    let xdp: &aya::programs::Xdp = ebpf.program(Direction::Ingress.name()).unwrap().try_into().unwrap();
    assert_eq!(sys::prog_test_run_repeat(xdp.fd().unwrap().as_fd(), &reply, 1).unwrap().retval, XDP_PASS);
}

/// Pins the calling thread to CPU 0, so that successive test runs see the
/// same per-CPU flow cache.
fn pin_to_cpu0() {
    // SAFETY: cpu_set_t is plain data, zeroed is a valid empty set;
    // sched_setaffinity reads `size_of` bytes from it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

/// The per-CPU flow cache answers for a flow this CPU found in (or put
/// into) the flow map, in both directions, but asks the map again on every
/// FLOW_CACHE_REVALIDATE-th hit of the slot: a flow the map lost (here
/// removed through aya, as an LRU eviction would) is answered from the
/// cache for at most that many packets, then replies are dropped until an
/// opener records the flow again.
#[test]
fn a_flow_the_map_lost_is_served_from_the_cache_for_a_bounded_number_of_packets() {
    pin_to_cpu0();
    let net = allowlist(
        vec![xdp_common::rule(&["192.0.2.0/24"], &[(53, 53)], phantom_dsl::values::Protocol::Udp, 3)],
        vec![],
    );
    let set = compile_network(&net, &Locator::new(&[POLICY_PATH.into()]), &Options::default()).unwrap().unwrap();
    assert!(set.map(FLOW_CACHE_MAP).is_some());
    let mut ebpf = aya::Ebpf::load(&object(&set, &[]).unwrap()).unwrap();
    for d in [Direction::Egress, Direction::Ingress] {
        let xdp: &mut aya::programs::Xdp = ebpf.program_mut(d.name()).unwrap().try_into().unwrap();
        xdp.load().unwrap_or_else(|e| panic!("{}: {e:?}", d.name()));
    }
    let query = Pkt {
        src: "10.200.0.2".parse().unwrap(),
        dst: "192.0.2.53".parse().unwrap(),
        proto: 17,
        sport: 41000,
        dport: 53,
        icmp_type: 0,
        icmp_id: 0,
        frag: Frag::None,
        ihl: 5,
        ext: Vec::new(),
        tcp_flags: 0,
    };
    let run = |ebpf: &aya::Ebpf, d: Direction, p: &Pkt, repeat: u32| -> u32 {
        let xdp: &aya::programs::Xdp = ebpf.program(d.name()).unwrap().try_into().unwrap();
        sys::prog_test_run_repeat(xdp.fd().unwrap().as_fd(), &frame(p), repeat).unwrap().retval
    };
    let flows = |ebpf: &mut aya::Ebpf| -> Vec<[u8; 40]> {
        let map: aya::maps::HashMap<_, [u8; 40], u64> =
            aya::maps::HashMap::try_from(ebpf.map_mut(FLOW_MAP).unwrap()).unwrap();
        map.keys().map(|k| k.unwrap()).collect()
    };
    let period = FLOW_CACHE_REVALIDATE as u32;
    // Recorded: the map holds the flow, the slot holds its key (count 0).
    assert_eq!(run(&ebpf, Direction::Egress, &query, 1), XDP_PASS);
    let recorded = flows(&mut ebpf);
    assert_eq!(recorded.len(), 1);
    {
        let mut map: aya::maps::HashMap<_, [u8; 40], u64> =
            aya::maps::HashMap::try_from(ebpf.map_mut(FLOW_MAP).unwrap()).unwrap();
        map.remove(&recorded[0]).unwrap();
    }
    // Hits 1 .. period - 1 answer from the cache and leave the map alone:
    // a reply, period - 3 openers, a reply.
    assert_eq!(run(&ebpf, Direction::Ingress, &query.reply(), 1), XDP_PASS);
    assert_eq!(run(&ebpf, Direction::Egress, &query, period - 3), XDP_PASS);
    assert_eq!(run(&ebpf, Direction::Ingress, &query.reply(), 1), XDP_PASS);
    assert!(flows(&mut ebpf).is_empty(), "cache hits skipped the map");
    // Hit `period` asks the map, which lost the flow: the reply is dropped
    // and the slot forgets the key; so is the next reply (a plain miss).
    assert_eq!(run(&ebpf, Direction::Ingress, &query.reply(), 1), XDP_DROP);
    assert_eq!(run(&ebpf, Direction::Ingress, &query.reply(), 1), XDP_DROP);
    // An opener records the flow again, and replies get in.
    assert_eq!(run(&ebpf, Direction::Egress, &query, 1), XDP_PASS);
    assert_eq!(flows(&mut ebpf), recorded);
    assert_eq!(run(&ebpf, Direction::Ingress, &query.reply(), 1), XDP_PASS);
    // Without a cache, every opener looks the map up.
    let set = compile_network(
        &net,
        &Locator::new(&[POLICY_PATH.into()]),
        &Options { flow_cache_slots: 0, ..Options::default() },
    )
    .unwrap()
    .unwrap();
    let names: Vec<&str> = set.maps.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [FLOW_MAP, phantom_ebpf::xdp::REFUSALS_MAP, phantom_ebpf::audit::RINGBUF_MAP],
        "no cache: the flow map, the refusal counter and the audit ring only"
    );
}

/// Refused packets leave audit records in the object's ring buffer
/// (docs/audit.md), sampled per CPU: the first refusal and every
/// REFUSAL_RECORD_EVERY-th after it, each with layer xdp, the direction as
/// hook, the peer's address and port and the protocol as detail; allowed
/// packets and frames dropped by parsing leave none and are not counted.
#[test]
fn refusals_are_recorded_in_the_ring_buffer() {
    use phantom_ebpf::audit::{AuditRecord, Layer, Object, Verdict, NO_RULE, RINGBUF_MAP};
    use phantom_ebpf::xdp::REFUSAL_RECORD_EVERY;
    pin_to_cpu0();
    let net = allowlist(
        vec![xdp_common::rule(
            &["192.0.2.0/24", "2001:db8::/32"],
            &[(443, 443)],
            phantom_dsl::values::Protocol::Tcp,
            3,
        )],
        vec![],
    );
    let set = compile_network(&net, &Locator::new(&[POLICY_PATH.into()]), &Options::default()).unwrap().unwrap();
    let mut ebpf = aya::Ebpf::load(&object(&set, &[]).unwrap()).unwrap();
    for d in [Direction::Egress, Direction::Ingress] {
        let xdp: &mut aya::programs::Xdp = ebpf.program_mut(d.name()).unwrap().try_into().unwrap();
        xdp.load().unwrap_or_else(|e| panic!("{}: {e:?}", d.name()));
    }
    let mut ring = aya::maps::RingBuf::try_from(ebpf.take_map(RINGBUF_MAP).expect("the audit ring")).unwrap();
    let run = |ebpf: &aya::Ebpf, d: Direction, frame: &[u8], repeat: u32| -> u32 {
        let xdp: &aya::programs::Xdp = ebpf.program(d.name()).unwrap().try_into().unwrap();
        sys::prog_test_run_repeat(xdp.fd().unwrap().as_fd(), frame, repeat).unwrap().retval
    };
    let pkt = |dst: &str, dport: u16| {
        Pkt::tcp(if dst.contains(':') { "fd70:6861:6e74::2" } else { "10.200.0.2" }, dst, 40000, dport, TCP_SYN)
    };
    let mut records = || {
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            out.push(AuditRecord::decode(&item).unwrap());
        }
        out
    };
    assert_eq!(run(&ebpf, Direction::Egress, &frame(&pkt("192.0.2.9", 443)), 1), XDP_PASS);
    let mut other = vec![0u8; 12];
    other.extend([0x12, 0x34]); // an EtherType the programs do not pass
    other.extend([0u8; 46]);
    assert_eq!(run(&ebpf, Direction::Egress, &other, 1), XDP_DROP);
    assert!(records().is_empty(), "neither an allowed packet nor a parse drop is recorded");

    let rest = (REFUSAL_RECORD_EVERY - 1) as u32;
    let wrong_port = frame(&pkt("192.0.2.9", 444));
    // Refusal 0 is recorded, 1 ..= 63 are only counted.
    assert_eq!(run(&ebpf, Direction::Egress, &frame(&pkt("198.51.100.7", 443)), 1), XDP_DROP);
    assert_eq!(run(&ebpf, Direction::Egress, &wrong_port, rest), XDP_DROP);
    // Refusal 64 (IPv6) is recorded; then 63 more are not.
    assert_eq!(run(&ebpf, Direction::Egress, &frame(&pkt("2001:db9::1", 443)), 1), XDP_DROP);
    assert_eq!(run(&ebpf, Direction::Egress, &wrong_port, rest), XDP_DROP);
    // Refusal 128: an unsolicited packet into the sandbox (the counter is
    // shared by both programs).
    let mut inbound = pkt("10.200.0.2", 8080);
    inbound.src = "203.0.113.5".parse().unwrap();
    inbound.sport = 5555;
    assert_eq!(run(&ebpf, Direction::Ingress, &frame(&inbound), 1), XDP_DROP);
    let r = records();
    let got: Vec<(u16, Object, u32)> = r.iter().map(|r| (r.hook, r.object.clone(), r.detail)).collect();
    assert_eq!(
        got,
        [
            (1, Object::Inet4 { addr: [198, 51, 100, 7], port: 443 }, 6),
            (1, Object::Inet6 { addr: "2001:db9::1".parse::<std::net::Ipv6Addr>().unwrap().octets(), port: 443 }, 6),
            (2, Object::Inet4 { addr: [203, 0, 113, 5], port: 5555 }, 6),
        ]
    );
    for r in &r {
        assert_eq!(
            (r.layer, r.verdict, r.rule, r.sandbox, r.pid),
            (Layer::Xdp.code(), Verdict::Deny.code(), NO_RULE, 0, 0)
        );
        assert!(r.time_ns > 0);
    }
}
