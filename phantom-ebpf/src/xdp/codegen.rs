//! Instruction selection for the XDP programs (layout and strategy in the
//! module docs of [`super`]).
//!
//! Code is emitted through [`Gen`], which hands out unique labels, lets
//! several labels name one instruction, and finally drops instructions no
//! path reaches (the verifier refuses unreachable code, and a rule that
//! matches everything makes the rules after it unreachable).

use super::search::{self, Intervals, Member};
use super::{
    AddrStrategy, Direction, LargeSets, Options, XdpError, XdpProgram, XdpPrograms, FLOW_KEY_SIZE, FLOW_MAP, XDP_DROP,
    XDP_PASS,
};
use crate::bpf::{encode, Helper, Insn, Op, Reg, Reg::*, SourceLoc, Target};
use crate::netprog::{Locator, MapSpec};
use phantom_dsl::ir::{NetRule, NetworkPolicy};
use phantom_dsl::values::{Cidr, PortRange, Protocol};
use std::collections::HashMap;
use std::net::IpAddr;

const IPPROTO_ICMP: i32 = 1;
const IPPROTO_TCP: i32 = 6;
const IPPROTO_UDP: i32 = 17;
const IPPROTO_ICMPV6: i32 = 58;
/// Stands for every protocol the rules cannot tell apart (not 1, 6, 17, 58).
const PROTO_OTHER: i32 = 255;
/// IPv6 extension headers that end parsing with a DROP when found where the
/// transport header should be (44 only after the one fragment header parsed).
pub(crate) const IPV6_EXT_HEADERS: [u8; 10] = [0, 43, 44, 51, 60, 135, 139, 140, 253, 254];

// EtherTypes as a little-endian u16 load of the network-order field sees them.
const ETH_P_IP_LE: i32 = 0x0008;
const ETH_P_IPV6_LE: i32 = 0xdd86;
const ETH_P_ARP_LE: i32 = 0x0608;

const PASS: &str = "pass";
/// The flow-recording and flow-answering code after the key is built.
const RECORD: &str = "record";
const ANSWER: &str = "answer";
const DROP: &str = "drop";
/// The rules refused the packet and no flow answers it: audit record, drop.
const REFUSED: &str = "refused";

// Stack layout (offsets from r10).
const FLOW_KEY: i16 = -(FLOW_KEY_SIZE as i16);
const FLOW_VALUE: i16 = -48;
const LPM_KEY: i16 = -72;
/// The IP version of the frame (4 or 6) while the shared IPv4 search runs.
const FAMILY_SLOT: i16 = -80;
/// The flow cache's slot index (u32).
const CACHE_INDEX: i16 = -88;
/// The audit record of a refusal (header + an inet6 object: 82 bytes).
const RECORD_AT: i16 = -176;
/// The key (0) of the per-CPU refusal counter.
const REFUSALS_KEY: i16 = -184;
/// One refusal in this many, per CPU, is recorded (the first included).
pub(crate) const RECORD_EVERY: i32 = 64;

/// The registers holding the address words (host order) in straight-line mode.
const ADDR_REGS: [Reg; 4] = [R2, R3, R4, R5];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fam {
    V4,
    V6,
}

impl Fam {
    fn of(c: &Cidr) -> Fam {
        if c.is_v4() {
            Fam::V4
        } else {
            Fam::V6
        }
    }
    fn words(self) -> usize {
        match self {
            Fam::V4 => 1,
            Fam::V6 => 4,
        }
    }
    fn icmp(self) -> i32 {
        match self {
            Fam::V4 => IPPROTO_ICMP,
            Fam::V6 => IPPROTO_ICMPV6,
        }
    }
    fn echo_request(self) -> i32 {
        match self {
            Fam::V4 => 8,
            Fam::V6 => 128,
        }
    }
    fn echo_reply(self) -> i32 {
        match self {
            Fam::V4 => 0,
            Fam::V6 => 129,
        }
    }
    /// Frame offsets of the source and destination addresses.
    fn src(self) -> i16 {
        match self {
            Fam::V4 => 26,
            Fam::V6 => 22,
        }
    }
    fn dst(self) -> i16 {
        match self {
            Fam::V4 => 30,
            Fam::V6 => 38,
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Fam::V4 => "4",
            Fam::V6 => "6",
        }
    }
}

/// An instruction list under construction.
pub(super) struct Gen {
    insns: Vec<Insn>,
    pending: Vec<String>,
    aliases: HashMap<String, String>,
    next_id: usize,
    /// The policy position the next emitted instructions carry.
    pub(super) loc: Option<SourceLoc>,
}

impl Gen {
    fn new() -> Gen {
        Gen { insns: Vec::new(), pending: Vec::new(), aliases: HashMap::new(), next_id: 0, loc: None }
    }

    pub(super) fn fresh(&mut self, what: &str) -> String {
        self.next_id += 1;
        format!("{what}.{}", self.next_id)
    }

    /// Names the next emitted instruction.
    pub(super) fn bind(&mut self, label: impl Into<String>) {
        self.pending.push(label.into());
    }

    pub(super) fn emit(&mut self, insn: Insn) {
        let mut insn = match &self.loc {
            Some(l) => insn.at(l.clone()),
            None => insn,
        };
        if !self.pending.is_empty() {
            let canon = self.pending[0].clone();
            for alias in self.pending.drain(1..) {
                self.aliases.insert(alias, canon.clone());
            }
            self.pending.clear();
            insn = insn.label(canon);
        }
        self.insns.push(insn);
    }

