//! Listings in the syntax of `bpftool prog dump xlated` (the kernel's
//! `kernel/bpf/disasm.c`), because that is the audit format people already
//! read and what the kernel shows for a loaded program:
//!
//! ```text
//!    0: (61) r2 = *(u32 *)(r1 +0)
//!    1: (15) if r2 == 0x2 goto pc+3  ; policy.yaml:12
//!    2: (18) r1 = map[id:audit_events]
//!    4: (85) call bpf_map_lookup_elem#1
//!    5: (95) exit
//! ```
//!
//! Indices count slots (an `LD_IMM64` takes two), like bpftool. Where
//! bpftool prints kernel-side numbers the listing prints what the compiler
//! knows instead: `map[id:<symbol>]` for a map referenced by symbol, and
//! `call <helper>#<helper id>` where bpftool prints the address offset the
//! kernel patched in.

use super::decode::decode_raw;
use super::encode::Encoded;
use super::insn::{AluOp, AtomicOp, ByteOrder, CallTarget, JmpOp, KfuncRef, MapRef, Op, Size, Source, Target, Width};
use super::opcode::RawInsn;
use super::BpfError;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One instruction of a listing, for `--json` output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Line {
    /// Slot index.
    pub index: usize,
    /// The opcode byte.
    pub opcode: u8,
    /// `(b7) r0 = 0`, as bpftool's `disasm` field.
    pub text: String,
    /// The policy file and line this instruction implements.
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// The listing of an encoded program, with map and kfunc symbols and
/// policy lines.
pub fn listing(enc: &Encoded) -> Result<Vec<Line>, BpfError> {
    let maps: BTreeMap<usize, &str> = enc.map_relocs.iter().map(|r| (r.slot, r.map.as_str())).collect();
    let kfuncs: BTreeMap<usize, &str> = enc.kfunc_relocs.iter().map(|r| (r.slot, r.name.as_str())).collect();
    let mut lines = listing_raw(&enc.insns)?;
    for l in &mut lines {
        if let Some(loc) = enc.lines.get(&l.index) {
            l.file = Some(loc.file.to_string());
            l.line = Some(loc.line);
        }
        if let Some(name) = maps.get(&l.index) {
            l.text = format!("({:02x}) r{} = map[id:{name}]", l.opcode, enc.insns[l.index].dst);
        }
        if let Some(name) = kfuncs.get(&l.index) {
            l.text = format!("({:02x}) call {name}#0", l.opcode);
        }
    }
    Ok(lines)
}

/// The listing of raw slots (no symbols, no lines).
pub fn listing_raw(raw: &[RawInsn]) -> Result<Vec<Line>, BpfError> {
    let mut slot = 0;
    let mut out = Vec::new();
    for insn in decode_raw(raw)? {
        let opcode = raw[slot].code;
        out.push(Line {
            index: slot,
            opcode,
            text: format!("({opcode:02x}) {}", text(&insn.op, None)),
            file: None,
            line: None,
        });
        slot += insn.op.slots();
    }
    Ok(out)
}

/// Renders a listing: one line per instruction, `; file:line` appended
/// where the instruction has a policy position.
pub fn render(lines: &[Line]) -> String {
    let mut out = String::new();
    for l in lines {
        let r = match (&l.file, l.line) {
            (Some(file), Some(line)) => writeln!(out, "{:4}: {:<40}; {file}:{line}", l.index, l.text),
            _ => writeln!(out, "{:4}: {}", l.index, l.text),
        };
        r.expect("writing to a String");
    }
    out
}

/// Disassembles an encoded program to text in one call.
pub fn disassemble(enc: &Encoded) -> Result<String, BpfError> {
    Ok(render(&listing(enc)?))
}

fn prefix(width: Width) -> char {
    match width {
        Width::W32 => 'w',
        Width::W64 => 'r',
    }
}

fn ty(size: Size) -> &'static str {
    match size {
        Size::B => "u8",
        Size::H => "u16",
        Size::W => "u32",
        Size::DW => "u64",
    }
}

fn alu_str(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "+=",
        AluOp::Sub => "-=",
        AluOp::Mul => "*=",
        AluOp::Div => "/=",
        AluOp::Or => "|=",
        AluOp::And => "&=",
        AluOp::Lsh => "<<=",
        AluOp::Rsh => ">>=",
        AluOp::Mod => "%=",
        AluOp::Xor => "^=",
        AluOp::Mov => "=",
        AluOp::Arsh => "s>>=",
    }
}

