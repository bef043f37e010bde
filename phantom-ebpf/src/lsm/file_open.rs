//! `lsm_cgroup/file_open`: the deny carve-outs of the filesystem rules and
//! the exec allow-list (semantics in the module docs of [`super`]).
//!
//! Registers: r6 = the record buffer, r7 = `struct file *`, r8 = `f_mode`,
//! r9 = the path (the record's object part); r1-r5 are scratch.

use super::emit::Emitter;
use super::{Hook, KernelField, LsmError, LsmProgram};
use crate::audit::{self, ObjectKind, Site, Verdict};
use crate::bpf::{Helper, Insn, Reg::*};
use crate::netprog::Locator;
use phantom_dsl::ir::{Access, Effect, ExecPolicy, FsPolicy, Origin, PathPattern};

pub const FMODE_READ: u32 = 0x1;
pub const FMODE_WRITE: u32 = 0x2;
pub const FMODE_EXEC: u32 = 0x20;
pub const FMODE_CREATED: u32 = 0x10_0000;
/// The file is an overlayfs (or FUSE passthrough) backing file, opened by
/// the kernel on behalf of an open that file_open has already judged by
/// its visible path (Linux 6.6+; the backing path is relative to a layer
/// that is not in the opener's namespace, so it must not be judged again).
pub const FMODE_BACKING: u32 = 0x100_0000;

/// Size of the path buffer (`PATH_MAX`): the record's object part.
pub const PATH_BUF: u32 = audit::MAX_OBJECT as u32;

/// The `f_mode` bits that show an access at open; 0 for `remove`, which
/// an open never does.
pub fn access_mask(access: impl IntoIterator<Item = Access>) -> u32 {
    access
        .into_iter()
        .map(|a| match a {
            Access::Read => FMODE_READ,
            Access::Write => FMODE_WRITE,
            Access::Exec => FMODE_EXEC,
            Access::Create => FMODE_CREATED,
            Access::Remove => 0,
        })
        .fold(0, |m, b| m | b)
}

pub(super) fn site(o: &Origin, rule: u32) -> Site {
    if o.line == 0 {
        return Site { rule, ..Site::NONE };
    }
    Site { file: o.file.0, rule, line: o.line }
}

/// One path the program compares: the rule's pattern, its position.
#[derive(Clone, Copy)]
struct Pattern<'a> {
    path: &'a PathPattern,
    origin: &'a Origin,
}

