//! Cgroup attachments that can be swapped in place: bpf links
//! (`BPF_LINK_CREATE` / `BPF_LINK_UPDATE`) and `BPF_PROG_ATTACH` with
//! `BPF_F_REPLACE`. A swap changes the program pointer in the cgroup's
//! effective array with one store, so every hook invocation runs either
//! the old program or the new one: there is no moment without either.

use crate::{attr, call, owned_fd, sys_bpf, SysError};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// Attaches `prog` to `target` (a cgroup directory fd) through a new bpf
/// link; closing the returned fd detaches it. Unlike `BPF_PROG_ATTACH`,
/// the attachment dies with its owner and can be updated in place.
pub fn link_create(prog: BorrowedFd<'_>, target: BorrowedFd<'_>, attach_type: u32) -> Result<OwnedFd, SysError> {
    let mut a = attr::LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: target.as_raw_fd() as u32,
        attach_type,
        flags: 0,
    };
    // SAFETY: no pointers in the attr.
    let fd = unsafe { sys_bpf(attr::BPF_LINK_CREATE, &mut a) }
        .map_err(|source| SysError::Syscall { cmd: "BPF_LINK_CREATE", source })?;
    Ok(owned_fd(fd))
}

/// Makes `link` run `new` instead of `old` (`EPERM` when the link runs
/// some other program: the update is a compare-and-swap).
pub fn link_update(link: BorrowedFd<'_>, new: BorrowedFd<'_>, old: BorrowedFd<'_>) -> Result<(), SysError> {
    let mut a = attr::LinkUpdate {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: new.as_raw_fd() as u32,
        flags: attr::BPF_F_REPLACE,
        old_prog_fd: old.as_raw_fd() as u32,
    };
    // SAFETY: no pointers in the attr.
    unsafe { call(attr::BPF_LINK_UPDATE, "BPF_LINK_UPDATE", &mut a) }.map(drop)
}

/// Replaces `old`, attached to the cgroup with `BPF_F_ALLOW_MULTI` (see
/// [`crate::prog_attach`]), by `new` at the same position in one step.
pub fn prog_replace(
    cgroup: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
    attach_type: u32,
) -> Result<(), SysError> {
    let mut a = attr::Attach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: new.as_raw_fd() as u32,
        attach_type,
        attach_flags: attr::BPF_F_ALLOW_MULTI | attr::BPF_F_REPLACE,
        replace_bpf_fd: old.as_raw_fd() as u32,
    };
    // SAFETY: no pointers in the attr.
    unsafe { call(attr::BPF_PROG_ATTACH, "BPF_PROG_ATTACH", &mut a) }.map(drop)
}
