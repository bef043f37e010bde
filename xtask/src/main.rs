//! `cargo xtask`: the project's automation, in Rust so that it runs wherever
//! cargo does.
//!
//! - `run`: compile every example policy, write bundles, print summaries
//! - `test`: the one test command (system packages, fmt, build, tests, policies, static binaries, VM tier)
//! - `bench <name>`: benchmarks with a peer measured in the same run
//! - `dist`: the release binaries, statically linked (static PIE)
//! - `fuzz <target>`: cargo-fuzz targets (nightly)
//! - `vm-test`: the VM tier, BPF-LSM tests in a VM with a BPF-LSM kernel

mod bench;
mod demo;
mod deps;
mod dist;
mod fuzz;
mod run;
mod test;
mod util;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "xtask", bin_name = "cargo xtask", about = "Phantom project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compile every policies/*.yaml, write bundles to target/phantom/bundles/, print summaries.
    Run(run::Args),
    /// Install test dependencies, then fmt check, build, test, check the example policies, build and try the static binaries, and run the VM tier.
    Test(test::Args),
    /// Run a benchmark (`cargo xtask bench` lists them).
    Bench(bench::Args),
    /// Build the release binaries (phantom, phantom-policy) as static PIE executables; prints their paths.
    Dist(dist::Args),
    /// Run a cargo-fuzz target with the nightly toolchain.
    Fuzz(fuzz::Args),
    /// Boot Debian's 6.12 kernel with BPF-LSM in a VM (virtme-ng) and run the VM test tier inside (root).
    VmTest(vm::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    util::remember_caller_dir();
    // Every path below is relative to the workspace root, whatever the
    // caller's directory.
    if let Err(e) = std::env::set_current_dir(util::workspace_root()) {
        eprintln!("xtask: cannot enter the workspace root: {e}");
        return ExitCode::from(2);
    }
    let result: Result<ExitCode> = match cli.command {
        Command::Run(args) => run::main(&args),
        Command::Test(args) => test::main(&args),
        Command::Bench(args) => bench::main(&args),
        Command::Dist(args) => dist::main(&args),
        Command::Fuzz(args) => fuzz::main(&args),
        Command::VmTest(args) => vm::main(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