/// `None` when no deny rule restricts anything an open can do and there is
/// no exec allow-list.
pub(super) fn program(
    fs: &FsPolicy,
    exec: Option<&ExecPolicy>,
    exec_extra: &[PathPattern],
    locator: &Locator,
    verdict: Verdict,
) -> Result<Option<LsmProgram>, LsmError> {
    let rules: Vec<(usize, &phantom_dsl::ir::FsRule)> = fs
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.effect == Effect::Deny && access_mask(r.access.iter().copied()) != 0)
        .collect();
    if rules.is_empty() && exec.is_none() {
        return Ok(None);
    }
    let exec_list: Vec<Pattern> =
        exec.map(|e| e.allow.iter().map(|(path, origin)| Pattern { path, origin }).collect()).unwrap_or_default();
    for p in rules.iter().map(|(_, r)| Pattern { path: &r.path, origin: &r.origin }).chain(exec_list.iter().copied()) {
        check_len(&p)?;
    }
    let exec_origin = exec_list.first().map(|p| p.origin);
    let first_origin = rules.first().map(|(_, r)| &r.origin).or(exec_origin).unwrap_or(&Origin::NONE);
    let mut e = Emitter::new(Hook::FileOpen, locator.loc(first_origin));

    // Prologue: the file, its mode, the record, the path.
    e.push(Insn::ldx_dw(R7, R1, 0)); // r7 = ctx[0] = struct file *
    e.field(Insn::ldx_w(R8, R7, 0), KernelField::FileMode); // r8 = file->f_mode
                                                            // Exec opens carry __FMODE_EXEC (0x20, = FMODE_EXEC) in f_flags, not
                                                            // in f_mode: r8 |= f_flags & 0x20.
    e.field(Insn::ldx_w(R1, R7, 0), KernelField::FileFlags);
    e.push(Insn::and32_imm(R1, FMODE_EXEC as i32));
    e.push(Insn::or64_reg(R8, R1));
    e.push(Insn::jset_imm(R8, FMODE_BACKING as i32, "allow"));
    e.scratch("nobuf");
    e.push(Insn::stx_w(R6, audit::off::DETAIL, R8));
    e.object(ObjectKind::Path, 0);
    e.push(Insn::mov64_reg(R9, R6));
    e.push(Insn::add64_imm(R9, audit::HEADER_LEN as i32));
    e.push(Insn::mov64_reg(R1, R7));
    e.field(Insn::add64_imm(R1, 0), KernelField::FilePath); // r1 = &file->f_path
    e.push(Insn::mov64_reg(R2, R9));
    e.push(Insn::mov64_imm(R3, PATH_BUF as i32));
    e.push(Insn::call(Helper::DPath));
    // Length limit: a path bpf_d_path cannot write (longer than the buffer)
    // is denied, never allowed.
    e.push(Insn::jslt_imm(R0, 0, "too_long"));
    e.push(Insn::stx_h(R6, audit::off::OBJECT_LEN, R0));

    for (n, (index, rule)) in rules.iter().enumerate() {
        e.loc = locator.loc(&rule.origin);
        let next = format!("rule{}", n + 1);
        let hit = format!("rule{n}_hit");
        e.label(format!("rule{n}"));
        e.push(Insn::mov64_reg(R1, R8));
        e.push(Insn::and64_imm(R1, access_mask(rule.access.iter().copied()) as i32));
        e.push(Insn::jeq_imm(R1, 0, next.as_str()));
        e.match_path(R9, 0, rule.path.path.as_bytes(), rule.path.prefix_glob, &next, &hit);
        e.label(hit);
        e.deny_at(site(&rule.origin, *index as u32));
    }
    e.label(format!("rule{}", rules.len()));

    if exec.is_some() {
        // Exec allow-list: an open with FMODE_EXEC must match an entry.
        e.loc = exec_origin.and_then(|o| locator.loc(o)).or(e.loc.take());
        e.push(Insn::mov64_reg(R1, R8));
        e.push(Insn::and64_imm(R1, FMODE_EXEC as i32));
        e.push(Insn::jeq_imm(R1, 0, "allow"));
        let extra = exec_extra.iter().map(|path| Pattern { path, origin: &Origin::NONE });
        for (j, p) in exec_list.iter().copied().chain(extra).enumerate() {
            if let Some(l) = locator.loc(p.origin) {
                e.loc = Some(l);
            }
            let miss = format!("exec{j}_miss");
            e.match_path(R9, 0, p.path.path.as_bytes(), p.path.prefix_glob, &miss, "allow");
            e.push(Insn::ja("allow"));
            e.label(miss);
        }
        e.loc = exec_origin.and_then(|o| locator.loc(o)).or(e.loc.take());
        e.deny_at(exec_origin.map_or(Site::NONE, |o| site(o, audit::NO_RULE)));
    }

    e.loc = locator.loc(first_origin);
    e.label("allow");
    e.allow();
    e.label("too_long");
    e.push(Insn::st_h(R6, audit::off::OBJECT_LEN, 0));
    e.deny_at(site(first_origin, audit::NO_RULE));
    e.label("nobuf");
    e.ret(verdict);
    e.record_tail(verdict);
    Ok(Some(e.finish()))
}

/// The prefix and the boundary byte must lie inside the buffer, before its
/// last byte (bpf_d_path always leaves a NUL).
fn check_len(p: &Pattern) -> Result<(), LsmError> {
    let max = PATH_BUF as usize - 2;
    let len = p.path.path.len();
    if len > max {
        return Err(LsmError::PatternTooLong { pattern: p.path.to_string(), line: p.origin.line, len, max });
    }
    Ok(())
}
