//! Kernel switches that seccomp enforces. `io_uring: deny` refuses
//! `io_uring_setup`, `io_uring_enter` and `io_uring_register` with EPERM:
//! BPF-LSM's io_uring hooks cover only parts of it, and the three
//! syscalls are all of it.
//!
//! The switch is lowered into the policy's seccomp rules, so every backend
//! and oracle sees one rule list:
//! - a syscall the seccomp section names keeps its rule (an explicit allow
//!   of one is a contradiction the checker reports, P0201);
//! - a filter whose default already refuses (`errno`, `kill`, `trap`)
//!   needs nothing: the syscalls are not on its allow-list;
//! - without a seccomp section, the switch brings a filter that allows
//!   everything else (and, like every filter, kills foreign-architecture
//!   and x32 calls).
//!
//! `kernel_modules` needs no rule: a sandbox never holds CAP_SYS_MODULE in
//! the initial user namespace, so the kernel refuses module loading.

use crate::ir::{KernelPolicy, Origin, SeccompPolicy, SyscallRule, Toggle};
use crate::syscalls::{self, Arch};
use crate::values::Action;

/// The syscalls `io_uring: deny` refuses.
pub const IO_URING_SYSCALLS: [&str; 3] = ["io_uring_setup", "io_uring_enter", "io_uring_register"];
const EPERM: u16 = 1;

/// `seccomp` with the rules the kernel switches need.
pub(crate) fn lower(mut seccomp: SeccompPolicy, kernel: &KernelPolicy) -> SeccompPolicy {
    if kernel.io_uring != Toggle::Deny {
        return seccomp;
    }
    if !seccomp.enabled {
        seccomp.enabled = true;
        seccomp.default = Action::Allow;
    }
    if !matches!(seccomp.default, Action::Allow | Action::Log) {
        return seccomp;
    }
    for name in IO_URING_SYSCALLS {
        if seccomp.rules.iter().any(|r| r.name == name) {
            continue;
        }
        let numbers: Vec<(Arch, u32)> =
            Arch::POLICY_ARCHES.iter().filter_map(|a| syscalls::number(*a, name).map(|nr| (*a, nr))).collect();
        seccomp.rules.push(SyscallRule {
            name: name.to_string(),
            numbers,
            action: Action::Errno(EPERM),
            conditions: Vec::new(),
            origin: Origin::NONE,
        });
    }
    seccomp
}
