//! `phantom`: run commands in sandboxes built from a policy, load and pin
//! bundles (`load`, `unload`, `status`), and report what this host can
//! enforce.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use phantom_user::apply::LoadedBundle;
use phantom_user::loader;
use phantom_user::spawn::{self, RunResult, SpawnRequest};
use phantom_user::zygote;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "phantom", version, about = "Run untrusted commands in kernel-enforced sandboxes")]
#[command(
    after_help = "Examples:\n  phantom run --policy policies/python-runnable.yaml -- python3 -c 'print(1)'\n  phantom run --policy build/bundle --json --timeout 10s -- ./job.sh\n  phantom doctor\n  phantom load policies/web-fetcher.yaml && phantom status"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command in a sandbox.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Run a resident zygote for a policy in the foreground (for daemons and services).
    #[command(
        after_help = "`phantom run` starts one in the background on first use when the policy says\n`performance: zygote: true`; it exits after --idle-timeout without requests.\n\nExample:\n  phantom serve --policy policies/python-runnable.yaml --idle-timeout 1h"
    )]
    Serve {
        #[arg(long)]
        policy: PathBuf,
        /// Socket path (default: /run/phantom/zygote/<profile>-<key>.sock; see docs/runtime.md).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Exit after this long without a request.
        #[arg(long, default_value = "10m")]
        idle_timeout: String,
    },
    /// Update the resident zygotes of a policy, and their running sandboxes, to the policy as it is now.
    #[command(
        after_help = "Every zygote started for this policy file (or bundle directory) loads it again: new runs get\nthe updated policy, and its running sandboxes are moved to the new cgroup-BPF, BPF-LSM and\nXDP programs in place (each hook runs the old or the new version at every moment, never neither).\nSeccomp, Landlock, mounts, namespaces and limits of running sandboxes stay as they were.\nA policy with errors changes nothing. Exit status: 0 updated (or no zygote serves the policy),\n1 when the policy has errors, a zygote kept the previous version or a sandbox was not fully moved.\n\nExample:\n  phantom reload --policy policies/agent-workspace.yaml\n  phantom reload --policy build/bundle --json"
    )]
    Reload {
        /// Policy file (.yaml) or bundle directory, as given to `phantom run` or `phantom serve`.
        #[arg(long)]
        policy: PathBuf,
        /// Print one JSON object per zygote ({"socket", "result"}) in an array.
        #[arg(long)]
        json: bool,
    },
    /// Load a bundle's cgroup-BPF programs once and pin them under /sys/fs/bpf/phantom/<hash>.
    #[command(
        after_help = "The target is a bundle directory from `phantom-policy compile`, or a policy file, which is\ncompiled to a bundle in the cache directory first ($PHANTOM_CACHE_DIR, else\n$XDG_CACHE_HOME/phantom/bundles, else ~/.cache/phantom/bundles). <hash> is the first 16 hex\ncharacters of the sha256 of the bundle's manifest.json. Loading a bundle that is already\nloaded reuses its pins. Sandboxes attach the pinned programs to their cgroups; attached\nprograms keep enforcing even if the process that attached them dies. Needs root.\nExit status: 0 loaded (or reused), 1 failure (a verifier rejection prints the whole\nverifier log with policy lines).\n\nExamples:\n  phantom load policies/web-fetcher.yaml\n  phantom-policy compile policies/web-fetcher.yaml -o build/web && phantom load build/web --json"
    )]
    Load {
        /// Bundle directory or policy file (.yaml).
        target: PathBuf,
        /// Print the load report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Unpin a loaded bundle and remove its directory under /sys/fs/bpf/phantom.
    #[command(
        after_help = "The target is the bundle directory, the policy file it was loaded from, or the bundle\nhash `phantom status` shows. Cgroups that still have the programs attached keep enforcing\nuntil they detach them or are removed; they are listed. Exit status: 0 unloaded, 1 failure\n(including: not loaded).\n\nExamples:\n  phantom unload policies/web-fetcher.yaml\n  phantom unload 3f2a9c0d1e4b5a67"
    )]
    Unload {
        /// Bundle directory, policy file (.yaml) or bundle hash.
        target: String,
        /// Print the unload report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the loaded (pinned) bundles: profile, hash, programs, maps, attached cgroups.
    #[command(
        after_help = "Exit status: 0, or 1 when bpffs cannot be read.\n\nExamples:\n  phantom status\n  phantom status --json"
    )]
    Status {
        /// Print the bundles as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the audit records of loaded BPF-LSM programs (denials, and complain-mode events).
    #[command(
        after_help = "Reads the pinned ring buffers under /sys/fs/bpf/phantom/<hash>/lsm/audit (records are\nconsumed as they are printed). Human lines: verdict, layer, hook, pid (comm), sandbox cgroup id,\nobject, policy file:line, rule. Record format: docs/audit.md. Exit status: 0, or 1 when\nnothing is loaded or a ring buffer cannot be read.\n\nExamples:\n  phantom audit\n  phantom audit --follow --json"
    )]
    Audit {
        /// Keep printing new records until interrupted.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// One pin directory (holding `audit`) instead of every loaded one.
        #[arg(long)]
        pin: Option<PathBuf>,
    },
    /// Show which enforcement layers this host supports, and how to fix missing ones.
    #[command(after_help = "Example:\n  phantom doctor\n  phantom doctor --json")]
    Doctor {
        #[arg(long)]
        json: bool,
    },
}

