//! A readable listing of a cBPF filter, in the spirit of `bpftool prog dump
//! xlated`: index, opcode, meaning, and the policy line.
//!
//! ```text
//!    0: (20) A = arch                          ; line 7
//!    1: (15) if A != 0xc000003e goto 5         ; line 7
//! ```

use super::insn::Insn;
use super::{ret, AUDIT_ARCH_AARCH64, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};
use phantom_dsl::values::errno_name;
use std::fmt::Write;

/// One instruction of a listing, for `--json` output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListingLine {
    pub index: usize,
    pub code: u16,
    pub text: String,
    pub line: Option<u32>,
}

/// The listing as data; `lines` may be shorter than `insns`.
pub fn listing(insns: &[Insn], lines: &[Option<u32>]) -> Vec<ListingLine> {
    insns
        .iter()
        .enumerate()
        .map(|(pc, insn)| ListingLine {
            index: pc,
            code: insn.code,
            text: describe(pc, insn),
            line: lines.get(pc).copied().flatten(),
        })
        .collect()
}

/// One line per instruction; `lines` may be shorter than `insns` (missing
/// entries print no line).
pub fn disassemble(insns: &[Insn], lines: &[Option<u32>]) -> String {
    let mut out = String::new();
    for l in listing(insns, lines) {
        let (pc, code, text) = (l.index, l.code, l.text);
        match l.line {
            Some(line) => writeln!(out, "{pc:4}: ({code:02x}) {text:<36} ; line {line}"),
            None => writeln!(out, "{pc:4}: ({code:02x}) {text}"),
        }
        .expect("writing to a String");
    }
    out
}

fn field(off: u32) -> String {
    match off {
        0 => "nr".into(),
        4 => "arch".into(),
        8 => "ip.lo".into(),
        12 => "ip.hi".into(),
        16..=63 => format!("args[{}].{}", (off - 16) / 8, if (off - 16) % 8 == 4 { "hi" } else { "lo" }),
        _ => format!("data[{off}]"),
    }
}

fn constant(k: u32) -> String {
    match k {
        AUDIT_ARCH_X86_64 => "AUDIT_ARCH_X86_64".into(),
        AUDIT_ARCH_AARCH64 => "AUDIT_ARCH_AARCH64".into(),
        AUDIT_ARCH_I386 => "AUDIT_ARCH_I386".into(),
        0..=9 => k.to_string(),
        _ => format!("{k:#x}"),
    }
}

/// A `SECCOMP_RET_*` value by name.
pub fn ret_name(k: u32) -> String {
    let data = k & ret::DATA;
    match k & ret::ACTION_FULL {
        ret::KILL_PROCESS => "KILL_PROCESS".into(),
        ret::KILL_THREAD => "KILL_THREAD".into(),
        ret::TRAP => "TRAP".into(),
        ret::ERRNO => match u16::try_from(data).ok().and_then(errno_name) {
            Some(name) => format!("ERRNO({name})"),
            None => format!("ERRNO({data})"),
        },
        ret::USER_NOTIF => "USER_NOTIF".into(),
        ret::LOG => "LOG".into(),
        ret::ALLOW => "ALLOW".into(),
        _ => format!("{k:#x}"),
    }
}

fn describe(pc: usize, i: &Insn) -> String {
    let at = |off: u8| pc + 1 + usize::from(off);
    let k = constant(i.k);
    let cond = |yes: &str, no: &str| -> String {
        match (i.jt, i.jf) {
            (_, 0) => format!("if A {yes} {k} goto {}", at(i.jt)),
            (0, _) => format!("if A {no} {k} goto {}", at(i.jf)),
            _ => format!("if A {yes} {k} goto {} else goto {}", at(i.jt), at(i.jf)),
        }
    };
    match i.code {
        0x20 => format!("A = {}", field(i.k)),
        0x00 => format!("A = {k}"),
        0x01 => format!("X = {k}"),
        0x05 => format!("goto {}", pc + 1 + i.k as usize),
        0x06 => format!("return {}", ret_name(i.k)),
        0x16 => "return A".into(),
        0x15 => cond("==", "!="),
        0x25 => cond(">", "<="),
        0x35 => cond(">=", "<"),
        0x45 => match (i.jt, i.jf) {
            (_, 0) => format!("if A & {k} goto {}", at(i.jt)),
            (0, _) => format!("if !(A & {k}) goto {}", at(i.jf)),
            _ => format!("if A & {k} goto {} else goto {}", at(i.jt), at(i.jf)),
        },
        0x54 => format!("A &= {k}"),
        0x44 => format!("A |= {k}"),
        0x07 => "X = A".into(),
        0x87 => "A = X".into(),
        0x60 => format!("A = M[{}]", i.k),
        0x61 => format!("X = M[{}]", i.k),
        0x02 => format!("M[{}] = A", i.k),
        0x03 => format!("M[{}] = X", i.k),
        c => format!("raw code={c:#06x} jt={} jf={} k={:#x}", i.jt, i.jf, i.k),
    }
}
