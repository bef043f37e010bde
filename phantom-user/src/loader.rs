//! The pinning loader: loads a bundle's `cgroup.bpf.o` once with aya 0.14,
//! fills its maps from `cgroup-maps.json` and pins every program and map,
//! so that many sandboxes share one load and the programs outlive the
//! process that loaded them.
//!
//! # Layout
//! ```text
//! /sys/fs/bpf/phantom/<hash>/           hash: first 16 hex chars of sha256(manifest.json)
//!     info                              symlink; its target is the JSON record below
//!     programs/<name>                   pinned programs (phantom_sock, phantom_conn4, ...)
//!     maps/<name>                       pinned maps (LPM tries of large CIDR sets)
//! ```
//! bpffs holds only pins, directories and symlinks (no regular files), so
//! the "info file" is a symlink whose target is a small JSON record
//! ([`PinInfo`]: format, full manifest sha256, profile, each program's name
//! and section, the map names); `readlink` reads it back.
//!
//! # Idempotence and crashes
//! A load pins everything into `/sys/fs/bpf/phantom/loading-<hash>-<pid>`,
//! writes `info` last and renames the directory to `<hash>` (bpffs renames
//! atomically), so `<hash>` is complete or absent. A second load of the same
//! bundle finds `<hash>`, checks that its `info` names the same full sha256
//! and that every pin it lists opens, and reuses it ([`LoadReport::reused`]).
//! Two loaders racing lose nothing: the loser of the rename discards its
//! copy and reuses the winner's. Leftover `loading-*` directories of dead
//! processes are removed by the next load of that bundle. (bpffs refuses
//! names with a dot, hence no dot-file.)
//!
//! # Attaching, and what survives the process
//! [`attach_pinned`] opens the pinned programs and attaches them to a cgroup
//! v2 directory with `BPF_PROG_ATTACH` + `BPF_F_ALLOW_MULTI` (through
//! [`crate::cgroup_bpf`]). That attachment belongs to the cgroup, not to a
//! file descriptor: when the attaching process exits or is killed (even
//! with SIGKILL, when no destructor runs) the programs stay attached and
//! keep enforcing (fail closed) until someone detaches them
//! ([`detach_pinned`], which needs only the pins) or the cgroup is removed.
//! aya's own `attach` is deliberately not used: on kernels >= 5.7 it creates
//! a BPF link, which the kernel detaches when its last fd closes, i.e. when
//! the process dies. Dropping an [`Attachment`] detaches what it attached.
//!
//! [`unload`] removes the pins and the directory. Programs still attached to
//! a cgroup are held by that cgroup and keep enforcing there until detached
//! or the cgroup is removed; only then does the kernel free them.

use crate::bundle_object::{self, kind_of, BundleObject};
use crate::cgroup_bpf::{self, CgroupBpfError, LoadedPrograms};
use phantom_bpf_sys as sys;
use phantom_dsl::source::sha256_hex;
use phantom_ebpf::bundle::{BundleError, CGROUP_MAPS, CGROUP_OBJECT, MANIFEST};
use phantom_ebpf::netprog::ProgKind;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where bpffs is mounted (mounted there by [`load`] when it is not).
pub const BPFFS: &str = "/sys/fs/bpf";
/// The directory holding one directory per loaded bundle.
pub const PIN_ROOT: &str = "/sys/fs/bpf/phantom";
const INFO: &str = "info";
const PROGRAMS: &str = "programs";
const MAPS: &str = "maps";
const INFO_FORMAT: u32 = 1;
const BPF_FS_MAGIC: u32 = 0xcafe_4a11;
/// Hex characters of the manifest's sha256 that name a bundle.
pub const HASH_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path}: its sha256 does not match the one the manifest records (the bundle was modified)")]
    ArtifactHash { path: String },
    #[error("the bundle has no {CGROUP_OBJECT} (nothing to load)")]
    NoObject,
    #[error("{what}: {message}")]
    Object { what: String, message: String },
    /// The verifier refused a program: the whole log, annotated.
    #[error(transparent)]
    Rejected(Box<Rejection>),
    #[error("{what}: {source}")]
    Kernel { what: String, source: io::Error },
    #[error("no bundle {0} is loaded (nothing under {PIN_ROOT}/{0})")]
    NotLoaded(String),
    #[error("{dir} holds pins of another bundle (sha256 {found}, this one is {expected}); run `phantom unload {hash}` first", hash = expected.get(..HASH_LEN).unwrap_or(expected))]
    Conflict { dir: String, found: String, expected: String },
    #[error("the pins under {dir} are broken ({what}); run `phantom unload {hash}` and load again")]
    Broken { dir: String, hash: String, what: String },
    #[error(
        "{0:?} is neither a bundle directory (with {MANIFEST}) nor a bundle hash (at least {HASH_LEN} hex characters)"
    )]
    BadTarget(String),
    #[error(transparent)]
    Cgroup(Box<CgroupBpfError>),
}

