//! BPF-LSM programs (`lsm_cgroup/<hook>`) generated from the filesystem and
//! kernel parts of the policy IR, with the instruction core in
//! [`crate::bpf`]. They are attached with `BPF_LSM_CGROUP` to the policy's
//! cgroup v2 directory (phantom-user's `lsm` module) and return 1 to allow,
//! 0 to deny (the caller sees `EPERM`). They need a kernel booted with `bpf`
//! in `lsm=` and with BTF (`/sys/kernel/btf/vmlinux`); lsm_cgroup exists
//! since Linux 6.0, `userns_create` since 6.1.
//!
//! # The hook set
//! At most 10 distinct lsm_cgroup hooks can be in use system-wide (the
//! kernel's `CGROUP_LSM_NUM`, shared by every user of lsm_cgroup on the
//! machine), so Phantom uses 9 and folds checks into shared hooks:
//!
//! | id | hook | section | from the IR | decides |
//! |---|---|---|---|---|
//! | 1 | file_open | `lsm_cgroup/file_open` | `filesystem.rules` with `deny`; `exec.allow` | deny carve-outs by path and access; the exec allow-list (below) |
//! | 2 | sb_mount | `lsm_cgroup/sb_mount` | `kernel.mount: deny` | every `mount(2)` (new mounts, remounts, binds, propagation changes) |
//! | 3 | move_mount | `lsm_cgroup/move_mount` | `kernel.mount: deny` | the new mount API (`fsmount` + `move_mount(2)`), which never calls sb_mount |
//! | 4 | bpf | `lsm_cgroup/bpf` | `kernel.bpf: deny` | every `bpf(2)` command |
//! | 5 | userns_create | `lsm_cgroup/userns_create` | `kernel.user_namespaces: deny` | `unshare`/`clone` with `CLONE_NEWUSER` |
//! | 6 | socket_create | `lsm_cgroup/socket_create` | `kernel.raw_sockets: deny` | `AF_PACKET`, and `SOCK_RAW` of `AF_INET`/`AF_INET6` ([`socket`]) |
//! | 7 | socket_connect | `lsm_cgroup/socket_connect` | `kernel.unix_sockets.connect` | `AF_UNIX` connects by path and abstract name ([`socket`]) |
//! | 8 | ptrace_access_check | `lsm_cgroup/ptrace_access_check` | `kernel.ptrace: deny` | ptrace and ptrace-mode access checks toward tasks of another cgroup ([`task`]) |
//! | 9 | task_kill | `lsm_cgroup/task_kill` | `kernel.signals: deny` | signals (signal 0 included) toward tasks of another cgroup ([`task`]) |
//!
//! The id is the `hook` field of audit records ([`Hook::id`]); one slot is
//! left for other users of lsm_cgroup on the machine.
//!
//! **Not hooks, on purpose.** `kernel.io_uring` and `kernel.kernel_modules`
//! map one to one to syscalls (`io_uring_setup`/`io_uring_enter`/
//! `io_uring_register`; `init_module`/`finit_module`/`delete_module`),
//! which seccomp refuses before any object exists, on every kernel,
//! without a slot; the io_uring LSM hooks (`uring_override_creds`,
//! `uring_sqpoll`, `uring_cmd`) only cover parts of io_uring, and module
//! loading also needs `kernel_read_file` + `kernel_load_data` +
//! `kernel_module_request` (three slots). `io_uring: deny` becomes seccomp
//! rules in the IR (phantom-dsl's `decode/switches.rs`); module loading
//! needs `CAP_SYS_MODULE` in the initial user namespace, which a sandbox
//! never has, so it takes no rule. Also outside the set:
//! `remove` access (path_unlink/path_rename), sending on unconnected unix
//! datagram sockets (`sendmsg` with an address; unix_may_send), and
//! `PTRACE_TRACEME` (the tracer, outside, is not the acting task).
//!
//! # Audit and complain mode
//! Every program records each denial into the ring buffer
//! `phantom_audit` with the layout of [`crate::audit`] (docs/audit.md);
//! the record is built in the per-CPU scratch value [`PATH_MAP`], whose
//! object part is file_open's path buffer. With `audit.mode: complain`
//! every decision site records a `complain` verdict and returns 1
//! (allow). A failed scratch lookup (impossible for an array) returns the
//! verdict without a record.
//!
//! # file_open
//! The program enforces the **deny** rules and the exec allow-list: allow
//! rules and "paths no allow rule covers are denied" stay with Landlock,
//! which expresses them natively. For each open it:
//! 1. skips backing files (`FMODE_BACKING`: overlayfs opens the real file
//!    on behalf of an open this program already judged by its visible
//!    path; the backing path is relative to a hidden layer);
//! 2. computes the access from `file->f_mode` and `file->f_flags`:
//!    `FMODE_READ` (0x1) -> read, `FMODE_WRITE` (0x2) -> write,
//!    `__FMODE_EXEC` (0x20, in `f_flags`: exec opens do not set it in
//!    `f_mode`) -> exec, `FMODE_CREATED` (0x100000, the open created the
//!    file) -> create. `remove` cannot be seen at open: a rule whose access
//!    is only `remove` emits no code. A denied `create` fails the open, but
//!    the empty file the kernel already created stays;
//! 3. writes the path with `bpf_d_path(&file->f_path, buf, PATH_BUF)` into
//!    the record's object part ([`PATH_BUF`] = 4096 = `PATH_MAX` bytes);
//!    the path is relative to the opener's root, so sandbox paths are what
//!    the rules name;
//! 4. **length limit**: when `bpf_d_path` fails (a path of more than 4095
//!    bytes does not fit with its NUL: `-ENAMETOOLONG`) the open is
//!    **denied, never allowed** (recorded with an empty object): a path the
//!    program cannot read might be under a deny rule or off the exec list;
//! 5. makes the path a **key**: `/` over its NUL at `[len-1]`, a NUL at
//!    `[len]` (variable-offset stores after bounds checks the verifier
//!    sees; a path that fills the buffer gets only the `/`, and no pattern
//!    key is long enough to reach its end). Component boundaries become
//!    byte prefixes: the pattern `/tmp` is the key prefix `/tmp/` (so
//!    `/tmp` and `/tmp/x` match, `/tmpx` does not), the prefix glob
//!    `/usr/lib/python3*` is `/usr/lib/python3`, and `/` is the empty
//!    prefix (everything, paths without a leading `/` such as `pipe:[..]`
//!    included). The NUL keeps stale bytes of an earlier, longer path in
//!    the reused buffer from matching; patterns contain no NUL
//!    (`lsm/path_trie.rs` has the details, and the one odd case of a glob
//!    ending in `/`);
//! 6. **walks a compiled byte trie** (radix tree, `lsm/path_walk.rs`) over the
//!    key prefixes of all deny rules whose access set an open can show,
//!    the `exec.allow` entries and [`Options::exec_extra`]: straight-line
//!    code, no map, no loop, loads at constant offsets only. A node with
//!    one child compares its edge in 8-, 4-, 2- and 1-byte chunks; a node
//!    with several loads the byte at its depth and dispatches (a `jeq`
//!    chain up to 4 children, else a binary search on the byte), then
//!    compares the rest of the edge. A mismatch jumps to the decision of
//!    the deepest pattern node passed (known statically). The cost of an
//!    open grows with the key's length and the tree's fan-out, not with
//!    the number of rules. Chunk loads are unaligned, which the verifier
//!    allows for map values on x86_64 and aarch64;
//! 7. **decides** at that node from every pattern that is a byte prefix of
//!    it (ancestors included): the deny rules among them in policy order,
//!    each a `jset` of its access bits on the open's, so the first rule
//!    whose access set meets the open's denies and is the one recorded
//!    (as the linear scan did; rules whose bits earlier ones cover are
//!    left out: they could never be first); then, when the policy has
//!    `exec`, an open with `__FMODE_EXEC` is allowed only where an exec
//!    entry applies, else denied (rule: none; line: the list's first
//!    entry); everything else is allowed. Nodes with the same decision
//!    share one block. No pattern passed is the root's decision (deny exec
//!    opens when there is an exec list, allow otherwise). Before a path
//!    denial is recorded the NUL is put back at `[len-1]`, so the record
//!    carries the path itself.
//!
//! The exec allow-list counts every file the kernel opens for exec: the
//! program, a script's `#!` interpreter **and an ELF program's dynamic
//! loader** (`PT_INTERP`, e.g.
//! `/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2`), by real path
//! (bpf_d_path resolves symlinks). Shared libraries are mapped, not
//! exec-opened, and are not checked. Why file_open and not
//! bprm_check_security: it costs no extra hook slot, it sees the dynamic
//! loader and `uselib` too (bprm_check sees only the program and script
//! interpreters), and the path buffer and matcher are already there.
//!
//! # Kernel struct offsets
//! The programs read kernel struct fields ([`KernelField`]: `struct file`
//! `f_mode`, `f_flags`, `f_path`; `task_struct` `tgid`, `cgroups`;
//! `css_set` `dfl_cgrp`; `cgroup` `kn`; `kernfs_node` `id`), whose offsets
//! vary between kernels. Compilation stays pure: the instructions carry
//! placeholders and a [`FieldReloc`] list. [`LsmPrograms::object_core`]
//! (what the loader uses) fills in the offsets of minimal local struct
//! definitions ([`KernelLayout::LOCAL`]) and emits a CO-RE field
//! relocation (`BPF_CORE_FIELD_BYTE_OFFSET`, access string `0:<member>`)
//! per placeholder in `.BTF.ext`; aya and libbpf rewrite them against the
//! running kernel's BTF, so one object serves every kernel.
//! [`LsmPrograms::object`] instead patches in a [`KernelLayout`] read from
//! the kernel's BTF by the loader, for loaders without CO-RE.
//!
//! # Policy lines
//! Every instruction of a rule carries that rule's line. In file_open, the
//! trie code of a node (its dispatch and edge compares) carries the line
//! of the first pattern under it in policy order (deny rules, then the
//! exec list; the runtime's command has no line), so a node only one
//! pattern goes through carries that pattern's line; each `jset` of a
//! decision block and each rule's denial carry the rule's line, the exec
//! test and denial the exec list's first line. The prologue, the
//! length-limit denial and the final allow carry the first deny rule's
//! line (the program exists for it). The kernel-hook programs carry
//! the line that set their switch (`KernelPolicy::origins`: the
//! `kernel.<switch>` value, else the `security.level` whose default it
//! is); a default of the implied level has no line.

