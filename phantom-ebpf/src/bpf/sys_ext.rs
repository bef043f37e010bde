//! More raw `bpf(2)` wrappers, next to [`super::sys`] (which they do not
//! change): maps with flags (LPM tries need `BPF_F_NO_PREALLOC`), element
//! update and key iteration, and `BPF_PROG_TEST_RUN` with `repeat`, which
//! returns the kernel's average run time. Like `sys`, a test and bench seam
//! only: the compiler never calls them.

use super::sys::SysError;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
/// `BPF_ANY` for [`map_update`]: create or replace.
pub const BPF_ANY: u64 = 0;

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_GET_NEXT_KEY: u32 = 4;
const BPF_PROG_TEST_RUN: u32 = 10;

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

/// # Safety
/// Every pointer field of `attr` must be 0 or point to memory that is
/// valid, for the length the attr states, for the duration of the call.
unsafe fn sys_bpf<T>(cmd: u32, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed repr(C) prefix of
    // `union bpf_attr` and we pass its exact size. The caller vouches for
    // the pointers inside it.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
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
