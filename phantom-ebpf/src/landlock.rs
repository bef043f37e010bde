//! Landlock backend: the policy IR to a ruleset description, applied at run
//! time by `phantom-user` with the `landlock` crate. Pure: no kernel access;
//! prefix globs stay globs here and expand to existing paths when applied.
//!
//! What Landlock enforces of a policy:
//! - filesystem allow rules (access kinds -> Landlock rights below); deny
//!   carve-outs cannot be expressed in Landlock and are left to BPF-LSM;
//! - TCP bind ports (`network.bind`) and TCP connect ports (`network.egress`
//!   with `tcp` or `any`), by port only (addresses are cgroup-BPF's job);
//! - scopes: signals to processes outside the sandbox, and abstract unix
//!   sockets outside it when the policy allows no abstract socket by name.
//!
//! Rights are limited to those of Landlock ABI 1 to 7; newer rights (UDP,
//! pathname unix sockets) are not handled yet, so they stay unrestricted.

use phantom_dsl::ir::{Access, Effect, Layer, NetMode, Policy, Toggle};
use phantom_dsl::values::Protocol;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A Landlock filesystem right, with the ABI that introduced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsRight {
    Execute,
    WriteFile,
    ReadFile,
    ReadDir,
    RemoveDir,
    RemoveFile,
    MakeChar,
    MakeDir,
    MakeReg,
    MakeSock,
    MakeFifo,
    MakeBlock,
    MakeSym,
    Refer,
    Truncate,
    IoctlDev,
}

impl FsRight {
    pub const ALL: [FsRight; 16] = [
        FsRight::Execute,
        FsRight::WriteFile,
        FsRight::ReadFile,
        FsRight::ReadDir,
        FsRight::RemoveDir,
        FsRight::RemoveFile,
        FsRight::MakeChar,
        FsRight::MakeDir,
        FsRight::MakeReg,
        FsRight::MakeSock,
        FsRight::MakeFifo,
        FsRight::MakeBlock,
        FsRight::MakeSym,
        FsRight::Refer,
        FsRight::Truncate,
        FsRight::IoctlDev,
    ];

    /// The Landlock ABI version that introduced the right.
    pub fn min_abi(self) -> u8 {
        match self {
            FsRight::Refer => 2,
            FsRight::Truncate => 3,
            FsRight::IoctlDev => 5,
            _ => 1,
        }
    }
}

/// The Landlock rights one access kind grants.
pub fn rights_for(access: Access) -> &'static [FsRight] {
    use FsRight::*;
    match access {
        Access::Read => &[ReadFile, ReadDir],
        Access::Write => &[WriteFile, Truncate, IoctlDev],
        Access::Exec => &[Execute],
        // Device nodes (MakeChar, MakeBlock) are never granted: `devices`
        // governs them, and mknod needs privileges the sandbox lacks.
        Access::Create => &[MakeReg, MakeDir, MakeSym, MakeSock, MakeFifo],
        Access::Remove => &[RemoveFile, RemoveDir],
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsRuleSpec {
    /// Absolute path; with `prefix_glob`, the last component is a prefix.
    pub path: String,
    pub prefix_glob: bool,
    pub rights: BTreeSet<FsRight>,
    /// Policy line of the rule.
    pub line: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScopeKind {
    Signal,
    AbstractUnixSocket,
}

/// A Landlock ruleset: what to handle and what to allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockRuleset {
    /// `require: [landlock]`: fail when any part cannot be enforced.
    pub required: bool,
    /// Filesystem rules; `None` when the policy does not restrict the
    /// filesystem through Landlock (no allow rule, or Landlock disabled).
    pub fs: Option<Vec<FsRuleSpec>>,
    /// Allowed TCP bind ports; `None` leaves bind unrestricted.
    pub bind_tcp: Option<Vec<u16>>,
    /// Allowed TCP connect ports; `None` leaves connect unrestricted.
    pub connect_tcp: Option<Vec<u16>>,
    pub scopes: Vec<ScopeKind>,
}

impl LandlockRuleset {
    /// Nothing to enforce: the layer is absent from the bundle.
    pub fn is_empty(&self) -> bool {
        self.fs.is_none() && self.bind_tcp.is_none() && self.connect_tcp.is_none() && self.scopes.is_empty()
    }
}

fn expand_ports<'a>(ranges: impl Iterator<Item = &'a phantom_dsl::values::PortRange>) -> Vec<u16> {
    let set: BTreeSet<u16> = ranges.flat_map(|r| r.start..=r.end).collect();
    set.into_iter().collect()
}

