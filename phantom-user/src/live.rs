//! The kernel attachments of running sandboxes, per bundle, so that a
//! policy update can move them to the new version while the sandboxes run.
//!
//! What an update changes in a running sandbox: its cgroup-BPF programs
//! (replaced in place, [`crate::cgroup_bpf::Attachment::replace_with`]),
//! its BPF-LSM programs (links switched in place,
//! [`crate::lsm::LoadedLsm::take_over`]) and the XDP programs on both ends
//! of an allowlist sandbox's veth pair (`XDP_FLAGS_REPLACE`,
//! [`crate::net::XdpAttachment::replace_with`]). At every moment each hook
//! runs the old or the new version, never neither. What it cannot change:
//! the seccomp filter and the Landlock domain of processes already running
//! (the kernel only lets a process add restrictions to itself), and the
//! mounts, namespaces and resource limits made at start. New sandboxes get
//! every layer of the new version.
//!
//! No sandbox slips through an update: storing a new attachment and
//! updating take the same registry lock. A sandbox that attached the old
//! programs but stored them after the update began finds the successor
//! and moves itself at once (it was enforced by the old version until
//! then).
//!
//! Lock order: a bundle's registry, then a sandbox, then the successor's
//! registry.

use crate::apply::LoadedBundle;
use crate::cgroup_bpf::Attachment;
use crate::net::XdpAttachment;
use crate::spawn::lsm_attach::LsmAttachment;
use phantom_dsl::ir::Policy;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// One running sandbox's movable attachments.
#[derive(Debug)]
pub struct Live {
    cgroup: PathBuf,
    cgroup_bpf: Option<Attachment>,
    lsm: Option<LsmAttachment>,
    xdp: Option<XdpAttachment>,
}

impl Live {
    /// Detaches everything (the sandbox is over).
    fn clear(&mut self) {
        drop(self.cgroup_bpf.take());
        drop(self.lsm.take());
        drop(self.xdp.take());
    }
}

/// The running sandboxes of one bundle (shared by its clones), and the
/// bundle that replaced it once an update happened.
#[derive(Debug, Clone, Default)]
pub struct LiveRegistry(Arc<Mutex<LiveSet>>);

#[derive(Debug, Default)]
struct LiveSet {
    members: Vec<Weak<Mutex<Live>>>,
    successor: Option<Box<(LoadedBundle, Policy)>>,
}

/// A running sandbox's entry: dropping it detaches what it holds.
#[derive(Debug)]
pub struct LiveHandle {
    registry: LiveRegistry,
    live: Arc<Mutex<Live>>,
}

/// What an update did to the running sandboxes.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReport {
    /// Sandboxes moved to the new version: running ones, and prepared
    /// ones waiting for a request (a zygote's pool; they are discarded).
    pub sandboxes: usize,
    /// cgroup-BPF programs replaced in place / added / detached.
    pub cgroup_bpf: [usize; 3],
    /// BPF-LSM links switched in place / added / detached.
    pub bpf_lsm: [usize; 3],
    /// Veth pairs whose XDP programs were swapped (both ends).
    #[serde(default)]
    pub xdp: usize,
    /// Sandboxes the update could not fully move (each still enforced by
    /// the old version, the new one, or both, per hook).
    pub errors: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveRegistry {
    /// Registers a sandbox about to get its attachments.
    pub fn enter(&self, cgroup: &Path) -> LiveHandle {
        let live = Arc::new(Mutex::new(Live { cgroup: cgroup.to_path_buf(), cgroup_bpf: None, lsm: None, xdp: None }));
        self.adopt(&live, &mut UpdateReport::default());
        LiveHandle { registry: self.clone(), live }
    }

    /// Takes `live` into this registry, or on to the successor.
    fn adopt(&self, live: &Arc<Mutex<Live>>, report: &mut UpdateReport) {
        let mut set = lock(&self.0);
        match &set.successor {
            Some(next) => move_to(live, &next.0, &next.1, report),
            None => {
                set.members.retain(|w| w.strong_count() > 0);
                // A sandbox moved again by a later store is already here.
                if !set.members.iter().any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(live))) {
                    set.members.push(Arc::downgrade(live));
                }
            }
        }
    }

    /// Moves every running sandbox of this bundle to `to` (built from
    /// `policy`, a bundle not replaced before), and makes `to` the
    /// successor for sandboxes still starting.
    pub fn supersede(&self, to: &LoadedBundle, policy: &Policy) -> UpdateReport {
        let mut report = UpdateReport::default();
        // Successors only go forward: a bundle that was itself replaced (or
        // this one) would make a cycle.
        if Arc::ptr_eq(&self.0, &to.live.0) || lock(&to.live.0).successor.is_some() {
            report.errors.push("the new version is this one, or was itself replaced: nothing moved".into());
            return report;
        }
        let mut set = lock(&self.0);
        set.successor = Some(Box::new((to.clone(), policy.clone())));
        for live in std::mem::take(&mut set.members).iter().filter_map(Weak::upgrade) {
            move_to(&live, to, policy, &mut report);
        }
        report
    }
}

