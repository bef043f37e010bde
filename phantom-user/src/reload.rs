//! Policy updates of resident zygotes (`phantom reload`): every zygote
//! that serves a policy file (or bundle directory) loads it again, serves
//! new runs with it and moves its running sandboxes to it without a gap
//! ([`crate::live`] says which layers a running sandbox can change).

use crate::apply::LoadedBundle;
use crate::zygote::{self, ReloadOutcome, ReloadRequest};
use phantom_dsl::ir::Policy;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the policy has errors:\n{0}")]
    Policy(String),
    #[error("{0}")]
    Bundle(String),
}

/// A policy file compiled (with its bundle built as `phantom-policy
/// compile` builds it), or a bundle directory read.
pub fn load_target(path: &Path) -> Result<(Policy, LoadedBundle), ReloadError> {
    if path.is_dir() {
        let bundle = LoadedBundle::load(path).map_err(|e| ReloadError::Bundle(e.to_string()))?;
        let policy = LoadedBundle::read_policy(path).map_err(|e| ReloadError::Bundle(e.to_string()))?;
        return Ok((policy, bundle));
    }
    let c = phantom_dsl::compile_file(path)
        .map_err(|source| ReloadError::Read { path: path.display().to_string(), source })?;
    let Some(policy) = c.policy else {
        let msgs: Vec<String> = c.diagnostics.items.iter().map(|d| format!("{}: {}", d.code, d.message)).collect();
        return Err(ReloadError::Policy(msgs.join("\n")));
    };
    let built = phantom_ebpf::bundle::build_with_sources(&policy, &c.sources.texts())
        .map_err(|e| ReloadError::Bundle(e.to_string()))?;
    let bundle = LoadedBundle::from_bundle(&built).map_err(|e| ReloadError::Bundle(e.to_string()))?;
    Ok((policy, bundle))
}

/// One zygote's update.
#[derive(Debug, Clone, Serialize)]
pub struct ZygoteUpdate {
    /// Where it listened when asked.
    pub socket: PathBuf,
    /// `Ok`: what moved; `Err`: why it kept the old policy.
    pub result: Result<ReloadOutcome, String>,
}

/// Asks every zygote under `dir` to update from `origin` (absolute), and
/// those that serve it to move to `socket`. Zygotes serving other policies,
/// and sockets nobody answers, are left out.
pub fn reload_all(dir: &Path, origin: &Path, socket: Option<PathBuf>) -> Vec<ZygoteUpdate> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut sockets: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "sock")).collect();
    sockets.sort();
    let req = ReloadRequest { origin: origin.to_path_buf(), socket };
    sockets
        .into_iter()
        .filter_map(|path| match zygote::reload(&path, &req) {
            Ok(ReloadOutcome::NotMine) | Err(zygote::ZygoteError::Socket { .. }) => None,
            Ok(outcome) => Some(ZygoteUpdate { socket: path, result: Ok(outcome) }),
            Err(e) => Some(ZygoteUpdate { socket: path, result: Err(e.to_string()) }),
        })
        .collect()
}
