//! The audit records of one sandbox, for its run result: the ring buffers
//! of a bundle's programs are shared by all its sandboxes, so a collector
//! per bundle drains them and hands each run the records whose `sandbox`
//! is its cgroup; the others wait for their own run (at most
//! [`PENDING_CAP`], oldest dropped first). XDP records carry no sandbox
//! (they run in no task's context) and stay with `phantom audit`.

use crate::lsm::AuditReader;
use phantom_ebpf::audit::{AuditRecord, Layer};
use serde::{Deserialize, Serialize};

/// Records kept for runs that have not asked yet.
pub const PENDING_CAP: usize = 4096;

/// One record as `phantom run --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub layer: String,
    /// `file_open`, `cgroup/connect4`, ...
    pub hook: String,
    pub verdict: String,
    pub pid: u32,
    pub comm: String,
    pub object: String,
    /// The policy line of the rule that decided; absent when no single
    /// rule did (a denial because nothing allowed it).
    pub line: Option<u32>,
    pub time_ns: u64,
}

impl AuditEvent {
    pub fn from_record(r: &AuditRecord) -> AuditEvent {
        let hook = match Layer::from_code(r.layer) {
            Some(Layer::BpfLsm) => phantom_ebpf::lsm::Hook::from_id(r.hook).map(|h| h.name().to_string()),
            Some(Layer::CgroupBpf) => phantom_ebpf::netprog::ProgKind::ALL
                .into_iter()
                .find(|k| k.audit_id() == r.hook)
                .map(|k| k.section().to_string()),
            _ => None,
        };
        AuditEvent {
            layer: r.layer_name(),
            hook: hook.unwrap_or_else(|| format!("hook-{}", r.hook)),
            verdict: r.verdict_name(),
            pid: r.pid,
            comm: r.comm(),
            object: r.object.display(),
            line: (r.line != 0).then_some(r.line),
            time_ns: r.time_ns,
        }
    }
}

/// The ring buffers of one bundle's programs and the records drained from
/// them that no run has taken yet.
#[derive(Debug, Default)]
pub struct AuditCollector {
    readers: Vec<AuditReader>,
    pending: std::collections::VecDeque<AuditRecord>,
}

impl AuditCollector {
    pub fn add(&mut self, reader: AuditReader) {
        self.readers.push(reader);
    }

    /// The records of the sandbox whose cgroup id is `sandbox`, in the
    /// order they were written (per ring).
    pub fn take(&mut self, sandbox: u64) -> Vec<AuditEvent> {
        for r in &mut self.readers {
            for rec in r.drain().into_iter().flatten() {
                if self.pending.len() == PENDING_CAP {
                    self.pending.pop_front();
                }
                self.pending.push_back(rec);
            }
        }
        let mut out = Vec::new();
        self.pending.retain(|r| {
            let mine = r.sandbox == sandbox;
            if mine {
                out.push(AuditEvent::from_record(r));
            }
            !mine
        });
        out
    }
}
