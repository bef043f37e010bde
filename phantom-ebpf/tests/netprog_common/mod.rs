//! Shared by the cgroup program tests: policies, random inputs, context
//! buffers and a runner over the interpreter.
// Reason: each test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub mod cgroup_env;
#[path = "../ebpf_interp/mod.rs"]
pub mod ebpf_interp;
#[macro_use]
#[path = "../gen/mod.rs"]
mod gen;
pub use gen::*;

use cgroup_env::{run, Lpm};
use phantom_dsl::ir::{
    BindRule, DeviceAccess, DevicePolicy, DeviceRule, DeviceType, NetMode, NetRule, NetworkPolicy, Policy,
};
use phantom_dsl::values::{Cidr, PortRange, Protocol};
use phantom_ebpf::netprog::{CgroupProgram, BPF_MAP_TYPE_RINGBUF};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

pub fn load_policy(name: &str) -> Policy {
    let p = repo_root().join("policies").join(name);
    let c = phantom_dsl::compile_file(&p).expect("readable policy");
    c.policy.unwrap_or_else(|| panic!("{}: {:#?}", p.display(), c.diagnostics.items))
}

pub fn allowlist(egress: Vec<NetRule>, bind: Vec<BindRule>) -> NetworkPolicy {
    NetworkPolicy { mode: NetMode::Allowlist, egress, ingress: Vec::new(), bind }
}

fn random_cidr(rng: &mut Rng, v4: bool) -> Cidr {
    if v4 {
        let prefix = pick!(rng, [0u8, 8, 12, 16, 20, 24, 27, 30, 31, 32, 32, 32]);
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let base = pick!(rng, [0x7f00_0000u32, 0x0a00_0000, 0xc633_6400, rng.next() as u32]);
        let a = (base | (rng.next() as u32 & 0x00ff_ffff)) & mask;
        Cidr { addr: IpAddr::V4(Ipv4Addr::from(a)), prefix }
    } else {
        let prefix = pick!(rng, [0u8, 16, 32, 48, 56, 63, 64, 96, 100, 127, 128, 128]);
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        let base = pick!(
            rng,
            [0x2001_0db8u128 << 96, 1, 0xfe80u128 << 112, (u128::from(rng.next()) << 64) | u128::from(rng.next())]
        );
        let a = (base | u128::from(rng.next() as u32)) & mask;
        Cidr { addr: IpAddr::V6(Ipv6Addr::from(a)), prefix }
    }
}

fn random_ports(rng: &mut Rng) -> Vec<PortRange> {
    (0..1 + rng.below(3))
        .map(|_| {
            let a = 1 + rng.below(65535) as u16;
            if rng.chance(50) {
                PortRange { start: a, end: a }
            } else {
                let b = a.saturating_add(rng.below(2000) as u16);
                PortRange { start: a, end: b }
            }
        })
        .collect()
}

/// A random allowlist policy with `n` egress rules of up to `max_cidrs`
/// CIDRs each, and a few bind rules.
pub fn random_network(rng: &mut Rng, n: usize, max_cidrs: usize) -> NetworkPolicy {
    let mut egress = Vec::new();
    for i in 0..n {
        let protocol = pick!(rng, [Protocol::Tcp, Protocol::Udp, Protocol::Icmp, Protocol::Any]);
        let ncidr = rng.below(max_cidrs as u64 + 1) as usize;
        let cidrs = (0..ncidr)
            .map(|_| {
                let v4 = rng.chance(60);
                random_cidr(rng, v4)
            })
            .collect();
        let ports = if protocol != Protocol::Icmp && rng.chance(60) { random_ports(rng) } else { Vec::new() };
        let mut r = NetRule { cidrs, ports, protocol, origin: origin(10 + i as u32) };
        if r.cidrs.is_empty() && r.ports.is_empty() && r.protocol == Protocol::Any {
            r.protocol = Protocol::Udp;
        }
        egress.push(r);
    }
    let bind = (0..rng.below(3))
        .map(|i| BindRule {
            ports: random_ports(rng),
            protocol: pick!(rng, [Protocol::Tcp, Protocol::Udp, Protocol::Any]),
            origin: origin(100 + i as u32),
        })
        .collect();
    allowlist(egress, bind)
}

pub fn random_devices(rng: &mut Rng) -> DevicePolicy {
    let allow = (0..rng.below(6))
        .map(|i| {
            let mut access = std::collections::BTreeSet::new();
            for a in [DeviceAccess::Read, DeviceAccess::Write, DeviceAccess::Mknod] {
                if rng.chance(50) {
                    access.insert(a);
                }
            }
            DeviceRule {
                kind: pick!(rng, [DeviceType::Char, DeviceType::Block, DeviceType::Any]),
                major: rng.chance(80).then(|| rng.below(12) as u32),
                minor: rng.chance(70).then(|| rng.below(12) as u32),
                access,
                origin: origin(200 + i as u32),
            }
        })
        .collect();
    DevicePolicy { allow }
}