    /// Resolves label aliases and removes unreachable instructions.
    fn finish(mut self) -> Vec<Insn> {
        assert!(self.pending.is_empty(), "labels {:?} name no instruction", self.pending);
        for insn in &mut self.insns {
            if let Op::Jmp { target: Target::Label(l), .. } | Op::Ja { target: Target::Label(l) } = &mut insn.op {
                if let Some(c) = self.aliases.get(l.as_str()) {
                    *l = c.clone();
                }
            }
        }
        let index: HashMap<String, usize> =
            self.insns.iter().enumerate().filter_map(|(i, x)| x.meta.label.clone().map(|l| (l, i))).collect();
        // Jump threading: a jump to a `goto X` jumps to X (the `goto` often
        // becomes unreachable below). Chains are followed, at most n hops.
        let goto_of = |l: &str| match index.get(l).map(|&i| &self.insns[i].op) {
            Some(Op::Ja { target: Target::Label(m) }) => Some(m.clone()),
            _ => None,
        };
        let threaded: Vec<Option<String>> = self
            .insns
            .iter()
            .map(|insn| match &insn.op {
                Op::Jmp { target: Target::Label(l), .. } | Op::Ja { target: Target::Label(l) } => {
                    let mut to = l.clone();
                    for _ in 0..self.insns.len() {
                        match goto_of(&to) {
                            Some(m) if m != to => to = m,
                            _ => break,
                        }
                    }
                    (&to != l).then_some(to)
                }
                _ => None,
            })
            .collect();
        for (insn, to) in self.insns.iter_mut().zip(threaded) {
            if let (Some(to), Op::Jmp { target: Target::Label(l), .. } | Op::Ja { target: Target::Label(l) }) =
                (to, &mut insn.op)
            {
                *l = to;
            }
        }
        let n = self.insns.len();
        let mut reach = vec![false; n];
        let mut todo = vec![0usize];
        while let Some(i) = todo.pop() {
            if i >= n || reach[i] {
                continue;
            }
            reach[i] = true;
            match &self.insns[i].op {
                Op::Exit => {}
                Op::Ja { target: Target::Label(l) } => todo.extend(index.get(l.as_str())),
                Op::Jmp { target: Target::Label(l), .. } => {
                    todo.extend(index.get(l.as_str()));
                    todo.push(i + 1);
                }
                _ => todo.push(i + 1),
            }
        }
        let kept: Vec<Insn> = self.insns.into_iter().zip(reach).filter(|(_, r)| *r).map(|(i, _)| i).collect();
        // A `goto` to the very next instruction does nothing: after the
        // threading above no jump targets a `goto`, so it can go.
        let index: HashMap<&str, usize> =
            kept.iter().enumerate().filter_map(|(i, x)| x.meta.label.as_deref().map(|l| (l, i))).collect();
        let noop: Vec<bool> = kept
            .iter()
            .enumerate()
            .map(|(i, x)| matches!(&x.op, Op::Ja { target: Target::Label(l) } if index.get(l.as_str()) == Some(&(i + 1))))
            .collect();
        kept.into_iter().zip(noop).filter(|(_, n)| !n).map(|(i, _)| i).collect()
    }
}

/// Sorted, merged port ranges (the same set of ports).
fn normalize(ports: &[PortRange]) -> Vec<PortRange> {
    let mut v = ports.to_vec();
    v.sort();
    let mut out: Vec<PortRange> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(last) if u32::from(r.start) <= u32::from(last.end) + 1 => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Falls through when protocol (r7) and port (r8) match, jumps to `next`
/// otherwise. `false` (nothing emitted) when the rule can never match.
pub(super) fn proto_ports(g: &mut Gen, protocol: Protocol, ports: &[PortRange], next: &str) -> bool {
    match protocol {
        Protocol::Tcp => g.emit(Insn::jne_imm(R7, IPPROTO_TCP, next)),
        Protocol::Udp => g.emit(Insn::jne_imm(R7, IPPROTO_UDP, next)),
        Protocol::Icmp => {
            if !ports.is_empty() {
                return false;
            }
            let ok = g.fresh("icmp");
            g.emit(Insn::jeq_imm(R7, IPPROTO_ICMP, ok.as_str()));
            g.emit(Insn::jne_imm(R7, IPPROTO_ICMPV6, next));
            g.bind(ok);
        }
        Protocol::Any => {}
    }
    if !ports.is_empty() {
        if protocol == Protocol::Any {
            let ok = g.fresh("l4");
            g.emit(Insn::jeq_imm(R7, IPPROTO_TCP, ok.as_str()));
            g.emit(Insn::jne_imm(R7, IPPROTO_UDP, next));
            g.bind(ok);
        }
        let hit = g.fresh("port");
        for r in normalize(ports) {
            if r.start == r.end {
                g.emit(Insn::jeq_imm(R8, i32::from(r.start), hit.as_str()));
            } else {
                let skip = g.fresh("range");
                g.emit(Insn::jlt_imm(R8, i32::from(r.start), skip.as_str()));
                g.emit(Insn::jle_imm(R8, i32::from(r.end), hit.as_str()));
                g.bind(skip);
            }
        }
        g.emit(Insn::ja(next));
        g.bind(hit);
    }
    true
}

fn addr_words(c: &Cidr) -> Vec<u32> {
    match c.addr {
        IpAddr::V4(a) => vec![u32::from(a)],
        IpAddr::V6(a) => a.segments().chunks(2).map(|s| (u32::from(s[0]) << 16) | u32::from(s[1])).collect(),
    }
}

/// `if addr (ADDR_REGS, host order) in c goto allow`, else fall through.
fn cidr_test(g: &mut Gen, c: &Cidr, allow: &str) {
    let words = addr_words(c);
    let bits: Vec<u32> = (0..words.len()).map(|w| u32::from(c.prefix).saturating_sub(32 * w as u32).min(32)).collect();
    let Some(last) = bits.iter().rposition(|&b| b > 0) else {
        g.emit(Insn::ja(allow));
        return;
    };
    let miss = g.fresh("miss");
    for w in 0..=last {
        let mask = u32::MAX.checked_shl(32 - bits[w]).unwrap_or(0);
        let net = (words[w] & mask) as i32;
        let reg = if bits[w] == 32 {
            ADDR_REGS[w]
        } else {
            g.emit(Insn::mov32_reg(R0, ADDR_REGS[w]));
            g.emit(Insn::and32_imm(R0, mask as i32));
            R0
        };
        if w == last {
            g.emit(Insn::jeq32_imm(reg, net, allow));
        } else {
            g.emit(Insn::jne32_imm(reg, net, miss.as_str()));
        }
    }
    g.bind(miss);
}

/// Rules with CIDRs of one family grouped by (protocol, ports): one bit of
/// the LPM value each.
#[derive(Debug, Clone)]
pub(super) struct Class {
    pub(super) protocol: Protocol,
    pub(super) ports: Vec<PortRange>,
    pub(super) cidrs: Vec<Cidr>,
    pub(super) loc: Option<SourceLoc>,
}

fn classes(rules: &[NetRule], fam: Fam, locator: &Locator) -> Vec<Class> {
    let mut out: Vec<Class> = Vec::new();
    for r in rules {
        let cidrs: Vec<Cidr> = r.cidrs.iter().copied().filter(|c| Fam::of(c) == fam).collect();
        if cidrs.is_empty() || (r.protocol == Protocol::Icmp && !r.ports.is_empty()) {
            continue;
        }
        let ports = normalize(&r.ports);
        match out.iter_mut().find(|c| c.protocol == r.protocol && c.ports == ports) {
            Some(c) => c.cidrs.extend(cidrs),
            None => out.push(Class { protocol: r.protocol, ports, cidrs, loc: locator.loc(&r.origin) }),
        }
    }
    out
}

/// The LPM trie of one family's classes: key prefixlen + address, value
/// the bitmap of the classes containing the longest matching prefix.
fn lpm_map(name: &str, fam: Fam, classes: &[Class]) -> MapSpec {
    let groups: Vec<&[Cidr]> = classes.iter().map(|k| k.cidrs.as_slice()).collect();
    crate::netprog::lpm::trie(name, fam == Fam::V6, &groups)
}

/// The CIDRs of one family in the classes of [`classes`], each with its
/// class, its rule's index and location, for [`search::flatten`].
fn members<'a>(rules: &'a [NetRule], fam: Fam, classes: &[Class], locator: &Locator) -> Vec<Member<'a>> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let ports = normalize(&r.ports);
        let Some(class) = classes.iter().position(|c| c.protocol == r.protocol && c.ports == ports) else {
            continue;
        };
        for cidr in r.cidrs.iter().filter(|c| Fam::of(c) == fam) {
            out.push(Member { cidr, class, rule: i, loc: locator.loc(&r.origin) });
        }
    }
    out
}

