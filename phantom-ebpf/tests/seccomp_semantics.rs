//! The compiled filter, run in the cBPF interpreter, agrees with a direct
//! evaluation of the policy IR on an input matrix (no root needed).

mod common;

use common::{docker_policy, example_policies, inputs, long_jump_policy};
use phantom_dsl::ir::SeccompPolicy;
use phantom_dsl::syscalls::Arch;
use phantom_ebpf::seccomp::disasm::ret_name;
use phantom_ebpf::seccomp::insn::JA;
use phantom_ebpf::seccomp::{compile, reference, Filter, SeccompData, AUDIT_ARCH_X86_64};

fn check_agreement(name: &str, policy: &SeccompPolicy, arch: Arch) -> Filter {
    let filter = compile(policy, arch).unwrap_or_else(|e| panic!("{name} ({}): {e}", arch.name()));
    let inputs = inputs(policy, arch);
    assert!(inputs.len() > 500);
    for data in &inputs {
        let got = filter.run(data).unwrap_or_else(|e| panic!("{name}: {e}\n{}", filter.disassemble()));
        let want = reference::evaluate(policy, arch, data);
        assert_eq!(
            got.ret,
            want,
            "{name} ({}): {data:x?}: filter says {}, policy says {}\n{}",
            arch.name(),
            ret_name(got.ret),
            ret_name(want),
            filter.disassemble()
        );
    }
    // Deterministic: a second compilation gives the same bytes.
    assert_eq!(compile(policy, arch).unwrap().to_bytes(), filter.to_bytes());
    assert_eq!(filter.lines.len(), filter.len());
    filter
}

#[test]
fn example_policies_agree_with_the_ir() {
    for (name, policy) in example_policies() {
        for arch in Arch::POLICY_ARCHES {
            check_agreement(&name, &policy, arch);
        }
        let mut x32 = policy.clone();
        x32.allow_x32 = true;
        check_agreement(&format!("{name} + allow_x32"), &x32, Arch::X86_64);
    }
}

#[test]
fn docker_profile_agrees_with_the_ir() {
    let policy = docker_policy();
    for arch in Arch::POLICY_ARCHES {
        check_agreement("docker", &policy, arch);
    }
    let mut x32 = policy.clone();
    x32.allow_x32 = true;
    check_agreement("docker + allow_x32", &x32, Arch::X86_64);
}

/// Instructions executed per decision for syscalls without conditions stay
/// within the target (<= 12) on Docker's profile.
#[test]
fn docker_profile_decisions_are_short() {
    let policy = docker_policy();
    let filter = compile(&policy, Arch::X86_64).unwrap();
    let conditional: Vec<u32> = policy
        .rules
        .iter()
        .filter(|r| !r.conditions.is_empty())
        .flat_map(|r| r.numbers.iter().filter(|n| n.0 == Arch::X86_64).map(|n| n.1))
        .collect();
    let (mut max, mut sum, mut n) = (0, 0, 0);
    for nr in (0..=470).filter(|nr| !conditional.contains(nr)) {
        let out = filter.run(&SeccompData::new(AUDIT_ARCH_X86_64, nr, [0; 6])).unwrap();
        max = max.max(out.executed);
        sum += out.executed;
        n += 1;
    }
    eprintln!(
        "docker x86_64: {} instructions, {} executed max, {:.2} mean over {n} unconditional numbers",
        filter.len(),
        max,
        sum as f64 / n as f64
    );
    assert!(max <= 12, "max {max} instructions executed\n{}", filter.disassemble());
}

#[test]
fn long_jumps_use_trampolines_and_agree() {
    let policy = long_jump_policy();
    for arch in Arch::POLICY_ARCHES {
        let filter = check_agreement("long-jumps", &policy, arch);
        assert!(filter.len() > 600, "only {} instructions", filter.len());
        let trampolines = filter.insns.iter().filter(|i| i.code == JA).count();
        assert!(trampolines > 0, "no trampoline in a {}-instruction filter", filter.len());
        eprintln!("long-jumps {}: {} instructions, {trampolines} trampolines", arch.name(), filter.len());
    }
}

#[test]
fn disassembly_names_policy_lines() {
    let (name, policy) = example_policies().into_iter().find(|(n, _)| n == "agent-workspace.yaml").unwrap();
    let filter = compile(&policy, Arch::X86_64).unwrap();
    let text = filter.disassemble();
    assert_eq!(text.lines().count(), filter.len(), "{name}");
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("   0: (20) A = arch"), "{first}");
    assert!(first.contains("; line "), "{first}");
    assert!(text.contains("if A != AUDIT_ARCH_X86_64 goto"), "{text}");
    assert!(text.contains("return KILL_PROCESS"), "{text}");
    assert!(text.contains("args[0].hi"), "{text}");
}
