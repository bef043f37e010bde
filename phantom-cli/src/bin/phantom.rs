//! `phantom`: run commands in sandboxes built from a policy, and report what
//! this host can enforce.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use phantom_user::apply::LoadedBundle;
use phantom_user::spawn::{self, RunResult, SpawnRequest};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "phantom", version, about = "Run untrusted commands in kernel-enforced sandboxes")]
#[command(
    after_help = "Examples:\n  phantom run --policy policies/python-runnable.yaml -- python3 -c 'print(1)'\n  phantom run --policy build/bundle --json --timeout 10s -- ./job.sh\n  phantom doctor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command in a sandbox.
    #[command(
        after_help = "The policy is a policy file (compiled on the fly) or a bundle directory from\n`phantom-policy compile`. Exit status: the command's, 128+N when killed by signal N, 124 on\ntimeout, 125 when the sandbox could not start. With --json, a JSON result is printed instead\n(exit code, signal, stdout, stderr, duration, resource usage, enforcement report).\n\nExample:\n  phantom run --policy policies/python-runnable.yaml --timeout 5s -- python3 -c 'print(2+2)'"
    )]
    Run {
        /// Policy file (.yaml) or compiled bundle directory.
        #[arg(long)]
        policy: PathBuf,
        /// Host directory mounted read-write at /workspace (default: a fresh empty one).
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Wall-clock limit, e.g. 30s or 1m30s (default: the policy's resources.wall_time).
        #[arg(long)]
        timeout: Option<String>,
        /// Bytes of stdout and of stderr kept (the rest is dropped and counted).
        #[arg(long, default_value_t = 1 << 20)]
        output_cap: usize,
        /// Print a JSON result.
        #[arg(long)]
        json: bool,
        /// Do not print notes about layers that are not fully enforced.
        #[arg(short, long)]
        quiet: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show which enforcement layers this host supports, and how to fix missing ones.
    #[command(after_help = "Example:\n  phantom doctor\n  phantom doctor --json")]
    Doctor {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("phantom: {e:#}");
            ExitCode::from(125)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { policy, workspace, timeout, output_cap, json, quiet, command } => {
            run_command(&policy, workspace, timeout.as_deref(), output_cap, json, quiet, command)
        }
        Command::Doctor { json } => {
            let report = phantom_user::doctor::probe();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", phantom_user::doctor::render(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A policy file compiled on the fly, or a bundle directory.
fn load(path: &Path) -> Result<(phantom_dsl::ir::Policy, LoadedBundle)> {
    if path.is_dir() {
        let bundle = LoadedBundle::load(path)?;
        let policy = LoadedBundle::read_policy(path)?;
        return Ok((policy, bundle));
    }
    let c = phantom_dsl::compile_file(path).with_context(|| format!("cannot read {}", path.display()))?;
    let Some(policy) = c.policy else {
        eprint!("{}", phantom_cli::render::render_all(&c.sources, &c.diagnostics));
        bail!("{}: the policy has errors", path.display());
    };
    let built = phantom_ebpf::bundle::build(&policy)?;
    Ok((policy, LoadedBundle::from_bundle(&built)?))
}

fn run_command(
    policy_path: &Path,
    workspace: Option<PathBuf>,
    timeout: Option<&str>,
    output_cap: usize,
    json: bool,
    quiet: bool,
    command: Vec<String>,
) -> Result<ExitCode> {
    let (policy, bundle) = load(policy_path)?;
    let timeout = match timeout {
        Some(t) => {
            Some(phantom_dsl::values::parse_duration(t).map_err(|e| anyhow::anyhow!("--timeout {t}: {}", e.message))?)
        }
        None => policy.resources.wall_time,
    }
    .map(|d| std::time::Duration::from_millis(d.0));
    let req = SpawnRequest { argv: command, env: Vec::new(), workspace, timeout, output_cap };
    let result: RunResult = spawn::run(&policy, &bundle, &req)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        use std::io::Write;
        std::io::stdout().write_all(result.stdout.as_bytes())?;
        std::io::stderr().write_all(result.stderr.as_bytes())?;
        if result.mode == "direct" {
            eprintln!("phantom: WARNING: mode direct: the command ran WITHOUT isolation");
        }
        if result.timed_out {
            eprintln!("phantom: timed out after {:.0} ms; the sandbox was killed", result.duration_ms);
        }
        if result.oom_killed {
            eprintln!("phantom: the memory limit was reached (OOM kill)");
        }
        for l in
            result.enforcement.iter().filter(|l| !quiet && l.enforcement != phantom_user::report::Enforcement::Full)
        {
            let how = format!("{:?}", l.enforcement).to_lowercase();
            eprintln!(
                "phantom: {} is enforced {how} here: {}",
                l.layer,
                l.reason.as_deref().unwrap_or("no reason given")
            );
        }
    }
    Ok(ExitCode::from(match (result.timed_out, result.exit_code, result.signal) {
        (true, _, _) => 124,
        (_, Some(c), _) => c as u8,
        (_, _, Some(s)) => (128 + s) as u8,
        _ => 125,
    }))
}