/// How a family with many CIDRs is judged.
enum Table {
    /// (map name, classes): one LPM trie lookup.
    Lpm(String, Vec<Class>),
    /// A compiled binary search over the flattened intervals.
    Search(Intervals, Vec<Class>),
}

/// How one family's rules are tested in one direction.
struct FamilyRules<'a> {
    rules: &'a [NetRule],
    /// `None`: straight-line compares per rule.
    table: Option<Table>,
}

impl FamilyRules<'_> {
    fn strategy(&self) -> AddrStrategy {
        match self.table {
            None => AddrStrategy::StraightLine,
            Some(Table::Lpm(..)) => AddrStrategy::LpmTrie,
            Some(Table::Search(..)) => AddrStrategy::Search,
        }
    }
}

/// The rules of one family on the peer address at frame offset `peer`:
/// jumps to `allow` on a match, to `deny` otherwise.
fn family_part(g: &mut Gen, fam: Fam, peer: i16, fr: &FamilyRules<'_>, locator: &Locator, allow: &str, deny: &str) {
    let of_fam = |r: &NetRule| r.cidrs.iter().filter(|c| Fam::of(c) == fam).copied().collect::<Vec<Cidr>>();
    match &fr.table {
        None => {
            if fr.rules.iter().any(|r| !of_fam(r).is_empty()) {
                for (k, &reg) in ADDR_REGS.iter().enumerate().take(fam.words()) {
                    g.emit(Insn::ldx_w(reg, R6, peer + 4 * k as i16));
                    g.emit(Insn::to_be(reg, 32));
                }
            }
            for r in fr.rules {
                let cidrs = of_fam(r);
                if !r.cidrs.is_empty() && cidrs.is_empty() {
                    continue;
                }
                let next = g.fresh("next");
                g.loc = locator.loc(&r.origin);
                if proto_ports(g, r.protocol, &r.ports, &next) {
                    if cidrs.is_empty() {
                        g.emit(Insn::ja(allow));
                    }
                    for c in &cidrs {
                        cidr_test(g, c, allow);
                    }
                    g.bind(next);
                }
                g.loc = None;
            }
        }
        Some(Table::Search(intervals, classes)) => {
            addressless_rules(g, fr.rules, locator, allow);
            // IPv4: the caller loaded r2 (the code is shared with
            // IPv4-mapped IPv6 peers).
            if fam == Fam::V6 {
                g.emit(Insn::ldx_dw(R2, R6, peer));
                g.emit(Insn::to_be(R2, 64));
                g.emit(Insn::ldx_dw(R3, R6, peer + 8));
                g.emit(Insn::to_be(R3, 64));
            }
            search::emit(g, fam == Fam::V4, intervals, classes, allow, deny);
        }
        Some(Table::Lpm(map, classes)) => {
            addressless_rules(g, fr.rules, locator, allow);
            g.emit(Insn::st_w(R10, LPM_KEY, 32 * fam.words() as i32));
            for k in 0..fam.words() as i16 {
                g.emit(Insn::ldx_w(R0, R6, peer + 4 * k));
                g.emit(Insn::stx_w(R10, LPM_KEY + 4 + 4 * k, R0));
            }
            g.emit(Insn::ld_map(R1, map.as_str()));
            g.emit(Insn::mov64_reg(R2, R10));
            g.emit(Insn::add64_imm(R2, i32::from(LPM_KEY)));
            g.emit(Insn::call(Helper::MapLookupElem));
            g.emit(Insn::jeq_imm(R0, 0, deny));
            g.emit(Insn::mov64_reg(R5, R0));
            let mut word = None;
            for (i, class) in classes.iter().enumerate() {
                g.loc = class.loc.clone();
                if word != Some(i / 32) {
                    g.emit(Insn::ldx_w(R4, R5, 4 * (i / 32) as i16));
                    word = Some(i / 32);
                }
                let bit = (1u32 << (i % 32)) as i32;
                if class.protocol == Protocol::Any && class.ports.is_empty() {
                    g.emit(Insn::jset32_imm(R4, bit, allow));
                } else {
                    let (body, next) = (g.fresh("class"), g.fresh("next"));
                    g.emit(Insn::jset32_imm(R4, bit, body.as_str()));
                    g.emit(Insn::ja(next.as_str()));
                    g.bind(body);
                    proto_ports(g, class.protocol, &class.ports, &next);
                    g.emit(Insn::ja(allow));
                    g.bind(next);
                }
                g.loc = None;
            }
        }
    }
    g.emit(Insn::ja(deny));
}

