//! Large CIDR sets as compiled code: the CIDRs of one family are flattened
//! into sorted, disjoint address intervals that cover the whole address
//! space, each labelled with the set of rule classes whose CIDRs contain it
//! (adjacent intervals with the same set are merged), and the program finds
//! the peer's interval with a balanced binary search written out as
//! straight-line compares against constants. No map, no helper call, no
//! loop: about log2(intervals) compares per packet.
//!
//! - IPv4: the address (host order) in r2, one 32-bit unsigned compare
//!   (`jge32`/`jlt32` with the boundary as immediate) per tree node.
//! - IPv6: the high 64 bits (host order) in r2, the low 64 in r3. The outer
//!   tree compares r2 only; a boundary whose low half is not zero (a prefix
//!   longer than /64, or a network ending at a /64 boundary's last address)
//!   turns "r2 == that high half" into a leaf that runs an inner tree on
//!   r3. A 64-bit constant that is not a sign-extended 32-bit immediate is
//!   loaded into r1 first (`lddw`).
//!
//! Each leaf jumps to the block of its class set (`protocol; ports; goto
//! allow` per class, then `goto deny`), or straight to `deny` (no class) or
//! `allow` (a class that takes every protocol and port). A compare carries
//! the policy line of the first rule, in policy order, that has a CIDR
//! starting or ending (its last address + 1) at the boundary it tests (a
//! high-half compare that closes an inner search, `r2 >= high + 1`, the
//! line of the rule owning that inner range's last boundary); a class
//! block carries its class's line (its first rule's).

use super::codegen::{proto_ports, Class, Gen};
use crate::bpf::{Insn, Reg, Reg::*, SourceLoc};
use phantom_dsl::values::{Cidr, Protocol};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One CIDR of a class, with the index of its rule (policy order) and the
/// rule's location.
pub(super) struct Member<'a> {
    pub cidr: &'a Cidr,
    pub class: usize,
    pub rule: usize,
    pub loc: Option<SourceLoc>,
}

/// A flattened family: `starts[i]` is the first address of interval `i`
/// (`starts[0] == 0`, strictly increasing), `sets[i]` its classes (sorted),
/// `locs[i]` the location of the rule that ends interval `i - 1` there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Intervals {
    pub starts: Vec<u128>,
    pub sets: Vec<Vec<usize>>,
    pub locs: Vec<Option<SourceLoc>>,
}

fn range(c: &Cidr) -> (u128, u128) {
    let (a, width) = match c.addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    };
    let host = if u32::from(c.prefix) >= width { 0 } else { (u128::MAX >> (128 - width)) >> c.prefix };
    let start = a & !host;
    (start, start | host)
}

/// Flattens the members (all of one family) into merged intervals.
pub(super) fn flatten(members: &[Member<'_>], classes: usize) -> Intervals {
    // address -> (class, +1 / -1, rule index, loc) events.
    type Event = (usize, i32, usize, Option<SourceLoc>);
    let mut events: BTreeMap<u128, Vec<Event>> = BTreeMap::new();
    events.entry(0).or_default();
    for m in members {
        let (start, end) = range(m.cidr);
        events.entry(start).or_default().push((m.class, 1, m.rule, m.loc.clone()));
        if let Some(after) = end.checked_add(1).filter(|&a| !m.cidr.is_v4() || a <= u128::from(u32::MAX)) {
            events.entry(after).or_default().push((m.class, -1, m.rule, m.loc.clone()));
        }
    }
    let mut count = vec![0i32; classes];
    let mut out = Intervals { starts: Vec::new(), sets: Vec::new(), locs: Vec::new() };
    for (at, evs) in events {
        for (class, d, _, _) in &evs {
            count[*class] += d;
        }
        let set: Vec<usize> = (0..classes).filter(|&c| count[c] > 0).collect();
        if out.sets.last() == Some(&set) {
            continue;
        }
        let loc = evs.iter().min_by_key(|e| e.2).and_then(|e| e.3.clone());
        out.starts.push(at);
        out.sets.push(set);
        out.locs.push(loc);
    }
    out
}

/// Where a leaf goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Leaf {
    Deny,
    Allow,
    Block(usize),
}

/// `if reg >= c goto target` (`lt`: `if reg < c`), 64-bit unsigned.
fn cmp64(g: &mut Gen, reg: Reg, c: u64, lt: bool, target: &str) {
    let imm = c as i64 as i32;
    if i64::from(imm) as u64 == c {
        g.emit(if lt { Insn::jlt_imm(reg, imm, target) } else { Insn::jge_imm(reg, imm, target) });
    } else {
        g.emit(Insn::ld_imm64(R1, c as i64));
        g.emit(if lt { Insn::jlt_reg(reg, R1, target) } else { Insn::jge_reg(reg, R1, target) });
    }
}

