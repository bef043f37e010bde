//! `phantom`: run commands in sandboxes built from a policy, and report what
//! this host can enforce.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use phantom_user::apply::LoadedBundle;
use phantom_user::spawn::{self, RunResult, SpawnRequest};
use phantom_user::zygote;
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
        /// Spawn in this process even when the policy asks for a resident zygote.
        #[arg(long)]
        no_zygote: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run a resident zygote for a policy in the foreground (for daemons and services).
    #[command(
        after_help = "`phantom run` starts one in the background on first use when the policy says\n`performance: zygote: true`; it exits after --idle-timeout without requests.\n\nExample:\n  phantom serve --policy policies/python-runnable.yaml --idle-timeout 1h"
    )]
    Serve {
        #[arg(long)]
        policy: PathBuf,
        /// Socket path (default: /run/phantom/zygote/<profile>-<bundle hash>.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Exit after this long without a request.
        #[arg(long, default_value = "10m")]
        idle_timeout: String,
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
        Command::Run { policy, workspace, timeout, output_cap, json, quiet, no_zygote, command } => {
            let opts = RunOpts { output_cap, json, quiet, no_zygote };
            run_command(&policy, workspace, timeout.as_deref(), &opts, command)
        }
        Command::Serve { policy, socket, idle_timeout } => {
            let (p, bundle, key) = load(&policy)?;
            let idle = parse_duration(&idle_timeout, "--idle-timeout")?;
            let path = socket.unwrap_or_else(|| zygote::socket_path(&p.profile, &key));
            eprintln!("phantom: serving {} on {} (idle timeout {idle_timeout})", p.profile, path.display());
            zygote::serve(&path, p, bundle, idle)?;
            Ok(ExitCode::SUCCESS)
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

struct RunOpts {
    output_cap: usize,
    json: bool,
    quiet: bool,
    no_zygote: bool,
}

fn parse_duration(text: &str, what: &str) -> Result<std::time::Duration> {
    let d = phantom_dsl::values::parse_duration(text).map_err(|e| anyhow::anyhow!("{what} {text}: {}", e.message))?;
    Ok(std::time::Duration::from_millis(d.0))
}

/// A policy file compiled on the fly, or a bundle directory; with the
/// bundle's key (the hash of its manifest), which names its zygote.
fn load(path: &Path) -> Result<(phantom_dsl::ir::Policy, LoadedBundle, String)> {
    if path.is_dir() {
        let bundle = LoadedBundle::load(path)?;
        let policy = LoadedBundle::read_policy(path)?;
        let key = phantom_dsl::source::sha256_hex(&std::fs::read(path.join(phantom_ebpf::bundle::MANIFEST))?);
        return Ok((policy, bundle, key));
    }
    let c = phantom_dsl::compile_file(path).with_context(|| format!("cannot read {}", path.display()))?;
    let Some(policy) = c.policy else {
        eprint!("{}", phantom_cli::render::render_all(&c.sources, &c.diagnostics));
        bail!("{}: the policy has errors", path.display());
    };
    let built = phantom_ebpf::bundle::build(&policy)?;
    let manifest =
        built.files.iter().find(|(n, _)| n == phantom_ebpf::bundle::MANIFEST).map(|(_, b)| b.as_slice()).unwrap_or(&[]);
    let key = phantom_dsl::source::sha256_hex(manifest);
    Ok((policy, LoadedBundle::from_bundle(&built)?, key))
}

fn run_command(
    policy_path: &Path,
    workspace: Option<PathBuf>,
    timeout: Option<&str>,
    opts: &RunOpts,
    command: Vec<String>,
) -> Result<ExitCode> {
    let (policy, bundle, key) = load(policy_path)?;
    let timeout = match timeout {
        Some(t) => Some(parse_duration(t, "--timeout")?),
        None => policy.resources.wall_time.map(|d| std::time::Duration::from_millis(d.0)),
    };
    let workspace = workspace.map(|w| w.canonicalize()).transpose().context("--workspace")?;
    let req = SpawnRequest { argv: command, env: Vec::new(), workspace, timeout, output_cap: opts.output_cap };
    let (json, quiet) = (opts.json, opts.quiet);
    let via_zygote = if policy.performance.zygote && !opts.no_zygote {
        match through_zygote(policy_path, &policy, &key, &req) {
            Ok(r) => Some(r),
            Err(e) => {
                if !quiet {
                    eprintln!("phantom: no zygote ({e:#}); spawning directly");
                }
                None
            }
        }
    } else {
        None
    };
    let result: RunResult = match via_zygote {
        Some(r) => r,
        None => spawn::run(&policy, &bundle, &req)?,
    };
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

/// Runs through the policy's resident zygote, starting it if needed.
fn through_zygote(
    policy_path: &Path,
    policy: &phantom_dsl::ir::Policy,
    key: &str,
    req: &SpawnRequest,
) -> Result<RunResult> {
    let path = zygote::socket_path(&policy.profile, key);
    if !zygote::wait_ready(&path, std::time::Duration::ZERO) {
        let exe = std::env::current_exe()?;
        let abs = policy_path.canonicalize()?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["serve", "--policy"]).arg(&abs).arg("--socket").arg(&path).args(["--idle-timeout", "5m"]);
        cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        // SAFETY: setsid in the child before exec; no allocation.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::setsid();
                Ok(())
            });
        }
        cmd.spawn().context("starting the zygote")?;
        if !zygote::wait_ready(&path, std::time::Duration::from_secs(3)) {
            bail!("the zygote did not come up at {}", path.display());
        }
    }
    let zreq = zygote::Request {
        argv: req.argv.clone(),
        env: req.env.clone(),
        workspace: req.workspace.clone(),
        timeout_ms: req.timeout.map(|t| t.as_millis() as u64),
        output_cap: req.output_cap,
    };
    Ok(zygote::run(&path, &zreq)?)
}
