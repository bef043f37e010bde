//! Applies a compiled [`LandlockRuleset`] to the calling process with the
//! `landlock` crate. Prefix globs expand here, at apply time, to the paths
//! that exist then (sorted); patterns that match nothing are reported, not
//! dropped silently. With `required`, anything the kernel cannot enforce is
//! an error (fail closed); otherwise best effort, and the report says what
//! was enforced.

use crate::report::Enforcement;
use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use phantom_ebpf::landlock::{FsRight, FsRuleSpec, LandlockRuleset, ScopeKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("Landlock ruleset: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    #[error("the policy requires Landlock, but this kernel enforces it only {0:?}: {1}")]
    NotEnforced(Enforcement, String),
}

/// A pattern of the policy that matched no existing path when applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingPath {
    pub pattern: String,
    pub line: u32,
}

/// What was enforced, for the enforcement report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockReport {
    pub enforcement: Enforcement,
    pub reason: Option<String>,
    /// Paths that received a rule (globs expanded).
    pub paths: Vec<PathBuf>,
    pub missing: Vec<MissingPath>,
}

fn access_fs(r: FsRight) -> AccessFs {
    match r {
        FsRight::Execute => AccessFs::Execute,
        FsRight::WriteFile => AccessFs::WriteFile,
        FsRight::ReadFile => AccessFs::ReadFile,
        FsRight::ReadDir => AccessFs::ReadDir,
        FsRight::RemoveDir => AccessFs::RemoveDir,
        FsRight::RemoveFile => AccessFs::RemoveFile,
        FsRight::MakeChar => AccessFs::MakeChar,
        FsRight::MakeDir => AccessFs::MakeDir,
        FsRight::MakeReg => AccessFs::MakeReg,
        FsRight::MakeSock => AccessFs::MakeSock,
        FsRight::MakeFifo => AccessFs::MakeFifo,
        FsRight::MakeBlock => AccessFs::MakeBlock,
        FsRight::MakeSym => AccessFs::MakeSym,
        FsRight::Refer => AccessFs::Refer,
        FsRight::Truncate => AccessFs::Truncate,
        FsRight::IoctlDev => AccessFs::IoctlDev,
    }
}

/// Expands `/dir/prefix*` to the existing entries of `/dir` whose name
/// starts with `prefix`; a plain path to itself if it exists.
pub fn expand(path: &str, prefix_glob: bool) -> Vec<PathBuf> {
    if !prefix_glob {
        return if Path::new(path).exists() { vec![PathBuf::from(path)] } else { Vec::new() };
    }
    let (dir, prefix) = path.rsplit_once('/').unwrap_or(("", path));
    let dir = if dir.is_empty() { "/" } else { dir };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Restricts the calling process. Irreversible: call it in the sandbox
/// child (or a forked test child), never in a supervisor.
pub fn apply(spec: &LandlockRuleset) -> Result<LandlockReport, LandlockError> {
    prepare(spec, |_| false)?.restrict_self()
}

/// A ruleset built (its rules' paths opened and added) but not yet
/// enforced: a prepared sandbox builds it ahead of its request, so the
/// request only pays for the deferred rules and `landlock_restrict_self`.
pub struct PreparedRuleset {
    created: RulesetCreated,
    report: LandlockReport,
    /// Filesystem rules left for [`PreparedRuleset::restrict_self`] (their
    /// paths change before it, e.g. a workspace mounted over `/workspace`).
    deferred: Vec<FsRuleSpec>,
    required: bool,
}

impl std::fmt::Debug for PreparedRuleset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRuleset").field("report", &self.report).field("deferred", &self.deferred).finish()
    }
}

