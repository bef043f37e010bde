//! What a policy asks of every sandbox it starts, computed once (per
//! [`super::Spawner`], or per direct spawn): the mode, the binds, the
//! Landlock ruleset with its implicit rules, the seccomp filter, the base
//! environment and the layers that cannot be enforced here. A prepared
//! sandbox and a directly spawned one are built from the same `Spec`, so
//! they get the same layers.

use super::rootfs::{Bind, DEFAULT_READ_ONLY};
use super::{LayerStatus, SpawnError};
use crate::apply::LoadedBundle;
use crate::landlock::expand;
use crate::report::Enforcement;
use phantom_dsl::ir::{Access, Allocator, Effect, Layer, Mode, Policy};
use phantom_ebpf::landlock::{FsRight, FsRuleSpec, LandlockRuleset};
use std::path::{Path, PathBuf};

/// The PATH of the sandbox's environment.
pub(super) const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// A policy's per-sandbox plan.
#[derive(Debug, Clone)]
pub(super) struct Spec {
    pub policy: Policy,
    pub bundle: LoadedBundle,
    pub mode: Mode,
    /// False only in `direct` mode.
    pub isolated: bool,
    pub binds: Vec<Bind>,
    /// The bundle's ruleset plus the implicit rules.
    pub landlock: Option<LandlockRuleset>,
    /// PATH, LANG, TERM and the allocator preload (HOME comes per request).
    pub base_env: Vec<String>,
    /// Layers of the policy this runtime cannot enforce (reported `none`).
    pub unavailable: Vec<LayerStatus>,
    /// A failed cgroup-BPF attach refuses the spawn.
    pub cgroup_bpf_required: bool,
    /// XDP must be enforced (required, or hardened mode with rules).
    pub xdp_required: bool,
    /// The policy has BPF-LSM rules and this host runs them: sandboxes
    /// attach the programs after their own setup, before exec.
    pub lsm: bool,
    /// The nice value of the thread that made the spec: a sandbox prepared
    /// by a background thread at a lower priority gets it back when ready.
    pub nice: i32,
    /// Idmappings of `--workspace` owners, made on first use and kept as
    /// long as the spec (a spawner's life).
    pub idmaps: super::idmap::Idmaps,
}

impl Spec {
    /// Checks the mode and the required layers; fails closed.
    pub fn new(policy: &Policy, bundle: &LoadedBundle) -> Result<Spec, SpawnError> {
        let mode = policy.effective_mode();
        if mode == Mode::Wasm {
            return Err(SpawnError::Setup(
                "wasm mode is not available yet (a later issue adds the wasmtime sandbox)".into(),
            ));
        }
        let isolated = mode != Mode::Direct;
        let present: Vec<Layer> = policy.layers().iter().map(|l| l.layer).collect();
        let mut unavailable_layers = Vec::new();
        for layer in &present {
            if let Some(reason) = unavailable(*layer, isolated) {
                if policy.require.contains(layer) || mode == Mode::Hardened {
                    return Err(SpawnError::Required { layer: layer.name().into(), reason });
                }
                unavailable_layers.push(LayerStatus {
                    layer: layer.name().into(),
                    enforcement: Enforcement::None,
                    reason: Some(reason),
                });
            }
        }
        let bind_list = if isolated { binds(policy) } else { Vec::new() };
        let mut landlock = if isolated { bundle.landlock.clone() } else { None };
        if let Some(spec) = landlock.as_mut() {
            implicit_landlock_rules(spec);
        }
        let mut base_env = vec![format!("PATH={SANDBOX_PATH}"), "LANG=C.UTF-8".to_string(), "TERM=dumb".to_string()];
        if let Some(lib) = isolated.then(|| preload(policy, &bind_list)).flatten() {
            base_env.push(format!("LD_PRELOAD={lib}"));
        }
        let lsm = isolated
            && present.contains(&Layer::BpfLsm)
            && !unavailable_layers.iter().any(|l| l.layer == Layer::BpfLsm.name());
        Ok(Spec {
            policy: policy.clone(),
            bundle: bundle.clone(),
            mode,
            isolated,
            binds: bind_list,
            landlock,
            base_env,
            unavailable: unavailable_layers,
            cgroup_bpf_required: policy.require.contains(&Layer::CgroupBpf)
                || (mode == Mode::Hardened && present.contains(&Layer::CgroupBpf)),
            xdp_required: policy.require.contains(&Layer::Xdp)
                || (mode == Mode::Hardened && present.contains(&Layer::Xdp)),
            lsm,
            nice: super::sys::thread_nice(),
            idmaps: Default::default(),
        })
    }
}

/// Why this host (or mode) cannot enforce `layer`, if it cannot.
fn unavailable(layer: Layer, isolated: bool) -> Option<String> {
    match layer {
        Layer::BpfLsm if !isolated => Some("mode: direct has no cgroup to attach BPF-LSM programs to".into()),
        Layer::BpfLsm => crate::doctor::probe_bpf_lsm()
            .err()
            .map(|e| format!("this kernel does not run BPF-LSM programs ({e}); see `phantom doctor`")),
        Layer::Seccomp | Layer::Landlock | Layer::CgroupBpf | Layer::Xdp => None,
    }
}

/// Rules every sandbox root needs beyond the policy's, when Landlock
/// restricts the filesystem: the workspace, the device nodes and /proc.
fn implicit_landlock_rules(spec: &mut LandlockRuleset) {
    use FsRight::*;
    let Some(rules) = spec.fs.as_mut() else { return };
    let rw = [
        ReadFile, ReadDir, WriteFile, Truncate, MakeReg, MakeDir, MakeSym, MakeFifo, MakeSock, RemoveFile, RemoveDir,
        Refer,
    ];
    let add = |rules: &mut Vec<FsRuleSpec>, path: &str, rights: &[FsRight]| {
        rules.push(FsRuleSpec {
            path: path.into(),
            prefix_glob: false,
            rights: rights.iter().copied().collect(),
            line: 0,
        });
    };
    add(rules, "/workspace", &rw);
    add(rules, "/dev", &[ReadFile, WriteFile, ReadDir, IoctlDev]);
    add(rules, "/proc", &[ReadFile, ReadDir]);
}

fn binds(policy: &Policy) -> Vec<Bind> {
    let mut out = Vec::new();
    for r in policy.filesystem.rules.iter().filter(|r| r.effect == Effect::Allow) {
        let writable = r.access.iter().any(|a| matches!(a, Access::Write | Access::Create | Access::Remove));
        for p in expand(&r.path.path, r.path.prefix_glob) {
            out.push(Bind { src: p, writable });
        }
    }
    if out.is_empty() {
        out = DEFAULT_READ_ONLY.iter().map(|p| Bind { src: PathBuf::from(p), writable: false }).collect();
    }
    out
}

fn preload(policy: &Policy, binds: &[Bind]) -> Option<String> {
    let names: &[&str] = match policy.performance.memory_allocator {
        Allocator::System => return None,
        Allocator::Jemalloc => &["libjemalloc.so.2"],
        Allocator::Mimalloc => &["libmimalloc.so.2", "libmimalloc.so"],
    };
    let dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib"];
    dirs.iter()
        .flat_map(|d| names.iter().map(move |n| Path::new(d).join(n)))
        .find(|p| p.exists() && binds.iter().any(|b| p.starts_with(&b.src)))
        .map(|p| p.display().to_string())
}
