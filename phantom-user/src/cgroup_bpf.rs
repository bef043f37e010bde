//! Loads the cgroup programs of [`phantom_ebpf::netprog`] straight from
//! their encoded bytes (no ELF object) and attaches them to a cgroup v2
//! directory. Raw `bpf(2)` calls live in the private [`sys`] module.
//!
//! - Maps ([`MapSpec`], LPM tries for large CIDR sets) are created and
//!   filled first, then every program is loaded with its expected attach
//!   type and the map fds patched into its `LD_IMM64` slots.
//! - A verifier rejection returns the whole log (retried with a doubled
//!   buffer on `ENOSPC`), the instruction index it stopped at and the
//!   policy line of that instruction, plus the log annotated line by line.
//! - Attaching uses `BPF_PROG_ATTACH` with `BPF_F_ALLOW_MULTI`, not a BPF
//!   link: the cgroup holds the programs, so a crashed supervisor leaves
//!   them enforcing (fail closed) until the cgroup is removed. Detaching is
//!   explicit ([`Attachment::detach`], also on drop) with `BPF_PROG_DETACH`
//!   naming each program fd, so programs attached by others stay.

use phantom_bpf_sys as sys;
pub use phantom_bpf_sys::VerifierLog;
use phantom_ebpf::bpf::SourceLoc;
use phantom_ebpf::netprog::{CgroupProgram, CgroupPrograms, MapSpec, ProgKind};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupBpfError {
    #[error(
        "the verifier rejected {section} ({source}){}\nverifier log, annotated with policy lines:\n{annotated}",
        match (insn, loc) {
            (Some(i), Some(l)) => format!(" at instruction {i}, policy line {l}"),
            (Some(i), None) => format!(" at instruction {i}"),
            _ => String::new(),
        }
    )]
    Rejected {
        section: &'static str,
        source: io::Error,
        /// The last instruction index the log mentions.
        insn: Option<usize>,
        /// The policy position of that instruction.
        loc: Option<SourceLoc>,
        log: VerifierLog,
        annotated: String,
    },
    #[error("{section}: program references map `{map}`, which the program set does not define")]
    MissingMap { section: &'static str, map: String },
    #[error("map `{map}`: {what}")]
    Map { map: String, what: String },
    #[error("bpf({cmd}) failed for {what}: {source}")]
    Syscall { cmd: &'static str, what: String, source: io::Error },
    #[error("opening cgroup {path}: {source}")]
    Cgroup { path: PathBuf, source: io::Error },
}

/// Maps and programs loaded into the kernel (fds closed on drop; the
/// kernel keeps whatever is still attached).
#[derive(Debug)]
pub struct LoadedPrograms {
    pub programs: Vec<(ProgKind, OwnedFd)>,
    pub maps: Vec<(String, OwnedFd)>,
    /// The verifier logs of the successful loads.
    pub logs: Vec<(ProgKind, VerifierLog)>,
}

/// Creates the maps, then loads every program.
pub fn load(set: &CgroupPrograms) -> Result<LoadedPrograms, CgroupBpfError> {
    let mut maps = Vec::new();
    for spec in &set.maps {
        maps.push((spec.name.clone(), create_map(spec)?));
    }
    let mut programs = Vec::new();
    let mut logs = Vec::new();
    for prog in &set.programs {
        let mut enc = prog.encoded.clone();
        for name in prog.maps() {
            let fd =
                maps.iter().find(|(n, _)| n == name).map(|(_, fd)| fd.as_raw_fd()).ok_or_else(|| {
                    CgroupBpfError::MissingMap { section: prog.kind.section(), map: name.to_string() }
                })?;
            enc.bind_map(name, fd).map_err(|e| CgroupBpfError::Map { map: name.to_string(), what: e.to_string() })?;
        }
        let (fd, log) = load_one(prog, &enc.to_bytes())?;
        programs.push((prog.kind, fd));
        logs.push((prog.kind, log));
    }
    Ok(LoadedPrograms { programs, maps, logs })
}

fn create_map(spec: &MapSpec) -> Result<OwnedFd, CgroupBpfError> {
    let made = sys::map_create(spec.map_type, spec.key_size, spec.value_size, spec.max_entries, spec.flags, &spec.name);
    let fd = made.map_err(io::Error::from).map_err(|source| CgroupBpfError::Syscall {
        cmd: "BPF_MAP_CREATE",
        what: format!("map `{}`", spec.name),
        source,
    })?;
    for (k, v) in &spec.entries {
        if k.len() != spec.key_size as usize || v.len() != spec.value_size as usize {
            return Err(CgroupBpfError::Map { map: spec.name.clone(), what: "entry of the wrong size".into() });
        }
        sys::map_update(fd.as_fd(), k, v, sys::BPF_ANY).map_err(io::Error::from).map_err(|source| {
            CgroupBpfError::Syscall { cmd: "BPF_MAP_UPDATE_ELEM", what: format!("map `{}`", spec.name), source }
        })?;
    }
    Ok(fd)
}

/// Loads one program from `bytes` (its encoding with map fds bound).
pub fn load_one(prog: &CgroupProgram, bytes: &[u8]) -> Result<(OwnedFd, VerifierLog), CgroupBpfError> {
    let load = sys::ProgLoad {
        prog_type: prog.kind.prog_type(),
        expected_attach_type: prog.kind.attach_type(),
        insns: bytes,
        license: c"GPL",
        name: prog.kind.name(),
    };
    match sys::prog_load(&load, sys::INITIAL_LOG_SIZE) {
        Ok((fd, log)) => Ok((fd, log)),
        Err(sys::SysError::Rejected { source, log }) => {
            let insn = last_insn_index(&log.0);
            let loc = insn.and_then(|i| prog.loc_of_slot(i).cloned());
            Err(CgroupBpfError::Rejected {
                section: prog.kind.section(),
                source,
                insn,
                loc,
                annotated: annotate_log(prog, &log.0),
                log,
            })
        }
        Err(other) => Err(CgroupBpfError::Syscall {
            cmd: "BPF_PROG_LOAD",
            what: prog.kind.section().to_string(),
            source: other.into(),
        }),
    }
}

/// `"12: (b7) r0 = 0"` -> 12.
fn insn_index(line: &str) -> Option<usize> {
    let (n, rest) = line.split_once(": ")?;
    rest.starts_with('(').then_some(())?;
    n.trim().parse().ok()
}

/// The last instruction the verifier walked before giving up.
pub fn last_insn_index(log: &str) -> Option<usize> {
    log.lines().rev().find_map(insn_index)
}

/// The log with `; file:line` after every instruction line that has a
/// policy position.
pub fn annotate_log(prog: &CgroupProgram, log: &str) -> String {
    let mut out = String::with_capacity(log.len() * 2);
    for line in log.lines() {
        out.push_str(line);
        if let Some(loc) = insn_index(line).and_then(|i| prog.encoded.lines.get(&i)) {
            out.push_str(&format!("    ; {loc}"));
        }
        out.push('\n');
    }
    out
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
