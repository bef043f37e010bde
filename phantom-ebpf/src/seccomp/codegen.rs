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
use super::tree::{segments, Tree};
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
    let tree = Tree::build(&segs, |l| matches!(l, Leaf::Ret { value, .. } if *value == default));

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
    // Single `==` tests on the same argument become one set test; the order
    // of alternatives inside a group does not matter (same action).
    let mut sets: Vec<(u8, Vec<(u64, u32)>)> = Vec::new();
    for c in &g.conjs {
        if let [Test::Eq { arg, v }] = c.tests[..] {
            match sets.iter_mut().find(|s| s.0 == arg) {
                Some(s) => s.1.push((v, c.line)),
                None => sets.push((arg, vec![(v, c.line)])),
            }
        }
    }
    sets.retain(|s| s.1.len() >= 2);
    let in_set = |c: &Conj| matches!(c.tests[..], [Test::Eq { arg, .. }] if sets.iter().any(|s| s.0 == arg));
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
    for (arg, values) in &sets {
        let f = next_fail(a, &mut done);
        emit_set(a, *arg, values, ok, f);
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

/// `arg` is one of `values`: the high word is tested once per distinct
/// high half, then the low words.
fn emit_set(a: &mut Asm, arg: u8, values: &[(u64, u32)], ok: Label, fail: Label) {
    let mut by_hi: Vec<(u32, Vec<(u32, u32)>)> = Vec::new();
    for &(v, line) in values {
        match by_hi.iter_mut().find(|h| h.0 == hi(v)) {
            Some(h) => {
                if !h.1.iter().any(|x| x.0 == lo(v)) {
                    h.1.push((lo(v), line));
                }
            }
            None => by_hi.push((hi(v), vec![(lo(v), line)])),
        }
    }
    let line = common_line(values.iter().map(|v| v.1));
    let blocks: Vec<Label> = by_hi.iter().map(|_| a.label()).collect();
    a.emit(Insn::load(arg_hi(arg)), line);
    for (i, (h, los)) in by_hi.iter().enumerate() {
        let no = if i + 1 == by_hi.len() { fail } else { a.label() };
        a.jump(JEQ_K, *h, blocks[i], no, common_line(los.iter().map(|l| l.1)));
        if no != fail {
            a.bind(no);
        }
    }
    for (i, (_, los)) in by_hi.iter().enumerate() {
        a.bind(blocks[i]);
        a.emit(Insn::load(arg_lo(arg)), common_line(los.iter().map(|l| l.1)));
        for (j, &(l, line)) in los.iter().enumerate() {
            let no = if j + 1 == los.len() { fail } else { a.label() };
            a.jump(JEQ_K, l, ok, no, line_of(line));
            if no != fail {
                a.bind(no);
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
