//! `cargo xtask bench <name>`: benchmarks that compare us with a peer in the
//! same run and report ratios (never absolute numbers alone: machines
//! differ). Benchmarks live in `bench/<name>.rs` and register in [`BENCHES`];
//! this file holds the registry, the timing harness and the report.
//!
//! A debug build of xtask re-runs itself with `--release` first: timing
//! unoptimised code says nothing.

mod compile;
mod frontend;
mod lsm;
mod seccomp;
mod spawn;
mod spawn_cli;
mod xdp;

use crate::util;
use anyhow::{bail, Result};
use serde_json::json;
use std::cell::RefCell;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The benchmark to run; without one, lists them.
    name: Option<String>,
    /// Print one JSON document on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Time budget per case (ours and the peer share it).
    #[arg(long, default_value_t = 2.5)]
    seconds: f64,
}

/// One registered benchmark.
struct Bench {
    name: &'static str,
    about: &'static str,
    run: fn(&Harness) -> Result<Vec<Case>>,
}

/// Later benches (`seccomp`, `xdp`, `spawn`, `compile`) add a row here and a
/// module under `bench/`.
const BENCHES: &[Bench] = &[
    Bench {
        name: "frontend",
        about: "parse + check of policies (compile_str) vs a YAML parse with yaml-rust2",
        run: frontend::run,
    },
    Bench { name: "spawn", about: "sandbox spawn through the library API vs plain fork+exec (root)", run: spawn::run },
    Bench {
        name: "spawn-cli",
        about: "phantom run (warm/cold) vs bubblewrap with and without seccomp, plus memory (root)",
        run: spawn_cli::run,
    },
    Bench {
        name: "seccomp",
        about: "Docker profile filter: ours vs libseccomp vs seccompiler (insns/decision, getppid ns, build µs)",
        run: seccomp::run,
    },
    Bench {
        name: "compile",
        about:
            "IR -> all bundle artifacts (reference, 1,000 CIDRs) vs clang -O2 -target bpf on the C connect4 equivalent",
        run: compile::run,
    },
    Bench {
        name: "xdp",
        about: "XDP programs: ns/packet via BPF_PROG_TEST_RUN, 10/100/1,000 CIDR rules vs an XDP_PASS floor (root)",
        run: xdp::run,
    },
    Bench {
        name: "lsm",
        about:
            "ns per open() under our lsm_cgroup/file_open (10/100/1,000 rules) vs none vs Landlock, in the VM (root)",
        run: lsm::run,
    },
];

/// Timing settings shared by every case of a run.
#[derive(Debug)]
pub struct Harness {
    /// Budget for one measured function (a case has ours and its peer).
    budget: Duration,
    /// Progress goes to stderr unless quiet (JSON mode stays parseable).
    quiet: bool,
    /// Results that are not timings, added with [`Harness::section`].
    sections: RefCell<Vec<Section>>,
    /// Targets checked on those results, added with [`Harness::check`].
    checks: RefCell<Vec<Check>>,
}

/// Results a bench reports besides timed cases (instruction counts, ns per
/// syscall measured in a child, ...): a titled table, printed before the
/// cases, and the same data as JSON.
#[derive(Debug)]
pub struct Section {
    pub title: String,
    /// Column headings: the first column is left-aligned, the others
    /// right-aligned.
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Printed under the table.
    pub notes: Vec<String>,
    pub json: serde_json::Value,
}

/// A target checked on a section's numbers rather than on a case's p50.
#[derive(Debug)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    /// The numbers behind the verdict.
    pub detail: String,
}

/// Statistics of one measured function, in nanoseconds.
#[derive(Debug, Clone)]
pub struct Stats {
    pub iterations: usize,
    pub min: u64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub mean: u64,
}

impl Stats {
    fn json(&self) -> serde_json::Value {
        json!({ "iterations": self.iterations, "min_us": us(self.min), "p50_us": us(self.p50), "p95_us": us(self.p95), "p99_us": us(self.p99), "mean_us": us(self.mean) })
    }
}

/// A limit a case must stay under.
#[derive(Debug, Clone)]
pub struct Target {
    /// Upper bound for ours' p50, in nanoseconds.
    pub p50_below: u64,
}

/// One case: our measurement, optionally a peer's on the same input, and
/// optionally a target.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub detail: String,
    pub ours: Stats,
    pub peer: Option<(&'static str, Stats)>,
    pub target: Option<Target>,
}

impl Case {
    fn ratio(&self) -> Option<f64> {
        self.peer.as_ref().map(|(_, p)| self.ours.p50 as f64 / p.p50.max(1) as f64)
    }
    fn pass(&self) -> Option<bool> {
        self.target.as_ref().map(|t| self.ours.p50 < t.p50_below)
    }
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 1000.0 * 100.0).round() / 100.0
}

