//! Shared by the XDP tests: policies, frame builders, random frames biased
//! to rule boundaries, and loading both programs with their maps.
// Reason: each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use phantom_dsl::ir::{NetMode, NetRule, NetworkPolicy};
use phantom_dsl::values::{Cidr, PortRange, Protocol};
use phantom_ebpf::bpf::sys::{self, LoadedProg};
use phantom_ebpf::xdp::{Direction, XdpPrograms, BPF_PROG_TYPE_XDP};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

#[macro_use]
#[path = "../gen/mod.rs"]
mod gen;
pub use gen::*;

pub fn allowlist(egress: Vec<NetRule>, ingress: Vec<NetRule>) -> NetworkPolicy {
    NetworkPolicy { mode: NetMode::Allowlist, egress, ingress, bind: Vec::new() }
}

pub fn random_cidr(rng: &mut Rng, v4: bool) -> Cidr {
    if v4 {
        let prefix = pick!(rng, [0u8, 8, 12, 16, 20, 24, 24, 27, 30, 31, 32, 32, 32]);
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let base = pick!(rng, [0x0a00_0000u32, 0xc633_6400, 0xcb00_7100, rng.next() as u32]);
        let a = (base | (rng.next() as u32 & 0x00ff_ffff)) & mask;
        Cidr { addr: IpAddr::V4(Ipv4Addr::from(a)), prefix }
    } else {
        let prefix = pick!(rng, [0u8, 16, 32, 48, 56, 63, 64, 96, 100, 127, 128, 128]);
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        let base = pick!(rng, [0x2001_0db8u128 << 96, 0xfd00u128 << 112, (u128::from(rng.next()) << 64) | 7]);
        let a = (base | u128::from(rng.next() as u32)) & mask;
        Cidr { addr: IpAddr::V6(Ipv6Addr::from(a)), prefix }
    }
}

fn random_ports(rng: &mut Rng) -> Vec<PortRange> {
    (0..1 + rng.below(3))
        .map(|_| {
            let a = 1 + rng.below(65535) as u16;
            let b = if rng.chance(50) { a } else { a.saturating_add(rng.below(2000) as u16) };
            PortRange { start: a, end: b }
        })
        .collect()
}

/// `n` random rules of up to `max_cidrs` CIDRs each.
pub fn random_rules(rng: &mut Rng, n: usize, max_cidrs: usize, line: u32) -> Vec<NetRule> {
    (0..n)
        .map(|i| {
            let protocol = pick!(rng, [Protocol::Tcp, Protocol::Udp, Protocol::Icmp, Protocol::Any]);
            let ncidr = rng.below(max_cidrs as u64 + 1) as usize;
            let cidrs = (0..ncidr)
                .map(|_| {
                    let v4 = rng.chance(60);
                    random_cidr(rng, v4)
                })
                .collect();
            let ports = if protocol != Protocol::Icmp && rng.chance(60) { random_ports(rng) } else { Vec::new() };
            let mut r = NetRule { cidrs, ports, protocol, origin: origin(line + i as u32) };
            if r.cidrs.is_empty() && r.ports.is_empty() && r.protocol == Protocol::Any {
                r.protocol = Protocol::Udp;
            }
            r
        })
        .collect()
}