/// Rules without addresses, tested before a table: they need no lookup.
fn addressless_rules(g: &mut Gen, rules: &[NetRule], locator: &Locator, allow: &str) {
    for r in rules.iter().filter(|r| r.cidrs.is_empty()) {
        let next = g.fresh("next");
        g.loc = locator.loc(&r.origin);
        if proto_ports(g, r.protocol, &r.ports, &next) {
            g.emit(Insn::ja(allow));
            g.bind(next);
        }
        g.loc = None;
    }
}

/// Fills the flow key on the stack from the frame (r6), the protocol (r7)
/// and the ports word in r0 (local port, remote port; network order).
fn build_key(g: &mut Gen, fam: Fam, dir: Direction) {
    let (local, remote) = match dir {
        Direction::Egress => (fam.src(), fam.dst()),
        Direction::Ingress => (fam.dst(), fam.src()),
    };
    g.emit(Insn::stx_w(R10, FLOW_KEY + 4, R0));
    g.emit(Insn::mov64_reg(R1, R7));
    g.emit(Insn::lsh64_imm(R1, 8));
    g.emit(Insn::or64_imm(R1, if fam == Fam::V4 { 4 } else { 6 }));
    g.emit(Insn::stx_w(R10, FLOW_KEY, R1));
    match fam {
        Fam::V4 => {
            for off in [8, 16, 24, 32] {
                g.emit(Insn::st_dw(R10, FLOW_KEY + off, 0));
            }
            g.emit(Insn::ldx_w(R1, R6, local));
            g.emit(Insn::stx_w(R10, FLOW_KEY + 8, R1));
            g.emit(Insn::ldx_w(R1, R6, remote));
            g.emit(Insn::stx_w(R10, FLOW_KEY + 24, R1));
        }
        Fam::V6 => {
            for (src, dst) in [(local, 8), (local + 8, 16), (remote, 24), (remote + 8, 32)] {
                g.emit(Insn::ldx_dw(R1, R6, src));
                g.emit(Insn::stx_dw(R10, FLOW_KEY + dst, R1));
            }
        }
    }
}

/// TCP flag SYN (byte 13 of the header).
const TCP_SYN: i32 = 0x02;

/// Puts the flow's ports word in r0 and jumps to `key` for TCP/UDP and for
/// ICMP echo messages of type `icmp_type`; jumps to `other` otherwise.
/// `syn_only`: TCP only when SYN is set (a packet that opens a flow).
fn flow_ports(g: &mut Gen, fam: Fam, dir: Direction, icmp_type: i32, other: &str, key: &str, syn_only: bool) {
    let ports = g.fresh("ports");
    if syn_only {
        let not_tcp = g.fresh("nottcp");
        g.emit(Insn::jne_imm(R7, IPPROTO_TCP, not_tcp.as_str()));
        g.emit(Insn::ldx_b(R0, R9, 13));
        g.emit(Insn::jset_imm(R0, TCP_SYN, ports.as_str()));
        g.emit(Insn::ja(other));
        g.bind(not_tcp);
    } else {
        g.emit(Insn::jeq_imm(R7, IPPROTO_TCP, ports.as_str()));
    }
    g.emit(Insn::jeq_imm(R7, IPPROTO_UDP, ports.as_str()));
    g.emit(Insn::jne_imm(R7, fam.icmp(), other));
    g.emit(Insn::ldx_b(R0, R9, 0));
    g.emit(Insn::jne_imm(R0, icmp_type, other));
    g.emit(Insn::ldx_h(R0, R9, 4));
    g.emit(Insn::ja(key));
    g.bind(ports);
    g.emit(Insn::ldx_w(R0, R9, 0));
    if dir == Direction::Ingress {
        // (peer port, sandbox port) -> (sandbox port, peer port)
        g.emit(Insn::mov32_reg(R1, R0));
        g.emit(Insn::rsh32_imm(R1, 16));
        g.emit(Insn::lsh32_imm(R0, 16));
        g.emit(Insn::or32_reg(R0, R1));
    }
    g.emit(Insn::ja(key));
}

fn flow_lookup(g: &mut Gen) {
    g.emit(Insn::ld_map(R1, FLOW_MAP));
    g.emit(Insn::mov64_reg(R2, R10));
    g.emit(Insn::add64_imm(R2, i32::from(FLOW_KEY)));
    g.emit(Insn::call(Helper::MapLookupElem));
}

/// Puts this CPU's flow-cache slot for the key on the stack in r0 (null
/// only if the index were out of range; the verifier wants the check).
fn cache_slot(g: &mut Gen) {
    g.emit(Insn::ld_map(R1, super::FLOW_CACHE_MAP));
    g.emit(Insn::mov64_reg(R2, R10));
    g.emit(Insn::add64_imm(R2, i32::from(CACHE_INDEX)));
    g.emit(Insn::call(Helper::MapLookupElem));
}