mod emit;
mod file_open;
mod path_trie;
mod path_walk;
mod socket;
mod task;

use crate::audit::{self, Site, Verdict};
use crate::bpf::{encode, BpfError, Encoded, Insn, Op, SourceLoc};
use crate::elf::core::{CoreField, MemberKind};
use crate::elf::{ElfError, MapDef, ObjectBuilder, Program, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_RINGBUF};
use crate::netprog::Locator;
use phantom_dsl::ir::{AuditMode, PathPattern, Policy, Toggle};
use std::collections::BTreeMap;

pub use file_open::{access_mask, FMODE_BACKING, FMODE_CREATED, FMODE_EXEC, FMODE_READ, FMODE_WRITE, PATH_BUF};
pub use socket::{AF_INET, AF_INET6, AF_PACKET, AF_UNIX, SOCK_RAW};

/// The per-CPU array holding the record being built (its object part is
/// the path buffer).
pub const PATH_MAP: &str = audit::SCRATCH_MAP;

/// The LSM hooks Phantom attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    FileOpen,
    SbMount,
    MoveMount,
    Bpf,
    UsernsCreate,
    SocketCreate,
    SocketConnect,
    PtraceAccessCheck,
    TaskKill,
}

impl Hook {
    /// Every hook Phantom uses: 9 of the kernel's 10 lsm_cgroup slots.
    pub const ALL: [Hook; 9] = [
        Hook::FileOpen,
        Hook::SbMount,
        Hook::MoveMount,
        Hook::Bpf,
        Hook::UsernsCreate,
        Hook::SocketCreate,
        Hook::SocketConnect,
        Hook::PtraceAccessCheck,
        Hook::TaskKill,
    ];

