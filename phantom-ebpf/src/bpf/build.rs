//! Typed builders: one constructor per instruction form, so code generators
//! read like the assembly they emit (`Insn::mov64_imm(R0, 2)`,
//! `Insn::jeq_imm(R1, 2, "out")`, `Insn::ldx_w(R2, R1, 16)`).

use super::helper::Helper;
use super::insn::{
    AluOp, AtomicOp, ByteOrder, CallTarget, Insn, JmpOp, KfuncRef, MapRef, Op, Reg, Size, Source, Target, Width,
};

/// `name64_imm`, `name64_reg`, `name32_imm`, `name32_reg` for each ALU op.
macro_rules! alu_builders {
    ($($op:ident: $i64:ident, $r64:ident, $i32:ident, $r32:ident;)*) => {
        impl Insn {
            $(
                #[doc = concat!("64-bit `", stringify!($op), "` with an immediate.")]
                pub fn $i64(dst: Reg, imm: i32) -> Insn {
                    Insn::alu(Width::W64, AluOp::$op, dst, Source::Imm(imm))
                }
                #[doc = concat!("64-bit `", stringify!($op), "` with a register.")]
                pub fn $r64(dst: Reg, src: Reg) -> Insn {
                    Insn::alu(Width::W64, AluOp::$op, dst, Source::Reg(src))
                }
                #[doc = concat!("32-bit `", stringify!($op), "` with an immediate.")]
                pub fn $i32(dst: Reg, imm: i32) -> Insn {
                    Insn::alu(Width::W32, AluOp::$op, dst, Source::Imm(imm))
                }
                #[doc = concat!("32-bit `", stringify!($op), "` with a register.")]
                pub fn $r32(dst: Reg, src: Reg) -> Insn {
                    Insn::alu(Width::W32, AluOp::$op, dst, Source::Reg(src))
                }
            )*
        }
    };
}

alu_builders! {
    Add: add64_imm, add64_reg, add32_imm, add32_reg;
    Sub: sub64_imm, sub64_reg, sub32_imm, sub32_reg;
    Mul: mul64_imm, mul64_reg, mul32_imm, mul32_reg;
    Div: div64_imm, div64_reg, div32_imm, div32_reg;
    Or: or64_imm, or64_reg, or32_imm, or32_reg;
    And: and64_imm, and64_reg, and32_imm, and32_reg;
    Lsh: lsh64_imm, lsh64_reg, lsh32_imm, lsh32_reg;
    Rsh: rsh64_imm, rsh64_reg, rsh32_imm, rsh32_reg;
    Mod: mod64_imm, mod64_reg, mod32_imm, mod32_reg;
    Xor: xor64_imm, xor64_reg, xor32_imm, xor32_reg;
    Mov: mov64_imm, mov64_reg, mov32_imm, mov32_reg;
    Arsh: arsh64_imm, arsh64_reg, arsh32_imm, arsh32_reg;
}

/// `name_imm`, `name_reg` (64-bit compare) and `name32_imm`, `name32_reg`
/// for each conditional jump.
macro_rules! jmp_builders {
    ($($op:ident: $i64:ident, $r64:ident, $i32:ident, $r32:ident;)*) => {
        impl Insn {
            $(
                #[doc = concat!("`if dst ", stringify!($op), " imm goto target` (64-bit compare).")]
                pub fn $i64(dst: Reg, imm: i32, target: impl Into<Target>) -> Insn {
                    Insn::jmp(Width::W64, JmpOp::$op, dst, Source::Imm(imm), target)
                }
                #[doc = concat!("`if dst ", stringify!($op), " src goto target` (64-bit compare).")]
                pub fn $r64(dst: Reg, src: Reg, target: impl Into<Target>) -> Insn {
                    Insn::jmp(Width::W64, JmpOp::$op, dst, Source::Reg(src), target)
                }
                #[doc = concat!("`if dst ", stringify!($op), " imm goto target` (32-bit compare).")]
                pub fn $i32(dst: Reg, imm: i32, target: impl Into<Target>) -> Insn {
                    Insn::jmp(Width::W32, JmpOp::$op, dst, Source::Imm(imm), target)
                }
                #[doc = concat!("`if dst ", stringify!($op), " src goto target` (32-bit compare).")]
                pub fn $r32(dst: Reg, src: Reg, target: impl Into<Target>) -> Insn {
                    Insn::jmp(Width::W32, JmpOp::$op, dst, Source::Reg(src), target)
                }
            )*
        }
    };
}

jmp_builders! {
    Jeq: jeq_imm, jeq_reg, jeq32_imm, jeq32_reg;
    Jgt: jgt_imm, jgt_reg, jgt32_imm, jgt32_reg;
    Jge: jge_imm, jge_reg, jge32_imm, jge32_reg;
    Jset: jset_imm, jset_reg, jset32_imm, jset32_reg;
    Jne: jne_imm, jne_reg, jne32_imm, jne32_reg;
    Jsgt: jsgt_imm, jsgt_reg, jsgt32_imm, jsgt32_reg;
    Jsge: jsge_imm, jsge_reg, jsge32_imm, jsge32_reg;
    Jlt: jlt_imm, jlt_reg, jlt32_imm, jlt32_reg;
    Jle: jle_imm, jle_reg, jle32_imm, jle32_reg;
    Jslt: jslt_imm, jslt_reg, jslt32_imm, jslt32_reg;
    Jsle: jsle_imm, jsle_reg, jsle32_imm, jsle32_reg;
}

