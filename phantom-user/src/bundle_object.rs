//! A bundle's eBPF objects (`cgroup.bpf.o` + `cgroup-maps.json`,
//! `xdp.bpf.o` + `xdp-maps.json`), read, checked against the manifest and
//! loaded with aya. The pinning loader ([`crate::loader::load`]) pins what
//! [`load`] returns for the cgroup object; a sandbox whose bundle is not
//! pinned loads the same object for itself ([`for_sandboxes`]). Either way
//! the kernel runs exactly the bytes the manifest's sha256 names, the ones
//! `phantom-policy inspect` shows.

use crate::cgroup_bpf::LoadedPrograms;
use crate::loader::{LoaderError, Rejection, HASH_LEN};
use aya::maps::{Map, MapData};
use aya::programs::Program;
use phantom_bpf_sys as sys;
use phantom_dsl::source::sha256_hex;
use phantom_ebpf::bundle::{self, Bundle, Manifest, MapContents, ProgramInfo, MANIFEST};
#[cfg(doc)]
use phantom_ebpf::bundle::{CGROUP_MAPS, CGROUP_OBJECT, XDP_OBJECT};
use phantom_ebpf::netprog::ProgKind;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

/// One eBPF object of a bundle, in memory.
#[derive(Debug, Clone)]
pub struct BundleObject {
    /// Its file name in the bundle ([`CGROUP_OBJECT`], [`XDP_OBJECT`]).
    pub name: String,
    /// sha256 of the bundle's manifest.json (64 hex characters).
    pub sha256: String,
    pub profile: String,
    /// The ELF object, checked against the manifest's sha256.
    pub object: Vec<u8>,
    /// The manifest's programs of the object, with their line maps.
    pub programs: Vec<ProgramInfo>,
    /// Map contents to write after creating the maps (LPM tries).
    pub contents: Vec<MapContents>,
}

impl BundleObject {
    /// Object `object` (with map contents `maps`, e.g. [`CGROUP_OBJECT`]
    /// and [`CGROUP_MAPS`]) of a bundle directory; `None` when the bundle
    /// has no such object.
    pub fn from_dir(dir: &Path, object: &str, maps: &str) -> Result<Option<BundleObject>, LoaderError> {
        let manifest_bytes = read(&dir.join(MANIFEST))?;
        let manifest = bundle::read_manifest(dir)?;
        let file = |name: &str| -> Result<Option<Vec<u8>>, LoaderError> {
            if !manifest.artifacts.iter().any(|a| a.name == name) {
                return Ok(None);
            }
            read(&dir.join(name)).map(Some)
        };
        let names = (object, maps);
        let (object, maps) = (file(names.0)?, file(names.1)?);
        BundleObject::new(&manifest_bytes, &manifest, names, object, maps, &dir.display().to_string())
    }

    /// The same from a bundle built in memory.
    pub fn from_bundle(b: &Bundle, object: &str, maps: &str) -> Result<Option<BundleObject>, LoaderError> {
        let file = |name: &str| b.files.iter().find(|(n, _)| n == name).map(|(_, bytes)| bytes.clone());
        let manifest_bytes = file(MANIFEST).ok_or_else(|| LoaderError::Object {
            what: "the bundle".into(),
            message: format!("it has no {MANIFEST}"),
        })?;
        BundleObject::new(&manifest_bytes, &b.manifest, (object, maps), file(object), file(maps), "the bundle")
    }

    fn new(
        manifest_bytes: &[u8],
        manifest: &Manifest,
        (object_name, maps_name): (&str, &str),
        object: Option<Vec<u8>>,
        maps: Option<Vec<u8>>,
        place: &str,
    ) -> Result<Option<BundleObject>, LoaderError> {
        let Some(object) = object else { return Ok(None) };
        let checked = |name: &str, bytes: &[u8]| {
            let recorded = manifest.artifacts.iter().find(|a| a.name == name);
            match recorded {
                Some(a) if a.sha256 == sha256_hex(bytes) => Ok(()),
                _ => Err(LoaderError::ArtifactHash { path: format!("{place}/{name}") }),
            }
        };
        checked(object_name, &object)?;
        let contents = match maps {
            Some(bytes) => {
                checked(maps_name, &bytes)?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| LoaderError::Object { what: format!("{place}/{maps_name}"), message: e.to_string() })?
            }
            None => Vec::new(),
        };
        let programs =
            manifest.artifacts.iter().find(|a| a.name == object_name).expect("checked above").programs.clone();
        Ok(Some(BundleObject {
            name: object_name.to_string(),
            sha256: sha256_hex(manifest_bytes),
            profile: manifest.profile.clone(),
            object,
            programs,
            contents,
        }))
    }

    /// The name of the bundle's pin directory ([`crate::loader::pin_dir`]).
    pub fn hash(&self) -> &str {
        &self.sha256[..HASH_LEN]
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LoaderError> {
    std::fs::read(path).map_err(|source| LoaderError::Read { path: path.display().to_string(), source })
}

fn object_err(what: impl Into<String>) -> impl FnOnce(String) -> LoaderError {
    let what = what.into();
    move |message| LoaderError::Object { what, message }
}

/// The cgroup program kind of an ELF section.
pub fn kind_of(section: &str) -> Option<ProgKind> {
    ProgKind::ALL.into_iter().find(|k| k.section() == section)
}

/// The object loaded into the kernel: maps created and filled, every
/// program of the manifest loaded (and verified). Dropping it closes the
/// fds; what is pinned or attached stays.
pub struct Loaded {
    pub ebpf: aya::Ebpf,
    /// `(map name, entries written)`, in the object's order.
    pub maps: Vec<(String, usize)>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("maps", &self.maps).finish_non_exhaustive()
    }
}

