//! A resident spawner: keeps a few sandboxes of one policy prepared ahead
//! of time (namespaces, pivoted root, cgroups with cgroup-BPF attached,
//! waiting for a handover), refilled by a background thread, so a request
//! only pays for the handover, Landlock, seccomp and exec. Teardown (cgroup
//! and directory removal) happens on the same background thread after the
//! result is returned: one wakeup per request, not two. The zygote serves
//! through one; a host program can use one directly (same code path).
//!
//! Invariants: a prepared sandbox serves exactly one request (it is moved
//! out of the pool, and the sandbox reads one handover then execs or
//! exits); every sandbox is built from the same [`Spec`] as a direct spawn,
//! so it has the same layers; when the pool is empty or cannot be filled,
//! a request prepares its own sandbox the same way, inline.

use super::netns::NetnsPool;
use super::prepare::{prepare, Leftovers, Prepared};
use super::spec::Spec;
use super::supervisor::{check, execute, Stdio};
use super::{RunResult, SpawnError, SpawnRequest};
use crate::apply::LoadedBundle;
use phantom_dsl::ir::Policy;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Nice value of the background thread (refill and teardown).
const BACKGROUND_NICE: i32 = 19;

/// After this many failed preparations in a row the pool stops refilling
/// (requests then prepare inline and report the real error).
const MAX_FAILURES: u32 = 8;

#[derive(Default)]
struct State {
    ready: VecDeque<Prepared>,
    /// Requests being served. Refilling (a fork of this process and a
    /// dozen mounts) waits for them unless the pool is empty: it would
    /// take the CPU and this process's memory lock from them.
    in_flight: usize,
    /// What finished runs left behind, removed by the background thread.
    teardown: Vec<Leftovers>,
    stop: bool,
    failures: u32,
    last_error: Option<String>,
}

struct Shared {
    spec: Spec,
    netns: NetnsPool,
    target: usize,
    state: Mutex<State>,
    cv: Condvar,
}

/// Keeps `size` sandboxes of one policy prepared.
pub struct Spawner {
    shared: Arc<Shared>,
    refill: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner")
            .field("profile", &self.shared.spec.policy.profile)
            .field("ready", &self.ready())
            .finish()
    }
}