/// A policy with `egress_cidrs` distinct egress CIDRs (3/4 IPv4 /24s and
/// /32s, 1/4 IPv6 /48s) spread over rules of a few (protocol, ports)
/// shapes, and `ingress_cidrs` ingress CIDRs.
pub fn large_policy(egress_cidrs: usize, ingress_cidrs: usize, per_rule: usize) -> NetworkPolicy {
    let shapes: [(Protocol, &[(u16, u16)]); 6] = [
        (Protocol::Tcp, &[(443, 443)]),
        (Protocol::Tcp, &[(80, 80), (8080, 8089)]),
        (Protocol::Udp, &[(53, 53)]),
        (Protocol::Icmp, &[]),
        (Protocol::Any, &[(3000, 3999)]),
        (Protocol::Any, &[]),
    ];
    let cidr_n = |i: usize| -> Cidr {
        if i % 4 == 3 {
            let a = (0x2001_0db8u128 << 96) | ((i as u128) << 80);
            Cidr { addr: IpAddr::V6(Ipv6Addr::from(a)), prefix: 48 }
        } else if i % 8 == 1 {
            Cidr { addr: IpAddr::V4(Ipv4Addr::new(172, 16 + (i / 256 % 16) as u8, (i % 256) as u8, 9)), prefix: 32 }
        } else {
            Cidr { addr: IpAddr::V4(Ipv4Addr::new(10, (i / 256) as u8, (i % 256) as u8, 0)), prefix: 24 }
        }
    };
    let make = |count: usize, offset: usize, line: u32| -> Vec<NetRule> {
        (0..count.div_ceil(per_rule))
            .map(|r| {
                let (protocol, ports) = shapes[r % shapes.len()];
                let cidrs = (r * per_rule..((r + 1) * per_rule).min(count)).map(|i| cidr_n(i + offset)).collect();
                NetRule {
                    cidrs,
                    ports: ports.iter().map(|&(start, end)| PortRange { start, end }).collect(),
                    protocol,
                    origin: origin(line + r as u32),
                }
            })
            .collect()
    };
    allowlist(make(egress_cidrs, 0, 10), make(ingress_cidrs, 5000, 5000))
}

// ------------------------------------------------------------ frames

/// How an IP packet is fragmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    None,
    /// MF set, offset 0 (IPv6: a fragment header with offset 0).
    First,
    /// Offset (in 8-byte units) != 0.
    Later(u16),
}

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// An IP packet to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub icmp_type: u8,
    pub icmp_id: u16,
    pub frag: Frag,
    /// IPv4: IHL (5..=15); options are zero bytes.
    pub ihl: u8,
    /// IPv6: extension headers (next-header numbers) before the transport
    /// header (after the fragment header, if any).
    pub ext: Vec<u8>,
    /// TCP flags (byte 13 of the header): SYN 0x02, ACK 0x10, ...
    pub tcp_flags: u8,
}

impl Pkt {
    /// A plain TCP packet (no options, no fragment, no extension header).
    pub fn tcp(src: &str, dst: &str, sport: u16, dport: u16, tcp_flags: u8) -> Pkt {
        Pkt {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: 6,
            sport,
            dport,
            icmp_type: 0,
            icmp_id: 0,
            frag: Frag::None,
            ihl: 5,
            ext: Vec::new(),
            tcp_flags,
        }
    }

    pub fn v6(&self) -> bool {
        self.src.is_ipv6()
    }

    /// The reply a peer (or the sandbox) would send.
    pub fn reply(&self) -> Pkt {
        let mut r = self.clone();
        std::mem::swap(&mut r.src, &mut r.dst);
        std::mem::swap(&mut r.sport, &mut r.dport);
        r.icmp_type = match self.icmp_type {
            8 => 0,
            128 => 129,
            t => t,
        };
        r.frag = Frag::None;
        r.tcp_flags = match self.tcp_flags {
            TCP_SYN => TCP_SYN | TCP_ACK,
            _ => TCP_ACK,
        };
        r
    }
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn transport(p: &Pkt) -> Vec<u8> {
    let mut t = Vec::new();
    match p.proto {
        6 | 17 => {
            t.extend(p.sport.to_be_bytes());
            t.extend(p.dport.to_be_bytes());
            if p.proto == 6 {
                t.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, p.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
            } else {
                t.extend(16u16.to_be_bytes());
                t.extend([0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x11, 0x22]);
            }
        }
        1 | 58 => {
            t.extend([p.icmp_type, 0, 0, 0]);
            t.extend(p.icmp_id.to_be_bytes());
            t.extend([0, 1, 0xde, 0xad, 0xbe, 0xef]);
        }
        _ => t.extend([0x11u8; 12]),
    }
    t
}

/// The Ethernet frame of `p`.
pub fn frame(p: &Pkt) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    let l4 = transport(p);
    if !p.v6() {
        f.extend(0x0800u16.to_be_bytes());
        let opts = 4 * usize::from(p.ihl.saturating_sub(5));
        let total = (20 + opts + l4.len()) as u16;
        let frag: u16 = match p.frag {
            Frag::None => 0x4000,
            Frag::First => 0x2000,
            Frag::Later(off) => 0x2000 | (off & 0x1fff),
        };
        f.push(0x40 | (p.ihl & 0xf));
        f.push(0);
        f.extend(total.to_be_bytes());
        f.extend([0x12, 0x34]);
        f.extend(frag.to_be_bytes());
        f.extend([64, p.proto, 0, 0]);
        f.extend(octets(p.src));
        f.extend(octets(p.dst));
        f.extend(std::iter::repeat_n(1u8, opts));
    } else {
        f.extend(0x86ddu16.to_be_bytes());
        let mut chain: Vec<u8> = Vec::new();
        if p.frag != Frag::None {
            chain.push(44);
        }
        chain.extend(&p.ext);
        chain.push(p.proto);
        let hdrs = 8 * (chain.len() - 1);
        f.extend([0x60, 0, 0, 0]);
        f.extend(((hdrs + l4.len()) as u16).to_be_bytes());
        f.push(chain[0]);
        f.push(64);
        f.extend(octets(p.src));
        f.extend(octets(p.dst));
        for (i, &h) in chain.iter().enumerate().take(chain.len() - 1) {
            let next = chain[i + 1];
            if h == 44 && i == 0 && p.frag != Frag::None {
                let off: u16 = match p.frag {
                    Frag::Later(o) => (o & 0x1fff) << 3 | 1,
                    _ => 1,
                };
                f.extend([next, 0]);
                f.extend(off.to_be_bytes());
                f.extend([0, 0, 0x12, 0x34]);
            } else {
                f.extend([next, 0, 1, 4, 0, 0, 0, 0]);
            }
        }
    }
    f.extend(l4);
    f
}

