//! Instruction selection for the cgroup programs (strategy in the module
//! docs of [`super`]).
//!
//! Rule blocks are built from single-slot instructions whose jumps to the
//! block-local label [`NEXT`] (and [`ADDR`]) are turned into relative
//! offsets when the block is closed, so blocks compose without inventing
//! globally unique labels; only `allow`, `deny` and the IPv6 part's entry
//! are real labels.

use super::{CgroupProgram, CgroupPrograms, Locator, MapSpec, NetProgError, Options, ProgKind};
use crate::bpf::{encode, Helper, Insn, Op, Reg, Reg::*, SourceLoc, Target};
use phantom_dsl::ir::{DeviceAccess, DevicePolicy, DeviceType, NetRule, NetworkPolicy, Origin};
use phantom_dsl::values::{Cidr, Protocol};
use std::net::IpAddr;

/// The minimal `/dev` every sandbox gets: (major, minor, name), char
/// devices, read + write.
pub const DEFAULT_DEVICES: [(u32, u32, &str); 6] =
    [(1, 3, "null"), (1, 5, "zero"), (1, 7, "full"), (1, 8, "random"), (1, 9, "urandom"), (5, 0, "tty")];

// struct bpf_sock_addr
const SA_USER_IP4: i16 = 4;
const SA_USER_IP6: i16 = 8;
const SA_USER_PORT: i16 = 24;
const SA_PROTOCOL: i16 = 36;
// struct bpf_sock
const SK_FAMILY: i16 = 4;
const SK_TYPE: i16 = 8;
const SK_PROTOCOL: i16 = 12;
// struct bpf_cgroup_dev_ctx
const DEV_ACCESS_TYPE: i16 = 0;
const DEV_MAJOR: i16 = 4;
const DEV_MINOR: i16 = 8;

pub(crate) const IPPROTO_ICMP: i32 = 1;
pub(crate) const IPPROTO_TCP: i32 = 6;
pub(crate) const IPPROTO_UDP: i32 = 17;
pub(crate) const IPPROTO_ICMPV6: i32 = 58;
pub(crate) const AF_INET: i32 = 2;
pub(crate) const AF_INET6: i32 = 10;
pub(crate) const SOCK_STREAM: i32 = 1;
pub(crate) const SOCK_DGRAM: i32 = 2;
pub(crate) const SOCK_RAW: i32 = 3;
/// Marks "some rule named this device" in the device program's accumulator,
/// above the 16 access bits.
const DEV_MATCHED: i32 = 0x1_0000;

const NEXT: &str = "\0next";
const ADDR: &str = "\0addr";
const ALLOW: &str = "allow";
const DENY: &str = "deny";

/// Resolves jumps to the local `label` into offsets to just past the block.
fn close(mut insns: Vec<Insn>, label: &str) -> Vec<Insn> {
    let n = insns.len();
    for (i, insn) in insns.iter_mut().enumerate() {
        debug_assert_eq!(insn.op.slots(), 1, "blocks hold single-slot instructions only");
        if let Op::Jmp { target, .. } | Op::Ja { target } = &mut insn.op {
            if matches!(target, Target::Label(l) if l == label) {
                *target = Target::Offset((n - i - 1) as i32);
            }
        }
    }
    insns
}

fn at(insns: Vec<Insn>, loc: &Option<SourceLoc>) -> impl Iterator<Item = Insn> + '_ {
    insns.into_iter().map(move |i| match loc {
        Some(l) => i.at(l.clone()),
        None => i,
    })
}

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
}

/// The registers holding the address words (host order) in straight-line mode.
const ADDR_REGS: [Reg; 4] = [R2, R3, R4, R5];

fn addr_words(c: &Cidr) -> Vec<u32> {
    match c.addr {
        IpAddr::V4(a) => vec![u32::from(a)],
        IpAddr::V6(a) => a.segments().chunks(2).map(|s| (u32::from(s[0]) << 16) | u32::from(s[1])).collect(),
    }
}