/// The flow cache in front of a flow-map lookup: computes the key's slot
/// (ports ^ the peer's first and last address words, folded), and jumps
/// to `hit` when the slot holds the key, counting the hit, except on every
/// [`super::FLOW_CACHE_REVALIDATE`]th hit: that one, and a miss, fall
/// through to the map.
fn cache_check(g: &mut Gen, cache_slots: u32, hit: &str) {
    let miss = g.fresh("cmiss");
    g.emit(Insn::ldx_w(R1, R10, FLOW_KEY + 4));
    g.emit(Insn::ldx_w(R2, R10, FLOW_KEY + 24));
    g.emit(Insn::xor32_reg(R1, R2));
    g.emit(Insn::ldx_w(R2, R10, FLOW_KEY + 36));
    g.emit(Insn::xor32_reg(R1, R2));
    g.emit(Insn::mov32_reg(R2, R1));
    g.emit(Insn::rsh32_imm(R2, 16));
    g.emit(Insn::xor32_reg(R1, R2));
    g.emit(Insn::and32_imm(R1, cache_slots as i32 - 1));
    g.emit(Insn::stx_w(R10, CACHE_INDEX, R1));
    cache_slot(g);
    g.emit(Insn::jeq_imm(R0, 0, miss.as_str()));
    for k in 0..(FLOW_KEY_SIZE / 8) as i16 {
        g.emit(Insn::ldx_dw(R1, R0, 8 * k));
        g.emit(Insn::ldx_dw(R2, R10, FLOW_KEY + 8 * k));
        g.emit(Insn::jne_reg(R1, R2, miss.as_str()));
    }
    g.emit(Insn::ldx_dw(R1, R0, FLOW_KEY_SIZE as i16));
    g.emit(Insn::add64_imm(R1, 1));
    g.emit(Insn::stx_dw(R0, FLOW_KEY_SIZE as i16, R1));
    g.emit(Insn::jset_imm(R1, super::FLOW_CACHE_REVALIDATE as i32 - 1, hit));
    g.bind(miss);
}

/// After the map was found to hold the key: the key goes into its slot
/// (hit count 0), then `goto done`.
fn cache_fill(g: &mut Gen, done: &str) {
    cache_slot(g);
    g.emit(Insn::jeq_imm(R0, 0, done));
    for k in 0..(FLOW_KEY_SIZE / 8) as i16 {
        g.emit(Insn::ldx_dw(R1, R10, FLOW_KEY + 8 * k));
        g.emit(Insn::stx_dw(R0, 8 * k, R1));
    }
    g.emit(Insn::st_dw(R0, FLOW_KEY_SIZE as i16, 0));
    g.emit(Insn::ja(done));
}

/// After the map was found not to hold the key: its slot forgets whatever
/// it held (no key has family 0), then `goto done`.
fn cache_clear(g: &mut Gen, done: &str) {
    cache_slot(g);
    g.emit(Insn::jeq_imm(R0, 0, done));
    g.emit(Insn::st_dw(R0, 0, 0));
    g.emit(Insn::ja(done));
}

/// After the rules passed a packet: record its flow if it opens one (the
/// key is built per family, the rest is [`record_tail`]).
fn allow_tail(g: &mut Gen, fam: Fam, dir: Direction) {
    g.bind(format!("allow{}", fam.tag()));
    let key = g.fresh("rec");
    flow_ports(g, fam, dir, fam.echo_request(), PASS, &key, true);
    g.bind(key);
    build_key(g, fam, dir);
    g.emit(Insn::ja(RECORD));
}

/// Records the flow whose key is on the stack, shared by both families.
/// With a flow cache (`cache_slots` > 0, a power of two) a cache hit skips
/// the map; after a lookup or an insert the slot holds the key.
fn record_tail(g: &mut Gen, dir: Direction, cache_slots: u32) {
    g.bind(RECORD);
    let fill = g.fresh("fill");
    if cache_slots > 0 {
        cache_check(g, cache_slots, PASS);
    }
    flow_lookup(g);
    g.emit(Insn::jne_imm(R0, 0, if cache_slots > 0 { fill.as_str() } else { PASS }));
    g.emit(Insn::st_dw(R10, FLOW_VALUE, dir.opened_by() as i32));
    g.emit(Insn::ld_map(R1, FLOW_MAP));
    g.emit(Insn::mov64_reg(R2, R10));
    g.emit(Insn::add64_imm(R2, i32::from(FLOW_KEY)));
    g.emit(Insn::mov64_reg(R3, R10));
    g.emit(Insn::add64_imm(R3, i32::from(FLOW_VALUE)));
    g.emit(Insn::mov64_imm(R4, 0));
    g.emit(Insn::call(Helper::MapUpdateElem));
    if cache_slots > 0 {
        // Cache only what the map holds.
        g.emit(Insn::jne_imm(R0, 0, PASS));
        g.bind(fill);
        cache_fill(g, PASS);
    } else {
        g.emit(Insn::ja(PASS));
    }
}

/// After the rules refused a packet: pass it if it answers a known flow
/// (the key is built per family, the rest is [`answer_tail`]); otherwise
/// [`refused_tail`]. A packet without ports (another protocol, or ICMP
/// other than an echo reply) gets ports 0 in its key, which no flow has.
fn deny_tail(g: &mut Gen, fam: Fam, dir: Direction, lookup: bool) {
    g.bind(format!("deny{}", fam.tag()));
    let key = g.fresh("look");
    let noports = g.fresh("noports");
    flow_ports(g, fam, dir, fam.echo_reply(), &noports, &key, false);
    g.bind(noports);
    g.emit(Insn::mov64_imm(R0, 0));
    g.bind(key);
    build_key(g, fam, dir);
    g.emit(Insn::ja(if lookup { ANSWER } else { REFUSED }));
}

