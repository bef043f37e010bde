//! `cargo xtask fuzz <target>`: runs a cargo-fuzz target from `fuzz/` with
//! the nightly toolchain (libFuzzer needs sanitizer flags that only nightly
//! accepts). Not part of `cargo xtask test`.
//!
//! New inputs go to `fuzz/corpus/<target>/` (ignored by git); the seeds in
//! `fuzz/seeds/<target>/` are read but never written. Crashes land in
//! `fuzz/artifacts/<target>/`.

use crate::util;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, ExitCode};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The fuzz target (one of fuzz/fuzz_targets/*.rs without `.rs`).
    target: String,
    /// How long to fuzz.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Extra arguments for libFuzzer (after `--`), e.g. `-- -jobs=4`.
    #[arg(last = true)]
    libfuzzer_args: Vec<String>,
}

/// `cargo` through rustup, so that `+nightly` selects the toolchain. The
/// variables that pin the toolchain of the cargo running us are removed.
fn rustup_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    for var in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC", "RUSTC_WRAPPER", "CARGO"] {
        cmd.env_remove(var);
    }
    cmd
}

fn targets() -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir("fuzz/fuzz_targets")
        .context("reading fuzz/fuzz_targets")?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".rs")).map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

fn has_nightly() -> bool {
    Command::new("rustup").args(["toolchain", "list"]).output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("nightly"))
    })
}

fn ensure_cargo_fuzz() -> Result<()> {
    if util::has_program("cargo", &["fuzz", "--version"]) {
        return Ok(());
    }
    println!("==> cargo-fuzz is not installed; installing it with `cargo install cargo-fuzz`");
    util::run(rustup_cargo().args(["install", "cargo-fuzz"]))
}

pub fn main(args: &Args) -> Result<ExitCode> {
    let available = targets()?;
    if !available.contains(&args.target) {
        bail!("no fuzz target `{}`; available: {}", args.target, available.join(", "));
    }
    if !has_nightly() {
        bail!("fuzzing needs the nightly toolchain, which is not installed; install it with:\n    rustup toolchain install nightly");
    }
    ensure_cargo_fuzz()?;

    let root = util::workspace_root();
    let corpus = root.join("fuzz/corpus").join(&args.target);
    let seeds = root.join("fuzz/seeds").join(&args.target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut cmd = rustup_cargo();
    cmd.args(["+nightly", "fuzz", "run", &args.target]).arg(&corpus);
    if Path::new(&seeds).is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--").arg(format!("-max_total_time={}", args.seconds)).args(&args.libfuzzer_args);
    println!(
        "==> fuzzing `{}` for {} s (new inputs: fuzz/corpus/{0}/, crashes: fuzz/artifacts/{0}/)",
        args.target, args.seconds
    );
    util::run(&mut cmd)?;
    println!("==> fuzz {}: no crash in {} s", args.target, args.seconds);
    Ok(ExitCode::SUCCESS)
}
