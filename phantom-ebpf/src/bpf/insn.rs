//! The logical eBPF instruction: what the code generator builds and the
//! encoder turns into bytes.
//!
//! Modelled on cilium/ebpf's `asm.Instruction`: one type for every
//! instruction, with jump targets and map/kfunc references kept symbolic
//! (resolved by [`encode`](super::encode) or relocated by the ELF writer)
//! and metadata carrying the policy line that produced it, so that every
//! emitted instruction can be traced back to the policy (BTF line_info,
//! disassembly annotations). Builders live in [`build`](super::build).

use super::helper::Helper;
use std::fmt;
use std::sync::Arc;

/// A register. `R10` is the read-only frame pointer; `R0` holds return
/// values, `R1`-`R5` call arguments, `R6`-`R9` are callee-saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reg {
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

impl Reg {
    pub const ALL: [Reg; 11] =
        [Reg::R0, Reg::R1, Reg::R2, Reg::R3, Reg::R4, Reg::R5, Reg::R6, Reg::R7, Reg::R8, Reg::R9, Reg::R10];

    /// The register number in the instruction's 4-bit field.
    pub fn num(self) -> u8 {
        self as u8
    }

    /// `None` for 11..=15, which the kernel rejects.
    pub fn from_num(n: u8) -> Option<Reg> {
        Reg::ALL.get(usize::from(n)).copied()
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.num())
    }
}

/// Operand width of ALU and conditional-jump instructions: `W32` is the
/// `BPF_ALU` / `BPF_JMP32` class (the `w` registers), `W64` is `BPF_ALU64`
/// / `BPF_JMP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Width {
    W32,
    W64,
}

/// Memory access size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    pub fn bytes(self) -> usize {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }
}

/// Two-operand ALU operations (`NEG` and byte swaps are [`Op`] variants of
/// their own because they take no source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    Or,
    And,
    Lsh,
    Rsh,
    Mod,
    Xor,
    Mov,
    Arsh,
}

/// Conditional jump comparisons (`s` = signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JmpOp {
    Jeq,
    Jgt,
    Jge,
    Jset,
    Jne,
    Jsgt,
    Jsge,
    Jlt,
    Jle,
    Jslt,
    Jsle,
}

/// The second operand of ALU and jump instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Imm(i32),
    Reg(Reg),
}

impl From<i32> for Source {
    fn from(v: i32) -> Source {
        Source::Imm(v)
    }
}

impl From<Reg> for Source {
    fn from(r: Reg) -> Source {
        Source::Reg(r)
    }
}

/// Where a jump or subprogram call goes: a label (resolved by the encoder)
/// or a number of slots relative to the next instruction (what decoding
/// gives back).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Label(String),
    Offset(i32),
}

impl From<&str> for Target {
    fn from(s: &str) -> Target {
        Target::Label(s.to_string())
    }
}

impl From<String> for Target {
    fn from(s: String) -> Target {
        Target::Label(s)
    }
}

impl From<i32> for Target {
    fn from(off: i32) -> Target {
        Target::Offset(off)
    }
}

/// Byte-order conversions: `ToLe`/`ToBe` are `BPF_ALU | BPF_END`, `Swap`
/// is the unconditional `BPF_ALU64 | BPF_END` (bswap, cpu v4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    ToLe,
    ToBe,
    Swap,
}

/// Atomic read-modify-write operations on memory (`BPF_ATOMIC`, W and DW
/// only). The `Fetch*` forms also load the old value into the source
/// register; `CmpXchg` compares with and returns into `R0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    Add,
    Or,
    And,
    Xor,
    FetchAdd,
    FetchOr,
    FetchAnd,
    FetchXor,
    Xchg,
    CmpXchg,
}

/// A map referenced by `LD_IMM64` with `BPF_PSEUDO_MAP_FD`: by symbol when
/// compiling (the ELF writer emits a relocation against the `.maps`
/// symbol; [`Encoded::bind_map`](super::encode::Encoded::bind_map) patches
/// a loaded fd in), by fd when the kernel-side number is known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MapRef {
    Symbol(String),
    Fd(i32),
}

