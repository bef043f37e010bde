//! `lsm_cgroup/file_open`: the deny carve-outs of the filesystem rules and
//! the exec allow-list (semantics in the module docs of [`super`]).
//!
//! The path is matched by a compiled byte trie (`path_trie.rs` builds it,
//! `path_walk.rs` emits its walk); this file has the prologue, the key,
//! the denials and the layout.
//!
//! Registers: r6 = the record buffer, r7 = `struct file *` until
//! bpf_d_path, then the key's end (`&path[len]`), r8 = the access bits
//! (`f_mode`, `__FMODE_EXEC`), r9 = the path (the record's object part);
//! r1-r5 are scratch.

use super::emit::Emitter;
use super::path_trie::{self, Entry, Target};
use super::path_walk::{self, Locs};
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
    let exec_list: Vec<(&PathPattern, &Origin)> =
        exec.map(|e| e.allow.iter().map(|(p, o)| (p, o)).collect()).unwrap_or_default();
    // Entries in policy order (deny rules, exec list, the runtime's
    // command): the order of the lines trie nodes carry.
    let mut entries = Vec::new();
    let mut entry_locs = Vec::new();
    for (n, (_, r)) in rules.iter().enumerate() {
        entries.push(entry(&r.path, &r.origin, Target::Deny(n))?);
        entry_locs.push(locator.loc(&r.origin));
    }
    if exec.is_some() {
        let extra = exec_extra.iter().map(|p| (p, &Origin::NONE));
        for (p, o) in exec_list.iter().copied().chain(extra) {
            entries.push(entry(p, o, Target::Exec)?);
            entry_locs.push(locator.loc(o));
        }
    }
    let masks: Vec<u32> = rules.iter().map(|(_, r)| access_mask(r.access.iter().copied())).collect();
    let tree = path_trie::build(&entries, &masks, exec.is_some());

    let exec_origin = exec_list.first().map(|p| p.1);
    let first_origin = rules.first().map(|(_, r)| &r.origin).or(exec_origin).unwrap_or(&Origin::NONE);
    let default_loc = locator.loc(first_origin);
    let mut e = Emitter::new(Hook::FileOpen, default_loc.clone());

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
    // is denied, never allowed. r0 = len, its NUL included.
    e.push(Insn::jslt_imm(R0, 1, "too_long"));
    e.push(Insn::stx_h(R6, audit::off::OBJECT_LEN, R0));
    // The key: '/' over the NUL, a NUL after it (r7 = the key's end). The
    // bounds are the verifier's (bpf_d_path never exceeds its size): a
    // path that fills the buffer has no byte after it, and no pattern's
    // key reaches its last byte.
    e.push(Insn::jlt_imm(R0, PATH_BUF as i32, "key_short"));
    e.push(Insn::jgt_imm(R0, PATH_BUF as i32, "too_long"));
    e.push(Insn::mov64_reg(R7, R9));
    e.push(Insn::add64_reg(R7, R0));
    e.push(Insn::st_b(R7, -1, i32::from(b'/')));
    e.push(Insn::ja("walk"));
    e.label("key_short");
    e.push(Insn::mov64_reg(R7, R9));
    e.push(Insn::add64_reg(R7, R0));
    e.push(Insn::st_h(R7, -1, i32::from(b'/'))); // '/', then NUL
    e.label("walk");

    let rule_locs: Vec<_> = rules.iter().map(|(_, r)| locator.loc(&r.origin)).collect();
    let exec_loc = exec_origin.and_then(|o| locator.loc(o));
    let locs = Locs { entries: &entry_locs, rules: &rule_locs, exec: exec_loc.clone(), default: default_loc.clone() };
    let used = path_walk::emit(&mut e, &tree, &masks, &locs);

    for n in used.rules {
        let (index, rule) = rules[n];
        e.loc = locator.loc(&rule.origin).or(default_loc.clone());
        e.label(format!("deny{n}"));
        e.extend(audit::store_site(R6, site(&rule.origin, index as u32)));
        e.push(Insn::ja("path_deny"));
    }
    if used.exec {
        e.loc = exec_loc.or(default_loc.clone());
        e.label("exec_deny");
        e.extend(audit::store_site(R6, exec_origin.map_or(Site::NONE, |o| site(o, audit::NO_RULE))));
        e.push(Insn::ja("path_deny"));
    }

    e.loc = default_loc;
    e.label("allow");
    e.allow();
    e.label("too_long");
    e.push(Insn::st_h(R6, audit::off::OBJECT_LEN, 0));
    e.deny_at(site(first_origin, audit::NO_RULE));
    e.label("nobuf");
    e.ret(verdict);
    // A denial by path: the record carries the real path (NUL restored).
    e.label("path_deny");
    e.push(Insn::st_b(R7, -1, 0));
    e.record_tail(verdict);
    Ok(Some(e.finish()))
}

/// A pattern's trie entry, after the length check.
fn entry(p: &PathPattern, o: &Origin, target: Target) -> Result<Entry, LsmError> {
    check_len(p, o)?;
    let (key, strict) = path_trie::key_of(p);
    Ok(Entry { key, strict, target })
}

/// The pattern's key (with its `/`) must end before the buffer's last
/// byte, so that compares never reach past any path's key.
fn check_len(p: &PathPattern, o: &Origin) -> Result<(), LsmError> {
    let max = PATH_BUF as usize - 2;
    let len = p.path.len();
    if len > max {
        return Err(LsmError::PatternTooLong { pattern: p.to_string(), line: o.line, len, max });
    }
    Ok(())
}
