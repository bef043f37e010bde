//! The seccomp backend: [`SeccompPolicy`] -> a classic BPF filter for one
//! architecture.
//!
//! Filter shape (x86_64 without `allow_x32`):
//!
//! ```text
//!   A = arch; if A != AUDIT_ARCH_X86_64 goto kill
//!   A = nr;   if A >= 0x40000000: (if A == 0xffffffff return default) kill
//!   balanced tree of `jge` over number ranges -> return action
//!                                             |  argument checks of the
//!                                                syscall's rules -> return
//! ```
//!
//! * Foreign architectures (i386 on x86_64, arm on aarch64, ...) get
//!   `KILL_PROCESS`.
//! * x32 on x86_64: when `allow_x32` is false, every number `>=
//!   0x40000000` (`__X32_SYSCALL_BIT` set, or bit 31) gets `KILL_PROCESS`,
//!   except
//!   `0xffffffff` (-1, which a tracer uses to skip a syscall; the kernel
//!   answers it with ENOSYS), which gets the default action. This is exactly
//!   what libseccomp 2.5 emits for a context holding only x86_64: it treats
//!   x32 as another architecture and answers it with the "bad arch" action,
//!   which Phantom sets to `KILL_PROCESS` (checked by the differential test
//!   against libseccomp). When `allow_x32` is true, the rules are also
//!   compiled for the x32 numbers of the same syscall names (from the x32
//!   table, bit 30 included), in the same tree.
//! * The tree ([`tree`]) splits the number line into ranges with one
//!   decision each; gaps take the default action. Its shape is planned
//!   against per-range depth budgets: a syscall without argument conditions
//!   is decided within 12 instructions (prologue, comparisons, return).
//!   Within the budgets the tree is as shallow as the search finds, then
//!   cheapest on syscalls.
//! * A syscall with conditional rules gets its own leaf: the rules in order
//!   (adjacent rules with the same action merged), then the syscall's
//!   unconditional action or the default ([`codegen`]). Inside a merged
//!   group, single tests (`==`, `!=`, ordered) on one argument become one
//!   set test: the high word is dispatched once, then the low word tests
//!   single values first (highest first, as libseccomp orders `==` tests)
//!   and the remaining ranges with a small search.
//! * The target: `<= 12` instructions for any decision on a syscall
//!   without argument conditions, and never more than libseccomp for the
//!   same input; `tests/seccomp_libseccomp.rs` checks both on every input of
//!   its matrix for the example policies and Docker's profile.
//!
//! Everything is deterministic: the same policy gives the same bytes.

mod asm;
mod codegen;
pub mod disasm;
pub mod insn;
pub mod interp;
pub mod reference;
mod tree;

pub use insn::Insn;
pub use interp::{Outcome, SeccompData};

use phantom_dsl::ir::SeccompPolicy;
use phantom_dsl::syscalls::Arch;
use phantom_dsl::values::Action;

/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_AARCH64`.
pub const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// `AUDIT_ARCH_I386`.
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `AUDIT_ARCH_ARM`.
pub const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
/// `__X32_SYSCALL_BIT`.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The kernel's limit on filter length (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// `SECCOMP_RET_*` values.
pub mod ret {
    pub const KILL_PROCESS: u32 = 0x8000_0000;
    pub const KILL_THREAD: u32 = 0x0000_0000;
    pub const TRAP: u32 = 0x0003_0000;
    pub const ERRNO: u32 = 0x0005_0000;
    pub const USER_NOTIF: u32 = 0x7fc0_0000;
    pub const LOG: u32 = 0x7ffc_0000;
    pub const ALLOW: u32 = 0x7fff_0000;
    /// `SECCOMP_RET_ACTION_FULL`: the action part of a return value.
    pub const ACTION_FULL: u32 = 0xffff_0000;
    /// `SECCOMP_RET_DATA`: the data part (errno).
    pub const DATA: u32 = 0x0000_ffff;
}

/// The filter return value for `action`.
pub fn action_value(action: Action) -> u32 {
    match action {
        Action::Allow => ret::ALLOW,
        Action::Errno(e) => ret::ERRNO | u32::from(e),
        Action::KillProcess => ret::KILL_PROCESS,
        Action::KillThread => ret::KILL_THREAD,
        Action::Trap => ret::TRAP,
        Action::Log => ret::LOG,
        Action::Notify => ret::USER_NOTIF,
    }
}

/// The `AUDIT_ARCH_*` value of a policy architecture, `None` for the ones a
/// filter is not compiled for.
pub fn audit_arch(arch: Arch) -> Option<u32> {
    match arch {
        Arch::X86_64 => Some(AUDIT_ARCH_X86_64),
        Arch::Aarch64 => Some(AUDIT_ARCH_AARCH64),
        Arch::I386 | Arch::X32 => None,
    }
}

/// Why a filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp filters are compiled for x86_64 and aarch64, not {}", arch.name())]
    UnsupportedArch { arch: Arch },
    #[error("the policy has no seccomp section, so there is no filter to compile")]
    NotEnabled,
    #[error("rule for `{syscall}` (line {line}) tests arg{arg}; syscalls have arguments arg0 to arg5")]
    BadArgument { syscall: String, line: u32, arg: u8 },
    #[error("the filter has {len} instructions; the kernel accepts at most {MAX_INSNS}")]
    TooLarge { len: usize },
    #[error("internal error in the seccomp code generator: {0}")]
    Internal(String),
}

/// A compiled filter: the instructions and, per instruction, the policy line
/// it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub arch: Arch,
    pub insns: Vec<Insn>,
    /// Same length as `insns`.
    pub lines: Vec<Option<u32>>,
}

impl Filter {
    /// The `struct sock_filter` array, 8 bytes per instruction.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.insns.iter().flat_map(|i| i.to_bytes()).collect()
    }

    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// A readable listing, one instruction per line, with policy lines.
    pub fn disassemble(&self) -> String {
        disasm::disassemble(&self.insns, &self.lines)
    }

    /// Runs the filter on one input (see [`interp`]).
    pub fn run(&self, data: &SeccompData) -> Result<Outcome, interp::InterpError> {
        interp::run(&self.insns, data)
    }
}

/// Compiles the seccomp part of a policy for `arch` (x86_64 or aarch64).
pub fn compile(policy: &SeccompPolicy, arch: Arch) -> Result<Filter, SeccompError> {
    if !policy.enabled {
        return Err(SeccompError::NotEnabled);
    }
    let audit = audit_arch(arch).ok_or(SeccompError::UnsupportedArch { arch })?;
    let (insns, lines) = codegen::generate(policy, arch, audit)?.assemble()?;
    if insns.len() > MAX_INSNS {
        return Err(SeccompError::TooLarge { len: insns.len() });
    }
    Ok(Filter { arch, insns, lines })
}
