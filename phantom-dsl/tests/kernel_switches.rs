//! `kernel.io_uring: deny` becomes seccomp rules (decode/switches.rs):
//! EPERM for the three io_uring syscalls when the filter would otherwise
//! let them through, nothing when its default already refuses, and a
//! contradiction when the seccomp section allows one of them.

use phantom_dsl::ir::Policy;
use phantom_dsl::values::Action;

fn policy(text: &str) -> Policy {
    let c = phantom_dsl::compile_str("p.yaml", text);
    assert!(!c.has_errors(), "{text}\n{:#?}", c.diagnostics);
    c.policy.unwrap()
}

fn io_uring_rules(p: &Policy) -> Vec<(String, Action)> {
    p.seccomp.rules.iter().filter(|r| r.name.starts_with("io_uring")).map(|r| (r.name.clone(), r.action)).collect()
}

const EPERM: Action = Action::Errno(1);

#[test]
fn level_high_without_a_seccomp_section_gets_a_filter_refusing_io_uring() {
    let p = policy("profile: t\nsecurity:\n  level: high\n");
    assert!(p.seccomp.enabled);
    assert_eq!(p.seccomp.default, Action::Allow, "everything else stays allowed");
    assert_eq!(
        io_uring_rules(&p),
        [
            ("io_uring_setup".to_string(), EPERM),
            ("io_uring_enter".to_string(), EPERM),
            ("io_uring_register".to_string(), EPERM)
        ]
    );
    for r in &p.seccomp.rules {
        assert!(r.numbers.iter().any(|(a, _)| a.name() == "x86_64"), "{} has an x86_64 number", r.name);
    }
}

#[test]
fn allowed_io_uring_adds_nothing() {
    let p = policy("profile: t\nsecurity:\n  level: high\nkernel:\n  io_uring: allow\n");
    assert!(!p.seccomp.enabled, "no switch needs seccomp: no filter");
    let p = policy("profile: t\n"); // medium: io_uring allowed
    assert!(!p.seccomp.enabled);
}

#[test]
fn a_refusing_default_needs_no_rule_and_a_permissive_one_gets_them() {
    let p =
        policy("profile: t\nkernel:\n  io_uring: deny\nsecurity:\n  seccomp:\n    default: deny\n    allow: [read]\n");
    assert!(io_uring_rules(&p).is_empty(), "default deny already refuses io_uring");
    let p = policy(
        "profile: t\nkernel:\n  io_uring: deny\nsecurity:\n  seccomp:\n    default: allow\n    deny: [ptrace]\n",
    );
    assert_eq!(io_uring_rules(&p).len(), 3);
}

#[test]
fn allowing_an_io_uring_syscall_under_io_uring_deny_is_a_contradiction() {
    let text = "profile: t\nkernel:\n  io_uring: deny\nsecurity:\n  seccomp:\n    default: deny\n    allow: [read, io_uring_setup]\n";
    let c = phantom_dsl::compile_str("p.yaml", text);
    let d = c.diagnostics.items.iter().find(|d| d.code == "P0201").unwrap_or_else(|| panic!("{:#?}", c.diagnostics));
    assert!(d.message.contains("io_uring_setup"), "{}", d.message);
}
