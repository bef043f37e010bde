//! Installs a compiled seccomp filter (raw `struct sock_filter[]`, as in the
//! bundle) on the calling thread. Irreversible: call it last in the sandbox
//! child, after Landlock, right before exec.

#[derive(Debug, thiserror::Error)]
pub enum SeccompInstallError {
    #[error("filter length {0} is not a positive multiple of 8 bytes")]
    Length(usize),
    #[error("filter has {0} instructions; the kernel accepts at most 4096")]
    TooLong(usize),
    #[error("prctl(PR_SET_NO_NEW_PRIVS): {0}")]
    NoNewPrivs(std::io::Error),
    #[error("seccomp(SECCOMP_SET_MODE_FILTER): {0}")]
    Install(std::io::Error),
}

/// `struct sock_filter`, as the kernel reads it.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

/// Installs `bytes` (little-endian `sock_filter` records) with
/// `no_new_privs` set, so no privilege is needed.
pub fn install(bytes: &[u8]) -> Result<(), SeccompInstallError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) {
        return Err(SeccompInstallError::Length(bytes.len()));
    }
    let insns: Vec<SockFilter> = bytes
        .chunks_exact(8)
        .map(|c| SockFilter {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    if insns.len() > 4096 {
        return Err(SeccompInstallError::TooLong(insns.len()));
    }
    let prog = SockFprog { len: insns.len() as u16, filter: insns.as_ptr() };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SeccompInstallError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    // SAFETY: `prog` points at `insns`, which outlives the call; the kernel
    // copies the filter before returning.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog as *const SockFprog) };
    if r != 0 {
        return Err(SeccompInstallError::Install(std::io::Error::last_os_error()));
    }
    Ok(())
}