const RUN_AFTER_HELP: &str = "The policy is a policy file (compiled on the fly) or a bundle directory from\n`phantom-policy compile`. Exit status: the command's, 128+N when killed by signal N, 124 on\ntimeout, 125 when the sandbox could not start. With --json, a JSON result is printed instead\n(exit code, signal, stdout, stderr, duration, resource usage, enforcement report), or\n{\"error\": MESSAGE} when the command could not be run (exit 125).\n\nExample:\n  phantom run --policy policies/python-runnable.yaml --timeout 5s -- python3 -c 'print(2+2)'";

/// `phantom run`'s arguments. `main` parses them alone when the first
/// argument is `run` ([`RunOnly`]): parsing with every subcommand built
/// took about 0.11 ms of each run; alone saves 0.03-0.08 ms (perf stat).
/// runtime_cli.rs checks the help and errors stay the subcommand's.
#[derive(clap::Args, Debug)]
struct RunArgs {
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
}

/// `phantom run` as a parser of its own: the same arguments, help and
/// errors as the subcommand.
#[derive(Parser, Debug)]
#[command(name = "phantom run", bin_name = "phantom run", about = "Run a command in a sandbox")]
#[command(after_help = RUN_AFTER_HELP)]
struct RunOnly {
    #[command(flatten)]
    args: RunArgs,
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let command = match args.nth(1) {
        Some(first) if first == "run" => Command::Run(RunOnly::parse_from(std::iter::once(first).chain(args)).args),
        _ => Cli::parse().command,
    };
    match run(Cli { command }) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("phantom: {e:#}");
            ExitCode::from(125)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(RunArgs { policy, workspace, timeout, output_cap, json, quiet, no_zygote, command }) => {
            let opts = RunOpts { output_cap, json, quiet, no_zygote };
            match run_command(&policy, workspace, timeout.as_deref(), &opts, command) {
                // A program reading --json gets a document either way.
                Err(e) if json => {
                    eprintln!("phantom: {e:#}");
                    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "error": format!("{e:#}") }))?);
                    Ok(ExitCode::from(125))
                }
                r => r,
            }
        }
        Command::Serve { policy, socket, idle_timeout } => {
            let compiled = compile(&policy)?;
            let default_socket = compiled.socket(&policy);
            let (p, bundle) = compiled.bundle()?;
            let idle = parse_duration(&idle_timeout, "--idle-timeout")?;
            let path = socket.unwrap_or(default_socket);
            eprintln!("phantom: serving {} on {} (idle timeout {idle_timeout})", p.profile, path.display());
            zygote::serve(&path, p, bundle, idle, policy.canonicalize().ok())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload { policy, json } => Ok(reload_command(&policy, json).unwrap_or_else(|e| {
            eprintln!("phantom: {e:#}");
            ExitCode::from(1)
        })),
        Command::Load { target, json } => Ok(exit_1_on_error(load_command(&target, json))),
        Command::Unload { target, json } => Ok(exit_1_on_error(unload_command(&target, json))),
        Command::Status { json } => Ok(exit_1_on_error(status_command(json))),
        Command::Audit { follow, json, pin } => Ok(exit_1_on_error(phantom_cli::audit::run(
            Path::new(phantom_cli::audit::PIN_ROOT),
            pin.as_deref(),
            follow,
            json,
            &mut std::io::stdout().lock(),
        ))),
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

/// A policy file compiled on the fly (its bundle built only when needed),
/// or a bundle directory.
struct Compiled {
    policy: phantom_dsl::ir::Policy,
    /// The bundle of a directory; a file's is built by [`Compiled::bundle`].
    bundle: Option<LoadedBundle>,
    /// The policy's source texts (a file's), for the bundle's line_info.
    texts: Vec<(String, String)>,
    /// A bundle directory's zygote socket (named by its manifest's hash).
    dir_socket: Option<PathBuf>,
}

impl Compiled {
    /// Where the zygote of the policy at `path` listens: a directory's
    /// from its manifest, a file's from [`file_socket`] or, for a file that
    /// extends others, its sources' hashes. Only runs that use a zygote
    /// ask (hashing reads the file and this executable's identity again).
    fn socket(&self, path: &Path) -> PathBuf {
        if let Some(s) = &self.dir_socket {
            return s.clone();
        }
        file_socket(path).unwrap_or_else(|| {
            let mut id = format!("{}\n{}\n", phantom_ebpf::bundle::COMPILER, exe_identity());
            for s in &self.policy.sources {
                id.push_str(&format!("{} {}\n", s.sha256, s.path));
            }
            zygote::socket_path(&self.policy.profile, &phantom_dsl::source::sha256_hex(id.as_bytes()))
        })
    }

    /// The bundle: a directory's as read, a file's built now (as
    /// `phantom-policy compile` builds it).
    fn bundle(self) -> Result<(phantom_dsl::ir::Policy, LoadedBundle)> {
        match self.bundle {
            Some(b) => Ok((self.policy, b)),
            None => {
                let built = phantom_ebpf::bundle::build_with_sources(&self.policy, &self.texts)?;
                let b = LoadedBundle::from_bundle(&built)?;
                Ok((self.policy, b))
            }
        }
    }
}

/// This executable's identity (inode, size, mtime), part of a policy
/// file's zygote key so that a rebuilt `phantom` starts a new zygote.
fn exe_identity() -> String {
    std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            format!("{} {} {}.{}", m.ino(), m.len(), m.mtime(), m.mtime_nsec())
        })
        .unwrap_or_default()
}