impl Spawner {
    /// Checks the policy (fails closed on required layers it cannot
    /// enforce) and starts preparing `size` sandboxes in the background.
    pub fn new(policy: &Policy, bundle: &LoadedBundle, size: usize) -> Result<Spawner, SpawnError> {
        let spec = Spec::new(policy, bundle)?;
        let shared = Arc::new(Shared {
            spec,
            netns: NetnsPool::new(size.clamp(1, 4)),
            target: size,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let s = shared.clone();
        // This thread forks every pooled sandbox and lives as long as they
        // may: their first stage dies with it (PR_SET_PDEATHSIG). It also
        // removes what finished runs leave behind.
        let refill = std::thread::Builder::new()
            .name("phantom-prepare".into())
            .spawn(move || {
                // Preparing is background work: on a small host it must not
                // take a CPU from a request. The sandbox gets the spec's
                // priority back once ready, which needs root.
                // SAFETY: geteuid has no arguments.
                if unsafe { libc::geteuid() } == 0 {
                    let _ = super::sys::set_nice(0, BACKGROUND_NICE);
                }
                refill(&s)
            })
            .map_err(SpawnError::io("spawn the prepare thread"))?;
        Ok(Spawner { shared, refill: Some(refill) })
    }

    /// Runs `req` with captured output.
    pub fn run(&self, req: &SpawnRequest) -> Result<RunResult, SpawnError> {
        self.run_stdio(req, Stdio::Capture)
    }

    /// Runs `req` in a prepared sandbox (or one prepared now, when none is
    /// ready). Returns as soon as the command has exited and been reaped;
    /// its cgroups and directories are removed afterwards.
    pub fn run_stdio(&self, req: &SpawnRequest, stdio: Stdio<'_>) -> Result<RunResult, SpawnError> {
        self.run_then(req, stdio, |r| r)
    }

    /// [`Spawner::run_stdio`], handing the outcome to `answer` (e.g. a
    /// reply to a client) before the pool refills and the sandbox's
    /// leftovers are queued for removal, so neither competes with it.
    pub fn run_then<R>(
        &self,
        req: &SpawnRequest,
        stdio: Stdio<'_>,
        answer: impl FnOnce(Result<RunResult, SpawnError>) -> R,
    ) -> R {
        let start = Instant::now();
        if let Err(e) = check(req) {
            return answer(Err(e));
        }
        let serving = Serving::new(&self.shared);
        let spec = &self.shared.spec;
        let mut attempt = 0;
        loop {
            let prepared = match self.take() {
                Some(p) => p,
                None => match prepare(spec, Some(&self.shared.netns), false) {
                    Ok(p) => p,
                    Err(e) => return answer(Err(e)),
                },
            };
            match execute(spec, prepared, req, stdio, start) {
                Ok((result, leftovers)) => {
                    let r = answer(Ok(result));
                    serving.done(leftovers);
                    return r;
                }
                // The sandbox died while waiting: nothing ran; take another.
                Err(e) if e.retry && attempt < 2 => attempt += 1,
                Err(e) => return answer(Err(e.into_inner())),
            }
        }
    }

    fn take(&self) -> Option<Prepared> {
        let mut s = self.shared.state.lock().ok()?;
        let p = s.ready.pop_front();
        self.shared.cv.notify_all();
        p
    }

    /// The policy this spawner runs.
    pub fn policy(&self) -> &Policy {
        &self.shared.spec.policy
    }

    /// The bundle its sandboxes get (its [`LoadedBundle::live`] registry
    /// lists the running ones).
    pub fn bundle(&self) -> &LoadedBundle {
        &self.shared.spec.bundle
    }

    /// How many sandboxes are prepared right now.
    pub fn ready(&self) -> usize {
        self.shared.state.lock().map_or(0, |s| s.ready.len())
    }

    /// The pool's size.
    pub fn target(&self) -> usize {
        self.shared.target
    }

    /// Waits until the pool is full (or `within` passes, or it stopped
    /// refilling); returns whether it is full.
    pub fn wait_full(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let Ok(mut s) = self.shared.state.lock() else { return false };
        while s.ready.len() < self.shared.target && s.failures < MAX_FAILURES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = match self.shared.cv.wait_timeout(s, left) {
                Ok((g, _)) => g,
                Err(_) => return false,
            };
        }
        s.ready.len() >= self.shared.target
    }

    /// Why the pool stopped refilling, if it did.
    pub fn refill_error(&self) -> Option<String> {
        self.shared.state.lock().ok().and_then(|s| (s.failures >= MAX_FAILURES).then(|| s.last_error.clone()).flatten())
    }
}

/// Counts a request in flight while it lives.
struct Serving<'a>(&'a Shared);

impl<'a> Serving<'a> {
    fn new(shared: &'a Shared) -> Serving<'a> {
        if let Ok(mut s) = shared.state.lock() {
            s.in_flight += 1;
        }
        Serving(shared)
    }

    /// The request is answered: its leftovers go to the background thread
    /// with the same wakeup that lets it refill.
    fn done(self, leftovers: Leftovers) {
        match self.0.state.lock() {
            Ok(mut s) => s.teardown.push(leftovers),
            Err(_) => drop(leftovers),
        }
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.state.lock() {
            s.in_flight -= 1;
        }
        self.0.cv.notify_all();
    }
}

fn refill(shared: &Shared) {
    loop {
        {
            let Ok(mut s) = shared.state.lock() else { return };
            loop {
                // Removal first, outside the lock.
                if !s.teardown.is_empty() {
                    let done = std::mem::take(&mut s.teardown);
                    drop(s);
                    drop(done);
                    s = match shared.state.lock() {
                        Ok(g) => g,
                        Err(_) => return,
                    };
                    continue;
                }
                let idle = s.ready.len() >= shared.target
                    || s.failures >= MAX_FAILURES
                    || (s.in_flight > 0 && !s.ready.is_empty());
                if s.stop || !idle {
                    break;
                }
                s = match shared.cv.wait(s) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
            if s.stop {
                // Unused sandboxes are killed, reaped and removed here, by
                // the thread that forked them.
                s.ready.clear();
                return;
            }
        }
        let made = prepare(&shared.spec, Some(&shared.netns), true);
        let Ok(mut s) = shared.state.lock() else { return };
        match made {
            Ok(p) => {
                s.failures = 0;
                s.ready.push_back(p);
            }
            Err(e) => {
                s.failures += 1;
                s.last_error = Some(e.to_string());
                drop(s);
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        }
        shared.cv.notify_all();
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.stop = true;
        }
        self.shared.cv.notify_all();
        if let Some(t) = self.refill.take() {
            let _ = t.join();
        }
        // Runs answered after the thread saw `stop`.
        if let Ok(mut s) = self.shared.state.lock() {
            drop(std::mem::take(&mut s.teardown));
        }
    }
}
