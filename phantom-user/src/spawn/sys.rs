//! Raw syscalls of the spawner, in one place. Every wrapper returns
//! `io::Result` built from errno. They run between fork and exec; glibc
//! keeps malloc usable in a forked child, so small allocations are fine.

use std::ffi::CStr;
use std::io;

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn check_int(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// linux/sched.h; libc marks its constant deprecated (it overflows c_int).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` (linux/sched.h), the fields we use.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forks into new namespaces: clone3 without a stack behaves like fork.
/// `cgroup_fd` (a cgroup v2 directory) places the child there atomically.
/// Falls back to clone(2) on ENOSYS (then without `cgroup_fd`). Returns 0
/// in the child, the child's pid in the parent.
pub fn clone_into(flags: u64, cgroup_fd: Option<i32>) -> io::Result<libc::pid_t> {
    // With CLONE_PARENT clone3 wants no exit signal: the child inherits
    // ours (SIGCHLD, to our parent).
    let exit_signal = if flags & libc::CLONE_PARENT as u64 != 0 { 0 } else { libc::SIGCHLD as u64 };
    let mut args = CloneArgs { flags, exit_signal, ..Default::default() };
    if let Some(fd) = cgroup_fd {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size we pass; with stack 0
    // the child continues on a copy of our stack, like fork.
    let r = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) };
    match check(r) {
        Ok(pid) => Ok(pid as libc::pid_t),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            // SAFETY: clone with a null stack is fork-like; no pointers are passed.
            let r =
                unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as u64, 0usize, 0usize, 0usize, 0usize) };
            check(r).map(|p| p as libc::pid_t)
        }
        Err(e) => Err(e),
    }
}

pub fn mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: all pointers are NUL-terminated strings or null.
    check_int(unsafe { libc::mount(p(src), target.as_ptr(), p(fstype), flags, p(data).cast()) })
}

pub fn umount_detach(target: &CStr) -> io::Result<()> {
    // SAFETY: target is NUL-terminated.
    check_int(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
}

pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: both are NUL-terminated paths.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) }).map(|_| ())
}

pub fn chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: path is NUL-terminated.
    check_int(unsafe { libc::chdir(path.as_ptr()) })
}

pub fn mkdir(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: path is NUL-terminated.
    match check_int(unsafe { libc::mkdir(path.as_ptr(), mode) }) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

pub fn symlink(target: &CStr, link: &CStr) -> io::Result<()> {
    // SAFETY: both are NUL-terminated.
    check_int(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) })
}

/// Creates an empty regular file (a bind-mount target for a device node).
pub fn touch(path: &CStr) -> io::Result<()> {
    // SAFETY: path is NUL-terminated; the fd is closed right away.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened by us.
    unsafe { libc::close(fd) };
    Ok(())
}

/// `statvfs` mount flags of the filesystem holding `path`, as MS_* flags
/// that must be kept when remounting a bind read-only inside a user
/// namespace (the kernel refuses to clear locked flags).
pub fn locked_mount_flags(path: &CStr) -> io::Result<libc::c_ulong> {
    // SAFETY: zeroed statvfs is a valid out-buffer.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is NUL-terminated, s is writable.
    check_int(unsafe { libc::statvfs(path.as_ptr(), &mut s) })?;
    let f = s.f_flag;
    let mut out = 0;
    for (st, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st != 0 {
            out |= ms;
        }
    }
    Ok(out)
}

pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check_int(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
}

/// Kill the child when the supervisor dies.
pub fn set_parent_death_signal() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check_int(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })
}

pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: lim is a valid rlimit.
    check_int(unsafe { libc::setrlimit(resource, &lim) })
}

/// Brings `lo` up in the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: a datagram socket only serves as an ioctl handle.
    // A unix socket: interface ioctls work on any socket, and cgroup/sock_create
    // may deny inet datagram sockets to the sandbox.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zeroed ifreq is valid; the name fits in IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: fd is a socket; req is a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS.
    let r = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            -1
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req)
        }
    };
    let err = io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if r < 0 {
        Err(err)
    } else {
        Ok(())
    }
}

/// Closes every fd >= `from` except those in `keep`.
pub fn close_fds_from(from: i32, keep: &[i32]) {
    // close_range with CLOSE_RANGE_UNSHARE is not needed: we are post-fork.
    let mut lo = from;
    let mut keep: Vec<i32> = keep.iter().copied().filter(|k| *k >= from).collect();
    keep.sort_unstable();
    for k in keep.iter().chain(std::iter::once(&i32::MAX)) {
        if lo < *k {
            // SAFETY: close_range only closes descriptors.
            unsafe { libc::syscall(libc::SYS_close_range, lo as u32, (*k - 1) as u32, 0u32) };
        }
        lo = k.saturating_add(1);
    }
}

/// Sends `data` with `fds` attached (SCM_RIGHTS) on a unix socket; the rest
/// of `data` after a short first send is written plainly.
pub fn send_with_fds(sock: i32, data: &[u8], fds: &[i32]) -> io::Result<()> {
    let space = cmsg_space(fds.len());
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer has room for one header with fds.len() ints.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast::<i32>(), fds.len());
        }
    }
    let sent = loop {
        // SAFETY: msg describes valid buffers.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    };
    write_all(sock, &data[sent..])
}

