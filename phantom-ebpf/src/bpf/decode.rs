//! Bytes -> logical instructions, the inverse of [`encode`](super::encode).
//!
//! Jump and call targets come back as numeric offsets, map references as
//! `MapRef::Fd(imm)` and kfuncs as BTF ids: the symbols live in ELF
//! relocations, not in the bytes. The decoder is strict: it accepts only
//! encodings that [`encode`](super::encode::encode) would produce for the
//! decoded instruction (every unused field zero), so `encode(decode(b)) ==
//! b` for every `b` it accepts. Forms Phantom does not emit (legacy packet
//! loads, sign-extending loads and moves, signed division, `gotol`,
//! `may_goto`, `LD_IMM64` map-value and BTF-id pseudos) are reported as
//! unsupported rather than misread.

use super::encode::raw_op;
use super::helper::Helper;
use super::insn::{ByteOrder, CallTarget, Insn, KfuncRef, MapRef, Op, Reg, Source, Target, Width};
use super::opcode::{self as oc, reverse, RawInsn, INSN_SIZE};
use super::BpfError;

/// Splits a byte string into instruction slots.
pub fn raw_from_bytes(bytes: &[u8]) -> Result<Vec<RawInsn>, BpfError> {
    if !bytes.len().is_multiple_of(INSN_SIZE) {
        return Err(BpfError::TruncatedProgram { len: bytes.len() });
    }
    Ok(bytes
        .chunks_exact(INSN_SIZE)
        .map(|c| RawInsn::from_bytes(c.try_into().expect("chunks_exact gives 8 bytes")))
        .collect())
}

/// Decodes a program from its bytes.
pub fn decode(bytes: &[u8]) -> Result<Vec<Insn>, BpfError> {
    decode_raw(&raw_from_bytes(bytes)?)
}

/// Decodes instruction slots; one [`Insn`] per instruction (an `LD_IMM64`
/// consumes two slots).
pub fn decode_raw(raw: &[RawInsn]) -> Result<Vec<Insn>, BpfError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut slot = 0;
    while slot < raw.len() {
        let insn = raw[slot];
        let next = if insn.code == oc::LD_IMM64 {
            Some(*raw.get(slot + 1).ok_or(BpfError::IncompleteLdImm64 { slot })?)
        } else {
            None
        };
        let (op, offset) = decode_op(slot, insn, next)?;
        let canonical = raw_op(&op, offset).map_err(|_| non_canonical(slot, insn))?;
        if canonical != (insn, next) {
            return Err(match next {
                Some(second) if Some(second) != canonical.1 && canonical.0 == insn => {
                    BpfError::IncompleteLdImm64 { slot }
                }
                _ => non_canonical(slot, insn),
            });
        }
        slot += op.slots();
        out.push(Insn::new(op));
    }
    Ok(out)
}

fn non_canonical(slot: usize, i: RawInsn) -> BpfError {
    BpfError::NonCanonical { slot, code: i.code, src: i.src, off: i.off, imm: i.imm }
}

fn reg(slot: usize, n: u8) -> Result<Reg, BpfError> {
    Reg::from_num(n).ok_or(BpfError::InvalidRegister { slot, reg: n })
}

/// The operation in `insn` (and `next`, for `LD_IMM64`) plus the jump or
/// call offset it carries, for the canonical-encoding check.
fn decode_op(slot: usize, insn: RawInsn, next: Option<RawInsn>) -> Result<(Op, i64), BpfError> {
    let unsupported = Err(BpfError::UnsupportedOpcode { slot, code: insn.code });
    let dst = || reg(slot, insn.dst);
    let src_operand = || -> Result<Source, BpfError> {
        Ok(if insn.code & oc::SRC_X != 0 { Source::Reg(reg(slot, insn.src)?) } else { Source::Imm(insn.imm) })
    };
    let size = reverse(&oc::SIZES, insn.code & 0x18).expect("all four size encodings are in the table");
    let mode = insn.code & 0xe0;
    let op = match insn.class() {
        c @ (oc::ALU | oc::ALU64) => {
            let width = if c == oc::ALU { Width::W32 } else { Width::W64 };
            match insn.code & 0xf0 {
                oc::OP_NEG => Op::Neg { width, dst: dst()? },
                oc::OP_END => {
                    let order = match (c, insn.code & oc::SRC_X) {
                        (oc::ALU, 0) => ByteOrder::ToLe,
                        (oc::ALU, _) => ByteOrder::ToBe,
                        _ => ByteOrder::Swap,
                    };
                    let bits = u8::try_from(insn.imm).ok().filter(|b| matches!(b, 16 | 32 | 64));
                    Op::Endian { order, bits: bits.ok_or_else(|| non_canonical(slot, insn))?, dst: dst()? }
                }
                bits => match reverse(&oc::ALU_OPS, bits) {
                    Some(op) => Op::Alu { width, op, dst: dst()?, src: src_operand()? },
                    None => return unsupported,
                },
            }
        }
        c @ (oc::JMP | oc::JMP32) => match (c, insn.code & 0xf0) {
            (oc::JMP, oc::OP_JA) => return Ok((Op::Ja { target: Target::Offset(insn.off.into()) }, insn.off.into())),
            (oc::JMP, oc::OP_EXIT) => Op::Exit,
            (oc::JMP, oc::OP_CALL) => {
                let call = match insn.src {
                    0 => CallTarget::Helper(Helper::from_id(insn.imm)),
                    oc::PSEUDO_CALL => {
                        let t = CallTarget::Subprog(Target::Offset(insn.imm));
                        return Ok((Op::Call(t), insn.imm.into()));
                    }
                    oc::PSEUDO_KFUNC_CALL => CallTarget::Kfunc(KfuncRef::BtfId { btf_id: insn.imm, module: insn.off }),
                    _ => return unsupported,
                };
                Op::Call(call)
            }
            (_, bits) => match reverse(&oc::JMP_OPS, bits) {
                Some(op) => {
                    let width = if c == oc::JMP32 { Width::W32 } else { Width::W64 };
                    let target = Target::Offset(insn.off.into());
                    return Ok((Op::Jmp { width, op, dst: dst()?, src: src_operand()?, target }, insn.off.into()));
                }
                None => return unsupported,
            },
        },
        oc::LD if insn.code == oc::LD_IMM64 => {
            let hi = next.ok_or(BpfError::IncompleteLdImm64 { slot })?.imm;
            match insn.src {
                0 => Op::LdImm64 { dst: dst()?, imm: (i64::from(hi) << 32) | i64::from(insn.imm as u32) },
                oc::PSEUDO_MAP_FD => Op::LdMap { dst: dst()?, map: MapRef::Fd(insn.imm) },
                _ => return unsupported,
            }
        }
        oc::LDX if mode == oc::MODE_MEM => Op::Load { size, dst: dst()?, src: reg(slot, insn.src)?, off: insn.off },
        oc::STX if mode == oc::MODE_MEM => Op::Store { size, dst: dst()?, src: reg(slot, insn.src)?, off: insn.off },
        oc::STX if mode == oc::MODE_ATOMIC => match reverse(&oc::ATOMIC_OPS, insn.imm) {
            Some(op) => Op::Atomic { size, op, dst: dst()?, src: reg(slot, insn.src)?, off: insn.off },
            None => return unsupported,
        },
        oc::ST if mode == oc::MODE_MEM => Op::StoreImm { size, dst: dst()?, off: insn.off, imm: insn.imm },
        _ => return unsupported,
    };
    Ok((op, 0))
}