/// Addresses worth testing against `net`: the edges of every CIDR, just
/// outside them, and random ones; IPv6 includes v4-mapped forms.
pub fn random_addr(rng: &mut Rng, net: &NetworkPolicy, v6: bool) -> IpAddr {
    let cidrs: Vec<&Cidr> = net.egress.iter().flat_map(|r| &r.cidrs).collect();
    let from_rule = !cidrs.is_empty() && rng.chance(75);
    let v4addr = |rng: &mut Rng| -> Ipv4Addr {
        let v4s: Vec<&&Cidr> = cidrs.iter().filter(|c| c.is_v4()).collect();
        if from_rule && !v4s.is_empty() {
            let c = rng.pick(&v4s);
            let base = match c.addr {
                IpAddr::V4(a) => u32::from(a),
                _ => unreachable!(),
            };
            let size = 1u64 << (32 - c.prefix);
            let a = match rng.below(5) {
                0 => base as u64,
                1 => base as u64 + size - 1,
                2 => (base as u64 + size) & 0xffff_ffff,
                3 => (base as u64).wrapping_sub(1) & 0xffff_ffff,
                _ => base as u64 + rng.below(size),
            };
            Ipv4Addr::from(a as u32)
        } else {
            Ipv4Addr::from(pick!(rng, [rng.next() as u32, 0x7f00_0001, 0]))
        }
    };
    if !v6 {
        return IpAddr::V4(v4addr(rng));
    }
    if rng.chance(25) {
        return IpAddr::V6(v4addr(rng).to_ipv6_mapped());
    }
    let v6s: Vec<&&Cidr> = cidrs.iter().filter(|c| !c.is_v4()).collect();
    let a = if from_rule && !v6s.is_empty() {
        let c = rng.pick(&v6s);
        let base = match c.addr {
            IpAddr::V6(a) => u128::from(a),
            _ => unreachable!(),
        };
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
        pick!(rng, [(u128::from(rng.next()) << 64) | u128::from(rng.next()), 1, 0])
    };
    IpAddr::V6(Ipv6Addr::from(a))
}

pub fn random_port(rng: &mut Rng, net: &NetworkPolicy) -> u16 {
    let edges: Vec<u16> = net
        .egress
        .iter()
        .flat_map(|r| &r.ports)
        .chain(net.bind.iter().flat_map(|b| &b.ports))
        .flat_map(|p| [p.start, p.end, p.start.wrapping_sub(1), p.end.wrapping_add(1)])
        .collect();
    if !edges.is_empty() && rng.chance(70) {
        *rng.pick(&edges)
    } else {
        pick!(rng, [0, rng.next() as u16, 443, 53])
    }
}

pub fn random_proto(rng: &mut Rng) -> u32 {
    pick!(rng, [6, 6, 17, 17, 1, 58, 0, 132, 255, rng.next() as u32 & 0xff])
}

/// `struct bpf_sock_addr` (72 bytes).
pub fn sock_addr_ctx(addr: IpAddr, port: u16, proto: u32) -> Vec<u8> {
    let mut c = vec![0u8; 72];
    match addr {
        IpAddr::V4(a) => {
            c[0..4].copy_from_slice(&2u32.to_ne_bytes());
            c[4..8].copy_from_slice(&a.octets());
            c[28..32].copy_from_slice(&2u32.to_ne_bytes());
        }
        IpAddr::V6(a) => {
            c[0..4].copy_from_slice(&10u32.to_ne_bytes());
            c[8..24].copy_from_slice(&a.octets());
            c[28..32].copy_from_slice(&10u32.to_ne_bytes());
        }
    }
    c[24..26].copy_from_slice(&port.to_be_bytes());
    let ty: u32 = if proto == 6 { 1 } else { 2 };
    c[32..36].copy_from_slice(&ty.to_ne_bytes());
    c[36..40].copy_from_slice(&proto.to_ne_bytes());
    c
}

/// `struct bpf_sock` (first 80 bytes).
pub fn sock_ctx(family: u32, ty: u32, proto: u32) -> Vec<u8> {
    let mut c = vec![0u8; 80];
    c[4..8].copy_from_slice(&family.to_ne_bytes());
    c[8..12].copy_from_slice(&ty.to_ne_bytes());
    c[12..16].copy_from_slice(&proto.to_ne_bytes());
    c
}

/// `struct bpf_cgroup_dev_ctx`.
pub fn dev_ctx(access_type: u32, major: u32, minor: u32) -> Vec<u8> {
    [access_type, major, minor].iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// A program with its maps bound to fake fds, ready for the interpreter.
pub struct Runnable {
    pub bytes: Vec<u8>,
    pub maps: BTreeMap<i32, Lpm>,
    /// The audit ring buffer's fd (unused by programs that send nothing).
    pub ringbuf_fd: i32,
}

impl Runnable {
    pub fn new(prog: &CgroupProgram, set: &phantom_ebpf::netprog::CgroupPrograms) -> Runnable {
        let mut enc = prog.encoded.clone();
        let (mut maps, mut ringbuf_fd) = (BTreeMap::new(), -1);
        for (i, name) in prog.maps().into_iter().enumerate() {
            let fd = 1000 + i as i32;
            enc.bind_map(name, fd).unwrap();
            let spec = set.map(name).unwrap_or_else(|| panic!("map {name} missing"));
            if spec.map_type == BPF_MAP_TYPE_RINGBUF {
                ringbuf_fd = fd;
            } else {
                maps.insert(fd, Lpm { key_size: spec.key_size as usize, entries: spec.entries.clone() });
            }
        }
        Runnable { bytes: enc.to_bytes(), maps, ringbuf_fd }
    }

    /// (verdict, instructions executed)
    pub fn run(&self, ctx: &mut [u8]) -> (bool, usize) {
        let (verdict, steps, _) = self.run_recorded(ctx);
        (verdict, steps)
    }

    /// [`Runnable::run`] and the audit records sent; a denial sends
    /// exactly one, an allowed action none.
    pub fn run_recorded(&self, ctx: &mut [u8]) -> (bool, usize, Vec<Vec<u8>>) {
        let out = run(&self.bytes, ctx, &self.maps, self.ringbuf_fd).unwrap_or_else(|e| panic!("interpreter: {e}"));
        assert!(out.r0 <= 1, "return value {}", out.r0);
        assert_eq!(out.records.len(), usize::from(out.r0 == 0), "records of a {} verdict", out.r0);
        (out.r0 == 1, out.steps, out.records)
    }
}
