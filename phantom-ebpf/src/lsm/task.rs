//! `lsm_cgroup/ptrace_access_check` and `lsm_cgroup/task_kill`: a task in
//! the sandbox's cgroup may not ptrace (or read through ptrace access
//! checks, as `/proc/<pid>/mem` and `environ` do) or signal a task whose
//! cgroup v2 is another one.
//!
//! The target's cgroup id is `task->cgroups->dfl_cgrp->kn->id`, read by
//! direct loads through the hook's trusted `struct task_struct *` (the
//! verifier turns them into faulting-safe PROBE_MEM loads; a NULL on the
//! way counts as "outside"); the acting task's is
//! `bpf_get_current_cgroup_id()`, the same id of the same hierarchy.
//! Equality is the test: a task in a child cgroup of the sandbox counts as
//! outside (the runtime keeps a sandbox in one cgroup).
//!
//! Registers: r6 = record, r7 = ctx, r8 = target task, r9 = its cgroup id.

use super::emit::Emitter;
use super::{Hook, KernelField, LsmProgram};
use crate::audit::{self, ObjectKind, Site, Verdict};
use crate::bpf::{Helper, Insn, Reg::*, SourceLoc};

/// `ptrace_access_check(struct task_struct *child, unsigned int mode)`:
/// detail = mode; `task_kill(struct task_struct *p, struct kernel_siginfo
/// *info, int sig, const struct cred *cred)`: detail = sig.
pub(super) fn program(hook: Hook, site: Site, loc: Option<SourceLoc>, verdict: Verdict) -> LsmProgram {
    let detail_arg: i16 = match hook {
        Hook::PtraceAccessCheck => 1,
        Hook::TaskKill => 2,
        other => unreachable!("{other:?} is not a task hook"),
    };
    let mut e = Emitter::new(hook, loc);
    e.push(Insn::mov64_reg(R7, R1));
    e.scratch("nobuf");
    e.push(Insn::ldx_dw(R8, R7, 0)); // the target task
    e.push(Insn::ldx_dw(R1, R7, detail_arg * 8));
    e.push(Insn::stx_w(R6, audit::off::DETAIL, R1));
    e.field(Insn::ldx_w(R1, R8, 0), KernelField::TaskTgid);
    e.push(Insn::stx_w(R6, audit::off::OBJECT, R1));
    e.push(Insn::st_w(R6, audit::off::OBJECT + 4, 0));
    e.push(Insn::st_dw(R6, audit::off::OBJECT + 8, 0));
    e.object(ObjectKind::Task, 16);
    e.field(Insn::ldx_dw(R1, R8, 0), KernelField::TaskCgroups);
    e.push(Insn::jeq_imm(R1, 0, "outside"));
    e.field(Insn::ldx_dw(R1, R1, 0), KernelField::CssSetDflCgrp);
    e.push(Insn::jeq_imm(R1, 0, "outside"));
    e.field(Insn::ldx_dw(R1, R1, 0), KernelField::CgroupKn);
    e.push(Insn::jeq_imm(R1, 0, "outside"));
    e.field(Insn::ldx_dw(R9, R1, 0), KernelField::KernfsNodeId);
    e.push(Insn::stx_dw(R6, audit::off::OBJECT + 8, R9));
    e.push(Insn::call(Helper::GetCurrentCgroupId));
    e.push(Insn::jne_reg(R0, R9, "outside"));
    e.allow();
    e.label("outside");
    e.deny_at(site);
    e.label("nobuf");
    e.ret(verdict);
    e.record_tail(verdict);
    e.finish()
}