/// `if reg >= c` (or `<`) for IPv4 (32-bit compare) or one IPv6 half.
fn cmp(g: &mut Gen, reg: Reg, v4: bool, c: u64, lt: bool, target: &str) {
    if v4 {
        let imm = c as u32 as i32;
        g.emit(if lt { Insn::jlt32_imm(reg, imm, target) } else { Insn::jge32_imm(reg, imm, target) });
    } else {
        cmp64(g, reg, c, lt, target);
    }
}

/// A balanced search over `starts[lo..=hi]` on `reg`, jumping to
/// `target(i)` for the interval `i` holding the value.
fn tree(
    g: &mut Gen,
    reg: Reg,
    v4: bool,
    starts: &[u64],
    locs: &[Option<SourceLoc>],
    target: &dyn Fn(usize) -> String,
    lo: usize,
    hi: usize,
) {
    if lo == hi {
        g.emit(Insn::ja(target(lo)));
        return;
    }
    // The first interval of the upper half.
    let mid = (lo + hi).div_ceil(2);
    g.loc = locs[mid].clone();
    if mid == hi {
        // The upper half is one leaf: jump there, search the lower half.
        cmp(g, reg, v4, starts[mid], false, &target(hi));
        tree(g, reg, v4, starts, locs, target, lo, mid - 1);
    } else if mid - 1 == lo {
        cmp(g, reg, v4, starts[mid], true, &target(lo));
        tree(g, reg, v4, starts, locs, target, mid, hi);
    } else {
        let upper = g.fresh("ge");
        cmp(g, reg, v4, starts[mid], false, &upper);
        tree(g, reg, v4, starts, locs, target, lo, mid - 1);
        g.bind(upper);
        tree(g, reg, v4, starts, locs, target, mid, hi);
    }
}

/// Emits the search of one family and the class blocks it jumps to. The
/// address is in r2 (IPv4, host order) or r2:r3 (IPv6, host order halves).
pub(super) fn emit(g: &mut Gen, v4: bool, iv: &Intervals, classes: &[Class], allow: &str, deny: &str) {
    // One block per distinct class set, numbered in order of appearance.
    let mut blocks: Vec<&[usize]> = Vec::new();
    let mut block_of: BTreeMap<&[usize], usize> = BTreeMap::new();
    let leaves: Vec<Leaf> = iv
        .sets
        .iter()
        .map(|set| {
            if set.is_empty() {
                Leaf::Deny
            } else if set.iter().any(|&c| classes[c].protocol == Protocol::Any && classes[c].ports.is_empty()) {
                Leaf::Allow
            } else {
                Leaf::Block(*block_of.entry(set.as_slice()).or_insert_with(|| {
                    blocks.push(set);
                    blocks.len() - 1
                }))
            }
        })
        .collect();
    let block_names: Vec<String> = (0..blocks.len()).map(|_| g.fresh("set")).collect();
    let name = |l: &Leaf| match l {
        Leaf::Deny => deny.to_string(),
        Leaf::Allow => allow.to_string(),
        Leaf::Block(b) => block_names[*b].clone(),
    };
    if v4 {
        let starts: Vec<u64> = iv.starts.iter().map(|&s| s as u64).collect();
        let target = |i: usize| name(&leaves[i]);
        tree(g, R2, true, &starts, &iv.locs, &target, 0, starts.len() - 1);
    } else {
        emit_v6(g, iv, &leaves, &name);
    }
    for (b, set) in blocks.iter().enumerate() {
        g.bind(block_names[b].clone());
        for &c in set.iter() {
            let class = &classes[c];
            g.loc = class.loc.clone();
            let next = g.fresh("next");
            if proto_ports(g, class.protocol, &class.ports, &next) {
                g.emit(Insn::ja(allow));
                g.bind(next);
            }
        }
        g.emit(Insn::ja(deny));
    }
    g.loc = None;
}

/// One segment of the high half's space.
enum Outer {
    /// Every address whose high half is in the segment gets this leaf.
    Const(usize),
    /// Only the high half equal to the segment's start: the leaves of
    /// the inner intervals (low-half start, leaf index, loc).
    Inner(Vec<(u64, usize, Option<SourceLoc>)>),
}