/// `if addr in c goto allow`, falling through otherwise.
fn cidr_test(c: &Cidr) -> Vec<Insn> {
    let words = addr_words(c);
    let bits: Vec<u32> = (0..words.len()).map(|w| u32::from(c.prefix).saturating_sub(32 * w as u32).min(32)).collect();
    let last = bits.iter().rposition(|&b| b > 0);
    let Some(last) = last else {
        return vec![Insn::ja(ALLOW)];
    };
    let mut b = Vec::new();
    for w in 0..=last {
        let mask = u32::MAX.checked_shl(32 - bits[w]).unwrap_or(0);
        let net = (words[w] & mask) as i32;
        let reg = ADDR_REGS[w];
        let target = if w == last { ALLOW } else { NEXT };
        let jump = |r: Reg| if w == last { Insn::jeq32_imm(r, net, target) } else { Insn::jne32_imm(r, net, target) };
        if bits[w] == 32 {
            b.push(jump(reg));
        } else {
            b.push(Insn::mov32_reg(R0, reg));
            b.push(Insn::and32_imm(R0, mask as i32));
            b.push(jump(R0));
        }
    }
    close(b, NEXT)
}

/// One egress (or bind) rule for one address family: `None` when it can
/// never match there (only CIDRs of the other family; ports on a portless
/// protocol). `lpm` is the rule's bit index when addresses go through the
/// trie.
fn rule_block(rule: &NetRule, fam: Fam, lpm: Option<usize>) -> Option<Vec<Insn>> {
    let cidrs: Vec<&Cidr> = rule.cidrs.iter().filter(|c| Fam::of(c) == fam).collect();
    if !rule.cidrs.is_empty() && cidrs.is_empty() {
        return None;
    }
    let mut b = Vec::new();
    match rule.protocol {
        Protocol::Tcp => b.push(Insn::jne32_imm(R7, IPPROTO_TCP, NEXT)),
        Protocol::Udp => b.push(Insn::jne32_imm(R7, IPPROTO_UDP, NEXT)),
        Protocol::Icmp => {
            if !rule.ports.is_empty() {
                return None;
            }
            b.push(Insn::jeq32_imm(R7, IPPROTO_ICMP, 1));
            b.push(Insn::jne32_imm(R7, IPPROTO_ICMPV6, NEXT));
        }
        Protocol::Any => {}
    }
    if !rule.ports.is_empty() {
        let mut p = Vec::new();
        if rule.protocol == Protocol::Any {
            p.push(Insn::jeq32_imm(R7, IPPROTO_TCP, 1));
            p.push(Insn::jne32_imm(R7, IPPROTO_UDP, NEXT));
        }
        for r in &rule.ports {
            if r.start == r.end {
                p.push(Insn::jeq32_imm(R8, i32::from(r.start), ADDR));
            } else {
                p.push(Insn::jlt32_imm(R8, i32::from(r.start), 1));
                p.push(Insn::jle32_imm(R8, i32::from(r.end), ADDR));
            }
        }
        p.push(Insn::ja(NEXT));
        b.extend(close(p, ADDR));
    }
    if rule.cidrs.is_empty() {
        b.push(Insn::ja(ALLOW));
    } else if let Some(bit) = lpm {
        b.push(Insn::jeq_imm(R9, 0, NEXT));
        b.push(Insn::ldx_w(R0, R9, (4 * (bit / 32)) as i16));
        b.push(Insn::jset32_imm(R0, (1u32 << (bit % 32)) as i32, ALLOW));
    } else {
        for c in cidrs {
            b.extend(cidr_test(c));
        }
    }
    Some(close(b, NEXT))
}

