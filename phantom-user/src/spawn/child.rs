//! The child side of a spawn: everything between clone and exec, in two
//! halves. Preparing (no request needed): identity, the pivoted root,
//! hostname, loopback; then every other descriptor is closed, `ready` is
//! reported and the sandbox waits for one [`Handover`]. Finishing (per
//! request): stdio, the workspace tree at `/workspace`, `setsid`, rlimits,
//! Landlock, `no_new_privs`, close fds, seccomp last, exec. A pooled sandbox
//! runs the first half ahead of time; a direct spawn runs both back to back.
//!
//! Any failure is written to the status pipe as
//! `error\t<stage>\t<message>` and the child exits 127; the supervisor turns
//! that into a `SpawnError`.

use super::handover::Handover;
use super::rootfs::RootPlan;
use super::spec::SANDBOX_PATH;
use super::sys;
use crate::landlock::PreparedRuleset;
use phantom_ebpf::landlock::LandlockRuleset;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::RawFd;

/// Everything the child needs, prepared by the supervisor before clone.
pub(super) struct ChildPlan {
    pub root: Option<RootPlan>,
    /// Namespaces the command is cloned into; 0 in direct mode.
    pub clone_flags: u64,
    /// A pooled network namespace to join instead of CLONE_NEWNET.
    pub netns_fd: Option<RawFd>,
    /// The sandbox's cgroup v2 directory (CLONE_INTO_CGROUP).
    pub cgroup_fd: Option<RawFd>,
    /// v1 controller directories the command is moved into.
    pub cgroup_v1: Vec<std::path::PathBuf>,
    /// Map ids and switch to uid/gid 0 of the new user namespace.
    pub isolated: bool,
    pub hostname: Option<CString>,
    pub loopback_up: bool,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    pub landlock: Option<LandlockRuleset>,
    pub seccomp: Option<Vec<u8>>,
    /// Write end, close-on-exec: the sandbox's pid, `ready`, errors and the
    /// Landlock report.
    pub status: RawFd,
    /// The sandbox's end of the control socket: one [`Handover`] arrives here.
    pub control: RawFd,
    /// BPF-LSM: after its own mounts (the workspace), the command reports
    /// `mounted` and waits for one byte on the control socket; in between
    /// the supervisor attaches the programs, which deny mounts.
    pub lsm_sync: bool,
    /// Prepared ahead of its request: unmap the supervisor's BPF map
    /// mappings and make the pages the second half writes private while
    /// waiting ([`crate::resident`]).
    pub ahead: bool,
}

struct Fail(&'static str, String);

fn stage<T, E: std::fmt::Display>(name: &'static str, r: Result<T, E>) -> Result<T, Fail> {
    r.map_err(|e| Fail(name, e.to_string()))
}

fn write_status(fd: RawFd, line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    // SAFETY: fd is the status pipe's write end, owned by this process.
    let mut f = std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    let _ = f.write_all(&buf);
}

/// The first stage, forked by the supervisor (a glibc fork, safe in a
/// threaded host): single-threaded and still host root, it clone3s the
/// command (as the supervisor's child) into every new namespace and
/// straight into the sandbox's cgroup v2 directory (no slow cgroup
/// migration), writes the command's uid/gid maps and v1 cgroup placement,
/// releases it and exits. Never returns.
pub(super) fn stage1_main(plan: &ChildPlan) -> ! {
    let Err(Fail(stage, msg)) = stage1(plan);
    write_status(plan.status, &format!("error\t{stage}\t{}", msg.replace(['\n', '\t'], " ")));
    // SAFETY: ends the child without unwinding into the parent's code.
    unsafe { libc::_exit(127) }
}

fn wait_byte(fd: RawFd) -> Result<(), Fail> {
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a local buffer.
    if unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) } != 1 {
        return Err(Fail("waiting for the first stage", "the first stage went away".into()));
    }
    Ok(())
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), Fail> {
    std::fs::write(path, text).map_err(|e| Fail("identity and cgroups", format!("{}: {e}", path.display())))
}

