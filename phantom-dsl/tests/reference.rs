//! The reference profile and the example policies: they compile, formatting
//! keeps their meaning, and compilation is deterministic.

use phantom_dsl::ir::*;
use phantom_dsl::values::{Action, Cpu, Size};
use std::path::{Path, PathBuf};

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn example_policies() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(policies_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn reference_profile_compiles_with_the_exec_warning() {
    let c = phantom_dsl::compile_file(&policies_dir().join("python-ai-turbo.yaml")).unwrap();
    let p = c.policy.as_ref().unwrap_or_else(|| panic!("{:#?}", c.diagnostics));
    assert_eq!(p.profile, "python-ai-turbo");
    assert_eq!(p.mode, Mode::Sandbox);
    assert_eq!(p.runtime, Runtime::Auto);
    assert_eq!(p.level, Level::Medium);
    assert!(p.seccomp.enabled);
    assert_eq!(p.seccomp.default, Action::Errno(1));
    let allowed: Vec<&str> = p.seccomp.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(allowed, ["read", "write", "openat", "close", "mmap", "exit_group"]);
    assert!(p.seccomp.rules.iter().all(|r| r.action == Action::Allow && r.conditions.is_empty()));
    assert_eq!(p.filesystem.rules.len(), 2);
    assert_eq!(p.filesystem.rules[1].path, PathPattern { path: "/usr/lib/python3".into(), prefix_glob: true });
    assert_eq!(p.filesystem.rules[1].access, [Access::Read, Access::Exec].into_iter().collect());
    assert_eq!(p.filesystem.rules[1].origin.line, 15);
    assert_eq!(
        p.performance,
        Performance { zygote: true, io_mode: IoMode::Uring, memory_allocator: Allocator::Jemalloc }
    );
    assert_eq!(p.resources.memory, Some(Size(512_000_000)));
    assert_eq!(p.resources.cpu, Some(Cpu(1000)));
    assert_eq!(p.resources.pids, Some(256));
    assert_eq!(p.network.mode, NetMode::LoopbackOnly);

    // Exactly one diagnostic: the allow-list cannot exec a program.
    assert_eq!(c.diagnostics.items.len(), 1, "{:#?}", c.diagnostics.items);
    let w = &c.diagnostics.items[0];
    assert_eq!(w.code, "P0204");
    assert!(!w.is_error());
    let found = w.help.as_deref().unwrap();
    for missing in ["execve", "brk", "mprotect", "arch_prctl"] {
        assert!(found.contains(missing), "{found}");
    }
    for present in ["openat", "mmap", "exit_group"] {
        assert!(!found.split([' ', ',']).any(|s| s == present), "{found}");
    }
}

#[test]
fn every_example_policy_compiles_without_errors() {
    for p in example_policies() {
        let c = phantom_dsl::compile_file(&p).unwrap();
        assert!(!c.has_errors(), "{}: {:#?}", p.display(), c.diagnostics.items);
    }
}

#[test]
fn fmt_keeps_the_ir_and_is_idempotent() {
    for p in example_policies() {
        let text = std::fs::read_to_string(&p).unwrap();
        let name = p.to_string_lossy();
        let once = phantom_dsl::format_source(&name, &text).unwrap();
        let twice = phantom_dsl::format_source(&name, &once).unwrap();
        assert_eq!(once, twice, "{name}: fmt is not idempotent");
        let a = phantom_dsl::compile_source(&name, &text, &phantom_dsl::extends::FsLoader);
        let b = phantom_dsl::compile_source(&name, &once, &phantom_dsl::extends::FsLoader);
        assert_eq!(
            a.policy.as_ref().map(Policy::without_origins),
            b.policy.as_ref().map(Policy::without_origins),
            "{name}: fmt changed the meaning"
        );
        // Comments survive formatting.
        let comments = |s: &str| s.lines().filter(|l| l.trim_start().starts_with('#')).count();
        assert_eq!(comments(&text), comments(&once), "{name}: fmt lost comments");
    }
}

#[test]
fn compiling_twice_gives_identical_bytes() {
    for p in example_policies() {
        let a = phantom_dsl::compile_file(&p).unwrap();
        let b = phantom_dsl::compile_file(&p).unwrap();
        let ja = serde_json::to_vec(&a.policy).unwrap();
        let jb = serde_json::to_vec(&b.policy).unwrap();
        assert_eq!(ja, jb, "{}", p.display());
        assert_eq!(a.diagnostics.items, b.diagnostics.items);
    }
}

#[test]
fn extends_merges_maps_and_replaces_lists() {
    let c = phantom_dsl::compile_file(&policies_dir().join("agent-workspace.yaml")).unwrap();
    let p = c.policy.unwrap_or_else(|| panic!("{:#?}", c.diagnostics.items));
    // From base.yaml: landlock paths and network mode; overridden: resources.memory.
    assert!(p.filesystem.rules.iter().any(|r| r.path.path == "/usr" && r.from_landlock_section));
    assert_eq!(p.network.mode, NetMode::None);
    assert_eq!(p.resources.memory, Some(Size(1 << 30)));
    assert_eq!(p.resources.open_files, Some(256), "kept from the base");
    assert_eq!(p.sources.len(), 2);
    assert!(p.sources[1].path.ends_with("base.yaml"));
    // Rules from the base point into the base file.
    let usr = p.filesystem.rules.iter().find(|r| r.path.path == "/usr").unwrap();
    assert_eq!(usr.origin.file, phantom_dsl::source::FileId(1));
}
