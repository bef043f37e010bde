//! The eBPF wire format: opcode bit fields and the 8-byte `struct bpf_insn`
//! (Documentation/bpf/standardization/instruction-set.rst,
//! include/uapi/linux/bpf.h). Kept apart from the logical [`Insn`] so that
//! the encoder and decoder share one table of numbers.
//!
//! [`Insn`]: super::insn::Insn

use super::insn::{AluOp, AtomicOp, JmpOp, Size};

// Instruction classes (low 3 bits).
pub const LD: u8 = 0x00;
pub const LDX: u8 = 0x01;
pub const ST: u8 = 0x02;
pub const STX: u8 = 0x03;
pub const ALU: u8 = 0x04;
pub const JMP: u8 = 0x05;
pub const JMP32: u8 = 0x06;
pub const ALU64: u8 = 0x07;

// Load/store size (bits 3-4) and mode (bits 5-7).
pub const SIZE_W: u8 = 0x00;
pub const SIZE_H: u8 = 0x08;
pub const SIZE_B: u8 = 0x10;
pub const SIZE_DW: u8 = 0x18;
pub const MODE_IMM: u8 = 0x00;
pub const MODE_MEM: u8 = 0x60;
pub const MODE_ATOMIC: u8 = 0xc0;

// ALU and JMP: source bit and operation (bits 4-7).
pub const SRC_K: u8 = 0x00;
pub const SRC_X: u8 = 0x08;
pub const OP_NEG: u8 = 0x80;
pub const OP_END: u8 = 0xd0;
pub const OP_JA: u8 = 0x00;
pub const OP_CALL: u8 = 0x80;
pub const OP_EXIT: u8 = 0x90;

/// `BPF_FETCH`: the atomic op also returns the old value in `src`.
pub const ATOMIC_FETCH: i32 = 0x01;
/// `BPF_XCHG`.
pub const ATOMIC_XCHG: i32 = 0xe0 | ATOMIC_FETCH;
/// `BPF_CMPXCHG`.
pub const ATOMIC_CMPXCHG: i32 = 0xf0 | ATOMIC_FETCH;

/// `src_reg` of `LD_IMM64`: `imm` is a map fd (`BPF_PSEUDO_MAP_FD`).
pub const PSEUDO_MAP_FD: u8 = 1;
/// `src_reg` of a call: `imm` is a pc-relative subprogram offset.
pub const PSEUDO_CALL: u8 = 1;
/// `src_reg` of a call: `imm` is a kernel function's BTF id.
pub const PSEUDO_KFUNC_CALL: u8 = 2;

/// `BPF_LD | BPF_IMM | BPF_DW`: the only two-slot instruction.
pub const LD_IMM64: u8 = LD | MODE_IMM | SIZE_DW;

/// Size of one instruction slot in bytes.
pub const INSN_SIZE: usize = 8;

/// One instruction slot exactly as the kernel reads it (`struct bpf_insn`,
/// little-endian: `dst_reg` is the low nibble of the register byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RawInsn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl RawInsn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> RawInsn {
        RawInsn { code, dst, src, off, imm }
    }

    pub fn class(self) -> u8 {
        self.code & 0x07
    }

    /// The 8 bytes of this slot (bpfel).
    pub fn to_bytes(self) -> [u8; INSN_SIZE] {
        let mut b = [0u8; INSN_SIZE];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }

    pub fn from_bytes(b: [u8; INSN_SIZE]) -> RawInsn {
        RawInsn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Concatenates slots into the byte string `BPF_PROG_LOAD` and ELF sections take.
pub fn to_bytes(insns: &[RawInsn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.to_bytes()).collect()
}

/// `BPF_OP` bits of each two-operand ALU operation. The decoder searches
/// these same tables, so the two directions cannot disagree.
pub const ALU_OPS: [(AluOp, u8); 12] = [
    (AluOp::Add, 0x00),
    (AluOp::Sub, 0x10),
    (AluOp::Mul, 0x20),
    (AluOp::Div, 0x30),
    (AluOp::Or, 0x40),
    (AluOp::And, 0x50),
    (AluOp::Lsh, 0x60),
    (AluOp::Rsh, 0x70),
    (AluOp::Mod, 0x90),
    (AluOp::Xor, 0xa0),
    (AluOp::Mov, 0xb0),
    (AluOp::Arsh, 0xc0),
];

/// `BPF_OP` bits of each conditional jump.
pub const JMP_OPS: [(JmpOp, u8); 11] = [
    (JmpOp::Jeq, 0x10),
    (JmpOp::Jgt, 0x20),
    (JmpOp::Jge, 0x30),
    (JmpOp::Jset, 0x40),
    (JmpOp::Jne, 0x50),
    (JmpOp::Jsgt, 0x60),
    (JmpOp::Jsge, 0x70),
    (JmpOp::Jlt, 0xa0),
    (JmpOp::Jle, 0xb0),
    (JmpOp::Jslt, 0xc0),
    (JmpOp::Jsle, 0xd0),
];

/// `BPF_SIZE` bits of each access size.
pub const SIZES: [(Size, u8); 4] = [(Size::W, SIZE_W), (Size::H, SIZE_H), (Size::B, SIZE_B), (Size::DW, SIZE_DW)];

/// `imm` of each atomic operation.
pub const ATOMIC_OPS: [(AtomicOp, i32); 10] = [
    (AtomicOp::Add, 0x00),
    (AtomicOp::Or, 0x40),
    (AtomicOp::And, 0x50),
    (AtomicOp::Xor, 0xa0),
    (AtomicOp::FetchAdd, ATOMIC_FETCH),
    (AtomicOp::FetchOr, 0x40 | ATOMIC_FETCH),
    (AtomicOp::FetchAnd, 0x50 | ATOMIC_FETCH),
    (AtomicOp::FetchXor, 0xa0 | ATOMIC_FETCH),
    (AtomicOp::Xchg, ATOMIC_XCHG),
    (AtomicOp::CmpXchg, ATOMIC_CMPXCHG),
];

/// Looks `key` up in one of the tables above (they are all short).
pub fn lookup<K: PartialEq + Copy, V: PartialEq + Copy>(table: &[(K, V)], key: K) -> V {
    table.iter().find(|(k, _)| *k == key).map(|(_, v)| *v).expect("every variant is in its table")
}

/// The reverse of [`lookup`].
pub fn reverse<K: PartialEq + Copy, V: PartialEq + Copy>(table: &[(K, V)], value: V) -> Option<K> {
    table.iter().find(|(_, v)| *v == value).map(|(k, _)| *k)
}
