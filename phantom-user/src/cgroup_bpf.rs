//! Attaches loaded cgroup programs to a cgroup v2 directory and detaches
//! them. The programs come from a bundle's `cgroup.bpf.o`
//! ([`crate::bundle_object`]: loaded for this process, or opened from the
//! pins of `phantom load`); raw `bpf(2)` is [`phantom_bpf_sys`].
//!
//! Attaching uses `BPF_PROG_ATTACH` with `BPF_F_ALLOW_MULTI`, not a BPF
//! link: the cgroup holds the programs, so a crashed supervisor leaves them
//! enforcing (fail closed) until the cgroup is removed. Detaching is
//! explicit ([`Attachment::detach`], also on drop) with `BPF_PROG_DETACH`
//! naming each program fd, so programs attached by others stay.

use phantom_bpf_sys as sys;
use phantom_ebpf::netprog::ProgKind;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupBpfError {
    #[error("bpf({cmd}) failed for {what}: {source}")]
    Syscall { cmd: &'static str, what: String, source: io::Error },
    #[error("opening cgroup {path}: {source}")]
    Cgroup { path: PathBuf, source: io::Error },
}

/// Programs loaded into the kernel, with their kinds (fds closed on drop;
/// the kernel keeps whatever is still attached or pinned).
#[derive(Debug)]
pub struct LoadedPrograms {
    pub programs: Vec<(ProgKind, OwnedFd)>,
}

/// Programs attached to one cgroup; detached on [`Attachment::detach`] or drop.
#[derive(Debug)]
pub struct Attachment {
    cgroup: OwnedFd,
    path: PathBuf,
    attached: Vec<(ProgKind, OwnedFd)>,
}

impl LoadedPrograms {
    /// Attaches every program to the cgroup v2 directory `cgroup`.
    pub fn attach(&self, cgroup: &Path) -> Result<Attachment, CgroupBpfError> {
        let dir = std::fs::File::open(cgroup)
            .map_err(|source| CgroupBpfError::Cgroup { path: cgroup.to_path_buf(), source })?;
        let mut a = Attachment { cgroup: OwnedFd::from(dir), path: cgroup.to_path_buf(), attached: Vec::new() };
        for (kind, fd) in &self.programs {
            let fd = fd.try_clone().map_err(|source| CgroupBpfError::Syscall {
                cmd: "dup",
                what: kind.section().to_string(),
                source,
            })?;
            sys::prog_attach(a.cgroup.as_fd(), fd.as_fd(), kind.attach_type()).map_err(io::Error::from).map_err(
                |source| CgroupBpfError::Syscall {
                    cmd: "BPF_PROG_ATTACH",
                    what: format!("{} to {}", kind.section(), cgroup.display()),
                    source,
                },
            )?;
            a.attached.push((*kind, fd));
        }
        Ok(a)
    }
}

impl Attachment {
    pub fn cgroup_path(&self) -> &Path {
        &self.path
    }

    /// Detaches every program this attachment attached; the first error is
    /// returned after trying all of them.
    pub fn detach(mut self) -> Result<(), CgroupBpfError> {
        self.detach_all()
    }

    fn detach_all(&mut self) -> Result<(), CgroupBpfError> {
        let mut first = None;
        for (kind, fd) in self.attached.drain(..) {
            if let Err(source) =
                sys::prog_detach(self.cgroup.as_fd(), fd.as_fd(), kind.attach_type()).map_err(io::Error::from)
            {
                first.get_or_insert(CgroupBpfError::Syscall {
                    cmd: "BPF_PROG_DETACH",
                    what: format!("{} from {}", kind.section(), self.path.display()),
                    source,
                });
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let _ = self.detach_all();
    }
}

/// Ids of the programs attached to `cgroup` at `attach_type` (BPF_PROG_QUERY).
pub fn query(cgroup: &Path, attach_type: u32) -> Result<Vec<u32>, CgroupBpfError> {
    let dir =
        std::fs::File::open(cgroup).map_err(|source| CgroupBpfError::Cgroup { path: cgroup.to_path_buf(), source })?;
    sys::prog_query(dir.as_fd(), attach_type).map_err(io::Error::from).map_err(|source| CgroupBpfError::Syscall {
        cmd: "BPF_PROG_QUERY",
        what: cgroup.display().to_string(),
        source,
    })
}

/// Runs a loaded program once with `BPF_PROG_TEST_RUN` on `ctx_in` (for
/// probing which program types support it).
pub fn test_run_ctx(prog: BorrowedFd<'_>, ctx_in: &[u8]) -> io::Result<u32> {
    sys::prog_test_run_ctx(prog, ctx_in).map_err(io::Error::from)
}
