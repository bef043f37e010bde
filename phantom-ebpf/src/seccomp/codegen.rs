//! Emits the symbolic program for one architecture: prologue (architecture
//! and x32 checks), the dispatch tree, and the argument checks.
//!
//! 64-bit arguments are compared a 32-bit half at a time (cBPF registers are
//! 32 bits): `args[i]` is at offset `16 + 8 * i`, the low word first
//! (x86_64 and aarch64 are little-endian), the high word 4 bytes later.
//! Comparisons are unsigned; ordered ones test the high words first and look
//! at the low words only when the high words are equal.

use super::asm::{Asm, Label};
use super::insn::{Insn, AND_K, JEQ_K, JGE_K, JGT_K, JSET_K};
use super::tree::{segments, Limits, Segment, Tree};
use super::{action_value, ret, SeccompError, X32_SYSCALL_BIT};
use phantom_dsl::ir::{SeccompPolicy, SyscallRule};
use phantom_dsl::syscalls::{self, Arch};
use phantom_dsl::values::{ArgCondition, CmpOp};
use std::collections::BTreeMap;

/// `offsetof(struct seccomp_data, nr)`.
pub(crate) const OFF_NR: u32 = 0;
/// `offsetof(struct seccomp_data, arch)`.
pub(crate) const OFF_ARCH: u32 = 4;
/// `offsetof(struct seccomp_data, args)`.
pub(crate) const OFF_ARGS: u32 = 16;

fn arg_lo(arg: u8) -> u32 {
    OFF_ARGS + 8 * u32::from(arg)
}

fn arg_hi(arg: u8) -> u32 {
    arg_lo(arg) + 4
}

fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}

fn lo(v: u64) -> u32 {
    v as u32
}

/// One argument test in the form the emitter handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    Eq {
        arg: u8,
        v: u64,
    },
    Ne {
        arg: u8,
        v: u64,
    },
    /// `arg & mask == v`, `mask != 0`, `v` inside `mask`.
    Masked {
        arg: u8,
        mask: u64,
        v: u64,
    },
    /// `arg >= v` (`v >= 1`), or its negation `arg < v`.
    Ge {
        arg: u8,
        v: u64,
        neg: bool,
    },
}

enum Simplified {
    Always,
    Never,
    Test(Test),
}

fn simplify(c: &ArgCondition) -> Simplified {
    let (arg, v) = (c.arg, c.value);
    match c.op {
        CmpOp::Eq => Simplified::Test(Test::Eq { arg, v }),
        CmpOp::Ne => Simplified::Test(Test::Ne { arg, v }),
        CmpOp::MaskedEq { mask } if v & !mask != 0 => Simplified::Never,
        CmpOp::MaskedEq { mask: 0 } => Simplified::Always,
        CmpOp::MaskedEq { mask } => Simplified::Test(Test::Masked { arg, mask, v }),
        CmpOp::Ge if v == 0 => Simplified::Always,
        CmpOp::Ge => Simplified::Test(Test::Ge { arg, v, neg: false }),
        CmpOp::Gt if v == u64::MAX => Simplified::Never,
        CmpOp::Gt => Simplified::Test(Test::Ge { arg, v: v + 1, neg: false }),
        CmpOp::Lt if v == 0 => Simplified::Never,
        CmpOp::Lt => Simplified::Test(Test::Ge { arg, v, neg: true }),
        CmpOp::Le if v == u64::MAX => Simplified::Always,
        CmpOp::Le => Simplified::Test(Test::Ge { arg, v: v + 1, neg: true }),
    }
}

/// The tests of one rule (all must hold).
#[derive(Debug, Clone)]
struct Conj {
    tests: Vec<Test>,
    line: u32,
}

/// Adjacent rules of one syscall with the same action (any may match).
#[derive(Debug, Clone)]
struct Group {
    value: u32,
    conjs: Vec<Conj>,
}