impl Harness {
    pub fn note(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// Adds a table of results that are not timings to the report.
    pub fn section(&self, section: Section) {
        self.sections.borrow_mut().push(section);
    }

    /// Adds a target checked on such results to the report.
    pub fn check(&self, name: impl Into<String>, pass: bool, detail: impl Into<String>) {
        self.checks.borrow_mut().push(Check { name: name.into(), pass, detail: detail.into() });
    }

    /// Warms up, picks an iteration count that fills the budget, then times
    /// every iteration separately.
    pub fn measure<T>(&self, label: &str, mut f: impl FnMut() -> T) -> Stats {
        // Warm-up: a tenth of the budget, at least three calls.
        let warm = self.budget / 10;
        let start = Instant::now();
        let mut calls = 0u32;
        while calls < 3 || start.elapsed() < warm {
            black_box(f());
            calls += 1;
        }
        let per_call = start.elapsed() / calls;
        let n = (self.budget.as_nanos() / per_call.as_nanos().max(1)).clamp(10, 5_000_000) as usize;
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            black_box(f());
            samples.push(t.elapsed().as_nanos() as u64);
        }
        let stats = Stats::from_samples(samples);
        self.note(&format!("  {label:<36} {n:>8} iterations, p50 {:.1} µs", us(stats.p50)));
        stats
    }

    /// Times `ours` and `peer` in turns, one call each, `setup` untimed
    /// before every call (e.g. waiting until a pool is full again). Both
    /// then see the same host: on a shared machine the noise drifts within
    /// seconds, so a floor timed before or after ours is another machine.
    pub fn measure_turns<T, U>(
        &self,
        labels: (&str, &str),
        mut setup: impl FnMut(),
        mut ours: impl FnMut() -> T,
        mut peer: impl FnMut() -> U,
    ) -> (Stats, Stats) {
        let mut timed = |samples: &mut Vec<u64>, ours_turn: bool| {
            setup();
            let t = Instant::now();
            if ours_turn {
                black_box(ours());
            } else {
                black_box(peer());
            }
            let took = t.elapsed();
            samples.push(took.as_nanos() as u64);
            took
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let start = Instant::now();
        let mut busy = Duration::ZERO;
        let mut pairs = 0u32;
        while pairs < 3 || start.elapsed() < self.budget / 10 {
            busy += timed(&mut a, true) + timed(&mut b, false);
            pairs += 1;
        }
        // The budget covers the timed calls of both; the setup may add to it.
        let n = (self.budget.as_nanos() / (busy / pairs).as_nanos().max(1)).clamp(10, 1_500) as usize;
        let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            timed(&mut a, true);
            timed(&mut b, false);
        }
        let (a, b) = (Stats::from_samples(a), Stats::from_samples(b));
        for (label, s) in [(labels.0, &a), (labels.1, &b)] {
            self.note(&format!("  {label:<36} {n:>8} iterations, p50 {:.1} µs (in turns)", us(s.p50)));
        }
        (a, b)
    }
}

impl Stats {
    /// Order statistics of per-call timings (ns).
    pub fn from_samples(mut samples: Vec<u64>) -> Stats {
        samples.sort_unstable();
        let n = samples.len();
        let pick = |q: f64| samples[((n - 1) as f64 * q).round() as usize];
        Stats {
            iterations: n,
            min: samples[0],
            p50: pick(0.50),
            p95: pick(0.95),
            p99: pick(0.99),
            mean: samples.iter().sum::<u64>() / n as u64,
        }
    }
}

fn list() -> String {
    BENCHES.iter().map(|b| format!("  {:<10} {}", b.name, b.about)).collect::<Vec<_>>().join("\n")
}