fn jmp_str(op: JmpOp) -> &'static str {
    match op {
        JmpOp::Jeq => "==",
        JmpOp::Jgt => ">",
        JmpOp::Jge => ">=",
        JmpOp::Jset => "&",
        JmpOp::Jne => "!=",
        JmpOp::Jsgt => "s>",
        JmpOp::Jsge => "s>=",
        JmpOp::Jlt => "<",
        JmpOp::Jle => "<=",
        JmpOp::Jslt => "s<",
        JmpOp::Jsle => "s<=",
    }
}

/// The text after `(xx) ` for one operation with numeric targets; `map`
/// names the map of an `LdMap`.
pub fn text(op: &Op, map: Option<&str>) -> String {
    let target = |t: &Target| match t {
        Target::Offset(off) => format!("pc{off:+}"),
        // Only for instructions that were never encoded.
        Target::Label(l) => format!("<{l}>"),
    };
    match op {
        Op::Alu { width, op, dst, src } => {
            let p = prefix(*width);
            match src {
                Source::Imm(imm) => format!("{p}{} {} {imm}", dst.num(), alu_str(*op)),
                Source::Reg(s) => format!("{p}{} {} {p}{}", dst.num(), alu_str(*op), s.num()),
            }
        }
        Op::Neg { width, dst } => format!("{p}{d} = -{p}{d}", p = prefix(*width), d = dst.num()),
        Op::Endian { order, bits, dst } => {
            let name = match order {
                ByteOrder::ToLe => "le",
                ByteOrder::ToBe => "be",
                ByteOrder::Swap => "bswap",
            };
            format!("{dst} = {name}{bits} {dst}")
        }
        Op::Ja { target: t } => format!("goto {}", target(t)),
        Op::Jmp { width, op, dst, src, target: t } => {
            let p = prefix(*width);
            let rhs = match src {
                Source::Imm(imm) => format!("{:#x}", *imm as u32),
                Source::Reg(s) => format!("{p}{}", s.num()),
            };
            format!("if {p}{} {} {rhs} goto {}", dst.num(), jmp_str(*op), target(t))
        }
        Op::Call(CallTarget::Helper(h)) => format!("call {}#{}", h.name().unwrap_or("unknown"), h.id()),
        Op::Call(CallTarget::Subprog(t)) => format!("call {}", target(t)),
        Op::Call(CallTarget::Kfunc(KfuncRef::Symbol(name))) => format!("call {name}#0"),
        Op::Call(CallTarget::Kfunc(KfuncRef::BtfId { btf_id, .. })) => format!("call kernel-function#{btf_id}"),
        Op::Exit => "exit".to_string(),
        Op::LdImm64 { dst, imm } => format!("{dst} = {:#x}", *imm as u64),
        Op::LdMap { dst, map: m } => match (map, m) {
            (Some(name), _) => format!("{dst} = map[id:{name}]"),
            (None, MapRef::Symbol(name)) => format!("{dst} = map[id:{name}]"),
            (None, MapRef::Fd(fd)) => format!("{dst} = map[fd:{fd}]"),
        },
        Op::Load { size, dst, src, off } => format!("{dst} = *({} *)({src} {off:+})", ty(*size)),
        Op::Store { size, dst, src, off } => format!("*({} *)({dst} {off:+}) = {src}", ty(*size)),
        Op::StoreImm { size, dst, off, imm } => format!("*({} *)({dst} {off:+}) = {imm}", ty(*size)),
        Op::Atomic { size, op, dst, src, off } => {
            let mem = format!("({} *)({dst} {off:+})", ty(*size));
            let bits = if *size == Size::DW { "64" } else { "" };
            match op {
                AtomicOp::Add => format!("lock *{mem} += {src}"),
                AtomicOp::Or => format!("lock *{mem} |= {src}"),
                AtomicOp::And => format!("lock *{mem} &= {src}"),
                AtomicOp::Xor => format!("lock *{mem} ^= {src}"),
                AtomicOp::FetchAdd => format!("{src} = atomic{bits}_fetch_add({mem}, {src})"),
                AtomicOp::FetchOr => format!("{src} = atomic{bits}_fetch_or({mem}, {src})"),
                AtomicOp::FetchAnd => format!("{src} = atomic{bits}_fetch_and({mem}, {src})"),
                AtomicOp::FetchXor => format!("{src} = atomic{bits}_fetch_xor({mem}, {src})"),
                AtomicOp::Xchg => format!("{src} = atomic{bits}_xchg({mem}, {src})"),
                AtomicOp::CmpXchg => format!("r0 = atomic{bits}_cmpxchg({mem}, r0, {src})"),
            }
        }
    }
}