/// The data of the map types a cgroup object has (LPM tries today).
fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::LpmTrie(d) | Map::HashMap(d) | Map::LruHashMap(d) | Map::Array(d) => Some(d),
        _ => None,
    }
}

/// Loads `obj` with aya: creates and fills its maps, then loads every
/// program the manifest names (nothing else may be in the object).
pub fn load(obj: &BundleObject) -> Result<Loaded, LoaderError> {
    let mut ebpf = aya::EbpfLoader::new()
        .load(&obj.object)
        .map_err(|e| object_err(format!("aya cannot load {}", obj.name))(format!("{e:#?}")))?;

    let names: Vec<String> = ebpf.maps().map(|(n, _)| n.to_string()).collect();
    if let Some(c) = obj.contents.iter().find(|c| !names.contains(&c.name)) {
        return Err(object_err(&obj.name)(format!("map `{}` of its contents is not in it (maps: {names:?})", c.name)));
    }
    let mut maps = Vec::new();
    for name in &names {
        let map = ebpf.map(name).expect("listed");
        let mut written = 0;
        if let Some(c) = obj.contents.iter().find(|c| &c.name == name) {
            let data = map_data(map).ok_or_else(|| {
                object_err(format!("map `{name}`"))(
                    "only hash, LRU hash, array and LPM-trie maps can be filled".to_string(),
                )
            })?;
            let info = data.info().map_err(|e| object_err(format!("map `{name}`"))(e.to_string()))?;
            if info.key_size() != c.key_size || info.value_size() != c.value_size {
                return Err(object_err(format!("map `{name}`"))(format!(
                    "the object defines key/value sizes {}/{}, its contents {}/{}",
                    info.key_size(),
                    info.value_size(),
                    c.key_size,
                    c.value_size
                )));
            }
            for (k, v) in &c.entries {
                let (Some(k), Some(v)) = (unhex(k), unhex(v)) else {
                    return Err(object_err(&obj.name)(format!("map `{name}`: an entry is not hex")));
                };
                if k.len() != c.key_size as usize || v.len() != c.value_size as usize {
                    return Err(object_err(&obj.name)(format!("map `{name}`: an entry of the wrong size")));
                }
                sys::map_update(data.fd().as_fd(), &k, &v, sys::BPF_ANY).map_err(|e| LoaderError::Kernel {
                    what: format!("BPF_MAP_UPDATE_ELEM on `{name}`"),
                    source: io::Error::from(e),
                })?;
                written += 1;
            }
        }
        maps.push((name.clone(), written));
    }

    let in_object: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    if let Some(extra) = in_object.iter().find(|n| !obj.programs.iter().any(|p| &p.name == *n)) {
        return Err(object_err(&obj.name)(format!("program `{extra}` is not in the manifest")));
    }
    for p in &obj.programs {
        if kind_of(&p.section).is_none() && p.section != phantom_ebpf::xdp::SECTION {
            return Err(object_err(format!("program `{}`", p.name))(format!("unknown section {}", p.section)));
        }
        let prog = ebpf.program_mut(&p.name).ok_or_else(|| {
            object_err(&obj.name)(format!("the manifest names program `{}`, the object lacks it", p.name))
        })?;
        let loaded = match prog {
            Program::CgroupSock(x) => x.load(),
            Program::CgroupSockAddr(x) => x.load(),
            Program::CgroupDevice(x) => x.load(),
            Program::Xdp(x) => x.load(),
            other => {
                return Err(object_err(format!("program `{}`", p.name))(format!(
                    "section {} loads as {:?}, which this loader does not handle",
                    p.section,
                    other.prog_type()
                )))
            }
        };
        loaded.map_err(|e| rejected(p, e))?;
    }
    Ok(Loaded { ebpf, maps })
}

