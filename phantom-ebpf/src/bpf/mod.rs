//! The eBPF assembler: Phantom emits eBPF bytecode itself, without clang or
//! LLVM, so that per-policy programs are cheap to build and every
//! instruction maps back to a policy line.
//!
//! | module | role |
//! |---|---|
//! | [`insn`] | the logical instruction ([`Insn`] = [`Op`] + [`Meta`]), registers, symbolic targets |
//! | [`build`] | typed builders: `Insn::mov64_imm(R0, 2)`, `Insn::jeq_imm(R1, 2, "out")` |
//! | [`helper`] | helper ids (`enum bpf_func_id`) |
//! | [`encode`] | `&[Insn]` -> 8-byte slots, labels resolved, map/kfunc relocations, slot -> policy line |
//! | [`decode`] | bytes -> `Vec<Insn>` (numeric targets), rejecting anything it cannot re-encode identically |
//! | [`disasm`] | listings in `bpftool prog dump xlated` syntax, text and JSON |
//! | [`sys`] | raw `bpf(2)` wrappers for tests and cross-checks (the compiler never calls them) |
//!
//! Only little-endian (`bpfel`) output is produced: every target Phantom
//! supports (x86_64, aarch64) is little-endian.

pub mod build;
pub mod decode;
pub mod disasm;
pub mod encode;
pub mod helper;
pub mod insn;
pub mod opcode;
pub mod sys;

pub use encode::{encode, Encoded, KfuncReloc, MapReloc};
pub use helper::Helper;
pub use insn::{
    AluOp, AtomicOp, ByteOrder, CallTarget, Insn, JmpOp, KfuncRef, MapRef, Meta, Op, Reg, Size, Source, SourceLoc,
    Target, Width,
};
pub use opcode::RawInsn;

/// Errors of assembling and disassembling. Encoder errors name the logical
/// instruction index (position in the `&[Insn]`) and the label involved;
/// decoder errors name the slot index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BpfError {
    #[error("instruction {insn}: jump to label `{label}`, which no instruction carries")]
    MissingLabel { label: String, insn: usize },
    #[error("label `{label}` is on both instruction {first} and instruction {second}")]
    DuplicateLabel { label: String, first: usize, second: usize },
    #[error("instruction {insn}: jump to {target} is {offset} slots away; jumps reach -32768..=32767")]
    JumpOutOfRange { target: String, insn: usize, offset: i64 },
    #[error("instruction {insn}: {what}")]
    InvalidOperand { insn: usize, what: String },
    #[error("no instruction references map `{map}`")]
    UnknownMap { map: String },
    #[error("program is {len} bytes, not a whole number of 8-byte instructions")]
    TruncatedProgram { len: usize },
    #[error("slot {slot}: opcode {code:#04x} is not supported")]
    UnsupportedOpcode { slot: usize, code: u8 },
    #[error("slot {slot}: register r{reg} does not exist")]
    InvalidRegister { slot: usize, reg: u8 },
    #[error("slot {slot}: LD_IMM64 is missing its second slot or the second slot is not zero apart from imm")]
    IncompleteLdImm64 { slot: usize },
    #[error("slot {slot}: opcode {code:#04x} has unused fields set (src {src}, off {off}, imm {imm})")]
    NonCanonical { slot: usize, code: u8, src: u8, off: i16, imm: i32 },
}
