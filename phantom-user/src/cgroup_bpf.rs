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

/// A copy of a program's fd, kept by an attachment.
fn dup(kind: ProgKind, fd: &OwnedFd) -> Result<OwnedFd, CgroupBpfError> {
    fd.try_clone().map_err(|source| CgroupBpfError::Syscall { cmd: "dup", what: kind.section().to_string(), source })
}

impl LoadedPrograms {
    /// Attaches every program to the cgroup v2 directory `cgroup`.
    pub fn attach(&self, cgroup: &Path) -> Result<Attachment, CgroupBpfError> {
        let dir = std::fs::File::open(cgroup)
            .map_err(|source| CgroupBpfError::Cgroup { path: cgroup.to_path_buf(), source })?;
        let mut a = Attachment { cgroup: OwnedFd::from(dir), path: cgroup.to_path_buf(), attached: Vec::new() };
        for (kind, fd) in &self.programs {
            let fd = dup(*kind, fd)?;
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

    /// Moves this cgroup to `new` (the policy update of a running
    /// sandbox) without a gap: a program kind both versions have is
    /// replaced in place (`BPF_F_REPLACE`: the new program takes the old
    /// one's slot in the cgroup's array in one step); kinds only `new` has
    /// are attached; then kinds `new` lacks are detached. Returns how many
    /// programs were replaced, added and removed. On an error the programs
    /// already switched stay switched (each kind runs one version or the
    /// other, never none) and the error says which kind failed.
    pub fn replace_with(&mut self, new: &LoadedPrograms) -> Result<(usize, usize, usize), CgroupBpfError> {
        let err = |cmd: &'static str, kind: ProgKind, path: &Path| {
            let what = format!("{} on {}", kind.section(), path.display());
            move |e: sys::SysError| CgroupBpfError::Syscall { cmd, what, source: io::Error::from(e) }
        };
        if self.runs(new) {
            return Ok((0, 0, 0));
        }
        let mut old: Vec<Option<(ProgKind, OwnedFd)>> = self.attached.drain(..).map(Some).collect();
        let (mut replaced, mut added) = (0, 0);
        for (kind, fd) in &new.programs {
            let fd = match dup(*kind, fd) {
                Ok(fd) => fd,
                Err(e) => {
                    self.attached.extend(old.into_iter().flatten());
                    return Err(e);
                }
            };
            let slot = old.iter_mut().find(|o| o.as_ref().is_some_and(|(k, _)| k == kind));
            let step = match slot.as_ref().and_then(|s| s.as_ref()) {
                Some((_, prev)) => sys::prog_replace(self.cgroup.as_fd(), fd.as_fd(), prev.as_fd(), kind.attach_type())
                    .map_err(err("BPF_PROG_ATTACH (replace)", *kind, &self.path)),
                None => sys::prog_attach(self.cgroup.as_fd(), fd.as_fd(), kind.attach_type()).map_err(err(
                    "BPF_PROG_ATTACH",
                    *kind,
                    &self.path,
                )),
            };
            if let Err(e) = step {
                // Keep tracking everything still attached, whichever version.
                self.attached.extend(old.into_iter().flatten());
                return Err(e);
            }
            match slot {
                Some(s) => {
                    *s = None;
                    replaced += 1;
                }
                None => added += 1,
            }
            self.attached.push((*kind, fd));
        }
        let removed = old.iter().flatten().count();
        detach(self.cgroup.as_fd(), &self.path, old.into_iter().flatten())?;
        Ok((replaced, added, removed))
    }

    /// Whether exactly `programs` are attached (same kinds, same kernel
    /// programs): moving to them again changes nothing.
    fn runs(&self, programs: &LoadedPrograms) -> bool {
        let ids = |v: &[(ProgKind, OwnedFd)]| -> Option<Vec<(ProgKind, u32)>> {
            v.iter().map(|(k, fd)| sys::object_id(fd.as_fd()).ok().map(|id| (*k, id))).collect()
        };
        matches!((ids(&self.attached), ids(&programs.programs)), (Some(a), Some(b)) if a == b)
    }

    /// Detaches every program this attachment attached; the first error is
    /// returned after trying all of them.
    pub fn detach(mut self) -> Result<(), CgroupBpfError> {
        self.detach_all()
    }

    fn detach_all(&mut self) -> Result<(), CgroupBpfError> {
        let attached: Vec<_> = self.attached.drain(..).collect();
        detach(self.cgroup.as_fd(), &self.path, attached)
    }
}

/// Detaches each program from the cgroup; the first error is returned
/// after trying all of them.
fn detach(
    cgroup: BorrowedFd<'_>,
    path: &Path,
    programs: impl IntoIterator<Item = (ProgKind, OwnedFd)>,
) -> Result<(), CgroupBpfError> {
    let mut first = None;
    for (kind, fd) in programs {
        if let Err(source) = sys::prog_detach(cgroup, fd.as_fd(), kind.attach_type()).map_err(io::Error::from) {
            first.get_or_insert(CgroupBpfError::Syscall {
                cmd: "BPF_PROG_DETACH",
                what: format!("{} from {}", kind.section(), path.display()),
                source,
            });
        }
    }
    first.map_or(Ok(()), Err)
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