/// The refusal's audit record (docs/audit.md), built from the flow key on
/// the stack: layer xdp, hook 1 (egress) or 2 (ingress), the peer's
/// address and port as the object, the IP protocol as `detail`; no task
/// (XDP runs in no process's context: sandbox, pid and comm are 0). Then
/// drop. Records are sampled: a per-CPU counter of refusals lets the
/// first and every [`RECORD_EVERY`]th through, so a flood of refused
/// packets costs a counter increment each (a record costs ~60 ns here)
/// and cannot flood the ring. Frames dropped by parsing (malformed,
/// fragments, other EtherTypes) carry no trustworthy address and are not
/// recorded.
fn refused_tail(g: &mut Gen, dir: Direction) {
    use crate::audit::{self, off, Layer, ObjectKind, Verdict, RINGBUF_MAP};
    let v6 = g.fresh("rec6");
    let send = g.fresh("send");
    g.bind(REFUSED);
    g.emit(Insn::st_w(R10, REFUSALS_KEY, 0));
    g.emit(Insn::ld_map(R1, super::REFUSALS_MAP));
    g.emit(Insn::mov64_reg(R2, R10));
    g.emit(Insn::add64_imm(R2, i32::from(REFUSALS_KEY)));
    g.emit(Insn::call(Helper::MapLookupElem));
    g.emit(Insn::jeq_imm(R0, 0, DROP));
    g.emit(Insn::ldx_dw(R1, R0, 0));
    g.emit(Insn::mov64_reg(R2, R1));
    g.emit(Insn::add64_imm(R2, 1));
    g.emit(Insn::stx_dw(R0, 0, R2));
    g.emit(Insn::and64_imm(R1, RECORD_EVERY - 1));
    g.emit(Insn::jne_imm(R1, 0, DROP));
    let hook = match dir {
        Direction::Egress => 1,
        Direction::Ingress => 2,
    };
    let head =
        u32::from(audit::RECORD_VERSION) | u32::from(Layer::Xdp.code()) << 16 | u32::from(Verdict::Deny.code()) << 24;
    g.emit(Insn::mov64_reg(R9, R10));
    g.emit(Insn::add64_imm(R9, i32::from(RECORD_AT)));
    g.emit(Insn::st_w(R9, off::VERSION, head as i32));
    g.emit(Insn::st_h(R9, off::HOOK, hook));
    g.emit(Insn::st_h(R9, off::FILE, i32::from(audit::NO_FILE)));
    g.emit(Insn::st_w(R9, off::RULE, audit::NO_RULE as i32));
    g.emit(Insn::st_w(R9, off::LINE, 0));
    for at in [off::SANDBOX, off::PID, off::COMM, off::COMM + 8] {
        g.emit(Insn::st_dw(R9, at, 0));
    }
    g.emit(Insn::ldx_b(R1, R10, FLOW_KEY + 1)); // the protocol
    g.emit(Insn::stx_w(R9, off::DETAIL, R1));
    // The peer's port: the key's second port, in network order.
    g.emit(Insn::ldx_h(R1, R10, FLOW_KEY + 6));
    g.emit(Insn::to_be(R1, 16));
    g.emit(Insn::ldx_b(R4, R10, FLOW_KEY)); // the family: 4 or 6
    g.emit(Insn::jne_imm(R4, 4, v6.as_str()));
    g.emit(Insn::ldx_w(R2, R10, FLOW_KEY + 24));
    g.emit(Insn::stx_w(R9, off::OBJECT, R2));
    g.emit(Insn::stx_h(R9, off::OBJECT + 4, R1));
    g.emit(Insn::st_h(R9, off::OBJECT_KIND, i32::from(ObjectKind::Inet4.code())));
    g.emit(Insn::st_h(R9, off::OBJECT_LEN, 6));
    g.emit(Insn::mov64_imm(R8, audit::HEADER_LEN as i32 + 6));
    g.emit(Insn::ja(send.as_str()));
    g.bind(v6);
    for k in 0..2 {
        g.emit(Insn::ldx_dw(R2, R10, FLOW_KEY + 24 + 8 * k));
        g.emit(Insn::stx_dw(R9, off::OBJECT + 8 * k, R2));
    }
    g.emit(Insn::stx_h(R9, off::OBJECT + 16, R1));
    g.emit(Insn::st_h(R9, off::OBJECT_KIND, i32::from(ObjectKind::Inet6.code())));
    g.emit(Insn::st_h(R9, off::OBJECT_LEN, 18));
    g.emit(Insn::mov64_imm(R8, audit::HEADER_LEN as i32 + 18));
    g.bind(send);
    g.emit(Insn::call(Helper::KtimeGetNs));
    g.emit(Insn::stx_dw(R9, off::TIME, R0));
    g.emit(Insn::ld_map(R1, RINGBUF_MAP));
    g.emit(Insn::mov64_reg(R2, R9));
    g.emit(Insn::mov64_reg(R3, R8));
    g.emit(Insn::mov64_imm(R4, 0));
    g.emit(Insn::call(Helper::RingbufOutput));
    g.emit(Insn::ja(DROP));
}

/// Passes the packet whose flow key is on the stack if the flow is known
/// (a cache hit, or the map holds it); shared by both families.
fn answer_tail(g: &mut Gen, cache_slots: u32) {
    g.bind(ANSWER);
    if cache_slots > 0 {
        let stale = g.fresh("stale");
        cache_check(g, cache_slots, PASS);
        flow_lookup(g);
        g.emit(Insn::jeq_imm(R0, 0, stale.as_str()));
        cache_fill(g, PASS);
        g.bind(stale);
        cache_clear(g, REFUSED);
    } else {
        flow_lookup(g);
        g.emit(Insn::jeq_imm(R0, 0, REFUSED));
        g.emit(Insn::ja(PASS));
    }
}

/// Bounds check: `if reg + len > data_end (r3) goto drop`.
fn need(g: &mut Gen, reg: Reg, len: i32) {
    g.emit(Insn::mov64_reg(R0, reg));
    g.emit(Insn::add64_imm(R0, len));
    g.emit(Insn::jgt_reg(R0, R3, DROP));
}

/// Transport header: TCP (20 bytes) and UDP (8) load the destination port.
fn l4(g: &mut Gen, tag: &str) {
    g.bind(format!("tcp{tag}"));
    need(g, R9, 20);
    g.emit(Insn::ja(format!("port{tag}")));
    g.bind(format!("udp{tag}"));
    need(g, R9, 8);
    g.bind(format!("port{tag}"));
    g.emit(Insn::ldx_h(R8, R9, 2));
    g.emit(Insn::to_be(R8, 16));
    g.emit(Insn::ja(format!("rules{tag}")));
}

