//! The sandbox's root: a tmpfs with read-only binds of the paths the policy
//! allows (read-write where it allows writing), the merged-/usr symlinks,
//! `/proc` of the sandbox's pid namespace, a minimal `/dev`, a private
//! tmpfs `/tmp` and the workspace read-write at `/workspace`. Planned in
//! the supervisor (allocation, globbing), executed in the child between
//! clone and exec.

use super::sys;
use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

/// Device nodes bound into the sandbox's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// Symlinks of a merged-/usr system, created when `/usr` is bound.
const USR_LINKS: &[(&str, &str)] =
    &[("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")];
/// Bound read-only when the policy allows no path at all.
pub const DEFAULT_READ_ONLY: &[&str] = &["/usr", "/etc"];

#[derive(Debug, Clone)]
pub struct Bind {
    pub src: PathBuf,
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Mount {
        src: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// Re-mounts a bind read-only, keeping the source's locked flags.
    RemountRo {
        target: CString,
        src: CString,
    },
    Mkdir(CString),
    Touch(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    Pivot {
        root: CString,
        old: CString,
    },
    Chdir(CString),
    UmountDetach(CString),
    Rmdir(CString),
}

/// The mount sequence for one sandbox.
#[derive(Debug, Clone)]
pub struct RootPlan {
    steps: Vec<Step>,
}

fn c(p: impl AsRef<Path>) -> CString {
    CString::new(p.as_ref().as_os_str().as_encoded_bytes()).expect("paths have no NUL (checked by the policy compiler)")
}

impl RootPlan {
    /// `root` is an empty host directory to mount the tmpfs on; `binds` are
    /// host paths visible at the same path inside; `/tmp` in `binds` is
    /// skipped (the sandbox gets a private tmpfs there).
    pub fn new(root: &Path, mut binds: Vec<Bind>, workspace: &Path, tmp_size: u64) -> RootPlan {
        binds.retain(|b| b.src != Path::new("/tmp") && !b.src.starts_with("/tmp/") && b.src.exists());
        binds.sort_by(|a, b| a.src.cmp(&b.src));
        binds.dedup_by(|a, b| a.src == b.src);
        let mut s = Vec::new();
        let at = |p: &str| c(root.join(p.trim_start_matches('/')));
        s.push(Step::Mount {
            src: None,
            target: c("/"),
            fstype: None,
            flags: libc::MS_REC | libc::MS_PRIVATE,
            data: None,
        });
        s.push(Step::Mount {
            src: Some(c("tmpfs")),
            target: c(root),
            fstype: Some(c("tmpfs")),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: Some(c("mode=0755,size=1m")),
        });
        for b in &binds {
            let rel = b.src.strip_prefix("/").unwrap_or(&b.src);
            // Parents first, then the mount point: a directory, or a file for a file.
            let mut acc = PathBuf::new();
            let comps: Vec<_> = rel.components().collect();
            for (i, comp) in comps.iter().enumerate() {
                acc.push(comp);
                if i + 1 < comps.len() || b.src.is_dir() {
                    s.push(Step::Mkdir(c(root.join(&acc))));
                } else {
                    s.push(Step::Touch(c(root.join(&acc))));
                }
            }
            let target = c(root.join(rel));
            s.push(Step::Mount {
                src: Some(c(&b.src)),
                target: target.clone(),
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REC,
                data: None,
            });
            if !b.writable {
                s.push(Step::RemountRo { target, src: c(&b.src) });
            }
        }
        if binds.iter().any(|b| b.src == Path::new("/usr")) {
            for (link, target) in USR_LINKS {
                if Path::new("/").join(link).is_symlink() {
                    s.push(Step::Symlink { target: c(target), link: at(link) });
                }
            }
        }
        s.push(Step::Mkdir(at("proc")));
        s.push(Step::Mount {
            src: Some(c("proc")),
            target: at("proc"),
            fstype: Some(c("proc")),
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: None,
        });
        s.push(Step::Mkdir(at("dev")));
        s.push(Step::Mount {
            src: Some(c("tmpfs")),
            target: at("dev"),
            fstype: Some(c("tmpfs")),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: Some(c("mode=0755,size=64k")),
        });
        for d in DEVICES {
            let host = Path::new("/dev").join(d);
            if host.exists() {
                s.push(Step::Touch(at(&format!("dev/{d}"))));
                s.push(Step::Mount {
                    src: Some(c(&host)),
                    target: at(&format!("dev/{d}")),
                    fstype: None,
                    flags: libc::MS_BIND,
                    data: None,
                });
            }
        }
        for (link, target) in [
            ("dev/fd", "/proc/self/fd"),
            ("dev/stdin", "/proc/self/fd/0"),
            ("dev/stdout", "/proc/self/fd/1"),
            ("dev/stderr", "/proc/self/fd/2"),
        ] {
            s.push(Step::Symlink { target: c(target), link: at(link) });
        }
        s.push(Step::Mkdir(at("tmp")));
        s.push(Step::Mount {
            src: Some(c("tmpfs")),
            target: at("tmp"),
            fstype: Some(c("tmpfs")),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: Some(c(format!("mode=1777,size={tmp_size}"))),
        });
        s.push(Step::Mkdir(at("workspace")));
        s.push(Step::Mount {
            src: Some(c(workspace)),
            target: at("workspace"),
            fstype: None,
            flags: libc::MS_BIND | libc::MS_REC,
            data: None,
        });
        s.push(Step::Mkdir(at(".oldroot")));
        s.push(Step::Pivot { root: c(root), old: at(".oldroot") });
        s.push(Step::Chdir(c("/")));
        s.push(Step::UmountDetach(c("/.oldroot")));
        s.push(Step::Rmdir(c("/.oldroot")));
        // The root tmpfs itself becomes read-only; its mounts keep their modes.
        s.push(Step::Mount {
            src: None,
            target: c("/"),
            fstype: None,
            flags: libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
            data: None,
        });
        s.push(Step::Chdir(c("/workspace")));
        RootPlan { steps: s }
    }

    /// Runs the plan. In the child only: it changes the mount namespace.
    pub fn execute(&self) -> Result<(), String> {
        for step in &self.steps {
            let r: io::Result<()> = match step {
                Step::Mount { src, target, fstype, flags, data } => {
                    sys::mount(src.as_deref(), target, fstype.as_deref(), *flags, data.as_deref())
                }
                Step::RemountRo { target, src } => sys::locked_mount_flags(src).and_then(|locked| {
                    sys::mount(None, target, None, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | locked, None)
                }),
                Step::Mkdir(p) => sys::mkdir(p, 0o755),
                Step::Touch(p) => sys::touch(p),
                Step::Symlink { target, link } => sys::symlink(target, link),
                Step::Pivot { root, old } => sys::pivot_root(root, old),
                Step::Chdir(p) => sys::chdir(p),
                Step::UmountDetach(p) => sys::umount_detach(p),
                // SAFETY: p is NUL-terminated.
                Step::Rmdir(p) => match unsafe { libc::rmdir(p.as_ptr()) } {
                    0 => Ok(()),
                    _ => Err(io::Error::last_os_error()),
                },
            };
            r.map_err(|e| format!("{step:?}: {e}"))?;
        }
        Ok(())
    }
}
