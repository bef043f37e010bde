//! The reference interpreter of the XDP programs: raw frame bytes in,
//! PASS or DROP out, written from the IR semantics (the module docs of
//! [`super`]) with [`Cidr::contains`](phantom_dsl::values::Cidr::contains)
//! and [`PortRange::contains`](phantom_dsl::values::PortRange::contains),
//! never the code generator's tables, and a plain set as the flow table.
//!
//! It keeps the flow state the programs keep in their LRU map, so a
//! sequence of frames run through both must get the same verdicts, as long
//! as the real map never evicts (tests size it well above the flows they
//! open).

use super::{flow_key, Direction, FLOW_KEY_SIZE};
use crate::netprog::reference::unmap;
use phantom_dsl::ir::{NetRule, NetworkPolicy};
use phantom_dsl::values::Protocol;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Pass,
    Drop,
}

/// Why: for test messages and statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Shorter than a header it needs, or a bad version / IHL.
    Malformed,
    Arp,
    NeighbourDiscovery,
    OtherEtherType,
    /// A non-first fragment.
    Fragment,
    /// An IPv6 extension header other than one fragment header.
    ExtensionHeader,
    /// The rule at this index of the direction's rules matched.
    Rule(usize),
    /// No rule matched, but the packet answers a recorded flow.
    Flow,
    /// No rule matched and no flow.
    NoMatch,
}

impl Reason {
    pub fn verdict(self) -> Verdict {
        match self {
            Reason::Arp | Reason::NeighbourDiscovery | Reason::Rule(_) | Reason::Flow => Verdict::Pass,
            _ => Verdict::Drop,
        }
    }
}

/// What the parser extracts from an IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub v6: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The transport protocol (after one IPv6 fragment header).
    pub protocol: u8,
    /// (source, destination) ports for TCP and UDP.
    pub ports: Option<(u16, u16)>,
    /// (type, identifier) for ICMP in IPv4 and ICMPv6 in IPv6.
    pub icmp: Option<(u8, u16)>,
    /// TCP: the SYN flag is set.
    pub syn: bool,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses a frame as the programs do: `Ok` for an IP packet to judge,
/// `Err` with the reason of a verdict reached while parsing.
pub fn parse(f: &[u8]) -> Result<Packet, Reason> {
    if f.len() < 14 {
        return Err(Reason::Malformed);
    }
    let (v6, l4, protocol, src, dst) = match be16(f, 12) {
        0x0806 => return Err(Reason::Arp),
        0x0800 => {
            if f.len() < 34 || f[14] >> 4 != 4 || f[14] & 0xf < 5 {
                return Err(Reason::Malformed);
            }
            if be16(f, 20) & 0x1fff != 0 {
                return Err(Reason::Fragment);
            }
            let l4 = 14 + 4 * usize::from(f[14] & 0xf);
            if l4 > f.len() {
                return Err(Reason::Malformed);
            }
            let addr = |at: usize| IpAddr::V4(Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]));
            (false, l4, f[23], addr(26), addr(30))
        }
        0x86dd => {
            if f.len() < 54 || f[14] >> 4 != 6 {
                return Err(Reason::Malformed);
            }
            let (mut l4, mut nh) = (54, f[20]);
            if nh == 44 {
                if f.len() < 62 {
                    return Err(Reason::Malformed);
                }
                if be16(f, 56) & 0xfff8 != 0 {
                    return Err(Reason::Fragment);
                }
                (l4, nh) = (62, f[54]);
            }
            let addr = |at: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&f[at..at + 16]).unwrap()));
            (true, l4, nh, addr(22), addr(38))
        }
        _ => return Err(Reason::OtherEtherType),
    };
    let need = |n: usize| if l4 + n > f.len() { Err(Reason::Malformed) } else { Ok(()) };
    let mut p = Packet { v6, src, dst, protocol, ports: None, icmp: None, syn: false };
    match protocol {
        TCP | UDP => {
            need(if protocol == TCP { 20 } else { 8 })?;
            p.ports = Some((be16(f, l4), be16(f, l4 + 2)));
            p.syn = protocol == TCP && f[l4 + 13] & 0x02 != 0;
        }
        ICMP if !v6 => {
            need(8)?;
            p.icmp = Some((f[l4], be16(f, l4 + 4)));
        }
        ICMPV6 if v6 => {
            need(8)?;
            if (133..=136).contains(&f[l4]) {
                return Err(Reason::NeighbourDiscovery);
            }
            p.icmp = Some((f[l4], be16(f, l4 + 4)));
        }
        nh if v6 && super::codegen::IPV6_EXT_HEADERS.contains(&nh) => return Err(Reason::ExtensionHeader),
        _ => {}
    }
    Ok(p)
}

