//! Shared by the file_open tests: compiling the program for the
//! interpreter, running one open, and random policies and paths biased to
//! the patterns' boundaries.
// Reason: each test crate uses a different subset of these helpers.
#![allow(dead_code)]

#[path = "../ebpf_interp/mod.rs"]
pub mod ebpf_interp;
pub mod file_open_env;
mod layout;
pub mod reference;

#[macro_use]
#[path = "../gen/mod.rs"]
mod gen;
pub use gen::{origin, Rng};

pub use layout::LAYOUT;
use phantom_dsl::ir::{Access, AuditMode, Effect, ExecPolicy, FsRule, PathPattern, Policy};
use phantom_ebpf::audit::{self, AuditRecord, Object};
use phantom_ebpf::lsm::{self, Hook, Options, FMODE_EXEC};
use reference::Expect;
use std::collections::BTreeSet;

/// A policy with nothing but what file_open reads.
pub fn empty_policy() -> Policy {
    let c = phantom_dsl::compile_str("fo.yaml", "profile: fo\n");
    assert!(!c.has_errors(), "{:#?}", c.diagnostics);
    c.policy.unwrap()
}

pub fn pat(s: &str) -> PathPattern {
    PathPattern::parse(s)
}

/// A deny rule at `line`.
pub fn deny(p: &str, access: &[Access], line: u32) -> FsRule {
    FsRule {
        effect: Effect::Deny,
        path: pat(p),
        access: access.iter().copied().collect(),
        from_landlock_section: false,
        origin: origin(line),
    }
}

pub fn exec_list(entries: &[(&str, u32)]) -> ExecPolicy {
    ExecPolicy { allow: entries.iter().map(|(p, l)| (pat(p), origin(*l))).collect() }
}

/// The file_open program's bytes for the interpreter, and its length in
/// instructions.
pub fn program(policy: &Policy, extra: &[PathPattern]) -> (Vec<u8>, usize) {
    let opts = Options { exec_extra: extra.to_vec(), ..Options::default() };
    let progs = lsm::compile(policy, &opts).unwrap();
    let open = progs.get(Hook::FileOpen).expect("a file_open program");
    let mut enc = open.encode(&LAYOUT).unwrap();
    enc.bind_map(audit::SCRATCH_MAP, file_open_env::SCRATCH_FD).unwrap();
    enc.bind_map(audit::RINGBUF_MAP, file_open_env::RINGBUF_FD).unwrap();
    (enc.to_bytes(), open.insns.len())
}

/// A fresh per-CPU scratch value.
pub fn scratch() -> Vec<u8> {
    vec![0xa5; audit::SCRATCH_SIZE as usize]
}

/// Runs one open and checks it against the reference; `Err` says how they
/// differ.
pub fn check(
    prog: &[u8],
    scratch: &mut [u8],
    policy: &Policy,
    extra: &[PathPattern],
    (f_mode, f_flags): (u32, u32),
    path: &[u8],
) -> Result<Expect, String> {
    let access = f_mode | (f_flags & FMODE_EXEC);
    let want = reference::expect(policy, extra, access, path);
    let mut run = file_open_env::Run { layout: LAYOUT, f_mode, f_flags, path, scratch };
    let out = file_open_env::run(prog, &mut run)?;
    let complain = policy.audit == AuditMode::Complain;
    let got = match out.records.as_slice() {
        [] => Expect::Allow,
        [one] => {
            let r = AuditRecord::decode(one).map_err(|e| e.to_string())?;
            let verdict = if complain { audit::Verdict::Complain } else { audit::Verdict::Deny };
            if r.verdict != verdict.code() || r.hook != Hook::FileOpen.id() || r.detail != access {
                return Err(format!("record header {r:?}"));
            }
            if !matches!(r.object, Object::Path(_)) {
                return Err(format!("record object {:?}", r.object));
            }
            // The raw bytes: the path and its NUL, nothing after it.
            let object = one[audit::HEADER_LEN..].to_vec();
            Expect::Deny { file: r.file, rule: r.rule, line: r.line, object }
        }
        many => return Err(format!("{} records", many.len())),
    };
    let allowed = want == Expect::Allow || complain;
    if got != want || out.r0 != u64::from(allowed) {
        return Err(format!("want {want:?}, got {got:?} returning {}", out.r0));
    }
    Ok(want)
}

