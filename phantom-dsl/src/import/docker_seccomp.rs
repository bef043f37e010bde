//! Docker / OCI seccomp profiles (`{"defaultAction": ..., "syscalls": [...]}`,
//! e.g. Docker's default profile) to policy text.
//!
//! A profile's entries are conditional on architecture and capabilities
//! (`includes` / `excludes`); the importer resolves them for one target
//! architecture and one capability set (default: x86_64 and Docker's
//! default capabilities). `includes.minKernel` is taken as satisfied:
//! Phantom targets current kernels. Names that do not exist on the target
//! architecture are skipped and listed in a comment; so are entries with
//! actions Phantom does not have (`SCMP_ACT_TRACE`).

use crate::syscalls::{self, Arch};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not a seccomp profile: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported default action `{0}`")]
    DefaultAction(String),
    #[error("importing for {0} is not supported; use x86_64 or aarch64")]
    Arch(&'static str),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(default)]
    names: Vec<String>,
    action: String,
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u8,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
}

/// What an import produced, with what it had to leave out.
#[derive(Debug, Clone)]
pub struct Imported {
    pub text: String,
    /// Entries that apply, after includes/excludes.
    pub entries_used: usize,
    pub entries_skipped: usize,
    /// Names not on the target architecture.
    pub unknown_names: BTreeSet<String>,
    pub unsupported: Vec<String>,
}

/// Docker's names for the architectures (Go's GOARCH).
fn docker_arches(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 => &["amd64"],
        Arch::Aarch64 => &["arm64"],
        Arch::I386 => &["x86"],
        Arch::X32 => &["x32"],
    }
}

fn action(name: &str, errno: Option<u32>, default_errno: u32) -> Option<String> {
    Some(match name {
        "SCMP_ACT_ALLOW" => "allow".into(),
        "SCMP_ACT_ERRNO" => {
            let n = errno.unwrap_or(default_errno).min(4095) as u16;
            crate::values::Action::Errno(n).to_string()
        }
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => "kill-thread".into(),
        "SCMP_ACT_KILL_PROCESS" => "kill-process".into(),
        "SCMP_ACT_TRAP" => "trap".into(),
        "SCMP_ACT_LOG" => "log".into(),
        "SCMP_ACT_NOTIFY" => "notify".into(),
        _ => return None,
    })
}

fn condition(a: &Arg) -> Option<String> {
    use crate::values::{ArgCondition, CmpOp};
    let (op, value) = match a.op.as_str() {
        "SCMP_CMP_EQ" => (CmpOp::Eq, a.value),
        "SCMP_CMP_NE" => (CmpOp::Ne, a.value),
        "SCMP_CMP_LT" => (CmpOp::Lt, a.value),
        "SCMP_CMP_LE" => (CmpOp::Le, a.value),
        "SCMP_CMP_GT" => (CmpOp::Gt, a.value),
        "SCMP_CMP_GE" => (CmpOp::Ge, a.value),
        // libseccomp: `value` is the mask, `valueTwo` the datum.
        "SCMP_CMP_MASKED_EQ" => (CmpOp::MaskedEq { mask: a.value }, a.value_two),
        _ => return None,
    };
    (a.index <= 5).then(|| ArgCondition { arg: a.index, op, value }.to_string())
}

/// A comment listing `items`, wrapped to 100 columns.
fn comment_list(head: &str, items: &[String]) -> String {
    let mut out = String::new();
    let mut line = format!("# {head}");
    for (i, it) in items.iter().enumerate() {
        let piece = if i + 1 == items.len() { it.clone() } else { format!("{it},") };
        if line.len() + 1 + piece.len() > 100 {
            out += &line;
            out.push('\n');
            line = String::from("#  ");
        }
        line.push(' ');
        line += &piece;
    }
    out += &line;
    out.push('\n');
    out
}

fn applies(e: &Entry, arch: Arch, caps: &BTreeSet<&str>) -> bool {
    let names = docker_arches(arch);
    let has_cap =
        |list: &Option<Vec<String>>| list.as_ref().is_some_and(|l| l.iter().any(|c| caps.contains(c.as_str())));
    let has_arch =
        |list: &Option<Vec<String>>| list.as_ref().is_some_and(|l| l.iter().any(|a| names.contains(&a.as_str())));
    if let Some(inc) = &e.includes {
        if inc.caps.as_ref().is_some_and(|c| !c.is_empty()) && !has_cap(&inc.caps) {
            return false;
        }
        if inc.arches.as_ref().is_some_and(|a| !a.is_empty()) && !has_arch(&inc.arches) {
            return false;
        }
    }
    if let Some(exc) = &e.excludes {
        if has_cap(&exc.caps) || has_arch(&exc.arches) {
            return false;
        }
    }
    true
}

