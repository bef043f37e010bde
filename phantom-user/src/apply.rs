//! Applies a compiled bundle's process layers to the calling process:
//! Landlock first, seccomp last (its filter then also covers everything
//! between it and exec). Fail closed: a layer in `require` that cannot be
//! enforced is an error and nothing after it is applied.

use crate::audit_events::{AuditCollector, AuditEvent};
use crate::bundle_object::BundleObject;
use crate::cgroup_bpf::LoadedPrograms;
use crate::landlock::{LandlockError, LandlockReport};
use crate::lsm::LoadedLsm;
use crate::net::xdp::LoadedXdp;
use crate::report::Enforcement;
use crate::seccomp::SeccompInstallError;
use phantom_ebpf::bundle::{read_manifest, BundleError, Manifest, CGROUP_MAPS, CGROUP_OBJECT, XDP_MAPS, XDP_OBJECT};
use phantom_ebpf::landlock::LandlockRuleset;
use serde::Serialize;
use std::path::Path;
use std::sync::{Arc, OnceLock};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}: not a Landlock ruleset")]
    Ruleset(String),
    #[error("{0}: not a policy IR file")]
    Ir(String),
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    #[error(transparent)]
    Seccomp(#[from] SeccompInstallError),
    #[error("the cgroup-BPF object: {0}")]
    BundleObject(String),
    #[error("the bundle has no seccomp filter for {0}")]
    NoFilterForArch(&'static str),
}

/// What one layer enforces after [`apply_bundle`].
#[derive(Debug, Clone, Serialize)]
pub struct LayerOutcome {
    pub layer: &'static str,
    pub enforcement: Enforcement,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppliedReport {
    pub layers: Vec<LayerOutcome>,
    pub landlock: Option<LandlockReport>,
}

/// The seccomp artifact name for the machine this runs on.
pub fn native_seccomp_artifact() -> Option<(&'static str, &'static str)> {
    match std::env::consts::ARCH {
        "x86_64" => Some(("x86_64", "seccomp-x86_64.bpf")),
        "aarch64" => Some(("aarch64", "seccomp-aarch64.bpf")),
        _ => None,
    }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, ApplyError> {
    let p = dir.join(name);
    std::fs::read(&p).map_err(|source| ApplyError::Read { path: p.display().to_string(), source })
}

/// The process layers of a bundle, read into memory. Reading happens before
/// anything is applied: once Landlock is on, the bundle directory itself may
/// no longer be readable. A zygote loads once and applies in every child.
#[derive(Debug, Clone)]
pub struct LoadedBundle {
    pub manifest: Manifest,
    pub landlock: Option<LandlockRuleset>,
    pub seccomp: Option<Vec<u8>>,
    /// The cgroup-BPF object, read with the rest (before anything is
    /// applied).
    cgroup_object: Option<Arc<BundleObject>>,
    /// Its programs, loaded (or opened from their pins) on first use and
    /// shared by every sandbox of this bundle (each attaches them to its
    /// own cgroup).
    cgroup_bpf: Arc<OnceLock<Result<Arc<LoadedPrograms>, String>>>,
    /// The XDP object (allowlist mode) and its programs, loaded on first
    /// use like the cgroup programs.
    xdp_object: Option<Arc<BundleObject>>,
    xdp: Arc<OnceLock<Result<Arc<LoadedXdp>, String>>>,
    /// The BPF-LSM programs, compiled and loaded on first use, by the
    /// command the exec allow-list must also let through (`None` when the
    /// policy has no `exec` section).
    lsm: Arc<std::sync::Mutex<LsmCache>>,
    /// The ring buffers of the loaded programs, drained per run.
    audit: Arc<std::sync::Mutex<AuditCollector>>,
    /// The running sandboxes' attachments, which a policy update moves
    /// ([`crate::live`]).
    pub live: crate::live::LiveRegistry,
}

/// Program sets kept per bundle (see [`LoadedBundle::lsm_programs`]).
const LSM_CACHE_CAP: usize = 16;

type LsmCache = std::collections::HashMap<Option<String>, Result<Arc<std::sync::Mutex<LoadedLsm>>, String>>;

impl LoadedBundle {
    pub fn load(dir: &Path) -> Result<Self, ApplyError> {
        let manifest: Manifest = read_manifest(dir)?;
        let has = |layer: &str| manifest.artifacts.iter().any(|a| a.layer.as_deref() == Some(layer));
        let landlock = if has("landlock") {
            let bytes = read(dir, "landlock.json")?;
            Some(serde_json::from_slice(&bytes).map_err(|_| ApplyError::Ruleset("landlock.json".into()))?)
        } else {
            None
        };
        let seccomp = if has("seccomp") {
            let (arch, name) = native_seccomp_artifact().ok_or(ApplyError::NoFilterForArch(std::env::consts::ARCH))?;
            if !manifest.artifacts.iter().any(|a| a.name == name) {
                return Err(ApplyError::NoFilterForArch(arch));
            }
            Some(read(dir, name)?)
        } else {
            None
        };
        let object =
            |name, maps| BundleObject::from_dir(dir, name, maps).map_err(|e| ApplyError::BundleObject(e.to_string()));
        let cgroup_object = object(CGROUP_OBJECT, CGROUP_MAPS)?;
        let xdp_object = object(XDP_OBJECT, XDP_MAPS)?;
        Ok(LoadedBundle::assemble(manifest, landlock, seccomp, cgroup_object, xdp_object))
    }

    /// The bundle from its read parts; kernel objects load on first use.
    fn assemble(
        manifest: Manifest,
        landlock: Option<LandlockRuleset>,
        seccomp: Option<Vec<u8>>,
        cgroup_object: Option<BundleObject>,
        xdp_object: Option<BundleObject>,
    ) -> LoadedBundle {
        LoadedBundle {
            manifest,
            landlock,
            seccomp,
            cgroup_object: cgroup_object.map(Arc::new),
            cgroup_bpf: Arc::default(),
            xdp_object: xdp_object.map(Arc::new),
            xdp: Arc::default(),
            lsm: Arc::default(),
            audit: Arc::default(),
            live: Default::default(),
        }
    }

    /// The bundle's cgroup-BPF programs: exactly its `cgroup.bpf.o` (the
    /// bytes the manifest hashes), from the pins of `phantom load` when the
    /// bundle is loaded, else loaded once for this process. `_policy` is
    /// the bundle's own IR; the object already encodes it.
    pub fn cgroup_programs(&self, _policy: &phantom_dsl::ir::Policy) -> Result<Arc<LoadedPrograms>, String> {
        self.cgroup_bpf
            .get_or_init(|| {
                let obj = self.cgroup_object.as_ref().ok_or("the bundle has no cgroup-BPF object")?;
                let s = crate::bundle_object::for_sandboxes(obj).map_err(|e| e.to_string())?;
                if let Some(reader) = s.audit {
                    self.audit.lock().unwrap_or_else(|e| e.into_inner()).add(reader);
                }
                Ok(Arc::new(s.programs))
            })
            .clone()
    }

    /// The bundle's XDP programs (allowlist mode): its `xdp.bpf.o`, loaded
    /// once and shared by every sandbox (each attaches them to its own veth
    /// pair). An error when the bundle has none.
    pub fn xdp_programs(&self) -> Result<Arc<LoadedXdp>, String> {
        self.xdp
            .get_or_init(|| {
                let obj = self.xdp_object.as_ref().ok_or("the bundle has no XDP object (not allowlist mode)")?;
                crate::net::xdp::load(obj).map(Arc::new).map_err(|e| e.to_string())
            })
            .clone()
    }

    /// The policy's BPF-LSM programs, loaded once per bundle (and per
    /// `command` when the policy has an exec allow-list: the sandbox's own
    /// command may always run, so it is compiled in); sandboxes attach them
    /// to their cgroups. `policy` is the bundle's IR.
    pub fn lsm_programs(
        &self,
        policy: &phantom_dsl::ir::Policy,
        command: Option<&str>,
    ) -> Result<Arc<std::sync::Mutex<LoadedLsm>>, String> {
        let key = policy.exec.as_ref().and(command).map(str::to_string);
        let mut cache = self.lsm.lock().unwrap_or_else(|e| e.into_inner());
        // One program set per command (exec allow-list): bounded, so a
        // zygote serving many commands does not keep every one loaded
        // (attached sandboxes hold their own reference).
        if !cache.contains_key(&key) && cache.len() >= LSM_CACHE_CAP {
            if let Some(old) = cache.keys().find(|k| k.is_some()).cloned() {
                cache.remove(&old);
            }
        }
        cache
            .entry(key.clone())
            .or_insert_with(|| {
                let mut opts = phantom_ebpf::lsm::Options::default();
                if let Some(c) = &key {
                    opts = opts.exec_also(c.clone());
                }
                for target in policy.exec.as_ref().map(exec_symlink_targets).unwrap_or_default() {
                    opts = opts.exec_also(target);
                }
                let programs = phantom_ebpf::lsm::compile(policy, &opts).map_err(|e| e.to_string())?;
                let mut lsm = LoadedLsm::load(&programs).map_err(|e| e.to_string())?;
                if let Ok(reader) = lsm.audit() {
                    self.audit.lock().unwrap_or_else(|e| e.into_inner()).add(reader);
                }
                Ok(Arc::new(std::sync::Mutex::new(lsm)))
            })
            .clone()
    }

    /// The audit records the programs of this bundle wrote for the sandbox
    /// whose cgroup id is `sandbox` (see [`crate::audit_events`]).
    pub fn audit_events(&self, sandbox: u64) -> Vec<AuditEvent> {
        self.audit.lock().unwrap_or_else(|e| e.into_inner()).take(sandbox)
    }

    /// From a bundle built in memory (no files involved).
    pub fn from_bundle(b: &phantom_ebpf::bundle::Bundle) -> Result<Self, ApplyError> {
        let file = |name: &str| b.files.iter().find(|(n, _)| n == name).map(|(_, bytes)| bytes.clone());
        let landlock = match file("landlock.json") {
            Some(bytes) => {
                Some(serde_json::from_slice(&bytes).map_err(|_| ApplyError::Ruleset("landlock.json".into()))?)
            }
            None => None,
        };
        let seccomp = match native_seccomp_artifact() {
            Some((_, name)) => file(name),
            None if b.manifest.artifacts.iter().any(|a| a.layer.as_deref() == Some("seccomp")) => {
                return Err(ApplyError::NoFilterForArch(std::env::consts::ARCH))
            }
            None => None,
        };
        let object =
            |name, maps| BundleObject::from_bundle(b, name, maps).map_err(|e| ApplyError::BundleObject(e.to_string()));
        let cgroup_object = object(CGROUP_OBJECT, CGROUP_MAPS)?;
        let xdp_object = object(XDP_OBJECT, XDP_MAPS)?;
        Ok(LoadedBundle::assemble(b.manifest.clone(), landlock, seccomp, cgroup_object, xdp_object))
    }

    /// The policy IR stored in a bundle directory.
    pub fn read_policy(dir: &Path) -> Result<phantom_dsl::ir::Policy, ApplyError> {
        let bytes = read(dir, "policy.ir.json")?;
        serde_json::from_slice(&bytes).map_err(|_| ApplyError::Ir("policy.ir.json".into()))
    }

    /// Applies Landlock, then seccomp, to the calling process. Irreversible.
    pub fn apply(&self) -> Result<AppliedReport, ApplyError> {
        let mut report = AppliedReport { layers: Vec::new(), landlock: None };
        if let Some(spec) = &self.landlock {
            let r = crate::landlock::apply(spec)?;
            report.layers.push(LayerOutcome {
                layer: "landlock",
                enforcement: r.enforcement,
                reason: r.reason.clone(),
            });
            report.landlock = Some(r);
        }
        if let Some(filter) = &self.seccomp {
            crate::seccomp::install(filter)?;
            report.layers.push(LayerOutcome { layer: "seccomp", enforcement: Enforcement::Full, reason: None });
        }
        Ok(report)
    }
}

/// Loads the bundle in `dir` and applies it. Irreversible.
pub fn apply_bundle(dir: &Path) -> Result<AppliedReport, ApplyError> {
    LoadedBundle::load(dir)?.apply()
}

/// The real paths of `exec.allow` entries that are symlinks on this host
/// (`/usr/bin/sh` -> `/usr/bin/dash`, `/usr/bin/python3` ->
/// `/usr/bin/python3.11`): the kernel names the file it opens for exec by
/// its real path, so the entry alone would never match. The sandbox binds
/// host paths at the same places, so the host's view is the sandbox's;
/// entries under the sandbox's own directories (`/workspace`, `/tmp`),
/// whose host paths are different files, are left alone.
fn exec_symlink_targets(exec: &phantom_dsl::ir::ExecPolicy) -> Vec<String> {
    exec.allow
        .iter()
        .filter(|(p, _)| !p.prefix_glob && !["/workspace", "/tmp"].iter().any(|d| p.matches(d) || under(&p.path, d)))
        .filter_map(|(p, _)| {
            let real = std::fs::canonicalize(&p.path).ok()?.display().to_string();
            (real != p.path).then_some(real)
        })
        .collect()
}

fn under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod exec_target_tests {
    use super::*;

    #[test]
    fn symlinked_exec_entries_add_their_real_paths() {
        // Not under /tmp: entries there are the sandbox's own files.
        let dir = std::path::PathBuf::from(format!("/var/tmp/phantom-exec-targets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("real"), b"").unwrap();
        std::os::unix::fs::symlink("real", dir.join("link")).unwrap();
        let text = format!(
            "profile: t\nexec:\n  allow: [{d}/link, {d}/real, {d}/missing, /workspace/tool, /tmp]\n",
            d = dir.display()
        );
        let c = phantom_dsl::compile_str("t.yaml", &text);
        let exec = c.policy.unwrap().exec.unwrap();
        let real = dir.canonicalize().unwrap().join("real").display().to_string();
        let targets = exec_symlink_targets(&exec);
        let _ = std::fs::remove_dir_all(&dir);
        // The link adds its target; the real file, a missing path and the
        // sandbox's own directories add nothing.
        assert_eq!(targets, [real]);
    }
}
