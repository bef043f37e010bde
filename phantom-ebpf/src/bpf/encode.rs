//! `&[Insn]` -> 8-byte instruction slots.
//!
//! Two passes: the first gives every instruction its slot (`LD_IMM64`
//! takes two) and collects labels, the second resolves jump targets to
//! offsets relative to the next slot. Anything the encoder cannot place is
//! a hard error naming the label or instruction, never a silent zero.
//! Map and kfunc references by symbol become `imm = 0` plus a relocation
//! entry, which the ELF writer turns into ELF relocations (or which
//! [`Encoded::bind_map`] patches for a direct `BPF_PROG_LOAD`).

use super::insn::{ByteOrder, CallTarget, Insn, KfuncRef, MapRef, Op, Size, Source, SourceLoc, Target, Width};
use super::opcode::{self as oc, lookup, RawInsn};
use super::BpfError;
use std::collections::BTreeMap;

/// A `LD_IMM64` slot that must receive the fd (or ELF relocation) of `map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapReloc {
    pub slot: usize,
    pub map: String,
}

/// A call slot that must receive the BTF id of kernel function `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KfuncReloc {
    pub slot: usize,
    pub name: String,
}

/// An encoded program. Every index here is a slot index, the unit the
/// kernel, BTF line_info and bpftool count in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    pub insns: Vec<RawInsn>,
    /// The policy position of each slot that has one (first slot of
    /// `LD_IMM64` only).
    pub lines: BTreeMap<usize, SourceLoc>,
    pub map_relocs: Vec<MapReloc>,
    pub kfunc_relocs: Vec<KfuncReloc>,
    /// Label -> slot.
    pub labels: BTreeMap<String, usize>,
}

impl Encoded {
    /// Names of the maps the program references, sorted, once each.
    pub fn map_names(&self) -> Vec<&str> {
        let mut m: Vec<&str> = self.map_relocs.iter().map(|r| r.map.as_str()).collect();
        m.sort_unstable();
        m.dedup();
        m
    }

    /// The policy position of slot `slot`, or of the nearest slot before it
    /// that has one (what a verifier message at `slot` is about).
    pub fn loc_of_slot(&self, slot: usize) -> Option<&SourceLoc> {
        self.lines.range(..=slot).next_back().map(|(_, l)| l)
    }

    /// The program as `BPF_PROG_LOAD` and ELF sections take it.
    pub fn to_bytes(&self) -> Vec<u8> {
        oc::to_bytes(&self.insns)
    }

    /// Writes `fd` into every `LD_IMM64` that references `map`, for loading
    /// without an ELF object. Returns how many slots were patched; a map no
    /// instruction references is an error (a typo would otherwise load a
    /// program with a dangling `imm = 0`).
    pub fn bind_map(&mut self, map: &str, fd: i32) -> Result<usize, BpfError> {
        let mut n = 0;
        for r in self.map_relocs.iter().filter(|r| r.map == map) {
            self.insns[r.slot].imm = fd;
            n += 1;
        }
        if n == 0 {
            return Err(BpfError::UnknownMap { map: map.to_string() });
        }
        Ok(n)
    }
}

