//! `bench seccomp`: Docker's default profile (policies/docker-default.yaml)
//! as an x86_64 seccomp filter, built from the same IR rules by us, by
//! libseccomp 2.5 (binary-tree optimisation, through phantom-oracles) and by
//! seccompiler 0.5:
//!
//! a) cBPF instructions executed per decision, counted by our interpreter
//!    (`phantom_ebpf::seccomp::interp`) running each filter's sock_filter
//!    array, and the filters' lengths;
//! b) getppid() cost with each filter installed, in forked children, over
//!    a child without a filter (the floor);
//! c) build time from the IR to a sock_filter array.
//!
//! The same rules: the profile's rules that libseccomp can express (names
//! its syscall table knows, see `libseccomp::common_subset`); seccompiler
//! gets those too, minus the rules whose action is not its single match
//! action. Decisions of all filters are compared input by input, so the
//! counts compare filters that do the same thing.

use super::{Case, Harness, Section};
use anyhow::{bail, Context, Result};
use phantom_dsl::ir::SeccompPolicy;
use phantom_dsl::syscalls::Arch;
use phantom_dsl::values::{Action, ArgCondition, CmpOp};
use phantom_ebpf::seccomp::insn::{decode, Insn};
use phantom_ebpf::seccomp::{compile, interp, ret, SeccompData, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};
use phantom_oracles::libseccomp;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::hint::black_box;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const PROFILE: &str = "policies/docker-default.yaml";

/// TARGETS.md: at most 12 instructions for any decision on a syscall
/// without argument conditions.
const MAX_UNCONDITIONAL: usize = 12;

/// The per-number statistics cover syscall numbers 0..=LAST_NR.
const LAST_NR: u32 = 470;

/// getppid() calls per child, and children per filter (interleaved; the
/// median is reported).
const GETPPID_CALLS: u64 = 2_000_000;
const ROUNDS: usize = 7;

/// Instructions executed: max and mean over a set of inputs.
#[derive(Debug, Default, Clone, Copy)]
struct Agg {
    max: usize,
    sum: usize,
    n: usize,
}

