//! The BPF-LSM loader: loads the `lsm_cgroup/<hook>` programs compiled by
//! `phantom_ebpf::lsm` with aya against the running kernel's BTF and
//! attaches them (`BPF_LSM_CGROUP`) to a cgroup v2 directory; dropping the
//! [`LoadedLsm`] detaches them.
//!
//! Needs a kernel with `bpf` in `lsm=` and BTF (`/sys/kernel/btf/vmlinux`),
//! Linux 6.0+ (lsm_cgroup), 6.1+ for `userns_create`, and CAP_SYS_ADMIN.
//! The host this project is developed on refuses LSM programs (EPERM); the
//! VM tier (`cargo xtask vm-test`, tests/vm_lsm.rs) is where this runs.
//!
//! Kernel-dependent resolution happens here, never in the compiler: the
//! offsets of the kernel struct fields the programs read (`struct file`
//! for file_open, `task_struct` -> `css_set` -> `cgroup` -> `kernfs_node`
//! for ptrace_access_check and task_kill) are CO-RE field relocations in
//! the object's `.BTF.ext`, which aya resolves against the running
//! kernel's BTF when [`LoadedLsm::load`] loads it (libbpf does the same
//! for `bpftool prog loadall`). [`LoadedLsm::load_with`] instead patches
//! offsets read from the kernel's BTF by this module ([`kernel_layout`]),
//! for loaders without CO-RE; the VM tier checks that both agree.
//!
//! # Audit records and pins
//! Every program writes its decisions into the object's ring buffer
//! ([`phantom_ebpf::audit`]). [`LoadedLsm::audit`] hands out its reader;
//! [`LoadedLsm::pin`] pins programs and ring buffer so that `phantom audit`
//! (another process) can read them:
//! ```text
//! <dir>/                 /sys/fs/bpf/phantom/<hash>/lsm for a loaded bundle
//!     programs/<name>    phantom_open, phantom_kill, ...
//!     audit              the ring buffer (BPF_MAP_TYPE_RINGBUF)
//!     info               symlink; target: {"files":[policy files]} (JSON),
//!                        to name the file of a record's `file` index
//! ```
//! A ring buffer has one consumer position: two readers of one pin share
//! (and split) the stream.

mod audit_reader;

pub use audit_reader::{AuditReader, PinnedInfo, AUDIT_PIN, INFO_PIN};

