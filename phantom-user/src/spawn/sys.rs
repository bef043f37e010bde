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
    let mut args = CloneArgs { flags, exit_signal: libc::SIGCHLD as u64, ..Default::default() };
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
