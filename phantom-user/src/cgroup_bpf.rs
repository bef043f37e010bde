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

use phantom_ebpf::bpf::SourceLoc;
use phantom_ebpf::netprog::{CgroupProgram, CgroupPrograms, MapSpec, ProgKind};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The verifier's log; `Debug` prints real newlines.
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
    let fd = sys::map_create(spec).map_err(|source| CgroupBpfError::Syscall {
        cmd: "BPF_MAP_CREATE",
        what: format!("map `{}`", spec.name),
        source,
    })?;
    for (k, v) in &spec.entries {
        if k.len() != spec.key_size as usize || v.len() != spec.value_size as usize {
            return Err(CgroupBpfError::Map { map: spec.name.clone(), what: "entry of the wrong size".into() });
        }
        sys::map_update(fd.as_fd(), k, v).map_err(|source| CgroupBpfError::Syscall {
            cmd: "BPF_MAP_UPDATE_ELEM",
            what: format!("map `{}`", spec.name),
            source,
        })?;
    }
    Ok(fd)
}

/// Loads one program from `bytes` (its encoding with map fds bound).
pub fn load_one(prog: &CgroupProgram, bytes: &[u8]) -> Result<(OwnedFd, VerifierLog), CgroupBpfError> {
    match sys::prog_load(prog.kind.prog_type(), prog.kind.attach_type(), bytes, prog.kind.name()) {
        Ok((fd, log)) => Ok((fd, VerifierLog(log))),
        Err((source, log)) => {
            let insn = last_insn_index(&log);
            let loc = insn.and_then(|i| prog.loc_of_slot(i).cloned());
            Err(CgroupBpfError::Rejected {
                section: prog.kind.section(),
                source,
                insn,
                loc,
                annotated: annotate_log(prog, &log),
                log: VerifierLog(log),
            })
        }
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
            sys::prog_attach(a.cgroup.as_fd(), fd.as_fd(), kind.attach_type()).map_err(|source| {
                CgroupBpfError::Syscall {
                    cmd: "BPF_PROG_ATTACH",
                    what: format!("{} to {}", kind.section(), cgroup.display()),
                    source,
                }
            })?;
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
            if let Err(source) = sys::prog_detach(self.cgroup.as_fd(), fd.as_fd(), kind.attach_type()) {
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
    sys::prog_query(dir.as_fd(), attach_type).map_err(|source| CgroupBpfError::Syscall {
        cmd: "BPF_PROG_QUERY",
        what: cgroup.display().to_string(),
        source,
    })
}

/// Runs a loaded program once with `BPF_PROG_TEST_RUN` on `ctx_in` (for
/// probing which program types support it).
pub fn test_run_ctx(prog: BorrowedFd<'_>, ctx_in: &[u8]) -> io::Result<u32> {
    sys::prog_test_run_ctx(prog, ctx_in)
}

mod sys {
    //! Raw `bpf(2)`: the prefixes of `union bpf_attr` this loader needs.

    use super::MapSpec;
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    const BPF_MAP_CREATE: u32 = 0;
    const BPF_MAP_UPDATE_ELEM: u32 = 2;
    const BPF_PROG_LOAD: u32 = 5;
    const BPF_PROG_ATTACH: u32 = 8;
    const BPF_PROG_DETACH: u32 = 9;
    const BPF_PROG_TEST_RUN: u32 = 10;
    const BPF_PROG_QUERY: u32 = 16;
    const BPF_F_ALLOW_MULTI: u32 = 1 << 1;
    const INITIAL_LOG_SIZE: usize = 64 * 1024;
    const MAX_LOG_SIZE: usize = (u32::MAX >> 2) as usize;

    #[repr(C)]
    #[derive(Default)]
    struct MapCreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        inner_map_fd: u32,
        numa_node: u32,
        map_name: [u8; 16],
    }

    #[repr(C)]
    #[derive(Default)]
    struct MapElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }

    #[repr(C)]
    #[derive(Default)]
    struct AttachAttr {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
        replace_bpf_fd: u32,
    }

    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
    }

    #[repr(C)]
    #[derive(Default)]
    struct TestRunAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
    }

    /// # Safety
    /// Every pointer in `attr` must be 0 or valid for the length the attr
    /// states for the duration of the call.
    unsafe fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
        // SAFETY: `attr` is an exclusively borrowed repr(C) prefix of
        // `union bpf_attr` passed with its exact size (the kernel treats
        // the rest as zero); the caller vouches for the pointers in it.
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn fd(r: i64) -> OwnedFd {
        // SAFETY: a successful MAP_CREATE / PROG_LOAD returns a new fd owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(r as i32) }
    }

    fn name16(name: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        let n = name.len().min(15);
        out[..n].copy_from_slice(&name.as_bytes()[..n]);
        out
    }

    pub fn map_create(spec: &MapSpec) -> io::Result<OwnedFd> {
        let mut attr = MapCreateAttr {
            map_type: spec.map_type,
            key_size: spec.key_size,
            value_size: spec.value_size,
            max_entries: spec.max_entries,
            map_flags: spec.flags,
            map_name: name16(&spec.name),
            ..Default::default()
        };
        // SAFETY: no pointers in the attr.
        unsafe { bpf(BPF_MAP_CREATE, &mut attr) }.map(fd)
    }

    pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
        let mut attr = MapElemAttr {
            map_fd: map.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: key and value are live buffers of the map's key and value
        // sizes (checked by the caller); the kernel only reads them.
        unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(|_| ())
    }

    /// Loads with `log_level = 1`, doubling the log buffer on `ENOSPC`.
    pub fn prog_load(
        prog_type: u32,
        attach_type: u32,
        bytes: &[u8],
        name: &str,
    ) -> Result<(OwnedFd, String), (io::Error, String)> {
        let license = c"GPL";
        let mut size = INITIAL_LOG_SIZE;
        loop {
            let mut buf = vec![0u8; size];
            let mut attr = ProgLoadAttr {
                prog_type,
                insn_cnt: (bytes.len() / 8) as u32,
                insns: bytes.as_ptr() as u64,
                license: license.as_ptr() as u64,
                log_level: 1,
                log_size: size as u32,
                log_buf: buf.as_mut_ptr() as u64,
                prog_name: name16(name),
                expected_attach_type: attach_type,
                ..Default::default()
            };
            // SAFETY: insns points to insn_cnt * 8 live bytes, license to a
            // NUL-terminated string, log_buf to log_size writable bytes.
            let r = unsafe { bpf(BPF_PROG_LOAD, &mut attr) };
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let log = String::from_utf8_lossy(&buf[..end]).into_owned();
            match r {
                Ok(r) => return Ok((fd(r), log)),
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && size < MAX_LOG_SIZE => {
                    size = (size * 2).min(MAX_LOG_SIZE);
                }
                Err(e) => return Err((e, log)),
            }
        }
    }

    pub fn prog_attach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, attach_type: u32) -> io::Result<()> {
        let mut attr = AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: prog.as_raw_fd() as u32,
            attach_type,
            attach_flags: BPF_F_ALLOW_MULTI,
            ..Default::default()
        };
        // SAFETY: no pointers in the attr.
        unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map(|_| ())
    }

    pub fn prog_detach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, attach_type: u32) -> io::Result<()> {
        let mut attr = AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: prog.as_raw_fd() as u32,
            attach_type,
            ..Default::default()
        };
        // SAFETY: no pointers in the attr.
        unsafe { bpf(BPF_PROG_DETACH, &mut attr) }.map(|_| ())
    }

    pub fn prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
        let mut ids = vec![0u32; 64];
        let mut attr = QueryAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_type,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        // SAFETY: prog_ids points to prog_cnt writable u32s.
        unsafe { bpf(BPF_PROG_QUERY, &mut attr) }?;
        ids.truncate(attr.prog_cnt as usize);
        Ok(ids)
    }

    pub fn prog_test_run_ctx(prog: BorrowedFd<'_>, ctx_in: &[u8]) -> io::Result<u32> {
        let mut attr = TestRunAttr {
            prog_fd: prog.as_raw_fd() as u32,
            repeat: 1,
            ctx_size_in: ctx_in.len() as u32,
            ctx_in: ctx_in.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: ctx_in points to ctx_size_in live bytes; no output buffers.
        unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }.map(|_| attr.retval)
    }
}