/// The zygote socket of a self-contained policy file (one that does not
/// `extends` another: the word appears nowhere in it), named by the hash of
/// the compiler version, this executable's identity and the file's bytes:
/// found without compiling, so a warm run connects first and compiles only
/// on a miss. `None` for other files: the files they extend count too, and
/// only compiling finds them.
fn file_socket(path: &Path) -> Option<PathBuf> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.windows(b"extends".len()).any(|w| w == b"extends") {
        return None;
    }
    let id = format!(
        "{}\n{}\nfile {}\n",
        phantom_ebpf::bundle::COMPILER,
        exe_identity(),
        phantom_dsl::source::sha256_hex(&bytes)
    );
    Some(zygote::socket_path("file", &phantom_dsl::source::sha256_hex(id.as_bytes())))
}

/// Compiles a policy file (its bundle is built later, when needed) or
/// reads a bundle directory. Zygote keys ([`Compiled::socket`]): a bundle
/// directory's is its manifest's hash; a policy file's is
/// [`file_socket`]'s, or for a file that extends others, the hash of the
/// compiler version, this executable's identity and every source file's
/// sha256: the same inputs give the same bundle, so a warm `phantom run`
/// finds its zygote without building the bundle first.
fn compile(path: &Path) -> Result<Compiled> {
    if path.is_dir() {
        let (policy, bundle) = phantom_user::reload::load_target(path)?;
        let key = phantom_dsl::source::sha256_hex(&std::fs::read(path.join(phantom_ebpf::bundle::MANIFEST))?);
        let socket = zygote::socket_path(&policy.profile, &key);
        return Ok(Compiled { policy, bundle: Some(bundle), texts: Vec::new(), dir_socket: Some(socket) });
    }
    let c = phantom_dsl::compile_file(path).with_context(|| format!("cannot read {}", path.display()))?;
    let Some(policy) = c.policy else {
        eprint!("{}", phantom_cli::render::render_all(&c.sources, &c.diagnostics));
        bail!("{}: the policy has errors", path.display());
    };
    let texts: Vec<(String, String)> = c.sources.texts();
    Ok(Compiled { policy, bundle: None, texts, dir_socket: None })
}