/// Encodes a program.
pub fn encode(prog: &[Insn]) -> Result<Encoded, BpfError> {
    let mut out = Encoded::default();
    let mut slots = Vec::with_capacity(prog.len());
    let mut label_insn: BTreeMap<&str, usize> = BTreeMap::new();
    let mut slot = 0usize;
    for (i, insn) in prog.iter().enumerate() {
        slots.push(slot);
        if let Some(label) = &insn.meta.label {
            if let Some(&first) = label_insn.get(label.as_str()) {
                return Err(BpfError::DuplicateLabel { label: label.clone(), first, second: i });
            }
            label_insn.insert(label, i);
            out.labels.insert(label.clone(), slot);
        }
        slot += insn.op.slots();
    }

    for (i, insn) in prog.iter().enumerate() {
        let here = slots[i];
        let offset = match target_of(&insn.op) {
            Some(Target::Offset(off)) => i64::from(*off),
            Some(Target::Label(label)) => match out.labels.get(label) {
                Some(&to) => to as i64 - (here as i64 + 1),
                None => return Err(BpfError::MissingLabel { label: label.clone(), insn: i }),
            },
            None => 0,
        };
        let (first, second) = raw_op(&insn.op, offset).map_err(|e| at_insn(e, i, target_of(&insn.op)))?;
        out.insns.push(first);
        out.insns.extend(second);
        if let Some(loc) = &insn.meta.loc {
            out.lines.insert(here, loc.clone());
        }
        match &insn.op {
            Op::LdMap { map: MapRef::Symbol(map), .. } => {
                out.map_relocs.push(MapReloc { slot: here, map: map.clone() })
            }
            Op::Call(CallTarget::Kfunc(KfuncRef::Symbol(name))) => {
                out.kfunc_relocs.push(KfuncReloc { slot: here, name: name.clone() })
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The target of a jump or subprogram call.
fn target_of(op: &Op) -> Option<&Target> {
    match op {
        Op::Ja { target } | Op::Jmp { target, .. } | Op::Call(CallTarget::Subprog(target)) => Some(target),
        _ => None,
    }
}

/// Fills in the instruction index (and the label, for jumps) of an error
/// raised by [`raw_op`], which knows neither.
fn at_insn(e: BpfError, insn: usize, target: Option<&Target>) -> BpfError {
    match e {
        BpfError::JumpOutOfRange { target: numeric, offset, .. } => {
            let target = match target {
                Some(Target::Label(label)) => format!("label `{label}`"),
                _ => numeric,
            };
            BpfError::JumpOutOfRange { target, insn, offset }
        }
        BpfError::InvalidOperand { what, .. } => BpfError::InvalidOperand { insn, what },
        other => other,
    }
}

fn class(width: Width, narrow: u8, wide: u8) -> u8 {
    match width {
        Width::W32 => narrow,
        Width::W64 => wide,
    }
}

fn jump_off(offset: i64) -> Result<i16, BpfError> {
    i16::try_from(offset).map_err(|_| BpfError::JumpOutOfRange { target: format!("pc{offset:+}"), insn: 0, offset })
}

/// One operation to its slot(s); `offset` is the resolved jump or call
/// offset. The second slot is `Some` only for `LD_IMM64`. Also used by the
/// decoder to check that what it read is the canonical encoding.
pub(super) fn raw_op(op: &Op, offset: i64) -> Result<(RawInsn, Option<RawInsn>), BpfError> {
    let one = |r: RawInsn| Ok((r, None));
    match op {
        Op::Alu { width, op, dst, src } => {
            let code = class(*width, oc::ALU, oc::ALU64) | lookup(&oc::ALU_OPS, *op);
            match src {
                Source::Imm(imm) => one(RawInsn::new(code | oc::SRC_K, dst.num(), 0, 0, *imm)),
                Source::Reg(src) => one(RawInsn::new(code | oc::SRC_X, dst.num(), src.num(), 0, 0)),
            }
        }
        Op::Neg { width, dst } => one(RawInsn::new(class(*width, oc::ALU, oc::ALU64) | oc::OP_NEG, dst.num(), 0, 0, 0)),
        Op::Endian { order, bits, dst } => {
            if !matches!(bits, 16 | 32 | 64) {
                return Err(BpfError::InvalidOperand {
                    insn: 0,
                    what: format!("byte swap of {bits} bits (16, 32 or 64)"),
                });
            }
            let code = match order {
                ByteOrder::ToLe => oc::ALU | oc::OP_END | oc::SRC_K,
                ByteOrder::ToBe => oc::ALU | oc::OP_END | oc::SRC_X,
                ByteOrder::Swap => oc::ALU64 | oc::OP_END | oc::SRC_K,
            };
            one(RawInsn::new(code, dst.num(), 0, 0, i32::from(*bits)))
        }
        Op::Ja { .. } => one(RawInsn::new(oc::JMP | oc::OP_JA, 0, 0, jump_off(offset)?, 0)),
        Op::Jmp { width, op, dst, src, .. } => {
            let code = class(*width, oc::JMP32, oc::JMP) | lookup(&oc::JMP_OPS, *op);
            let off = jump_off(offset)?;
            match src {
                Source::Imm(imm) => one(RawInsn::new(code | oc::SRC_K, dst.num(), 0, off, *imm)),
                Source::Reg(src) => one(RawInsn::new(code | oc::SRC_X, dst.num(), src.num(), off, 0)),
            }
        }
        Op::Call(target) => {
            let code = oc::JMP | oc::OP_CALL;
            match target {
                CallTarget::Helper(h) => one(RawInsn::new(code, 0, 0, 0, h.id())),
                CallTarget::Subprog(_) => {
                    let imm = i32::try_from(offset).map_err(|_| BpfError::JumpOutOfRange {
                        target: format!("pc{offset:+}"),
                        insn: 0,
                        offset,
                    })?;
                    one(RawInsn::new(code, 0, oc::PSEUDO_CALL, 0, imm))
                }
                CallTarget::Kfunc(KfuncRef::Symbol(_)) => one(RawInsn::new(code, 0, oc::PSEUDO_KFUNC_CALL, 0, 0)),
                CallTarget::Kfunc(KfuncRef::BtfId { btf_id, module }) => {
                    one(RawInsn::new(code, 0, oc::PSEUDO_KFUNC_CALL, *module, *btf_id))
                }
            }
        }
        Op::Exit => one(RawInsn::new(oc::JMP | oc::OP_EXIT, 0, 0, 0, 0)),
        Op::LdImm64 { dst, imm } => Ok((
            RawInsn::new(oc::LD_IMM64, dst.num(), 0, 0, *imm as i32),
            Some(RawInsn::new(0, 0, 0, 0, (*imm >> 32) as i32)),
        )),
        Op::LdMap { dst, map } => {
            let fd = match map {
                MapRef::Symbol(_) => 0,
                MapRef::Fd(fd) => *fd,
            };
            Ok((RawInsn::new(oc::LD_IMM64, dst.num(), oc::PSEUDO_MAP_FD, 0, fd), Some(RawInsn::default())))
        }
        Op::Load { size, dst, src, off } => {
            one(RawInsn::new(oc::LDX | oc::MODE_MEM | lookup(&oc::SIZES, *size), dst.num(), src.num(), *off, 0))
        }
        Op::Store { size, dst, src, off } => {
            one(RawInsn::new(oc::STX | oc::MODE_MEM | lookup(&oc::SIZES, *size), dst.num(), src.num(), *off, 0))
        }
        Op::StoreImm { size, dst, off, imm } => {
            one(RawInsn::new(oc::ST | oc::MODE_MEM | lookup(&oc::SIZES, *size), dst.num(), 0, *off, *imm))
        }
        Op::Atomic { size, op, dst, src, off } => {
            if !matches!(size, Size::W | Size::DW) {
                return Err(BpfError::InvalidOperand {
                    insn: 0,
                    what: format!("atomic {op:?} on {size:?} (W or DW only)"),
                });
            }
            let code = oc::STX | oc::MODE_ATOMIC | lookup(&oc::SIZES, *size);
            one(RawInsn::new(code, dst.num(), src.num(), *off, lookup(&oc::ATOMIC_OPS, *op)))
        }
    }
}
