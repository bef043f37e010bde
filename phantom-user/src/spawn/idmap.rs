//! Idmapped workspaces: a `--workspace` directory owned by a user (not
//! root) is attached through an idmapped mount on which that user's files
//! appear owned by the sandbox's root (host uid/gid [`SANDBOX_ID_BASE`]),
//! and what the sandbox creates is owned by that user on disk. Without it,
//! the sandbox's root (an unprivileged host uid) could not write there.
//!
//! Only the owner's uid and gid are mapped (other owners' files appear as
//! the overflow id, 65534). A root-owned directory is never idmapped: the
//! sandbox would create files owned by host root. Like any process running
//! as the owner, the sandbox can create files with the owner's setuid bit
//! (the mount is nosuid, so not inside the sandbox).
//!
//! The mapping is a user namespace (`uid_map`: `<owner> <SANDBOX_ID_BASE>
//! 1`, same for gids) made once per owner and kept with the spawner's spec:
//! a zygote pays for it on its first request with that owner.

use super::SANDBOX_ID_BASE;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// The idmapping user namespaces made so far, by owner (shared by the
/// clones of a spawner's spec; closed with the last of them).
#[derive(Debug, Clone, Default)]
pub(crate) struct Idmaps(Arc<Mutex<BTreeMap<Owner, Arc<OwnedFd>>>>);

/// A workspace owner: (uid, gid).
type Owner = (u32, u32);

impl Idmaps {
    /// The user namespace that idmaps `(uid, gid)` on disk to the
    /// sandbox's root; `None` for root-owned directories, and for the
    /// sandbox's own ids (nothing to map).
    pub fn for_owner(&self, uid: u32, gid: u32) -> io::Result<Option<Arc<OwnedFd>>> {
        if uid == 0 || gid == 0 || (uid, gid) == (SANDBOX_ID_BASE, SANDBOX_ID_BASE) {
            return Ok(None);
        }
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fd) = cache.get(&(uid, gid)) {
            return Ok(Some(fd.clone()));
        }
        let fd = Arc::new(make_userns(uid, gid)?);
        cache.insert((uid, gid), fd.clone());
        Ok(Some(fd))
    }
}

/// A child enters a new user namespace and waits; we write its maps, keep
/// a descriptor of the namespace and let the child go.
fn make_userns(uid: u32, gid: u32) -> io::Result<OwnedFd> {
    let mut ready = [0i32; 2];
    let mut done = [0i32; 2];
    // SAFETY: two-element arrays for pipe2.
    if unsafe { libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) } < 0
        || unsafe { libc::pipe2(done.as_mut_ptr(), libc::O_CLOEXEC) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the pipes are ours; from here on they are closed by these.
    let (ready_r, ready_w, done_r, done_w) = unsafe {
        (
            OwnedFd::from_raw_fd(ready[0]),
            OwnedFd::from_raw_fd(ready[1]),
            OwnedFd::from_raw_fd(done[0]),
            OwnedFd::from_raw_fd(done[1]),
        )
    };
    use std::os::fd::AsRawFd;
    // SAFETY: the child only makes async-signal-safe syscalls and _exits
    // (the host may be multithreaded).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: syscalls on our own fds; ends with _exit.
        unsafe {
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            libc::write(ready_w.as_raw_fd(), [u8::from(ok)].as_ptr().cast(), 1);
            let mut b = [0u8; 1];
            libc::close(done_w.as_raw_fd());
            libc::read(done_r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(done_r);
    let result = (|| {
        let mut b = [0u8; 1];
        // SAFETY: reads one byte into a live buffer.
        if unsafe { libc::read(ready_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) } != 1 || b[0] != 1 {
            return Err(io::Error::other("could not create the idmapping user namespace"));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), format!("{uid} {SANDBOX_ID_BASE} 1\n"))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), format!("{gid} {SANDBOX_ID_BASE} 1\n"))?;
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(ns))
    })();
    drop(done_w); // the child reads EOF and exits
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    result
}