fn program(
    dir: Direction,
    v4: &FamilyRules<'_>,
    v6: &FamilyRules<'_>,
    lookup: bool,
    cache_slots: u32,
    locator: &Locator,
) -> Vec<Insn> {
    let mut g = Gen::new();
    let peer = |fam: Fam| match dir {
        Direction::Egress => fam.dst(),
        Direction::Ingress => fam.src(),
    };
    // Ethernet.
    g.emit(Insn::ldx_w(R2, R1, 0));
    g.emit(Insn::ldx_w(R3, R1, 4));
    g.emit(Insn::mov64_reg(R6, R2));
    need(&mut g, R6, 14);
    g.emit(Insn::ldx_h(R4, R6, 12));
    g.emit(Insn::jeq_imm(R4, ETH_P_IP_LE, "ip4"));
    g.emit(Insn::jeq_imm(R4, ETH_P_IPV6_LE, "ip6"));
    g.emit(Insn::jne_imm(R4, ETH_P_ARP_LE, DROP));
    g.bind(PASS);
    g.emit(Insn::mov64_imm(R0, XDP_PASS as i32));
    g.emit(Insn::exit());
    g.bind(DROP);
    g.emit(Insn::mov64_imm(R0, XDP_DROP as i32));
    g.emit(Insn::exit());

    // IPv4.
    g.bind("ip4");
    need(&mut g, R6, 34);
    g.emit(Insn::ldx_b(R4, R6, 14));
    g.emit(Insn::mov64_reg(R5, R4));
    g.emit(Insn::and64_imm(R5, 0xf0));
    g.emit(Insn::jne_imm(R5, 0x40, DROP));
    g.emit(Insn::and64_imm(R4, 0x0f));
    g.emit(Insn::jlt_imm(R4, 5, DROP));
    g.emit(Insn::lsh64_imm(R4, 2));
    // Fragment offset != 0 (the 13 low bits of the network-order field).
    g.emit(Insn::ldx_h(R5, R6, 20));
    g.emit(Insn::jset_imm(R5, 0xff1f, DROP));
    g.emit(Insn::ldx_b(R7, R6, 23));
    g.emit(Insn::mov64_reg(R9, R6));
    g.emit(Insn::add64_reg(R9, R4));
    g.emit(Insn::add64_imm(R9, 14));
    g.emit(Insn::jgt_reg(R9, R3, DROP));
    g.emit(Insn::mov64_imm(R8, 0));
    g.emit(Insn::jeq_imm(R7, IPPROTO_TCP, "tcp4"));
    g.emit(Insn::jeq_imm(R7, IPPROTO_UDP, "udp4"));
    g.emit(Insn::jeq_imm(R7, IPPROTO_ICMP, "icmp4"));
    g.emit(Insn::jeq_imm(R7, IPPROTO_ICMPV6, "rules4"));
    g.emit(Insn::mov64_imm(R7, PROTO_OTHER));
    g.emit(Insn::ja("rules4"));
    g.bind("icmp4");
    need(&mut g, R9, 8);
    g.emit(Insn::ja("rules4"));
    l4(&mut g, "4");
    g.bind("rules4");
    // A compiled IPv4 search is emitted once: IPv4 frames and IPv4-mapped
    // IPv6 peers enter it with the address in r2 and their IP version in
    // FAMILY_SLOT, which sends its verdicts to the right tail (a constant
    // on the stack, so the verifier follows only the right branch).
    let shared4 = v4.strategy() == AddrStrategy::Search;
    if shared4 {
        g.emit(Insn::st_dw(R10, FAMILY_SLOT, 4));
        g.emit(Insn::ldx_w(R2, R6, peer(Fam::V4)));
        g.emit(Insn::to_be(R2, 32));
        g.bind("search4");
        family_part(&mut g, Fam::V4, peer(Fam::V4), v4, locator, "allow4m", "deny4m");
        for (from, to4, to6) in [("allow4m", "allow4", "allow6"), ("deny4m", "deny4", "deny6")] {
            g.bind(from);
            g.emit(Insn::ldx_dw(R0, R10, FAMILY_SLOT));
            g.emit(Insn::jeq_imm(R0, 6, to6));
            g.emit(Insn::ja(to4));
        }
    } else {
        family_part(&mut g, Fam::V4, peer(Fam::V4), v4, locator, "allow4", "deny4");
    }

    // IPv6.
    g.bind("ip6");
    need(&mut g, R6, 54);
    g.emit(Insn::ldx_b(R4, R6, 14));
    g.emit(Insn::and64_imm(R4, 0xf0));
    g.emit(Insn::jne_imm(R4, 0x60, DROP));
    g.emit(Insn::ldx_b(R7, R6, 20));
    g.emit(Insn::mov64_reg(R9, R6));
    g.emit(Insn::add64_imm(R9, 54));
    g.emit(Insn::jne_imm(R7, 44, "l4_6"));
    need(&mut g, R6, 62);
    // Fragment offset != 0 (the 13 high bits of the network-order field).
    g.emit(Insn::ldx_h(R4, R6, 56));
    g.emit(Insn::jset_imm(R4, 0xf8ff, DROP));
    g.emit(Insn::ldx_b(R7, R6, 54));
    g.emit(Insn::add64_imm(R9, 8));
    g.bind("l4_6");
    g.emit(Insn::mov64_imm(R8, 0));
    g.emit(Insn::jeq_imm(R7, IPPROTO_TCP, "tcp6"));
    g.emit(Insn::jeq_imm(R7, IPPROTO_UDP, "udp6"));
    g.emit(Insn::jeq_imm(R7, IPPROTO_ICMPV6, "icmp6"));
    for e in IPV6_EXT_HEADERS {
        g.emit(Insn::jeq_imm(R7, i32::from(e), DROP));
    }
    g.emit(Insn::jeq_imm(R7, IPPROTO_ICMP, "rules6"));
    g.emit(Insn::mov64_imm(R7, PROTO_OTHER));
    g.emit(Insn::ja("rules6"));
    g.bind("icmp6");
    need(&mut g, R9, 8);
    // Neighbour discovery (133..=136) passes.
    g.emit(Insn::ldx_b(R4, R9, 0));
    g.emit(Insn::add64_imm(R4, -133));
    g.emit(Insn::jle_imm(R4, 3, PASS));
    g.emit(Insn::ja("rules6"));
    l4(&mut g, "6");
    g.bind("rules6");
    // ::ffff:a.b.c.d is judged as a.b.c.d by the IPv4 rules.
    let p6 = peer(Fam::V6);
    g.emit(Insn::ldx_w(R0, R6, p6));
    g.emit(Insn::jne_imm(R0, 0, "native6"));
    g.emit(Insn::ldx_w(R0, R6, p6 + 4));
    g.emit(Insn::jne_imm(R0, 0, "native6"));
    g.emit(Insn::ldx_w(R0, R6, p6 + 8));
    g.emit(Insn::jne32_imm(R0, u32::from_le_bytes([0, 0, 0xff, 0xff]) as i32, "native6"));
    if shared4 {
        g.emit(Insn::st_dw(R10, FAMILY_SLOT, 6));
        g.emit(Insn::ldx_w(R2, R6, p6 + 12));
        g.emit(Insn::to_be(R2, 32));
        g.emit(Insn::ja("search4"));
    } else {
        family_part(&mut g, Fam::V4, p6 + 12, v4, locator, "allow6", "deny6");
    }
    g.bind("native6");
    family_part(&mut g, Fam::V6, p6, v6, locator, "allow6", "deny6");

    for fam in [Fam::V4, Fam::V6] {
        allow_tail(&mut g, fam, dir);
        deny_tail(&mut g, fam, dir, lookup);
    }
    record_tail(&mut g, dir, cache_slots);
    if lookup {
        answer_tail(&mut g, cache_slots);
    }
    refused_tail(&mut g, dir);
    g.finish()
}

