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
pub struct LsmAttachment {
    lsm: Arc<Mutex<LoadedLsm>>,
    cgroup: PathBuf,
    /// The command as the exec allow-list names it (compiled in).
    command: String,
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
        let command = resolve(command);
        let lsm = bundle.lsm_programs(policy, Some(&command))?;
        lsm.lock().unwrap_or_else(|e| e.into_inner()).attach(cgroup).map_err(|e| e.to_string())?;
        Ok(LsmAttachment { lsm, cgroup: cgroup.to_path_buf(), command })
    }

    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Moves the attachment to `bundle`'s programs for the same command,
    /// without a gap ([`LoadedLsm::take_over`]).
    pub fn move_to(
        &mut self,
        bundle: &LoadedBundle,
        policy: &phantom_dsl::ir::Policy,
    ) -> Result<crate::lsm::TakeOver, String> {
        let new = bundle.lsm_programs(policy, Some(&self.command))?;
        if Arc::ptr_eq(&new, &self.lsm) {
            return Ok(crate::lsm::TakeOver::default());
        }
        let report = {
            let mut old = self.lsm.lock().unwrap_or_else(|e| e.into_inner());
            let mut next = new.lock().unwrap_or_else(|e| e.into_inner());
            next.take_over(&mut old, &self.cgroup).map_err(|e| e.to_string())?
        };
        self.lsm = new;
        Ok(report)
    }
}

impl Drop for LsmAttachment {
    fn drop(&mut self) {
        self.lsm.lock().unwrap_or_else(|e| e.into_inner()).detach_cgroup(&self.cgroup);
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