/// Compiles the Landlock part of a policy. Deterministic: rules keep policy
/// order, port lists are sorted.
pub fn compile(p: &Policy) -> LandlockRuleset {
    let fs_enabled = p.filesystem.landlock;
    let allows: Vec<FsRuleSpec> = p
        .filesystem
        .rules
        .iter()
        .filter(|r| r.effect == Effect::Allow)
        .map(|r| {
            let mut rights: BTreeSet<FsRight> = r.access.iter().flat_map(|a| rights_for(*a).iter().copied()).collect();
            // Moving or linking between directories needs Refer on both ends.
            if r.access.contains(&Access::Create) && r.access.contains(&Access::Remove) {
                rights.insert(FsRight::Refer);
            }
            FsRuleSpec { path: r.path.path.clone(), prefix_glob: r.path.prefix_glob, rights, line: r.origin.line }
        })
        .collect();
    let fs = (fs_enabled && !allows.is_empty()).then_some(allows);

    let net = &p.network;
    let tcp = |proto: Protocol| matches!(proto, Protocol::Tcp | Protocol::Any);
    let bind_tcp = Some(expand_ports(net.bind.iter().filter(|b| tcp(b.protocol)).flat_map(|b| b.ports.iter())));
    let connect_tcp = match net.mode {
        // No route out: nothing to connect to but the sandbox's own loopback.
        NetMode::LoopbackOnly => None,
        NetMode::None => Some(Vec::new()),
        NetMode::Allowlist => {
            let rules: Vec<_> = net.egress.iter().filter(|r| tcp(r.protocol)).collect();
            if rules.iter().any(|r| r.ports.is_empty()) {
                None // some rule allows every port: Landlock cannot narrow it
            } else {
                Some(expand_ports(rules.iter().flat_map(|r| r.ports.iter())))
            }
        }
    };

    let mut scopes = Vec::new();
    if p.kernel.signals_outside == Toggle::Deny {
        scopes.push(ScopeKind::Signal);
    }
    if let Some(list) = &p.kernel.unix_connect {
        if !list.iter().any(|(name, _)| name.starts_with('@')) {
            scopes.push(ScopeKind::AbstractUnixSocket);
        }
    }
    LandlockRuleset { required: p.require.contains(&Layer::Landlock), fs, bind_tcp, connect_tcp, scopes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> LandlockRuleset {
        let c = phantom_dsl::compile_str("t.yaml", text);
        compile(c.policy.as_ref().unwrap_or_else(|| panic!("{:#?}", c.diagnostics.items)))
    }

    #[test]
    fn reference_profile_rules() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/python-ai-turbo.yaml")).unwrap();
        let r = compile_text(&text);
        let fs = r.fs.unwrap();
        assert_eq!(fs.len(), 2);
        assert_eq!(fs[0].path, "/tmp");
        assert!(fs[0].rights.contains(&FsRight::WriteFile) && !fs[0].rights.contains(&FsRight::Execute));
        assert!(fs[0].rights.contains(&FsRight::Refer));
        assert_eq!((fs[1].path.as_str(), fs[1].prefix_glob), ("/usr/lib/python3", true));
        assert_eq!(fs[1].rights, [FsRight::Execute, FsRight::ReadFile, FsRight::ReadDir].into_iter().collect());
        assert_eq!(fs[1].line, 15);
        assert_eq!(r.bind_tcp, Some(vec![]));
        assert_eq!(r.connect_tcp, None, "loopback-only leaves connect to the netns");
        assert_eq!(r.scopes, vec![ScopeKind::Signal], "medium denies signals outside");
        assert!(!r.required);
    }

    #[test]
    fn ports_from_egress_and_bind() {
        let r = compile_text(
            "profile: p\nrequire: [landlock]\nnetwork:\n  mode: allowlist\n  egress:\n    - to: 10.0.0.0/8\n      ports: [443, 8000-8002]\n    - to: 10.0.0.0/8\n      protocol: udp\n  bind:\n    - ports: 8080\n",
        );
        assert_eq!(r.connect_tcp, Some(vec![443, 8000, 8001, 8002]));
        assert_eq!(r.bind_tcp, Some(vec![8080]));
        assert!(r.fs.is_none());
        assert!(r.required);
    }

    #[test]
    fn an_any_port_rule_leaves_connect_unrestricted() {
        let r = compile_text("profile: p\nnetwork:\n  mode: allowlist\n  egress:\n    - to: 10.0.0.0/8\n");
        assert_eq!(r.connect_tcp, None);
    }

    #[test]
    fn abstract_scope_only_without_named_abstract_sockets() {
        let with = compile_text("profile: p\nkernel:\n  unix_sockets:\n    connect: [/run/a.sock]\n");
        assert!(with.scopes.contains(&ScopeKind::AbstractUnixSocket));
        let named = compile_text("profile: p\nkernel:\n  unix_sockets:\n    connect: [\"@broker\"]\n");
        assert!(!named.scopes.contains(&ScopeKind::AbstractUnixSocket));
    }
}
