//! A pool of fresh network namespaces, refilled in the background, so that
//! creating one (about half a millisecond here, several at the tail) is off
//! the spawn path. A namespace is used once and never reused.
//!
//! Pooled namespaces are owned by the supervisor's (initial) user namespace:
//! the sandbox joins one but holds no capability over it, so it can neither
//! reconfigure it nor open raw sockets in it. Loopback is brought up by the
//! pool for `loopback-only` sandboxes.

use super::sys;
use std::collections::VecDeque;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};

/// Which kind of namespace a sandbox needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetKind {
    /// Empty: not even loopback is up.
    Empty,
    /// Loopback up, nothing else.
    Loopback,
}

/// Creates one namespace on a short-lived thread (unshare changes only the
/// calling thread's namespace) and returns an fd that keeps it alive.
pub fn create(kind: NetKind) -> std::io::Result<OwnedFd> {
    std::thread::spawn(move || -> std::io::Result<OwnedFd> {
        // SAFETY: unshare of the network namespace affects this thread only.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if kind == NetKind::Loopback {
            sys::loopback_up()?;
        }
        // SAFETY: opening our thread's namespace file; the fd is ours.
        let fd = unsafe { libc::open(c"/proc/thread-self/ns/net".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
}

#[derive(Debug, Default)]
struct State {
    empty: VecDeque<OwnedFd>,
    loopback: VecDeque<OwnedFd>,
    stop: bool,
    /// The filler, joined by the last handle's drop.
    filler: Option<std::thread::JoinHandle<()>>,
}

/// Keeps `target` namespaces of each kind ready.
#[derive(Debug, Clone)]
pub struct NetnsPool {
    inner: Arc<(Mutex<State>, Condvar)>,
    target: usize,
}

impl NetnsPool {
    /// Starts the background filler.
    pub fn new(target: usize) -> NetnsPool {
        let inner = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let pool = NetnsPool { inner: inner.clone(), target };
        let filler_inner = inner.clone();
        let filler = std::thread::Builder::new()
            .name("phantom-netns-pool".into())
            .spawn(move || {
                // Background work (the namespaces' threads inherit it).
                let _ = sys::set_nice(0, 19);
                let inner = filler_inner;
                let (lock, cv) = &*inner;
                loop {
                    let need = {
                        let mut s = lock.lock().expect("pool lock");
                        while !s.stop && s.empty.len() >= target && s.loopback.len() >= target {
                            s = cv.wait(s).expect("pool lock");
                        }
                        if s.stop {
                            return;
                        }
                        if s.loopback.len() < target {
                            NetKind::Loopback
                        } else {
                            NetKind::Empty
                        }
                    };
                    match create(need) {
                        Ok(fd) => {
                            let mut s = lock.lock().expect("pool lock");
                            if s.stop {
                                return;
                            }
                            match need {
                                NetKind::Empty => s.empty.push_back(fd),
                                NetKind::Loopback => s.loopback.push_back(fd),
                            }
                        }
                        // Creating failed (no privilege?): stop; callers fall back.
                        Err(_) => return,
                    }
                }
            })
            .expect("spawn the netns pool thread");
        inner.0.lock().expect("pool lock").filler = Some(filler);
        pool
    }

    /// A fresh namespace of `kind`, or `None` when the pool is empty (the
    /// caller then creates one itself).
    pub fn take(&self, kind: NetKind) -> Option<OwnedFd> {
        let (lock, cv) = &*self.inner;
        let mut s = lock.lock().ok()?;
        let fd = match kind {
            NetKind::Empty => s.empty.pop_front(),
            NetKind::Loopback => s.loopback.pop_front(),
        };
        cv.notify_one();
        fd
    }

    pub fn target(&self) -> usize {
        self.target
    }
}

impl Drop for NetnsPool {
    fn drop(&mut self) {
        // The last handle stops the filler, waits for it and closes the
        // namespaces nobody took.
        if Arc::strong_count(&self.inner) <= 2 {
            let (lock, cv) = &*self.inner;
            let filler = lock.lock().ok().and_then(|mut s| {
                s.stop = true;
                s.filler.take()
            });
            cv.notify_all();
            if let Some(t) = filler {
                let _ = t.join();
            }
            if let Ok(mut s) = lock.lock() {
                s.empty.clear();
                s.loopback.clear();
            }
        }
    }
}
