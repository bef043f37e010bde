//! Small helpers shared by the subcommands: paths, running commands, and
//! formatting durations.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

static CALLER_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Records the directory xtask was started in (call before changing to the
/// workspace root).
pub fn remember_caller_dir() {
    if let Ok(dir) = std::env::current_dir() {
        let _ = CALLER_DIR.set(dir);
    }
}

/// A path the user typed, relative to where they typed it; shown relative to
/// the workspace root when it lies inside it.
pub fn from_caller(path: &Path) -> PathBuf {
    let Some(dir) = CALLER_DIR.get() else { return path.to_path_buf() };
    let abs = dir.join(path);
    match abs.strip_prefix(workspace_root()) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => abs,
    }
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask/ has a parent directory").to_path_buf()
}

/// Cargo's target directory (`$CARGO_TARGET_DIR`, else `target` under the
/// workspace root, which is xtask's working directory).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| "target".into())
}

/// The cargo that runs us (`$CARGO`), so builds use the same toolchain.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The example policies, `policies/*.yaml`, sorted by file name.
pub fn example_policies() -> Result<Vec<PathBuf>> {
    yaml_files(Path::new("policies"))
}

/// The `*.yaml` files directly in `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension() == Some(OsStr::new("yaml")) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Shows a command the way a user would type it.
pub fn display(cmd: &Command) -> String {
    let mut s = Path::new(cmd.get_program()).file_name().unwrap_or(cmd.get_program()).to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let a = arg.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$*?".contains(c)) {
            s.push_str(&format!(" '{}'", a.replace('\'', r"'\''")));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Runs a command with inherited stdio, echoing it first; fails on a
/// non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    println!("$ {shown}");
    let status = cmd.status().with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Whether a program can be started at all (`program --version` succeeds).
pub fn has_program(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether we run with effective uid 0 (from /proc/self/status, so no libc).
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// `1.23s`, `456ms`.
pub fn secs(d: Duration) -> String {
    if d.as_secs_f64() >= 1.0 {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// libtest results summed over the `test result:` lines of one or more
/// test binaries (host `cargo test` or the VM tier).
#[derive(Debug, Default, Clone, Copy)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    pub suites: u64,
}

impl TestCounts {
    /// Adds a libtest summary line such as
    /// `test result: ok. 52 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.31s`.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else { return };
        self.suites += 1;
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else { continue };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}