    /// The `hook` field of an audit record (1-based, stable).
    pub fn id(self) -> u16 {
        Hook::ALL.iter().position(|h| *h == self).expect("in ALL") as u16 + 1
    }

    pub fn from_id(id: u16) -> Option<Hook> {
        Hook::ALL.get(usize::from(id).checked_sub(1)?).copied()
    }

    /// The LSM hook name (what aya's `LsmCgroup::load` and the kernel's
    /// `bpf_lsm_<name>` take).
    pub fn name(self) -> &'static str {
        match self {
            Hook::FileOpen => "file_open",
            Hook::SbMount => "sb_mount",
            Hook::MoveMount => "move_mount",
            Hook::Bpf => "bpf",
            Hook::UsernsCreate => "userns_create",
            Hook::SocketCreate => "socket_create",
            Hook::SocketConnect => "socket_connect",
            Hook::PtraceAccessCheck => "ptrace_access_check",
            Hook::TaskKill => "task_kill",
        }
    }

    /// The ELF section in libbpf conventions.
    pub fn section(self) -> String {
        format!("lsm_cgroup/{}", self.name())
    }

    /// The program (and function) name, at most 15 characters.
    pub fn prog_name(self) -> &'static str {
        match self {
            Hook::FileOpen => "phantom_open",
            Hook::SbMount => "phantom_mount",
            Hook::MoveMount => "phantom_mvmount",
            Hook::Bpf => "phantom_bpf",
            Hook::UsernsCreate => "phantom_userns",
            Hook::SocketCreate => "phantom_rawsock",
            Hook::SocketConnect => "phantom_unixcon",
            Hook::PtraceAccessCheck => "phantom_ptrace",
            Hook::TaskKill => "phantom_kill",
        }
    }
}

