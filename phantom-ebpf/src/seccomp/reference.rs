//! The meaning of a [`SeccompPolicy`], evaluated directly from the IR with
//! no filter involved. Tests run compiled filters against it.

use super::{action_value, audit_arch, ret, SeccompData, X32_SYSCALL_BIT};
use phantom_dsl::ir::SeccompPolicy;
use phantom_dsl::syscalls::{self, Arch};

/// The return value the filter for `arch` must give for `data`.
///
/// * Another architecture: `KILL_PROCESS`.
/// * x86_64 without `allow_x32`: a number `>= 0x40000000` (the x32 bit, or
///   a negative number) other than `0xffffffff` gets `KILL_PROCESS`. With
///   `allow_x32`, numbers with the x32 bit are looked up in the x32 table.
/// * Else the first rule for that number whose conditions all hold, in
///   policy order, else the default.
pub fn evaluate(policy: &SeccompPolicy, arch: Arch, data: &SeccompData) -> u32 {
    if Some(data.arch) != audit_arch(arch) {
        return ret::KILL_PROCESS;
    }
    let x32 = arch == Arch::X86_64 && data.nr & X32_SYSCALL_BIT != 0;
    if arch == Arch::X86_64 && !policy.allow_x32 && data.nr >= X32_SYSCALL_BIT && data.nr != u32::MAX {
        return ret::KILL_PROCESS;
    }
    for rule in &policy.rules {
        let nr = if x32 {
            syscalls::number(Arch::X32, &rule.name)
        } else {
            rule.numbers.iter().find(|(a, _)| *a == arch).map(|&(_, nr)| nr)
        };
        if nr != Some(data.nr) {
            continue;
        }
        if rule.conditions.iter().all(|c| c.matches(data.args[usize::from(c.arg)])) {
            return action_value(rule.action);
        }
    }
    action_value(policy.default)
}
