//! Preparing a sandbox before its request is known: scratch directories,
//! the cgroups (with the cgroup-BPF programs attached), the first stage and
//! the command process in its namespaces with its root pivoted, waiting
//! for one [`super::handover::Handover`]. A [`Prepared`] sandbox is consumed
//! by the run that uses it; dropped unused, it is killed and reaped and its
//! cgroups and directories are removed.

use super::cgroup::{LimitsReport, SandboxCgroup};
use super::child::{stage1_main, ChildPlan};
use super::netns::{NetKind, NetnsPool};
use super::rootfs::RootPlan;
use super::spec::Spec;
use super::{sys, LayerStatus, SpawnError, SANDBOX_ID_BASE};
use crate::report::Enforcement;
use phantom_dsl::ir::NetMode;
use std::ffi::CString;
use std::io::BufRead;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static RUNS: AtomicU64 = AtomicU64::new(0);

pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(SpawnError::Io { what: "pipe".into(), source: std::io::Error::last_os_error() });
    }
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A new empty directory at `p`: what a crashed process of the same pid
/// left there is removed first (a sandbox never sees another's files).
fn fresh_dir(p: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(p) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_dir_all(p)?;
            std::fs::create_dir(p)
        }
        r => r,
    }
}

/// The fresh workspace of one sandbox (when a request names none),
/// removed on drop.
#[derive(Debug)]
pub(super) struct Scratch {
    pub workspace: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.workspace);
    }
}

/// Where every sandbox mounts its root tmpfs before pivoting: one empty
/// directory `/tmp/phantom-root`, shared. Each sandbox mounts on it in its
/// own private mount namespace, so the host never sees a mount there and
/// nothing is made or removed per sandbox. Under `/tmp` (not `$TMPDIR`)
/// because binds of `/tmp` are refused and the sandbox's own `/tmp` tmpfs
/// hides it, so no sandbox sees its root through a bind. Checked every time (a
/// cleaner of `/tmp` may remove it under a resident zygote): a directory of
/// ours, not a symlink.
fn root_mount_point() -> Result<PathBuf, SpawnError> {
    use std::os::unix::fs::MetadataExt;
    let dir = PathBuf::from("/tmp/phantom-root");
    let _ = std::fs::create_dir(&dir);
    let m = std::fs::symlink_metadata(&dir).map_err(SpawnError::io(format!("create {}", dir.display())))?;
    // SAFETY: geteuid has no arguments.
    if !m.is_dir() || m.uid() != unsafe { libc::geteuid() } {
        return Err(SpawnError::Setup(format!(
            "{} is not a directory of ours (a symlink or another user's); remove it",
            dir.display()
        )));
    }
    Ok(dir)
}

/// What a sandbox leaves behind once its processes are gone; dropping it
/// detaches the programs, then removes the cgroups and the directories.
/// A resident spawner drops it after the result is handed back.
#[derive(Debug)]
pub struct Leftovers {
    /// The sandbox's mount namespace, held so that its teardown (unmounting
    /// the whole root, an RCU grace period) happens when this is dropped,
    /// not in the exit of the sandbox's last process, before its parent
    /// can see the exit.
    mount_ns: Option<OwnedFd>,
    /// The cgroup-BPF and BPF-LSM attachments, registered with the bundle
    /// so that a policy update can move them ([`crate::live`]).
    live: Option<crate::live::LiveHandle>,
    cgroup: Option<SandboxCgroup>,
    scratch: Option<Scratch>,
}

impl Leftovers {
    /// Peak memory of the sandbox's cgroup, and whether its limit killed
    /// something.
    pub fn memory(&self) -> (Option<u64>, bool) {
        self.cgroup.as_ref().map_or((None, false), |c| (c.memory_peak(), c.oom_killed()))
    }

    /// The sandbox's cgroup v2 directory, if it has one.
    pub fn cgroup_v2(&self) -> Option<&Path> {
        self.cgroup.as_ref().and_then(|c| c.v2.as_deref())
    }

    /// Its cgroup id (the v2 directory's inode number), if it has one.
    pub fn cgroup_id(&self) -> Option<u64> {
        self.cgroup.as_ref().and_then(|c| c.v2_id)
    }