fn run_command(
    policy_path: &Path,
    workspace: Option<PathBuf>,
    timeout: Option<&str>,
    opts: &RunOpts,
    command: Vec<String>,
) -> Result<ExitCode> {
    let timeout = timeout.map(|t| parse_duration(t, "--timeout")).transpose()?;
    let workspace = workspace.map(|w| w.canonicalize()).transpose().context("--workspace")?;
    let mut req = SpawnRequest { argv: command, env: Vec::new(), workspace, timeout, output_cap: opts.output_cap };
    let (json, quiet) = (opts.json, opts.quiet);
    // Without --json, the sandbox writes to our stdout and stderr itself.
    let pass = !json;
    // Warm: a self-contained policy file's zygote is up; it applies the
    // policy's wall time when no --timeout is given.
    let warm = (!opts.no_zygote).then(|| file_socket(policy_path)).flatten().and_then(|path| {
        let stream = zygote::connect(&path).ok()?;
        Some(run_on_zygote(&stream, &path, &req, pass))
    });
    let (compiled, via_zygote) = match warm {
        Some(Ok(r)) => (None, Some(r)),
        Some(Err(e)) if not_started(&e) => return Err(e),
        warm => {
            let compiled = compile(policy_path)?;
            let policy = &compiled.policy;
            if req.timeout.is_none() {
                req.timeout = policy.resources.wall_time.map(|d| std::time::Duration::from_millis(d.0));
            }
            let via_zygote = match warm {
                Some(Err(e)) => {
                    if !quiet {
                        eprintln!("phantom: no zygote ({e:#}); spawning directly");
                    }
                    None
                }
                _ if policy.performance.zygote && !opts.no_zygote => {
                    match through_zygote(policy_path, &compiled.socket(policy_path), &req, pass) {
                        Ok(r) => Some(r),
                        Err(e) if not_started(&e) => return Err(e),
                        Err(e) => {
                            if !quiet {
                                eprintln!("phantom: no zygote ({e:#}); spawning directly");
                            }
                            None
                        }
                    }
                }
                _ => None,
            };
            (Some(compiled), via_zygote)
        }
    };
    let result: RunResult = match (via_zygote, compiled) {
        (Some(r), _) => r,
        (None, None) => unreachable!("a run that did not go through a zygote compiled the policy"),
        (None, Some(compiled)) => {
            // The sandbox's network namespace is made on a thread of its own
            // from now on, while the bundle is built.
            let netns = spawn::netns::NetnsPool::for_policy(&compiled.policy);
            let (policy, bundle) = compiled.bundle()?;
            let (out, err) = (std::io::stdout(), std::io::stderr());
            let stdio = match pass {
                true => spawn::Stdio::Pass { stdout: out.as_fd(), stderr: err.as_fd() },
                false => spawn::Stdio::Capture,
            };
            spawn::run_stdio_with(&policy, &bundle, &req, stdio, netns.as_ref())?
        }
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

/// The zygote ran the request and the sandbox could not start the command:
/// a direct spawn would fail the same way, so the error is the answer.
fn not_started(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<zygote::ZygoteError>(), Some(zygote::ZygoteError::NotStarted(_)))
}

/// Runs through the policy's resident zygote, starting it if needed. With
/// `pass`, the sandbox writes to our stdout and stderr directly.
fn through_zygote(policy_path: &Path, path: &Path, req: &SpawnRequest, pass: bool) -> Result<RunResult> {
    let path = path.to_path_buf();
    // One connection: it is the request's when the zygote is up.
    let stream = match zygote::connect(&path) {
        Ok(s) => s,
        Err(_) => {
            let exe = std::env::current_exe()?;
            let abs = policy_path.canonicalize()?;
            let mut cmd = std::process::Command::new(exe);
            cmd.args(["serve", "--policy"]).arg(&abs).arg("--socket").arg(&path).args(["--idle-timeout", "5m"]);
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
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
            zygote::connect(&path)?
        }
    };
    run_on_zygote(&stream, &path, req, pass)
}

/// Sends `req` on a zygote connection and waits for the result.
fn run_on_zygote(
    stream: &std::os::unix::net::UnixStream,
    path: &Path,
    req: &SpawnRequest,
    pass: bool,
) -> Result<RunResult> {
    let zreq = zygote::Request {
        argv: req.argv.clone(),
        env: req.env.clone(),
        workspace: req.workspace.clone(),
        timeout_ms: req.timeout.map(|t| t.as_millis() as u64),
        output_cap: req.output_cap,
    };
    let (out, err) = (std::io::stdout(), std::io::stderr());
    let stdio = pass.then(|| (out.as_fd(), err.as_fd()));
    Ok(zygote::run_on(stream, path, &zreq, stdio)?)
}

/// `load`, `unload` and `status` exit with 1 (not 125) on failure.
/// `phantom reload`: checks the policy (its errors change nothing), then
/// asks every zygote serving it to update, moving each to the socket that
/// runs of the updated policy look for.
fn reload_command(policy: &Path, json: bool) -> Result<ExitCode> {
    let origin = policy.canonicalize().with_context(|| format!("cannot read {}", policy.display()))?;
    let socket = compile(policy)?.socket(policy);
    let updates = phantom_user::reload::reload_all(Path::new(zygote::SOCKET_DIR), &origin, Some(socket));
    if json {
        println!("{}", serde_json::to_string_pretty(&updates)?);
    } else {
        eprint!("{}", phantom_cli::reload::render(&policy.display().to_string(), &updates));
    }
    // A zygote that kept the old version, or a sandbox not fully moved.
    let failed = updates.iter().any(|u| match &u.result {
        Ok(zygote::ReloadOutcome::Updated { running, .. }) => !running.errors.is_empty(),
        Ok(zygote::ReloadOutcome::NotMine) => false,
        Err(_) => true,
    });
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn exit_1_on_error(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phantom: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Where policy files given to `load`/`unload` are compiled to.
fn bundle_cache() -> PathBuf {
    if let Some(d) = std::env::var_os("PHANTOM_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("phantom").join("bundles")
}

/// A bundle directory as given, or a policy file compiled (with its
/// sources, as `phantom-policy compile` does) to `<cache>/<profile>-<hash>`.
fn bundle_dir_of(target: &Path) -> Result<PathBuf> {
    if target.is_dir() {
        return Ok(target.to_path_buf());
    }
    let c = phantom_dsl::compile_file(target).with_context(|| format!("cannot read {}", target.display()))?;
    let Some(policy) = &c.policy else {
        eprint!("{}", phantom_cli::render::render_all(&c.sources, &c.diagnostics));
        bail!("{}: the policy has errors", target.display());
    };
    let texts: Vec<(String, String)> = c.sources.texts();
    let built = phantom_ebpf::bundle::build_with_sources(policy, &texts)
        .with_context(|| format!("{}: not compiled", target.display()))?;
    let manifest = built
        .files
        .iter()
        .find(|(n, _)| n == phantom_ebpf::bundle::MANIFEST)
        .map(|(_, b)| b.as_slice())
        .context("the bundle has no manifest")?;
    let hash = phantom_dsl::source::sha256_hex(manifest);
    let dir = bundle_cache().join(format!("{}-{}", policy.profile, &hash[..loader::HASH_LEN]));
    if !dir.join(phantom_ebpf::bundle::MANIFEST).is_file() {
        phantom_ebpf::bundle::write(&dir, &built)
            .with_context(|| format!("cannot write the bundle to {}", dir.display()))?;
    }
    Ok(dir)
}

fn load_command(target: &Path, json: bool) -> Result<()> {
    let dir = bundle_dir_of(target)?;
    let report = loader::load(&dir).with_context(|| format!("cannot load {}", dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if report.mounted_bpffs {
        println!("mounted bpffs at {}", loader::BPFFS);
    }
    println!(
        "{} {} ({}): {} programs, {} maps {} {}",
        if report.reused { "already loaded:" } else { "loaded" },
        report.profile,
        report.hash,
        report.programs.len(),
        report.maps.len(),
        if report.reused { "pinned at" } else { "pinned under" },
        report.dir.display()
    );
    for p in &report.programs {
        println!("  program {:<15} {:<20} id {}", p.name, p.section, p.id);
    }
    for m in &report.maps {
        match m.entries_written {
            Some(n) => println!("  map     {:<15} {n} entries, id {}", m.name, m.id),
            None => println!("  map     {:<15} id {}", m.name, m.id),
        }
    }
    Ok(())
}

fn unload_command(target: &str, json: bool) -> Result<()> {
    let path = Path::new(target);
    let r =
        if path.is_file() { loader::BundleRef::Dir(bundle_dir_of(path)?) } else { loader::BundleRef::parse(target)? };
    let report = loader::unload(&r)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "unloaded {} ({}): removed {} ({} programs, {} maps)",
        if report.profile.is_empty() { "?" } else { &report.profile },
        report.hash,
        report.dir.display(),
        report.programs,
        report.maps
    );
    for cg in &report.still_attached {
        println!("  still attached to {} (enforcing until detached or the cgroup is removed)", cg.display());
    }
    Ok(())
}

fn status_command(json: bool) -> Result<()> {
    let bundles = loader::status()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&bundles)?);
        return Ok(());
    }
    if bundles.is_empty() {
        println!("no bundles loaded (nothing under {})", loader::PIN_ROOT);
        return Ok(());
    }
    for b in &bundles {
        println!(
            "{} {}: {} programs, {} maps, attached to {} cgroup(s)",
            b.hash,
            b.profile,
            b.programs.len(),
            b.maps.len(),
            b.attached_cgroups.len()
        );
        for cg in &b.attached_cgroups {
            println!("  attached: {}", cg.display());
        }
    }
    Ok(())
}