use aya::programs::LsmCgroup;
use aya::{Btf, Ebpf};
use phantom_bpf_sys as sys;
use phantom_ebpf::audit;
use phantom_ebpf::lsm::{Hook, KernelField, KernelLayout, LsmError, LsmPrograms};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum LsmLoadError {
    #[error("reading the kernel's BTF ({path}): {source}")]
    ReadBtf { path: String, source: std::io::Error },
    #[error("the kernel's BTF: {0}")]
    Btf(String),
    #[error("the kernel's BTF has no member `{member}` in `struct {strukt}`")]
    NoField { strukt: &'static str, member: &'static str },
    #[error(transparent)]
    Compile(#[from] LsmError),
    #[error("aya cannot parse the LSM object: {0}")]
    Parse(String),
    /// The kernel refused the program; `detail` keeps aya's error with
    /// the verifier log.
    #[error("loading lsm_cgroup/{hook}: {detail}")]
    Load { hook: &'static str, detail: String },
    #[error("opening cgroup {}: {source}", path.display())]
    Cgroup { path: PathBuf, source: std::io::Error },
    #[error("attaching lsm_cgroup/{hook} to {}: {detail}", path.display())]
    Attach { hook: &'static str, path: PathBuf, detail: String },
    #[error("the audit ring buffer: {0}")]
    Audit(String),
    #[error("pinning at {}: {detail}", path.display())]
    Pin { path: PathBuf, detail: String },
    #[error("no audit ring buffer is pinned at {}: {detail}", path.display())]
    NotPinned { path: PathBuf, detail: String },
}

/// The offsets of the [`KernelField`]s on the running kernel.
pub fn kernel_layout() -> Result<KernelLayout, LsmLoadError> {
    let bytes =
        std::fs::read(VMLINUX_BTF).map_err(|source| LsmLoadError::ReadBtf { path: VMLINUX_BTF.into(), source })?;
    layout_from_btf(&bytes)
}

/// The offsets of the [`KernelField`]s in a kernel BTF blob.
pub fn layout_from_btf(bytes: &[u8]) -> Result<KernelLayout, LsmLoadError> {
    let btf = btf::Types::parse(bytes).map_err(LsmLoadError::Btf)?;
    KernelLayout::resolve(|f: KernelField| {
        let (strukt, member) = f.btf_name();
        btf.member_offset(strukt, member).ok_or(LsmLoadError::NoField { strukt, member })
    })
}

/// Loaded LSM programs and their attachments. Dropping it detaches every
/// attachment and unloads the programs.
pub struct LoadedLsm {
    ebpf: Ebpf,
    hooks: Vec<Hook>,
    links: Vec<Attached>,
}

/// One program attached to one cgroup; closing the link detaches it.
struct Attached {
    hook: Hook,
    cgroup: PathBuf,
    link: OwnedFd,
}

impl std::fmt::Debug for LoadedLsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let links: Vec<_> = self.links.iter().map(|a| (a.hook.name(), &a.cgroup)).collect();
        f.debug_struct("LoadedLsm").field("hooks", &self.hooks).field("links", &links).finish()
    }
}

impl LoadedLsm {
    /// Loads every program from the kernel-independent object with CO-RE
    /// relocations ([`LsmPrograms::object_core`]): aya resolves the struct
    /// offsets against the running kernel's BTF.
    pub fn load(programs: &LsmPrograms) -> Result<LoadedLsm, LsmLoadError> {
        LoadedLsm::load_object(programs, &programs.object_core()?)
    }

    /// Loads with offsets patched in from `layout` (it must be the running
    /// kernel's, as [`kernel_layout`] reads it): for loaders without CO-RE.
    pub fn load_with(programs: &LsmPrograms, layout: &KernelLayout) -> Result<LoadedLsm, LsmLoadError> {
        LoadedLsm::load_object(programs, &programs.object(layout)?)
    }

    fn load_object(programs: &LsmPrograms, bytes: &[u8]) -> Result<LoadedLsm, LsmLoadError> {
        let mut ebpf = Ebpf::load(bytes).map_err(|e| LsmLoadError::Parse(format!("{e:?}")))?;
        let btf = Btf::from_sys_fs().map_err(|e| LsmLoadError::Btf(format!("{e:?}")))?;
        let mut hooks = Vec::new();
        for p in &programs.programs {
            let hook = p.hook;
            let prog = lsm_prog(&mut ebpf, hook)?;
            prog.load(hook.name(), &btf)
                .map_err(|e| LsmLoadError::Load { hook: hook.name(), detail: format!("{e:?}") })?;
            hooks.push(hook);
        }
        Ok(LoadedLsm { ebpf, hooks, links: Vec::new() })
    }

    /// The hooks loaded.
    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    /// The reader of the programs' audit ring buffer. The first call takes
    /// it (pin first if another process should read it too).
    pub fn audit(&mut self) -> Result<AuditReader, LsmLoadError> {
        let map = self.ebpf.take_map(audit::RINGBUF_MAP).ok_or_else(|| {
            LsmLoadError::Audit(format!("no map {} (no program, or audit() called twice)", audit::RINGBUF_MAP))
        })?;
        AuditReader::from_map(map)
    }

    /// Pins the programs under `dir/programs/`, the ring buffer at
    /// `dir/audit` and `dir/info` (policy file names); `dir` is created
    /// and must be on bpffs.
    pub fn pin(&mut self, dir: &Path, files: &[String]) -> Result<(), LsmLoadError> {
        let err = |path: &Path, detail: String| LsmLoadError::Pin { path: path.into(), detail };
        let progs = dir.join("programs");
        std::fs::create_dir_all(&progs).map_err(|e| err(&progs, e.to_string()))?;
        for hook in self.hooks.clone() {
            let path = progs.join(hook.prog_name());
            lsm_prog(&mut self.ebpf, hook)?.pin(&path).map_err(|e| err(&path, format!("{e:?}")))?;
        }
        let ring = dir.join(AUDIT_PIN);
        let map = self.ebpf.map(audit::RINGBUF_MAP).ok_or_else(|| err(&ring, "the ring buffer was taken".into()))?;
        map.pin(&ring).map_err(|e| err(&ring, format!("{e:?}")))?;
        let info = dir.join(INFO_PIN);
        let target = serde_json::to_string(&PinnedInfo { files: files.to_vec() }).expect("plain JSON");
        std::os::unix::fs::symlink(target, &info).map_err(|e| err(&info, e.to_string()))?;
        Ok(())
    }

    /// Attaches every program to the cgroup v2 directory `cgroup`, each
    /// through a bpf link this object owns. On an error, the programs
    /// attached by this call are detached again.
    pub fn attach(&mut self, cgroup: &Path) -> Result<(), LsmLoadError> {
        let dir = open_cgroup(cgroup)?;
        let before = self.links.len();
        for hook in self.hooks.clone() {
            match self.link(hook, &dir, cgroup) {
                Ok(link) => self.links.push(Attached { hook, cgroup: cgroup.into(), link }),
                Err(e) => {
                    self.links.truncate(before);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn link(&mut self, hook: Hook, dir: &File, cgroup: &Path) -> Result<OwnedFd, LsmLoadError> {
        let prog = self.prog_fd(hook)?;
        sys::link_create(prog, dir.as_fd(), sys::BPF_LSM_CGROUP).map_err(|e| LsmLoadError::Attach {
            hook: hook.name(),
            path: cgroup.into(),
            detail: e.to_string(),
        })
    }

    fn prog_fd(&self, hook: Hook) -> Result<BorrowedFd<'_>, LsmLoadError> {
        let missing = |e: String| LsmLoadError::Parse(format!("{}: {e}", hook.prog_name()));
        let prog = self.ebpf.program(hook.prog_name()).ok_or_else(|| missing("no such program".into()))?;
        Ok(prog.fd().map_err(|e| missing(format!("{e:?}")))?.as_fd())
    }

    /// Moves `old`'s attachments to `cgroup` over to these programs without
    /// a gap (the policy update of a running sandbox): a hook both have
    /// switches program in place (`BPF_LINK_UPDATE`, one store in the
    /// cgroup's program array); a hook only these programs have is
    /// attached; then `old`'s hooks that these programs lack are detached.
    /// At every moment each hook runs the old or the new program (for a
    /// moment both, where the new version adds a hook), never neither. On
    /// an error the swapped links are switched back and the attachments
    /// this call made are removed, so `old` keeps enforcing.
    pub fn take_over(&mut self, old: &mut LoadedLsm, cgroup: &Path) -> Result<TakeOver, LsmLoadError> {
        let dir = open_cgroup(cgroup)?;
        let before = self.links.len();
        let mut report = TakeOver::default();
        for hook in self.hooks.clone() {
            let step = match old.links.iter().position(|a| a.hook == hook && a.cgroup == cgroup) {
                Some(i) => self.swap_in(old, i).map(|()| report.swapped.push(hook)),
                None => self.link(hook, &dir, cgroup).map(|link| {
                    self.links.push(Attached { hook, cgroup: cgroup.into(), link });
                    report.added.push(hook);
                }),
            };
            if let Err(e) = step {
                self.give_back(old, before, &report.swapped);
                return Err(e);
            }
        }
        let before_detach = old.links.len();
        old.links.retain(|a| a.cgroup != cgroup);
        report.removed = before_detach - old.links.len();
        Ok(report)
    }

    /// Switches `old.links[i]` to this object's program for its hook and
    /// takes the link.
    fn swap_in(&mut self, old: &mut LoadedLsm, i: usize) -> Result<(), LsmLoadError> {
        let hook = old.links[i].hook;
        let detail = |e: sys::SysError| LsmLoadError::Attach {
            hook: hook.name(),
            path: old.links[i].cgroup.clone(),
            detail: format!("replacing the program of the link: {e}"),
        };
        sys::link_update(old.links[i].link.as_fd(), self.prog_fd(hook)?, old.prog_fd(hook)?).map_err(detail)?;
        self.links.push(old.links.remove(i));
        Ok(())
    }

    /// Undoes a failed [`LoadedLsm::take_over`]: links taken from `old`
    /// go back and run `old`'s programs again (if even that fails, the link
    /// keeps the new program, which holds itself alive: the hook still
    /// enforces a version); attachments this call added go.
    fn give_back(&mut self, old: &mut LoadedLsm, before: usize, swapped: &[Hook]) {
        for a in self.links.drain(before..).collect::<Vec<_>>() {
            if !swapped.contains(&a.hook) {
                continue;
            }
            if let (Ok(o), Ok(n)) = (old.prog_fd(a.hook), self.prog_fd(a.hook)) {
                let _ = sys::link_update(a.link.as_fd(), o, n);
            }
            old.links.push(a);
        }
    }

    /// Detaches every attachment (to every cgroup); the programs stay loaded.
    /// (Closing a link detaches it: this cannot fail.)
    pub fn detach_all(&mut self) {
        self.links.clear();
    }

    /// Detaches what [`LoadedLsm::attach`] attached to `cgroup` (one
    /// sandbox's cgroup; the attachments to other cgroups stay).
    pub fn detach_cgroup(&mut self, cgroup: &Path) {
        self.links.retain(|a| a.cgroup != cgroup);
    }

    /// The cgroups this object's programs are attached to.
    pub fn attached_cgroups(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.links.iter().map(|a| a.cgroup.clone()).collect();
        v.dedup();
        v
    }
}

/// What [`LoadedLsm::take_over`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TakeOver {
    /// Hooks whose link now runs the new program.
    pub swapped: Vec<Hook>,
    /// Hooks the new version adds.
    pub added: Vec<Hook>,
    /// Old attachments detached (hooks the new version no longer has).
    pub removed: usize,
}

fn open_cgroup(cgroup: &Path) -> Result<File, LsmLoadError> {
    File::open(cgroup).map_err(|source| LsmLoadError::Cgroup { path: cgroup.into(), source })
}

impl Drop for LoadedLsm {
    fn drop(&mut self) {
        // Links first (each detaches as its fd closes), then `ebpf` closes
        // the program fds.
        self.links.clear();
    }
}

fn lsm_prog(ebpf: &mut Ebpf, hook: Hook) -> Result<&mut LsmCgroup, LsmLoadError> {
    let missing = || LsmLoadError::Parse(format!("the object has no program {}", hook.prog_name()));
    ebpf.program_mut(hook.prog_name()).ok_or_else(missing)?.try_into().map_err(|_| missing())
}

/// Just enough of a BTF reader to find struct member offsets in the
/// kernel's BTF (every kind up to ENUM64 is skipped correctly).
mod btf {
    const MAGIC: u16 = 0xeb9f;
    const KIND_STRUCT: u32 = 4;
    const KIND_UNION: u32 = 5;
    const KIND_TYPEDEF: u32 = 8;
    const KIND_VOLATILE: u32 = 9;
    const KIND_CONST: u32 = 10;
    const KIND_RESTRICT: u32 = 11;
    const KIND_TYPE_TAG: u32 = 18;

    /// One type record: kind, name, `size_or_type`, and where its extra
    /// data (members) starts.
    struct Type {
        kind: u32,
        name: u32,
        kind_flag: bool,
        vlen: u32,
        size_or_type: u32,
        extra: usize,
    }

    pub struct Types<'a> {
        types: Vec<Type>,
        data: &'a [u8],
        strings: &'a [u8],
    }

    fn u32_at(d: &[u8], at: usize) -> Result<u32, String> {
        d.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("truncated at byte {at}"))
    }

    impl<'a> Types<'a> {
        pub fn parse(b: &'a [u8]) -> Result<Types<'a>, String> {
            if b.len() < 24 || u16::from_le_bytes([b[0], b[1]]) != MAGIC {
                return Err("not little-endian BTF (bad magic)".into());
            }
            let hdr = u32_at(b, 4)? as usize;
            let (toff, tlen, soff, slen) = (u32_at(b, 8)?, u32_at(b, 12)?, u32_at(b, 16)?, u32_at(b, 20)?);
            let range = |off: u32, len: u32| {
                b.get(hdr + off as usize..hdr + off as usize + len as usize)
                    .ok_or_else(|| "section out of range".to_string())
            };
            let data = range(toff, tlen)?;
            let strings = range(soff, slen)?;
            let mut types = Vec::new();
            let mut pos = 0;
            while pos < data.len() {
                let name = u32_at(data, pos)?;
                let info = u32_at(data, pos + 4)?;
                let size_or_type = u32_at(data, pos + 8)?;
                let (vlen, kind, kind_flag) = (info & 0xffff, (info >> 24) & 0x1f, info >> 31 == 1);
                let extra = pos + 12;
                let vlen_us = vlen as usize;
                let len = match kind {
                    1 | 14 | 17 => 4,                // INT, VAR, DECL_TAG
                    3 => 12,                         // ARRAY
                    4 | 5 | 15 | 19 => 12 * vlen_us, // STRUCT, UNION, DATASEC, ENUM64
                    6 | 13 => 8 * vlen_us,           // ENUM, FUNC_PROTO
                    2 | 7..=12 | 16 | 18 => 0,
                    k => return Err(format!("unknown BTF kind {k}")),
                };
                types.push(Type { kind, name, kind_flag, vlen, size_or_type, extra });
                pos = extra + len;
            }
            Ok(Types { types, data, strings })
        }

        fn name(&self, off: u32) -> &[u8] {
            let rest = self.strings.get(off as usize..).unwrap_or(&[]);
            &rest[..rest.iter().position(|&c| c == 0).unwrap_or(rest.len())]
        }

        fn by_id(&self, id: u32) -> Option<&Type> {
            self.types.get((id as usize).checked_sub(1)?)
        }

        /// Byte offset of `member` in `struct strukt`, looking through
        /// anonymous struct and union members.
        pub fn member_offset(&self, strukt: &str, member: &str) -> Option<u32> {
            let s = self
                .types
                .iter()
                .find(|t| t.kind == KIND_STRUCT && t.vlen > 0 && self.name(t.name) == strukt.as_bytes())?;
            self.find_in(s, member.as_bytes(), 0).map(|bits| bits / 8)
        }

        fn find_in(&self, t: &Type, member: &[u8], base_bits: u32) -> Option<u32> {
            for i in 0..t.vlen as usize {
                let at = t.extra + 12 * i;
                let (name, ty, off) =
                    (u32_at(self.data, at).ok()?, u32_at(self.data, at + 4).ok()?, u32_at(self.data, at + 8).ok()?);
                let bits = base_bits + if t.kind_flag { off & 0xff_ffff } else { off };
                if name != 0 && self.name(name) == member {
                    return Some(bits);
                }
                if name == 0 {
                    let inner = self.resolve(ty)?;
                    if matches!(inner.kind, KIND_STRUCT | KIND_UNION) {
                        if let Some(found) = self.find_in(inner, member, bits) {
                            return Some(found);
                        }
                    }
                }
            }
            None
        }

        /// Follows typedefs and qualifiers.
        fn resolve(&self, mut id: u32) -> Option<&Type> {
            for _ in 0..32 {
                let t = self.by_id(id)?;
                match t.kind {
                    KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = t.size_or_type,
                    _ => return Some(t),
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_kernel_btf_has_struct_file() {
        // Every kernel this project targets has BTF; the host's layout must
        // resolve (the VM tier checks the guest's).
        if !Path::new(VMLINUX_BTF).exists() {
            panic!("{VMLINUX_BTF} is missing: Phantom's BPF-LSM loader needs a kernel with BTF");
        }
        let l = kernel_layout().expect("every field resolves");
        assert!(l.file_f_path > l.file_f_mode, "{l:?}");
        assert_eq!(l.file_f_path % 8, 0, "{l:?}");
        // Pointers are 8-byte aligned, the ids and pids 8 and 4.
        for off in [l.task_cgroups, l.css_set_dfl_cgrp, l.cgroup_kn, l.kernfs_node_id] {
            assert_eq!(off % 8, 0, "{l:?}");
        }
        assert_eq!(l.task_tgid % 4, 0, "{l:?}");
        assert!(l.task_cgroups > l.task_tgid, "task_struct keeps cgroups after tgid: {l:?}");
    }

    #[test]
    fn garbage_is_not_btf() {
        assert!(matches!(layout_from_btf(&[0; 64]), Err(LsmLoadError::Btf(_))));
    }
}
