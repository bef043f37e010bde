//! The kernel verifier accepts hand-built programs from the assembler, and
//! they behave as written (`BPF_PROG_TEST_RUN`). Runs as root on a kernel
//! with XDP; a load failure fails the test with the whole verifier log
//! (never a skip).

use phantom_ebpf::bpf::sys::{self, LoadedProg, BPF_MAP_TYPE_ARRAY, BPF_PROG_TYPE_XDP};
use phantom_ebpf::bpf::{encode, Encoded, Helper, Insn, Reg::*};
use std::os::fd::AsFd;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// Loads an XDP program or panics with the verifier log.
fn load_xdp(enc: &Encoded, name: &str) -> LoadedProg {
    match sys::prog_load(BPF_PROG_TYPE_XDP, &enc.insns, c"GPL", name) {
        Ok(p) => p,
        Err(e) => panic!("{name}: {e}\nprogram:\n{}", phantom_ebpf::bpf::disasm::disassemble(enc).unwrap()),
    }
}

/// A 14-byte Ethernet header with the given EtherType.
fn frame(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(&[0u8; 50]);
    f
}

/// How many fds of this process refer to the BPF object with `key`
/// (`prog_id` or `map_id`) `id`, from /proc/self/fdinfo. Ids are unique
/// kernel-wide, so this is exact even while other tests open fds.
fn open_fds(key: &str, id: u32) -> usize {
    let wanted = format!("{key}:\t{id}");
    std::fs::read_dir("/proc/self/fdinfo")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|info| info.lines().any(|l| l == wanted))
        .count()
}

#[test]
fn xdp_pass_is_accepted_and_returns_pass() {
    let enc = encode(&[Insn::mov64_imm(R0, XDP_PASS as i32), Insn::exit()]).unwrap();
    let prog = load_xdp(&enc, "phantom_pass");
    assert_eq!(sys::prog_test_run(prog.fd.as_fd(), &frame(0x0800)).unwrap(), XDP_PASS);
    let id = sys::object_id(prog.fd.as_fd()).unwrap();
    assert_eq!(open_fds("prog_id", id), 1);
    drop(prog);
    assert_eq!(open_fds("prog_id", id), 0, "the program fd leaked");
}

#[test]
fn bounds_checked_packet_read_is_accepted_and_branches_on_the_packet() {
    // Pass IPv4 (EtherType 0x0800), drop everything else and runt frames.
    let prog = [
        Insn::ldx_w(R2, R1, 0), // r2 = ctx->data
        Insn::ldx_w(R3, R1, 4), // r3 = ctx->data_end
        Insn::mov64_reg(R4, R2),
        Insn::add64_imm(R4, 14),
        Insn::jgt_reg(R4, R3, "drop"), // header beyond the packet
        Insn::ldx_h(R5, R2, 12),       // EtherType, network order
        Insn::to_be(R5, 16),
        Insn::jne_imm(R5, 0x0800, "drop"),
        Insn::mov64_imm(R0, XDP_PASS as i32),
        Insn::exit(),
        Insn::mov64_imm(R0, XDP_DROP as i32).label("drop"),
        Insn::exit(),
    ];
    let enc = encode(&prog).unwrap();
    let loaded = load_xdp(&enc, "phantom_pkt");
    assert_eq!(sys::prog_test_run(loaded.fd.as_fd(), &frame(0x0800)).unwrap(), XDP_PASS);
    assert_eq!(sys::prog_test_run(loaded.fd.as_fd(), &frame(0x86dd)).unwrap(), XDP_DROP);
}

#[test]
fn array_map_lookup_is_accepted_and_counts() {
    let map = sys::map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1, 0, "phantom_cnt").expect("BPF_MAP_CREATE");
    let prog = [
        Insn::st_w(R10, -4, 0), // key = 0
        Insn::mov64_reg(R2, R10),
        Insn::add64_imm(R2, -4),
        Insn::ld_map(R1, "counters"),
        Insn::call(Helper::MapLookupElem),
        Insn::jeq_imm(R0, 0, "out"), // the verifier insists on the null check
        Insn::mov64_imm(R1, 1),
        Insn::atomic_add_dw(R0, 0, R1),
        Insn::mov64_imm(R0, XDP_PASS as i32).label("out"),
        Insn::exit(),
    ];
    let mut enc = encode(&prog).unwrap();
    assert_eq!(enc.bind_map("counters", std::os::fd::AsRawFd::as_raw_fd(&map)).unwrap(), 1);
    let loaded = load_xdp(&enc, "phantom_map");
    for _ in 0..3 {
        assert_eq!(sys::prog_test_run(loaded.fd.as_fd(), &frame(0x0800)).unwrap(), XDP_PASS);
    }
    let mut value = [0u8; 8];
    sys::map_lookup(map.as_fd(), &0u32.to_ne_bytes(), &mut value).unwrap();
    assert_eq!(u64::from_ne_bytes(value), 3, "three runs, three increments");
    let map_id = sys::object_id(map.as_fd()).unwrap();
    assert_eq!(open_fds("map_id", map_id), 1);
    drop((loaded, map));
    assert_eq!(open_fds("map_id", map_id), 0, "the map fd leaked");
}

#[test]
fn a_rejected_program_reports_the_whole_verifier_log() {
    // Reads r2 before writing it: the verifier must refuse, and the error
    // must carry its explanation.
    let enc = encode(&[Insn::mov64_reg(R0, R2), Insn::exit()]).unwrap();
    match sys::prog_load(BPF_PROG_TYPE_XDP, &enc.insns, c"GPL", "phantom_bad") {
        Ok(_) => panic!("the verifier accepted a read of an uninitialised register"),
        Err(sys::SysError::Rejected { log, .. }) => {
            assert!(log.0.contains("R2 !read_ok"), "log does not explain the rejection:\n{log}")
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn a_log_larger_than_the_first_buffer_is_fetched_whole() {
    // 128 bytes (the kernel's minimum) cannot hold this log, so the load
    // fails with ENOSPC first and is retried with larger buffers.
    let enc = encode(&[Insn::mov64_reg(R0, R2), Insn::exit()]).unwrap();
    match sys::prog_load_with_log_size(BPF_PROG_TYPE_XDP, &enc.insns, c"GPL", "phantom_bad", 128) {
        Err(sys::SysError::Rejected { log, .. }) => {
            assert!(log.0.len() > 128, "log was not grown:\n{log}");
            assert!(log.0.contains("R2 !read_ok") && log.0.contains("processed 1 insns"), "log is cut:\n{log}");
        }
        other => panic!("expected a rejection with a log, got {other:?}"),
    }
}
