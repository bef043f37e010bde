//! Raw `bpf(2)` for the runtime, in one place: the prefixes of `union
//! bpf_attr` the loader and `doctor` probes need.

use phantom_ebpf::netprog::MapSpec;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_ATTACH: u32 = 8;
const BPF_PROG_DETACH: u32 = 9;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_PROG_QUERY: u32 = 16;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;
const INITIAL_LOG_SIZE: usize = 64 * 1024;
const MAX_LOG_SIZE: usize = (u32::MAX >> 2) as usize;

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

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

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

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

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
}

/// # Safety
/// Every pointer in `attr` must be 0 or valid for the length the attr
/// states for the duration of the call.
unsafe fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is an exclusively borrowed repr(C) prefix of
    // `union bpf_attr` passed with its exact size (the kernel treats
    // the rest as zero); the caller vouches for the pointers in it.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd(r: i64) -> OwnedFd {
    // SAFETY: a successful MAP_CREATE / PROG_LOAD returns a new fd owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

pub fn map_create(spec: &MapSpec) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: spec.map_type,
        key_size: spec.key_size,
        value_size: spec.value_size,
        max_entries: spec.max_entries,
        map_flags: spec.flags,
        map_name: name16(&spec.name),
        ..Default::default()
    };
    // SAFETY: no pointers in the attr.
    unsafe { bpf(BPF_MAP_CREATE, &mut attr) }.map(fd)
}

pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: key and value are live buffers of the map's key and value
    // sizes (checked by the caller); the kernel only reads them.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(|_| ())
}

/// Loads with `log_level = 1`, doubling the log buffer on `ENOSPC`.
pub fn prog_load(
    prog_type: u32,
    attach_type: u32,
    bytes: &[u8],
    name: &str,
) -> Result<(OwnedFd, String), (io::Error, String)> {
    let license = c"GPL";
    let mut size = INITIAL_LOG_SIZE;
    loop {
        let mut buf = vec![0u8; size];
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: (bytes.len() / 8) as u32,
            insns: bytes.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: size as u32,
            log_buf: buf.as_mut_ptr() as u64,
            prog_name: name16(name),
            expected_attach_type: attach_type,
            ..Default::default()
        };
        // SAFETY: insns points to insn_cnt * 8 live bytes, license to a
        // NUL-terminated string, log_buf to log_size writable bytes.
        let r = unsafe { bpf(BPF_PROG_LOAD, &mut attr) };
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let log = String::from_utf8_lossy(&buf[..end]).into_owned();
        match r {
            Ok(r) => return Ok((fd(r), log)),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && size < MAX_LOG_SIZE => {
                size = (size * 2).min(MAX_LOG_SIZE);
            }
            Err(e) => return Err((e, log)),
        }
    }
}

pub fn prog_attach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, attach_type: u32) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    // SAFETY: no pointers in the attr.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map(|_| ())
}

pub fn prog_detach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, attach_type: u32) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        ..Default::default()
    };
    // SAFETY: no pointers in the attr.
    unsafe { bpf(BPF_PROG_DETACH, &mut attr) }.map(|_| ())
}

pub fn prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    // SAFETY: prog_ids points to prog_cnt writable u32s.
    unsafe { bpf(BPF_PROG_QUERY, &mut attr) }?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

pub fn prog_test_run_ctx(prog: BorrowedFd<'_>, ctx_in: &[u8]) -> io::Result<u32> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        repeat: 1,
        ctx_size_in: ctx_in.len() as u32,
        ctx_in: ctx_in.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: ctx_in points to ctx_size_in live bytes; no output buffers.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }.map(|_| attr.retval)
}