/// Components that share prefixes, so patterns nest and differ by a byte.
const WORDS: [&str; 12] = ["a", "ab", "b", "tmp", "tmpx", "usr", "lib", "python3", "python3.11", ".git", "é", "x-y"];

fn words(rng: &mut Rng, max: u64) -> String {
    let n = rng.below(max + 1);
    (0..n).map(|_| format!("/{}", rng.pick(&WORDS))).collect()
}

/// A random pattern as the front end writes them (sometimes `/`, often a
/// prefix glob cut inside a component), rarely as hand-made IR can have
/// them (a trailing `/`, a glob right after a `/`).
pub fn random_pattern(rng: &mut Rng) -> PathPattern {
    let mut path = words(rng, 4);
    if path.is_empty() {
        path.push('/');
    }
    let mut glob = rng.chance(30);
    if glob && rng.chance(60) && path.len() > 1 {
        let cut = 1 + rng.below(path.len() as u64 - 1) as usize;
        if path.is_char_boundary(cut) {
            path.truncate(cut);
        }
    }
    if rng.chance(4) && path != "/" {
        path.push('/');
        glob = rng.chance(50);
    }
    PathPattern { path, prefix_glob: glob }
}

pub fn random_access(rng: &mut Rng) -> BTreeSet<Access> {
    let mut a: BTreeSet<Access> = Access::ALL.into_iter().filter(|_| rng.chance(35)).collect();
    if a.is_empty() && rng.chance(50) {
        a = Access::ALL.into_iter().collect();
    }
    a
}

/// Paths near `patterns`: each pattern itself, one byte shorter or
/// longer, with a `/` or a component after it; plus random and odd ones.
pub fn paths_near(rng: &mut Rng, patterns: &[PathPattern]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![b"/".to_vec(), b"".to_vec(), b"//".to_vec(), b"pipe:[42]".to_vec()];
    for p in patterns {
        let b = p.path.as_bytes().to_vec();
        out.push(b.clone());
        out.push(b[..b.len().saturating_sub(1)].to_vec());
        for tail in [&b"/"[..], b"x", b"/x", b"/tmp", b"\xff", b"."] {
            out.push([&b[..], tail].concat());
        }
        out.push([&b[..], words(rng, 2).as_bytes()].concat());
    }
    for _ in 0..out.len() / 2 + 8 {
        let mut p = words(rng, 5).into_bytes();
        if rng.chance(10) {
            p.push(b'/');
        }
        out.push(p);
    }
    out
}

/// `f_mode`/`f_flags` pairs covering each access bit, combinations, an
/// exec open, a backing file and unrelated bits.
pub const MODES: [(u32, u32); 10] = [
    (lsm::FMODE_READ, 0),
    (lsm::FMODE_WRITE, 0),
    (lsm::FMODE_READ | lsm::FMODE_WRITE, 0o2),
    (lsm::FMODE_READ, FMODE_EXEC),
    (lsm::FMODE_READ | 0x4 | 0x8, FMODE_EXEC | 0o100000),
    (lsm::FMODE_WRITE | lsm::FMODE_CREATED, 0o100),
    (lsm::FMODE_CREATED, 0),
    (0x4 | 0x8, 0),
    (lsm::FMODE_READ | lsm::FMODE_BACKING, FMODE_EXEC),
    (lsm::FMODE_READ | lsm::FMODE_WRITE | lsm::FMODE_CREATED, FMODE_EXEC),
];
