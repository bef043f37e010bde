//! Raw `bpf(2)`, in one place for the whole workspace: the runtime's
//! cgroup-BPF loader and `phantom doctor` probes (phantom-user), and the
//! test and bench seam that checks our bytecode against the real verifier
//! (phantom-ebpf's `bpf::sys`, xtask). The compiler itself never calls it.
//!
//! Each command fills a `repr(C)` prefix of `union bpf_attr` ([`attr`]);
//! the kernel treats the rest as zero. Programs and maps come back as
//! [`OwnedFd`]s. Loading records the verifier log and never truncates it:
//! on `ENOSPC` the load is retried with a buffer twice as large, up to
//! [`MAX_LOG_SIZE`].

mod attr;
mod link;
mod map;
mod prog;

pub use link::{link_create, link_update, prog_replace};

pub use map::{map_contains, map_create, map_keys, map_lookup, map_update};
pub use prog::{
    prog_attach, prog_detach, prog_load, prog_query, prog_test_run, prog_test_run_ctx, prog_test_run_repeat, ProgLoad,
    TestRun,
};

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

pub const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
pub const BPF_PROG_TYPE_XDP: u32 = 6;
/// Attach type of `lsm_cgroup` programs (`BPF_LSM_CGROUP`).
pub const BPF_LSM_CGROUP: u32 = 43;
pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
/// `BPF_ANY` for [`map_update`]: create or replace.
pub const BPF_ANY: u64 = 0;

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

impl SysError {
    /// The kernel's error, if the call reached the kernel.
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            SysError::Rejected { source, .. } | SysError::Syscall { source, .. } => Some(source),
            SysError::BadArgument(_) => None,
        }
    }
}

/// The kernel's error for callers that report `io::Error`s (a bad
/// argument becomes `InvalidInput`; a rejection's log is dropped).
impl From<SysError> for io::Error {
    fn from(e: SysError) -> io::Error {
        match e {
            SysError::Rejected { source, .. } | SysError::Syscall { source, .. } => source,
            SysError::BadArgument(what) => io::Error::new(io::ErrorKind::InvalidInput, what),
        }
    }
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

/// [`sys_bpf`] for commands that return nothing but success.
///
/// # Safety
/// As [`sys_bpf`].
unsafe fn call<T>(cmd: u32, name: &'static str, attr: &mut T) -> Result<libc::c_long, SysError> {
    // SAFETY: forwarded to the caller.
    unsafe { sys_bpf(cmd, attr) }.map_err(|source| SysError::Syscall { cmd: name, source })
}

fn owned_fd(r: libc::c_long) -> OwnedFd {
    // SAFETY: a successful MAP_CREATE / PROG_LOAD returns a new fd that
    // nothing else owns.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

/// A program or map name for the kernel: at most 15 of `[A-Za-z0-9_.]`.
fn object_name(name: &str) -> Result<[u8; 16], SysError> {
    let mut out = [0u8; 16];
    if name.len() > 15 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
        return Err(SysError::BadArgument(format!("object name `{name}`: at most 15 of [A-Za-z0-9_.]")));
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// The kernel-wide id of a program or map (what `bpftool ... id N` takes):
/// the second `u32` of both `bpf_prog_info` and `bpf_map_info`.
pub fn object_id(fd: BorrowedFd<'_>) -> Result<u32, SysError> {
    let mut info = [0u32; 2];
    let mut a = attr::Info {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: info points to info_len writable bytes; the kernel writes at
    // most info_len bytes of the info struct.
    unsafe { call(attr::BPF_OBJ_GET_INFO_BY_FD, "BPF_OBJ_GET_INFO_BY_FD", &mut a) }?;
    Ok(info[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_checked_not_truncated() {
        assert_eq!(&object_name("phantom_conn4").unwrap()[..13], b"phantom_conn4");
        assert!(object_name("a_name_of_16_chr").is_err());
        assert!(object_name("bad-name").is_err());
    }
}