impl Loaded {
    /// The fd of loaded program `name` (duplicated: it outlives `self`).
    pub fn program_fd(&self, name: &str) -> Result<OwnedFd, LoaderError> {
        let prog = self.ebpf.program(name).ok_or_else(|| object_err("the object")(format!("no program `{name}`")))?;
        let fd = prog.fd().map_err(|e| object_err(format!("program `{name}`"))(e.to_string()))?;
        fd.as_fd().try_clone_to_owned().map_err(|source| LoaderError::Kernel { what: "dup".into(), source })
    }

    /// The loaded cgroup programs of `obj` with their kinds, in manifest
    /// order.
    pub fn program_fds(&self, obj: &BundleObject) -> Result<LoadedPrograms, LoaderError> {
        let mut programs = Vec::new();
        for p in &obj.programs {
            let kind = kind_of(&p.section).ok_or_else(|| {
                object_err(format!("program `{}`", p.name))(format!("{} is not a cgroup section", p.section))
            })?;
            programs.push((kind, self.program_fd(&p.name)?));
        }
        Ok(LoadedPrograms { programs })
    }
}

/// What sandboxes of a bundle attach, and where their denials go.
#[derive(Debug)]
pub struct SandboxPrograms {
    pub programs: LoadedPrograms,
    /// True when these are the pins of `phantom load`.
    pub pinned: bool,
    /// The object's audit ring buffer (`phantom_audit`), when it has one.
    pub audit: Option<crate::lsm::AuditReader>,
}

/// The programs sandboxes of this bundle attach: the pinned ones when
/// `phantom load` pinned the bundle (shared, loaded once for the host),
/// else the object loaded for this process.
pub fn for_sandboxes(obj: &BundleObject) -> Result<SandboxPrograms, LoaderError> {
    let ring = phantom_ebpf::audit::RINGBUF_MAP;
    if let Some(programs) = crate::loader::pinned_programs(obj.hash(), &obj.sha256)? {
        let pin = crate::loader::pin_dir(obj.hash()).join("maps").join(ring);
        let audit = crate::lsm::AuditReader::open_pinned(&pin).ok();
        return Ok(SandboxPrograms { programs: LoadedPrograms { programs }, pinned: true, audit });
    }
    let mut loaded = load_direct(obj)?;
    let audit = match loaded.maps.iter().position(|(n, _)| n == ring) {
        Some(i) => crate::lsm::AuditReader::from_fd(loaded.maps.remove(i).1).ok(),
        None => None,
    };
    let mut programs = Vec::new();
    for (name, fd) in loaded.programs {
        let info = obj.programs.iter().find(|p| p.name == name).expect("load_direct loads the manifest's programs");
        let kind = kind_of(&info.section).ok_or_else(|| {
            object_err(format!("program `{name}`"))(format!("{} is not a cgroup section", info.section))
        })?;
        programs.push((kind, fd));
    }
    Ok(SandboxPrograms { programs: LoadedPrograms { programs }, pinned: false, audit })
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A verifier rejection (or another load failure) with the manifest's
/// `[instruction, line]` map applied to the log.
fn rejected(p: &ProgramInfo, e: aya::programs::ProgramError) -> LoaderError {
    match e {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
            rejection(p, io_error, verifier_log.to_string())
        }
        other => object_err(format!("loading program `{}` ({})", p.name, p.section))(format!("{other:#}")),
    }
}

/// The verifier refused `p`: its log with the manifest's lines applied.
fn rejection(p: &ProgramInfo, source: io::Error, log: String) -> LoaderError {
    let line_of = |i: usize| p.lines.iter().find(|(insn, _)| *insn == i).map(|(_, l)| *l);
    let insn = crate::loader::last_insn_index(&log);
    LoaderError::Rejected(Box::new(Rejection {
        program: p.name.clone(),
        section: p.section.clone(),
        source,
        insn,
        line: insn.and_then(line_of),
        annotated: crate::loader::annotate_log(&log, &p.lines),
        log,
    }))
}