    /// Keeps the BPF-LSM attachment until teardown (detached before the
    /// cgroup is removed).
    pub fn set_lsm(&mut self, registry: &crate::live::LiveRegistry, a: super::lsm_attach::LsmAttachment) {
        self.live.get_or_insert_with(|| registry.enter(a.cgroup())).set_lsm(a);
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        drop(self.mount_ns.take());
        drop(self.live.take()); // detach before the cgroup goes
        if let Some(mut c) = self.cgroup.take() {
            let _ = c.remove();
        }
        drop(self.scratch.take());
    }
}

/// A sandbox waiting for its request.
pub(super) struct Prepared {
    /// The first stage (our child) until reaped: it exits once it has
    /// released the command.
    first_stage: Option<libc::pid_t>,
    /// Pid 1 of the sandbox (host pid): our child too (CLONE_PARENT),
    /// killed on timeout.
    sandbox_pid: Option<libc::pid_t>,
    /// Readable when the sandbox's pid 1 has exited; reaped through it.
    pidfd: Option<OwnedFd>,
    /// The supervisor's end of the control socket.
    pub control: OwnedFd,
    /// The status pipe, read up to `ready`; the rest comes after handover.
    status: Option<std::io::BufReader<std::fs::File>>,
    pub limits: LimitsReport,
    /// cgroup-BPF's line of the enforcement report (sandbox modes).
    pub cgroup_bpf_status: Option<LayerStatus>,
    /// Allowlist mode: XDP's line and the network's description (empty
    /// when the veth pair could not be made).
    pub network_status: Option<(LayerStatus, String)>,
    leftovers: Option<Leftovers>,
    /// Kill and reap on drop (until a run takes the sandbox over).
    armed: bool,
}

impl Prepared {
    /// The sandbox's scratch workspace (used when a request names none).
    pub fn scratch_workspace(&self) -> &Path {
        &self.leftovers.as_ref().and_then(|l| l.scratch.as_ref()).expect("scratch lives until the run ends").workspace
    }

    /// Hands the sandbox over to a run: no more killing on drop; the
    /// caller reaps it and drops the leftovers afterwards. `lsm`: keep a
    /// copy of the control socket for the BPF-LSM confirmation.
    pub fn take_over(mut self, lsm: bool) -> TakenOver {
        self.armed = false;
        // The control socket closes with `self`: the sandbox has its request.
        TakenOver {
            sandbox_pid: self.sandbox_pid.expect("a ready sandbox has a pid"),
            pidfd: self.pidfd.take().expect("a ready sandbox has a pidfd"),
            status: self.status.take().expect("status until taken over"),
            leftovers: self.leftovers.take().expect("leftovers until taken over"),
            // The sandbox reads one byte only when the spec has BPF-LSM
            // programs.
            control: if lsm { self.control.try_clone().ok() } else { None },
        }
    }
}