impl Agg {
    fn add(&mut self, x: usize) {
        self.max = self.max.max(x);
        self.sum += x;
        self.n += 1;
    }
    fn mean(&self) -> f64 {
        self.sum as f64 / self.n.max(1) as f64
    }
    fn json(&self) -> serde_json::Value {
        json!({ "max": self.max, "mean": round2(self.mean()), "inputs": self.n })
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One filter of the comparison.
#[derive(Debug)]
struct Built {
    who: String,
    rules: usize,
    /// Decoded from the sock_filter bytes the builder produced.
    insns: Vec<Insn>,
}

impl Built {
    fn from_bytes(who: impl Into<String>, rules: usize, bytes: &[u8]) -> Result<Built> {
        let who = who.into();
        let insns =
            decode(bytes).with_context(|| format!("{who}: {} bytes is not a sock_filter array", bytes.len()))?;
        Ok(Built { who, rules, insns })
    }

    fn run(&self, data: &SeccompData) -> Result<interp::Outcome> {
        interp::run(&self.insns, data).with_context(|| format!("{} filter on {data:x?}", self.who))
    }

    /// For seccomp(2).
    fn sock_filters(&self) -> Vec<libc::sock_filter> {
        self.insns.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect()
    }
}

/// What kind of input a `SeccompData` is, for reporting disagreements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// x86_64, a number below the x32 bit.
    Native,
    /// x86_64, a number with the x32 bit (or -1).
    X32,
    /// Another architecture.
    Foreign,
}

fn kind(d: &SeccompData) -> Kind {
    if d.arch != AUDIT_ARCH_X86_64 {
        Kind::Foreign
    } else if d.nr >= X32_SYSCALL_BIT {
        Kind::X32
    } else {
        Kind::Native
    }
}

/// The x86_64 number of a rule.
fn x86_64_nr(r: &phantom_dsl::ir::SyscallRule) -> Option<u32> {
    r.numbers.iter().find(|n| n.0 == Arch::X86_64).map(|n| n.1)
}

/// The per-input comparison: every number 0..=LAST_NR with zero arguments;
/// for the syscalls with argument conditions, argument values on both sides
/// of every condition; the x32 numbers 0..=LAST_NR and -1; another
/// architecture.
fn inputs(policy: &SeccompPolicy) -> Vec<SeccompData> {
    let mut set: BTreeSet<(u32, u32, [u64; 6])> = BTreeSet::new();
    for nr in 0..=LAST_NR {
        set.insert((AUDIT_ARCH_X86_64, nr, [0; 6]));
        set.insert((AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | nr, [0; 6]));
    }
    set.insert((AUDIT_ARCH_X86_64, u32::MAX, [0; 6]));
    for nr in [0, 1, 39, 59, 110] {
        set.insert((AUDIT_ARCH_I386, nr, [0; 6]));
    }
    for r in &policy.rules {
        let Some(nr) = x86_64_nr(r) else { continue };
        let mut base = [0u64; 6];
        for c in &r.conditions {
            base[usize::from(c.arg)] = c.value;
        }
        set.insert((AUDIT_ARCH_X86_64, nr, base));
        for c in &r.conditions {
            let v = c.value;
            let mut xs = vec![v, v.wrapping_sub(1), v.wrapping_add(1), v | 1 << 32, v ^ 1 << 32, 0, u64::MAX];
            if let CmpOp::MaskedEq { mask } = c.op {
                xs.extend([v | !mask, mask, v | (mask & mask.wrapping_neg())]);
            }
            for x in xs {
                for mut args in [base, [0; 6]] {
                    args[usize::from(c.arg)] = x;
                    set.insert((AUDIT_ARCH_X86_64, nr, args));
                }
            }
        }
    }
    set.into_iter().map(|(arch, nr, args)| SeccompData::new(arch, nr, args)).collect()
}

// ------------------------------------------------------------ seccompiler

fn seccompiler_action(a: Action) -> Result<SeccompAction> {
    Ok(match a {
        Action::Allow => SeccompAction::Allow,
        Action::Errno(e) => SeccompAction::Errno(u32::from(e)),
        Action::KillProcess => SeccompAction::KillProcess,
        Action::KillThread => SeccompAction::KillThread,
        Action::Trap => SeccompAction::Trap,
        Action::Log => SeccompAction::Log,
        Action::Notify => bail!("seccompiler has no user-notification action"),
    })
}

fn seccompiler_condition(c: &ArgCondition) -> Result<SeccompCondition> {
    let op = match c.op {
        CmpOp::Eq => SeccompCmpOp::Eq,
        CmpOp::Ne => SeccompCmpOp::Ne,
        CmpOp::Lt => SeccompCmpOp::Lt,
        CmpOp::Le => SeccompCmpOp::Le,
        CmpOp::Gt => SeccompCmpOp::Gt,
        CmpOp::Ge => SeccompCmpOp::Ge,
        CmpOp::MaskedEq { mask } => SeccompCmpOp::MaskedEq(mask),
    };
    Ok(SeccompCondition::new(c.arg, SeccompCmpArgLen::Qword, op, c.value)?)
}

/// seccompiler has one match action per filter: the most common action of
/// the rules other than the default.
fn seccompiler_match_action(policy: &SeccompPolicy) -> Result<Action> {
    let mut count: BTreeMap<Action, usize> = BTreeMap::new();
    for r in policy.rules.iter().filter(|r| r.action != policy.default) {
        *count.entry(r.action).or_default() += 1;
    }
    let best = count.into_iter().max_by_key(|&(_, n)| n).map(|(a, _)| a);
    best.context("no rule with an action other than the default")
}

/// seccompiler's filter on x86_64 from the rules whose action is `matched`
/// (per syscall: unconditional if one of them is, else the rules' condition
/// lists, any of which matches), mismatch action = the default. The other
/// rules cannot be expressed and get the default; for one syscall, rules
/// are matched as a set, not in policy order.
fn seccompiler_filter(policy: &SeccompPolicy, matched: Action) -> Result<BpfProgram> {
    // None: the syscall matches without conditions.
    let mut chains: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    for r in policy.rules.iter().filter(|r| r.action == matched) {
        let Some(nr) = x86_64_nr(r) else { continue };
        let chain = chains.entry(i64::from(nr)).or_insert_with(|| Some(Vec::new()));
        if r.conditions.is_empty() {
            *chain = None;
        } else if let Some(chain) = chain {
            let conditions = r.conditions.iter().map(seccompiler_condition).collect::<Result<Vec<_>>>()?;
            chain.push(SeccompRule::new(conditions)?);
        }
    }
    let rules = chains.into_iter().map(|(nr, chain)| (nr, chain.unwrap_or_default())).collect();
    let filter = SeccompFilter::new(
        rules,
        seccompiler_action(policy.default)?,
        seccompiler_action(matched)?,
        TargetArch::x86_64,
    )?;
    Ok(BpfProgram::try_from(filter)?)
}

fn seccompiler_bytes(prog: &BpfProgram) -> Vec<u8> {
    prog.iter()
        .flat_map(|i| {
            let (c, k) = (i.code.to_le_bytes(), i.k.to_le_bytes());
            [c[0], c[1], i.jt, i.jf, k[0], k[1], k[2], k[3]]
        })
        .collect()
}

// ------------------------------------------------------------------ run

pub fn run(h: &Harness) -> Result<Vec<Case>> {
    if !cfg!(target_arch = "x86_64") {
        bail!("bench seccomp installs x86_64 filters; run it on an x86_64 host");
    }
    let c = phantom_dsl::compile_file(PROFILE.as_ref()).with_context(|| format!("reading {PROFILE}"))?;
    if c.has_errors() {
        bail!("{PROFILE} does not compile: {:?}", c.diagnostics.items);
    }
    let Some(policy) = c.policy else { bail!("{PROFILE} does not compile: {:?}", c.diagnostics.items) };
    let full = policy.seccomp;
    let arch = Arch::X86_64;
    let same = libseccomp::common_subset(&full, arch);
    let dropped: Vec<&str> = full
        .rules
        .iter()
        .filter(|r| !same.rules.iter().any(|s| s.name == r.name && s.conditions == r.conditions))
        .map(|r| r.name.as_str())
        .collect();
    let matched = seccompiler_match_action(&same)?;
    let left_out: Vec<String> =
        same.rules.iter().filter(|r| r.action != matched).map(|r| format!("{} -> {}", r.name, r.action)).collect();
    let left_out_nrs: BTreeSet<u32> = same.rules.iter().filter(|r| r.action != matched).filter_map(x86_64_nr).collect();
    let conditional: BTreeSet<u32> =
        full.rules.iter().filter(|r| !r.conditions.is_empty()).filter_map(x86_64_nr).collect();
    let (major, minor, micro) = libseccomp::version();
    let lib_name = format!("libseccomp {major}.{minor}.{micro}");
    h.note(&format!(
        "{PROFILE}: {} rules; {} that libseccomp can express ({} left out: {})",
        full.rules.len(),
        same.rules.len(),
        dropped.len(),
        dropped.join(", ")
    ));

    let ours_full = compile(&full, arch)?;
    let ours = compile(&same, arch)?;
    let sc_rules = same.rules.len() - left_out.len();
    let filters = [
        Built::from_bytes("phantom (whole profile)", full.rules.len(), &ours_full.to_bytes())?,
        Built::from_bytes("phantom", same.rules.len(), &ours.to_bytes())?,
        Built::from_bytes(lib_name.clone(), same.rules.len(), &libseccomp::export_bpf(&same, arch)?)?,
        Built::from_bytes("seccompiler 0.5", sc_rules, &seccompiler_bytes(&seccompiler_filter(&same, matched)?))?,
    ];

    let setup = Setup { same: &same, conditional, dropped, matched, left_out, left_out_nrs };
    instruction_counts(h, &filters, &setup)?;
    let [_, ours_f, lib_f, sc_f] = &filters;
    getppid_overhead(h, ours_f, lib_f, sc_f)?;

    // c) build time.
    h.note("build time, IR -> sock_filter array:");
    let t_ours = h.measure("phantom_ebpf::seccomp::compile", || compile(&same, arch));
    let t_lib = h.measure("libseccomp init + rules + export", || libseccomp::export_bpf(&same, arch));
    let t_sc = h.measure("seccompiler SeccompFilter -> BpfProgram", || seccompiler_filter(&same, matched));
    Ok(vec![
        Case {
            name: "build vs libseccomp".into(),
            detail: format!(
                "{} rules; {lib_name}: seccomp_init, attributes, seccomp_rule_add_array per rule, \
                 seccomp_export_bpf to a memfd and read back",
                same.rules.len()
            ),
            ours: t_ours.clone(),
            peer: Some(("libseccomp", t_lib)),
            target: None,
        },
        Case {
            name: "build vs seccompiler".into(),
            detail: format!(
                "{sc_rules} rules; seccompiler: BTreeMap of SeccompRule/SeccompCondition (Qword), \
                 SeccompFilter::new, BpfProgram::try_from"
            ),
            ours: t_ours,
            peer: Some(("seccompiler", t_sc)),
            target: None,
        },
    ])
}

// ------------------------------------------------- a) instruction counts

/// Counts of one filter.
#[derive(Debug, Default)]
struct Counts {
    all: Agg,
    unconditional: Agg,
    args: Agg,
}

fn counts(f: &Built, inputs: &[SeccompData], conditional: &BTreeSet<u32>) -> Result<Counts> {
    let mut c = Counts::default();
    for nr in 0..=LAST_NR {
        let n = f.run(&SeccompData::new(AUDIT_ARCH_X86_64, nr, [0; 6]))?.executed;
        c.all.add(n);
        if !conditional.contains(&nr) {
            c.unconditional.add(n);
        }
    }
    for d in inputs.iter().filter(|d| kind(d) == Kind::Native && conditional.contains(&d.nr)) {
        c.args.add(f.run(d)?.executed);
    }
    Ok(c)
}

/// What the instruction-count table compares and how the rule sets differ.
#[derive(Debug)]
struct Setup<'a> {
    /// The rules libseccomp can express, which rows 2-4 are built from.
    same: &'a SeccompPolicy,
    /// x86_64 numbers of the syscalls with argument conditions.
    conditional: BTreeSet<u32>,
    /// Profile rules libseccomp cannot express.
    dropped: Vec<&'a str>,
    /// seccompiler's single match action, and the rules it cannot express.
    matched: Action,
    left_out: Vec<String>,
    left_out_nrs: BTreeSet<u32>,
}