/// The flow cache's slot count: a power of two, 0 without a cache.
fn cache_slots(opts: &Options) -> u32 {
    match opts.flow_cache_slots {
        0 => 0,
        n => n.next_power_of_two(),
    }
}

fn map_name(dir: Direction, fam: Fam) -> String {
    let d = match dir {
        Direction::Egress => "eg",
        Direction::Ingress => "in",
    };
    format!("xdp_{d}_v{}", fam.tag())
}

fn direction(
    dir: Direction,
    rules: &[NetRule],
    lookup: bool,
    locator: &Locator,
    opts: &Options,
    maps: &mut Vec<MapSpec>,
) -> Result<XdpProgram, XdpError> {
    let mut parts = Vec::new();
    for fam in [Fam::V4, Fam::V6] {
        let count = rules.iter().flat_map(|r| &r.cidrs).filter(|c| Fam::of(c) == fam).count();
        let table = if count > opts.table_threshold {
            let cl = classes(rules, fam, locator);
            if cl.is_empty() {
                None
            } else {
                let iv = (opts.large_sets == LargeSets::Search)
                    .then(|| search::flatten(&members(rules, fam, &cl, locator), cl.len()))
                    // Beyond the cap the verifier's work would near its
                    // limit: that family takes the trie.
                    .filter(|iv| iv.starts.len() <= opts.max_search_intervals);
                match iv {
                    Some(iv) => Some(Table::Search(iv, cl)),
                    None => {
                        let name = map_name(dir, fam);
                        maps.push(lpm_map(&name, fam, &cl));
                        Some(Table::Lpm(name, cl))
                    }
                }
            }
        } else {
            None
        };
        parts.push(FamilyRules { rules, table });
    }
    let insns = program(dir, &parts[0], &parts[1], lookup, cache_slots(opts), locator);
    let encoded = encode(&insns).map_err(|source| XdpError::Encode { direction: dir, source })?;
    Ok(XdpProgram { direction: dir, insns, encoded, strategy: [parts[0].strategy(), parts[1].strategy()] })
}

pub(super) fn programs(net: &NetworkPolicy, locator: &Locator, opts: &Options) -> Result<XdpPrograms, XdpError> {
    let mut maps = vec![MapSpec {
        name: FLOW_MAP.to_string(),
        map_type: super::BPF_MAP_TYPE_LRU_HASH,
        key_size: FLOW_KEY_SIZE as u32,
        value_size: 8,
        max_entries: opts.flow_entries,
        flags: 0,
        entries: Vec::new(),
    }];
    if cache_slots(opts) > 0 {
        maps.push(MapSpec {
            name: super::FLOW_CACHE_MAP.to_string(),
            map_type: super::BPF_MAP_TYPE_PERCPU_ARRAY,
            key_size: 4,
            value_size: FLOW_KEY_SIZE as u32 + 8,
            max_entries: cache_slots(opts),
            flags: 0,
            entries: Vec::new(),
        });
    }
    // Refusals are counted per CPU and sampled into the ring (docs/audit.md).
    maps.push(MapSpec {
        name: super::REFUSALS_MAP.to_string(),
        map_type: super::BPF_MAP_TYPE_PERCPU_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        flags: 0,
        entries: Vec::new(),
    });
    maps.push(MapSpec {
        name: crate::audit::RINGBUF_MAP.to_string(),
        map_type: crate::netprog::BPF_MAP_TYPE_RINGBUF,
        key_size: 0,
        value_size: 0,
        max_entries: crate::audit::RINGBUF_SIZE,
        flags: 0,
        entries: Vec::new(),
    });
    // Without ingress rules the flow map only holds egress-opened flows,
    // whose packets the egress rules pass anyway: no lookup on egress.
    let egress = direction(Direction::Egress, &net.egress, !net.ingress.is_empty(), locator, opts, &mut maps)?;
    let ingress = direction(Direction::Ingress, &net.ingress, true, locator, opts, &mut maps)?;
    Ok(XdpPrograms { egress, ingress, maps })
}
