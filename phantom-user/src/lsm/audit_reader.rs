//! Reading the audit ring buffer of loaded LSM programs: from the
//! [`super::LoadedLsm`] that loaded them, or from its pin (`phantom audit`).

use super::LsmLoadError;
use aya::maps::{Map, MapData, RingBuf};
use phantom_ebpf::audit::{AuditError, AuditRecord};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;

/// The ring buffer's name in a pin directory.
pub const AUDIT_PIN: &str = "audit";
/// The symlink whose target is the [`PinnedInfo`] JSON.
pub const INFO_PIN: &str = "info";

/// What a pin directory says about its programs: the policy files, in the
/// order of the records' `file` index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedInfo {
    pub files: Vec<String>,
}

impl PinnedInfo {
    /// Reads `dir/info`; `None` when it is absent or unreadable.
    pub fn read(dir: &Path) -> Option<PinnedInfo> {
        let target = std::fs::read_link(dir.join(INFO_PIN)).ok()?;
        serde_json::from_str(target.to_str()?).ok()
    }
}

/// A consumer of one audit ring buffer.
pub struct AuditReader {
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for AuditReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditReader").field("fd", &self.ring.as_fd().as_raw_fd()).finish()
    }
}

impl AuditReader {
    pub(super) fn from_map(map: Map) -> Result<AuditReader, LsmLoadError> {
        let ring = RingBuf::try_from(map).map_err(|e| LsmLoadError::Audit(format!("{e:?}")))?;
        Ok(AuditReader { ring })
    }

    /// A ring buffer from its fd (a program set this process loaded).
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<AuditReader, LsmLoadError> {
        let data = MapData::from_fd(fd).map_err(|e| LsmLoadError::Audit(format!("{e}")))?;
        AuditReader::from_map(Map::from_map_data(data).map_err(|e| LsmLoadError::Audit(format!("{e}")))?)
    }

    /// Opens a pinned ring buffer (`<pin dir>/audit`).
    pub fn open_pinned(path: &Path) -> Result<AuditReader, LsmLoadError> {
        let not = |detail: String| LsmLoadError::NotPinned { path: path.into(), detail };
        let data = MapData::from_pin(path).map_err(|e| not(format!("{e}")))?;
        let map = Map::from_map_data(data).map_err(|e| not(format!("{e}")))?;
        AuditReader::from_map(map)
    }

    /// Every record available now, decoded (a record this reader cannot
    /// decode is an `Err` in its place).
    pub fn drain(&mut self) -> Vec<Result<AuditRecord, AuditError>> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            out.push(AuditRecord::decode(&item));
        }
        out
    }

    /// Waits until a record is available or `timeout` passes; `true` when
    /// one is.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd { fd: self.ring.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        r > 0 && pfd.revents & libc::POLLIN != 0
    }
}
