//! The compiled bundle: every artifact of one policy plus `manifest.json`
//! (source hashes, artifact hashes, layers, rule-to-instruction maps). The
//! runtime reads the manifest to find the artifacts.
//!
//! | file | layer | content |
//! |---|---|---|
//! | `policy.ir.json` | — | the typed IR (serde JSON) |
//! | `seccomp-x86_64.bpf`, `seccomp-aarch64.bpf` | seccomp | raw `struct sock_filter[]`, the format of libseccomp's `seccomp_export_bpf` |
//! | `landlock.json` | landlock | the ruleset description ([`crate::landlock::LandlockRuleset`]) |
//! | `cgroup.bpf.o` | cgroup-bpf | the cgroup programs of [`crate::netprog`] as one BPF ELF object ([`crate::elf::ObjectBuilder`]): one section per program (`cgroup/sock_create`, `cgroup/connect4`, ..., `cgroup/dev`), BTF-defined maps, line_info into the policy files; loads with libbpf and aya |
//! | `cgroup-maps.json` | cgroup-bpf | the contents of the object's maps (LPM tries of large CIDR lists), which a loader writes after creating them; only when there are maps |
//! | `xdp.bpf.o` | xdp | `network.mode: allowlist` only: the two programs of [`crate::xdp`] (section `xdp`: `phantom_xdp_eg` for the host end of the veth, `phantom_xdp_in` for the sandbox end) and their shared flow map, with line_info |
//! | `xdp-maps.json` | xdp | contents of the XDP object's maps, when a map has any (the LPM-trie design) |
//! | `manifest.json` | — | this index |
//!
//! Output is deterministic: no timestamps, fixed order, hashes of content.

use crate::elf::{MapDef, ObjectBuilder, Program};
use crate::landlock;
use crate::netprog::{self, CgroupPrograms};
use crate::seccomp::{self, SeccompError};
use crate::xdp;
use phantom_dsl::ir::{LayerSummary, Policy, SourceInfo};
use phantom_dsl::source::sha256_hex;
use phantom_dsl::syscalls::Arch;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
/// The cgroup-BPF object and the contents of its maps.
pub const CGROUP_OBJECT: &str = "cgroup.bpf.o";
pub const CGROUP_MAPS: &str = "cgroup-maps.json";
/// The layer name of both.
pub const CGROUP_LAYER: &str = "cgroup-bpf";
/// The XDP object (allowlist mode), the contents of its maps, their layer.
pub const XDP_OBJECT: &str = "xdp.bpf.o";
pub const XDP_MAPS: &str = "xdp-maps.json";
pub const XDP_LAYER: &str = "xdp";
/// Recorded in the manifest: the backends' version decides the bytes.
pub const COMPILER: &str = concat!("phantom-ebpf ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("seccomp ({arch}): {source}")]
    Seccomp { arch: &'static str, source: SeccompError },
    #[error("cgroup-BPF programs: {0}")]
    CgroupBpf(String),
    #[error("XDP programs: {0}")]
    Xdp(String),
    #[error("the text given for source {path} does not match the policy's sha256 of it")]
    SourceMismatch { path: String },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot read bundle {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a bundle manifest: {source}")]
    Manifest { path: String, source: serde_json::Error },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    /// `seccomp`, `landlock`, ...; none for the IR.
    pub layer: Option<String>,
    pub arch: Option<String>,
    pub bytes: usize,
    pub sha256: String,
    /// Instruction count, for programs.
    pub instructions: Option<usize>,
    /// `[instruction index, policy line]` for every instruction a rule produced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<(usize, u32)>,
    /// For objects holding several programs: each one's section, name,
    /// instruction count and `[instruction, policy line]` map.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<ProgramInfo>,
}

/// One program of an ELF object artifact. Instruction indices count 8-byte
/// slots from the program's first instruction, as the kernel, line_info
/// and bpftool do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramInfo {
    pub section: String,
    pub name: String,
    pub instructions: usize,
    pub lines: Vec<(usize, u32)>,
}

/// One map of `cgroup-maps.json`: its definition (as in the object) and
/// its entries, keys and values in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapContents {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub entries: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub compiler: String,
    pub profile: String,
    pub sources: Vec<SourceInfo>,
    pub layers: Vec<LayerSummary>,
    pub required_layers: Vec<String>,
    pub artifacts: Vec<Artifact>,
}

