//! `lsm_cgroup/file_open`: the deny carve-outs of the filesystem rules
//! (semantics in the module docs of [`super`]).
//!
//! Registers: r7 = `struct file *`, r8 = `f_mode`, r9 = the path buffer;
//! r1-r5 are scratch.

use super::{FieldReloc, Hook, KernelField, LsmError, LsmProgram, PATH_BUF, PATH_MAP};
use crate::bpf::{Helper, Insn, Reg::*, SourceLoc};
use crate::netprog::Locator;
use phantom_dsl::ir::{Access, Effect, FsPolicy, FsRule};

pub const FMODE_READ: u32 = 0x1;
pub const FMODE_WRITE: u32 = 0x2;
pub const FMODE_EXEC: u32 = 0x20;
pub const FMODE_CREATED: u32 = 0x10_0000;

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

/// Emits instructions, each tagged with a policy position.
struct Emitter {
    insns: Vec<Insn>,
    relocs: Vec<FieldReloc>,
    loc: Option<SourceLoc>,
}

impl Emitter {
    fn push(&mut self, i: Insn) {
        let i = match &self.loc {
            Some(l) => i.at(l.clone()),
            None => i,
        };
        self.insns.push(i);
    }

    fn field(&mut self, i: Insn, field: KernelField) {
        self.relocs.push(FieldReloc { insn: self.insns.len(), field });
        self.push(i);
    }
}

/// `None` when no deny rule restricts anything an open can do.
pub(super) fn program(fs: &FsPolicy, locator: &Locator) -> Result<Option<LsmProgram>, LsmError> {
    let rules: Vec<&FsRule> =
        fs.rules.iter().filter(|r| r.effect == Effect::Deny && access_mask(r.access.iter().copied()) != 0).collect();
    let Some(first) = rules.first() else { return Ok(None) };
    let mut e = Emitter { insns: Vec::new(), relocs: Vec::new(), loc: locator.loc(&first.origin) };

    // Prologue: the file, its mode, the buffer, the path.
    e.push(Insn::ldx_dw(R7, R1, 0)); // r7 = ctx[0] = struct file *
    e.field(Insn::ldx_w(R8, R7, 0), KernelField::FileMode); // r8 = file->f_mode
    e.push(Insn::st_w(R10, -4, 0)); // key 0
    e.push(Insn::mov64_reg(R2, R10));
    e.push(Insn::add64_imm(R2, -4));
    e.push(Insn::ld_map(R1, PATH_MAP));
    e.push(Insn::call(Helper::MapLookupElem));
    e.push(Insn::jeq_imm(R0, 0, "deny")); // cannot happen; fail closed
    e.push(Insn::mov64_reg(R9, R0));
    e.push(Insn::mov64_reg(R1, R7));
    e.field(Insn::add64_imm(R1, 0), KernelField::FilePath); // r1 = &file->f_path
    e.push(Insn::mov64_reg(R2, R9));
    e.push(Insn::mov64_imm(R3, PATH_BUF as i32));
    e.push(Insn::call(Helper::DPath));
    // Length limit: a path bpf_d_path cannot write (longer than the buffer)
    // is denied, never allowed.
    e.push(Insn::jslt_imm(R0, 0, "deny"));

    for (i, rule) in rules.iter().enumerate() {
        e.loc = locator.loc(&rule.origin);
        rule_block(&mut e, i, rule)?;
    }

    e.loc = locator.loc(&first.origin);
    e.push(Insn::mov64_imm(R0, 1).label(format!("rule{}_next", rules.len())));
    e.push(Insn::exit());
    e.push(Insn::mov64_imm(R0, 0).label("deny"));
    e.push(Insn::exit());
    Ok(Some(LsmProgram { hook: Hook::FileOpen, insns: e.insns, field_relocs: e.relocs }))
}

/// One deny rule: access test, prefix compare, boundary, `return 0`.
fn rule_block(e: &mut Emitter, i: usize, rule: &FsRule) -> Result<(), LsmError> {
    let next = format!("rule{}_next", i + 1);
    let hit = format!("rule{i}_deny");
    let mask = access_mask(rule.access.iter().copied());
    let pattern = rule.path.path.as_bytes();
    // The prefix and the boundary byte must lie inside the buffer, before
    // its last byte (bpf_d_path always leaves a NUL).
    let max = PATH_BUF as usize - 2;
    if pattern.len() > max {
        return Err(LsmError::PatternTooLong {
            pattern: rule.path.to_string(),
            line: rule.origin.line,
            len: pattern.len(),
            max,
        });
    }
    let first = e.insns.len();
    e.push(Insn::mov64_reg(R1, R8));
    e.push(Insn::and64_imm(R1, mask as i32));
    e.push(Insn::jeq_imm(R1, 0, next.as_str()));
    e.insns[first].meta.label = Some(format!("rule{i}_next"));

    // `/` (literal or glob) covers every path: no compare at all.
    let everything = pattern == b"/";
    if !everything {
        let mut off = 0usize;
        while off < pattern.len() {
            let rest = pattern.len() - off;
            let o = off as i16;
            if rest >= 8 {
                let v = i64::from_le_bytes(pattern[off..off + 8].try_into().expect("8 bytes"));
                e.push(Insn::ldx_dw(R1, R9, o));
                e.push(Insn::ld_imm64(R2, v));
                e.push(Insn::jne_reg(R1, R2, next.as_str()));
                off += 8;
            } else if rest >= 4 {
                let v = i32::from_le_bytes(pattern[off..off + 4].try_into().expect("4 bytes"));
                e.push(Insn::ldx_w(R1, R9, o));
                e.push(Insn::jne32_imm(R1, v, next.as_str()));
                off += 4;
            } else if rest >= 2 {
                let v = u16::from_le_bytes(pattern[off..off + 2].try_into().expect("2 bytes"));
                e.push(Insn::ldx_h(R1, R9, o));
                e.push(Insn::jne_imm(R1, i32::from(v), next.as_str()));
                off += 2;
            } else {
                e.push(Insn::ldx_b(R1, R9, o));
                e.push(Insn::jne_imm(R1, i32::from(pattern[off]), next.as_str()));
                off += 1;
            }
        }
        if !rule.path.prefix_glob {
            // Component boundary: the path ends here or continues below.
            let len = pattern.len() as i16;
            e.push(Insn::ldx_b(R1, R9, len));
            e.push(Insn::jeq_imm(R1, 0, hit.as_str()));
            e.push(Insn::jne_imm(R1, i32::from(b'/'), next.as_str()));
        }
    }
    let deny_at = e.insns.len();
    e.push(Insn::mov64_imm(R0, 0));
    e.insns[deny_at].meta.label = Some(hit);
    e.push(Insn::exit());
    Ok(())
}
