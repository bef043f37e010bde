//! Resident zygotes: a process per policy that loaded the bundle once and
//! keeps sandboxes prepared ahead of time (a [`Spawner`]), serving requests
//! over a unix socket. `phantom run` starts one on first use (when
//! `performance.zygote` is true) and later runs go through it; `phantom
//! serve` runs one in the foreground.
//!
//! Protocol: one JSON request line, one JSON response line per connection.
//! The request's first bytes carry descriptors (SCM_RIGHTS): the client's
//! stdout and stderr when it asks for them to be passed through (the
//! sandbox then writes to them directly), then a directory descriptor of
//! the workspace when it names one (opened by the client, so it is the
//! client's view of the path). Only clients with the server's uid (or root)
//! are served (SO_PEERCRED). The server exits after `idle` without
//! requests or on SIGTERM, SIGINT or SIGHUP; prepared sandboxes are killed
//! and everything they made is removed, and so is the socket.

use crate::apply::LoadedBundle;
use crate::spawn::{sys, RunResult, SpawnError, SpawnRequest, Spawner, Stdio};
use phantom_dsl::ir::Policy;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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
    /// The zygote tried and the sandbox could not run the command (e.g. no
    /// such program, a required layer missing): a direct spawn would fail
    /// the same way, so callers report it instead of retrying.
    #[error("{0}")]
    NotStarted(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Sent as a directory descriptor; the path is informative.
    pub workspace: Option<PathBuf>,
    /// None: the policy's `resources.wall_time`.
    pub timeout_ms: Option<u64>,
    pub output_cap: usize,
}

/// What travels on the wire: the request and which descriptors come with it.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    #[serde(flatten)]
    req: Request,
    /// stdout and stderr are attached (first two descriptors).
    #[serde(default)]
    pass_stdio: bool,
    /// A workspace directory descriptor is attached (last).
    #[serde(default)]
    workspace_fd: bool,
}

/// Sandboxes a zygote keeps prepared.
pub const POOL_SIZE: usize = 2;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Ok(Box<serde_json::Value>),
    Error(String),
    /// The sandbox could not start the command ([`ZygoteError::NotStarted`]).
    NotStarted(String),
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
/// `origin` is the policy file or bundle directory it serves (absolute):
/// `phantom reload` finds zygotes by it.
pub fn serve(
    path: &Path,
    policy: Policy,
    bundle: LoadedBundle,
    idle: Duration,
    origin: Option<PathBuf>,
) -> Result<(), ZygoteError> {
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
    STOP.store(false, Ordering::SeqCst);
    stop_on_signals();
    // One malloc arena for every thread: per-thread arenas would each keep
    // their own free pages resident.
    // SAFETY: mallopt only changes allocator settings.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let spawner = Spawner::new(&policy, &bundle, POOL_SIZE).map_err(|e| ZygoteError::Refused(e.to_string()))?;
    spawner.wait_full(Duration::from_secs(5));
    release_startup_memory();
    let server = Arc::new(Server {
        listener,
        spawner: RwLock::new(Arc::new(spawner)),
        origin,
        path: Mutex::new(path.to_path_buf()),
        // SAFETY: geteuid has no arguments.
        me: unsafe { libc::geteuid() },
        start: Instant::now(),
        last: AtomicU64::new(0),
        state: Mutex::new(Workers::default()),
    });
    for _ in 0..IDLE_WORKERS {
        Server::add_worker(&server);
    }
    // This thread only watches for the idle timeout and the stop signals.
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let idle_for =
            server.start.elapsed().saturating_sub(Duration::from_millis(server.last.load(Ordering::Relaxed)));
        let busy = server.state.lock().map_or(0, |w| w.busy);
        if STOP.load(Ordering::SeqCst) || (idle_for >= idle && busy == 0) {
            break;
        }
    }
    // Nobody new can connect; blocked accepts return (shutdown of a
    // listening socket); in-flight requests finish (each has its own
    // timeout). Dropping the spawner kills the prepared sandboxes and
    // removes what every sandbox made.
    let _ = std::fs::remove_file(&*server.path.lock().unwrap_or_else(|e| e.into_inner()));
    // SAFETY: shutdown on our own listening socket.
    unsafe { libc::shutdown(server.listener.as_raw_fd(), libc::SHUT_RDWR) };
    while server.state.lock().map_or(0, |w| w.busy + w.idle) > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // A worker counts itself out just before its thread ends and drops its
    // reference: wait for that too, so that the spawner (its prepared
    // sandboxes, what every sandbox made) and the listener go here, before
    // this returns.
    while Arc::strong_count(&server) > 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(server);
    Ok(())
}

