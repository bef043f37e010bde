//! The typed policy IR: what the checker guarantees and the only input of the
//! backends. Every rule carries the [`Origin`] of the policy text that
//! produced it, so that each emitted instruction maps back to a policy line.

use crate::source::{FileId, Span};
use crate::syscalls::Arch;
use crate::values::{Action, ArgCondition, Cidr, Cpu, Duration, PortRange, Protocol, Size};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Where a rule came from: file, line and column (1-based) and the byte span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    pub file: FileId,
    pub line: u32,
    pub col: u32,
    pub span: Span,
}

impl Origin {
    pub const NONE: Origin =
        Origin { file: FileId(0), line: 0, col: 0, span: Span { file: FileId(0), start: 0, end: 0 } };
}

/// One source file of the policy (the policy itself first, then `extends`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub profile: String,
    pub sources: Vec<SourceInfo>,
    pub mode: Mode,
    pub runtime: Runtime,
    pub level: Level,
    pub require: BTreeSet<Layer>,
    /// Where `require` was written (for diagnostics), if it was.
    pub require_origin: Option<Origin>,
    pub audit: AuditMode,
    pub seccomp: SeccompPolicy,
    pub filesystem: FsPolicy,
    pub exec: Option<ExecPolicy>,
    pub network: NetworkPolicy,
    pub devices: DevicePolicy,
    pub kernel: KernelPolicy,
    pub resources: Resources,
    pub performance: Performance,
}

/// How much isolation a run gets. `auto` picks `wasm` when `runtime: wasm`,
/// else from `security.level`: low -> sandbox, medium -> sandbox, high ->
/// hardened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Direct,
    Sandbox,
    Hardened,
    Wasm,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Auto,
    Native,
    Wasm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Low,
    Medium,
    High,
}

/// Enforcement layers, as named in `require:` and in enforcement reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    Seccomp,
    Landlock,
    CgroupBpf,
    Xdp,
    BpfLsm,
}

impl Layer {
    pub const ALL: [Layer; 5] = [Layer::Seccomp, Layer::Landlock, Layer::CgroupBpf, Layer::Xdp, Layer::BpfLsm];
    pub fn name(self) -> &'static str {
        match self {
            Layer::Seccomp => "seccomp",
            Layer::Landlock => "landlock",
            Layer::CgroupBpf => "cgroup-bpf",
            Layer::Xdp => "xdp",
            Layer::BpfLsm => "bpf-lsm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditMode {
    /// Deny and record.
    Enforce,
    /// Record, allow (BPF-LSM and seccomp `log`; Landlock cannot complain).
    Complain,
}

// ---------------------------------------------------------------- seccomp

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompPolicy {
    /// Whether a seccomp filter is installed at all (absent section: no).
    pub enabled: bool,
    pub default: Action,
    pub default_origin: Origin,
    /// Allow the x32 ABI (syscall numbers with bit 30 set) on x86_64.
    pub allow_x32: bool,
    /// Ordered rules; for one syscall, the first rule whose conditions all
    /// hold decides (rules without conditions come last per syscall).
    pub rules: Vec<SyscallRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallRule {
    pub name: String,
    /// Number per architecture; `None` where the syscall does not exist.
    pub numbers: Vec<(Arch, u32)>,
    pub action: Action,
    /// All must hold (AND). Empty: the rule matches every call.
    pub conditions: Vec<ArgCondition>,
    pub origin: Origin,
}

// ------------------------------------------------------------- filesystem

/// Access kinds. `read` covers reading files and listing directories,
/// `write` writing and truncating, `exec` executing, `create` making files,
/// directories, links and device nodes, `remove` unlinking and renaming away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    Read,
    Write,
    Exec,
    Create,
    Remove,
}

impl Access {
    pub const ALL: [Access; 5] = [Access::Read, Access::Write, Access::Exec, Access::Create, Access::Remove];
    pub fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Exec => "exec",
            Access::Create => "create",
            Access::Remove => "remove",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    Allow,
    Deny,
}

/// An absolute, normalised path, optionally a prefix glob: `/usr/lib/python3*`
/// matches every path whose component at that depth starts with `python3`
/// and everything below it. Matching is by whole components: `/tmp` matches
/// `/tmp` and `/tmp/x`, never `/tmpx`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PathPattern {
    /// Normalised path without the trailing `*`.
    pub path: String,
    /// Whether the last component is a prefix (`python3*`).
    pub prefix_glob: bool,
}