/// What one number range does.
#[derive(Debug, Clone)]
enum Leaf {
    Ret {
        value: u32,
        line: Option<u32>,
    },
    /// Groups in order, then `fallback`.
    Chain {
        groups: Vec<Group>,
        fallback: u32,
        fallback_line: Option<u32>,
    },
}

fn line_of(line: u32) -> Option<u32> {
    (line != 0).then_some(line)
}

/// One line if all agree, else none.
fn common_line(mut lines: impl Iterator<Item = u32>) -> Option<u32> {
    let first = lines.next()?;
    lines.all(|l| l == first).then_some(first).and_then(line_of)
}

fn leaf_for(rules: &[&SyscallRule], default: u32, default_line: Option<u32>) -> Leaf {
    let mut groups: Vec<Group> = Vec::new();
    let (mut fallback, mut fallback_line) = (default, default_line);
    for r in rules {
        let mut tests = Vec::with_capacity(r.conditions.len());
        let mut never = false;
        for c in &r.conditions {
            match simplify(c) {
                Simplified::Always => {}
                Simplified::Never => never = true,
                Simplified::Test(t) => tests.push(t),
            }
        }
        if never {
            continue;
        }
        let value = action_value(r.action);
        if tests.is_empty() {
            // Matches every call: later rules are unreachable.
            (fallback, fallback_line) = (value, line_of(r.origin.line));
            break;
        }
        let conj = Conj { tests, line: r.origin.line };
        match groups.last_mut() {
            Some(g) if g.value == value => g.conjs.push(conj),
            _ => groups.push(Group { value, conjs: vec![conj] }),
        }
    }
    // Trailing rules with the fallback's action change nothing.
    while groups.last().is_some_and(|g| g.value == fallback) {
        groups.pop();
    }
    if groups.is_empty() {
        Leaf::Ret { value: fallback, line: fallback_line }
    } else {
        Leaf::Chain { groups, fallback, fallback_line }
    }
}

fn merge(a: &Leaf, b: &Leaf) -> Option<Leaf> {
    match (a, b) {
        (Leaf::Ret { value: va, line: la }, Leaf::Ret { value: vb, line: lb }) if va == vb => {
            Some(Leaf::Ret { value: *va, line: if la == lb { *la } else { None } })
        }
        _ => None,
    }
}

/// Builds the symbolic program for `policy` on `arch` (`audit` is its
/// `AUDIT_ARCH_*`).
pub(crate) fn generate(policy: &SeccompPolicy, arch: Arch, audit: u32) -> Result<Asm, SeccompError> {
    let with_x32 = arch == Arch::X86_64 && policy.allow_x32;
    let mut per_nr: BTreeMap<u32, Vec<&SyscallRule>> = BTreeMap::new();
    for rule in &policy.rules {
        if let Some(c) = rule.conditions.iter().find(|c| c.arg > 5) {
            return Err(SeccompError::BadArgument { syscall: rule.name.clone(), line: rule.origin.line, arg: c.arg });
        }
        for &(a, nr) in &rule.numbers {
            if a == arch {
                per_nr.entry(nr).or_default().push(rule);
            }
        }
        if with_x32 {
            if let Some(nr) = syscalls::number(Arch::X32, &rule.name) {
                per_nr.entry(nr).or_default().push(rule);
            }
        }
    }
    let default = action_value(policy.default);
    let default_line = line_of(policy.default_origin.line);
    let points: BTreeMap<u32, Leaf> =
        per_nr.iter().map(|(&nr, rules)| (nr, leaf_for(rules, default, default_line))).collect();
    // Without x32, numbers with bit 30 never reach the tree.
    let max = if arch == Arch::X86_64 && !with_x32 { X32_SYSCALL_BIT - 1 } else { u32::MAX };
    if let Some((&nr, _)) = points.range(max.saturating_add(1)..).next().filter(|_| max < u32::MAX) {
        return Err(SeccompError::Internal(format!("syscall number {nr:#x} is in the x32 range")));
    }
    let segs = segments(points, Leaf::Ret { value: default, line: default_line }, max, merge);
    let limits = limits(arch, with_x32, &segs);
    let tree = Tree::build_with(&segs, |l| matches!(l, Leaf::Ret { value, .. } if *value == default), limits);

    let mut a = Asm::new();
    let kill = a.label();
    let arch_ok = a.label();
    a.emit(Insn::load(OFF_ARCH), default_line);
    a.jump(JEQ_K, audit, arch_ok, kill, default_line);
    if arch == Arch::X86_64 && !with_x32 {
        // ld nr; if nr >= 0x40000000 { if nr == -1 default else kill }
        let (tree_start, high, dflt) = (a.label(), a.label(), a.label());
        a.bind(arch_ok);
        a.emit(Insn::load(OFF_NR), default_line);
        a.jump(JGE_K, X32_SYSCALL_BIT, high, tree_start, default_line);
        a.bind(high);
        a.jump(JEQ_K, u32::MAX, dflt, kill, default_line);
        a.bind(kill);
        a.emit(Insn::ret(ret::KILL_PROCESS), default_line);
        a.bind(dflt);
        a.emit(Insn::ret(default), default_line);
        a.bind(tree_start);
    } else {
        a.bind(kill);
        a.emit(Insn::ret(ret::KILL_PROCESS), default_line);
        a.bind(arch_ok);
        a.emit(Insn::load(OFF_NR), default_line);
    }
    emit_tree(&mut a, &tree);
    Ok(a)
}