/// The rules of one address family, reading the address from `ctx_off`.
fn family_part(
    fam: Fam,
    ctx_off: i16,
    rules: &[NetRule],
    lpm_map: Option<&str>,
    locator: &Locator,
    label: Option<&str>,
) -> Vec<Insn> {
    let mut p = Vec::new();
    if let Some(map) = lpm_map {
        let prefixlen = 32 * fam.words() as i32;
        p.push(Insn::st_w(R10, -24, prefixlen));
        for k in 0..fam.words() as i16 {
            p.push(Insn::ldx_w(R0, R6, ctx_off + 4 * k));
            p.push(Insn::stx_w(R10, -20 + 4 * k, R0));
        }
        p.push(Insn::ld_map(R1, map));
        p.push(Insn::mov64_reg(R2, R10));
        p.push(Insn::add64_imm(R2, -24));
        p.push(Insn::call(Helper::MapLookupElem));
        p.push(Insn::mov64_reg(R9, R0));
    } else if rules.iter().any(|r| r.cidrs.iter().any(|c| Fam::of(c) == fam)) {
        for (k, &reg) in ADDR_REGS.iter().enumerate().take(fam.words()) {
            p.push(Insn::ldx_w(reg, R6, ctx_off + 4 * k as i16));
            p.push(Insn::to_be(reg, 32));
        }
    }
    for (i, r) in rules.iter().enumerate() {
        if let Some(b) = rule_block(r, fam, lpm_map.map(|_| i)) {
            p.extend(at(b, &locator.loc(&r.origin)));
        }
    }
    p.push(Insn::ja(DENY));
    if let Some(l) = label {
        let first = p.remove(0);
        p.insert(0, first.label(l));
    }
    p
}

fn prologue() -> Vec<Insn> {
    vec![
        Insn::mov64_reg(R6, R1),
        Insn::ldx_w(R7, R6, SA_PROTOCOL),
        Insn::ldx_w(R8, R6, SA_USER_PORT),
        Insn::to_be(R8, 16),
    ]
}

/// `deny:` (the audit record, `return 0`) and `allow:` (`return 1`). The
/// context must be in r6.
fn epilogue(p: &mut Vec<Insn>, kind: ProgKind) {
    // A trailing unlabelled `goto deny` right before `deny` is a no-op.
    if p.last().is_some_and(|i| i.meta.label.is_none() && i.op == Op::Ja { target: Target::Label(DENY.into()) }) {
        p.pop();
    }
    p.extend(super::deny_record::deny_tail(kind, R6, DENY));
    p.push(Insn::mov64_imm(R0, 1).label(ALLOW));
    p.push(Insn::exit());
}

/// `body` finished as the program `kind`.
fn program(kind: ProgKind, mut body: Vec<Insn>) -> Result<CgroupProgram, NetProgError> {
    epilogue(&mut body, kind);
    finish(kind, body)
}

fn finish(kind: ProgKind, insns: Vec<Insn>) -> Result<CgroupProgram, NetProgError> {
    let encoded = encode(&insns).map_err(|source| NetProgError::Encode { section: kind.section(), source })?;
    Ok(CgroupProgram { kind, insns, encoded })
}

const MAP_V4: &str = "egress_v4";
const MAP_V6: &str = "egress_v6";

/// The LPM trie of one family's egress CIDRs (see the module docs).
fn lpm_map(name: &str, fam: Fam, rules: &[NetRule]) -> MapSpec {
    let groups: Vec<&[phantom_dsl::values::Cidr]> = rules.iter().map(|r| r.cidrs.as_slice()).collect();
    super::lpm::trie(name, fam == Fam::V6, &groups)
}