impl From<CgroupBpfError> for LoaderError {
    fn from(e: CgroupBpfError) -> Self {
        LoaderError::Cgroup(Box::new(e))
    }
}

/// A verifier rejection with the log mapped to policy lines.
#[derive(Debug, thiserror::Error)]
#[error(
    "the verifier rejected program {program} ({section}): {source}{}\n\
     verifier log ({} lines), instructions annotated with policy lines:\n{annotated}",
    match (insn, line) {
        (Some(i), Some(l)) => format!("\nit stopped at instruction {i}, which implements policy line {l}"),
        (Some(i), None) => format!("\nit stopped at instruction {i}"),
        _ => String::new(),
    },
    log.lines().count()
)]
pub struct Rejection {
    pub program: String,
    pub section: String,
    pub source: io::Error,
    /// The last instruction the log mentions.
    pub insn: Option<usize>,
    /// The policy line of that instruction (from the manifest).
    pub line: Option<u32>,
    /// The whole verifier log, as the kernel wrote it.
    pub log: String,
    /// The log with `; policy line N` after every instruction with a line.
    pub annotated: String,
}

fn kernel(what: impl Into<String>) -> impl FnOnce(io::Error) -> LoaderError {
    let what = what.into();
    move |source| LoaderError::Kernel { what, source }
}

fn aya_err(what: impl Into<String>) -> impl FnOnce(String) -> LoaderError {
    let what = what.into();
    move |message| LoaderError::Object { what, message }
}

/// The record behind the `info` symlink of a pin directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinInfo {
    pub format: u32,
    /// sha256 of the bundle's manifest.json (all 64 hex characters).
    pub sha256: String,
    pub profile: String,
    /// `(program name, ELF section)` in manifest order.
    pub programs: Vec<(String, String)>,
    pub maps: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PinnedProgram {
    pub name: String,
    pub section: String,
    /// The kernel's program id.
    pub id: u32,
    pub pin: PathBuf,
    /// Number of cgroups the program is attached to ([`status`] only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_cgroups: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PinnedMap {
    pub name: String,
    /// The kernel's map id.
    pub id: u32,
    pub pin: PathBuf,
    /// Entries written from cgroup-maps.json (a fresh load only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries_written: Option<usize>,
}

/// What [`load`] did.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub profile: String,
    /// The first [`HASH_LEN`] hex characters of the manifest's sha256.
    pub hash: String,
    pub sha256: String,
    pub dir: PathBuf,
    /// True when the pins already existed and were reused (nothing loaded).
    pub reused: bool,
    /// True when this call mounted bpffs at [`BPFFS`].
    pub mounted_bpffs: bool,
    pub programs: Vec<PinnedProgram>,
    pub maps: Vec<PinnedMap>,
}

/// One loaded bundle, as [`status`] sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PinnedBundle {
    pub profile: String,
    pub hash: String,
    pub sha256: String,
    pub dir: PathBuf,
    pub programs: Vec<PinnedProgram>,
    pub maps: Vec<PinnedMap>,
    /// Cgroups (paths under the cgroup v2 mount) with at least one of the
    /// bundle's programs attached.
    pub attached_cgroups: Vec<PathBuf>,
}

/// What [`unload`] removed.
#[derive(Debug, Clone, Serialize)]
pub struct UnloadReport {
    pub profile: String,
    pub hash: String,
    pub dir: PathBuf,
    pub programs: usize,
    pub maps: usize,
    /// Cgroups that still have the bundle's programs attached: they keep
    /// enforcing there until detached or the cgroup is removed.
    pub still_attached: Vec<PathBuf>,
}

/// A bundle named by its directory or by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleRef {
    Dir(PathBuf),
    /// [`HASH_LEN`] lowercase hex characters.
    Hash(String),
}

