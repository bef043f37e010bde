//! The compiled bundle: every artifact of one policy plus `manifest.json`
//! (source hashes, artifact hashes, layers, rule-to-instruction maps). The
//! runtime reads the manifest to find the artifacts.
//!
//! | file | layer | content |
//! |---|---|---|
//! | `policy.ir.json` | — | the typed IR (serde JSON) |
//! | `seccomp-x86_64.bpf`, `seccomp-aarch64.bpf` | seccomp | raw `struct sock_filter[]`, the format of libseccomp's `seccomp_export_bpf` |
//! | `landlock.json` | landlock | the ruleset description ([`crate::landlock::LandlockRuleset`]) |
//! | `manifest.json` | — | this index |
//!
//! Output is deterministic: no timestamps, fixed order, hashes of content.

use crate::landlock;
use crate::seccomp::{self, SeccompError};
use phantom_dsl::ir::{LayerSummary, Policy, SourceInfo};
use phantom_dsl::source::sha256_hex;
use phantom_dsl::syscalls::Arch;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
/// Recorded in the manifest: the backends' version decides the bytes.
pub const COMPILER: &str = concat!("phantom-ebpf ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("seccomp ({arch}): {source}")]
    Seccomp { arch: &'static str, source: SeccompError },
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
    }
}

/// Runs every backend over the policy. Pure: no kernel, no filesystem.
pub fn build(policy: &Policy) -> Result<Bundle, BundleError> {
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