fn instruction_counts(h: &Harness, filters: &[Built; 4], setup: &Setup) -> Result<()> {
    let Setup { same, conditional, dropped, matched, left_out, left_out_nrs } = setup;
    let [whole, ours, lib, sc] = filters;
    let inputs = inputs(same);
    let counts: Vec<Counts> = filters.iter().map(|f| counts(f, &inputs, conditional)).collect::<Result<_>>()?;

    // Input by input: ours against libseccomp (instructions and decision),
    // seccompiler's decisions against ours.
    let (mut slower, mut faster, mut worst) = (0usize, 0usize, 0usize);
    let mut worst_input = None;
    let mut differ_lib = Vec::new();
    let mut differ_sc: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &inputs {
        let (a, b, s) = (ours.run(d)?, lib.run(d)?, sc.run(d)?);
        if a.executed > b.executed {
            slower += 1;
            if a.executed - b.executed > worst {
                worst = a.executed - b.executed;
                worst_input = Some(*d);
            }
        } else if a.executed < b.executed {
            faster += 1;
        }
        if a.ret != b.ret {
            differ_lib.push(format!(
                "nr {:#x} arch {:#x} args {:x?}: ours {:#x}, libseccomp {:#x}",
                d.nr, d.arch, d.args, a.ret, b.ret
            ));
        }
        if a.ret != s.ret {
            let why = match kind(d) {
                Kind::X32 => "x32 numbers (default action, not KILL_PROCESS)",
                Kind::Native if left_out_nrs.contains(&d.nr) => "inputs on left-out rules",
                Kind::Native | Kind::Foreign => "other inputs (unexpected)",
            };
            *differ_sc.entry(why).or_default() += 1;
        }
    }

    let columns = ["filter", "rules", "insns", "max", "mean", "max no-cond", "mean no-cond", "max cond-args"];
    let mut rows = Vec::new();
    let mut json_filters = Vec::new();
    for (f, c) in filters.iter().zip(&counts) {
        rows.push(vec![
            f.who.to_string(),
            f.rules.to_string(),
            f.insns.len().to_string(),
            c.all.max.to_string(),
            format!("{:.2}", c.all.mean()),
            c.unconditional.max.to_string(),
            format!("{:.2}", c.unconditional.mean()),
            c.args.max.to_string(),
        ]);
        json_filters.push(json!({
            "filter": f.who,
            "rules": f.rules,
            "insns": f.insns.len(),
            "all_syscalls": c.all.json(),
            "syscalls_without_conditions": c.unconditional.json(),
            "conditional_syscalls_argument_inputs": c.args.json(),
        }));
    }
    let [cw, co, cl, _] = &counts[..] else { unreachable!("four filters") };
    let differ_sc_text = if differ_sc.is_empty() {
        "none".to_string()
    } else {
        differ_sc.iter().map(|(why, n)| format!("{why}: {n}")).collect::<Vec<_>>().join("; ")
    };
    let worst_text =
        worst_input.map_or_else(String::new, |d| format!(", worst +{worst} (nr {} args {:x?})", d.nr, &d.args[..2]));
    let notes = vec![
        format!(
            "Instructions executed per decision, counted by phantom_ebpf::seccomp::interp on each filter's \
             sock_filter bytes; x86_64 numbers 0..={LAST_NR} with zero arguments (max/mean), the {} numbers \
             whose rules have no argument conditions (no-cond), and {} argument vectors around the conditions \
             of the {} conditional syscalls (cond-args).",
            counts[0].unconditional.n,
            counts[0].args.n,
            conditional.len(),
        ),
        format!(
            "Rows 2-4 are built from the same {} rules: the profile's {} minus {} that libseccomp {} cannot \
             express, names it does not know ({}); row 1 is our filter for the whole profile.",
            same.rules.len(),
            whole.rules,
            dropped.len(),
            lib.who.trim_start_matches("libseccomp "),
            dropped.join(", ")
        ),
        format!(
            "Per input ({} inputs: the numbers above, argument vectors, x32 numbers, -1, i386): ours executes \
             more instructions than libseccomp on {slower}{worst_text}, fewer on {faster}; decisions differ from \
             libseccomp's on {} (must be 0).",
            inputs.len(),
            differ_lib.len()
        ),
        format!(
            "seccompiler: one match action per filter ({}), so {} left out (the default action applies); \
             it has no x32 handling (the arch check passes x32 calls, whose numbers match no rule and get the \
             default, errno EPERM here, instead of KILL_PROCESS) and tests syscalls in a linear jeq chain. Its \
             decisions differ from ours on: {differ_sc_text}.",
            matched,
            if left_out.is_empty() { "no rule is".to_string() } else { left_out.join(", ") + " is" },
        ),
    ];
    for line in differ_lib.iter().take(5) {
        h.note(&format!("  decision differs from libseccomp: {line}"));
    }
    let differ_sc: serde_json::Map<String, serde_json::Value> =
        differ_sc.iter().map(|(why, n)| (why.to_string(), json!(n))).collect();
    h.section(Section {
        title: "a) cBPF instructions executed per decision (Docker profile, x86_64)".into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
        notes,
        json: json!({
            "filters": json_filters,
            "per_input": {
                "inputs": inputs.len(),
                "ours_slower_than_libseccomp": slower,
                "ours_faster_than_libseccomp": faster,
                "worst_excess": worst,
                "decisions_differ_from_libseccomp": differ_lib.len(),
                "seccompiler_decisions_differ_from_ours": differ_sc,
            },
            "seccompiler_left_out": left_out,
            "libseccomp_cannot_express": dropped,
        }),
    });

    let unc_max = cw.unconditional.max.max(co.unconditional.max);
    h.check(
        format!("seccomp insns <= {MAX_UNCONDITIONAL} for syscalls without conditions"),
        unc_max <= MAX_UNCONDITIONAL,
        format!("max {} whole profile, {} same rules as libseccomp", cw.unconditional.max, co.unconditional.max),
    );
    for (what, o, l) in
        [("0..=470", &co.all, &cl.all), ("syscalls without conditions", &co.unconditional, &cl.unconditional)]
    {
        h.check(
            format!("seccomp insns <= libseccomp, max and mean, {what}"),
            o.max <= l.max && o.mean() <= l.mean(),
            format!("ours max {} mean {:.2}; libseccomp max {} mean {:.2}", o.max, o.mean(), l.max, l.mean()),
        );
    }
    h.check(
        "seccomp insns <= libseccomp on every input",
        slower == 0 && differ_lib.is_empty(),
        format!("{slower} of {} inputs slower, {} decisions differ", inputs.len(), differ_lib.len()),
    );
    Ok(())
}