/// The kernel switches an LSM hook enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Switch {
    Ptrace,
    Mount,
    Bpf,
    UserNamespaces,
    Signals,
    RawSockets,
    /// `unix_sockets` (its `connect` list).
    UnixSockets,
}

impl Switch {
    /// The key under `security.kernel`.
    pub fn key(self) -> &'static str {
        match self {
            Switch::Mount => "mount",
            Switch::Bpf => "bpf",
            Switch::UserNamespaces => "user_namespaces",
            Switch::Ptrace => "ptrace",
            Switch::Signals => "signals",
            Switch::RawSockets => "raw_sockets",
            Switch::UnixSockets => "unix_sockets",
        }
    }
}

/// A kernel struct field a program reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelField {
    /// `struct file`, `f_mode` (`fmode_t`, 4 bytes).
    FileMode,
    /// `struct file`, `f_path` (`struct path`).
    FilePath,
    /// `struct file`, `f_flags` (the open flags; `__FMODE_EXEC` for exec).
    FileFlags,
    /// `struct task_struct`, `tgid`.
    TaskTgid,
    /// `struct task_struct`, `cgroups` (`struct css_set *`).
    TaskCgroups,
    /// `struct css_set`, `dfl_cgrp` (`struct cgroup *`).
    CssSetDflCgrp,
    /// `struct cgroup`, `kn` (`struct kernfs_node *`).
    CgroupKn,
    /// `struct kernfs_node`, `id` (u64).
    KernfsNodeId,
}

impl KernelField {
    /// `(struct, member)` as the kernel's BTF names them.
    pub fn btf_name(self) -> (&'static str, &'static str) {
        match self {
            KernelField::FileMode => ("file", "f_mode"),
            KernelField::FilePath => ("file", "f_path"),
            KernelField::FileFlags => ("file", "f_flags"),
            KernelField::TaskTgid => ("task_struct", "tgid"),
            KernelField::TaskCgroups => ("task_struct", "cgroups"),
            KernelField::CssSetDflCgrp => ("css_set", "dfl_cgrp"),
            KernelField::CgroupKn => ("cgroup", "kn"),
            KernelField::KernfsNodeId => ("kernfs_node", "id"),
        }
    }

    /// The member's kind, as CO-RE loaders check it.
    pub fn core_kind(self) -> MemberKind {
        match self {
            KernelField::FileMode | KernelField::FileFlags | KernelField::TaskTgid => MemberKind::Int(4),
            KernelField::FilePath => MemberKind::Struct { name: "path".into(), size: 16 },
            KernelField::TaskCgroups | KernelField::CssSetDflCgrp | KernelField::CgroupKn => MemberKind::Ptr,
            KernelField::KernfsNodeId => MemberKind::Int(8),
        }
    }

