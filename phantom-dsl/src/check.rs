//! Semantic checks across rules: contradictions, shadowed rules, rules that
//! cannot apply under the chosen mode, and syscall lists that cannot even
//! exec the sandboxed command. Runs on the decoded IR; spans come from the
//! rules' origins.

use crate::diag::{Diagnostic, Diagnostics};
use crate::ir::*;
use crate::syscalls::{self, Arch};
use crate::values::Action;
use std::collections::BTreeMap;

/// Runs every check. Warnings that judge the policy as a whole (such as
/// "cannot exec") are skipped when earlier errors left it incomplete.
pub fn check(p: &Policy, diags: &mut Diagnostics) {
    let complete = !diags.has_errors();
    check_seccomp(p, diags, complete);
    check_filesystem(p, diags);
    check_network(p, diags);
    check_require(p, diags);
    if complete {
        check_exec(p, diags);
    }
}

/// Syscalls that execve and the dynamic loader of a glibc program need
/// before `main` runs (x86_64 names; `arch_prctl` is x86_64 only).
pub const EXEC_SYSCALLS: &[&str] = &[
    "execve",
    "brk",
    "mmap",
    "mprotect",
    "munmap",
    "openat",
    "read",
    "close",
    "newfstatat",
    "pread64",
    "arch_prctl",
    "set_tid_address",
    "exit_group",
];

fn check_seccomp(p: &Policy, diags: &mut Diagnostics, complete: bool) {
    let s = &p.seccomp;
    if !s.enabled {
        return;
    }
    // `kernel.io_uring: deny` is enforced by seccomp (decode/switches.rs);
    // an explicit allow of one of its syscalls contradicts it.
    if p.kernel.io_uring == crate::ir::Toggle::Deny {
        for r in s.rules.iter().filter(|r| {
            crate::decode::switches::IO_URING_SYSCALLS.contains(&r.name.as_str())
                && matches!(r.action, crate::values::Action::Allow | crate::values::Action::Log)
        }) {
            diags.push(
                Diagnostic::error("P0201", r.origin.span, format!("`{}` is allowed, but io_uring is denied", r.name))
                    .label("allowed here")
                    .help("`kernel.io_uring: deny` (the default of `security.level: high`) refuses io_uring; remove this rule or set `kernel.io_uring: allow`"),
            );
        }
    }
    let mut first: BTreeMap<&str, &SyscallRule> = BTreeMap::new();
    for r in s.rules.iter().filter(|r| r.conditions.is_empty()) {
        match first.get(r.name.as_str()) {
            None => {
                first.insert(&r.name, r);
            }
            Some(prev) if prev.action == r.action => diags.push(
                Diagnostic::warning("P0206", r.origin.span, format!("`{}` is listed twice", r.name))
                    .related(prev.origin.span, "first listed here")
                    .help("remove the duplicate"),
            ),
            Some(prev) => diags.push(
                Diagnostic::error("P0201", r.origin.span, format!("contradictory rules for `{}`", r.name))
                    .label(format!("action `{}` here", r.action))
                    .related(prev.origin.span, format!("action `{}` here", prev.action))
                    .help("a syscall gets one unconditional action; keep one of the two"),
            ),
        }
    }
    // In rule order, anything after an unconditional rule for the same
    // syscall can never apply.
    for (i, r) in s.rules.iter().enumerate() {
        if let Some(u) = s.rules[..i].iter().find(|u| u.name == r.name && u.conditions.is_empty()) {
            if !r.conditions.is_empty() {
                diags.push(
                    Diagnostic::warning("P0202", r.origin.span, format!("this rule for `{}` never applies", r.name))
                        .related(u.origin.span, "an earlier rule already decides every call")
                        .help("rules are tried in order; move the conditional rule before the unconditional one"),
                );
            }
        }
    }
    for r in s.rules.iter().filter(|r| !r.conditions.is_empty()) {
        if let Some(u) = first.get(r.name.as_str()) {
            if u.action == r.action {
                diags.push(
                    Diagnostic::warning(
                        "P0202",
                        r.origin.span,
                        format!("conditional rule for `{}` never changes the outcome", r.name),
                    )
                    .related(u.origin.span, format!("`{}` is already `{}` unconditionally here", r.name, u.action))
                    .help("remove the conditional rule, or the unconditional one"),
                );
            }
        }
    }
    if complete && !matches!(s.default, Action::Allow | Action::Log) {
        let allowed = |name: &str| {
            s.rules
                .iter()
                .any(|r| r.name == name && r.conditions.is_empty() && matches!(r.action, Action::Allow | Action::Log))
        };
        let missing: Vec<&str> = EXEC_SYSCALLS
            .iter()
            .copied()
            .filter(|n| {
                !(allowed(n) || (*n == "execve" && allowed("execveat")) || (*n == "newfstatat" && allowed("fstat")))
            })
            .filter(|n| syscalls::number(Arch::X86_64, n).is_some())
            .collect();
        if !missing.is_empty() {
            let span = if s.default_origin == Origin::NONE {
                s.rules.first().map(|r| r.origin.span)
            } else {
                Some(s.default_origin.span)
            };
            if let Some(span) = span {
                diags.push(
                    Diagnostic::warning("P0204", span, "the syscall allow-list cannot exec the sandboxed command")
                        .label("every syscall not listed gets this default action")
                        .help(format!(
                            "allow the syscalls that execve and the dynamic loader need: {}",
                            missing.join(", ")
                        )),
                );
            }
        }
    }
}