/// Builds the ruleset of `spec`, adding every filesystem rule whose path
/// `defer` refuses later, in [`PreparedRuleset::restrict_self`].
pub fn prepare(spec: &LandlockRuleset, defer: impl Fn(&str) -> bool) -> Result<PreparedRuleset, LandlockError> {
    let level = if spec.required { CompatLevel::HardRequirement } else { CompatLevel::BestEffort };
    let mut ruleset = Ruleset::default().set_compatibility(level);
    if spec.fs.is_some() {
        // ABI 5 covers every filesystem right we grant (IoctlDev is the newest).
        ruleset = ruleset.handle_access(AccessFs::from_all(ABI::V5))?;
    }
    let mut net = BitFlags::<AccessNet>::empty();
    if spec.bind_tcp.is_some() {
        net |= AccessNet::BindTcp;
    }
    if spec.connect_tcp.is_some() {
        net |= AccessNet::ConnectTcp;
    }
    if !net.is_empty() {
        ruleset = ruleset.handle_access(net)?;
    }
    let mut scopes = BitFlags::<Scope>::empty();
    for s in &spec.scopes {
        scopes |= match s {
            ScopeKind::Signal => Scope::Signal,
            ScopeKind::AbstractUnixSocket => Scope::AbstractUnixSocket,
        };
    }
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes)?;
    }
    let mut created = ruleset.create()?;

    let mut report =
        LandlockReport { enforcement: Enforcement::Full, reason: None, paths: Vec::new(), missing: Vec::new() };
    let mut deferred = Vec::new();
    for rule in spec.fs.iter().flatten() {
        if defer(&rule.path) {
            deferred.push(rule.clone());
            continue;
        }
        created = add_fs_rule(created, rule, &mut report)?;
    }
    for port in spec.bind_tcp.iter().flatten() {
        created = created.add_rule(NetPort::new(*port, AccessNet::BindTcp))?;
    }
    for port in spec.connect_tcp.iter().flatten() {
        created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
    }
    Ok(PreparedRuleset { created, report, deferred, required: spec.required })
}

/// Adds one filesystem rule (its glob expanded now); paths that match
/// nothing go to the report.
fn add_fs_rule(
    mut created: RulesetCreated,
    rule: &FsRuleSpec,
    report: &mut LandlockReport,
) -> Result<RulesetCreated, LandlockError> {
    let access: BitFlags<AccessFs> = rule.rights.iter().map(|r| access_fs(*r)).collect();
    let paths = expand(&rule.path, rule.prefix_glob);
    if paths.is_empty() {
        let pattern = format!("{}{}", rule.path, if rule.prefix_glob { "*" } else { "" });
        report.missing.push(MissingPath { pattern, line: rule.line });
    }
    for p in paths {
        // The path may vanish between expansion and open: report it.
        match PathFd::new(&p) {
            Ok(fd) => {
                created = created.add_rule(PathBeneath::new(fd, access))?;
                report.paths.push(p);
            }
            Err(_) => report.missing.push(MissingPath { pattern: p.display().to_string(), line: rule.line }),
        }
    }
    Ok(created)
}

impl PreparedRuleset {
    /// Adds the deferred rules and restricts the calling process.
    /// Irreversible, like [`apply`].
    pub fn restrict_self(self) -> Result<LandlockReport, LandlockError> {
        let PreparedRuleset { mut created, mut report, deferred, required } = self;
        for rule in &deferred {
            created = add_fs_rule(created, rule, &mut report)?;
        }
        finish(created, report, required)
    }
}

fn finish(
    created: RulesetCreated,
    mut report: LandlockReport,
    required: bool,
) -> Result<LandlockReport, LandlockError> {
    let status = created.restrict_self()?;
    let (enforcement, reason) = match status.ruleset {
        RulesetStatus::FullyEnforced => (Enforcement::Full, None),
        RulesetStatus::PartiallyEnforced => (
            Enforcement::Partial,
            Some(format!("the kernel's Landlock ({:?}) lacks some requested rights", status.landlock)),
        ),
        RulesetStatus::NotEnforced => {
            (Enforcement::None, Some(format!("Landlock is not available: {:?}", status.landlock)))
        }
    };
    if required && enforcement != Enforcement::Full {
        return Err(LandlockError::NotEnforced(enforcement, reason.unwrap_or_default()));
    }
    report.enforcement = enforcement;
    report.reason = reason;
    Ok(report)
}
