//! `cargo xtask bench <name>`: benchmarks that compare us with a peer in the
//! same run and report ratios (never absolute numbers alone: machines
//! differ). Benchmarks live in `bench/<name>.rs` and register in [`BENCHES`];
//! this file holds the registry, the timing harness and the report.
//!
//! A debug build of xtask re-runs itself with `--release` first: timing
//! unoptimised code says nothing.

mod frontend;

use crate::util;
use anyhow::{bail, Result};
use serde_json::json;
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
const BENCHES: &[Bench] = &[Bench {
    name: "frontend",
    about: "parse + check of policies (compile_str) vs a YAML parse with yaml-rust2",
    run: frontend::run,
}];

/// Timing settings shared by every case of a run.
#[derive(Debug)]
pub struct Harness {
    /// Budget for one measured function (a case has ours and its peer).
    budget: Duration,
    /// Progress goes to stderr unless quiet (JSON mode stays parseable).
    quiet: bool,
}

/// Statistics of one measured function, in nanoseconds.
#[derive(Debug, Clone)]
pub struct Stats {
    pub iterations: usize,
    pub min: u64,
    pub p50: u64,
    pub p95: u64,
    pub mean: u64,
}

impl Stats {
    fn json(&self) -> serde_json::Value {
        json!({ "iterations": self.iterations, "min_us": us(self.min), "p50_us": us(self.p50), "p95_us": us(self.p95), "mean_us": us(self.mean) })
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
        samples.sort_unstable();
        let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        let stats = Stats {
            iterations: n,
            min: samples[0],
            p50: pick(0.50),
            p95: pick(0.95),
            mean: samples.iter().sum::<u64>() / n as u64,
        };
        self.note(&format!("  {label:<36} {n:>8} iterations, p50 {:.1} µs", us(stats.p50)));
        stats
    }
}

fn list() -> String {
    BENCHES.iter().map(|b| format!("  {:<10} {}", b.name, b.about)).collect::<Vec<_>>().join("\n")
}

/// Re-runs `cargo xtask bench ...` from a release build of xtask.
fn rerun_in_release() -> Result<ExitCode> {
    eprintln!("==> building xtask with --release (timing a debug build says nothing)");
    let status = util::cargo()
        .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .env("PHANTOM_XTASK_RELEASE", "1")
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
    let harness = Harness { budget: Duration::from_secs_f64(args.seconds / 2.0), quiet: args.json };
    harness.note(&format!("==> bench {}: {}", bench.name, bench.about));
    let cases = (bench.run)(&harness)?;
    if args.json {
        print_json(bench.name, &cases);
    } else {
        print_table(bench.name, &cases);
    }
    // A missed target is reported, not an error: timings vary by machine
    // and load, and benches never gate tests.
    Ok(ExitCode::SUCCESS)
}

fn print_table(bench: &str, cases: &[Case]) {
    println!();
    println!(
        "{:<22} {:<12} {:>9} {:>10} {:>10} {:>10} {:>11}",
        "case", "who", "iters", "min µs", "p50 µs", "p95 µs", "ours/peer"
    );
    for c in cases {
        let ratio = c.ratio().map_or_else(|| "-".into(), |r| format!("{r:.2}x"));
        let s = &c.ours;
        println!(
            "{:<22} {:<12} {:>9} {:>10.2} {:>10.2} {:>10.2} {:>11}",
            c.name,
            "phantom",
            s.iterations,
            us(s.min),
            us(s.p50),
            us(s.p95),
            ratio
        );
        if let Some((who, p)) = &c.peer {
            println!(
                "{:<22} {:<12} {:>9} {:>10.2} {:>10.2} {:>10.2}",
                "",
                who,
                p.iterations,
                us(p.min),
                us(p.p50),
                us(p.p95)
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
    let misses = cases.iter().filter(|c| c.pass() == Some(false)).count();
    println!("bench {bench}: {} cases, {} targets missed", cases.len(), misses);
}

fn print_json(bench: &str, cases: &[Case]) {
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
    let doc = json!({ "bench": bench, "unit": "µs per iteration", "cases": cases });
    println!("{}", serde_json::to_string_pretty(&doc).expect("JSON values serialise"));
}