/// The socket programs of an allowlist network policy.
pub(super) fn network(
    net: &NetworkPolicy,
    locator: &Locator,
    opts: &Options,
    out: &mut CgroupPrograms,
) -> Result<(), NetProgError> {
    let egress = &net.egress;
    let count = |fam| egress.iter().flat_map(|r| &r.cidrs).filter(|c| Fam::of(c) == fam).count();
    let lpm4 = (count(Fam::V4) > opts.lpm_threshold).then_some(MAP_V4);
    let lpm6 = (count(Fam::V6) > opts.lpm_threshold).then_some(MAP_V6);
    if lpm4.is_some() {
        out.maps.push(lpm_map(MAP_V4, Fam::V4, egress));
    }
    if lpm6.is_some() {
        out.maps.push(lpm_map(MAP_V6, Fam::V6, egress));
    }

    out.programs.push(sock_create(net, locator, opts)?);

    let mut v4 = prologue();
    v4.extend(family_part(Fam::V4, SA_USER_IP4, egress, lpm4, locator, None));

    let mut v6 = prologue();
    // ::ffff:a.b.c.d is IPv4 traffic: judge word 3 against the IPv4 rules.
    v6.push(Insn::ldx_w(R0, R6, SA_USER_IP6));
    v6.push(Insn::jne32_imm(R0, 0, "v6"));
    v6.push(Insn::ldx_w(R0, R6, SA_USER_IP6 + 4));
    v6.push(Insn::jne32_imm(R0, 0, "v6"));
    v6.push(Insn::ldx_w(R0, R6, SA_USER_IP6 + 8));
    v6.push(Insn::jne32_imm(R0, u32::from_le_bytes([0, 0, 0xff, 0xff]) as i32, "v6"));
    v6.extend(family_part(Fam::V4, SA_USER_IP6 + 12, egress, lpm4, locator, None));
    v6.extend(family_part(Fam::V6, SA_USER_IP6, egress, lpm6, locator, Some("v6")));

    // connect and sendmsg share their rules; their records name each.
    out.programs.push(program(ProgKind::Connect4, v4.clone())?);
    out.programs.push(program(ProgKind::Connect6, v6.clone())?);
    out.programs.push(program(ProgKind::Sendmsg4, v4)?);
    out.programs.push(program(ProgKind::Sendmsg6, v6)?);

    let bind_rules: Vec<NetRule> = net
        .bind
        .iter()
        .map(|b| NetRule { cidrs: Vec::new(), ports: b.ports.clone(), protocol: b.protocol, origin: b.origin })
        .collect();
    let mut bind = prologue();
    bind.push(Insn::jeq32_imm(R8, 0, ALLOW));
    for r in &bind_rules {
        if let Some(b) = rule_block(r, Fam::V4, None) {
            bind.extend(at(b, &locator.loc(&r.origin)));
        }
    }
    out.programs.push(program(ProgKind::Bind4, bind.clone())?);
    out.programs.push(program(ProgKind::Bind6, bind)?);
    Ok(())
}

/// Which transport protocols the policy's rules need sockets for, each
/// with the origin of the first rule that needs it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Needs {
    pub tcp: Option<Origin>,
    pub udp: Option<Origin>,
    pub icmp: Option<Origin>,
}

pub(crate) fn needs(net: &NetworkPolicy) -> Needs {
    let mut n = Needs::default();
    let protos = net
        .egress
        .iter()
        .chain(&net.ingress)
        .map(|r| (r.protocol, r.origin))
        .chain(net.bind.iter().map(|b| (b.protocol, b.origin)));
    for (p, o) in protos {
        if matches!(p, Protocol::Tcp | Protocol::Any) {
            n.tcp.get_or_insert(o);
        }
        if matches!(p, Protocol::Udp | Protocol::Any) {
            n.udp.get_or_insert(o);
        }
        if matches!(p, Protocol::Icmp | Protocol::Any) {
            n.icmp.get_or_insert(o);
        }
    }
    n
}

