//! The reference interpreter: what the network and device policy means,
//! written as plainly as possible from the IR (using [`Cidr::contains`] and
//! [`PortRange::contains`], never the code generator's tables), so that
//! the generated programs can be checked against it on random inputs.
//!
//! The semantics are spelled out in the module docs of [`super`].

use super::codegen::{
    AF_INET, AF_INET6, DEFAULT_DEVICES, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_RAW,
    SOCK_STREAM,
};
use super::Options;
use phantom_dsl::ir::{DeviceAccess, DevicePolicy, DeviceType, NetRule, NetworkPolicy};
use phantom_dsl::values::Protocol;
use std::net::{IpAddr, Ipv6Addr};

/// `BPF_DEVCG_DEV_BLOCK` / `BPF_DEVCG_DEV_CHAR`.
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;
/// `BPF_DEVCG_ACC_*`.
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;

/// The policy's verdicts.
#[derive(Debug, Clone)]
pub struct Reference {
    net: NetworkPolicy,
    egress: Vec<NetRule>,
    dev: DevicePolicy,
    opts: Options,
}

fn proto_matches(rule: Protocol, proto: u32) -> bool {
    match rule {
        Protocol::Tcp => proto == IPPROTO_TCP as u32,
        Protocol::Udp => proto == IPPROTO_UDP as u32,
        Protocol::Icmp => proto == IPPROTO_ICMP as u32 || proto == IPPROTO_ICMPV6 as u32,
        Protocol::Any => true,
    }
}

fn port_matches(rule: &NetRule, proto: u32, port: u16) -> bool {
    rule.ports.is_empty()
        || ((proto == IPPROTO_TCP as u32 || proto == IPPROTO_UDP as u32) && rule.ports.iter().any(|r| r.contains(port)))
}

fn addr_matches(rule: &NetRule, addr: IpAddr) -> bool {
    rule.cidrs.is_empty() || rule.cidrs.iter().any(|c| c.contains(addr))
}

/// `::ffff:a.b.c.d` -> `a.b.c.d`; everything else unchanged.
pub fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        },
        v4 => v4,
    }
}

impl Reference {
    pub fn new(net: &NetworkPolicy, dev: &DevicePolicy, opts: &Options) -> Reference {
        Reference { net: net.clone(), egress: net.egress.clone(), dev: dev.clone(), opts: opts.clone() }
    }

    /// connect4/6 and sendmsg4/6: may the sandbox send to `addr`:`port`
    /// over IP protocol `proto`? The index of the first matching egress
    /// rule, or `None` (deny).
    pub fn egress_rule(&self, addr: IpAddr, port: u16, proto: u32) -> Option<usize> {
        let addr = unmap(addr);
        self.egress
            .iter()
            .position(|r| proto_matches(r.protocol, proto) && port_matches(r, proto, port) && addr_matches(r, addr))
    }

    pub fn egress(&self, addr: IpAddr, port: u16, proto: u32) -> bool {
        self.egress_rule(addr, port, proto).is_some()
    }

    /// bind4/6.
    pub fn bind(&self, port: u16, proto: u32) -> bool {
        port == 0
            || self.net.bind.iter().any(|b| {
                proto_matches(b.protocol, proto)
                    && (proto == IPPROTO_TCP as u32 || proto == IPPROTO_UDP as u32)
                    && b.ports.iter().any(|r| r.contains(port))
            })
    }

    fn needs(&self, want: Protocol) -> bool {
        let protos = self.net.egress.iter().chain(&self.net.ingress).map(|r| r.protocol);
        protos.chain(self.net.bind.iter().map(|b| b.protocol)).any(|p| p == want || p == Protocol::Any)
    }

    /// cgroup/sock_create on (family, type, protocol) as the kernel resolved
    /// them.
    pub fn sock_create(&self, family: u32, ty: u32, proto: u32) -> bool {
        let (family, ty, proto) = (family as i32, ty as i32, proto as i32);
        if family != AF_INET && family != AF_INET6 {
            return true;
        }
        let icmp_of_family =
            (family == AF_INET && proto == IPPROTO_ICMP) || (family == AF_INET6 && proto == IPPROTO_ICMPV6);
        match ty {
            SOCK_STREAM => proto == IPPROTO_TCP && self.needs(Protocol::Tcp),
            SOCK_DGRAM if proto == IPPROTO_UDP => self.needs(Protocol::Udp),
            SOCK_DGRAM => icmp_of_family && self.needs(Protocol::Icmp),
            SOCK_RAW => self.opts.raw_sockets && icmp_of_family && self.needs(Protocol::Icmp),
            _ => false,
        }
    }

    /// cgroup/dev on `access_type` (type in the low 16 bits, access kinds in
    /// the high 16), major, minor.
    pub fn device(&self, access_type: u32, major: u32, minor: u32) -> bool {
        let (ty, requested) = (access_type & 0xffff, access_type >> 16);
        let kind_matches = |k: DeviceType| match k {
            DeviceType::Char => ty == DEV_CHAR,
            DeviceType::Block => ty == DEV_BLOCK,
            DeviceType::Any => true,
        };
        let mut named = false;
        let mut granted = 0u32;
        for r in &self.dev.allow {
            if kind_matches(r.kind) && r.major.is_none_or(|m| m == major) && r.minor.is_none_or(|m| m == minor) {
                named = true;
                for a in &r.access {
                    granted |= match a {
                        DeviceAccess::Mknod => ACC_MKNOD,
                        DeviceAccess::Read => ACC_READ,
                        DeviceAccess::Write => ACC_WRITE,
                    };
                }
            }
        }
        let policy_names_it = self.dev.allow.iter().any(|r| {
            r.kind != DeviceType::Block && r.major.is_none_or(|m| m == major) && r.minor.is_none_or(|m| m == minor)
        });
        let is_default = DEFAULT_DEVICES.iter().any(|&(ma, mi, _)| ma == major && mi == minor);
        if ty == DEV_CHAR && is_default && !policy_names_it {
            named = true;
            granted |= ACC_READ | ACC_WRITE;
        }
        named && requested & !granted == 0
    }
}

/// The IPv6 address of `bpf_sock_addr.user_ip6` words as loaded (network
/// order bytes).
pub fn ipv6_of(bytes: [u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(bytes))
}