/// A zygote's shared state: its socket and spawner, and its workers.
struct Server {
    listener: UnixListener,
    /// Replaced by a policy update; a request keeps the one it started on.
    spawner: RwLock<Arc<Spawner>>,
    /// The policy file or bundle directory served, if known.
    origin: Option<PathBuf>,
    /// The socket's path (a policy update may rename it).
    path: Mutex<PathBuf>,
    me: u32,
    start: Instant,
    /// When the last request ended, in ms since `start`.
    last: AtomicU64,
    state: Mutex<Workers>,
}

/// Worker threads: each blocks in accept and serves the connection it gets
/// itself (the kernel wakes one accepter per connection: no hand-over to
/// another thread on the request's path).
#[derive(Default)]
struct Workers {
    /// Blocked in accept.
    idle: usize,
    /// Serving a connection.
    busy: usize,
}

/// Idle workers kept after a request; more exit. Two, so that a request
/// finds a spare accepter already running: creating one on the request's
/// path cost about 60 µs (clone3 of a thread, its stack).
const IDLE_WORKERS: usize = 2;

impl Server {
    fn add_worker(server: &Arc<Server>) {
        if let Ok(mut w) = server.state.lock() {
            w.idle += 1;
        }
        let s = server.clone();
        if std::thread::Builder::new().name("phantom-zygote".into()).spawn(move || s.work()).is_err() {
            if let Ok(mut w) = server.state.lock() {
                w.idle -= 1;
            }
        }
    }

    fn work(self: Arc<Server>) {
        loop {
            let accepted = self.listener.accept();
            let Ok(mut w) = self.state.lock() else { return };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                // The listener was shut down: the server is stopping.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    w.idle -= 1;
                    return;
                }
                // Out of descriptors or an aborted connection: try again.
                Err(_) => {
                    drop(w);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            w.idle -= 1;
            w.busy += 1;
            // Someone must be accepting while this one serves.
            let spare = w.idle == 0;
            drop(w);
            if spare {
                Server::add_worker(&self);
            }
            let _ = handle(stream, &self, self.me);
            self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
            let Ok(mut w) = self.state.lock() else { return };
            w.busy -= 1;
            if w.idle >= IDLE_WORKERS {
                return;
            }
            w.idle += 1;
        }
    }
}

/// Set by SIGTERM, SIGINT or SIGHUP: the server stops like an idle one
/// (nothing left behind), instead of dying with sandboxes prepared and
/// teardowns pending.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn stop_on_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with an async-signal-safe handler (one
        // atomic store) and an empty mask is valid.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Once the bundle is loaded and the pool is full: the heap's free pages go
/// back to the kernel, and this process drops its page mappings of every
/// file it maps read-only (its executable, mostly the policy compiler,
/// which serving never runs again; the C library): the code serving needs
/// faults back in from the page cache. Unlike paging out, this works while
/// a `phantom run` client maps the same pages (it waits for this zygote).
fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
    crate::resident::drop_file_page_mappings();
}