/// A sandbox that has its request: what the run needs to follow it.
pub(super) struct TakenOver {
    /// Pid 1 of the sandbox, our child: the caller reaps it.
    pub sandbox_pid: libc::pid_t,
    pub pidfd: OwnedFd,
    pub status: std::io::BufReader<std::fs::File>,
    pub leftovers: Leftovers,
    pub control: Option<OwnedFd>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        let sandbox = self.sandbox_pid.filter(|_| self.armed);
        for pid in sandbox.into_iter().chain(self.first_stage) {
            // SAFETY: killing and reaping our own unreaped children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Prepares one sandbox for `spec`; takes a fresh network namespace from
/// `pool` when it has one. `ahead`: prepared before its request (a
/// spawner's pool), so it has time to get ready for a fast exec while it
/// waits ([`crate::resident`]).
pub(super) fn prepare(spec: &Spec, pool: Option<&NetnsPool>, ahead: bool) -> Result<Prepared, SpawnError> {
    // The sandbox joins a network namespace made here, in the host's user
    // namespace, so that its root holds no capability over it (no
    // reconfiguring, no netfilter, no raw sockets). None ready in `pool`:
    // one is made now, on a thread of its own, while the workspace and
    // cgroups are made below.
    let kind = NetKind::of(spec.policy.network.mode);
    let ready_netns = if spec.isolated { pool.and_then(|p| p.take(kind)) } else { None };
    let making_netns = (spec.isolated && ready_netns.is_none()).then(|| NetnsPool::one(kind));
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{}-{n}", spec.policy.profile, std::process::id());
    let workspace = std::env::temp_dir().join(format!("phantom-run-{id}"));
    fresh_dir(&workspace).map_err(SpawnError::io(format!("create {}", workspace.display())))?;
    let scratch = Scratch { workspace: workspace.clone() };
    if spec.isolated {
        std::os::unix::fs::lchown(&workspace, Some(SANDBOX_ID_BASE), Some(SANDBOX_ID_BASE))
            .map_err(SpawnError::io("chown workspace"))?;
    }
    let mut leftovers = Leftovers { mount_ns: None, live: None, cgroup: None, scratch: Some(scratch) };

    let root = match spec.isolated {
        true => Some(RootPlan::new(&root_mount_point()?, spec.binds.clone(), &workspace, 64 << 20)),
        false => None,
    };
    if spec.isolated {
        leftovers.cgroup = Some(SandboxCgroup::create(&id, &spec.policy.resources).map_err(SpawnError::io("cgroup"))?);
    }
    let cg = leftovers.cgroup.as_ref();
    let limits = cg.map(|c| c.limits.clone()).unwrap_or_default();
    let res = &spec.policy.resources;
    let mut rlimits = Vec::new();
    if let Some(f) = res.file_size {
        rlimits.push((libc::RLIMIT_FSIZE, f.0));
    }
    if let Some(n) = res.open_files {
        rlimits.push((libc::RLIMIT_NOFILE, u64::from(n)));
    }
    if let (Some(m), None) = (res.memory, limits.memory) {
        rlimits.push((libc::RLIMIT_AS, m.0));
    }
    if let (Some(p), None, true) = (res.pids, limits.pids, spec.isolated) {
        rlimits.push((libc::RLIMIT_NPROC, u64::from(p)));
    }

    let (status_r, status_w) = pipe()?;
    let (control, control_child) = sys::socketpair().map_err(SpawnError::io("socketpair"))?;
    // Made in the sandbox's own user namespace (CLONE_NEWNET) only when
    // the host refused to make one here.
    let mut pooled_netns = ready_netns.or_else(|| making_netns.as_ref().and_then(|m| m.take(kind)));
    // Allowlist: the namespace gets a veth pair with XDP on both ends.
    let mut network_status = None;
    if spec.isolated && spec.policy.network.mode == NetMode::Allowlist {
        match super::allowlist::prepare(&spec.bundle, pooled_netns.take()) {
            Ok((ns, xdp, network, attachment)) => {
                pooled_netns = Some(ns);
                network_status = Some((xdp, network));
                let label = cg.and_then(|c| c.v2.clone()).unwrap_or_else(|| attachment.veth.addrs.host_name().into());
                leftovers.live.get_or_insert_with(|| spec.bundle.live.enter(&label)).set_xdp(attachment);
            }
            Err(reason) if spec.xdp_required => return Err(SpawnError::Required { layer: "xdp".into(), reason }),
            Err(reason) => {
                network_status = Some((
                    LayerStatus { layer: "xdp".into(), enforcement: Enforcement::None, reason: Some(reason) },
                    String::new(),
                ))
            }
        }
    }
    let cg_fd = match cg.and_then(|c| c.v2.as_ref()) {
        Some(d) => Some(std::fs::File::open(d).map_err(SpawnError::io(format!("open {}", d.display())))?),
        None => None,
    };
    let plan = ChildPlan {
        root,
        clone_flags: if spec.isolated {
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
        cgroup_v1: cg.map(|c| c.v1.iter().map(|(_, d)| d.clone()).collect()).unwrap_or_default(),
        isolated: spec.isolated,
        hostname: spec.isolated.then(|| CString::new("phantom").expect("no NUL")),
        // A pooled namespace comes with loopback already up.
        loopback_up: spec.isolated && pooled_netns.is_none() && spec.policy.network.mode != NetMode::None,
        rlimits,
        landlock: spec.landlock.clone(),
        seccomp: spec.bundle.seccomp.clone(),
        status: status_w.as_raw_fd(),
        control: control_child.as_raw_fd(),
        lsm_sync: spec.lsm,
        ahead,
    };

    // A glibc fork of the supervisor (safe with other threads running): the
    // first stage. The namespaces come from it.
    // SAFETY: the child runs only stage1_main, which never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::Io { what: "fork".into(), source: std::io::Error::last_os_error() });
    }
    if pid == 0 {
        stage1_main(&plan);
    }
    drop((status_w, control_child, cg_fd, pooled_netns));
    let mut prepared = Prepared {
        first_stage: Some(pid),
        sandbox_pid: None,
        pidfd: None,
        control,
        status: None,
        limits,
        cgroup_bpf_status: None,
        network_status,
        leftovers: Some(leftovers),
        armed: true,
    };
    // cgroup-BPF: the device allow-list always, the socket rules in allowlist
    // mode. Loaded (once per bundle) and attached to the sandbox's cgroup
    // while the sandbox builds its root, so the two overlap; before `ready`,
    // hence before any command runs there. Our own setup code in the cgroup
    // meanwhile opens no device and no socket the programs judge.
    // A required layer that failed is reported once the sandbox's pid is
    // known: dropping `prepared` then kills and reaps it (our child, by
    // CLONE_PARENT), instead of leaving it a zombie.
    let mut refused = None;
    if spec.isolated {
        let l = prepared.leftovers.as_mut().expect("leftovers until taken over");
        let attached = match l.cgroup.as_ref().and_then(|c| c.v2.as_ref()) {
            None => Err("no cgroup v2 hierarchy to attach to".to_string()),
            Some(dir) => {
                spec.bundle.cgroup_programs(&spec.policy).and_then(|p| p.attach(dir).map_err(|e| e.to_string()))
            }
        };
        let (enforcement, reason) = match attached {
            Ok(a) => {
                l.live.get_or_insert_with(|| spec.bundle.live.enter(a.cgroup_path())).set_cgroup_bpf(a);
                (Enforcement::Full, None)
            }
            Err(reason) if spec.cgroup_bpf_required => {
                refused = Some(SpawnError::Required { layer: "cgroup-bpf".into(), reason: reason.clone() });
                (Enforcement::None, Some(reason))
            }
            Err(reason) => (Enforcement::None, Some(reason)),
        };
        prepared.cgroup_bpf_status = Some(LayerStatus { layer: "cgroup-bpf".into(), enforcement, reason });
    }
    // Until `ready`, the sandbox reports on the status pipe: its pid or an error.
    let mut status = std::io::BufReader::new(std::fs::File::from(status_r));
    let mut line = String::new();
    loop {
        line.clear();
        match status.read_line(&mut line) {
            Ok(0) | Err(_) => {
                return Err(SpawnError::Child { stage: "prepare".into(), message: "the sandbox went away".into() })
            }
            Ok(_) => {}
        }
        let mut parts = line.trim_end_matches('\n').splitn(3, '\t');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("ready"), _, _) => {
                let Some(pid) = prepared.sandbox_pid.filter(|_| prepared.pidfd.is_some()) else {
                    return Err(SpawnError::Child { stage: "prepare".into(), message: "ready without a pid".into() });
                };
                if let Some(e) = refused {
                    return Err(e);
                }
                if let (true, Some(l)) = (spec.isolated, prepared.leftovers.as_mut()) {
                    l.mount_ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok().map(OwnedFd::from);
                }
                // Prepared by a background thread at a lower priority: the
                // command runs at the spec's (it inherits the sandbox's).
                if super::sys::thread_nice() != spec.nice {
                    super::sys::set_nice(pid, spec.nice).map_err(SpawnError::io("setpriority"))?;
                }
                // The first stage exited after releasing the sandbox.
                if let Some(first) = prepared.first_stage.take() {
                    // SAFETY: reaping our own child.
                    unsafe { libc::waitpid(first, std::ptr::null_mut(), 0) };
                }
                prepared.status = Some(status);
                return Ok(prepared);
            }
            (Some("pid"), Some(p), _) => {
                let pid = p.parse().map_err(|_| SpawnError::Setup(format!("bad sandbox pid {p:?}")))?;
                prepared.sandbox_pid = Some(pid);
                prepared.pidfd = Some(sys::pidfd_open(pid).map_err(SpawnError::io("pidfd_open"))?);
            }
            (Some("error"), Some(stage), Some(message)) => {
                return Err(SpawnError::Child { stage: stage.into(), message: message.into() })
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fresh_dir;

    #[test]
    fn fresh_dir_empties_what_a_crashed_process_left() {
        let d = std::env::temp_dir().join(format!("phantom-fresh-dir-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        fresh_dir(&d).expect("a new directory");
        std::fs::create_dir(d.join("sub")).expect("sub");
        std::fs::write(d.join("sub/left-behind"), "x").expect("file");
        fresh_dir(&d).expect("made again");
        assert_eq!(std::fs::read_dir(&d).expect("read").count(), 0, "the old contents are gone");
        std::fs::remove_dir(&d).expect("cleanup");
    }
}