/// Re-runs `cargo xtask bench ...` from a release build of xtask.
fn rerun_in_release() -> Result<ExitCode> {
    eprintln!("==> building xtask and phantom with --release (timing a debug build says nothing)");
    // The CLI benches run the static `phantom` of `cargo xtask dist`: build
    // it now, or a stale one is measured.
    let dist = crate::dist::build(true)?;
    let status = util::cargo()
        .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .env("PHANTOM_XTASK_RELEASE", "1")
        .env("PHANTOM_DIST_DIR", dist)
        .status()?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn main(args: &Args) -> Result<ExitCode> {
    let Some(name) = &args.name else {
        println!("available benches:\n{}", list());
        return Ok(ExitCode::SUCCESS);
    };
    let Some(bench) = BENCHES.iter().find(|b| b.name == name) else {
        bail!("no bench `{name}`; available benches:\n{}", list());
    };
    if cfg!(debug_assertions) && std::env::var_os("PHANTOM_XTASK_RELEASE").is_none() {
        return rerun_in_release();
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be a positive number");
    }
    let harness = Harness {
        budget: Duration::from_secs_f64(args.seconds / 2.0),
        quiet: args.json,
        sections: RefCell::default(),
        checks: RefCell::default(),
    };
    harness.note(&format!("==> bench {}: {}", bench.name, bench.about));
    let cases = (bench.run)(&harness)?;
    let (sections, checks) = (harness.sections.take(), harness.checks.take());
    if args.json {
        print_json(bench.name, &cases, &sections, &checks);
    } else {
        print_table(bench.name, &cases, &sections, &checks);
    }
    // A missed target is reported, not an error: timings vary by machine
    // and load, and benches never gate tests.
    Ok(ExitCode::SUCCESS)
}

fn print_section(s: &Section) {
    println!();
    println!("{}", s.title);
    let mut width: Vec<usize> = s.columns.iter().map(|c| c.chars().count()).collect();
    for row in &s.rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells
            .iter()
            .zip(&width)
            .enumerate()
            .map(|(i, (c, &w))| if i == 0 { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect();
        format!("  {}", cells.join("  ")).trim_end().to_string()
    };
    println!("{}", line(&s.columns));
    for row in &s.rows {
        println!("{}", line(row));
    }
    for note in &s.notes {
        println!("  {note}");
    }
}

fn print_table(bench: &str, cases: &[Case], sections: &[Section], checks: &[Check]) {
    for s in sections {
        print_section(s);
    }
    println!();
    if !cases.is_empty() {
        println!(
            "{:<22} {:<12} {:>9} {:>10} {:>10} {:>10} {:>10} {:>11}",
            "case", "who", "iters", "min µs", "p50 µs", "p95 µs", "p99 µs", "ours/peer"
        );
    }
    for c in cases {
        let ratio = c.ratio().map_or_else(|| "-".into(), |r| format!("{r:.2}x"));
        let s = &c.ours;
        println!(
            "{:<22} {:<12} {:>9} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>11}",
            c.name,
            "phantom",
            s.iterations,
            us(s.min),
            us(s.p50),
            us(s.p95),
            us(s.p99),
            ratio
        );
        if let Some((who, p)) = &c.peer {
            println!(
                "{:<22} {:<12} {:>9} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                "",
                who,
                p.iterations,
                us(p.min),
                us(p.p50),
                us(p.p95),
                us(p.p99)
            );
        }
        println!("{:<22} {}", "", c.detail);
    }
    println!();
    for c in cases {
        if let (Some(t), Some(pass)) = (&c.target, c.pass()) {
            println!(
                "target {}: p50 < {:.0} µs: {} (p50 {:.2} µs)",
                c.name,
                us(t.p50_below),
                if pass { "PASS" } else { "MISS" },
                us(c.ours.p50)
            );
        }
    }
    for c in checks {
        println!("target {}: {} ({})", c.name, if c.pass { "PASS" } else { "MISS" }, c.detail);
    }
    let misses = cases.iter().filter(|c| c.pass() == Some(false)).count() + checks.iter().filter(|c| !c.pass).count();
    let sections = if sections.is_empty() { String::new() } else { format!(", {} tables", sections.len()) };
    println!("bench {bench}: {} cases{sections}, {} targets missed", cases.len(), misses);
}

fn print_json(bench: &str, cases: &[Case], sections: &[Section], checks: &[Check]) {
    let cases: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            json!({
                "case": c.name,
                "detail": c.detail,
                "ours": c.ours.json(),
                "peer": c.peer.as_ref().map(|(who, s)| { let mut v = s.json(); v["name"] = json!(who); v }),
                "ratio_p50": c.ratio().map(|r| (r * 1000.0).round() / 1000.0),
                "target": c.target.as_ref().map(|t| json!({ "p50_us_below": us(t.p50_below), "pass": c.pass() })),
            })
        })
        .collect();
    let sections: Vec<serde_json::Value> =
        sections.iter().map(|s| json!({ "title": s.title, "notes": s.notes, "data": s.json })).collect();
    let checks: Vec<serde_json::Value> =
        checks.iter().map(|c| json!({ "target": c.name, "pass": c.pass, "detail": c.detail })).collect();
    let doc =
        json!({ "bench": bench, "unit": "µs per iteration", "cases": cases, "tables": sections, "targets": checks });
    println!("{}", serde_json::to_string_pretty(&doc).expect("JSON values serialise"));
}
