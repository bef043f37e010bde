//! `decode(encode(x)) == x` for generated programs over every instruction
//! form, and the decoder's strictness: whatever it accepts re-encodes to
//! the same bytes.

use phantom_ebpf::bpf::decode::{decode, decode_raw};
use phantom_ebpf::bpf::opcode::RawInsn;
use phantom_ebpf::bpf::{
    encode, AluOp, AtomicOp, ByteOrder, CallTarget, Helper, Insn, JmpOp, KfuncRef, MapRef, Op, Reg, Size, Source,
    Target, Width,
};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn reg() -> impl Strategy<Value = Reg> {
    prop::sample::select(Reg::ALL.to_vec())
}

fn width() -> impl Strategy<Value = Width> {
    prop_oneof![Just(Width::W32), Just(Width::W64)]
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![any::<i32>().prop_map(Source::Imm), reg().prop_map(Source::Reg)]
}

fn size() -> impl Strategy<Value = Size> {
    prop::sample::select(vec![Size::B, Size::H, Size::W, Size::DW])
}

fn jump() -> impl Strategy<Value = Target> {
    any::<i16>().prop_map(|o| Target::Offset(o.into()))
}

fn alu_op() -> impl Strategy<Value = AluOp> {
    use AluOp::*;
    prop::sample::select(vec![Add, Sub, Mul, Div, Or, And, Lsh, Rsh, Mod, Xor, Mov, Arsh])
}

fn jmp_op() -> impl Strategy<Value = JmpOp> {
    use JmpOp::*;
    prop::sample::select(vec![Jeq, Jgt, Jge, Jset, Jne, Jsgt, Jsge, Jlt, Jle, Jslt, Jsle])
}

fn atomic_op() -> impl Strategy<Value = AtomicOp> {
    use AtomicOp::*;
    prop::sample::select(vec![Add, Or, And, Xor, FetchAdd, FetchOr, FetchAnd, FetchXor, Xchg, CmpXchg])
}

/// Every operation in the numeric form decoding gives back.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (width(), alu_op(), reg(), source()).prop_map(|(width, op, dst, src)| Op::Alu { width, op, dst, src }),
        (width(), reg()).prop_map(|(width, dst)| Op::Neg { width, dst }),
        (
            prop::sample::select(vec![ByteOrder::ToLe, ByteOrder::ToBe, ByteOrder::Swap]),
            prop::sample::select(vec![16u8, 32, 64]),
            reg()
        )
            .prop_map(|(order, bits, dst)| Op::Endian { order, bits, dst }),
        jump().prop_map(|target| Op::Ja { target }),
        (width(), jmp_op(), reg(), source(), jump()).prop_map(|(width, op, dst, src, target)| Op::Jmp {
            width,
            op,
            dst,
            src,
            target
        }),
        any::<i32>().prop_map(|id| Op::Call(CallTarget::Helper(Helper::from_id(id)))),
        any::<i32>().prop_map(|o| Op::Call(CallTarget::Subprog(Target::Offset(o)))),
        (any::<i32>(), any::<i16>())
            .prop_map(|(btf_id, module)| Op::Call(CallTarget::Kfunc(KfuncRef::BtfId { btf_id, module }))),
        Just(Op::Exit),
        (reg(), any::<i64>()).prop_map(|(dst, imm)| Op::LdImm64 { dst, imm }),
        (reg(), any::<i32>()).prop_map(|(dst, fd)| Op::LdMap { dst, map: MapRef::Fd(fd) }),
        (size(), reg(), reg(), any::<i16>()).prop_map(|(size, dst, src, off)| Op::Load { size, dst, src, off }),
        (size(), reg(), reg(), any::<i16>()).prop_map(|(size, dst, src, off)| Op::Store { size, dst, src, off }),
        (size(), reg(), any::<i16>(), any::<i32>()).prop_map(|(size, dst, off, imm)| Op::StoreImm {
            size,
            dst,
            off,
            imm
        }),
        (prop::sample::select(vec![Size::W, Size::DW]), atomic_op(), reg(), reg(), any::<i16>())
            .prop_map(|(size, op, dst, src, off)| Op::Atomic { size, op, dst, src, off }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_inverts_encode(ops in prop::collection::vec(op(), 0..40)) {
        let prog: Vec<Insn> = ops.iter().cloned().map(Insn::new).collect();
        let enc = encode(&prog).unwrap();
        let back: Vec<Op> = decode(&enc.to_bytes()).unwrap().into_iter().map(|i| i.op).collect();
        prop_assert_eq!(back, ops);
    }

    /// Valid programs with one byte changed: near-miss encodings must be
    /// rejected or decode to something that re-encodes identically.
    #[test]
    fn whatever_decodes_reencodes_to_the_same_bytes(
        ops in prop::collection::vec(op(), 1..8),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let prog: Vec<Insn> = ops.into_iter().map(Insn::new).collect();
        let mut bytes = encode(&prog).unwrap().to_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(insns) = decode(&bytes) {
            prop_assert_eq!(encode(&insns).unwrap().to_bytes(), bytes);
        }
    }
}

