//! Program commands: load (with the verifier log), test-run, and the
//! cgroup attach / detach / query trio.

use crate::{attr, call, object_name, owned_fd, sys_bpf, SysError, VerifierLog, MAX_LOG_SIZE};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// What to load: encoded instructions (8 bytes each) and their metadata.
#[derive(Debug, Clone, Copy)]
pub struct ProgLoad<'a> {
    pub prog_type: u32,
    /// 0 for program types that take none.
    pub expected_attach_type: u32,
    pub insns: &'a [u8],
    pub license: &'a CStr,
    /// At most 15 of `[A-Za-z0-9_.]`.
    pub name: &'a str,
    /// vmlinux BTF id of the hooked function (LSM and tracing programs),
    /// else 0.
    pub attach_btf_id: u32,
}

/// Loads a program with `log_level = 1`, starting from a log buffer of
/// `log_size` bytes (at least 128, the kernel's minimum) and doubling it
/// on `ENOSPC`; returns the fd and the full log of the successful load.
///
/// `log_size` 0 loads without a log first (the verifier is much faster
/// when it writes none: the runtime's loads) and, only if that load is
/// refused, loads again with a log to return the whole of it.
pub fn prog_load(p: &ProgLoad<'_>, log_size: usize) -> Result<(OwnedFd, VerifierLog), SysError> {
    if !p.insns.len().is_multiple_of(8) {
        return Err(SysError::BadArgument(format!("{} bytes of instructions: not a multiple of 8", p.insns.len())));
    }
    let prog_name = object_name(p.name)?;
    if log_size == 0 {
        let mut a = attr::ProgLoad {
            prog_type: p.prog_type,
            insn_cnt: (p.insns.len() / 8) as u32,
            insns: p.insns.as_ptr() as u64,
            license: p.license.as_ptr() as u64,
            prog_name,
            expected_attach_type: p.expected_attach_type,
            attach_btf_id: p.attach_btf_id,
            ..Default::default()
        };
        // SAFETY: insns points to insn_cnt * 8 live bytes and license to a
        // NUL-terminated string, both outliving the call; no log buffer.
        if let Ok(fd) = unsafe { sys_bpf(attr::BPF_PROG_LOAD, &mut a) } {
            return Ok((owned_fd(fd), VerifierLog::default()));
        }
        return prog_load(p, crate::INITIAL_LOG_SIZE);
    }
    let mut size = log_size.clamp(128, MAX_LOG_SIZE);
    loop {
        let mut buf = vec![0u8; size];
        let mut a = attr::ProgLoad {
            prog_type: p.prog_type,
            insn_cnt: (p.insns.len() / 8) as u32,
            insns: p.insns.as_ptr() as u64,
            license: p.license.as_ptr() as u64,
            log_level: 1,
            log_size: size as u32,
            log_buf: buf.as_mut_ptr() as u64,
            prog_name,
            expected_attach_type: p.expected_attach_type,
            attach_btf_id: p.attach_btf_id,
            ..Default::default()
        };
        // SAFETY: insns points to insn_cnt * 8 live bytes, license to a
        // NUL-terminated string and log_buf to log_size writable bytes, all
        // outliving the call.
        let r = unsafe { sys_bpf(attr::BPF_PROG_LOAD, &mut a) };
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let log = VerifierLog(String::from_utf8_lossy(&buf[..end]).into_owned());
        match r {
            Ok(fd) => return Ok((owned_fd(fd), log)),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && size < MAX_LOG_SIZE => {
                size = (size * 2).min(MAX_LOG_SIZE);
            }
            Err(source) => return Err(SysError::Rejected { source, log }),
        }
    }
}

/// The result of a `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (of the last run).
    pub retval: u32,
    /// The kernel's average time per run, in ns (`duration`).
    pub duration_ns: u32,
}

/// Runs the program `repeat` times on the packet `data` (an XDP frame
/// needs at least the 14 bytes of an Ethernet header) and returns its
/// return value and the average run time the kernel measured.
pub fn prog_test_run_repeat(prog: BorrowedFd<'_>, data: &[u8], repeat: u32) -> Result<TestRun, SysError> {
    let mut a = attr::TestRun {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        repeat,
        ..Default::default()
    };
    // SAFETY: data_in points to data_size_in live bytes; data_out, ctx_in
    // and ctx_out are null with size 0, so the kernel writes nothing back
    // but the attr itself.
    unsafe { call(attr::BPF_PROG_TEST_RUN, "BPF_PROG_TEST_RUN", &mut a) }?;
    Ok(TestRun { retval: a.retval, duration_ns: a.duration })
}

/// Runs the program once on `data` and returns its return value.
pub fn prog_test_run(prog: BorrowedFd<'_>, data: &[u8]) -> Result<u32, SysError> {
    prog_test_run_repeat(prog, data, 1).map(|r| r.retval)
}

/// Runs the program once on a context (`ctx_in`, no packet) and returns
/// its return value (used to probe which program types support test runs).
pub fn prog_test_run_ctx(prog: BorrowedFd<'_>, ctx_in: &[u8]) -> Result<u32, SysError> {
    let mut a = attr::TestRun {
        prog_fd: prog.as_raw_fd() as u32,
        repeat: 1,
        ctx_size_in: ctx_in.len() as u32,
        ctx_in: ctx_in.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: ctx_in points to ctx_size_in live bytes; no output buffers.
    unsafe { call(attr::BPF_PROG_TEST_RUN, "BPF_PROG_TEST_RUN", &mut a) }?;
    Ok(a.retval)
}

/// Attaches `prog` to the cgroup with `BPF_F_ALLOW_MULTI` (no link: the
/// cgroup holds the program until it is detached or the cgroup removed).
pub fn prog_attach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, attach_type: u32) -> Result<(), SysError> {
    let mut a = attr::Attach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: attr::BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    // SAFETY: no pointers in the attr.
    unsafe { call(attr::BPF_PROG_ATTACH, "BPF_PROG_ATTACH", &mut a) }.map(drop)
}

/// Detaches `prog` from the cgroup (`ENOENT`: it was not attached).
pub fn prog_detach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, attach_type: u32) -> Result<(), SysError> {
    let mut a = attr::Attach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        ..Default::default()
    };
    // SAFETY: no pointers in the attr.
    unsafe { call(attr::BPF_PROG_DETACH, "BPF_PROG_DETACH", &mut a) }.map(drop)
}

/// Ids of the programs attached to the cgroup at `attach_type` (up to 64).
pub fn prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> Result<Vec<u32>, SysError> {
    let mut ids = vec![0u32; 64];
    let mut a = attr::Query {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    // SAFETY: prog_ids points to prog_cnt writable u32s.
    unsafe { call(attr::BPF_PROG_QUERY, "BPF_PROG_QUERY", &mut a) }?;
    ids.truncate(a.prog_cnt as usize);
    Ok(ids)
}
