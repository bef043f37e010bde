//! Encoder goldens (bytes checked by hand against the instruction-set
//! document), label resolution and its errors, relocations, line maps,
//! listings, and helper ids against the host's uapi header.

use phantom_ebpf::bpf::disasm::{disassemble, listing};
use phantom_ebpf::bpf::{encode, BpfError, Helper, Insn, Reg::*, SourceLoc};

fn bytes(prog: &[Insn]) -> Vec<u8> {
    encode(prog).unwrap().to_bytes()
}

#[test]
fn encodes_known_instructions() {
    assert_eq!(bytes(&[Insn::mov64_imm(R0, 0)]), [0xb7, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(bytes(&[Insn::ldx_w(R2, R1, 16)]), [0x61, 0x12, 16, 0, 0, 0, 0, 0]);
    assert_eq!(bytes(&[Insn::stx_dw(R10, -8, R1)]), [0x7b, 0x1a, 0xf8, 0xff, 0, 0, 0, 0]);
    assert_eq!(bytes(&[Insn::call(Helper::MapLookupElem)]), [0x85, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(bytes(&[Insn::exit()]), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        bytes(&[Insn::ld_imm64(R1, 0x1122_3344_5566_7788)]),
        [
            0x18, 0x01, 0, 0, 0x88, 0x77, 0x66, 0x55, //
            0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11
        ]
    );
    assert_eq!(bytes(&[Insn::ld_map_fd(R1, 7)]), [0x18, 0x11, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(bytes(&[Insn::fetch_add_dw(R0, 0, R1)]), [0xdb, 0x10, 0, 0, 1, 0, 0, 0]);
    assert_eq!(bytes(&[Insn::to_be(R5, 16)]), [0xdc, 0x05, 0, 0, 16, 0, 0, 0]);
}

#[test]
fn labels_resolve_to_slot_offsets_counting_ld_imm64_twice() {
    let prog = [
        Insn::jeq_imm(R2, 2, "out"),         // slot 0 -> slot 4: +3
        Insn::ld_imm64(R1, 1),               // slots 1-2
        Insn::ja("out"),                     // slot 3 -> 4: +0
        Insn::mov64_imm(R0, 0).label("out"), // slot 4
        Insn::jne_reg(R0, R1, "out"),        // slot 5 -> 4: -2
        Insn::call_subprog("out"),           // slot 6 -> 4: imm -3
        Insn::exit(),
    ];
    let enc = encode(&prog).unwrap();
    assert_eq!(enc.insns[0].off, 3);
    assert_eq!(enc.insns[3].off, 0);
    assert_eq!(enc.insns[5].off, -2);
    assert_eq!(enc.insns[6].imm, -3);
    assert_eq!(enc.labels["out"], 4);
}

#[test]
fn a_missing_label_is_an_error_naming_it() {
    let err = encode(&[Insn::ja("nowhere"), Insn::exit()]).unwrap_err();
    assert_eq!(err, BpfError::MissingLabel { label: "nowhere".into(), insn: 0 });
    assert_eq!(err.to_string(), "instruction 0: jump to label `nowhere`, which no instruction carries");
}

#[test]
fn a_duplicate_label_is_an_error_naming_both_instructions() {
    let err = encode(&[Insn::exit().label("x"), Insn::exit().label("x")]).unwrap_err();
    assert_eq!(err, BpfError::DuplicateLabel { label: "x".into(), first: 0, second: 1 });
}

#[test]
fn a_jump_beyond_i16_is_an_error() {
    let mut prog = vec![Insn::ja("far")];
    prog.extend(std::iter::repeat_n(Insn::mov64_imm(R0, 0), 40_000));
    prog.push(Insn::exit().label("far"));
    let err = encode(&prog).unwrap_err();
    assert_eq!(err, BpfError::JumpOutOfRange { target: "label `far`".into(), insn: 0, offset: 40_000 });
    assert_eq!(err.to_string(), "instruction 0: jump to label `far` is 40000 slots away; jumps reach -32768..=32767");
}

#[test]
fn invalid_operands_are_errors() {
    assert!(matches!(encode(&[Insn::to_be(R1, 8)]), Err(BpfError::InvalidOperand { insn: 0, .. })));
    let atomic_byte = Insn::atomic(phantom_ebpf::bpf::Size::B, phantom_ebpf::bpf::AtomicOp::Add, R1, 0, R2);
    assert!(matches!(encode(&[Insn::exit(), atomic_byte]), Err(BpfError::InvalidOperand { insn: 1, .. })));
}

#[test]
fn map_references_become_relocations_and_bind_patches_them() {
    let prog = [
        Insn::ld_imm64(R3, 5),
        Insn::ld_map(R1, "events"),
        Insn::ld_map(R2, "events"),
        Insn::call_kfunc("bpf_task_acquire"),
        Insn::exit(),
    ];
    let mut enc = encode(&prog).unwrap();
    let relocs: Vec<_> = enc.map_relocs.iter().map(|r| (r.slot, r.map.as_str())).collect();
    assert_eq!(relocs, [(2, "events"), (4, "events")]);
    assert_eq!((enc.kfunc_relocs[0].slot, enc.kfunc_relocs[0].name.as_str()), (6, "bpf_task_acquire"));
    assert_eq!(enc.bind_map("events", 9), Ok(2));
    assert_eq!((enc.insns[2].imm, enc.insns[4].imm), (9, 9));
    assert_eq!(enc.bind_map("evnets", 9), Err(BpfError::UnknownMap { map: "evnets".into() }));
}

#[test]
fn source_locations_are_keyed_by_slot() {
    let loc = |l| SourceLoc::new("p.yaml", l, 3);
    let prog = [Insn::ld_imm64(R1, 0).at(loc(7)), Insn::mov64_imm(R0, 0).at(loc(8)), Insn::exit()];
    let enc = encode(&prog).unwrap();
    let lines: Vec<_> = enc.lines.iter().map(|(slot, loc)| (*slot, loc.line)).collect();
    assert_eq!(lines, [(0, 7), (2, 8)]);
}

#[test]
fn listing_speaks_bpftool() {
    let loc = |l| SourceLoc::new("policy.yaml", l, 1);
    let prog = [
        Insn::mov64_imm(R0, 0),
        Insn::ldx_w(R2, R1, 16),
        Insn::jeq_imm(R2, 2, "out").at(loc(12)),
        Insn::call(Helper::MapLookupElem),
        Insn::ld_map(R1, "audit_events"),
        Insn::bswap(R3, 64),
        Insn::mov32_imm(R4, -1),
        Insn::jsgt32_imm(R4, -2, "out"),
        Insn::atomic(phantom_ebpf::bpf::Size::DW, phantom_ebpf::bpf::AtomicOp::CmpXchg, R10, -8, R1),
        Insn::exit().label("out").at(loc(14)),
    ];
    let text = disassemble(&encode(&prog).unwrap()).unwrap();
    let expected = "   0: (b7) r0 = 0
   1: (61) r2 = *(u32 *)(r1 +16)
   2: (15) if r2 == 0x2 goto pc+7             ; policy.yaml:12
   3: (85) call bpf_map_lookup_elem#1
   4: (18) r1 = map[id:audit_events]
   6: (d7) r3 = bswap64 r3
   7: (b4) w4 = -1
   8: (66) if w4 s> 0xfffffffe goto pc+1
   9: (db) r0 = atomic64_cmpxchg((u64 *)(r10 -8), r0, r1)
  10: (95) exit                               ; policy.yaml:14
";
    assert_eq!(text, expected);
}

#[test]
fn listing_serialises_for_json_output() {
    let prog = [Insn::mov64_imm(R0, 2).at(SourceLoc::new("p.yaml", 3, 5)), Insn::exit()];
    let json = serde_json::to_string(&listing(&encode(&prog).unwrap()).unwrap()).unwrap();
    assert_eq!(
        json,
        r#"[{"index":0,"opcode":183,"text":"(b7) r0 = 2","file":"p.yaml","line":3},{"index":1,"opcode":149,"text":"(95) exit","file":null,"line":null}]"#
    );
}

/// `enum bpf_func_id` from the host's uapi header (linux-libc-dev): both
/// the old positional `FN(name)` and the newer `FN(name, id, ...)` forms.
#[test]
fn helper_ids_match_the_uapi_header() {
    let header = std::fs::read_to_string("/usr/include/linux/bpf.h")
        .expect("/usr/include/linux/bpf.h (package linux-libc-dev) is needed to check helper ids");
    let start = header.find("#define __BPF_FUNC_MAPPER(FN").expect("__BPF_FUNC_MAPPER in bpf.h");
    let mut ids = std::collections::BTreeMap::new();
    for (pos, entry) in header[start..].lines().skip(1).map_while(|l| l.trim().strip_prefix("FN(")).enumerate() {
        let inner = entry.split(')').next().unwrap();
        let mut parts = inner.split(',').map(str::trim);
        let name = parts.next().unwrap().to_string();
        let id = parts.next().map_or(pos as i32, |n| n.parse().unwrap());
        ids.insert(format!("bpf_{name}"), id);
    }
    assert!(ids.len() > 150, "parsed only {} helpers", ids.len());
    for &h in Helper::NAMED {
        assert_eq!(ids.get(h.name().unwrap()), Some(&h.id()), "{h:?}");
    }
}