// --------------------------------------------------- b) getppid overhead

/// `ld [args[0]]; ret ALLOW`: loads an argument, so the kernel cannot
/// prove any syscall's result constant and its action cache stays empty;
/// installed under a filter, it makes the kernel run that filter on every
/// syscall.
const NO_CACHE: [Insn; 2] = [Insn::load(16), Insn::ret(ret::ALLOW)];

fn to_sock(insns: &[Insn]) -> Vec<libc::sock_filter> {
    insns.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect()
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write; CLOCK_MONOTONIC exists. In
    // the child this is a vDSO read (or clock_gettime(2), which every filter
    // here allows).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The child: installs `progs` (first to last), warms up, times `calls`
/// getppid() calls, writes the nanoseconds (u64, little-endian) to `out`
/// and `_exit`s. Exit codes 101-104 name the step that failed.
///
/// # Safety
///
/// Only in a child just forked from a single-threaded parent: it makes raw
/// syscalls on memory prepared before the fork and never returns.
unsafe fn child(progs: &[libc::sock_fprog], calls: u64, out: RawFd) -> ! {
    // SAFETY (each block below): plain syscalls with valid arguments;
    // `progs` and the instructions they point to were set up before the
    // fork and stay alive until _exit.
    unsafe {
        if !progs.is_empty() && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            libc::_exit(101);
        }
        for p in progs {
            let rc = libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, p as *const libc::sock_fprog);
            if rc != 0 {
                libc::_exit(102);
            }
        }
        if libc::syscall(libc::SYS_getppid) <= 0 {
            libc::_exit(103);
        }
        for _ in 0..calls / 10 {
            black_box(libc::syscall(libc::SYS_getppid));
        }
    }
    let start = now_ns();
    for _ in 0..calls {
        // SAFETY: getppid has no arguments and cannot fail.
        black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
    let ns = (now_ns() - start).to_le_bytes();
    // SAFETY: `ns` is 8 readable bytes; out is the pipe's write end.
    unsafe {
        if libc::write(out, ns.as_ptr().cast(), ns.len()) != ns.len() as isize {
            libc::_exit(104);
        }
        libc::_exit(0)
    }
}