fn check_filesystem(p: &Policy, diags: &mut Diagnostics) {
    let rules = &p.filesystem.rules;
    for (i, a) in rules.iter().enumerate() {
        for b in &rules[..i] {
            if a.path == b.path && a.effect == b.effect {
                diags.push(
                    Diagnostic::warning("P0206", a.origin.span, format!("a second rule for `{}`", a.path))
                        .related(b.origin.span, "first rule here")
                        .help("merge the access lists into one rule"),
                );
            } else if a.path == b.path && a.effect != b.effect && !a.access.is_disjoint(&b.access) {
                let both: Vec<&str> = a.access.intersection(&b.access).map(|x| x.name()).collect();
                diags.push(
                    Diagnostic::error("P0201", a.origin.span, format!("`{}` is both allowed and denied", a.path))
                        .found(format!("access {} in both rules", both.join(", ")))
                        .related(b.origin.span, "the other rule")
                        .help("a deny carves out of an allow on a deeper path; on the same path keep only one"),
                );
            }
        }
    }
    for a in rules.iter().filter(|r| r.effect == Effect::Allow) {
        for d in rules.iter().filter(|r| r.effect == Effect::Deny) {
            if a.path != d.path && d.path.covers(&a.path) && a.access.is_subset(&d.access) {
                diags.push(
                    Diagnostic::warning("P0202", a.origin.span, format!("allow of `{}` is shadowed by a deny", a.path))
                        .label("this allow never takes effect")
                        .related(d.origin.span, format!("`{}` denies the same access here, and deny wins", d.path))
                        .help("remove the allow, or narrow the deny"),
                );
            }
        }
    }
    if !p.filesystem.landlock {
        if let Some(r) = rules.iter().find(|r| r.effect == Effect::Allow) {
            diags.push(
                Diagnostic::warning("P0208", r.origin.span, "Landlock is disabled but has path rules")
                    .help("these rules still shape the sandbox's mounts and BPF-LSM, but Landlock will not enforce them; remove `enabled: false` or the rules"),
            );
        }
    }
}

fn check_network(p: &Policy, diags: &mut Diagnostics) {
    let n = &p.network;
    let mode = match n.mode {
        NetMode::None => "none",
        NetMode::LoopbackOnly => "loopback-only",
        NetMode::Allowlist => return,
    };
    let rules = n.egress.iter().map(|r| (r.origin, "egress")).chain(n.ingress.iter().map(|r| (r.origin, "ingress")));
    let binds = n.bind.iter().filter(|_| n.mode == NetMode::None).map(|r| (r.origin, "bind"));
    for (o, kind) in rules.chain(binds) {
        diags.push(
            Diagnostic::error("P0203", o.span, format!("{kind} rule under `network.mode: {mode}`"))
                .label("this rule can never apply")
                .help(if n.mode == NetMode::None {
                    "the sandbox has no network at all; use `mode: allowlist` to allow traffic by rule".to_string()
                } else {
                    "only loopback exists in the sandbox; use `mode: allowlist` for traffic to other hosts".to_string()
                }),
        );
    }
}

/// `require` of a layer the policy gives nothing to enforce: the
/// requirement means nothing, which is almost certainly a mistake.
fn check_require(p: &Policy, diags: &mut Diagnostics) {
    let Some(span) = p.require_origin.map(|o| o.span) else { return };
    let present: Vec<Layer> = p.layers().iter().map(|l| l.layer).collect();
    for l in p.require.iter().filter(|l| !present.contains(l)) {
        diags.push(
            Diagnostic::warning(
                "P0209",
                span,
                format!("`require` names `{}`, but the policy has no rules for it", l.name()),
            )
            .label("required here")
            .help("remove it from `require`, or add the rules that this layer enforces"),
        );
    }
}

/// Where glibc and musl systems keep the dynamic loader (`PT_INTERP`), by
/// the real path the kernel opens (symlinks resolved): Debian and Ubuntu,
/// Fedora, Arch, Alpine; x86_64 and aarch64.
pub const DYNAMIC_LOADERS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/usr/lib64/ld-linux-x86-64.so.2",
    "/lib64/ld-linux-x86-64.so.2",
    "/usr/lib/ld-linux-x86-64.so.2",
    "/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
    "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
    "/usr/lib/ld-linux-aarch64.so.1",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/ld-musl-x86_64.so.1",
    "/lib/ld-musl-aarch64.so.1",
];

/// An exec allow-list with no dynamic loader: the kernel opens a
/// dynamically linked program's loader for exec too, so every such
/// program, the sandbox's own command included, fails with EPERM.
fn check_exec(p: &Policy, diags: &mut Diagnostics) {
    let Some(exec) = &p.exec else { return };
    let Some((_, first)) = exec.allow.first() else { return };
    let covered = DYNAMIC_LOADERS.iter().any(|l| exec.allow.iter().any(|(pat, _)| pat.matches(l)));
    if !covered {
        diags.push(
            Diagnostic::warning("P0210", first.span, "the exec allow-list has no dynamic loader")
                .label("dynamically linked programs, the sandbox's command included, cannot start")
                .help(
                    "add the host's loader by its real path, e.g. /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
                     (Debian, Ubuntu), /usr/lib64/ld-linux-x86-64.so.2 (Fedora); `readelf -l PROGRAM | grep \
                     interpreter` names it. Statically linked programs need none",
                ),
        );
    }
}