/// Instructions executed before the tree: the architecture check and the
/// number load, plus the x32 check on x86_64.
fn prologue_len(arch: Arch, with_x32: bool) -> u32 {
    if arch == Arch::X86_64 && !with_x32 {
        4
    } else {
        3
    }
}

/// The target for a syscall without argument conditions, in instructions.
const UNCONDITIONAL_TARGET: u32 = 12;

/// Depth budgets for the tree's segments: an unconditional decision within
/// [`UNCONDITIONAL_TARGET`] instructions (prologue, comparisons, return).
/// Segments with argument checks have no budget.
fn limits(arch: Arch, with_x32: bool, segs: &[Segment<Leaf>]) -> Limits<'static> {
    let ours = prologue_len(arch, with_x32);
    let cap = UNCONDITIONAL_TARGET - ours - 1;
    let conditional: Vec<(u32, u32)> =
        segs.iter().filter(|s| matches!(s.leaf, Leaf::Chain { .. })).map(|s| (s.lo, s.hi)).collect();
    let own = move |lo: u32, hi: u32| {
        if conditional.iter().any(|&(a, b)| a <= hi && lo <= b) {
            u32::MAX
        } else {
            cap
        }
    };
    Limits { budget: Some(Box::new(own)), hints: Vec::new() }
}

fn emit_tree(a: &mut Asm, tree: &Tree<'_, Leaf>) {
    match tree {
        Tree::Leaf(leaf) => emit_leaf(a, leaf),
        Tree::Node { split, left, right } => {
            let (l, r) = (a.label(), a.label());
            a.jump(JGE_K, *split, r, l, None);
            a.bind(l);
            emit_tree(a, left);
            a.bind(r);
            emit_tree(a, right);
        }
        Tree::Chain { points, rest } => {
            let targets: Vec<Label> = points.iter().map(|_| a.label()).collect();
            for (&(nr, _), &t) in points.iter().zip(&targets) {
                let no = a.label();
                a.jump(JEQ_K, nr, t, no, None);
                a.bind(no);
            }
            emit_leaf(a, rest);
            for (&(_, leaf), &t) in points.iter().zip(&targets) {
                a.bind(t);
                emit_leaf(a, leaf);
            }
        }
    }
}

fn emit_leaf(a: &mut Asm, leaf: &Leaf) {
    match leaf {
        Leaf::Ret { value, line } => a.emit(Insn::ret(*value), *line),
        Leaf::Chain { groups, fallback, fallback_line } => {
            for g in groups {
                let (ok, fail) = (a.label(), a.label());
                emit_group(a, g, ok, fail);
                a.bind(ok);
                a.emit(Insn::ret(g.value), common_line(g.conjs.iter().map(|c| c.line)));
                a.bind(fail);
            }
            a.emit(Insn::ret(*fallback), *fallback_line);
        }
    }
}

