//! The supervisor side of a run: hands the request to a prepared sandbox
//! (prepared just now for a direct spawn, ahead of time by a
//! [`super::Spawner`]), relays output with size caps, enforces the
//! wall-clock timeout, reaps the sandbox and builds the result with the
//! enforcement report.

use super::handover::Handover;
use super::lsm_attach::LsmAttachment;
use super::netns::NetnsPool;
use super::prepare::{prepare, Leftovers, Prepared};
use super::spec::Spec;
use super::{sys, LayerStatus, RunResult, SpawnError, SpawnRequest};
use crate::apply::LoadedBundle;
use crate::landlock::LandlockReport;
use crate::report::Enforcement;
use phantom_dsl::ir::{NetMode, Policy};
use std::ffi::CString;
use std::io::BufRead;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

/// Where the command's stdout and stderr go.
#[derive(Debug, Clone, Copy)]
pub enum Stdio<'a> {
    /// Into pipes the supervisor reads, capped, into the result.
    Capture,
    /// Straight to these descriptors (e.g. the caller's terminal or pipe;
    /// the sandbox gets no controlling terminal); the result's output is
    /// empty.
    Pass { stdout: BorrowedFd<'a>, stderr: BorrowedFd<'a> },
}

fn cstrings(v: impl IntoIterator<Item = String>) -> Result<Vec<CString>, SpawnError> {
    v.into_iter()
        .map(|s| CString::new(s).map_err(|_| SpawnError::Setup("an argument contains a NUL byte".into())))
        .collect()
}

/// Runs `req` under `policy` with the process layers of `bundle`.
pub fn run(policy: &Policy, bundle: &LoadedBundle, req: &SpawnRequest) -> Result<RunResult, SpawnError> {
    run_stdio_with(policy, bundle, req, Stdio::Capture, None)
}

/// [`run`], taking a fresh network namespace from `pool` when it has one.
pub fn run_with(
    policy: &Policy,
    bundle: &LoadedBundle,
    req: &SpawnRequest,
    pool: Option<&NetnsPool>,
) -> Result<RunResult, SpawnError> {
    run_stdio_with(policy, bundle, req, Stdio::Capture, pool)
}

/// [`run`] with the command's stdout and stderr going to `stdio`.
pub fn run_stdio(
    policy: &Policy,
    bundle: &LoadedBundle,
    req: &SpawnRequest,
    stdio: Stdio<'_>,
) -> Result<RunResult, SpawnError> {
    run_stdio_with(policy, bundle, req, stdio, None)
}

/// [`run_stdio`], taking a fresh network namespace from `pool` when it has
/// one (e.g. [`NetnsPool::one`], started before the bundle was built).
/// Everything the sandbox created is removed before this returns.
pub fn run_stdio_with(
    policy: &Policy,
    bundle: &LoadedBundle,
    req: &SpawnRequest,
    stdio: Stdio<'_>,
    pool: Option<&NetnsPool>,
) -> Result<RunResult, SpawnError> {
    let start = Instant::now();
    let spec = Spec::new(policy, bundle)?;
    check(req)?;
    let prepared = prepare(&spec, pool, false)?;
    let (result, leftovers) = execute(&spec, prepared, req, stdio, start).map_err(Undelivered::into_inner)?;
    drop(leftovers);
    Ok(result)
}

pub(super) fn check(req: &SpawnRequest) -> Result<(), SpawnError> {
    if req.argv.is_empty() {
        return Err(SpawnError::Setup("no command given".into()));
    }
    Ok(())
}

/// A run that failed; `retry`: the sandbox could not take the request (it
/// had died while waiting), nothing of the request ran, and another
/// sandbox may take it.
#[derive(Debug)]
pub(super) struct Undelivered {
    pub retry: bool,
    pub error: SpawnError,
}

impl Undelivered {
    pub fn into_inner(self) -> SpawnError {
        self.error
    }
}

fn failed(error: SpawnError) -> Undelivered {
    Undelivered { retry: false, error }
}