    pub const ALL: [KernelField; 8] = [
        KernelField::FileMode,
        KernelField::FilePath,
        KernelField::FileFlags,
        KernelField::TaskTgid,
        KernelField::TaskCgroups,
        KernelField::CssSetDflCgrp,
        KernelField::CgroupKn,
        KernelField::KernfsNodeId,
    ];
}

/// Byte offsets of the fields in [`KernelField`] on one kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelLayout {
    pub file_f_mode: u32,
    pub file_f_path: u32,
    pub file_f_flags: u32,
    pub task_tgid: u32,
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
}

impl KernelLayout {
    /// The offsets of the local struct definitions an object with CO-RE
    /// relocations carries ([`LsmPrograms::object_core`]): members in
    /// order, 8 bytes apart (`struct path` takes 16). The loader rewrites
    /// them to the running kernel's.
    pub const LOCAL: KernelLayout = KernelLayout {
        file_f_mode: 0,
        file_f_path: 8,
        file_f_flags: 24,
        task_tgid: 0,
        task_cgroups: 8,
        css_set_dfl_cgrp: 0,
        cgroup_kn: 0,
        kernfs_node_id: 0,
    };

    pub fn offset(&self, f: KernelField) -> u32 {
        match f {
            KernelField::FileMode => self.file_f_mode,
            KernelField::FilePath => self.file_f_path,
            KernelField::FileFlags => self.file_f_flags,
            KernelField::TaskTgid => self.task_tgid,
            KernelField::TaskCgroups => self.task_cgroups,
            KernelField::CssSetDflCgrp => self.css_set_dfl_cgrp,
            KernelField::CgroupKn => self.cgroup_kn,
            KernelField::KernfsNodeId => self.kernfs_node_id,
        }
    }

    /// A layout from a lookup of each field's offset.
    pub fn resolve<E>(mut offset: impl FnMut(KernelField) -> Result<u32, E>) -> Result<KernelLayout, E> {
        Ok(KernelLayout {
            file_f_mode: offset(KernelField::FileMode)?,
            file_f_path: offset(KernelField::FilePath)?,
            file_f_flags: offset(KernelField::FileFlags)?,
            task_tgid: offset(KernelField::TaskTgid)?,
            task_cgroups: offset(KernelField::TaskCgroups)?,
            css_set_dfl_cgrp: offset(KernelField::CssSetDflCgrp)?,
            cgroup_kn: offset(KernelField::CgroupKn)?,
            kernfs_node_id: offset(KernelField::KernfsNodeId)?,
        })
    }
}

/// Instruction `insn` (an index into [`LsmProgram::insns`]) uses the
/// offset of `field`: a `Load` in its `off`, an ALU add in its `imm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldReloc {
    pub insn: usize,
    pub field: KernelField,
}

/// One generated program: logical instructions with placeholders for
/// kernel struct offsets and the list of those placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsmProgram {
    pub hook: Hook,
    pub insns: Vec<Insn>,
    pub field_relocs: Vec<FieldReloc>,
}

impl LsmProgram {
    /// The instructions with `layout`'s offsets patched in.
    pub fn patched(&self, layout: &KernelLayout) -> Result<Vec<Insn>, LsmError> {
        let mut insns = self.insns.clone();
        for r in &self.field_relocs {
            let off = layout.offset(r.field);
            let bad = || LsmError::Offset { field: r.field, offset: off };
            match &mut insns[r.insn].op {
                Op::Load { off: o, .. } => *o = i16::try_from(off).map_err(|_| bad())?,
                Op::Alu { src: crate::bpf::Source::Imm(imm), .. } => *imm = i32::try_from(off).map_err(|_| bad())?,
                _ => return Err(LsmError::BadReloc { hook: self.hook, insn: r.insn }),
            }
        }
        Ok(insns)
    }