/// `ldx_*`, `stx_*` and `st_*` for each access size.
macro_rules! mem_builders {
    ($($size:ident: $ldx:ident, $stx:ident, $st:ident;)*) => {
        impl Insn {
            $(
                #[doc = concat!("`dst = *(", stringify!($size), " *)(src + off)`.")]
                pub fn $ldx(dst: Reg, src: Reg, off: i16) -> Insn {
                    Insn::new(Op::Load { size: Size::$size, dst, src, off })
                }
                #[doc = concat!("`*(", stringify!($size), " *)(dst + off) = src`.")]
                pub fn $stx(dst: Reg, off: i16, src: Reg) -> Insn {
                    Insn::new(Op::Store { size: Size::$size, dst, src, off })
                }
                #[doc = concat!("`*(", stringify!($size), " *)(dst + off) = imm`.")]
                pub fn $st(dst: Reg, off: i16, imm: i32) -> Insn {
                    Insn::new(Op::StoreImm { size: Size::$size, dst, off, imm })
                }
            )*
        }
    };
}

mem_builders! {
    B: ldx_b, stx_b, st_b;
    H: ldx_h, stx_h, st_h;
    W: ldx_w, stx_w, st_w;
    DW: ldx_dw, stx_dw, st_dw;
}

impl Insn {
    /// Any two-operand ALU instruction.
    pub fn alu(width: Width, op: AluOp, dst: Reg, src: Source) -> Insn {
        Insn::new(Op::Alu { width, op, dst, src })
    }

    /// Any conditional jump.
    pub fn jmp(width: Width, op: JmpOp, dst: Reg, src: Source, target: impl Into<Target>) -> Insn {
        Insn::new(Op::Jmp { width, op, dst, src, target: target.into() })
    }

    /// `dst = -dst` (64-bit).
    pub fn neg64(dst: Reg) -> Insn {
        Insn::new(Op::Neg { width: Width::W64, dst })
    }

    /// `dst = -dst` (32-bit).
    pub fn neg32(dst: Reg) -> Insn {
        Insn::new(Op::Neg { width: Width::W32, dst })
    }

    /// Converts the low `bits` of `dst` to big-endian (network order).
    pub fn to_be(dst: Reg, bits: u8) -> Insn {
        Insn::new(Op::Endian { order: ByteOrder::ToBe, bits, dst })
    }

    /// Converts the low `bits` of `dst` to little-endian.
    pub fn to_le(dst: Reg, bits: u8) -> Insn {
        Insn::new(Op::Endian { order: ByteOrder::ToLe, bits, dst })
    }

    /// Unconditional byte swap of the low `bits` of `dst` (cpu v4).
    pub fn bswap(dst: Reg, bits: u8) -> Insn {
        Insn::new(Op::Endian { order: ByteOrder::Swap, bits, dst })
    }

    /// `goto target`.
    pub fn ja(target: impl Into<Target>) -> Insn {
        Insn::new(Op::Ja { target: target.into() })
    }

    /// Calls a helper; the result is in `R0`, `R1`-`R5` are clobbered.
    pub fn call(helper: Helper) -> Insn {
        Insn::new(Op::Call(CallTarget::Helper(helper)))
    }

    /// BPF-to-BPF call of the subprogram starting at `target`.
    pub fn call_subprog(target: impl Into<Target>) -> Insn {
        Insn::new(Op::Call(CallTarget::Subprog(target.into())))
    }

    /// Calls a kernel function by name; the loader resolves its BTF id.
    pub fn call_kfunc(name: impl Into<String>) -> Insn {
        Insn::new(Op::Call(CallTarget::Kfunc(KfuncRef::Symbol(name.into()))))
    }

    /// Returns `R0`.
    pub fn exit() -> Insn {
        Insn::new(Op::Exit)
    }

    /// `dst = imm` with a full 64-bit constant (two slots).
    pub fn ld_imm64(dst: Reg, imm: i64) -> Insn {
        Insn::new(Op::LdImm64 { dst, imm })
    }

    /// `dst = &map` for the map defined by symbol `map` (relocated later).
    pub fn ld_map(dst: Reg, map: impl Into<String>) -> Insn {
        Insn::new(Op::LdMap { dst, map: MapRef::Symbol(map.into()) })
    }

    /// `dst = &map` for an already created map fd.
    pub fn ld_map_fd(dst: Reg, fd: i32) -> Insn {
        Insn::new(Op::LdMap { dst, map: MapRef::Fd(fd) })
    }

    /// Any atomic operation on `*(size *)(dst + off)`.
    pub fn atomic(size: Size, op: AtomicOp, dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::new(Op::Atomic { size, op, dst, src, off })
    }

    /// `lock *(u32 *)(dst + off) += src`.
    pub fn atomic_add_w(dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::atomic(Size::W, AtomicOp::Add, dst, off, src)
    }

    /// `lock *(u64 *)(dst + off) += src`.
    pub fn atomic_add_dw(dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::atomic(Size::DW, AtomicOp::Add, dst, off, src)
    }

    /// `src = atomic_fetch_add((u32 *)(dst + off), src)`.
    pub fn fetch_add_w(dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::atomic(Size::W, AtomicOp::FetchAdd, dst, off, src)
    }

    /// `src = atomic64_fetch_add((u64 *)(dst + off), src)`.
    pub fn fetch_add_dw(dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::atomic(Size::DW, AtomicOp::FetchAdd, dst, off, src)
    }
}
