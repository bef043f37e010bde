//! Relaying a sandbox's output with size caps while enforcing the
//! wall-clock timeout, and reaping it with its resource usage.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub(super) struct Relayed {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_dropped: usize,
    pub stderr_dropped: usize,
    pub timed_out: bool,
    /// The wait status and resource usage of the sandbox's pid 1.
    pub exit: Option<(i32, libc::rusage)>,
}

/// Reads both pipes (when output is captured) until they close and the
/// sandbox's pid 1 (our child, `pid`, behind `pidfd`) has exited, keeping
/// `cap` bytes of each, and reaps it. On timeout, kills it (every process
/// in the sandbox dies with it).
pub(super) fn relay(
    pid: libc::pid_t,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    pidfd: &OwnedFd,
    cap: usize,
    timeout: Option<Duration>,
) -> Relayed {
    let mut r = Relayed {
        stdout: Vec::new(),
        stderr: Vec::new(),
        stdout_dropped: 0,
        stderr_dropped: 0,
        timed_out: false,
        exit: None,
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut open = [out.is_some(), err.is_some()];
    let mut exited = false;
    let mut buf = vec![0u8; 64 * 1024];
    while open[0] || open[1] || !exited {
        let wait_ms = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() && !r.timed_out {
                    r.timed_out = true;
                    // Pid 1 of the sandbox: its namespace dies with it.
                    // SAFETY: killing our own unreaped child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                if r.timed_out {
                    100
                } else {
                    left.as_millis().min(i32::MAX as u128) as i32
                }
            }
            None => -1,
        };
        let mut fds = [
            libc::pollfd { fd: raw(open[0], &out), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: raw(open[1], &err), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if exited { -1 } else { pidfd.as_raw_fd() }, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: fds is a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, wait_ms) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if fds[2].revents != 0 {
            r.exit = super::sys::reap_pidfd(pidfd.as_raw_fd()).ok();
            exited = true;
        }
        for (i, (fd, data, dropped)) in
            [(&out, &mut r.stdout, &mut r.stdout_dropped), (&err, &mut r.stderr, &mut r.stderr_dropped)]
                .into_iter()
                .enumerate()
        {
            let Some(fd) = fd.as_ref().filter(|_| open[i] && fds[i].revents != 0) else { continue };
            // SAFETY: reading into our buffer from a pipe we own.
            let got = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                if got == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    open[i] = false;
                }
                continue;
            }
            let got = got as usize;
            let keep = got.min(cap.saturating_sub(data.len()));
            data.extend_from_slice(&buf[..keep]);
            *dropped += got - keep;
        }
    }
    r
}

fn raw(open: bool, fd: &Option<OwnedFd>) -> i32 {
    fd.as_ref().filter(|_| open).map_or(-1, |f| f.as_raw_fd())
}

/// Waits for the child; returns its wait status and resource usage.
pub(super) fn reap(pid: libc::pid_t) -> (i32, libc::rusage) {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-buffer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    (status, ru)
}

/// The lines waiting in a pipe whose writer has exited, without blocking:
/// another process may still hold a copy of the write end (one being
/// forked, until it closes what it inherited), so EOF may never come.
pub(super) fn drain_lines(r: &mut std::io::BufReader<std::fs::File>) -> Vec<String> {
    use std::io::BufRead;
    let fd = r.get_ref().as_raw_fd();
    // SAFETY: fcntl flag calls on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK) };
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => lines.push(line),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // WouldBlock: nothing more was written.
            Err(_) => break,
        }
    }
    lines
}