fn handle(stream: UnixStream, server: &Server, me: u32) -> std::io::Result<()> {
    let reply = |r: Response| -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&r).map_err(std::io::Error::other)?;
        line.push(b'\n');
        (&stream).write_all(&line)
    };
    match peer_uid(&stream) {
        Some(uid) if uid == me || uid == 0 => {}
        other => return reply(Response::Error(format!("uid {other:?} may not use this zygote"))),
    }
    // The first read carries the descriptors; the rest of the line follows.
    let mut first = vec![0u8; 16 * 1024];
    let (n, raw) = sys::recv_with_fds(stream.as_raw_fd(), &mut first, 3)?;
    // SAFETY: descriptors just received, owned by nobody else.
    let fds: Vec<OwnedFd> = raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
    first.truncate(n);
    let mut line = first;
    if !line.contains(&b'\n') && n > 0 {
        let mut rest = Vec::new();
        BufReader::new(&stream).read_until(b'\n', &mut rest)?;
        line.extend_from_slice(&rest);
    }
    if let Ok(r) = serde_json::from_slice::<ReloadWire>(&line) {
        return reply(server.reload(&r.reload));
    }
    let spawner = server.spawner.read().unwrap_or_else(|e| e.into_inner()).clone();
    let wire: Wire = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => return reply(Response::Error(format!("bad request: {e}"))),
    };
    let expected = 2 * usize::from(wire.pass_stdio) + usize::from(wire.workspace_fd);
    if fds.len() != expected {
        return reply(Response::Error(format!("bad request: {} descriptors, expected {expected}", fds.len())));
    }
    let workspace = if wire.workspace_fd {
        // The sandbox gets a copy of the tree this descriptor names.
        Some(PathBuf::from(format!("/proc/self/fd/{}", fds[fds.len() - 1].as_raw_fd())))
    } else {
        None
    };
    let req = wire.req;
    let spawn_req = SpawnRequest {
        argv: req.argv,
        env: req.env,
        workspace,
        // None: the policy's wall time (a client that did not compile the
        // policy does not know it).
        timeout: req
            .timeout_ms
            .map(Duration::from_millis)
            .or_else(|| spawner.policy().resources.wall_time.map(|d| Duration::from_millis(d.0))),
        output_cap: req.output_cap,
    };
    let stdio = if wire.pass_stdio {
        Stdio::Pass { stdout: fds[0].as_fd_ref(), stderr: fds[1].as_fd_ref() }
    } else {
        Stdio::Capture
    };
    // The reply goes out before the pool refills and the sandbox is removed.
    spawner.run_then(&spawn_req, stdio, |r| match r {
        Ok(r) => reply(Response::Ok(Box::new(serde_json::to_value(r).map_err(std::io::Error::other)?))),
        Err(e @ (SpawnError::Child { .. } | SpawnError::Required { .. })) => reply(Response::NotStarted(e.to_string())),
        Err(e) => reply(Response::Error(e.to_string())),
    })
}

/// A policy update request (`phantom reload`): one JSON line.
#[derive(Debug, Serialize, Deserialize)]
struct ReloadWire {
    reload: ReloadRequest,
}

/// What `phantom reload` asks of a zygote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadRequest {
    /// The policy file or bundle directory (absolute) whose zygotes update:
    /// a zygote serving something else answers [`ReloadOutcome::NotMine`].
    pub origin: PathBuf,
    /// Where the zygote's socket moves, so that runs of the updated policy
    /// find it (`None`: it stays).
    pub socket: Option<PathBuf>,
}

/// A zygote's answer to a [`ReloadRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ReloadOutcome {
    /// It serves another policy; nothing changed.
    NotMine,
    /// The policy as it is now serves new runs, and the running sandboxes
    /// were moved ([`crate::live`]).
    Updated { profile: String, running: crate::live::UpdateReport, socket: PathBuf },
}

impl Server {
    /// Loads the policy at the request's origin, makes a spawner for it
    /// (fails closed like the first one, keeping the old on error), moves
    /// the running sandboxes, then serves new requests with it.
    fn reload(&self, r: &ReloadRequest) -> Response {
        if self.origin.as_deref() != Some(r.origin.as_path()) {
            return json_response(&ReloadOutcome::NotMine);
        }
        let (policy, bundle) = match crate::reload::load_target(&r.origin) {
            Ok(x) => x,
            Err(e) => return Response::Error(format!("{}: {e}", r.origin.display())),
        };
        let next = match Spawner::new(&policy, &bundle, POOL_SIZE) {
            Ok(s) => Arc::new(s),
            Err(e) => return Response::Error(format!("the updated policy cannot run here: {e}")),
        };
        let old = self.spawner.read().unwrap_or_else(|e| e.into_inner()).clone();
        let running = old.bundle().live.supersede(&bundle, &policy);
        *self.spawner.write().unwrap_or_else(|e| e.into_inner()) = next;
        let mut path = self.path.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(to) = r.socket.as_ref().filter(|to| **to != *path) {
            if std::fs::rename(&*path, to).is_ok() {
                *path = to.clone();
            }
        }
        json_response(&ReloadOutcome::Updated { profile: policy.profile.clone(), running, socket: path.clone() })
    }
}

