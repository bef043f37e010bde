//! Raw `bpf(2)` wrappers: just enough to create an array map, load a
//! program with its verifier log, run it with `BPF_PROG_TEST_RUN` and ask
//! for its id. They exist so the assembler can be checked against the real
//! verifier and bpftool; the compiler never calls them (compilation stays
//! pure) and the product loads through aya in phantom-user.
//!
//! The verifier log is never truncated: a load that fails with `ENOSPC`
//! is retried with a buffer twice as large (as cilium/ebpf's `prog.go`
//! does), up to [`MAX_LOG_SIZE`].

use super::opcode::RawInsn;
use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

pub const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
pub const BPF_PROG_TYPE_XDP: u32 = 6;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
/// `BPF_ANY` for [`map_update`]: create or replace.
pub const BPF_ANY: u64 = 0;

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_GET_NEXT_KEY: u32 = 4;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;

/// First log buffer size; most logs of small programs fit.
pub const INITIAL_LOG_SIZE: usize = 64 * 1024;
/// The kernel rejects larger buffers (`log_size > UINT_MAX >> 2`).
pub const MAX_LOG_SIZE: usize = (u32::MAX >> 2) as usize;

/// The verifier's log. `Debug` prints it with real newlines, so a failing
/// test shows it readably.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct VerifierLog(pub String);

impl fmt::Debug for VerifierLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for VerifierLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("the verifier rejected the program: {source}\nverifier log:\n{log}")]
    Rejected { source: io::Error, log: VerifierLog },
    #[error("bpf({cmd}) failed: {source}")]
    Syscall { cmd: &'static str, source: io::Error },
    #[error("bad argument: {0}")]
    BadArgument(String),
}

/// A loaded program: its fd (closed on drop) and the verifier log of the
/// successful load.
#[derive(Debug)]
pub struct LoadedProg {
    pub fd: OwnedFd,
    pub log: VerifierLog,
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_MAP_CREATE`, up to `map_name`.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for the map element commands (`value` is `next_key`
/// for `BPF_MAP_GET_NEXT_KEY`).
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_PROG_TEST_RUN`, up to `flags`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// # Safety
/// Every pointer field of `attr` must be 0 or point to memory that is
/// valid, for the length the attr states, for the duration of the call.
unsafe fn sys_bpf<T>(cmd: u32, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed repr(C) prefix of
    // `union bpf_attr` and we pass its exact size; the kernel zero-extends
    // shorter attrs. The caller vouches for the pointers inside it.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned_fd(r: libc::c_long) -> OwnedFd {
    // SAFETY: a successful MAP_CREATE / PROG_LOAD returns a new fd that
    // nothing else owns.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

fn object_name(name: &str) -> Result<[u8; 16], SysError> {
    let mut out = [0u8; 16];
    if name.len() > 15 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
        return Err(SysError::BadArgument(format!("object name `{name}`: at most 15 of [A-Za-z0-9_.]")));
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// Creates a map; `name` is at most 15 characters.
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> Result<OwnedFd, SysError> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_name: object_name(name)?,
        ..Default::default()
    };
    // SAFETY: the attr holds no pointers.
    let r = unsafe { sys_bpf(BPF_MAP_CREATE, &mut attr) };
    r.map(owned_fd).map_err(|source| SysError::Syscall { cmd: "BPF_MAP_CREATE", source })
}

/// Reads the value at `key` into `value` (both sized as the map says).
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> Result<(), SysError> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: key and value point to live buffers; the caller sized them
    // as the map's key and value (the kernel copies exactly those sizes).
    let r = unsafe { sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) };
    r.map(|_| ()).map_err(|source| SysError::Syscall { cmd: "BPF_MAP_LOOKUP_ELEM", source })
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
    let prog_name = object_name(name)?;
    let mut size = log_size.clamp(128, MAX_LOG_SIZE);
    loop {
        let mut buf = vec![0u8; size];
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: bytes.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: size as u32,
            log_buf: buf.as_mut_ptr() as u64,
            prog_name,
            ..Default::default()
        };
        // SAFETY: insns points to insn_cnt * 8 live bytes, license to a
        // NUL-terminated string and log_buf to log_size writable bytes, all
        // outliving the call.
        let r = unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) };
        let log = VerifierLog(log_text(&buf));
        match r {
            Ok(fd) => return Ok(LoadedProg { fd: owned_fd(fd), log }),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && size < MAX_LOG_SIZE => {
                size = (size * 2).min(MAX_LOG_SIZE);
            }
            Err(source) => return Err(SysError::Rejected { source, log }),
        }
    }
}