/// Writes all of `data` to `fd` (no SIGPIPE).
pub fn write_all(fd: i32, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: data is a valid buffer; send never raises SIGPIPE with MSG_NOSIGNAL.
        let r = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        data = &data[r as usize..];
    }
    Ok(())
}

fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic.
    unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<i32>()) as u32) as usize }
}

/// Receives into `buf` with up to `max_fds` descriptors (close-on-exec);
/// returns the bytes read (0 at EOF) and the descriptors, which the caller
/// owns. A message whose descriptors did not fit is an error.
pub fn recv_with_fds(sock: i32, buf: &mut [u8], max_fds: usize) -> io::Result<(usize, Vec<i32>)> {
    let space = cmsg_space(max_fds);
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: msg describes valid buffers.
        let r = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<i32>();
                let data = libc::CMSG_DATA(c).cast::<i32>();
                for i in 0..count {
                    fds.push(std::ptr::read_unaligned(data.add(i)));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        for fd in &fds {
            // SAFETY: closing descriptors we just received.
            unsafe { libc::close(*fd) };
        }
        return Err(io::Error::other("more descriptors than expected were sent"));
    }
    Ok((n, fds))
}

/// Reads exactly `buf.len()` bytes.
pub fn read_exact(fd: i32, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: reading into a valid buffer.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[r as usize..];
    }
    Ok(())
}

const OPEN_TREE_CLONE: u32 = 1;
const AT_RECURSIVE: u32 = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 4;
const MOUNT_ATTR_NOSUID: u64 = 2;
const MOUNT_ATTR_NODEV: u64 = 4;

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// A detached copy of the mount tree at `dirfd` (open_tree with
/// OPEN_TREE_CLONE, recursive), nosuid and nodev, idmapped through the
/// user namespace `idmap` when given; the sandbox attaches it with
/// [`move_mount_to`]. Needs CAP_SYS_ADMIN (the supervisor).
pub fn clone_tree(dirfd: i32, idmap: Option<std::os::fd::BorrowedFd<'_>>) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: open_tree on a valid fd with an empty path.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dirfd,
            c"".as_ptr(),
            OPEN_TREE_CLONE | AT_RECURSIVE | libc::AT_EMPTY_PATH as u32 | libc::O_CLOEXEC as u32,
        )
    })? as i32;
    // SAFETY: a fresh fd we own.
    let tree = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // struct mount_attr { attr_set, attr_clr, propagation, userns_fd }
    let attr: [u64; 4] = match idmap {
        Some(ns) => {
            use std::os::fd::AsRawFd;
            [MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_IDMAP, 0, 0, ns.as_raw_fd() as u64]
        }
        None => [MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0],
    };
    // SAFETY: mount_setattr on the detached tree with a valid mount_attr.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as u32 | AT_RECURSIVE,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    })?;
    Ok(tree)
}

/// Attaches the detached tree `tree` at `target`.
pub fn move_mount_to(tree: i32, target: &CStr) -> io::Result<()> {
    // SAFETY: move_mount with an fd and NUL-terminated paths.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(|_| ())
}

/// A connected pair of close-on-exec unix stream sockets.
pub fn socketpair() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    check_int(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    // SAFETY: two fresh fds we own.
    Ok(unsafe {
        (
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[0]),
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]),
        )
    })
}

/// A pidfd for `pid` (close-on-exec). `pid` must be our unreaped child, so
/// it cannot have been reused.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: a fresh fd we own.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// `P_PIDFD` (linux/wait.h, 5.4+).
const P_PIDFD: libc::idtype_t = 3;

/// Reaps the exited child behind `pidfd`: its wait status (as waitpid
/// encodes it) and its resource usage (its own and its reaped
/// descendants'). The raw syscall: glibc's waitid has no rusage.
pub fn reap_pidfd(pidfd: i32) -> io::Result<(i32, libc::rusage)> {
    // SAFETY: all-zero siginfo_t and rusage are valid out-buffers.
    let (mut info, mut ru): (libc::siginfo_t, libc::rusage) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    loop {
        // SAFETY: waitid with valid out-pointers that outlive the call.
        let r = unsafe { libc::syscall(libc::SYS_waitid, P_PIDFD, pidfd, &mut info, libc::WEXITED, &mut ru) };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    // SAFETY: waitid filled a SIGCHLD siginfo, whose si_status is valid.
    let code = unsafe { info.si_status() };
    let status = match info.si_code {
        libc::CLD_EXITED => (code & 0xff) << 8,
        libc::CLD_DUMPED => code | 0x80,
        _ => code,
    };
    Ok((status, ru))
}

/// The calling thread's nice value (Linux: nice is per thread).
pub fn thread_nice() -> i32 {
    // SAFETY: getpriority with integer arguments; 0 names the calling thread.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// Sets the nice value of a thread or process (`0`: the calling thread).
/// Lowering it again (a prepared sandbox's, see `pool.rs`) needs
/// CAP_SYS_NICE, which the spawner has as root.
pub fn set_nice(tid: libc::pid_t, nice: i32) -> io::Result<()> {
    // SAFETY: setpriority with integer arguments.
    check_int(unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) })
}
