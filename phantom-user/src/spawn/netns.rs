//! A pool of fresh network namespaces, refilled in the background, so that
//! creating one (about half a millisecond here, several at the tail) is off
//! the spawn path. A namespace is used once and never reused.
//!
//! Pooled namespaces are owned by the supervisor's (initial) user namespace:
//! the sandbox joins one but holds no capability over it, so it can neither
//! reconfigure it nor open raw sockets in it. A spawn with none ready makes
//! one the same way ([`NetnsPool::one`]), so every sandbox gets that.
//! Loopback is brought up by the pool for `loopback-only` sandboxes.

use super::sys;
use phantom_dsl::ir::{Mode, NetMode, Policy};
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

impl NetKind {
    /// The namespace a sandbox of network `mode` starts from (allowlist
    /// sandboxes add a veth pair to a loopback one).
    pub fn of(mode: NetMode) -> NetKind {
        if mode == NetMode::None {
            NetKind::Empty
        } else {
            NetKind::Loopback
        }
    }
}

/// Creates one namespace on a short-lived thread (unshare changes only the
/// calling thread's namespace) and returns an fd that keeps it alive.
pub fn create(kind: NetKind) -> std::io::Result<OwnedFd> {
    std::thread::spawn(move || make(kind))
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
}

/// Moves the calling thread into a new namespace of `kind`: only on a
/// thread that ends afterwards.
fn make(kind: NetKind) -> std::io::Result<OwnedFd> {
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
}

#[derive(Debug, Default)]
struct State {
    empty: VecDeque<OwnedFd>,
    loopback: VecDeque<OwnedFd>,
    /// A one-namespace pool's thread is still making it: `take` waits.
    making: bool,
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

    /// A pool of one namespace of `kind`, made from now on by a thread of
    /// its own at the caller's priority, never refilled: a spawn with no
    /// namespace ready starts it before making its workspace and cgroups,
    /// which then overlap with the kernel's work. Its `take` waits for it.
    pub fn one(kind: NetKind) -> NetnsPool {
        let inner = Arc::new((Mutex::new(State { making: true, ..State::default() }), Condvar::new()));
        let pool = NetnsPool { inner: inner.clone(), target: 1 };
        let spawned = std::thread::Builder::new().name("phantom-netns".into()).spawn(move || {
            let made = make(kind);
            let (lock, cv) = &*inner;
            if let Ok(mut s) = lock.lock() {
                // On failure the spawn makes one itself (CLONE_NEWNET).
                if let Ok(fd) = made {
                    match kind {
                        NetKind::Empty => s.empty.push_back(fd),
                        NetKind::Loopback => s.loopback.push_back(fd),
                    }
                }
                s.making = false;
            }
            cv.notify_all();
        });
        let mut s = pool.inner.0.lock().expect("pool lock");
        match spawned {
            Ok(t) => s.filler = Some(t),
            Err(_) => s.making = false,
        }
        drop(s);
        pool
    }

    /// [`NetnsPool::one`] for a sandbox of `policy`; `None` in direct mode,
    /// which keeps the caller's network.
    pub fn for_policy(policy: &Policy) -> Option<NetnsPool> {
        (policy.effective_mode() != Mode::Direct).then(|| NetnsPool::one(NetKind::of(policy.network.mode)))
    }

    /// A fresh namespace of `kind`, or `None` when the pool is empty (the
    /// caller then creates one itself).
    pub fn take(&self, kind: NetKind) -> Option<OwnedFd> {
        let (lock, cv) = &*self.inner;
        let mut s = lock.lock().ok()?;
        while s.making {
            s = cv.wait(s).ok()?;
        }
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