fn log_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Runs the program once on `data` (`BPF_PROG_TEST_RUN`) and returns its
/// return value.
pub fn prog_test_run(prog: BorrowedFd<'_>, data: &[u8]) -> Result<u32, SysError> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: data_in points to data_size_in live bytes; data_out is null
    // with size 0, so the kernel writes no packet back.
    let r = unsafe { sys_bpf(BPF_PROG_TEST_RUN, &mut attr) };
    r.map(|_| attr.retval).map_err(|source| SysError::Syscall { cmd: "BPF_PROG_TEST_RUN", source })
}

/// The kernel-wide id of a program or map (what `bpftool ... id N` takes):
/// the second `u32` of both `bpf_prog_info` and `bpf_map_info`.
pub fn object_id(fd: BorrowedFd<'_>) -> Result<u32, SysError> {
    let mut info = [0u32; 2];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: info points to info_len writable bytes; the kernel writes at
    // most info_len bytes of the info struct.
    let r = unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) };
    r.map(|_| info[1]).map_err(|source| SysError::Syscall { cmd: "BPF_OBJ_GET_INFO_BY_FD", source })
}

/// Creates a map with `map_flags`; `name` is at most 15 of `[A-Za-z0-9_.]`.
pub fn map_create_flags(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: &str,
) -> Result<OwnedFd, SysError> {
    let mut map_name = [0u8; 16];
    if name.len() > 15 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
        return Err(SysError::BadArgument(format!("map name `{name}`: at most 15 of [A-Za-z0-9_.]")));
    }
    map_name[..name.len()].copy_from_slice(name.as_bytes());
    let mut attr =
        MapCreateAttr { map_type, key_size, value_size, max_entries, map_flags, map_name, ..Default::default() };
    // SAFETY: the attr holds no pointers.
    let r = unsafe { sys_bpf(BPF_MAP_CREATE, &mut attr) };
    // SAFETY: a successful MAP_CREATE returns a new fd nothing else owns.
    r.map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) })
        .map_err(|source| SysError::Syscall { cmd: "BPF_MAP_CREATE", source })
}

/// Writes `value` at `key` (both sized as the map says).
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> Result<(), SysError> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags,
        ..Default::default()
    };
    // SAFETY: key and value point to live buffers the caller sized as the
    // map's key and value; the kernel only reads them.
    let r = unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) };
    r.map(|_| ()).map_err(|source| SysError::Syscall { cmd: "BPF_MAP_UPDATE_ELEM", source })
}

/// Whether `key` is in the map (`value` receives its value).
pub fn map_contains(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> Result<bool, SysError> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: key and value point to live buffers sized as the map's key
    // and value.
    match unsafe { sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(source) => Err(SysError::Syscall { cmd: "BPF_MAP_LOOKUP_ELEM", source }),
    }
}

/// Every key of a hash map (`BPF_MAP_GET_NEXT_KEY` from no key), in the
/// map's order.
pub fn map_keys(map: BorrowedFd<'_>, key_size: usize) -> Result<Vec<Vec<u8>>, SysError> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut next = vec![0u8; key_size];
        let mut attr = MapElemAttr {
            map_fd: map.as_raw_fd() as u32,
            key: keys.last().map_or(0, |k| k.as_ptr() as u64),
            value: next.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: key is null (first key) or a live key-sized buffer; next
        // is a writable key-sized buffer.
        match unsafe { sys_bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
            Ok(_) => keys.push(next),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
            Err(source) => return Err(SysError::Syscall { cmd: "BPF_MAP_GET_NEXT_KEY", source }),
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

/// Runs the program `repeat` times on `data` (an XDP frame: at least the
/// 14 bytes of an Ethernet header, the kernel refuses less) and returns
/// its return value and the average run time the kernel measured.
pub fn prog_test_run_repeat(prog: BorrowedFd<'_>, data: &[u8], repeat: u32) -> Result<TestRun, SysError> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        repeat,
        ..Default::default()
    };
    // SAFETY: data_in points to data_size_in live bytes; data_out, ctx_in
    // and ctx_out are null with size 0, so the kernel writes nothing back
    // but the attr itself.
    let r = unsafe { sys_bpf(BPF_PROG_TEST_RUN, &mut attr) };
    r.map(|_| TestRun { retval: attr.retval, duration_ns: attr.duration })
        .map_err(|source| SysError::Syscall { cmd: "BPF_PROG_TEST_RUN", source })
}