/// A bundle in memory: `(file name, bytes)` in write order, manifest last.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub files: Vec<(String, Vec<u8>)>,
    pub manifest: Manifest,
}

fn artifact(name: &str, layer: Option<&str>, arch: Option<Arch>, bytes: &[u8]) -> Artifact {
    Artifact {
        name: name.to_string(),
        layer: layer.map(str::to_string),
        arch: arch.map(|a| a.name().to_string()),
        bytes: bytes.len(),
        sha256: sha256_hex(bytes),
        instructions: None,
        lines: Vec::new(),
        programs: Vec::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `(path, text)` pairs of `texts` that are sources of `policy`,
/// each checked against the sha256 the policy recorded.
fn policy_texts(policy: &Policy, texts: &[(String, String)]) -> Result<Vec<(String, String)>, BundleError> {
    let mut out = Vec::new();
    for (path, text) in texts {
        match policy.sources.iter().find(|s| &s.path == path) {
            Some(s) if s.sha256 == sha256_hex(text.as_bytes()) => out.push((path.clone(), text.clone())),
            Some(_) => return Err(BundleError::SourceMismatch { path: path.clone() }),
            None => {}
        }
    }
    Ok(out)
}

/// The cgroup-BPF object of a policy: [`netprog::compile`]'s programs and
/// maps through [`ObjectBuilder`], with the policy `texts` (`(path, text)`
/// of files in `policy.sources`) giving bpftool its source lines. Pure.
pub fn cgroup_object(policy: &Policy, texts: &[(String, String)]) -> Result<(Vec<u8>, CgroupPrograms), BundleError> {
    let progs = netprog::compile(policy).map_err(|e| BundleError::CgroupBpf(e.to_string()))?;
    let mut b = ObjectBuilder::new("GPL");
    for m in &progs.maps {
        let mut def = MapDef::new(m.name.clone(), m.map_type, m.key_size, m.value_size, m.max_entries);
        def.flags = m.flags;
        b = b.map(def);
    }
    for p in &progs.programs {
        b = b.program(Program::new(p.kind.section(), p.kind.name(), p.encoded.clone()));
    }
    for (path, text) in policy_texts(policy, texts)? {
        b = b.source(path, text);
    }
    let bytes = b.build().map_err(|e| BundleError::CgroupBpf(e.to_string()))?;
    Ok((bytes, progs))
}

/// A program's entry in the manifest.
fn program_info(section: &str, name: &str, code: &crate::bpf::Encoded) -> ProgramInfo {
    ProgramInfo {
        section: section.to_string(),
        name: name.to_string(),
        instructions: code.insns.len(),
        lines: code.lines.iter().map(|(&slot, loc)| (slot, loc.line)).collect(),
    }
}

/// The `*-maps.json` file of maps that have entries, if any has.
fn map_contents(maps: &[netprog::MapSpec]) -> Option<Vec<u8>> {
    let with_entries: Vec<MapContents> = maps
        .iter()
        .filter(|m| !m.entries.is_empty())
        .map(|m| MapContents {
            name: m.name.clone(),
            map_type: m.map_type,
            key_size: m.key_size,
            value_size: m.value_size,
            max_entries: m.max_entries,
            flags: m.flags,
            entries: m.entries.iter().map(|(k, v)| (hex(k), hex(v))).collect(),
        })
        .collect();
    if with_entries.is_empty() {
        return None;
    }
    let mut bytes = serde_json::to_vec_pretty(&with_entries).expect("map contents serialise");
    bytes.push(b'\n');
    Some(bytes)
}

/// Runs every backend over the policy. Pure: no kernel, no filesystem.
/// The cgroup object's line_info carries file and line but no source text;
/// [`build_with_sources`] adds it.
pub fn build(policy: &Policy) -> Result<Bundle, BundleError> {
    build_with_sources(policy, &[])
}

/// [`build`], with the text of the policy's source files (`(path, text)`,
/// paths as in `policy.sources`; texts must match the recorded sha256) so
/// that the line_info of `cgroup.bpf.o` holds each policy line, which
/// `bpftool prog dump xlated linum` and verifier logs print. The caller
/// reads the files (the CLI passes what the front end read); this stays pure.
pub fn build_with_sources(policy: &Policy, texts: &[(String, String)]) -> Result<Bundle, BundleError> {
    let mut files = Vec::new();
    let mut artifacts = Vec::new();
    let ir = serde_json::to_vec_pretty(policy).expect("the IR serialises");
    artifacts.push(artifact("policy.ir.json", None, None, &ir));
    files.push(("policy.ir.json".to_string(), ir));

    if policy.seccomp.enabled {
        for arch in Arch::POLICY_ARCHES {
            let f = seccomp::compile(&policy.seccomp, arch)
                .map_err(|source| BundleError::Seccomp { arch: arch.name(), source })?;
            let name = format!("seccomp-{}.bpf", arch.name());
            let bytes = f.to_bytes();
            let mut a = artifact(&name, Some("seccomp"), Some(arch), &bytes);
            a.instructions = Some(f.len());
            a.lines = f.lines.iter().enumerate().filter_map(|(i, l)| l.map(|l| (i, l))).collect();
            artifacts.push(a);
            files.push((name, bytes));
        }
    }
    let ll = landlock::compile(policy);
    if !ll.is_empty() {
        let mut bytes = serde_json::to_vec_pretty(&ll).expect("the ruleset serialises");
        bytes.push(b'\n');
        artifacts.push(artifact("landlock.json", Some("landlock"), None, &bytes));
        files.push(("landlock.json".to_string(), bytes));
    }

    let (object, progs) = cgroup_object(policy, texts)?;
    let mut a = artifact(CGROUP_OBJECT, Some(CGROUP_LAYER), None, &object);
    a.instructions = Some(progs.programs.iter().map(|p| p.encoded.insns.len()).sum());
    a.programs = progs.programs.iter().map(|p| program_info(p.kind.section(), p.kind.name(), &p.encoded)).collect();
    artifacts.push(a);
    files.push((CGROUP_OBJECT.to_string(), object));
    if let Some(bytes) = map_contents(&progs.maps) {
        artifacts.push(artifact(CGROUP_MAPS, Some(CGROUP_LAYER), None, &bytes));
        files.push((CGROUP_MAPS.to_string(), bytes));
    }

    if let Some(set) = xdp::compile(policy).map_err(|e| BundleError::Xdp(e.to_string()))? {
        let object = xdp::object(&set, &policy_texts(policy, texts)?).map_err(|e| BundleError::Xdp(e.to_string()))?;
        let mut a = artifact(XDP_OBJECT, Some(XDP_LAYER), None, &object);
        let progs = [&set.egress, &set.ingress];
        a.instructions = Some(progs.iter().map(|p| p.encoded.insns.len()).sum());
        a.programs = progs.iter().map(|p| program_info(xdp::SECTION, p.direction.name(), &p.encoded)).collect();
        artifacts.push(a);
        files.push((XDP_OBJECT.to_string(), object));
        if let Some(bytes) = map_contents(&set.maps) {
            artifacts.push(artifact(XDP_MAPS, Some(XDP_LAYER), None, &bytes));
            files.push((XDP_MAPS.to_string(), bytes));
        }
    }

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        compiler: COMPILER.to_string(),
        profile: policy.profile.clone(),
        sources: policy.sources.clone(),
        layers: policy.layers(),
        required_layers: policy.require.iter().map(|l| l.name().to_string()).collect(),
        artifacts,
    };
    let mut m = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
    m.push(b'\n');
    files.push((MANIFEST.to_string(), m));
    Ok(Bundle { files, manifest })
}

/// Writes every file (temporary name, then rename), manifest last, so a
/// crashed compile never leaves a manifest that names missing artifacts.
pub fn write(dir: &Path, bundle: &Bundle) -> Result<(), BundleError> {
    let err = |path: &Path| {
        let path = path.display().to_string();
        move |source| BundleError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    for (name, bytes) in &bundle.files {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).map_err(err(&tmp))?;
        std::fs::rename(&tmp, dir.join(name)).map_err(err(&dir.join(name)))?;
    }
    Ok(())
}

/// Reads a bundle's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest, BundleError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|source| BundleError::Read { path: path.display().to_string(), source })?;
    serde_json::from_slice(&text).map_err(|source| BundleError::Manifest { path: path.display().to_string(), source })
}
