//! Shared by the seccomp integration tests: the policies under test and the
//! input matrix.
// Reason: each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use phantom_dsl::ir::{Origin, SeccompPolicy, SyscallRule};
use phantom_dsl::syscalls::{self, Arch};
use phantom_dsl::values::{Action, ArgCondition, CmpOp};
use phantom_ebpf::seccomp::{
    SeccompData, AUDIT_ARCH_AARCH64, AUDIT_ARCH_ARM, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT,
};
use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The example policies in `policies/` that have a seccomp section.
pub fn example_policies() -> Vec<(String, SeccompPolicy)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo_root().join("policies"))
        .expect("policies/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let c = phantom_dsl::compile_file(&p).expect("readable policy");
        let policy = c.policy.unwrap_or_else(|| panic!("{} does not compile", p.display()));
        if policy.seccomp.enabled {
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), policy.seccomp));
        }
    }
    assert!(out.len() >= 3, "expected the example policies with seccomp sections, found {}", out.len());
    out
}

pub fn rule(name: &str, action: Action, conditions: Vec<ArgCondition>, line: u32) -> Option<SyscallRule> {
    let numbers: Vec<(Arch, u32)> =
        Arch::POLICY_ARCHES.iter().filter_map(|&a| syscalls::number(a, name).map(|nr| (a, nr))).collect();
    if numbers.is_empty() {
        return None;
    }
    Some(SyscallRule { name: name.to_string(), numbers, action, conditions, origin: Origin { line, ..Origin::NONE } })
}

pub fn policy(default: Action, rules: Vec<SyscallRule>) -> SeccompPolicy {
    SeccompPolicy {
        enabled: true,
        default,
        default_origin: Origin { line: 1, ..Origin::NONE },
        allow_x32: false,
        rules,
    }
}

/// Docker's default profile as `phantom-policy import seccomp` resolves it
/// for x86_64 and Docker's default capabilities (policies/docker-default.yaml).
pub fn docker_policy() -> SeccompPolicy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/docker-default.yaml");
    let c = phantom_dsl::compile_file(&path).unwrap();
    let p = c.policy.unwrap_or_else(|| panic!("{:#?}", c.diagnostics.items));
    assert!(p.seccomp.rules.len() > 300, "docker profile: only {} rules", p.seccomp.rules.len());
    p.seccomp
}

/// Argument values on both sides of every condition boundary of `nr`'s
/// rules, and with the high half set; all other arguments 0.
fn arg_vectors(policy: &SeccompPolicy, arch: Arch, nr: u32) -> Vec<[u64; 6]> {
    let mut out = vec![[0u64; 6], [u64::MAX; 6]];
    for r in &policy.rules {
        let matches_nr = r.numbers.iter().any(|&(a, n)| a == arch && n == nr)
            || (arch == Arch::X86_64 && syscalls::number(Arch::X32, &r.name) == Some(nr));
        if !matches_nr {
            continue;
        }
        // All conditions of the rule hold at once, and then one at a time
        // pushed across its boundary.
        let mut base = [0u64; 6];
        for c in &r.conditions {
            base[usize::from(c.arg)] = c.value;
        }
        out.push(base);
        for c in &r.conditions {
            let v = c.value;
            let mut candidates = vec![
                v,
                v.wrapping_sub(1),
                v.wrapping_add(1),
                v | 1 << 32,
                v ^ 1 << 32,
                v ^ 0xffff_ffff_0000_0000,
                v | 0x8000_0000,
                0,
                u64::MAX,
            ];
            if let CmpOp::MaskedEq { mask } = c.op {
                candidates.extend([
                    v | !mask,
                    mask,
                    v | (mask & mask.wrapping_neg()),
                    v ^ (mask & mask.wrapping_neg()),
                ]);
            }
            for x in candidates {
                let mut a = base;
                a[usize::from(c.arg)] = x;
                out.push(a);
                let mut z = [0u64; 6];
                z[usize::from(c.arg)] = x;
                out.push(z);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The input matrix for `arch`: syscall numbers 0..=470 (x86_64: also
/// numbers with the x32 bit), edge numbers, foreign architectures, and
/// argument vectors around every condition boundary.
pub fn inputs(policy: &SeccompPolicy, arch: Arch) -> Vec<SeccompData> {
    let native = match arch {
        Arch::X86_64 => AUDIT_ARCH_X86_64,
        Arch::Aarch64 => AUDIT_ARCH_AARCH64,
        _ => unreachable!(),
    };
    let mut nrs: Vec<u32> = (0..=470).collect();
    nrs.extend([471, 500, 511, 512, 547, 1000, 0xffff, 0x3fff_ffff, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, u32::MAX]);
    if arch == Arch::X86_64 {
        nrs.extend((0..=550).map(|n| X32_SYSCALL_BIT | n));
    } else {
        nrs.extend([X32_SYSCALL_BIT, X32_SYSCALL_BIT | 1]);
    }
    let mut out = Vec::new();
    for &nr in &nrs {
        for args in arg_vectors(policy, arch, nr) {
            out.push(SeccompData::new(native, nr, args));
        }
    }
    for foreign in [AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64, AUDIT_ARCH_I386, AUDIT_ARCH_ARM, 0, u32::MAX] {
        if foreign == native {
            continue;
        }
        for nr in [0, 1, 2, 39, 59, 110, 231, 435, X32_SYSCALL_BIT | 39, u32::MAX] {
            out.push(SeccompData::new(foreign, nr, [0; 6]));
        }
    }
    out
}

/// A policy with enough conditional rules that the tree's jumps exceed the
/// 255-instruction reach of cBPF jumps; each condition kind appears.
pub fn long_jump_policy() -> SeccompPolicy {
    let ops =
        [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge, CmpOp::MaskedEq { mask: 0xff00_0000_00f0 }];
    let mut conditional = Vec::new();
    let mut unconditional = Vec::new();
    let names: Vec<&str> = {
        let mut t: Vec<(u32, &str)> = syscalls::table(Arch::X86_64).iter().map(|&(n, nr)| (nr, n)).collect();
        t.sort_unstable();
        t.into_iter().map(|(_, n)| n).collect()
    };
    for (i, name) in names.iter().enumerate().filter(|(i, _)| i % 3 != 2) {
        let line = 10 + i as u32;
        if i % 3 == 0 {
            for j in 0..3u64 {
                let op = ops[(i + j as usize) % ops.len()];
                let value = match op {
                    CmpOp::MaskedEq { .. } => 0x1200_0000_0030 * (j & 1),
                    _ => (j + 1) * 0x1_0000_0001 + i as u64,
                };
                let action = [Action::Allow, Action::Errno(13), Action::Trap][j as usize];
                let mut conds = vec![ArgCondition { arg: (j % 6) as u8, op, value }];
                if j == 2 {
                    conds.push(ArgCondition { arg: 5, op: CmpOp::Le, value: 0xffff_ffff });
                }
                conditional.extend(rule(name, action, conds, line));
            }
            if i % 2 == 0 {
                unconditional.extend(rule(name, Action::Log, vec![], line));
            }
        } else {
            unconditional.extend(rule(name, Action::Allow, vec![], line));
        }
    }
    let mut rules = conditional;
    rules.extend(unconditional);
    policy(Action::KillProcess, rules)
}