fn stage1(plan: &ChildPlan) -> Result<std::convert::Infallible, Fail> {
    stage("parent death signal", sys::set_parent_death_signal())?;
    let mut go = [0; 2];
    // SAFETY: go is a valid 2-element array.
    if unsafe { libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(Fail("pipe", std::io::Error::last_os_error().to_string()));
    }
    if let Some(fd) = plan.netns_fd {
        // SAFETY: setns on an fd the supervisor opened for us.
        if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } < 0 {
            return Err(Fail("join the network namespace", std::io::Error::last_os_error().to_string()));
        }
    }
    // clone3 is safe here: this process is single-threaded. CLONE_PARENT:
    // the command is the supervisor's child, so the supervisor reaps it
    // itself (one wakeup on its exit, not two through this process).
    let pid = stage("clone3", sys::clone_into(plan.clone_flags | libc::CLONE_PARENT as u64, plan.cgroup_fd))?;
    if pid == 0 {
        // Only the first stage holds the write end: its death is EOF here.
        // SAFETY: closing our copy of a pipe end.
        unsafe { libc::close(go[1]) };
        wait_byte(go[0]).unwrap_or_else(|Fail(s, m)| {
            write_status(plan.status, &format!("error\t{s}\t{m}"));
            // SAFETY: exit without unwinding.
            unsafe { libc::_exit(127) }
        });
        child_main(plan);
    }
    // First, so the supervisor can reap it whatever fails below; it kills
    // this pid (pid 1 of the sandbox) on timeout.
    write_status(plan.status, &format!("pid\t{pid}"));
    if plan.isolated {
        let map = format!("0 {} {}\n", super::SANDBOX_ID_BASE, super::SANDBOX_ID_COUNT);
        write_file(std::path::Path::new(&format!("/proc/{pid}/uid_map")), &map)?;
        write_file(std::path::Path::new(&format!("/proc/{pid}/gid_map")), &map)?;
    }
    for dir in &plan.cgroup_v1 {
        write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
    }
    // SAFETY: one byte from a local buffer into our pipe.
    if unsafe { libc::write(go[1], [1u8].as_ptr().cast(), 1) } != 1 {
        return Err(Fail("release", std::io::Error::last_os_error().to_string()));
    }
    // Done: the command is the supervisor's child (CLONE_PARENT), which
    // waits for it directly.
    // SAFETY: exit without unwinding.
    unsafe { libc::_exit(0) }
}

/// The command's process (pid 1 of the sandbox): builds the root and applies
/// every layer, then execs. Never returns.
fn child_main(plan: &ChildPlan) -> ! {
    let Err(Fail(stage, msg)) = run(plan);
    write_status(plan.status, &format!("error\t{stage}\t{}", msg.replace(['\n', '\t'], " ")));
    // SAFETY: ends the child without unwinding into the parent's code.
    unsafe { libc::_exit(127) }
}

fn run(plan: &ChildPlan) -> Result<std::convert::Infallible, Fail> {
    let landlock = prepare(plan)?;
    if plan.ahead {
        crate::resident::unmap_bpf_maps();
        crate::resident::prefault_private_pages();
    }
    write_status(plan.status, "ready");
    let req = match Handover::recv(plan.control) {
        Ok(Some(r)) => r,
        // The pool was shut down before this sandbox was used.
        // SAFETY: exit without unwinding.
        Ok(None) => unsafe { libc::_exit(0) },
        Err(e) => return Err(Fail("handover", e.to_string())),
    };
    finish(plan, &req, landlock)
}

/// The first half: everything that does not depend on the request, the
/// Landlock ruleset included (built here, enforced in [`finish`]).
fn prepare(plan: &ChildPlan) -> Result<Option<PreparedRuleset>, Fail> {
    if plan.isolated {
        // Our kernel uid is still host root, unmapped in the new user
        // namespace; switch to the mapped uid/gid 0.
        // SAFETY: plain credential syscalls with integer arguments.
        let r = unsafe {
            if libc::setgroups(0, std::ptr::null()) < 0 || libc::setresgid(0, 0, 0) < 0 {
                -1
            } else {
                libc::setresuid(0, 0, 0)
            }
        };
        if r < 0 {
            return Err(Fail("identity", std::io::Error::last_os_error().to_string()));
        }
    }
    // After the credential change, which clears it.
    stage("parent death signal", sys::set_parent_death_signal())?;
    if let Some(root) = &plan.root {
        root.execute().map_err(|e| Fail("root filesystem", e))?;
    }
    if let Some(h) = &plan.hostname {
        // SAFETY: h is a valid buffer of the given length.
        if unsafe { libc::sethostname(h.as_ptr(), h.as_bytes().len()) } < 0 {
            return Err(Fail("hostname", std::io::Error::last_os_error().to_string()));
        }
    }
    if plan.loopback_up {
        stage("loopback", sys::loopback_up())?;
    }
    // Nothing inherited from the supervisor survives the wait (other
    // sandboxes' pipes and sockets included): only the status pipe and
    // the control socket.
    sys::close_fds_from(0, &[plan.status, plan.control]);
    // stdin, stdout and stderr are /dev/null until the handover replaces
    // them, so the ruleset's descriptor (and the handover's) lands above 2.
    // SAFETY: opening a NUL-terminated path.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
    if null < 0 {
        return Err(Fail("stdio", std::io::Error::last_os_error().to_string()));
    }
    for fd in (0..3).filter(|fd| ![null, plan.status, plan.control].contains(fd)) {
        // SAFETY: dup2 of a descriptor we own onto a free slot.
        if unsafe { libc::dup2(null, fd) } < 0 {
            return Err(Fail("stdio", std::io::Error::last_os_error().to_string()));
        }
    }
    if null > 2 {
        // SAFETY: closing our own copy.
        unsafe { libc::close(null) };
    }
    // Rules under /workspace wait for the handover: a request's workspace
    // is mounted over it then.
    let under_workspace = |p: &str| p == "/workspace" || p.starts_with("/workspace/");
    plan.landlock.as_ref().map(|spec| stage("landlock", crate::landlock::prepare(spec, under_workspace))).transpose()
}

