//! `cargo xtask test`: the one test command, used by README and `.ci/run`.
//! Each step is announced with `==> step`, timed, and the run stops at the
//! first failing step (unless `--keep-going`), naming it. The last step is
//! the VM tier (`cargo xtask vm-test`, xtask/src/vm.rs): BPF-LSM tests in a
//! VM, which needs root and installs its packages on the first run.

use crate::{deps, util, vm};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Do not check or install system packages (the vm tier then fails if its packages, kernel or virtme-ng are missing).
    #[arg(long)]
    no_deps: bool,
    /// Run the remaining steps after a failure (the exit status is still non-zero).
    #[arg(long)]
    keep_going: bool,
}

/// One step of the test run.
struct Step {
    name: &'static str,
    run: fn(&mut Totals) -> Result<()>,
}

/// What the steps counted, for the summary.
#[derive(Debug, Default)]
struct Totals {
    /// Summed over every `test result:` line of `cargo test`.
    tests: Option<util::TestCounts>,
}

const STEPS: &[Step] = &[
    Step { name: "system packages", run: system_packages },
    Step { name: "cargo fmt --check", run: fmt_check },
    Step { name: "cargo build", run: build },
    Step { name: "cargo test", run: cargo_test },
    Step { name: "example policies", run: example_policies },
    Step { name: "static binaries", run: static_binaries },
    Step { name: "vm tier", run: vm_tier },
];

#[derive(Debug)]
enum Outcome {
    Passed(Duration),
    Failed(Duration, String),
    Skipped(&'static str),
}

pub fn main(args: &Args) -> Result<ExitCode> {
    let start = Instant::now();
    NO_DEPS.store(args.no_deps, std::sync::atomic::Ordering::Relaxed);
    let mut outcomes: Vec<(&str, Outcome)> = Vec::new();
    let mut totals = Totals::default();
    let mut failed = false;
    for (i, step) in STEPS.iter().enumerate() {
        let header = format!("==> [{}/{}] {}", i + 1, STEPS.len(), step.name);
        if step.name == "system packages" && args.no_deps {
            println!("{header}: skipped (--no-deps)");
            outcomes.push((step.name, Outcome::Skipped("--no-deps")));
            continue;
        }
        if failed && !args.keep_going {
            outcomes.push((step.name, Outcome::Skipped("an earlier step failed")));
            continue;
        }
        println!("{header}");
        let t = Instant::now();
        let result = (step.run)(&mut totals);
        let took = t.elapsed();
        match result {
            Ok(()) => {
                println!("==> {}: ok ({})\n", step.name, util::secs(took));
                outcomes.push((step.name, Outcome::Passed(took)));
            }
            Err(e) => {
                println!("==> {}: FAILED ({}): {e:#}\n", step.name, util::secs(took));
                outcomes.push((step.name, Outcome::Failed(took, format!("{e:#}"))));
                failed = true;
            }
        }
    }
    print_summary(&outcomes, &totals, start.elapsed());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn print_summary(outcomes: &[(&str, Outcome)], totals: &Totals, total: Duration) {
    println!("==> summary");
    for (name, o) in outcomes {
        match o {
            Outcome::Passed(d) => println!("  {name:<20} ok       {}", util::secs(*d)),
            Outcome::Failed(d, why) => {
                let first = why.lines().next().unwrap_or("");
                println!("  {name:<20} FAILED   {}  {first}", util::secs(*d))
            }
            Outcome::Skipped(why) => println!("  {name:<20} skipped  ({why})"),
        }
    }
    let failed: Vec<&str> =
        outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Failed(..))).map(|(n, _)| *n).collect();
    let ran = outcomes.iter().filter(|(_, o)| !matches!(o, Outcome::Skipped(_))).count();
    if failed.is_empty() {
        println!("xtask test: OK, {ran} of {} steps run, none failed, in {}", outcomes.len(), util::secs(total));
    } else {
        println!("xtask test: FAILED at step `{}` (after {})", failed.join("`, `"), util::secs(total));
    }
    // The last line: cargo test's totals in the plain `N passed, N failed`
    // form, so that a reader of the closing line sees every suite, not the
    // last (often empty) doc-test suite.
    if let Some(t) = totals.tests {
        println!("tests: {} passed, {} failed, {} skipped", t.passed, t.failed, t.ignored);
    }
}

fn system_packages(_: &mut Totals) -> Result<()> {
    deps::ensure(deps::TEST_PACKAGES)
}

fn fmt_check(_: &mut Totals) -> Result<()> {
    if !util::cargo().args(["fmt", "--version"]).output().is_ok_and(|o| o.status.success()) {
        bail!("`cargo fmt` is not available; install it with `rustup component add rustfmt`");
    }
    util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))?;
    // The fuzz crate is outside the workspace, so `cargo fmt --all` does not
    // see it; its targets are checked file by file.
    let targets: Vec<PathBuf> = match std::fs::read_dir("fuzz/fuzz_targets") {
        Ok(dir) => {
            dir.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "rs")).collect()
        }
        Err(_) => Vec::new(),
    };
    if !targets.is_empty() {
        util::run(Command::new("rustfmt").args(["--check", "--edition", "2021"]).args(&targets))?;
    }
    Ok(())
}

