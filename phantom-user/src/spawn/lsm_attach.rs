//! The BPF-LSM programs of one sandbox: attached to its cgroup once the
//! sandbox has done its own mounts (they would deny them) and before it
//! execs, detached before the cgroup is removed. The programs themselves
//! are loaded once per bundle ([`LoadedBundle::lsm_programs`]).

use super::spec::SANDBOX_PATH;
use crate::apply::LoadedBundle;
use crate::lsm::LoadedLsm;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Programs attached to one sandbox's cgroup; dropping detaches them.
#[derive(Debug)]
pub(super) struct LsmAttachment {
    lsm: Arc<Mutex<LoadedLsm>>,
    cgroup: PathBuf,
}

impl LsmAttachment {
    /// Attaches the bundle's programs (compiled with `command` allowed to
    /// exec when the policy has an exec allow-list) to `cgroup`.
    pub fn attach(
        bundle: &LoadedBundle,
        policy: &phantom_dsl::ir::Policy,
        command: &str,
        cgroup: &Path,
    ) -> Result<LsmAttachment, String> {
        let lsm = bundle.lsm_programs(policy, Some(&resolve(command)))?;
        lsm.lock().unwrap_or_else(|e| e.into_inner()).attach(cgroup).map_err(|e| e.to_string())?;
        Ok(LsmAttachment { lsm, cgroup: cgroup.to_path_buf() })
    }
}

impl Drop for LsmAttachment {
    fn drop(&mut self) {
        let _ = self.lsm.lock().unwrap_or_else(|e| e.into_inner()).detach_cgroup(&self.cgroup);
    }
}

/// The file the sandbox will exec for `command`, as the kernel will name
/// it: looked up like the sandbox does (its PATH), resolved through
/// symlinks (`/bin` is `usr/bin`). The sandbox binds host paths at the same
/// places, so the host's view answers. Unresolvable: `command` as given.
fn resolve(command: &str) -> String {
    let candidates: Vec<PathBuf> = if command.contains('/') {
        vec![PathBuf::from(command)]
    } else {
        SANDBOX_PATH.split(':').map(|d| Path::new(d).join(command)).collect()
    };
    candidates
        .iter()
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
        .map_or_else(|| command.to_string(), |p| p.display().to_string())
}