impl BundleRef {
    /// A directory holding `manifest.json`, else a hex hash (a full sha256
    /// or its first [`HASH_LEN`] characters).
    pub fn parse(text: &str) -> Result<BundleRef, LoaderError> {
        let p = Path::new(text);
        if p.join(MANIFEST).is_file() {
            return Ok(BundleRef::Dir(p.to_path_buf()));
        }
        if text.len() >= HASH_LEN && text.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(BundleRef::Hash(text[..HASH_LEN].to_ascii_lowercase()));
        }
        Err(LoaderError::BadTarget(text.to_string()))
    }

    /// The bundle's hash (reads the manifest of a directory).
    pub fn hash(&self) -> Result<String, LoaderError> {
        match self {
            BundleRef::Hash(h) => Ok(h.clone()),
            BundleRef::Dir(d) => Ok(manifest_sha(d)?[..HASH_LEN].to_string()),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LoaderError> {
    std::fs::read(path).map_err(|source| LoaderError::Read { path: path.display().to_string(), source })
}

fn manifest_sha(dir: &Path) -> Result<String, LoaderError> {
    Ok(sha256_hex(&read(&dir.join(MANIFEST))?))
}

/// The pin directory of a bundle hash.
pub fn pin_dir(hash: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(hash)
}

/// Mounts bpffs at [`BPFFS`] unless it is mounted; true when it mounted it.
pub fn ensure_bpffs() -> Result<bool, LoaderError> {
    if is_bpffs(Path::new(BPFFS)) {
        return Ok(false);
    }
    std::fs::create_dir_all(BPFFS).map_err(kernel(format!("creating {BPFFS}")))?;
    // SAFETY: NUL-terminated string literals; no pointers retained.
    let r = unsafe {
        libc::mount(c"bpf".as_ptr(), c"/sys/fs/bpf".as_ptr(), c"bpf".as_ptr(), 0, c"mode=0700".as_ptr().cast())
    };
    if r != 0 {
        return Err(LoaderError::Kernel {
            what: format!("mounting bpffs at {BPFFS}"),
            source: io::Error::last_os_error(),
        });
    }
    Ok(true)
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs fills a zeroed, properly sized struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated, st a valid out-pointer.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && (st.f_type as u64 & 0xffff_ffff) == u64::from(BPF_FS_MAGIC)
}

/// Loads the bundle in `bundle_dir` and pins it, or reuses its pins.
pub fn load(bundle_dir: &Path) -> Result<LoadReport, LoaderError> {
    let sha256 = manifest_sha(bundle_dir)?;
    let hash = sha256[..HASH_LEN].to_string();
    let mounted_bpffs = ensure_bpffs()?;
    let root = Path::new(PIN_ROOT);
    std::fs::create_dir_all(root).map_err(kernel(format!("creating {PIN_ROOT}")))?;
    let dir = pin_dir(&hash);
    if dir.exists() {
        return reuse(&dir, &hash, &sha256, mounted_bpffs);
    }
    let obj = BundleObject::from_dir(bundle_dir, CGROUP_OBJECT, CGROUP_MAPS)?.ok_or(LoaderError::NoObject)?;
    if obj.sha256 != sha256 {
        // The manifest changed between the two reads.
        return Err(LoaderError::ArtifactHash { path: bundle_dir.join(MANIFEST).display().to_string() });
    }

    remove_stale_loads(root, &hash);
    let tmp = root.join(format!("loading-{hash}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let built = (|| {
        for d in [&tmp, &tmp.join(PROGRAMS), &tmp.join(MAPS)] {
            std::fs::create_dir(d).map_err(kernel(format!("creating {}", d.display())))?;
        }
        pin_object(&obj, &tmp)
    })();
    let (progs, maps) = match built {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another loader of the same bundle won the race: use its pins.
        if dir.exists() {
            return reuse(&dir, &hash, &sha256, mounted_bpffs);
        }
        return Err(kernel(format!("renaming {} to {}", tmp.display(), dir.display()))(e));
    }
    let rebase = |p: PathBuf| dir.join(p.strip_prefix(&tmp).expect("pinned under tmp"));
    Ok(LoadReport {
        profile: obj.profile.clone(),
        hash,
        sha256,
        dir: dir.clone(),
        reused: false,
        mounted_bpffs,
        programs: progs.into_iter().map(|p| PinnedProgram { pin: rebase(p.pin.clone()), ..p }).collect(),
        maps: maps.into_iter().map(|m| PinnedMap { pin: rebase(m.pin.clone()), ..m }).collect(),
    })
}

/// Removes `loading-<hash>-<pid>` directories of processes that are gone.
fn remove_stale_loads(root: &Path, hash: &str) {
    let prefix = format!("loading-{hash}-");
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&prefix).and_then(|p| p.parse::<i32>().ok()) else { continue };
        // SAFETY: signal 0 only checks that the process exists.
        let alive =
            unsafe { libc::kill(pid, 0) } == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Loads the object ([`bundle_object::load`]: maps filled, programs
/// verified), pins maps and programs under `tmp`, and writes the info
/// symlink last.
fn pin_object(obj: &BundleObject, tmp: &Path) -> Result<(Vec<PinnedProgram>, Vec<PinnedMap>), LoaderError> {
    let mut loaded = bundle_object::load(obj)?;
    let mut maps = Vec::new();
    for (name, written) in &loaded.maps {
        let map = loaded.ebpf.map(name).expect("loaded");
        let pin = tmp.join(MAPS).join(name);
        map.pin(&pin).map_err(|e| aya_err(format!("pinning map `{name}` at {}", pin.display()))(e.to_string()))?;
        let data = aya::maps::MapData::from_pin(&pin)
            .map_err(|e| aya_err(format!("opening pinned map {}", pin.display()))(e.to_string()))?;
        let id = data.info().map_err(|e| aya_err(format!("map `{name}`"))(e.to_string()))?.id();
        maps.push(PinnedMap { name: name.clone(), id, pin, entries_written: Some(*written) });
    }
    let mut out = Vec::new();
    for p in &obj.programs {
        let prog = loaded.ebpf.program_mut(&p.name).expect("loaded");
        let pin = tmp.join(PROGRAMS).join(&p.name);
        prog.pin(&pin).map_err(|e| aya_err(format!("pinning `{}` at {}", p.name, pin.display()))(e.to_string()))?;
        let id = prog.info().map_err(|e| aya_err(format!("program `{}`", p.name))(e.to_string()))?.id();
        out.push(PinnedProgram { name: p.name.clone(), section: p.section.clone(), id, pin, attached_cgroups: None });
    }

    let info = PinInfo {
        format: INFO_FORMAT,
        sha256: obj.sha256.clone(),
        profile: obj.profile.clone(),
        programs: obj.programs.iter().map(|p| (p.name.clone(), p.section.clone())).collect(),
        maps: loaded.maps.iter().map(|(n, _)| n.clone()).collect(),
    };
    let json = serde_json::to_string(&info).expect("the info record serialises");
    std::os::unix::fs::symlink(&json, tmp.join(INFO))
        .map_err(kernel(format!("writing {}", tmp.join(INFO).display())))?;
    Ok((out, maps))
}

/// `"12: (b7) r0 = 0"` -> 12.
fn insn_index(line: &str) -> Option<usize> {
    let (n, rest) = line.split_once(": ")?;
    rest.starts_with('(').then_some(())?;
    n.trim().parse().ok()
}

/// The last instruction a verifier log mentions.
pub fn last_insn_index(log: &str) -> Option<usize> {
    log.lines().rev().find_map(insn_index)
}

/// The log with `    ; policy line N` after every instruction line that
/// `lines` (`[instruction, policy line]`, from the manifest) maps.
pub fn annotate_log(log: &str, lines: &[(usize, u32)]) -> String {
    let mut out = String::with_capacity(log.len() * 2);
    for l in log.lines() {
        out.push_str(l);
        if let Some((_, line)) = insn_index(l).and_then(|i| lines.iter().find(|(insn, _)| *insn == i)) {
            out.push_str(&format!("    ; policy line {line}"));
        }
        out.push('\n');
    }
    out
}

/// Reads and checks the pins of `dir`.
fn read_pins(dir: &Path, hash: &str) -> Result<(PinInfo, Vec<PinnedProgram>, Vec<PinnedMap>), LoaderError> {
    let broken = |what: String| LoaderError::Broken { dir: dir.display().to_string(), hash: hash.to_string(), what };
    let target = std::fs::read_link(dir.join(INFO)).map_err(|e| broken(format!("no readable {INFO} record: {e}")))?;
    let info: PinInfo = serde_json::from_str(&target.to_string_lossy())
        .map_err(|e| broken(format!("the {INFO} record is not valid: {e}")))?;
    if info.format != INFO_FORMAT {
        return Err(broken(format!("{INFO} format {} (this phantom reads {INFO_FORMAT})", info.format)));
    }
    let mut programs = Vec::new();
    for (name, section) in &info.programs {
        let pin = dir.join(PROGRAMS).join(name);
        let p = aya::programs::ProgramInfo::from_pin(&pin).map_err(|e| broken(format!("program {name}: {e}")))?;
        programs.push(PinnedProgram {
            name: name.clone(),
            section: section.clone(),
            id: p.id(),
            pin,
            attached_cgroups: None,
        });
    }
    let mut maps = Vec::new();
    for name in &info.maps {
        let pin = dir.join(MAPS).join(name);
        let m = aya::maps::MapData::from_pin(&pin).map_err(|e| broken(format!("map {name}: {e}")))?;
        let id = m.info().map_err(|e| broken(format!("map {name}: {e}")))?.id();
        maps.push(PinnedMap { name: name.clone(), id, pin, entries_written: None });
    }
    Ok((info, programs, maps))
}

fn reuse(dir: &Path, hash: &str, sha256: &str, mounted_bpffs: bool) -> Result<LoadReport, LoaderError> {
    let (info, programs, maps) = read_pins(dir, hash)?;
    if info.sha256 != sha256 {
        return Err(LoaderError::Conflict {
            dir: dir.display().to_string(),
            found: info.sha256,
            expected: sha256.to_string(),
        });
    }
    Ok(LoadReport {
        profile: info.profile,
        hash: hash.to_string(),
        sha256: info.sha256,
        dir: dir.to_path_buf(),
        reused: true,
        mounted_bpffs,
        programs,
        maps,
    })
}

/// Every loaded bundle, with the cgroups its programs are attached to.
///
/// Counting attachments walks the cgroup v2 hierarchy and asks each cgroup
/// (`BPF_PROG_QUERY`, one call per attach type the bundle uses) for its
/// programs: a few syscalls per cgroup, milliseconds on a host with a few
/// hundred cgroups. A bundle whose pins are broken is listed with no
/// programs and its profile set to the error.
pub fn status() -> Result<Vec<PinnedBundle>, LoaderError> {
    let root = Path::new(PIN_ROOT);
    if !is_bpffs(Path::new(BPFFS)) || !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map_err(kernel(format!("reading {PIN_ROOT}")))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == HASH_LEN && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    names.sort();
    let cgroups = cgroup2_dirs();
    let mut out = Vec::new();
    for hash in names {
        let dir = root.join(&hash);
        match read_pins(&dir, &hash) {
            Ok((info, mut programs, maps)) => {
                let attached = attachments(&cgroups, &mut programs);
                out.push(PinnedBundle {
                    profile: info.profile,
                    hash,
                    sha256: info.sha256,
                    dir,
                    programs,
                    maps,
                    attached_cgroups: attached,
                });
            }
            Err(e) => out.push(PinnedBundle {
                profile: format!("(broken: {e})"),
                hash,
                sha256: String::new(),
                dir,
                programs: Vec::new(),
                maps: Vec::new(),
                attached_cgroups: Vec::new(),
            }),
        }
    }
    Ok(out)
}

/// The cgroup v2 mount point (`/sys/fs/cgroup` or, on hybrid hosts,
/// `/sys/fs/cgroup/unified`), from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
    })
}