fn build(_: &mut Totals) -> Result<()> {
    util::run(util::cargo().args(["build", "--workspace", "--all-targets"]))
}

/// `cargo test --workspace`, its stdout passed through line by line and
/// its `test result:` lines summed for the summary.
fn cargo_test(totals: &mut Totals) -> Result<()> {
    let mut cmd = util::cargo();
    cmd.args(["test", "--workspace"]).stdout(Stdio::piped());
    let shown = util::display(&cmd);
    println!("$ {shown}");
    let mut child = cmd.spawn().with_context(|| format!("could not start `{shown}`"))?;
    let mut counts = util::TestCounts::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        counts.add_line(&line);
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    drop(out);
    let status = child.wait()?;
    totals.tests = Some(counts);
    if !status.success() {
        bail!("`{shown}` failed ({status}): {} passed, {} failed", counts.passed, counts.failed);
    }
    if counts.suites == 0 {
        bail!("`{shown}` printed no `test result:` line");
    }
    Ok(())
}

/// `--no-deps`, for the steps that install something besides `system packages`.
static NO_DEPS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `cargo xtask vm-test`: BPF-LSM tests in a VM (installs what it needs
/// on the first run); its tests are added to the totals.
fn vm_tier(totals: &mut Totals) -> Result<()> {
    let install = !NO_DEPS.load(std::sync::atomic::Ordering::Relaxed);
    let c = vm::run(&vm::Options { install, ..vm::Options::default() })?;
    let t = totals.tests.get_or_insert_with(util::TestCounts::default);
    t.passed += c.passed;
    t.failed += c.failed;
    t.ignored += c.ignored;
    t.suites += c.suites;
    Ok(())
}

/// Example policies that `fmt --check` skips, with the reason. They are
/// still checked.
const FMT_EXEMPT: &[(&str, &str)] = &[(
    "policies/python-ai-turbo.yaml",
    "the reference profile is kept verbatim as given, trailing space included; see docs/policy-language.md",
)];

/// The example policies must be formatted and check without errors
/// (warnings are expected: several examples are deliberately incomplete).
fn example_policies(_: &mut Totals) -> Result<()> {
    let bin = util::target_dir().join("debug/phantom-policy");
    if !bin.is_file() {
        bail!("{} is missing; the build step makes it", bin.display());
    }
    let policies = util::example_policies()?;
    if policies.is_empty() {
        bail!("policies/ has no *.yaml files");
    }
    let (exempt, formatted): (Vec<PathBuf>, Vec<PathBuf>) =
        policies.iter().cloned().partition(|p| FMT_EXEMPT.iter().any(|(name, _)| p == Path::new(name)));
    for p in &exempt {
        let why = FMT_EXEMPT.iter().find(|(name, _)| p == Path::new(name)).map_or("", |(_, why)| why);
        println!("  not format-checked: {} ({why})", p.display());
    }
    util::run(Command::new(&bin).args(["fmt", "--check"]).args(&formatted))?;
    util::run(Command::new(&bin).arg("check").args(&policies))
}

/// `cargo xtask dist` builds (static PIE, what the CLI benchmark times and
/// what docs/runtime.md recommends), and the static `phantom` runs a
/// sandbox: a statically linked glibc must not lose anything the runtime
/// needs.
fn static_binaries(_: &mut Totals) -> Result<()> {
    let dir = crate::dist::build(true)?;
    let phantom = dir.join("phantom");
    let file = Command::new("file").arg(&phantom).output().context("running file")?;
    let kind = String::from_utf8_lossy(&file.stdout);
    if !kind.contains("static-pie linked") {
        bail!("{} is not a static PIE: {kind}", phantom.display());
    }
    let dynamic = Command::new("readelf").arg("-d").arg(&phantom).output().context("running readelf (binutils)")?;
    if !String::from_utf8_lossy(&dynamic.stdout).contains("(RELR)") {
        bail!("{}: its relocations are not packed (no DT_RELR; binutils >= 2.38 links them so)", phantom.display());
    }
    let out = Command::new(&phantom)
        .args(["run", "--json", "--no-zygote", "--policy", "policies/python-runnable.yaml", "--"])
        .args(["python3", "-c", "print(6 * 7)"])
        .output()
        .context("running the static phantom")?;
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!("phantom run --json printed no JSON; stderr: {}", String::from_utf8_lossy(&out.stderr))
    })?;
    if result["exit_code"] != 0 || result["stdout"] != "42\n" || result["mode"] != "sandbox" {
        bail!("the static phantom's sandbox run: {result}");
    }
    println!("  {}: static PIE, packed relocations; `phantom run` in a sandbox printed 42", phantom.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::util::TestCounts;

    #[test]
    fn sums_libtest_result_lines() {
        let mut c = TestCounts::default();
        c.add_line("test result: ok. 52 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.31s");
        c.add_line("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.add_line("test parser::works ... ok");
        c.add_line("running 5 tests");
        assert_eq!((c.passed, c.failed, c.ignored, c.suites), (55, 2, 1, 2));
    }
}
