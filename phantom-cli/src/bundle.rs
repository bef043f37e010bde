//! The compiled bundle: `policy.ir.json` plus `manifest.json` (source hashes,
//! artifact hashes, layers). Backends add their artifacts here as they land.
//! Output is deterministic: no timestamps, sorted keys, fixed order.

use phantom_dsl::ir::Policy;
use phantom_dsl::source::sha256_hex;
use serde::Serialize;
use std::path::Path;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Artifact {
    pub name: String,
    pub layer: Option<String>,
    pub bytes: usize,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct Manifest<'a> {
    pub format_version: u32,
    pub compiler: String,
    pub profile: &'a str,
    pub sources: &'a [phantom_dsl::ir::SourceInfo],
    pub layers: Vec<phantom_dsl::ir::LayerSummary>,
    pub required_layers: Vec<&'static str>,
    pub artifacts: Vec<Artifact>,
}

/// Every file of a bundle, in memory: (name, bytes). Writing is separate so
/// that determinism tests compare bytes without touching the disk.
pub fn build(policy: &Policy) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let ir = serde_json::to_vec_pretty(policy).expect("the IR serialises");
    files.push(("policy.ir.json".to_string(), ir));
    let artifacts = files
        .iter()
        .map(|(name, bytes): &(String, Vec<u8>)| Artifact {
            name: name.clone(),
            layer: None,
            bytes: bytes.len(),
            sha256: sha256_hex(bytes),
        })
        .collect();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        compiler: format!("phantom-policy {}", env!("CARGO_PKG_VERSION")),
        profile: &policy.profile,
        sources: &policy.sources,
        layers: policy.layers(),
        required_layers: policy.require.iter().map(|l| l.name()).collect(),
        artifacts,
    };
    let mut m = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
    m.push(b'\n');
    files.push(("manifest.json".to_string(), m));
    files
}

pub fn write(dir: &Path, files: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in files {
        // Write then rename: a crashed compile never leaves a half bundle file.
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
}
