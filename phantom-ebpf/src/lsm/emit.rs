//! The instruction emitter every LSM program uses: policy positions on
//! every instruction, kernel-field placeholders, labels on the next
//! instruction, byte compares, and the audit-record tail shared by all
//! decision sites of a program.
//!
//! Register convention of every program: r6 = the record scratch buffer
//! (its object part holds paths and addresses), r7 = the hook's context or
//! its first argument, r8/r9 = per-hook values; r0-r5 scratch.

use super::{FieldReloc, Hook, KernelField, LsmProgram};
use crate::audit::{self, Layer, ObjectKind, Site, Verdict};
use crate::bpf::{Helper, Insn, Reg, Reg::*, SourceLoc};

pub(super) const DENY_TAIL: &str = "record";

pub(super) struct Emitter {
    pub hook: Hook,
    pub insns: Vec<Insn>,
    pub relocs: Vec<FieldReloc>,
    /// The policy position of what is emitted now.
    pub loc: Option<SourceLoc>,
    label: Option<String>,
}

impl Emitter {
    pub fn new(hook: Hook, loc: Option<SourceLoc>) -> Emitter {
        Emitter { hook, insns: Vec::new(), relocs: Vec::new(), loc, label: None }
    }

    pub fn push(&mut self, i: Insn) {
        let mut i = match &self.loc {
            Some(l) if i.meta.loc.is_none() => i.at(l.clone()),
            _ => i,
        };
        if let Some(l) = self.label.take() {
            if i.meta.label.is_some() {
                // Two labels on one place: a no-op jump carries the first.
                self.insns.push(self.tag(Insn::ja(0).label(l)));
            } else {
                i = i.label(l);
            }
        }
        self.insns.push(i);
    }

    fn tag(&self, i: Insn) -> Insn {
        match &self.loc {
            Some(l) => i.at(l.clone()),
            None => i,
        }
    }

    pub fn extend(&mut self, insns: Vec<Insn>) {
        for i in insns {
            self.push(i);
        }
    }

    /// The next instruction pushed carries `label`.
    pub fn label(&mut self, label: impl Into<String>) {
        if let Some(prev) = self.label.take() {
            self.insns.push(self.tag(Insn::ja(0).label(prev)));
        }
        self.label = Some(label.into());
    }

    /// An instruction whose offset (load `off` or ALU `imm`) is `field`'s.
    pub fn field(&mut self, i: Insn, field: KernelField) {
        self.push(i);
        self.relocs.push(FieldReloc { insn: self.insns.len() - 1, field });
    }

    /// r6 = the record scratch buffer; a failed lookup (impossible for an
    /// array) takes `fail`.
    pub fn scratch(&mut self, fail: &str) {
        self.push(Insn::st_w(R10, -4, 0));
        self.push(Insn::mov64_reg(R2, R10));
        self.push(Insn::add64_imm(R2, -4));
        self.push(Insn::ld_map(R1, audit::SCRATCH_MAP));
        self.push(Insn::call(Helper::MapLookupElem));
        self.push(Insn::jeq_imm(R0, 0, fail));
        self.push(Insn::mov64_reg(R6, R0));
    }

    /// Stores a decision site's constants and jumps to the record tail.
    pub fn deny_at(&mut self, site: Site) {
        self.extend(audit::store_site(R6, site));
        self.push(Insn::ja(DENY_TAIL));
    }

    /// The shared tail: header, task fields, ring buffer output, then the
    /// verdict (0 deny; 1 in complain mode).
    pub fn record_tail(&mut self, verdict: Verdict) {
        self.label(DENY_TAIL);
        let src = audit::Source { layer: Layer::BpfLsm, verdict, hook: self.hook.id() };
        self.extend(audit::emit_task_fields(R6, src));
        self.extend(audit::emit_output(R6, "out"));
        self.ret(verdict);
    }

    /// `return verdict` for a decision (0 deny; complain mode allows).
    pub fn ret(&mut self, verdict: Verdict) {
        self.push(Insn::mov64_imm(R0, if verdict == Verdict::Deny { 0 } else { 1 }));
        self.push(Insn::exit());
    }

    pub fn allow(&mut self) {
        self.push(Insn::mov64_imm(R0, 1));
        self.push(Insn::exit());
    }

    pub fn object(&mut self, kind: ObjectKind, len: u16) {
        self.extend(audit::store_object(R6, kind, len));
    }

    /// Compares `pattern` with the bytes at `base + off`: 8-, 4-, 2- and
    /// 1-byte chunks at constant offsets; any difference jumps to `miss`,
    /// equality falls through. Clobbers r1, r2.
    pub fn compare_bytes(&mut self, base: Reg, off: usize, pattern: &[u8], miss: &str) {
        let mut i = 0usize;
        while i < pattern.len() {
            let rest = pattern.len() - i;
            let o = (off + i) as i16;
            if rest >= 8 {
                let v = i64::from_le_bytes(pattern[i..i + 8].try_into().expect("8 bytes"));
                self.push(Insn::ldx_dw(R1, base, o));
                self.push(Insn::ld_imm64(R2, v));
                self.push(Insn::jne_reg(R1, R2, miss));
                i += 8;
            } else if rest >= 4 {
                let v = i32::from_le_bytes(pattern[i..i + 4].try_into().expect("4 bytes"));
                self.push(Insn::ldx_w(R1, base, o));
                self.push(Insn::jne32_imm(R1, v, miss));
                i += 4;
            } else if rest >= 2 {
                let v = u16::from_le_bytes(pattern[i..i + 2].try_into().expect("2 bytes"));
                self.push(Insn::ldx_h(R1, base, o));
                self.push(Insn::jne_imm(R1, i32::from(v), miss));
                i += 2;
            } else {
                self.push(Insn::ldx_b(R1, base, o));
                self.push(Insn::jne_imm(R1, i32::from(pattern[i]), miss));
                i += 1;
            }
        }
    }

    pub fn finish(self) -> LsmProgram {
        assert!(self.label.is_none(), "a label was set after the last instruction");
        LsmProgram { hook: self.hook, insns: self.insns, field_relocs: self.relocs }
    }
}