fn json_response(v: &impl Serialize) -> Response {
    match serde_json::to_value(v) {
        Ok(v) => Response::Ok(Box::new(v)),
        Err(e) => Response::Error(e.to_string()),
    }
}

/// Sends `r` to the zygote at `path`.
pub fn reload(path: &Path, r: &ReloadRequest) -> Result<ReloadOutcome, ZygoteError> {
    let err = |source| ZygoteError::Socket { path: path.display().to_string(), source };
    let s = connect(path)?;
    let mut line =
        serde_json::to_vec(&ReloadWire { reload: r.clone() }).map_err(|e| ZygoteError::Protocol(e.to_string()))?;
    line.push(b'\n');
    sys::send_with_fds(s.as_raw_fd(), &line, &[]).map_err(err)?;
    read_response(&s).map_err(err)?
}

trait AsFdRef {
    fn as_fd_ref(&self) -> BorrowedFd<'_>;
}
impl AsFdRef for OwnedFd {
    fn as_fd_ref(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

/// Runs one request through the zygote at `path`, output captured.
pub fn run(path: &Path, req: &Request) -> Result<RunResult, ZygoteError> {
    run_passing(path, req, None)
}

/// Runs one request through the zygote at `path`; with `stdio`, the
/// sandbox writes to these descriptors (stdout, stderr) directly. A
/// workspace is sent as a directory descriptor opened here.
pub fn run_passing(
    path: &Path,
    req: &Request,
    stdio: Option<(BorrowedFd<'_>, BorrowedFd<'_>)>,
) -> Result<RunResult, ZygoteError> {
    run_on(&connect(path)?, path, req, stdio)
}

/// Connects to the zygote at `path` (nothing is sent yet: a failure here
/// means no request reached it).
pub fn connect(path: &Path) -> Result<UnixStream, ZygoteError> {
    UnixStream::connect(path).map_err(|source| ZygoteError::Socket { path: path.display().to_string(), source })
}

/// [`run_passing`] on a connection from [`connect`].
pub fn run_on(
    s: &UnixStream,
    path: &Path,
    req: &Request,
    stdio: Option<(BorrowedFd<'_>, BorrowedFd<'_>)>,
) -> Result<RunResult, ZygoteError> {
    let err = |source| ZygoteError::Socket { path: path.display().to_string(), source };
    send_request(s, req, stdio).map_err(err)?;
    read_response(s).map_err(err)?
}

fn send_request(s: &UnixStream, req: &Request, stdio: Option<(BorrowedFd<'_>, BorrowedFd<'_>)>) -> std::io::Result<()> {
    let mut fds = Vec::new();
    if let Some((o, e)) = stdio {
        fds.extend([o.as_raw_fd(), e.as_raw_fd()]);
    }
    let dir = match &req.workspace {
        Some(w) => Some(
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(w)
                .map_err(|e| std::io::Error::new(e.kind(), format!("workspace {}: {e}", w.display())))?,
        ),
        None => None,
    };
    fds.extend(dir.as_ref().map(|d| d.as_raw_fd()));
    let wire = Wire {
        req: Request { workspace: req.workspace.clone(), ..req.clone() },
        pass_stdio: stdio.is_some(),
        workspace_fd: dir.is_some(),
    };
    let mut line = serde_json::to_vec(&wire).map_err(std::io::Error::other)?;
    line.push(b'\n');
    sys::send_with_fds(s.as_raw_fd(), &line, &fds)
}

/// The server's one-line answer: `T` (a run's result, a reload's outcome)
/// or its refusal.
fn read_response<T: serde::de::DeserializeOwned>(s: &UnixStream) -> std::io::Result<Result<T, ZygoteError>> {
    // One line: done at its newline, without waiting for the server to
    // close the connection.
    let mut resp = Vec::new();
    BufReader::with_capacity(4096, s).read_until(b'\n', &mut resp)?;
    Ok(match serde_json::from_slice::<Response>(&resp) {
        Err(e) => Err(ZygoteError::Protocol(format!("{e}: {:?}", String::from_utf8_lossy(&resp)))),
        Ok(Response::Ok(v)) => serde_json::from_value(*v).map_err(|e| ZygoteError::Protocol(e.to_string())),
        Ok(Response::Error(e)) => Err(ZygoteError::Refused(e)),
        Ok(Response::NotStarted(e)) => Err(ZygoteError::NotStarted(e)),
    })
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
