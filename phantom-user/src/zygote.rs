//! Resident zygotes: a process per policy that loaded the bundle once,
//! keeps a pool of fresh network namespaces, and spawns sandboxes on
//! request over a unix socket. `phantom run` starts one on first use (when
//! `performance.zygote` is true) and later runs go through it; `phantom
//! serve` runs one in the foreground.
//!
//! Protocol: one JSON request line, one JSON response line per connection.
//! Only clients with the server's uid (or root) are served (SO_PEERCRED).
//! The server exits after `idle` without requests and removes its socket.

use crate::apply::LoadedBundle;
use crate::spawn::netns::NetnsPool;
use crate::spawn::{self, RunResult, SpawnRequest};
use phantom_dsl::ir::Policy;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where zygote sockets live.
pub const SOCKET_DIR: &str = "/run/phantom/zygote";

#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    #[error("zygote socket {path}: {source}")]
    Socket { path: String, source: std::io::Error },
    #[error("zygote protocol: {0}")]
    Protocol(String),
    #[error("the zygote refused: {0}")]
    Refused(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workspace: Option<PathBuf>,
    pub timeout_ms: Option<u64>,
    pub output_cap: usize,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Ok(Box<serde_json::Value>),
    Error(String),
}

/// The socket path for a bundle: one zygote per (profile, bundle content).
pub fn socket_path(profile: &str, bundle_key: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{profile}-{}.sock", &bundle_key[..16.min(bundle_key.len())]))
}

fn peer_uid(s: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt into a correctly sized ucred.
    let r = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

/// Serves requests until `idle` passes without one. Blocks.
pub fn serve(path: &Path, policy: Policy, bundle: LoadedBundle, idle: Duration) -> Result<(), ZygoteError> {
    let err = |source| ZygoteError::Socket { path: path.display().to_string(), source };
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        // Only a directory we create gets private permissions.
        std::fs::create_dir_all(dir).map_err(err)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(err)?;
    }
    // A stale socket from a dead zygote: nobody answers it.
    if path.exists() && UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    let shared = Arc::new((policy, bundle, NetnsPool::new(4)));
    // SAFETY: geteuid has no arguments.
    let me = unsafe { libc::geteuid() };
    let last = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                let shared = shared.clone();
                let last = last.clone();
                let in_flight = in_flight.clone();
                in_flight.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let _ = handle(stream, &shared.0, &shared.1, &shared.2, me);
                    last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let idle_for = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if idle_for >= idle && in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                // Sleep in poll until a client connects or the idle check is due.
                let wait = idle.saturating_sub(idle_for).min(Duration::from_millis(500)).as_millis() as i32;
                let mut pfd =
                    libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&listener), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, wait.max(1)) };
            }
            Err(e) => return Err(err(e)),
        }
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

fn handle(
    stream: UnixStream,
    policy: &Policy,
    bundle: &LoadedBundle,
    pool: &NetnsPool,
    me: u32,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut out = stream.try_clone()?;
    let reply = |out: &mut UnixStream, r: Response| -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&r).map_err(std::io::Error::other)?;
        line.push(b'\n');
        out.write_all(&line)
    };
    match peer_uid(&stream) {
        Some(uid) if uid == me || uid == 0 => {}
        other => return reply(&mut out, Response::Error(format!("uid {other:?} may not use this zygote"))),
    }
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return reply(&mut out, Response::Error(format!("bad request: {e}"))),
    };
    let spawn_req = SpawnRequest {
        argv: req.argv,
        env: req.env,
        workspace: req.workspace,
        timeout: req.timeout_ms.map(Duration::from_millis),
        output_cap: req.output_cap,
    };
    match spawn::run_with(policy, bundle, &spawn_req, Some(pool)) {
        Ok(r) => reply(&mut out, Response::Ok(Box::new(serde_json::to_value(r).map_err(std::io::Error::other)?))),
        Err(e) => reply(&mut out, Response::Error(e.to_string())),
    }
}

/// Runs one request through the zygote at `path`.
pub fn run(path: &Path, req: &Request) -> Result<RunResult, ZygoteError> {
    let err = |source| ZygoteError::Socket { path: path.display().to_string(), source };
    let mut s = UnixStream::connect(path).map_err(err)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ZygoteError::Protocol(e.to_string()))?;
    line.push(b'\n');
    s.write_all(&line).map_err(err)?;
    let mut resp = String::new();
    BufReader::new(&s).read_line(&mut resp).map_err(err)?;
    match serde_json::from_str::<Response>(&resp).map_err(|e| ZygoteError::Protocol(format!("{e}: {resp:?}")))? {
        Response::Ok(v) => serde_json::from_value(*v).map_err(|e| ZygoteError::Protocol(e.to_string())),
        Response::Error(e) => Err(ZygoteError::Refused(e)),
    }
}

/// Waits until something answers at `path`; tries at least once, so a zero
/// wait is a plain "is it up?" probe.
pub fn wait_ready(path: &Path, within: Duration) -> bool {
    let t = Instant::now();
    loop {
        if UnixStream::connect(path).is_ok() {
            return true;
        }
        if t.elapsed() >= within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