impl PathPattern {
    /// `/a/b` (whole components) or `/a/b*` (prefix glob on the last
    /// component), as written in a policy; no validation (the decoder
    /// checks what a policy may contain).
    pub fn parse(s: &str) -> PathPattern {
        match s.strip_suffix('*') {
            Some(p) => PathPattern { path: p.into(), prefix_glob: true },
            None => PathPattern { path: s.into(), prefix_glob: false },
        }
    }

    fn components(p: &str) -> impl Iterator<Item = &str> {
        p.split('/').filter(|c| !c.is_empty())
    }

    /// Does this pattern cover the concrete absolute path `p`?
    pub fn matches(&self, p: &str) -> bool {
        let mut mine = Self::components(&self.path).peekable();
        let mut theirs = Self::components(p);
        while let Some(c) = mine.next() {
            let Some(t) = theirs.next() else { return false };
            let last = mine.peek().is_none();
            let ok = if last && self.prefix_glob { t.starts_with(c) } else { t == c };
            if !ok {
                return false;
            }
        }
        true
    }

    /// Does this pattern cover everything `other` covers?
    pub fn covers(&self, other: &PathPattern) -> bool {
        if !self.prefix_glob && other.prefix_glob {
            // A literal covers a glob only from a strict ancestor directory.
            return self.matches(&other.path) && self.depth() < other.depth();
        }
        self.matches(&other.path)
    }

    /// Do the two patterns share at least one path? Matched sets are unions
    /// of subtrees, so they intersect only when one covers the other.
    pub fn overlaps(&self, other: &PathPattern) -> bool {
        self.covers(other) || other.covers(self)
    }

    pub fn depth(&self) -> usize {
        Self::components(&self.path).count()
    }
}