/// The second half: the request's stdio and workspace, then every layer
/// that restricts the process, seccomp last, and exec.
fn finish(
    plan: &ChildPlan,
    req: &Handover,
    landlock: Option<PreparedRuleset>,
) -> Result<std::convert::Infallible, Fail> {
    // Received descriptors are above 2 (0..2 hold /dev/null while waiting).
    for (from, to) in req.stdio.iter().zip(0..) {
        // SAFETY: dup2 on fds we received (dup2 clears close-on-exec on the copy).
        if *from < 0 || unsafe { libc::dup2(*from, to) } < 0 {
            return Err(Fail("stdio", std::io::Error::last_os_error().to_string()));
        }
    }
    if let Some(tree) = req.workspace {
        stage("workspace", sys::move_mount_to(tree, c"/workspace"))?;
    }
    stage("working directory", sys::chdir(&req.cwd))?;
    if plan.lsm_sync {
        write_status(plan.status, "mounted");
        let mut byte = [0u8; 1];
        // SAFETY: reads at most one byte into a live buffer from our socket.
        let n = unsafe { libc::read(plan.control, byte.as_mut_ptr().cast(), 1) };
        if n != 1 {
            return Err(Fail("bpf-lsm", "the supervisor did not confirm the BPF-LSM attachment".into()));
        }
    }
    if plan.isolated {
        // No controlling terminal: a passed-through tty cannot be used to
        // inject input (TIOCSTI) into the caller's session.
        // SAFETY: setsid has no arguments.
        unsafe { libc::setsid() };
    }
    for (res, v) in &plan.rlimits {
        stage("rlimit", sys::set_rlimit(*res, *v))?;
    }
    if let Some(ruleset) = landlock {
        let report = stage("landlock", ruleset.restrict_self())?;
        let json = serde_json::to_string(&report).unwrap_or_default();
        write_status(plan.status, &format!("landlock\t{json}"));
    }
    stage("no_new_privs", sys::set_no_new_privs())?;
    sys::close_fds_from(3, &[plan.status]);
    if let Some(filter) = &plan.seccomp {
        stage("seccomp", crate::seccomp::install(filter))?;
    }
    let mut argv: Vec<*const libc::c_char> = req.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = req.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // PATH lookup inside the sandbox's root, with the sandbox's PATH (glibc's
    // execvpe would search the supervisor's PATH).
    let name = req.argv[0].to_bytes();
    let candidates: Vec<CString> = if name.contains(&b'/') {
        vec![req.argv[0].clone()]
    } else {
        SANDBOX_PATH.split(':').filter_map(|d| CString::new([d.as_bytes(), b"/", name].concat()).ok()).collect()
    };
    let mut last = std::io::Error::from_raw_os_error(libc::ENOENT);
    for path in &candidates {
        // SAFETY: path, argv and envp are NUL/NULL-terminated and outlive the
        // call; execve only returns on failure.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        last = std::io::Error::last_os_error();
        if last.raw_os_error() != Some(libc::ENOENT) {
            break;
        }
    }
    Err(Fail("exec", format!("{}: {last}", req.argv[0].to_string_lossy())))
}