/// Converts a profile for `arch` with the capabilities `caps`.
pub fn import(json: &str, profile_name: &str, arch: Arch, caps: &[&str]) -> Result<Imported, ImportError> {
    if !Arch::POLICY_ARCHES.contains(&arch) {
        return Err(ImportError::Arch(arch.name()));
    }
    let p: Profile = serde_json::from_str(json)?;
    let default_errno = p.default_errno_ret.unwrap_or(1);
    let default = action(&p.default_action, None, default_errno)
        .ok_or_else(|| ImportError::DefaultAction(p.default_action.clone()))?;
    let caps: BTreeSet<&str> = caps.iter().copied().collect();

    // action -> names, for unconditional entries; conditional rules in order.
    let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unconditional: BTreeMap<String, String> = BTreeMap::new();
    let mut rules: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut out = Imported {
        text: String::new(),
        entries_used: 0,
        entries_skipped: 0,
        unknown_names: BTreeSet::new(),
        unsupported: Vec::new(),
    };
    for e in &p.syscalls {
        if !applies(e, arch, &caps) {
            out.entries_skipped += 1;
            continue;
        }
        let Some(act) = action(&e.action, e.errno_ret, default_errno) else {
            out.unsupported.push(format!("{} for {}", e.action, e.names.join(", ")));
            continue;
        };
        let conds: Option<Vec<String>> = e.args.iter().flatten().map(condition).collect();
        let Some(conds) = conds else {
            out.unsupported.push(format!("an unknown comparison for {}", e.names.join(", ")));
            continue;
        };
        out.entries_used += 1;
        for n in &e.names {
            if syscalls::number(arch, n).is_none() {
                out.unknown_names.insert(n.clone());
                continue;
            }
            if conds.is_empty() {
                // A later unconditional entry overrides an earlier one, as in Docker.
                unconditional.insert(n.clone(), act.clone());
            } else {
                rules.push((n.clone(), act.clone(), conds.clone()));
            }
        }
    }
    for (name, act) in &unconditional {
        if *act != default {
            lists.entry(act.clone()).or_default().push(name.clone());
        }
    }
    // A conditional rule with the action the syscall already has
    // unconditionally never changes the outcome.
    rules.retain(|(n, a, _)| unconditional.get(n) != Some(a));

    let mut t = String::new();
    let caps_list: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    t += &comment_list(
        &format!("Imported by `phantom-policy import seccomp` for {} with capabilities:", arch.name()),
        &caps_list,
    );
    if !out.unknown_names.is_empty() {
        let names: Vec<String> = out.unknown_names.iter().cloned().collect();
        t += &comment_list(&format!("Not syscalls on {} (skipped):", arch.name()), &names);
    }
    for u in &out.unsupported {
        t += &format!("# Unsupported, skipped: {u}\n");
    }
    t += &format!("profile: {profile_name}\n\nsecurity:\n  seccomp:\n    default: {default}\n");
    let simple = |a: &str| matches!(a, "allow" | "log");
    for (act, names) in &lists {
        if simple(act) {
            t += &format!("    {act}: [{}]\n", names.join(", "));
        }
    }
    let complex: Vec<(&String, &Vec<String>)> = lists.iter().filter(|(a, _)| !simple(a)).collect();
    if !complex.is_empty() || !rules.is_empty() {
        t += "    rules:\n";
        for (act, names) in complex {
            t += &format!("      - syscalls: [{}]\n        action: {act}\n", names.join(", "));
        }
        for (name, act, conds) in &rules {
            t += &format!("      - syscall: {name}\n        action: {act}\n        when: [{}]\n", conds.join(", "));
        }
    }
    out.text = crate::format_source("imported.yaml", &t).unwrap_or(t);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/docker-default-seccomp.json"))
            .unwrap()
    }

    #[test]
    fn docker_default_profile_imports_and_compiles() {
        let imp = import(&docker(), "docker-default", Arch::X86_64, DOCKER_DEFAULT_CAPS).unwrap();
        let c = crate::compile_str("docker.yaml", &imp.text);
        let p = c.policy.unwrap_or_else(|| panic!("{}\n{:#?}", imp.text, c.diagnostics.items));
        let s = &p.seccomp;
        assert_eq!(s.default, crate::values::Action::Errno(1));
        let allowed: BTreeSet<&str> = s
            .rules
            .iter()
            .filter(|r| r.conditions.is_empty() && r.action == crate::values::Action::Allow)
            .map(|r| r.name.as_str())
            .collect();
        for n in ["read", "openat", "arch_prctl", "modify_ldt", "ptrace", "cachestat"] {
            assert!(allowed.contains(n), "{n} should be allowed");
        }
        for n in ["bpf", "mount", "reboot", "init_module", "open_by_handle_at", "s390_runtime_instr", "clone"] {
            assert!(!allowed.contains(n), "{n} must not be allowed without its capability");
        }
        // clone3 gets ENOSYS without CAP_SYS_ADMIN, so that libc falls back to clone.
        let clone3 = s.rules.iter().find(|r| r.name == "clone3").unwrap();
        assert_eq!(clone3.action, crate::values::Action::Errno(38));
        // personality: five allowed values.
        assert_eq!(s.rules.iter().filter(|r| r.name == "personality").count(), 5);
        // clone only without namespace flags (the non-s390 entry, arg0).
        let clone: Vec<String> = s
            .rules
            .iter()
            .filter(|r| r.name == "clone")
            .flat_map(|r| r.conditions.iter().map(|c| c.to_string()))
            .collect();
        assert_eq!(clone, ["arg0 & 0x7e020000 == 0"]);
        assert!(imp.unknown_names.contains("_llseek") && imp.unknown_names.contains("chown32"));
        assert!(!imp.unknown_names.contains("read"));
    }

    #[test]
    fn capabilities_change_the_result() {
        let with_admin = [DOCKER_DEFAULT_CAPS, &["CAP_SYS_ADMIN"]].concat();
        let imp = import(&docker(), "admin", Arch::X86_64, &with_admin).unwrap();
        let p = crate::compile_str("a.yaml", &imp.text).policy.unwrap();
        let r = p.seccomp.rules.iter().find(|r| r.name == "mount").unwrap();
        assert_eq!(r.action, crate::values::Action::Allow);
        assert!(p.seccomp.rules.iter().all(|r| r.name != "clone3" || r.action == crate::values::Action::Allow));
    }
}