fn proto_matches(rule: Protocol, proto: u8) -> bool {
    match rule {
        Protocol::Tcp => proto == TCP,
        Protocol::Udp => proto == UDP,
        Protocol::Icmp => proto == ICMP || proto == ICMPV6,
        Protocol::Any => true,
    }
}

/// The index of the first rule matching (peer address, destination port,
/// protocol); `port` is `None` without a port.
pub fn rule_match(rules: &[NetRule], peer: IpAddr, port: Option<u16>, proto: u8) -> Option<usize> {
    let peer = unmap(peer);
    rules.iter().position(|r| {
        proto_matches(r.protocol, proto)
            && (r.ports.is_empty() || port.is_some_and(|p| r.ports.iter().any(|pr| pr.contains(p))))
            && (r.cidrs.is_empty() || r.cidrs.iter().any(|c| c.contains(peer)))
    })
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The flow key of a packet seen in direction `dir`, if it is a TCP or UDP
/// packet, or an ICMP echo message of type `echo_type(v6)`.
fn key(p: &Packet, dir: Direction, echo_type: fn(bool) -> u8) -> Option<[u8; FLOW_KEY_SIZE]> {
    let (local, remote) = match dir {
        Direction::Egress => (p.src, p.dst),
        Direction::Ingress => (p.dst, p.src),
    };
    let (lport, rport) = match (p.ports, p.icmp) {
        (Some((s, d)), _) => match dir {
            Direction::Egress => (s, d),
            Direction::Ingress => (d, s),
        },
        (None, Some((ty, id))) if ty == echo_type(p.v6) => (id, 0),
        _ => return None,
    };
    Some(flow_key(p.v6, p.protocol, lport, rport, &octets(local), &octets(remote)))
}

fn echo_request(v6: bool) -> u8 {
    if v6 {
        128
    } else {
        8
    }
}

fn echo_reply(v6: bool) -> u8 {
    if v6 {
        129
    } else {
        0
    }
}

/// The policy's verdicts, with the flow table.
#[derive(Debug, Clone)]
pub struct Reference {
    egress: Vec<NetRule>,
    ingress: Vec<NetRule>,
    /// Flow key -> the direction that opened it.
    flows: BTreeMap<[u8; FLOW_KEY_SIZE], Direction>,
}

impl Reference {
    pub fn new(net: &NetworkPolicy) -> Reference {
        Reference { egress: net.egress.clone(), ingress: net.ingress.clone(), flows: BTreeMap::new() }
    }

    /// Judges a frame arriving at the program of direction `dir`, updating
    /// the flow table as the program does.
    pub fn run(&mut self, dir: Direction, frame: &[u8]) -> Reason {
        let p = match parse(frame) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let (rules, peer) = match dir {
            Direction::Egress => (&self.egress, p.dst),
            Direction::Ingress => (&self.ingress, p.src),
        };
        if let Some(i) = rule_match(rules, peer, p.ports.map(|(_, d)| d), p.protocol) {
            // A TCP flow is opened by a SYN only; UDP by any packet.
            let opens = p.protocol != TCP || p.syn;
            if let Some(k) = key(&p, dir, echo_request).filter(|_| opens) {
                self.flows.entry(k).or_insert(dir);
            }
            return Reason::Rule(i);
        }
        match key(&p, dir, echo_reply) {
            Some(k) if self.flows.contains_key(&k) => Reason::Flow,
            _ => Reason::NoMatch,
        }
    }

    /// The recorded flows and who opened them.
    pub fn flows(&self) -> &BTreeMap<[u8; FLOW_KEY_SIZE], Direction> {
        &self.flows
    }

    /// Forgets every flow (a fresh map).
    pub fn clear_flows(&mut self) {
        self.flows.clear();
    }
}