/// One instance of every form the encoder emits; the opcodes it produces
/// are exactly the opcode bytes the decoder accepts.
#[test]
fn every_opcode_byte_is_either_round_tripped_or_rejected() {
    let mut emitted = BTreeSet::new();
    for w in [Width::W32, Width::W64] {
        for op in [
            AluOp::Add,
            AluOp::Sub,
            AluOp::Mul,
            AluOp::Div,
            AluOp::Or,
            AluOp::And,
            AluOp::Lsh,
            AluOp::Rsh,
            AluOp::Mod,
            AluOp::Xor,
            AluOp::Mov,
            AluOp::Arsh,
        ] {
            for src in [Source::Imm(1), Source::Reg(Reg::R1)] {
                emitted.insert(first_code(Op::Alu { width: w, op, dst: Reg::R0, src }));
            }
        }
        for op in [
            JmpOp::Jeq,
            JmpOp::Jgt,
            JmpOp::Jge,
            JmpOp::Jset,
            JmpOp::Jne,
            JmpOp::Jsgt,
            JmpOp::Jsge,
            JmpOp::Jlt,
            JmpOp::Jle,
            JmpOp::Jslt,
            JmpOp::Jsle,
        ] {
            for src in [Source::Imm(1), Source::Reg(Reg::R1)] {
                emitted.insert(first_code(Op::Jmp { width: w, op, dst: Reg::R0, src, target: Target::Offset(0) }));
            }
        }
        emitted.insert(first_code(Op::Neg { width: w, dst: Reg::R0 }));
    }
    for order in [ByteOrder::ToLe, ByteOrder::ToBe, ByteOrder::Swap] {
        emitted.insert(first_code(Op::Endian { order, bits: 16, dst: Reg::R0 }));
    }
    for s in [Size::B, Size::H, Size::W, Size::DW] {
        emitted.insert(first_code(Op::Load { size: s, dst: Reg::R0, src: Reg::R1, off: 0 }));
        emitted.insert(first_code(Op::Store { size: s, dst: Reg::R0, src: Reg::R1, off: 0 }));
        emitted.insert(first_code(Op::StoreImm { size: s, dst: Reg::R0, off: 0, imm: 0 }));
    }
    for s in [Size::W, Size::DW] {
        emitted.insert(first_code(Op::Atomic { size: s, op: AtomicOp::FetchAdd, dst: Reg::R0, src: Reg::R1, off: 0 }));
    }
    emitted.insert(first_code(Op::Ja { target: Target::Offset(0) }));
    emitted.insert(first_code(Op::Call(CallTarget::Helper(Helper::KtimeGetNs))));
    emitted.insert(first_code(Op::Exit));
    emitted.insert(first_code(Op::LdImm64 { dst: Reg::R0, imm: 0 }));
    assert_eq!(emitted.len(), 115, "ALU 53 + JMP 47 + LD_IMM64 + LDX/STX/ST 12 + ATOMIC 2");

    let mut accepted = BTreeSet::new();
    for code in 0..=255u8 {
        // Fields that make each form valid: imm 16 (a byte-swap width and
        // a plain atomic add is imm 0, so try both), src r1.
        for (src, imm) in [(0u8, 0i32), (0, 16), (1, 0), (1, 1), (0, 1)] {
            let raw = [RawInsn::new(code, 0, src, 0, imm), RawInsn::default()];
            if let Ok(insns) = decode_raw(&raw[..if code == 0x18 { 2 } else { 1 }]) {
                assert_eq!(encode(&insns).unwrap().insns[0], raw[0], "code {code:#04x}");
                accepted.insert(code);
            }
        }
    }
    assert_eq!(accepted, emitted);
}

fn first_code(op: Op) -> u8 {
    encode(&[Insn::new(op)]).unwrap().insns[0].code
}