/// An object loaded straight with `bpf(2)`: maps created from its `.maps`
/// BTF and filled, programs loaded with their map fds bound. Same bytes
/// and checks as [`load`], without aya, whose loader parses the running
/// kernel's whole BTF first (~40 ms here, once per process: the cold
/// `phantom run` path cannot afford it; the objects have no CO-RE
/// relocations to resolve). The kernel gets no program BTF this way, so
/// `bpftool prog dump xlated linum` shows lines only for pinned loads.
#[derive(Debug)]
pub struct DirectLoaded {
    /// `(name, fd)` in manifest order.
    pub programs: Vec<(String, OwnedFd)>,
    pub maps: Vec<(String, OwnedFd)>,
}

impl DirectLoaded {
    pub fn program(&self, name: &str) -> Option<&OwnedFd> {
        self.programs.iter().find(|(n, _)| n == name).map(|(_, fd)| fd)
    }
}

/// Program type and expected attach type of a section this runtime loads.
fn prog_types(section: &str) -> Option<(u32, u32)> {
    if section == phantom_ebpf::xdp::SECTION {
        return Some((phantom_ebpf::xdp::BPF_PROG_TYPE_XDP, 0));
    }
    kind_of(section).map(|k| (k.prog_type(), k.attach_type()))
}

/// Loads `obj` with `bpf(2)` directly (see [`DirectLoaded`]).
pub fn load_direct(obj: &BundleObject) -> Result<DirectLoaded, LoaderError> {
    let parsed = phantom_ebpf::elf::read::read_object(&obj.object)
        .map_err(|e| object_err(format!("reading {}", obj.name))(e.to_string()))?;
    if let Some(c) = obj.contents.iter().find(|c| !parsed.maps.contains(&c.name)) {
        return Err(object_err(&obj.name)(format!("map `{}` of its contents is not in it", c.name)));
    }
    let kernel = |what: String| move |e: sys::SysError| LoaderError::Kernel { what, source: io::Error::from(e) };
    let mut maps = Vec::new();
    for d in &parsed.map_defs {
        let fd = sys::map_create(d.map_type, d.key_size, d.value_size, d.max_entries, d.flags, &d.name)
            .map_err(kernel(format!("creating map `{}`", d.name)))?;
        if let Some(c) = obj.contents.iter().find(|c| c.name == d.name) {
            if (c.key_size, c.value_size) != (d.key_size, d.value_size) {
                return Err(object_err(format!("map `{}`", d.name))("its contents have other key/value sizes".into()));
            }
            for (k, v) in &c.entries {
                let (Some(k), Some(v)) = (unhex(k), unhex(v)) else {
                    return Err(object_err(&obj.name)(format!("map `{}`: an entry is not hex", d.name)));
                };
                if k.len() != d.key_size as usize || v.len() != d.value_size as usize {
                    return Err(object_err(&obj.name)(format!("map `{}`: an entry of the wrong size", d.name)));
                }
                sys::map_update(fd.as_fd(), &k, &v, sys::BPF_ANY)
                    .map_err(kernel(format!("BPF_MAP_UPDATE_ELEM on `{}`", d.name)))?;
            }
        }
        maps.push((d.name.clone(), fd));
    }
    if let Some(extra) = parsed.programs.iter().find(|p| !obj.programs.iter().any(|m| m.name == p.name)) {
        return Err(object_err(&obj.name)(format!("program `{}` is not in the manifest", extra.name)));
    }
    let mut programs = Vec::new();
    for info in &obj.programs {
        let p = parsed.programs.iter().find(|p| p.name == info.name).ok_or_else(|| {
            object_err(&obj.name)(format!("the manifest names program `{}`, the object lacks it", info.name))
        })?;
        let (prog_type, attach) = prog_types(&p.section)
            .ok_or_else(|| object_err(format!("program `{}`", p.name))(format!("unknown section {}", p.section)))?;
        let mut code = p.code.clone();
        for r in p.code.map_names() {
            let fd = maps.iter().find(|(n, _)| n == r).map(|(_, fd)| fd.as_raw_fd()).ok_or_else(|| {
                object_err(format!("program `{}`", p.name))(format!("references map `{r}`, which the object lacks"))
            })?;
            code.bind_map(r, fd).map_err(|e| object_err(format!("program `{}`", p.name))(e.to_string()))?;
        }
        let bytes = code.to_bytes();
        let load = sys::ProgLoad {
            prog_type,
            expected_attach_type: attach,
            insns: &bytes,
            license: c"GPL",
            name: &p.name,
            attach_btf_id: 0,
        };
        match sys::prog_load(&load, 0) {
            Ok((fd, _)) => programs.push((p.name.clone(), fd)),
            Err(sys::SysError::Rejected { source, log }) => return Err(rejection(info, source, log.0)),
            Err(e) => return Err(kernel(format!("loading `{}`", p.name))(e)),
        }
    }
    Ok(DirectLoaded { programs, maps })
}