/// Switches one sandbox's attachments to `to`'s programs and registers it
/// there.
fn move_to(live: &Arc<Mutex<Live>>, to: &LoadedBundle, policy: &Policy, report: &mut UpdateReport) {
    {
        let mut l = lock(live);
        let cgroup = l.cgroup.display().to_string();
        let mut moved = false;
        if let Some(att) = l.cgroup_bpf.as_mut() {
            match to.cgroup_programs(policy).and_then(|p| att.replace_with(&p).map_err(|e| e.to_string())) {
                Ok((r, a, d)) => {
                    report.cgroup_bpf = [report.cgroup_bpf[0] + r, report.cgroup_bpf[1] + a, report.cgroup_bpf[2] + d];
                    moved = true;
                }
                Err(e) => report.errors.push(format!("{cgroup}: cgroup-bpf: {e}")),
            }
        }
        if let Some(lsm) = l.lsm.as_mut() {
            match lsm.move_to(to, policy) {
                Ok(t) => {
                    let n = [t.swapped.len(), t.added.len(), t.removed];
                    report.bpf_lsm = [report.bpf_lsm[0] + n[0], report.bpf_lsm[1] + n[1], report.bpf_lsm[2] + n[2]];
                    moved = true;
                }
                Err(e) => report.errors.push(format!("{cgroup}: bpf-lsm: {e}")),
            }
        }
        if let Some(x) = l.xdp.as_mut() {
            match to.xdp_programs().and_then(|p| x.replace_with(p).map_err(|e| e.to_string())) {
                Ok(()) => {
                    report.xdp += 1;
                    moved = true;
                }
                Err(e) => report.errors.push(format!("{cgroup}: xdp: {e}")),
            }
        }
        report.sandboxes += usize::from(moved);
    }
    to.live.adopt(live, report);
}

impl LiveHandle {
    /// Stores the sandbox's cgroup-BPF attachment. If an update began since
    /// the programs were attached, the sandbox moves to the new version now.
    pub fn set_cgroup_bpf(&self, a: Attachment) {
        self.store(|l| l.cgroup_bpf = Some(a));
    }

    /// Stores the sandbox's BPF-LSM attachment (same as above).
    pub fn set_lsm(&self, a: LsmAttachment) {
        self.store(|l| l.lsm = Some(a));
    }

    /// Stores the XDP programs of the sandbox's veth pair (same as above).
    pub fn set_xdp(&self, a: XdpAttachment) {
        self.store(|l| l.xdp = Some(a));
    }

    fn store(&self, f: impl FnOnce(&mut Live)) {
        // The stored attachment runs the programs of the bundle the sandbox
        // started with (this registry's). Under its lock: an update either
        // has not begun (and will find this sandbox) or has set the
        // successor, checked here. Moves are idempotent (an attachment that
        // already runs the target's programs is left alone), so a sandbox
        // moved by an earlier store moves only what this one added.
        let set = lock(&self.registry.0);
        f(&mut lock(&self.live));
        if let Some(next) = &set.successor {
            move_to(&self.live, &next.0, &next.1, &mut UpdateReport::default());
        }
    }
}

impl Drop for LiveHandle {
    fn drop(&mut self) {
        lock(&self.live).clear();
    }
}