impl std::fmt::Display for PathPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.path, if self.prefix_glob { "*" } else { "" })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsRule {
    pub effect: Effect,
    pub path: PathPattern,
    pub access: BTreeSet<Access>,
    /// `security.landlock.paths` or `filesystem.rules`.
    pub from_landlock_section: bool,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsPolicy {
    /// `security.landlock.enabled` (default true). With it false, allow rules
    /// still shape the sandbox's mounts and BPF-LSM, but Landlock is off.
    pub landlock: bool,
    /// Allow rules grant; deny rules carve out (deny wins where both match).
    /// With at least one allow rule, paths that no allow rule covers are
    /// denied. Without allow rules, rules do not restrict by default and
    /// only the deny rules apply (enforced by BPF-LSM).
    pub rules: Vec<FsRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecPolicy {
    /// Only these may be executed (after the sandbox's own command).
    pub allow: Vec<(PathPattern, Origin)>,
}

// ---------------------------------------------------------------- network

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetMode {
    /// An empty network namespace.
    None,
    /// A network namespace with only `lo` up.
    LoopbackOnly,
    /// A veth pair to the host; egress/ingress/bind rules enforced by
    /// cgroup-BPF and XDP.
    Allowlist,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRule {
    /// Peer addresses; empty means any address.
    pub cidrs: Vec<Cidr>,
    /// Ports; empty means any port.
    pub ports: Vec<PortRange>,
    pub protocol: Protocol,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindRule {
    pub ports: Vec<PortRange>,
    pub protocol: Protocol,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    pub mode: NetMode,
    pub egress: Vec<NetRule>,
    pub ingress: Vec<NetRule>,
    pub bind: Vec<BindRule>,
}

// ---------------------------------------------------------------- devices

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceType {
    Char,
    Block,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceAccess {
    Read,
    Write,
    Mknod,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    pub kind: DeviceType,
    /// `None` is `*` (any).
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: BTreeSet<DeviceAccess>,
    pub origin: Origin,
}

/// Device allow-list. Absent section: the runtime's minimal `/dev`
/// (null, zero, full, random, urandom, tty) is allowed and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePolicy {
    pub allow: Vec<DeviceRule>,
}

// ----------------------------------------------------------------- kernel

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Toggle {
    Allow,
    Deny,
}

/// Kernel hardening switches, enforced by BPF-LSM (and seccomp where a
/// syscall maps one to one). Defaults depend on `security.level`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelPolicy {
    pub ptrace: Toggle,
    pub mount: Toggle,
    pub bpf: Toggle,
    pub user_namespaces: Toggle,
    pub io_uring: Toggle,
    pub kernel_modules: Toggle,
    /// Signals to processes outside the sandbox.
    pub signals_outside: Toggle,
    /// Raw and packet sockets.
    pub raw_sockets: Toggle,
    /// Unix sockets the sandbox may connect to: paths (`/run/x.sock`) and
    /// abstract names (`@name`). Absent: any unix socket inside the sandbox.
    pub unix_connect: Option<Vec<(String, Origin)>>,
    /// Where each switch got its value, by its key (`ptrace`, `mount`, ...,
    /// `unix_sockets`): the `kernel.<key>` value, else the `security.level`
    /// whose default it is; absent for a default of the implied level.
    #[serde(default)]
    pub origins: std::collections::BTreeMap<String, Origin>,
}

impl KernelPolicy {
    /// Where the switch `key` got its value ([`Origin::NONE`]: an implied
    /// default).
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).copied().unwrap_or(Origin::NONE)
    }
}

// -------------------------------------------------------------- resources

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub memory: Option<Size>,
    pub cpu: Option<Cpu>,
    pub pids: Option<u32>,
    pub wall_time: Option<Duration>,
    pub file_size: Option<Size>,
    pub open_files: Option<u32>,
}

// ------------------------------------------------------------ performance

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoMode {
    /// The supervisor drives the sandbox's pipes with io_uring.
    Uring,
    /// With epoll.
    Epoll,
    /// With blocking reads on helper threads.
    Blocking,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    /// The program's own allocator.
    System,
    /// Preload the host's libjemalloc into the sandboxed program.
    Jemalloc,
    /// Preload the host's libmimalloc.
    Mimalloc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Performance {
    /// Keep a resident zygote per policy so later runs fork from it.
    pub zygote: bool,
    pub io_mode: IoMode,
    pub memory_allocator: Allocator,
}

/// Rule counts per layer, for summaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSummary {
    pub layer: Layer,
    pub rules: usize,
    pub required: bool,
}