/// Hands `req` to `prepared`, waits for the exit, and returns the result
/// with what the sandbox left behind (the caller removes it, possibly after
/// answering). `start` is when the request arrived.
pub(super) fn execute(
    spec: &Spec,
    prepared: Prepared,
    req: &SpawnRequest,
    stdio: Stdio<'_>,
    start: Instant,
) -> Result<(RunResult, Leftovers), Undelivered> {
    let undelivered = failed;
    let scratch = prepared.scratch_workspace().to_path_buf();
    // The workspace: a detached copy of the caller's tree, attached at
    // /workspace by the sandbox; or the sandbox's fresh scratch directory.
    let mut tree: Option<OwnedFd> = None;
    let cwd = match (&req.workspace, spec.isolated) {
        (Some(w), true) => {
            let dir = std::fs::File::open(w)
                .map_err(SpawnError::io(format!("workspace {}", w.display())))
                .map_err(undelivered)?;
            if !dir.metadata().map(|m| m.is_dir()).unwrap_or(false) {
                return Err(undelivered(SpawnError::Setup(format!("workspace {}: not a directory", w.display()))));
            }
            tree = Some(
                workspace_tree(&dir, &spec.idmaps)
                    .map_err(SpawnError::io(format!("workspace {}", w.display())))
                    .map_err(undelivered)?,
            );
            "/workspace".to_string()
        }
        (None, true) => "/workspace".to_string(),
        (Some(w), false) => w
            .canonicalize()
            .map_err(SpawnError::io(format!("workspace {}", w.display())))
            .map_err(undelivered)?
            .display()
            .to_string(),
        (None, false) => scratch.display().to_string(),
    };
    let mut env = spec.base_env.clone();
    env.insert(1, format!("HOME={cwd}"));
    env.extend(req.env.iter().map(|(k, v)| format!("{k}={v}")));
    let devnull = std::fs::File::open("/dev/null").map_err(SpawnError::io("/dev/null")).map_err(undelivered)?;
    let (pipes, out_fd, err_fd) = match stdio {
        Stdio::Capture => {
            let (out_r, out_w) = super::prepare::pipe().map_err(undelivered)?;
            let (err_r, err_w) = super::prepare::pipe().map_err(undelivered)?;
            let (o, e) = (out_w.as_raw_fd(), err_w.as_raw_fd());
            (Some((out_r, err_r, out_w, err_w)), o, e)
        }
        Stdio::Pass { stdout, stderr } => (None, stdout.as_raw_fd(), stderr.as_raw_fd()),
    };
    let handover = Handover {
        cwd: CString::new(cwd).map_err(|_| undelivered(SpawnError::Setup("a path contains a NUL byte".into())))?,
        argv: cstrings(req.argv.iter().cloned()).map_err(undelivered)?,
        envp: cstrings(env).map_err(undelivered)?,
        stdio: [devnull.as_raw_fd(), out_fd, err_fd],
        workspace: tree.as_ref().map(|t| t.as_raw_fd()),
    };
    handover
        .send(prepared.control.as_raw_fd())
        .map_err(|e| Undelivered { retry: true, error: SpawnError::Io { what: "handover".into(), source: e } })?;
    let limits = prepared.limits.clone();
    let cgroup_bpf_status = prepared.cgroup_bpf_status.clone();
    let network_status = prepared.network_status.clone();
    let taken = prepared.take_over(spec.lsm);
    let (sandbox_pid, mut status, mut leftovers) = (taken.sandbox_pid, taken.status, taken.leftovers);
    let control = taken.control;
    // Our copies of what the sandbox now holds.
    drop((devnull, tree));
    let (out_r, err_r) = match pipes {
        Some((out_r, err_r, out_w, err_w)) => {
            drop((out_w, err_w));
            (Some(out_r), Some(err_r))
        }
        None => (None, None),
    };
    let guard = KillOnDrop(sandbox_pid);

    // Until exec, the sandbox reports on the status pipe (closed by exec):
    // an error, its Landlock report and, with BPF-LSM, `mounted`, which
    // needs an answer. Without BPF-LSM nothing does, so the pipe is read
    // once the command has exited: the supervisor is not woken at exec,
    // where (on a small host) that wakeup preempts the command just started.
    let mut landlock_report: Option<LandlockReport> = None;
    let mut lsm_status = None;
    if spec.lsm {
        let mut line = String::new();
        loop {
            line.clear();
            if matches!(status.read_line(&mut line), Ok(0) | Err(_)) {
                break;
            }
            match StatusLine::parse(&line) {
                StatusLine::Error(e) => {
                    drop(guard);
                    return Err(failed(e));
                }
                StatusLine::Landlock(r) => landlock_report = r,
                // The sandbox's own mounts are done: attach the BPF-LSM
                // programs (they deny mounts), then let it go on to exec.
                StatusLine::Mounted => {
                    match attach_lsm(spec, &req.argv[0], &mut leftovers) {
                        Ok(s) => lsm_status = Some(s),
                        Err(e) => {
                            drop(guard);
                            return Err(failed(e));
                        }
                    }
                    if let Some(c) = &control {
                        // SAFETY: writes one byte from a live buffer to our socket.
                        unsafe { libc::write(c.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
                    }
                }
                StatusLine::Other => {}
            }
        }
    }
    drop(control);

    let io = super::supervisor_io::relay(sandbox_pid, out_r, err_r, &taken.pidfd, req.output_cap, req.timeout);
    std::mem::forget(guard);
    let (wait_status, rusage) = match io.exit {
        Some(exit) => exit,
        None => super::supervisor_io::reap(sandbox_pid),
    };
    if !spec.lsm {
        // The command has exited: what it wrote before exec is in the pipe.
        for line in super::supervisor_io::drain_lines(&mut status) {
            match StatusLine::parse(&line) {
                StatusLine::Error(e) => return Err(failed(e)),
                StatusLine::Landlock(r) => landlock_report = r,
                StatusLine::Mounted | StatusLine::Other => {}
            }
        }
    }
    let duration_ms = start.elapsed().as_secs_f64() * 1000.0;
    let (memory_peak_bytes, oom_killed) = leftovers.memory();
    // The programs wrote their records synchronously: they are in the rings.
    let audit = leftovers.cgroup_id().map(|id| spec.bundle.audit_events(id)).unwrap_or_default();

    let mut enforcement = report(spec, &limits, cgroup_bpf_status, network_status, landlock_report.as_ref());
    enforcement.extend(lsm_status);
    let missing_paths =
        landlock_report.as_ref().map(|r| r.missing.iter().map(|m| m.pattern.clone()).collect()).unwrap_or_default();
    let signal = libc::WIFSIGNALED(wait_status).then(|| libc::WTERMSIG(wait_status));
    let exit_code = libc::WIFEXITED(wait_status).then(|| libc::WEXITSTATUS(wait_status));
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    let result = RunResult {
        exit_code,
        signal,
        timed_out: io.timed_out,
        oom_killed,
        stdout: String::from_utf8_lossy(&io.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&io.stderr).into_owned(),
        stdout_truncated: io.stdout_dropped,
        stderr_truncated: io.stderr_dropped,
        duration_ms,
        max_rss_kib: rusage.ru_maxrss as u64,
        memory_peak_bytes,
        user_ms: tv(rusage.ru_utime),
        sys_ms: tv(rusage.ru_stime),
        mode: format!("{:?}", spec.mode).to_lowercase(),
        enforcement,
        missing_paths,
        audit,
    };
    Ok((result, leftovers))
}

/// Attaches the BPF-LSM programs to the sandbox's cgroup; its line of the
/// report, or the refusal when the layer is required.
fn attach_lsm(spec: &Spec, program: &str, leftovers: &mut Leftovers) -> Result<LayerStatus, SpawnError> {
    let attached = match leftovers.cgroup_v2() {
        None => Err("the sandbox has no cgroup v2 directory to attach to".to_string()),
        Some(cg) => LsmAttachment::attach(&spec.bundle, &spec.policy, program, cg),
    };
    let required =
        spec.policy.require.contains(&phantom_dsl::ir::Layer::BpfLsm) || spec.mode == phantom_dsl::ir::Mode::Hardened;
    let (enforcement, reason) = match attached {
        Ok(a) => {
            leftovers.set_lsm(&spec.bundle.live, a);
            (Enforcement::Full, None)
        }
        Err(reason) if required => return Err(SpawnError::Required { layer: "bpf-lsm".into(), reason }),
        Err(reason) => (Enforcement::None, Some(reason)),
    };
    Ok(LayerStatus { layer: "bpf-lsm".into(), enforcement, reason })
}

/// One line the sandbox writes on its status pipe between handover and exec.
enum StatusLine {
    Error(SpawnError),
    Landlock(Option<LandlockReport>),
    Mounted,
    Other,
}

impl StatusLine {
    fn parse(line: &str) -> StatusLine {
        let mut parts = line.trim_end_matches('\n').splitn(3, '\t');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("error"), Some(stage), Some(message)) => {
                StatusLine::Error(SpawnError::Child { stage: stage.into(), message: message.into() })
            }
            (Some("landlock"), Some(json), _) => StatusLine::Landlock(serde_json::from_str(json).ok()),
            (Some("mounted"), _, _) => StatusLine::Mounted,
            _ => StatusLine::Other,
        }
    }
}