fn sock_create(net: &NetworkPolicy, locator: &Locator, opts: &Options) -> Result<CgroupProgram, NetProgError> {
    let n = needs(net);
    // (origin, type, protocol, family or 0 for both)
    let mut allowed: Vec<(Origin, i32, i32, i32)> = Vec::new();
    if let Some(o) = n.tcp {
        allowed.push((o, SOCK_STREAM, IPPROTO_TCP, 0));
    }
    if let Some(o) = n.udp {
        allowed.push((o, SOCK_DGRAM, IPPROTO_UDP, 0));
    }
    if let Some(o) = n.icmp {
        allowed.push((o, SOCK_DGRAM, IPPROTO_ICMP, AF_INET));
        allowed.push((o, SOCK_DGRAM, IPPROTO_ICMPV6, AF_INET6));
        if opts.raw_sockets {
            allowed.push((o, SOCK_RAW, IPPROTO_ICMP, AF_INET));
            allowed.push((o, SOCK_RAW, IPPROTO_ICMPV6, AF_INET6));
        }
    }
    let mut p = vec![
        Insn::mov64_reg(R6, R1),
        Insn::ldx_w(R2, R6, SK_FAMILY),
        Insn::ldx_w(R3, R6, SK_TYPE),
        Insn::ldx_w(R4, R6, SK_PROTOCOL),
        // Only AF_INET and AF_INET6 are this program's business.
        Insn::jeq32_imm(R2, AF_INET, 1),
        Insn::jne32_imm(R2, AF_INET6, ALLOW),
    ];
    for (o, ty, proto, fam) in allowed {
        let mut b = vec![Insn::jne32_imm(R3, ty, NEXT), Insn::jne32_imm(R4, proto, NEXT)];
        if fam != 0 {
            b.push(Insn::jne32_imm(R2, fam, NEXT));
        }
        b.push(Insn::ja(ALLOW));
        p.extend(at(close(b, NEXT), &locator.loc(&o)));
    }
    program(ProgKind::SockCreate, p)
}

pub(crate) fn access_bits(access: &std::collections::BTreeSet<DeviceAccess>) -> u32 {
    access
        .iter()
        .map(|a| match a {
            DeviceAccess::Mknod => 1,
            DeviceAccess::Read => 2,
            DeviceAccess::Write => 4,
        })
        .fold(0, |x, y| x | y)
}

pub(super) fn device(dev: &DevicePolicy, locator: &Locator) -> Result<CgroupProgram, NetProgError> {
    let mut p = vec![
        Insn::mov64_reg(R6, R1),
        Insn::ldx_w(R2, R6, DEV_ACCESS_TYPE),
        Insn::ldx_w(R4, R6, DEV_MAJOR),
        Insn::ldx_w(R5, R6, DEV_MINOR),
        Insn::mov32_reg(R3, R2),
        Insn::and32_imm(R3, 0xffff),
        Insn::rsh32_imm(R2, 16),
        Insn::mov32_imm(R1, 0),
    ];
    // A default device that a rule covers is governed by the rule alone.
    let covered = |major: u32, minor: u32| {
        dev.allow.iter().any(|r| {
            matches!(r.kind, DeviceType::Char | DeviceType::Any)
                && r.major.is_none_or(|m| m == major)
                && r.minor.is_none_or(|m| m == minor)
        })
    };
    let defaults = DEFAULT_DEVICES
        .iter()
        .filter(|&&(major, minor, _)| !covered(major, minor))
        .map(|&(major, minor, _)| (DeviceType::Char, Some(major), Some(minor), 2 | 4, None));
    let rules = dev.allow.iter().map(|r| (r.kind, r.major, r.minor, access_bits(&r.access), locator.loc(&r.origin)));
    for (kind, major, minor, bits, loc) in rules.chain(defaults) {
        let mut b = Vec::new();
        match kind {
            DeviceType::Char => b.push(Insn::jne32_imm(R3, 2, NEXT)),
            DeviceType::Block => b.push(Insn::jne32_imm(R3, 1, NEXT)),
            DeviceType::Any => {}
        }
        if let Some(m) = major {
            b.push(Insn::jne32_imm(R4, m as i32, NEXT));
        }
        if let Some(m) = minor {
            b.push(Insn::jne32_imm(R5, m as i32, NEXT));
        }
        b.push(Insn::or32_imm(R1, bits as i32 | DEV_MATCHED));
        p.extend(at(close(b, NEXT), &loc));
    }
    // Deny unless some rule named the device and the union of the granted
    // kinds covers every requested kind.
    p.push(Insn::jeq32_imm(R1, 0, DENY));
    p.push(Insn::xor32_imm(R1, -1));
    p.push(Insn::and32_reg(R1, R2));
    p.push(Insn::jne32_imm(R1, 0, DENY));
    p.push(Insn::ja(ALLOW));
    program(ProgKind::Device, p)
}