impl Policy {
    /// The layers this policy compiles to, with rule counts.
    pub fn layers(&self) -> Vec<LayerSummary> {
        let mut v = Vec::new();
        let mut add = |layer, rules| v.push(LayerSummary { layer, rules, required: self.require.contains(&layer) });
        if self.seccomp.enabled {
            add(Layer::Seccomp, self.seccomp.rules.len());
        }
        let allows = self.filesystem.rules.iter().filter(|r| r.effect == Effect::Allow).count();
        if self.filesystem.landlock && (allows > 0 || !self.network.bind.is_empty()) {
            add(Layer::Landlock, allows);
        }
        let net_rules = self.network.egress.len() + self.network.bind.len();
        if self.network.mode == NetMode::Allowlist || !self.devices.allow.is_empty() {
            add(Layer::CgroupBpf, net_rules + self.devices.allow.len());
        }
        if self.network.mode == NetMode::Allowlist {
            add(Layer::Xdp, self.network.egress.len() + self.network.ingress.len());
        }
        let denies = self.filesystem.rules.iter().filter(|r| r.effect == Effect::Deny).count();
        let k = &self.kernel;
        let switches = [
            k.ptrace,
            k.mount,
            k.bpf,
            k.user_namespaces,
            k.io_uring,
            k.kernel_modules,
            k.signals_outside,
            k.raw_sockets,
        ]
        .iter()
        .filter(|t| **t == Toggle::Deny)
        .count();
        let lsm = denies
            + switches
            // An empty exec or unix-socket allow-list still enforces ("nothing").
            + self.exec.as_ref().map_or(0, |e| e.allow.len().max(1))
            + k.unix_connect.as_ref().map_or(0, |u| u.len().max(1));
        if lsm > 0 {
            add(Layer::BpfLsm, lsm);
        }
        v
    }

    /// The mode `auto` resolves to.
    pub fn effective_mode(&self) -> Mode {
        match (self.mode, self.level) {
            (Mode::Auto, _) if self.runtime == Runtime::Wasm => Mode::Wasm,
            (Mode::Auto, Level::High) => Mode::Hardened,
            (Mode::Auto, _) => Mode::Sandbox,
            (m, _) => m,
        }
    }

    /// The same policy with every origin and source hash cleared: two
    /// policies that differ only in layout compare equal.
    pub fn without_origins(&self) -> Policy {
        let mut p = self.clone();
        p.sources.clear();
        p.require_origin = p.require_origin.map(|_| Origin::NONE);
        p.seccomp.default_origin = Origin::NONE;
        p.seccomp.rules.iter_mut().for_each(|r| r.origin = Origin::NONE);
        p.filesystem.rules.iter_mut().for_each(|r| r.origin = Origin::NONE);
        if let Some(e) = &mut p.exec {
            e.allow.iter_mut().for_each(|a| a.1 = Origin::NONE);
        }
        for r in p.network.egress.iter_mut().chain(p.network.ingress.iter_mut()) {
            r.origin = Origin::NONE;
        }
        p.network.bind.iter_mut().for_each(|r| r.origin = Origin::NONE);
        p.devices.allow.iter_mut().for_each(|r| r.origin = Origin::NONE);
        if let Some(u) = &mut p.kernel.unix_connect {
            u.iter_mut().for_each(|a| a.1 = Origin::NONE);
        }
        p.kernel.origins.clear();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> PathPattern {
        PathPattern::parse(s)
    }

    #[test]
    fn matching_respects_component_boundaries() {
        assert!(pat("/tmp").matches("/tmp"));
        assert!(pat("/tmp").matches("/tmp/x/y"));
        assert!(!pat("/tmp").matches("/tmpx"));
        assert!(pat("/usr/lib/python3*").matches("/usr/lib/python3.11/os.py"));
        assert!(pat("/usr/lib/python3*").matches("/usr/lib/python3"));
        assert!(!pat("/usr/lib/python3*").matches("/usr/lib/python2.7"));
        assert!(!pat("/usr/lib/python3*").matches("/usr/lib"));
        assert!(pat("/").matches("/etc/passwd"));
    }

    #[test]
    fn coverage() {
        assert!(pat("/w").covers(&pat("/w/.git/hooks")));
        assert!(!pat("/w/.git/hooks").covers(&pat("/w")));
        assert!(pat("/usr/lib/python3*").covers(&pat("/usr/lib/python3.11")));
        assert!(pat("/usr/lib/py*").covers(&pat("/usr/lib/python3*")));
        assert!(!pat("/usr/lib/python3.11").covers(&pat("/usr/lib/python3*")));
        assert!(pat("/usr/lib/python3.11").overlaps(&pat("/usr/lib/python3*")));
        assert!(!pat("/tmp").overlaps(&pat("/tmpx")));
    }
}