/// The enforcement report of one run.
fn report(
    spec: &Spec,
    limits: &super::cgroup::LimitsReport,
    cgroup_bpf: Option<LayerStatus>,
    network: Option<(LayerStatus, String)>,
    landlock: Option<&LandlockReport>,
) -> Vec<LayerStatus> {
    let mut out = Vec::new();
    let status = |layer: &str, enforcement, reason: Option<&str>| LayerStatus {
        layer: layer.into(),
        enforcement,
        reason: reason.map(str::to_string),
    };
    if spec.isolated {
        out.push(status("namespaces", Enforcement::Full, Some("user, pid, mount, ipc, uts, net, cgroup")));
    } else {
        out.push(status("namespaces", Enforcement::None, Some("mode: direct runs without isolation")));
    }
    out.extend(spec.unavailable.iter().cloned());
    out.extend(cgroup_bpf);
    let (xdp, veth) = network.unzip();
    out.extend(xdp);
    if spec.isolated {
        let net = match (spec.policy.network.mode, veth.as_deref()) {
            (NetMode::None, _) => (Enforcement::Full, "empty network namespace"),
            (NetMode::LoopbackOnly, _) => (Enforcement::Full, "network namespace with loopback only"),
            (NetMode::Allowlist, Some(v)) if !v.is_empty() => (Enforcement::Full, v),
            (NetMode::Allowlist, _) => (
                Enforcement::Partial,
                "no veth pair (see xdp): the sandbox has loopback only, stricter than the allowlist",
            ),
        };
        out.push(status("network", net.0, Some(net.1)));
        let lim = |what: &str, set: bool, by: Option<&str>| {
            set.then(|| LayerStatus {
                layer: format!("limit:{what}"),
                enforcement: if by.is_some() { Enforcement::Full } else { Enforcement::Partial },
                reason: Some(by.map_or_else(|| "rlimit fallback (per process)".to_string(), str::to_string)),
            })
        };
        let r = &spec.policy.resources;
        out.extend(lim("memory", r.memory.is_some(), limits.memory));
        out.extend(lim("pids", r.pids.is_some(), limits.pids));
        out.extend(lim("cpu", r.cpu.is_some(), limits.cpu));
    }
    if spec.bundle.seccomp.is_some() {
        out.push(status("seccomp", Enforcement::Full, None));
    }
    if let Some(r) = landlock {
        out.push(LayerStatus { layer: "landlock".into(), enforcement: r.enforcement, reason: r.reason.clone() });
    }
    out
}

/// Kills and reaps the sandbox's pid 1 (our child) if a run fails after
/// handover.
struct KillOnDrop(libc::pid_t);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: killing and reaping our own unreaped child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// The caller's workspace as a detached tree: idmapped to the sandbox's
/// root when a user (not root) owns it (`idmap`), else as it is (also
/// where the filesystem cannot idmap).
fn workspace_tree(dir: &std::fs::File, idmaps: &super::idmap::Idmaps) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let meta = dir.metadata()?;
    if let Some(ns) = idmaps.for_owner(meta.uid(), meta.gid())? {
        if let Ok(tree) = sys::clone_tree(dir.as_raw_fd(), Some(ns.as_fd())) {
            return Ok(tree);
        }
    }
    sys::clone_tree(dir.as_raw_fd(), None)
}