    /// The CO-RE relocations of the placeholders, against
    /// [`KernelLayout::LOCAL`].
    pub fn core_fields(&self) -> Vec<CoreField> {
        let mut slot_of = Vec::with_capacity(self.insns.len());
        let mut slot = 0;
        for i in &self.insns {
            slot_of.push(slot);
            slot += i.op.slots();
        }
        self.field_relocs
            .iter()
            .map(|r| {
                let (strukt, member) = r.field.btf_name();
                CoreField {
                    slot: slot_of[r.insn],
                    strukt: strukt.into(),
                    member: member.into(),
                    kind: r.field.core_kind(),
                    local_offset: KernelLayout::LOCAL.offset(r.field),
                }
            })
            .collect()
    }

    /// Encoded with `layout`'s offsets.
    pub fn encode(&self, layout: &KernelLayout) -> Result<Encoded, LsmError> {
        encode(&self.patched(layout)?).map_err(|source| LsmError::Encode { hook: self.hook, source })
    }
}

/// Everything this module generates for one policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LsmPrograms {
    pub programs: Vec<LsmProgram>,
    /// Policy texts by file name, for the object's line_info.
    pub sources: BTreeMap<String, String>,
}

impl LsmPrograms {
    pub fn get(&self, hook: Hook) -> Option<&LsmProgram> {
        self.programs.iter().find(|p| p.hook == hook)
    }

    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    /// The maps every program uses: the per-CPU record buffer and the
    /// audit ring buffer (none when there is no program).
    pub fn maps(&self) -> Vec<MapDef> {
        if self.programs.is_empty() {
            return Vec::new();
        }
        vec![
            MapDef::new(audit::SCRATCH_MAP, BPF_MAP_TYPE_PERCPU_ARRAY, 4, audit::SCRATCH_SIZE, 1),
            MapDef::new(audit::RINGBUF_MAP, BPF_MAP_TYPE_RINGBUF, 0, 0, audit::RINGBUF_SIZE),
        ]
    }

    /// The ELF object (license GPL: `bpf_d_path` is GPL-only) for a kernel
    /// with `layout`. Deterministic: the same programs and layout give the
    /// same bytes.
    pub fn object(&self, layout: &KernelLayout) -> Result<Vec<u8>, LsmError> {
        let mut b = ObjectBuilder::new("GPL");
        for m in self.maps() {
            b = b.map(m);
        }
        for p in &self.programs {
            b = b.program(Program::new(p.hook.section(), p.hook.prog_name(), p.encode(layout)?));
        }
        for (path, text) in &self.sources {
            b = b.source(path.clone(), text.clone());
        }
        Ok(b.build()?)
    }
}

impl LsmPrograms {
    /// The ELF object with CO-RE relocations instead of patched offsets:
    /// kernel-independent, the loader (aya, libbpf) resolves the struct
    /// offsets against the running kernel's BTF. Deterministic.
    pub fn object_core(&self) -> Result<Vec<u8>, LsmError> {
        let mut b = ObjectBuilder::new("GPL");
        for m in self.maps() {
            b = b.map(m);
        }
        for p in &self.programs {
            let code = p.encode(&KernelLayout::LOCAL)?;
            b = b.program(Program::new(p.hook.section(), p.hook.prog_name(), code).with_core(p.core_fields()));
        }
        for (path, text) in &self.sources {
            b = b.source(path.clone(), text.clone());
        }
        Ok(b.build()?)
    }
}

/// Code generation options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Policy texts by file name (as in `Policy::sources`): line_info text
    /// and the lines of the kernel switches.
    pub sources: BTreeMap<String, String>,
    /// Executables allowed besides `exec.allow`: the sandbox's own command,
    /// which the runtime knows and the policy does not.
    pub exec_extra: Vec<PathPattern>,
}

impl Options {
    /// Registers the text of a policy file.
    pub fn source(mut self, path: impl Into<String>, text: impl Into<String>) -> Options {
        self.sources.insert(path.into(), text.into());
        self
    }

