//! The supervisor side of a spawn: prepares everything (paths, rulesets,
//! cgroups, pipes) before clone, finishes the child's identity and cgroup
//! placement, then relays output with size caps, enforces the wall-clock
//! timeout and reaps the child and everything it created.

use super::cgroup::SandboxCgroup;
use super::child::{stage1_main, ChildPlan, SANDBOX_PATH};
use super::netns::{NetKind, NetnsPool};
use super::rootfs::{Bind, RootPlan, DEFAULT_READ_ONLY};
use super::{LayerStatus, RunResult, SpawnError, SpawnRequest, SANDBOX_ID_BASE};
use crate::apply::LoadedBundle;
use crate::landlock::{expand, LandlockReport};
use crate::report::Enforcement;
use phantom_dsl::ir::{Access, Allocator, Effect, Layer, Mode, NetMode, Policy};
use phantom_ebpf::landlock::{FsRight, FsRuleSpec, LandlockRuleset};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

static RUNS: AtomicU64 = AtomicU64::new(0);

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(SpawnError::Io { what: "pipe".into(), source: std::io::Error::last_os_error() });
    }
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Layers the runtime cannot enforce yet, with the issue that brings them.
fn unavailable(layer: Layer) -> Option<&'static str> {
    match layer {
        Layer::Xdp => Some("the XDP programs exist, but `phantom run` does not give the sandbox a veth pair yet"),
        Layer::BpfLsm => Some(
            "the BPF-LSM programs exist (proven in the VM tier), but `phantom run` does not attach them yet; \
             they also need `bpf` in the kernel's lsm= list (see `phantom doctor`)",
        ),
        Layer::Seccomp | Layer::Landlock | Layer::CgroupBpf => None,
    }
}

/// Rules every sandbox root needs beyond the policy's, when Landlock
/// restricts the filesystem: the workspace, the device nodes and /proc.
fn implicit_landlock_rules(spec: &mut LandlockRuleset) {
    use FsRight::*;
    let Some(rules) = spec.fs.as_mut() else { return };
    let rw = [
        ReadFile, ReadDir, WriteFile, Truncate, MakeReg, MakeDir, MakeSym, MakeFifo, MakeSock, RemoveFile, RemoveDir,
        Refer,
    ];
    let add = |rules: &mut Vec<FsRuleSpec>, path: &str, rights: &[FsRight]| {
        rules.push(FsRuleSpec {
            path: path.into(),
            prefix_glob: false,
            rights: rights.iter().copied().collect(),
            line: 0,
        });
    };
    add(rules, "/workspace", &rw);
    add(rules, "/dev", &[ReadFile, WriteFile, ReadDir, IoctlDev]);
    add(rules, "/proc", &[ReadFile, ReadDir]);
}

fn binds(policy: &Policy) -> Vec<Bind> {
    let mut out = Vec::new();
    for r in policy.filesystem.rules.iter().filter(|r| r.effect == Effect::Allow) {
        let writable = r.access.iter().any(|a| matches!(a, Access::Write | Access::Create | Access::Remove));
        for p in expand(&r.path.path, r.path.prefix_glob) {
            out.push(Bind { src: p, writable });
        }
    }
    if out.is_empty() {
        out = DEFAULT_READ_ONLY.iter().map(|p| Bind { src: PathBuf::from(p), writable: false }).collect();
    }
    out
}

fn preload(policy: &Policy, binds: &[Bind]) -> Option<String> {
    let names: &[&str] = match policy.performance.memory_allocator {
        Allocator::System => return None,
        Allocator::Jemalloc => &["libjemalloc.so.2"],
        Allocator::Mimalloc => &["libmimalloc.so.2", "libmimalloc.so"],
    };
    let dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib"];
    dirs.iter()
        .flat_map(|d| names.iter().map(move |n| Path::new(d).join(n)))
        .find(|p| p.exists() && binds.iter().any(|b| p.starts_with(&b.src)))
        .map(|p| p.display().to_string())
}

