//! The test and bench seam to the kernel: [`phantom_bpf_sys`] (the one
//! raw `bpf(2)` of the workspace) with loads that take our instructions.
//! It exists so the assembler can be checked against the real verifier
//! and bpftool; the compiler never calls it (compilation stays pure) and
//! the product loads through aya and `phantom_bpf_sys` in phantom-user.

use super::opcode::RawInsn;
use std::ffi::CStr;
use std::os::fd::OwnedFd;

/// The old name of [`map_create`] (it takes the flags too).
pub use phantom_bpf_sys::map_create as map_create_flags;
pub use phantom_bpf_sys::{
    map_contains, map_create, map_keys, map_lookup, map_update, object_id, prog_test_run, prog_test_run_repeat,
    SysError, TestRun, VerifierLog, BPF_ANY, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LPM_TRIE,
    BPF_MAP_TYPE_LRU_HASH, BPF_PROG_TYPE_SOCKET_FILTER, BPF_PROG_TYPE_XDP, INITIAL_LOG_SIZE, MAX_LOG_SIZE,
};

/// A loaded program: its fd (closed on drop) and the verifier log of the
/// successful load.
#[derive(Debug)]
pub struct LoadedProg {
    pub fd: OwnedFd,
    pub log: VerifierLog,
}

/// Loads a program with `log_level = 1`, retrying with a doubled log
/// buffer on `ENOSPC`, and returns the fd and the full log.
pub fn prog_load(prog_type: u32, insns: &[RawInsn], license: &CStr, name: &str) -> Result<LoadedProg, SysError> {
    prog_load_with_log_size(prog_type, insns, license, name, INITIAL_LOG_SIZE)
}

/// [`prog_load`] starting from a log buffer of `log_size` bytes (at least
/// 128, the kernel's minimum), so tests can exercise the retry.
pub fn prog_load_with_log_size(
    prog_type: u32,
    insns: &[RawInsn],
    license: &CStr,
    name: &str,
    log_size: usize,
) -> Result<LoadedProg, SysError> {
    let bytes = super::opcode::to_bytes(insns);
    let load = phantom_bpf_sys::ProgLoad {
        prog_type,
        expected_attach_type: 0,
        insns: &bytes,
        license,
        name,
        attach_btf_id: 0,
    };
    phantom_bpf_sys::prog_load(&load, log_size).map(|(fd, log)| LoadedProg { fd, log })
}
