//! The sandbox spawner: one command in fresh namespaces with every process
//! layer of a compiled bundle.
//!
//! Every sandbox is first prepared (`prepare`: cgroups, the first stage,
//! the command process in its namespaces with its root pivoted, waiting on
//! a control socket), then handed one request (`handover`) and finished
//! (`child`: stdio, workspace, rlimits, Landlock, `no_new_privs`, close
//! fds, seccomp last, exec). [`run`] does both back to back; a
//! [`Spawner`] keeps sandboxes prepared ahead of time (`pool`).
//!
//! Identity: the sandbox's uid/gid 0..65535 map to the host range starting
//! at [`SANDBOX_ID_BASE`], never to host root. The workspace is handed to
//! that uid when phantom creates it.

mod allowlist;
pub mod cgroup;
mod child;
mod handover;
mod idmap;
pub(crate) mod lsm_attach;
pub mod netns;
mod pool;
mod prepare;
mod rootfs;
mod spec;
mod supervisor;
mod supervisor_io;
pub(crate) mod sys;

pub use pool::Spawner;
pub use supervisor::{run, run_stdio, run_stdio_with, run_with, Stdio};

use crate::report::Enforcement;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// First host uid/gid of the range the sandbox's ids map to.
pub const SANDBOX_ID_BASE: u32 = 0x6000_0000;
/// Size of the mapped range.
pub const SANDBOX_ID_COUNT: u32 = 65536;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0}")]
    Setup(String),
    #[error("the sandbox could not start: {stage}: {message}")]
    Child { stage: String, message: String },
    #[error("the policy requires {layer}, which cannot be enforced here: {reason}")]
    Required { layer: String, reason: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl SpawnError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SpawnError {
        let what = what.into();
        move |source| SpawnError::Io { what, source }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    pub argv: Vec<String>,
    /// Extra environment (on top of PATH, HOME, LANG, TERM).
    pub env: Vec<(String, String)>,
    /// Host directory mounted read-write at /workspace; `None`: a fresh
    /// directory that is removed afterwards.
    pub workspace: Option<PathBuf>,
    pub timeout: Option<Duration>,
    /// Bytes of stdout and of stderr kept; the rest is counted and dropped.
    pub output_cap: usize,
}

/// One layer of the enforcement report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerStatus {
    pub layer: String,
    pub enforcement: Enforcement,
    pub reason: Option<String>,
}

/// The outcome of one run, as `phantom run --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: usize,
    pub stderr_truncated: usize,
    pub duration_ms: f64,
    pub max_rss_kib: u64,
    pub memory_peak_bytes: Option<u64>,
    pub user_ms: f64,
    pub sys_ms: f64,
    pub mode: String,
    pub enforcement: Vec<LayerStatus>,
    /// Landlock patterns that matched no path in the sandbox.
    pub missing_paths: Vec<String>,
    /// What the kernel-side programs (cgroup-BPF, BPF-LSM) recorded for
    /// this sandbox: its denials (and complain-mode events).
    #[serde(default)]
    pub audit: Vec<crate::audit_events::AuditEvent>,
}