/// Every directory of the cgroup v2 hierarchy.
fn cgroup2_dirs() -> Vec<PathBuf> {
    let Some(root) = cgroup2_mount() else { return Vec::new() };
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out.sort();
    out
}

/// Fills `attached_cgroups` of each program; returns the cgroups with any.
fn attachments(cgroups: &[PathBuf], programs: &mut [PinnedProgram]) -> Vec<PathBuf> {
    let mut any = Vec::new();
    for p in programs.iter_mut() {
        p.attached_cgroups = Some(0);
    }
    let mut types: Vec<u32> = programs.iter().filter_map(|p| kind_of(&p.section)).map(|k| k.attach_type()).collect();
    types.sort_unstable();
    types.dedup();
    for cg in cgroups {
        let Ok(f) = std::fs::File::open(cg) else { continue };
        let mut hit = false;
        for &t in &types {
            let Ok(ids) = sys::prog_query(f.as_fd(), t) else { continue };
            for p in programs.iter_mut().filter(|p| kind_of(&p.section).map(|k| k.attach_type()) == Some(t)) {
                if ids.contains(&p.id) {
                    *p.attached_cgroups.get_or_insert(0) += 1;
                    hit = true;
                }
            }
        }
        if hit {
            any.push(cg.clone());
        }
    }
    any
}