/// Jumps to `ok` if any conjunction of the group holds, else to `fail`.
fn emit_group(a: &mut Asm, g: &Group, ok: Label, fail: Label) {
    // Single tests (`==`, `!=`, ordered) on the same argument become one
    // set test; the order of alternatives inside a group does not matter
    // (same action).
    let mut sets: Vec<(u8, Vec<&Conj>)> = Vec::new();
    for c in &g.conjs {
        if let [t] = c.tests[..] {
            if let Some(arg) = ranges_of(t).map(|_| test_arg(t)) {
                match sets.iter_mut().find(|s| s.0 == arg) {
                    Some(s) => s.1.push(c),
                    None => sets.push((arg, vec![c])),
                }
            }
        }
    }
    sets.retain(|s| s.1.len() >= 2);
    let in_set =
        |c: &Conj| matches!(c.tests[..], [t] if ranges_of(t).is_some() && sets.iter().any(|s| s.0 == test_arg(t)));
    let rest: Vec<&Conj> = g.conjs.iter().filter(|c| !in_set(c)).collect();
    let pieces = sets.len() + rest.len();
    let mut done = 0;
    let next_fail = |a: &mut Asm, done: &mut usize| {
        *done += 1;
        if *done == pieces {
            fail
        } else {
            a.label()
        }
    };
    for (arg, conjs) in &sets {
        let f = next_fail(a, &mut done);
        emit_set(a, *arg, conjs, ok, f);
        if f != fail {
            a.bind(f);
        }
    }
    for c in rest {
        let f = next_fail(a, &mut done);
        emit_conj(a, c, ok, f);
        if f != fail {
            a.bind(f);
        }
    }
}

fn test_arg(t: Test) -> u8 {
    match t {
        Test::Eq { arg, .. } | Test::Ne { arg, .. } | Test::Masked { arg, .. } | Test::Ge { arg, .. } => arg,
    }
}

/// The values a test accepts as inclusive ranges; `None` for masked tests.
fn ranges_of(t: Test) -> Option<Vec<(u64, u64)>> {
    Some(match t {
        Test::Eq { v, .. } => vec![(v, v)],
        Test::Ne { v, .. } => {
            let mut r = Vec::new();
            if v > 0 {
                r.push((0, v - 1));
            }
            if v < u64::MAX {
                r.push((v + 1, u64::MAX));
            }
            r
        }
        Test::Ge { v, neg: false, .. } => vec![(v, u64::MAX)],
        // v >= 1 (see `simplify`).
        Test::Ge { v, neg: true, .. } => vec![(0, v - 1)],
        Test::Masked { .. } => return None,
    })
}

