//! Our disassembler against the real thing: a program built with the
//! assembler is loaded into the kernel and `bpftool prog dump xlated`
//! (Debian's bpftool, a test oracle only) must print the same instruction
//! lines as `disasm::listing`. The program avoids what the verifier
//! rewrites (context accesses, inlined helpers, branches it can decide,
//! division by a register), so xlated equals what we emitted. Needs root
//! and bpftool; a failure to load or to run bpftool fails the test.
//! Helper calls are compared by name: xlated shows the kernel address
//! offset after `#` where we show the helper id.

use phantom_ebpf::bpf::disasm::{listing, render};
use phantom_ebpf::bpf::sys::{self, BPF_MAP_TYPE_ARRAY, BPF_PROG_TYPE_XDP};
use phantom_ebpf::bpf::{encode, Helper, Insn, Reg::*, SourceLoc};
use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;

/// One instruction of every kind the disassembler formats, on values the
/// verifier cannot predict (derived from `bpf_ktime_get_ns`).
fn program() -> Vec<Insn> {
    let loc = |line| SourceLoc::new("xchk.yaml", line, 1);
    vec![
        Insn::mov64_reg(R6, R1).at(loc(1)),
        Insn::call(Helper::KtimeGetNs),
        Insn::mov64_reg(R7, R0),
        Insn::and64_imm(R7, 255),
        Insn::mov32_reg(R8, R7),
        Insn::add32_imm(R8, 3),
        Insn::lsh64_imm(R8, 2),
        Insn::rsh64_imm(R8, 1),
        Insn::arsh64_imm(R8, 1),
        Insn::xor64_reg(R8, R7),
        Insn::or64_imm(R8, 16),
        Insn::sub64_reg(R8, R7),
        Insn::mul64_imm(R8, 3),
        Insn::div64_imm(R8, 5),
        Insn::mod64_imm(R8, 7),
        Insn::mul32_imm(R8, -3),
        Insn::neg64(R8),
        Insn::neg32(R8),
        Insn::to_be(R8, 16),
        Insn::to_le(R8, 32),
        // No `bswap` (cpu v4): Debian 12's bpftool (6.1 sources) prints it
        // as `BUG_alu64_d7`; the unit goldens cover it.
        Insn::stx_dw(R10, -8, R8).at(loc(2)),
        Insn::st_w(R10, -16, 7),
        Insn::st_w(R10, -12, -1),
        Insn::stx_h(R10, -24, R7),
        Insn::stx_b(R10, -17, R7),
        Insn::mov64_imm(R1, 1),
        Insn::atomic_add_dw(R10, -8, R1),
        Insn::fetch_add_dw(R10, -8, R1),
        Insn::mov64_imm(R2, 2),
        Insn::atomic_add_w(R10, -16, R2),
        Insn::fetch_add_w(R10, -16, R2),
        Insn::ldx_dw(R3, R10, -8),
        Insn::ldx_w(R4, R10, -16),
        Insn::ldx_b(R5, R10, -17),
        Insn::ldx_h(R9, R10, -24),
        Insn::ld_imm64(R1, 0x1234_5678_9abc_def0),
        Insn::ld_map(R2, "xchk_map").at(loc(3)),
        Insn::mov64_imm(R0, 1),
        Insn::jeq_imm(R7, 2, "a").at(loc(4)),
        Insn::mov64_imm(R0, 2),
        Insn::jgt_reg(R7, R8, "b").label("a"),
        Insn::mov64_imm(R0, 2),
        Insn::jslt32_imm(R7, 5, "c").label("b"),
        Insn::mov64_imm(R0, 2),
        Insn::jset_imm(R7, 1, "d").label("c"),
        Insn::mov64_imm(R0, 2),
        Insn::jne_reg(R3, R4, "e").label("d"),
        Insn::mov64_imm(R0, 2),
        Insn::jsgt_imm(R3, -1, "f").label("e"),
        Insn::ja("g"),
        Insn::mov64_imm(R0, 2).label("f"),
        Insn::jle32_reg(R5, R9, "h").label("g"),
        Insn::mov64_imm(R0, 1),
        Insn::exit().label("h"),
    ]
}

/// `   3: (85) call bpf_ktime_get_ns#123` -> `(3, "(85) call bpf_ktime_get_ns#")`.
fn normalise(line: &str) -> Option<(usize, String)> {
    let (index, text) = line.trim_start().split_once(": ")?;
    let index = index.parse().ok()?;
    let text = match text.rsplit_once('#') {
        Some((head, tail)) if text.contains(" call ") && tail.parse::<i64>().is_ok() => format!("{head}#"),
        _ => text.to_string(),
    };
    Some((index, text))
}

#[test]
fn listing_matches_bpftool_prog_dump_xlated() {
    let map = sys::map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1, 0, "xchk_map").expect("BPF_MAP_CREATE");
    let map_id = sys::object_id(map.as_fd()).expect("map id");
    let mut enc = encode(&program()).expect("encode");
    enc.bind_map("xchk_map", map.as_raw_fd()).unwrap();
    let prog = match sys::prog_load(BPF_PROG_TYPE_XDP, &enc.insns, c"GPL", "phantom_xchk") {
        Ok(p) => p,
        Err(e) => panic!("{e}\nprogram:\n{}", render(&listing(&enc).unwrap())),
    };
    let prog_id = sys::object_id(prog.fd.as_fd()).expect("prog id");

    let out = Command::new("bpftool")
        .args(["prog", "dump", "xlated", "id", &prog_id.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run bpftool (apt-get install bpftool): {e}"));
    assert!(out.status.success(), "bpftool failed: {}", String::from_utf8_lossy(&out.stderr));
    let theirs_text = String::from_utf8(out.stdout).unwrap();
    let theirs: Vec<_> = theirs_text.lines().filter_map(normalise).collect();

    let ours_listing = listing(&enc).unwrap();
    let ours_text = render(&ours_listing).replace("map[id:xchk_map]", &format!("map[id:{map_id}]"));
    let ours: Vec<_> =
        ours_text.lines().map(|l| l.split("; ").next().unwrap().trim_end()).filter_map(normalise).collect();

    assert_eq!(ours.len(), program().len(), "one line per instruction, LD_IMM64 counted once");
    if ours != theirs {
        panic!("listing differs from bpftool\n--- bpftool:\n{theirs_text}\n--- ours:\n{ours_text}");
    }
    // The annotations land on the instructions that carry positions.
    assert!(ours_text.lines().next().unwrap().ends_with("; xchk.yaml:1"), "{ours_text}");
    assert_eq!(ours_text.matches("; xchk.yaml:").count(), 4, "{ours_text}");
}