/// ns per getppid() call in a forked child that installs `progs` first.
fn getppid_ns(progs: &[&[libc::sock_filter]], calls: u64) -> Result<f64> {
    let fprogs: Vec<libc::sock_fprog> = progs
        .iter()
        .map(|p| libc::sock_fprog { len: p.len() as u16, filter: p.as_ptr() as *mut libc::sock_filter })
        .collect();
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two descriptors; nothing else owns them.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: xtask is single-threaded here; the child runs `child` only.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked child.
        unsafe { child(&fprogs, calls, wr.as_raw_fd()) }
    }
    drop(wr);
    let mut buf = [0u8; 8];
    let read = File::from(rd).read_exact(&mut buf);
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        bail!("waitpid: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "the getppid child failed (wait status {status:#x}; exit 101: prctl, 102: seccomp, 103: getppid \
             denied, 104: write)"
        );
    }
    read.context("reading the child's timing")?;
    Ok(u64::from_le_bytes(buf) as f64 / calls as f64)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn getppid_overhead(h: &Harness, ours: &Built, lib: &Built, sc: &Built) -> Result<()> {
    let getppid = SeccompData::new(AUDIT_ARCH_X86_64, libc::SYS_getppid as u32, [0; 6]);
    let [e_ours, e_lib, e_sc] = [ours.run(&getppid)?, lib.run(&getppid)?, sc.run(&getppid)?].map(|o| o.executed);
    let progs = [ours.sock_filters(), lib.sock_filters(), sc.sock_filters()];
    let no_cache = to_sock(&NO_CACHE);
    let names = [
        ["no filter (floor)", "ld arg0; ret ALLOW (floor)"],
        [ours.who.as_str(); 2],
        [lib.who.as_str(); 2],
        [sc.who.as_str(); 2],
    ];
    // Per mode: the floor, then the three filters.
    let modes: [(&str, Vec<Vec<&[libc::sock_filter]>>); 2] = [
        ("as installed", vec![vec![], vec![&progs[0]], vec![&progs[1]], vec![&progs[2]]]),
        (
            "filter forced to run",
            vec![vec![&no_cache], vec![&no_cache, &progs[0]], vec![&no_cache, &progs[1]], vec![&no_cache, &progs[2]]],
        ),
    ];
    let variants: Vec<(usize, usize)> = (0..2).flat_map(|m| (0..4).map(move |i| (m, i))).collect();
    let mut samples = vec![Vec::new(); variants.len()];
    h.note(&format!("getppid(): {ROUNDS} rounds x {} children x {GETPPID_CALLS} calls, interleaved", variants.len()));
    for round in 0..ROUNDS {
        for k in 0..variants.len() {
            let v = (k + round) % variants.len();
            let (m, i) = variants[v];
            samples[v].push(getppid_ns(&modes[m].1[i], GETPPID_CALLS)?);
        }
        h.note(&format!("  round {}/{ROUNDS}", round + 1));
    }

    for (m, (mode, _)) in modes.iter().enumerate() {
        let s: Vec<&Vec<f64>> = (0..4).map(|i| &samples[m * 4 + i]).collect();
        let med: Vec<f64> = s.iter().map(|x| median(x)).collect();
        // Overhead: the median over rounds of (filter - floor) in the same
        // round, which cancels drift between rounds.
        let over: Vec<f64> =
            s.iter().map(|x| median(&x.iter().zip(s[0]).map(|(a, b)| a - b).collect::<Vec<_>>())).collect();
        let range = |x: &[f64]| x.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        // Noise only adds time: the fastest rounds are a second estimate.
        let floor_min = range(s[0]).0;
        let mut rows = Vec::new();
        let mut jrows = Vec::new();
        for i in 0..4 {
            let (lo, hi) = range(s[i]);
            let vs_lib = if i == 0 || over[2] < 1.0 { "-".to_string() } else { format!("{:.2}x", over[i] / over[2]) };
            rows.push(vec![
                names[i][m].to_string(),
                format!("{:.1}", med[i]),
                format!("{lo:.1}"),
                format!("{hi:.1}"),
                if i == 0 { "-".into() } else { format!("{:+.1}", over[i]) },
                if i == 0 { "-".into() } else { format!("{:+.1}", lo - floor_min) },
                vs_lib,
            ]);
            jrows.push(json!({
                "filter": names[i][m],
                "ns_per_call_median": round2(med[i]),
                "ns_per_call_rounds": s[i].iter().map(|x| round2(*x)).collect::<Vec<_>>(),
                "overhead_ns": if i == 0 { None } else { Some(round2(over[i])) },
                "overhead_ns_of_minima": if i == 0 { None } else { Some(round2(lo - floor_min)) },
            }));
        }
        let ratio = if over[2] > 0.0 { Some(round2(over[1] / over[2])) } else { None };
        let json = json!({
            "mode": mode,
            "calls_per_child": GETPPID_CALLS,
            "rounds": ROUNDS,
            "rows": jrows,
            "ours_over_libseccomp_overhead": ratio,
        });
        let notes = if m == 0 {
            vec![
                format!(
                    "Each child: prctl(NO_NEW_PRIVS), seccomp(SECCOMP_SET_MODE_FILTER), then {GETPPID_CALLS} \
                     getppid() calls via libc::syscall; ns per call, median (min, max) of {ROUNDS} rounds, \
                     children interleaved; overhead: median over rounds of (row - floor) in the same round, \
                     and (of minima) min(row) - min(floor)."
                ),
                "Not a comparison of filters: since Linux 5.11 the kernel emulates a filter at install time and \
                 skips it for the syscalls it allows whatever the arguments (seccomp's action cache). getppid is \
                 one for all three filters, so none of them runs here; the shared overhead is the seccomp entry \
                 path and the cache lookup, and differences between the rows are noise."
                    .to_string(),
            ]
        } else {
            vec![
                "Every child, the floor included, first installs `ld [args[0]]; ret ALLOW`, which loads an \
                 argument and so leaves the kernel's action cache empty: the filter under test then runs \
                 (JIT-compiled) on every call, and its overhead over this floor is the cost of running it. \
                 The target is checked here."
                    .to_string(),
                format!(
                    "Instructions the filters execute for getppid: {} {e_ours}, {} {e_lib}, {} {e_sc}.",
                    ours.who, lib.who, sc.who
                ),
            ]
        };
        h.section(Section {
            title: format!("b) getppid() ns per call, {mode}"),
            columns: ["filter", "ns/call", "min", "max", "overhead ns", "(of minima)", "vs libseccomp"]
                .iter()
                .map(|c| c.to_string())
                .collect(),
            rows,
            notes,
            json,
        });
        if m == 1 {
            // How far apart ours and libseccomp are round by round: when
            // the range spans 0, the difference is below what this machine
            // resolves.
            let d: Vec<f64> = s[1].iter().zip(s[2]).map(|(a, b)| a - b).collect();
            let (lo, hi) = range(&d);
            h.check(
                "seccomp getppid overhead <= libseccomp's (filter run on every call)",
                over[1] <= over[2],
                format!(
                    "ours {:+.1} ns, libseccomp {:+.1} ns, seccompiler {:+.1} ns; ours - libseccomp per round: \
                     median {:+.1}, range {lo:+.1}..{hi:+.1} ns",
                    over[1],
                    over[2],
                    over[3],
                    median(&d)
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seccompiler_decides_like_ours_but_for_x32_and_left_out_rules() {
        let c = phantom_dsl::compile_file(&crate::util::workspace_root().join(PROFILE)).unwrap();
        let same = libseccomp::common_subset(&c.policy.unwrap().seccomp, Arch::X86_64);
        let matched = seccompiler_match_action(&same).unwrap();
        assert_eq!(matched, Action::Allow);
        let sc = Built::from_bytes("seccompiler", 0, &seccompiler_bytes(&seccompiler_filter(&same, matched).unwrap()))
            .unwrap();
        let ours = Built::from_bytes("ours", 0, &compile(&same, Arch::X86_64).unwrap().to_bytes()).unwrap();
        let left_out: BTreeSet<u32> = same.rules.iter().filter(|r| r.action != matched).filter_map(x86_64_nr).collect();
        let mut compared = 0;
        for d in inputs(&same) {
            if kind(&d) == Kind::X32 || left_out.contains(&d.nr) {
                continue;
            }
            assert_eq!(ours.run(&d).unwrap().ret, sc.run(&d).unwrap().ret, "{d:x?}");
            compared += 1;
        }
        assert!(compared > 500, "{compared} inputs compared");
    }
}