/// Unpins every program and map of a bundle and removes its directory.
/// Programs attached to cgroups stay attached (and enforcing) there.
pub fn unload(target: &BundleRef) -> Result<UnloadReport, LoaderError> {
    let hash = target.hash()?;
    let dir = pin_dir(&hash);
    if !dir.exists() {
        return Err(LoaderError::NotLoaded(hash));
    }
    let (profile, programs, maps, still_attached) = match read_pins(&dir, &hash) {
        Ok((info, mut programs, maps)) => {
            let attached = attachments(&cgroup2_dirs(), &mut programs);
            (info.profile, programs.len(), maps.len(), attached)
        }
        // Broken pins are removed all the same.
        Err(_) => (String::new(), 0, 0, Vec::new()),
    };
    std::fs::remove_dir_all(&dir).map_err(kernel(format!("removing {}", dir.display())))?;
    Ok(UnloadReport { profile, hash, dir, programs, maps, still_attached })
}

/// The pinned programs of the bundle whose manifest has `sha256`, if
/// `phantom load` pinned it (`None` when it did not).
pub fn pinned_programs(hash: &str, sha256: &str) -> Result<Option<Vec<(ProgKind, OwnedFd)>>, LoaderError> {
    let dir = pin_dir(hash);
    if !dir.exists() {
        return Ok(None);
    }
    let (info, _, _) = read_pins(&dir, hash)?;
    if info.sha256 != sha256 {
        return Err(LoaderError::Conflict {
            dir: dir.display().to_string(),
            found: info.sha256,
            expected: sha256.to_string(),
        });
    }
    open_pinned(hash).map(Some)
}