fn cstrings(v: impl IntoIterator<Item = String>) -> Result<Vec<CString>, SpawnError> {
    v.into_iter()
        .map(|s| CString::new(s).map_err(|_| SpawnError::Setup("an argument contains a NUL byte".into())))
        .collect()
}

fn chown_tree(p: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid))?;
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p)? {
            chown_tree(&e?.path(), uid)?;
        }
    }
    Ok(())
}

/// Scratch directories of one run, removed on drop.
struct RunDirs {
    base: PathBuf,
    workspace: PathBuf,
    remove_workspace: bool,
}

impl Drop for RunDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(self.base.join("root"));
        if self.remove_workspace {
            let _ = std::fs::remove_dir_all(&self.workspace);
        }
        let _ = std::fs::remove_dir(&self.base);
    }
}

/// Runs `req` under `policy` with the process layers of `bundle`.
pub fn run(policy: &Policy, bundle: &LoadedBundle, req: &SpawnRequest) -> Result<RunResult, SpawnError> {
    run_with(policy, bundle, req, None)
}

/// [`run`], taking a fresh network namespace from `pool` when it has one.
pub fn run_with(
    policy: &Policy,
    bundle: &LoadedBundle,
    req: &SpawnRequest,
    pool: Option<&NetnsPool>,
) -> Result<RunResult, SpawnError> {
    let mode = policy.effective_mode();
    if mode == Mode::Wasm {
        return Err(SpawnError::Setup(
            "wasm mode is not available yet (a later issue adds the wasmtime sandbox)".into(),
        ));
    }
    if req.argv.is_empty() {
        return Err(SpawnError::Setup("no command given".into()));
    }
    let isolated = mode != Mode::Direct;
    let present: Vec<Layer> = policy.layers().iter().map(|l| l.layer).collect();
    let mut enforcement = Vec::new();
    for layer in &present {
        if let Some(reason) = unavailable(*layer) {
            let required = policy.require.contains(layer) || mode == Mode::Hardened;
            if required {
                return Err(SpawnError::Required { layer: layer.name().into(), reason: reason.into() });
            }
            enforcement.push(LayerStatus {
                layer: layer.name().into(),
                enforcement: Enforcement::None,
                reason: Some(reason.into()),
            });
        }
    }

    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{}-{n}", policy.profile, std::process::id());
    let base = std::env::temp_dir().join(format!("phantom-run-{id}"));
    std::fs::create_dir_all(base.join("root")).map_err(SpawnError::io(format!("create {}", base.display())))?;
    let (workspace, remove_workspace) = match &req.workspace {
        Some(w) => (w.canonicalize().map_err(SpawnError::io(format!("workspace {}", w.display())))?, false),
        None => {
            let w = base.join("workspace");
            std::fs::create_dir_all(&w).map_err(SpawnError::io("create workspace"))?;
            if isolated {
                chown_tree(&w, SANDBOX_ID_BASE).map_err(SpawnError::io("chown workspace"))?;
            }
            (w, true)
        }
    };
    let dirs = RunDirs { base: base.clone(), workspace: workspace.clone(), remove_workspace };

    // Everything the child needs, computed before clone.
    let bind_list = if isolated { binds(policy) } else { Vec::new() };
    let root = isolated.then(|| RootPlan::new(&base.join("root"), bind_list.clone(), &workspace, 64 << 20));
    let mut landlock = if isolated { bundle.landlock.clone() } else { None };
    if let Some(spec) = landlock.as_mut() {
        implicit_landlock_rules(spec);
    }
    let mut cg = if isolated {
        Some(SandboxCgroup::create(&id, &policy.resources).map_err(SpawnError::io("cgroup"))?)
    } else {
        None
    };
    let limits = cg.as_ref().map(|c| c.limits.clone()).unwrap_or_default();
    // cgroup-BPF: the device allow-list always, the socket rules in allowlist
    // mode; attached to the sandbox's cgroup before the command enters it.
    let mut cgroup_bpf = None;
    if isolated {
        let required = policy.require.contains(&Layer::CgroupBpf)
            || (mode == Mode::Hardened && present.contains(&Layer::CgroupBpf));
        let attached = match cg.as_ref().and_then(|c| c.v2.as_ref()) {
            None => Err("no cgroup v2 hierarchy to attach to".to_string()),
            Some(dir) => bundle.cgroup_programs(policy).and_then(|p| p.attach(dir).map_err(|e| e.to_string())),
        };
        match attached {
            Ok(a) => {
                enforcement.push(LayerStatus {
                    layer: "cgroup-bpf".into(),
                    enforcement: Enforcement::Full,
                    reason: None,
                });
                cgroup_bpf = Some(a);
            }
            Err(reason) if required => return Err(SpawnError::Required { layer: "cgroup-bpf".into(), reason }),
            Err(reason) => enforcement.push(LayerStatus {
                layer: "cgroup-bpf".into(),
                enforcement: Enforcement::None,
                reason: Some(reason),
            }),
        }
    }
    let mut rlimits = Vec::new();
    if let Some(f) = policy.resources.file_size {
        rlimits.push((libc::RLIMIT_FSIZE, f.0));
    }
    if let Some(n) = policy.resources.open_files {
        rlimits.push((libc::RLIMIT_NOFILE, u64::from(n)));
    }
    if let (Some(m), None) = (policy.resources.memory, limits.memory) {
        rlimits.push((libc::RLIMIT_AS, m.0));
    }
    if let (Some(p), None, true) = (policy.resources.pids, limits.pids, isolated) {
        rlimits.push((libc::RLIMIT_NPROC, u64::from(p)));
    }
    let mut env = vec![
        format!("PATH={SANDBOX_PATH}"),
        format!("HOME={}", if isolated { "/workspace".into() } else { workspace.display().to_string() }),
        "LANG=C.UTF-8".to_string(),
        "TERM=dumb".to_string(),
    ];
    if let Some(lib) = isolated.then(|| preload(policy, &bind_list)).flatten() {
        env.push(format!("LD_PRELOAD={lib}"));
    }
    env.extend(req.env.iter().map(|(k, v)| format!("{k}={v}")));

    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let devnull = std::fs::File::open("/dev/null").map_err(SpawnError::io("/dev/null"))?;
    let kind = if policy.network.mode == NetMode::None { NetKind::Empty } else { NetKind::Loopback };
    let pooled_netns = if isolated { pool.and_then(|p| p.take(kind)) } else { None };
    let cg_fd = match cg.as_ref().and_then(|c| c.v2.as_ref()) {
        Some(d) => Some(std::fs::File::open(d).map_err(SpawnError::io(format!("open {}", d.display())))?),
        None => None,
    };
    let plan = ChildPlan {
        root,
        clone_flags: if isolated {
            (libc::CLONE_NEWUSER
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWNS
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWCGROUP) as u64
                | if pooled_netns.is_some() { 0 } else { libc::CLONE_NEWNET as u64 }
        } else {
            0
        },
        netns_fd: pooled_netns.as_ref().map(|f| f.as_raw_fd()),
        cgroup_fd: cg_fd.as_ref().map(|f| f.as_raw_fd()),
        cgroup_v1: cg.as_ref().map(|c| c.v1.iter().map(|(_, d)| d.clone()).collect()).unwrap_or_default(),
        isolated,
        hostname: isolated.then(|| CString::new("phantom").expect("no NUL")),
        // A pooled namespace comes with loopback already up.
        loopback_up: isolated && pooled_netns.is_none() && policy.network.mode != NetMode::None,
        rlimits,
        landlock,
        seccomp: bundle.seccomp.clone(),
        argv: cstrings(req.argv.iter().cloned())?,
        envp: cstrings(env)?,
        stdin: devnull.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        status: status_w.as_raw_fd(),
    };
    let start = Instant::now();
    // A glibc fork: safe in a multi-threaded supervisor (malloc stays
    // usable in the child). The namespaces come from the first stage.
    // SAFETY: the child runs only stage1_main, which never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::Io { what: "fork".into(), source: std::io::Error::last_os_error() });
    }
    if pid == 0 {
        stage1_main(&plan);
    }
    drop((out_w, err_w, status_w, devnull, cg_fd, pooled_netns));
    let guard = KillOnDrop(pid);

    // Until exec, the sandbox reports on the status pipe (closed by exec).
    let mut status_text = String::new();
    let _ = std::io::Read::read_to_string(&mut std::fs::File::from(status_r), &mut status_text);
    let mut landlock_report: Option<LandlockReport> = None;
    let mut sandbox_pid: Option<libc::pid_t> = None;
    for line in status_text.lines() {
        let mut parts = line.splitn(3, '\t');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("error"), Some(stage), Some(message)) => {
                drop(guard);
                return Err(SpawnError::Child { stage: stage.into(), message: message.into() });
            }
            (Some("landlock"), Some(json), _) => landlock_report = serde_json::from_str(json).ok(),
            (Some("pid"), Some(p), _) => sandbox_pid = p.parse().ok(),
            _ => {}
        }
    }

    let io = super::supervisor_io::relay(pid, sandbox_pid, out_r, err_r, req.output_cap, req.timeout);
    let (status, rusage) = super::supervisor_io::reap(pid);
    std::mem::forget(guard);
    let duration_ms = start.elapsed().as_secs_f64() * 1000.0;
    let (memory_peak_bytes, oom_killed) = cg.as_ref().map_or((None, false), |c| (c.memory_peak(), c.oom_killed()));
    drop(cgroup_bpf); // detach before the cgroup goes
    if let Some(c) = cg.as_mut() {
        let _ = c.remove();
    }
    drop(dirs);

    if isolated {
        enforcement.insert(
            0,
            LayerStatus {
                layer: "namespaces".into(),
                enforcement: Enforcement::Full,
                reason: Some("user, pid, mount, ipc, uts, net, cgroup".into()),
            },
        );
        let net = match policy.network.mode {
            NetMode::None => (Enforcement::Full, "empty network namespace"),
            NetMode::LoopbackOnly => (Enforcement::Full, "network namespace with loopback only"),
            NetMode::Allowlist => {
                (Enforcement::Partial, "no veth yet: the sandbox has loopback only, stricter than the allowlist")
            }
        };
        enforcement.push(LayerStatus { layer: "network".into(), enforcement: net.0, reason: Some(net.1.into()) });
        let lim = |what: &str, set: bool, by: Option<&str>| {
            set.then(|| LayerStatus {
                layer: format!("limit:{what}"),
                enforcement: if by.is_some() { Enforcement::Full } else { Enforcement::Partial },
                reason: Some(by.map_or_else(|| "rlimit fallback (per process)".to_string(), str::to_string)),
            })
        };
        let r = &policy.resources;
        enforcement.extend(lim("memory", r.memory.is_some(), limits.memory));
        enforcement.extend(lim("pids", r.pids.is_some(), limits.pids));
        enforcement.extend(lim("cpu", r.cpu.is_some(), limits.cpu));
    } else {
        enforcement.insert(
            0,
            LayerStatus {
                layer: "namespaces".into(),
                enforcement: Enforcement::None,
                reason: Some("mode: direct runs without isolation".into()),
            },
        );
    }
    if bundle.seccomp.is_some() {
        enforcement.push(LayerStatus { layer: "seccomp".into(), enforcement: Enforcement::Full, reason: None });
    }
    let missing_paths =
        landlock_report.as_ref().map(|r| r.missing.iter().map(|m| m.pattern.clone()).collect()).unwrap_or_default();
    if let Some(r) = landlock_report {
        enforcement.push(LayerStatus { layer: "landlock".into(), enforcement: r.enforcement, reason: r.reason });
    }
    let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
    let exit_code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    Ok(RunResult {
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
        mode: format!("{mode:?}").to_lowercase(),
        enforcement,
        missing_paths,
    })
}

/// Kills and reaps the child if setup fails after clone.
struct KillOnDrop(libc::pid_t);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling and reaping our own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}