fn emit_v6(g: &mut Gen, iv: &Intervals, leaves: &[Leaf], name: &dyn Fn(&Leaf) -> String) {
    // Group the interval starts by their high half.
    let mut outer: Vec<(u64, Outer, Option<SourceLoc>)> = Vec::new();
    let mut i = 0;
    let mut current = 0usize; // the interval in effect before the group
    while i < iv.starts.len() {
        let hi = (iv.starts[i] >> 64) as u64;
        let mut j = i;
        while j < iv.starts.len() && (iv.starts[j] >> 64) as u64 == hi {
            j += 1;
        }
        if j - i == 1 && iv.starts[i] as u64 == 0 {
            outer.push((hi, Outer::Const(i), iv.locs[i].clone()));
        } else {
            let mut inner = Vec::new();
            if iv.starts[i] as u64 != 0 {
                inner.push((0, current, None));
            }
            for k in i..j {
                inner.push((iv.starts[k] as u64, k, iv.locs[k].clone()));
            }
            let loc = iv.locs[i].clone();
            outer.push((hi, Outer::Inner(inner), loc));
            let next_hi = iv.starts.get(j).map(|&s| (s >> 64) as u64);
            if let Some(after) = hi.checked_add(1).filter(|&a| next_hi != Some(a)) {
                outer.push((after, Outer::Const(j - 1), iv.locs[j - 1].clone()));
            }
        }
        current = j - 1;
        i = j;
    }
    // Merge neighbouring constant segments that lead to the same place.
    let mut merged: Vec<(u64, Outer, Option<SourceLoc>)> = Vec::new();
    for seg in outer {
        if let (Some((_, Outer::Const(a), _)), Outer::Const(b)) = (merged.last(), &seg.1) {
            if leaves[*a] == leaves[*b] {
                continue;
            }
        }
        merged.push(seg);
    }
    let inner_names: Vec<Option<String>> =
        merged.iter().map(|(_, o, _)| matches!(o, Outer::Inner(_)).then(|| g.fresh("lo"))).collect();
    let starts: Vec<u64> = merged.iter().map(|s| s.0).collect();
    let locs: Vec<Option<SourceLoc>> = merged.iter().map(|s| s.2.clone()).collect();
    let target = |k: usize| match &merged[k].1 {
        Outer::Const(i) => name(&leaves[*i]),
        Outer::Inner(_) => inner_names[k].clone().expect("an inner segment has a label"),
    };
    tree(g, R2, false, &starts, &locs, &target, 0, starts.len() - 1);
    for (k, seg) in merged.iter().enumerate() {
        if let Outer::Inner(inner) = &seg.1 {
            g.bind(inner_names[k].clone().expect("an inner segment has a label"));
            let starts: Vec<u64> = inner.iter().map(|x| x.0).collect();
            let locs: Vec<Option<SourceLoc>> = inner.iter().map(|x| x.2.clone()).collect();
            let target = |m: usize| name(&leaves[inner[m].1]);
            tree(g, R3, false, &starts, &locs, &target, 0, starts.len() - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phantom_dsl::values::parse_cidr;

    fn members(cidrs: &[(&str, usize)]) -> Vec<Cidr> {
        cidrs.iter().map(|(s, _)| parse_cidr(s).unwrap()).collect()
    }

    /// Interval lookup by scanning (the search the program does).
    fn set_of(iv: &Intervals, a: u128) -> &[usize] {
        let i = iv.starts.partition_point(|&s| s <= a) - 1;
        &iv.sets[i]
    }

    #[test]
    fn intervals_give_the_classes_whose_cidrs_contain_an_address() {
        for (spec, v6) in [
            (
                vec![
                    ("10.0.0.0/8", 0),
                    ("10.1.0.0/16", 1),
                    ("10.1.2.3", 2),
                    ("0.0.0.0/0", 3),
                    ("255.255.255.255", 0),
                    ("10.1.0.0/16", 0),
                    ("192.168.0.0/23", 1),
                ],
                false,
            ),
            (
                vec![
                    ("2001:db8::/32", 0),
                    ("2001:db8:1::/48", 1),
                    ("::/0", 2),
                    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1),
                    ("2001:db8::1:0/112", 0),
                    ("2001:db8::ffff:ffff:ffff:ffff", 1),
                ],
                true,
            ),
        ] {
            let cidrs = members(&spec);
            let ms: Vec<Member<'_>> = cidrs
                .iter()
                .zip(&spec)
                .enumerate()
                .map(|(rule, (cidr, &(_, class)))| Member { cidr, class, rule, loc: None })
                .collect();
            let iv = flatten(&ms, 4);
            assert_eq!(iv.starts[0], 0);
            assert!(iv.starts.windows(2).all(|w| w[0] < w[1]));
            assert!(iv.sets.windows(2).all(|w| w[0] != w[1]), "merged");
            let mut probes = vec![0u128, if v6 { u128::MAX } else { u128::from(u32::MAX) }];
            for c in &cidrs {
                let (s, e) = range(c);
                probes.extend([s, e, s.wrapping_sub(1), e.wrapping_add(1), s + (e - s) / 2]);
            }
            let top = if v6 { u128::MAX } else { u128::from(u32::MAX) };
            for a in probes.into_iter().filter(|&a| a <= top) {
                let ip = if v6 { IpAddr::V6(a.into()) } else { IpAddr::V4((a as u32).into()) };
                let want: Vec<usize> = (0..4)
                    .filter(|&k| spec.iter().zip(&cidrs).any(|((_, c), cidr)| *c == k && cidr.contains(ip)))
                    .collect();
                assert_eq!(set_of(&iv, a), want.as_slice(), "{ip}");
            }
        }
    }
}