/// The pinned programs of a bundle, opened, with their kinds.
fn open_pinned(hash: &str) -> Result<Vec<(ProgKind, OwnedFd)>, LoaderError> {
    let dir = pin_dir(hash);
    if !dir.exists() {
        return Err(LoaderError::NotLoaded(hash.to_string()));
    }
    let (info, _, _) = read_pins(&dir, hash)?;
    let broken = |what: String| LoaderError::Broken { dir: dir.display().to_string(), hash: hash.to_string(), what };
    let mut out = Vec::new();
    for (name, section) in &info.programs {
        let kind = kind_of(section).ok_or_else(|| broken(format!("program {name} has unknown section {section}")))?;
        let pin = dir.join(PROGRAMS).join(name);
        let fd = aya::programs::ProgramInfo::from_pin(&pin)
            .and_then(|p| p.fd())
            .map_err(|e| broken(format!("opening {}: {e}", pin.display())))?;
        let fd = fd.as_fd().try_clone_to_owned().map_err(kernel("dup"))?;
        out.push((kind, fd));
    }
    Ok(out)
}

/// The programs of a loaded bundle attached to one cgroup; detached when
/// dropped (or by [`Attachment::detach`]). If the process dies first, they
/// stay attached: see the module documentation.
#[derive(Debug)]
pub struct Attachment {
    hash: String,
    inner: cgroup_bpf::Attachment,
}

impl Attachment {
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn cgroup_path(&self) -> &Path {
        self.inner.cgroup_path()
    }

    /// Detaches every program this attachment attached.
    pub fn detach(self) -> Result<(), LoaderError> {
        Ok(self.inner.detach()?)
    }
}

/// Opens the pinned programs of bundle `hash` and attaches them to the
/// cgroup v2 directory `cgroup` (`BPF_PROG_ATTACH`, `BPF_F_ALLOW_MULTI`).
pub fn attach_pinned(hash: &str, cgroup: &Path) -> Result<Attachment, LoaderError> {
    let programs = open_pinned(hash)?;
    let loaded = LoadedPrograms { programs };
    Ok(Attachment { hash: hash.to_string(), inner: loaded.attach(cgroup)? })
}

/// Detaches the programs of bundle `hash` from `cgroup`, whoever attached
/// them (e.g. a process that died); returns how many were attached.
pub fn detach_pinned(hash: &str, cgroup: &Path) -> Result<usize, LoaderError> {
    let programs = open_pinned(hash)?;
    let f =
        std::fs::File::open(cgroup).map_err(|source| CgroupBpfError::Cgroup { path: cgroup.to_path_buf(), source })?;
    let mut n = 0;
    for (kind, fd) in &programs {
        match sys::prog_detach(f.as_fd(), fd.as_fd(), kind.attach_type()).map_err(io::Error::from) {
            Ok(()) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(kernel(format!("BPF_PROG_DETACH {} from {}", kind.section(), cgroup.display()))(e)),
        }
    }
    Ok(n)
}