/// A kernel function called with `BPF_PSEUDO_KFUNC_CALL`: by name until
/// the loader resolves its BTF id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KfuncRef {
    Symbol(String),
    /// `btf_id` in `imm`; `module` is the index into the program's
    /// `fd_array` of a module BTF (0 = vmlinux), in `off`.
    BtfId {
        btf_id: i32,
        module: i16,
    },
}

/// What a `BPF_CALL` calls.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallTarget {
    Helper(Helper),
    /// A BPF-to-BPF call (`BPF_PSEUDO_CALL`).
    Subprog(Target),
    Kfunc(KfuncRef),
}

/// The operation of one instruction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    Alu {
        width: Width,
        op: AluOp,
        dst: Reg,
        src: Source,
    },
    Neg {
        width: Width,
        dst: Reg,
    },
    /// `bits` is 16, 32 or 64.
    Endian {
        order: ByteOrder,
        bits: u8,
        dst: Reg,
    },
    /// Unconditional jump (`BPF_JMP | BPF_JA`, 16-bit offset).
    Ja {
        target: Target,
    },
    Jmp {
        width: Width,
        op: JmpOp,
        dst: Reg,
        src: Source,
        target: Target,
    },
    Call(CallTarget),
    Exit,
    /// `dst = imm` with a 64-bit constant (two slots).
    LdImm64 {
        dst: Reg,
        imm: i64,
    },
    /// `dst = &map` (two slots, `BPF_PSEUDO_MAP_FD`).
    LdMap {
        dst: Reg,
        map: MapRef,
    },
    /// `dst = *(size *)(src + off)` (`LDX | MEM`).
    Load {
        size: Size,
        dst: Reg,
        src: Reg,
        off: i16,
    },
    /// `*(size *)(dst + off) = src` (`STX | MEM`).
    Store {
        size: Size,
        dst: Reg,
        src: Reg,
        off: i16,
    },
    /// `*(size *)(dst + off) = imm` (`ST | MEM`).
    StoreImm {
        size: Size,
        dst: Reg,
        off: i16,
        imm: i32,
    },
    /// `STX | ATOMIC` on `*(size *)(dst + off)` with `src`.
    Atomic {
        size: Size,
        op: AtomicOp,
        dst: Reg,
        src: Reg,
        off: i16,
    },
}

impl Op {
    /// Number of 8-byte slots the encoded instruction takes.
    pub fn slots(&self) -> usize {
        match self {
            Op::LdImm64 { .. } | Op::LdMap { .. } => 2,
            _ => 1,
        }
    }
}

/// A position in a policy file, for line_info and listings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceLoc {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

impl SourceLoc {
    pub fn new(file: impl Into<Arc<str>>, line: u32, col: u32) -> SourceLoc {
        SourceLoc { file: file.into(), line, col }
    }
}

impl fmt::Display for SourceLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Data attached to an instruction that the kernel never sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Meta {
    /// The policy position this instruction implements.
    pub loc: Option<SourceLoc>,
    /// A label naming this instruction as a jump target.
    pub label: Option<String>,
}

/// One logical instruction: an operation plus metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Insn {
    pub op: Op,
    pub meta: Meta,
}

impl Insn {
    pub fn new(op: Op) -> Insn {
        Insn { op, meta: Meta::default() }
    }

    /// Marks this instruction as the target of jumps to `label`.
    pub fn label(mut self, label: impl Into<String>) -> Insn {
        self.meta.label = Some(label.into());
        self
    }

    /// Records the policy position that produced this instruction.
    pub fn at(mut self, loc: SourceLoc) -> Insn {
        self.meta.loc = Some(loc);
        self
    }
}

impl From<Op> for Insn {
    fn from(op: Op) -> Insn {
        Insn::new(op)
    }
}
