//! `cargo xtask dist`: the release binaries (`phantom`, `phantom-policy`)
//! as static PIE executables.
//!
//! Why static: every `phantom run` is a process start, and a dynamically
//! linked `phantom` spends about 0.3 ms of it in the dynamic loader
//! (mapping libc, resolving symbols, relocating). glibc's `crt-static`
//! removes that and keeps address-space randomisation (static PIE). The
//! flag goes to target crates only (`--target` with the host triple):
//! proc-macro crates cannot be built static.
//!
//! The relocations a static PIE applies to itself at start-up are packed
//! (`-z pack-relative-relocs`, DT_RELR: glibc 2.36, binutils 2.38): 1.7 KB
//! to read instead of about 140 KB, and `phantom --version` 0.04-0.08 ms
//! faster here (`perf stat -r 400`, 3 pairs in turns).

use crate::util;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = std::process::Command::new(rustc).arg("-vV").output().context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV printed no host line")
}

/// Builds the static release binaries; returns their directory.
pub fn build(quiet: bool) -> Result<PathBuf> {
    let triple = host_triple()?;
    let var = format!("CARGO_TARGET_{}_RUSTFLAGS", triple.to_uppercase().replace('-', "_"));
    let mut flags = std::env::var(&var).unwrap_or_default();
    flags.push_str(" -C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs");
    let mut cmd = util::cargo();
    cmd.args(["build", "--release", "--package", "phantom-cli", "--target", &triple]).env(&var, flags.trim());
    if quiet {
        cmd.arg("--quiet");
    }
    if !cmd.status()?.success() {
        bail!(
            "cargo build of the static release binaries failed (is glibc's static libc.a installed? Debian: libc6-dev)"
        );
    }
    // Absolute: the bench hands it to a process of its own.
    Ok(util::workspace_root().join(util::target_dir()).join(&triple).join("release"))
}

pub fn main(_args: &Args) -> Result<ExitCode> {
    let dir = build(false)?;
    for b in ["phantom", "phantom-policy"] {
        println!("{}", dir.join(b).display());
    }
    Ok(ExitCode::SUCCESS)
}