/// Sorts and merges overlapping or adjacent ranges.
fn normalize<T: Copy + Ord + Into<u64>>(mut r: Vec<(T, T)>) -> Vec<(T, T)> {
    r.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        match out.last_mut() {
            Some(last) if lo.into() <= last.1.into().saturating_add(1) => {
                if hi > last.1 {
                    last.1 = hi;
                }
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// What one 32-bit word decides: all values in the set, none, or the other
/// word must be looked at (its ranges in the set).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    In,
    Out,
    Lo(Vec<(u32, u32)>),
}

/// Cuts the high words `0..=u32::MAX` by what they decide for `set`.
fn hi_words(set: &[(u64, u64)]) -> Vec<Segment<Word>> {
    let mut partial: BTreeMap<u32, Vec<(u32, u32)>> = BTreeMap::new();
    let mut full: Vec<(u32, u32)> = Vec::new();
    for &(x, y) in set {
        let (hx, hy) = (hi(x), hi(y));
        if hx == hy {
            partial.entry(hx).or_default().push((lo(x), lo(y)));
        } else {
            partial.entry(hx).or_default().push((lo(x), u32::MAX));
            if hy > hx + 1 {
                full.push((hx + 1, hy - 1));
            }
            partial.entry(hy).or_default().push((0, lo(y)));
        }
    }
    let mut items: Vec<(u32, u32, Word)> = full.into_iter().map(|(x, y)| (x, y, Word::In)).collect();
    for (h, r) in partial {
        let r = normalize(r);
        let w = if r == [(0, u32::MAX)] { Word::In } else { Word::Lo(r) };
        items.push((h, h, w));
    }
    cover(items)
}

/// Fills the numbers `items` (disjoint) leave out with [`Word::Out`] and
/// merges neighbours that decide the same.
fn cover(mut items: Vec<(u32, u32, Word)>) -> Vec<Segment<Word>> {
    items.sort_by_key(|i| i.0);
    let mut out: Vec<Segment<Word>> = Vec::new();
    let mut push = |lo: u32, hi: u32, leaf: Word| match out.last_mut() {
        Some(last) if last.leaf == leaf => last.hi = hi,
        _ => out.push(Segment { lo, hi, leaf }),
    };
    let mut next = Some(0u32);
    for (x, y, w) in items {
        if let Some(n) = next.filter(|&n| n < x) {
            push(n, x - 1, Word::Out);
        }
        push(x, y, w);
        next = y.checked_add(1);
    }
    if let Some(n) = next {
        push(n, u32::MAX, Word::Out);
    }
    out
}

/// `arg` is in the union of the values the (single-test) conjunctions
/// accept. The high word is dispatched once; where it leaves the decision
/// to the low word, single values are tested first (highest first, like
/// libseccomp orders `==` tests), then the ranges left.
fn emit_set(a: &mut Asm, arg: u8, conjs: &[&Conj], ok: Label, fail: Label) {
    let line = common_line(conjs.iter().map(|c| c.line));
    let set = normalize(conjs.iter().flat_map(|c| ranges_of(c.tests[0]).expect("set tests have ranges")).collect());
    // The line of the `==` test a single value comes from, if just one.
    let eq_line = |v: u64| {
        let mut l = conjs.iter().filter(|c| matches!(c.tests[0], Test::Eq { v: w, .. } if w == v)).map(|c| c.line);
        let first = l.next();
        if l.next().is_none() {
            first.and_then(line_of)
        } else {
            line
        }
    };
    let his = hi_words(&set);
    let tree = Tree::build_with(&his, |w| *w == Word::Out, Limits::default());
    let target = |w: &Word| match w {
        Word::In => Some(ok),
        Word::Out => Some(fail),
        Word::Lo(_) => None,
    };
    a.emit(Insn::load(arg_hi(arg)), line);
    let lo_word = |a: &mut Asm, h: u32, r: &[(u32, u32)]| {
        a.emit(Insn::load(arg_lo(arg)), line);
        let points: Vec<u32> = r.iter().rev().filter(|x| x.0 == x.1).map(|x| x.0).collect();
        let ranges: Vec<(u32, u32, Word)> = r.iter().filter(|x| x.0 != x.1).map(|&(x, y)| (x, y, Word::In)).collect();
        let los = cover(ranges);
        let lo_tree = Tree::build_with(&los, |w| *w == Word::Out, Limits::default());
        let after = match &lo_tree {
            Tree::Leaf(w) => target(w).expect("low words decide"),
            _ => a.label(),
        };
        for (i, &p) in points.iter().enumerate() {
            let no = if i + 1 == points.len() { after } else { a.label() };
            a.jump(JEQ_K, p, ok, no, eq_line(u64::from(h) << 32 | u64::from(p)));
            if no != after {
                a.bind(no);
            }
        }
        if !matches!(lo_tree, Tree::Leaf(_)) {
            a.bind(after);
            emit_search(a, &lo_tree, &target, &mut |_, _| unreachable!("low words decide"), line);
        }
    };
    let his_lookup: Vec<(u32, Vec<(u32, u32)>)> =
        his.iter().filter_map(|s| if let Word::Lo(r) = &s.leaf { Some((s.lo, r.clone())) } else { None }).collect();
    emit_search(
        a,
        &tree,
        &target,
        &mut |a, w| {
            if let Word::Lo(r) = w {
                let h = his_lookup.iter().find(|x| &x.1 == r).map_or(0, |x| x.0);
                lo_word(a, h, r);
            }
        },
        line,
    );
}

/// Emits a search over 32-bit words already in `A`: leaves with a
/// `target` are jumped to, the others get `body` in place.
fn emit_search<W>(
    a: &mut Asm,
    tree: &Tree<'_, W>,
    target: &dyn Fn(&W) -> Option<Label>,
    body: &mut dyn FnMut(&mut Asm, &W),
    line: Option<u32>,
) {
    let dest = |a: &mut Asm, t: &Tree<'_, W>| match t {
        Tree::Leaf(w) => target(w).map_or_else(|| (a.label(), false), |l| (l, true)),
        _ => (a.label(), false),
    };
    match tree {
        Tree::Leaf(w) => match target(w) {
            // Always true.
            Some(l) => a.jump(JGE_K, 0, l, l, line),
            None => body(a, w),
        },
        Tree::Node { split, left, right } => {
            let (l, l_done) = dest(a, left);
            let (r, r_done) = dest(a, right);
            a.jump(JGE_K, *split, r, l, line);
            if !l_done {
                a.bind(l);
                emit_search(a, left, target, body, line);
            }
            if !r_done {
                a.bind(r);
                emit_search(a, right, target, body, line);
            }
        }
        Tree::Chain { points, rest } => {
            let dests: Vec<(Label, bool)> =
                points.iter().map(|(_, w)| target(w).map_or_else(|| (a.label(), false), |l| (l, true))).collect();
            let (rest_l, rest_done) = target(rest).map_or_else(|| (a.label(), false), |l| (l, true));
            for (i, (&(nr, _), &(t, _))) in points.iter().zip(&dests).enumerate() {
                let no = if i + 1 == points.len() { rest_l } else { a.label() };
                a.jump(JEQ_K, nr, t, no, line);
                if i + 1 < points.len() {
                    a.bind(no);
                }
            }
            if !rest_done {
                a.bind(rest_l);
                body(a, rest);
            }
            for (&(_, w), &(t, done)) in points.iter().zip(&dests) {
                if !done {
                    a.bind(t);
                    body(a, w);
                }
            }
        }
    }
}

fn emit_conj(a: &mut Asm, c: &Conj, ok: Label, fail: Label) {
    for (i, t) in c.tests.iter().enumerate() {
        let yes = if i + 1 == c.tests.len() { ok } else { a.label() };
        emit_test(a, *t, yes, fail, line_of(c.line));
        if yes != ok {
            a.bind(yes);
        }
    }
}

/// Jumps to `t` if the test holds, else to `f`.
fn emit_test(a: &mut Asm, test: Test, t: Label, f: Label, line: Option<u32>) {
    match test {
        Test::Eq { arg, v } | Test::Ne { arg, v } => {
            let (t, f) = if matches!(test, Test::Eq { .. }) { (t, f) } else { (f, t) };
            let n = a.label();
            a.emit(Insn::load(arg_hi(arg)), line);
            a.jump(JEQ_K, hi(v), n, f, line);
            a.bind(n);
            a.emit(Insn::load(arg_lo(arg)), line);
            a.jump(JEQ_K, lo(v), t, f, line);
        }
        Test::Masked { arg, mask, v } => {
            // A word whose mask half is 0 holds trivially (v is inside mask).
            let words: Vec<(u32, u32, u32)> = [(arg_hi(arg), hi(mask), hi(v)), (arg_lo(arg), lo(mask), lo(v))]
                .into_iter()
                .filter(|w| w.1 != 0)
                .collect();
            for (i, &(off, m, wv)) in words.iter().enumerate() {
                let yes = if i + 1 == words.len() { t } else { a.label() };
                a.emit(Insn::load(off), line);
                if m == u32::MAX {
                    a.jump(JEQ_K, wv, yes, f, line);
                } else if wv == 0 {
                    a.jump(JSET_K, m, f, yes, line);
                } else if m.is_power_of_two() {
                    // wv is inside m and not 0, so wv == m.
                    a.jump(JSET_K, m, yes, f, line);
                } else {
                    a.emit(Insn { code: AND_K, jt: 0, jf: 0, k: m }, line);
                    a.jump(JEQ_K, wv, yes, f, line);
                }
                if yes != t {
                    a.bind(yes);
                }
            }
        }
        Test::Ge { arg, v, neg } => {
            let (t, f) = if neg { (f, t) } else { (t, f) };
            let (vh, vl) = (hi(v), lo(v));
            a.emit(Insn::load(arg_hi(arg)), line);
            if vl == 0 {
                // v >= 1, so vh >= 1: the high words decide.
                a.jump(JGE_K, vh, t, f, line);
                return;
            }
            let n = a.label();
            if vh == 0 {
                a.jump(JGT_K, 0, t, n, line);
            } else if vh == u32::MAX {
                a.jump(JEQ_K, vh, n, f, line);
            } else {
                let eq = a.label();
                a.jump(JGT_K, vh, t, eq, line);
                a.bind(eq);
                a.jump(JEQ_K, vh, n, f, line);
            }
            a.bind(n);
            a.emit(Insn::load(arg_lo(arg)), line);
            a.jump(JGE_K, vl, t, f, line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{interp, SeccompData};

    fn conj(t: Test) -> Conj {
        Conj { tests: vec![t], line: 7 }
    }

    /// `emit_set` alone: returns 1 if the value is in the set, else 0.
    fn set_program(tests: &[Test]) -> Vec<Insn> {
        let conjs: Vec<Conj> = tests.iter().map(|&t| conj(t)).collect();
        let refs: Vec<&Conj> = conjs.iter().collect();
        let mut a = Asm::new();
        let (ok, fail) = (a.label(), a.label());
        emit_set(&mut a, 2, &refs, ok, fail);
        a.bind(ok);
        a.emit(Insn::ret(1), None);
        a.bind(fail);
        a.emit(Insn::ret(0), None);
        a.assemble().unwrap().0
    }

    /// Instructions executed (the return included) and the answer.
    fn run(insns: &[Insn], v: u64) -> (usize, bool) {
        let out = interp::run(insns, &SeccompData::new(0, 0, [0, 0, v, 0, 0, 0])).unwrap();
        (out.executed, out.ret == 1)
    }

    fn probes(tests: &[Test]) -> Vec<u64> {
        let mut out = vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 32, (1 << 32) - 1, 0x8000_0000];
        for t in tests {
            let v = match *t {
                Test::Eq { v, .. } | Test::Ne { v, .. } | Test::Ge { v, .. } | Test::Masked { v, .. } => v,
            };
            for x in [v, v.wrapping_sub(1), v.wrapping_add(1), v ^ 1 << 32, v | 0xffff_ffff_0000_0000] {
                out.push(x);
            }
        }
        out
    }

    fn holds(t: Test, x: u64) -> bool {
        match t {
            Test::Eq { v, .. } => x == v,
            Test::Ne { v, .. } => x != v,
            Test::Ge { v, neg, .. } => (x >= v) != neg,
            Test::Masked { mask, v, .. } => x & mask == v,
        }
    }

    fn check(tests: &[Test]) -> Vec<Insn> {
        let insns = set_program(tests);
        for x in probes(tests) {
            let want = tests.iter().any(|&t| holds(t, x));
            assert_eq!(run(&insns, x).1, want, "{tests:?} on {x:#x}");
        }
        insns
    }

    #[test]
    fn ranges_normalise() {
        assert_eq!(ranges_of(Test::Ne { arg: 0, v: 0 }), Some(vec![(1, u64::MAX)]));
        assert_eq!(ranges_of(Test::Ge { arg: 0, v: 5, neg: true }), Some(vec![(0, 4)]));
        assert_eq!(normalize(vec![(5u64, 9u64), (0, 2), (3, 4), (20, 30), (25, 26)]), vec![(0, 9), (20, 30)]);
        assert_eq!(normalize(vec![(0u32, u32::MAX), (7, 8)]), vec![(0, u32::MAX)]);
    }

    #[test]
    fn high_words_dispatch_once() {
        // {0} and [3, max]: the high word 0 leaves it to the low word, any
        // other high word is in.
        let segs = hi_words(&[(0, 0), (3, u64::MAX)]);
        let got: Vec<(u32, u32, Word)> = segs.into_iter().map(|s| (s.lo, s.hi, s.leaf)).collect();
        assert_eq!(got, vec![(0, 0, Word::Lo(vec![(0, 0), (3, u32::MAX)])), (1, u32::MAX, Word::In)]);
        // A range spanning high words.
        let segs = hi_words(&[(0x1_0000_0005, 0x3_0000_0000)]);
        let got: Vec<(u32, u32, Word)> = segs.into_iter().map(|s| (s.lo, s.hi, s.leaf)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0, Word::Out),
                (1, 1, Word::Lo(vec![(5, u32::MAX)])),
                (2, 2, Word::In),
                (3, 3, Word::Lo(vec![(0, 0)])),
                (4, u32::MAX, Word::Out),
            ]
        );
    }

    #[test]
    fn sets_agree_with_their_tests() {
        let ge = |v, neg| Test::Ge { arg: 2, v, neg };
        let eq = |v| Test::Eq { arg: 2, v };
        let ne = |v| Test::Ne { arg: 2, v };
        check(&[ge(3, false), ge(1, true)]);
        check(&[ge(38, true), eq(39), ge(41, false)]);
        check(&[eq(0), eq(8), eq(0x20000), eq(0x20008), eq(0xffff_ffff)]);
        check(&[eq(5), eq(0x1_0000_0005), eq(0xffff_ffff_0000_0000), eq(u64::MAX)]);
        check(&[ne(5), eq(5)]);
        check(&[ne(5), ne(6)]);
        check(&[ge(0x1_0000_0000, true), ge(0x2_0000_0001, false)]);
        check(&[ge(0x1_0000_0005, false), ge(0x1_0000_0003, true), eq(0x1_0000_0004)]);
        check(&[ge(u64::MAX, false), ge(1, true)]);
    }

    #[test]
    fn sets_test_single_values_first() {
        // Docker's socket rule: `< 38`, `== 39`, `> 40`. 39 is decided
        // after the high word's load and test, the low word's load and one
        // comparison (then the return).
        let insns = check(&[
            Test::Ge { arg: 2, v: 38, neg: true },
            Test::Eq { arg: 2, v: 39 },
            Test::Ge { arg: 2, v: 41, neg: false },
        ]);
        assert_eq!(run(&insns, 39), (5, true));
        assert_eq!(run(&insns, 1 << 32), (3, true));
        assert!(run(&insns, 38).0 <= 7 && run(&insns, 40).0 <= 7);
        // Equal values: highest first, as libseccomp tests them.
        let insns = check(&[Test::Eq { arg: 2, v: 0 }, Test::Eq { arg: 2, v: 8 }, Test::Eq { arg: 2, v: 0xffff_ffff }]);
        assert_eq!(run(&insns, 0xffff_ffff), (5, true));
        assert_eq!(run(&insns, 0), (7, true));
    }

    #[test]
    fn set_that_covers_everything_still_jumps() {
        let insns = check(&[Test::Ge { arg: 2, v: 5, neg: true }, Test::Ge { arg: 2, v: 5, neg: false }]);
        assert_eq!(run(&insns, 77), (3, true));
    }
}