    /// Allows executing `path` (and only it) besides `exec.allow`.
    pub fn exec_also(mut self, path: impl Into<String>) -> Options {
        self.exec_extra.push(PathPattern { path: path.into(), prefix_glob: false });
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LsmError {
    #[error("lsm_cgroup/{}: {source}", hook.name())]
    Encode { hook: Hook, source: BpfError },
    #[error("deny rule `{pattern}` (line {line}) is {len} bytes; file_open compares paths of at most {max} bytes")]
    PatternTooLong { pattern: String, line: u32, len: usize, max: usize },
    #[error("offset {offset} of {field:?} does not fit the instruction")]
    Offset { field: KernelField, offset: u32 },
    #[error("lsm_cgroup/{}: instruction {insn} cannot take a field offset", hook.name())]
    BadReloc { hook: Hook, insn: usize },
    #[error("unix socket `{name}` (line {line}) is {len} bytes; sun_path holds at most 107 and a NUL")]
    UnixNameTooLong { name: String, line: u32, len: usize },
    #[error(transparent)]
    Elf(#[from] ElfError),
}

/// Compiles the BPF-LSM programs of a policy. Pure: no kernel access.
pub fn compile(policy: &Policy, opts: &Options) -> Result<LsmPrograms, LsmError> {
    let locator = Locator::for_policy(policy);
    let verdict = match policy.audit {
        AuditMode::Enforce => Verdict::Deny,
        AuditMode::Complain => Verdict::Complain,
    };
    let mut out = LsmPrograms { programs: Vec::new(), sources: opts.sources.clone() };
    if let Some(p) = file_open::program(&policy.filesystem, policy.exec.as_ref(), &opts.exec_extra, &locator, verdict)?
    {
        out.programs.push(p);
    }
    // Each switch's program carries the line that set it (the `kernel:`
    // key, or the `security.level` whose default it is).
    let k = &policy.kernel;
    let origin = |s: Switch| k.origin(s.key());
    let site = |s: Switch| file_open::site(&origin(s), audit::NO_RULE);
    let loc = |s: Switch| locator.loc(&origin(s));
    let always: [(Switch, Toggle, &[Hook]); 3] = [
        (Switch::Mount, k.mount, &[Hook::SbMount, Hook::MoveMount]),
        (Switch::Bpf, k.bpf, &[Hook::Bpf]),
        (Switch::UserNamespaces, k.user_namespaces, &[Hook::UsernsCreate]),
    ];
    for (switch, toggle, hooks) in always {
        if toggle == Toggle::Deny {
            for &hook in hooks {
                out.programs.push(deny_always(hook, site(switch), loc(switch), verdict));
            }
        }
    }
    if k.raw_sockets == Toggle::Deny {
        out.programs.push(socket::raw_sockets(site(Switch::RawSockets), loc(Switch::RawSockets), verdict));
    }
    if let Some(list) = &k.unix_connect {
        let mut entries = Vec::new();
        for (name, origin) in list {
            let path_len = name.strip_prefix('@').map_or(name.len(), |n| n.len() + 1);
            if path_len > 107 {
                return Err(LsmError::UnixNameTooLong { name: name.clone(), line: origin.line, len: path_len });
            }
            entries.push(socket::UnixEntry { name, loc: locator.loc(origin) });
        }
        let mut s = site(Switch::UnixSockets);
        if s.line == 0 {
            if let Some((_, o)) = list.first() {
                s = file_open::site(o, audit::NO_RULE);
            }
        }
        let l = loc(Switch::UnixSockets).or_else(|| entries.first().and_then(|e| e.loc.clone()));
        out.programs.push(socket::unix_connect(&entries, s, l, verdict));
    }
    if k.ptrace == Toggle::Deny {
        out.programs.push(task::program(Hook::PtraceAccessCheck, site(Switch::Ptrace), loc(Switch::Ptrace), verdict));
    }
    if k.signals_outside == Toggle::Deny {
        out.programs.push(task::program(Hook::TaskKill, site(Switch::Signals), loc(Switch::Signals), verdict));
    }
    Ok(out)
}

/// Every call from the cgroup is a decision at `site`: recorded, and
/// denied (allowed in complain mode).
fn deny_always(hook: Hook, site: Site, loc: Option<SourceLoc>, verdict: Verdict) -> LsmProgram {
    let mut e = emit::Emitter::new(hook, loc);
    e.scratch("nobuf");
    e.object(audit::ObjectKind::None, 0);
    e.push(Insn::st_w(crate::bpf::Reg::R6, audit::off::DETAIL, 0));
    e.deny_at(site);
    e.label("nobuf");
    e.ret(verdict);
    e.record_tail(verdict);
    e.finish()
}