pub fn arp_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend([0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
    f.extend([0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend([0u8; 20]);
    f
}

// ------------------------------------------------------------ loading

/// Both programs loaded with their maps; everything closes on drop.
#[derive(Debug)]
pub struct Loaded {
    pub egress: LoadedProg,
    pub ingress: LoadedProg,
    pub maps: BTreeMap<String, OwnedFd>,
}

impl Loaded {
    pub fn new(set: &XdpPrograms) -> Loaded {
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
            .unwrap_or_else(|e| panic!("map {}: {e}", spec.name));
            for (k, v) in &spec.entries {
                sys::map_update(fd.as_fd(), k, v, sys::BPF_ANY).unwrap();
            }
            maps.insert(spec.name.clone(), fd);
        }
        let load = |d: Direction| {
            let prog = set.get(d);
            let mut enc = prog.encoded.clone();
            for name in prog.maps() {
                enc.bind_map(name, maps[name].as_raw_fd()).unwrap();
            }
            sys::prog_load(BPF_PROG_TYPE_XDP, &enc.insns, c"GPL", d.name()).unwrap_or_else(|e| {
                panic!("{d:?}: {e}\nprogram:\n{}", phantom_ebpf::bpf::disasm::disassemble(&enc).unwrap())
            })
        };
        let (egress, ingress) = (load(Direction::Egress), load(Direction::Ingress));
        Loaded { egress, ingress, maps }
    }

    pub fn prog(&self, d: Direction) -> &LoadedProg {
        match d {
            Direction::Egress => &self.egress,
            Direction::Ingress => &self.ingress,
        }
    }

    /// One `BPF_PROG_TEST_RUN`: the XDP action.
    pub fn run(&self, d: Direction, frame: &[u8]) -> u32 {
        sys::prog_test_run_repeat(self.prog(d).fd.as_fd(), frame, 1)
            .unwrap_or_else(|e| panic!("test run of {} bytes: {e}", frame.len()))
            .retval
    }

    /// Kernel ids of every object, for the leak check.
    pub fn ids(&self) -> Vec<(&'static str, u32)> {
        let mut v = vec![
            ("prog_id", sys::object_id(self.egress.fd.as_fd()).unwrap()),
            ("prog_id", sys::object_id(self.ingress.fd.as_fd()).unwrap()),
        ];
        v.extend(self.maps.values().map(|m| ("map_id", sys::object_id(m.as_fd()).unwrap())));
        v
    }
}

/// How many fds of this process refer to the BPF object with `key`
/// (`prog_id` or `map_id`) `id`.
pub fn open_fds(key: &str, id: u32) -> usize {
    let wanted = format!("{key}:\t{id}");
    std::fs::read_dir("/proc/self/fdinfo")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|info| info.lines().any(|l| l == wanted))
        .count()
}
