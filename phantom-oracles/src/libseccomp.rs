//! libseccomp 2.5 (Debian's libseccomp2) through raw FFI: the filter
//! libseccomp builds for a [`SeccompPolicy`] with its binary-tree
//! optimisation, exported as the `struct sock_filter` array it would load.
//!
//! Rules are added by name, with libseccomp's own syscall table and action
//! encoding, so nothing here is shared with the filter under test.

use phantom_dsl::ir::SeccompPolicy;
use phantom_dsl::syscalls::Arch;
use phantom_dsl::values::{Action, CmpOp};
use std::ffi::{c_int, c_uint, CStr, CString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Why libseccomp could not build or export a filter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the libseccomp oracle builds filters for x86_64 and aarch64, not {arch}")]
    UnsupportedArch { arch: &'static str },
    #[error("seccomp_init returned no context")]
    Init,
    #[error("{call} failed: {source}")]
    Call {
        call: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("syscall name {name:?} contains a NUL byte")]
    BadName { name: String },
    #[error("libseccomp does not know the syscall `{name}`")]
    UnknownSyscall { name: String },
    #[error("seccomp_rule_add_array for `{syscall}` failed: {source}")]
    AddRule {
        syscall: String,
        #[source]
        source: io::Error,
    },
    #[error("reading the exported filter back: {0}")]
    Export(#[from] io::Error),
    #[error("libseccomp exported {len} bytes, not a whole number of 8-byte instructions")]
    Truncated { len: usize },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The declarations of `<seccomp.h>` that the oracle uses. The library is
/// linked by build.rs.
mod sys {
    use std::ffi::{c_char, c_int, c_uint, c_void};

    /// `struct scmp_arg_cmp`.
    #[repr(C)]
    #[derive(Debug)]
    pub struct ScmpArgCmp {
        pub arg: c_uint,
        /// `enum scmp_compare`.
        pub op: c_int,
        pub datum_a: u64,
        pub datum_b: u64,
    }

    /// `struct scmp_version`.
    #[repr(C)]
    #[derive(Debug)]
    pub struct ScmpVersion {
        pub major: c_uint,
        pub minor: c_uint,
        pub micro: c_uint,
    }

    // `enum scmp_filter_attr`.
    pub const SCMP_FLTATR_ACT_BADARCH: c_int = 2;
    pub const SCMP_FLTATR_CTL_OPTIMIZE: c_int = 8;
    pub const SCMP_ARCH_NATIVE: u32 = 0;
    pub const SCMP_ARCH_X86_64: u32 = 0xc000_003e;
    pub const SCMP_ARCH_AARCH64: u32 = 0xc000_00b7;

    // `enum scmp_compare`.
    pub const SCMP_CMP_NE: c_int = 1;
    pub const SCMP_CMP_LT: c_int = 2;
    pub const SCMP_CMP_LE: c_int = 3;
    pub const SCMP_CMP_EQ: c_int = 4;
    pub const SCMP_CMP_GE: c_int = 5;
    pub const SCMP_CMP_GT: c_int = 6;
    pub const SCMP_CMP_MASKED_EQ: c_int = 7;

    // `SCMP_ACT_*`.
    pub const SCMP_ACT_KILL_PROCESS: u32 = 0x8000_0000;
    pub const SCMP_ACT_KILL_THREAD: u32 = 0x0000_0000;
    pub const SCMP_ACT_TRAP: u32 = 0x0003_0000;
    pub const SCMP_ACT_NOTIFY: u32 = 0x7fc0_0000;
    pub const SCMP_ACT_ERRNO: u32 = 0x0005_0000;
    pub const SCMP_ACT_LOG: u32 = 0x7ffc_0000;
    pub const SCMP_ACT_ALLOW: u32 = 0x7fff_0000;

    extern "C" {
        pub fn seccomp_version() -> *const ScmpVersion;
        pub fn seccomp_init(def_action: u32) -> *mut c_void;
        pub fn seccomp_release(ctx: *mut c_void);
        pub fn seccomp_attr_set(ctx: *mut c_void, attr: c_int, value: u32) -> c_int;
        pub fn seccomp_arch_add(ctx: *mut c_void, arch_token: u32) -> c_int;
        pub fn seccomp_arch_remove(ctx: *mut c_void, arch_token: u32) -> c_int;
        pub fn seccomp_syscall_resolve_name(name: *const c_char) -> c_int;
        pub fn seccomp_syscall_resolve_name_arch(arch_token: u32, name: *const c_char) -> c_int;
        pub fn seccomp_rule_add_array(
            ctx: *mut c_void,
            action: u32,
            syscall: c_int,
            arg_cnt: c_uint,
            arg_array: *const ScmpArgCmp,
        ) -> c_int;
        pub fn seccomp_export_bpf(ctx: *mut c_void, fd: c_int) -> c_int;
    }
}

/// The `SCMP_ACT_*` value of `action`.
pub fn action(action: Action) -> u32 {
    match action {
        Action::Allow => sys::SCMP_ACT_ALLOW,
        Action::Errno(e) => sys::SCMP_ACT_ERRNO | u32::from(e),
        Action::KillProcess => sys::SCMP_ACT_KILL_PROCESS,
        Action::KillThread => sys::SCMP_ACT_KILL_THREAD,
        Action::Trap => sys::SCMP_ACT_TRAP,
        Action::Log => sys::SCMP_ACT_LOG,
        Action::Notify => sys::SCMP_ACT_NOTIFY,
    }
}

/// libseccomp's token for `arch` (`SCMP_ARCH_*`, which is the
/// `AUDIT_ARCH_*` value).
pub fn arch_token(arch: Arch) -> Result<u32> {
    match arch {
        Arch::X86_64 => Ok(sys::SCMP_ARCH_X86_64),
        Arch::Aarch64 => Ok(sys::SCMP_ARCH_AARCH64),
        other => Err(Error::UnsupportedArch { arch: other.name() }),
    }
}

/// The version of the libseccomp in use, `(major, minor, micro)`.
pub fn version() -> (u32, u32, u32) {
    // SAFETY: seccomp_version takes no arguments and returns a pointer to
    // a static struct inside the library (never freed), or null.
    let v = unsafe { sys::seccomp_version() };
    if v.is_null() {
        return (0, 0, 0);
    }
    // SAFETY: v is non-null and points to libseccomp's static, initialised
    // struct scmp_version.
    let v = unsafe { &*v };
    (v.major, v.minor, v.micro)
}

/// The number libseccomp gives `name` on `arch`; `None` for a name it does
/// not know there (including its negative pseudo-numbers).
pub fn resolve(arch: Arch, name: &str) -> Option<u32> {
    let token = arch_token(arch).ok()?;
    let name = CString::new(name).ok()?;
    // SAFETY: name is a valid NUL-terminated string for the call.
    let nr = unsafe { sys::seccomp_syscall_resolve_name_arch(token, name.as_ptr()) };
    u32::try_from(nr).ok()
}

/// The rules libseccomp can express the same way: names it resolves to our
/// number on `arch`, actions other than the default (libseccomp refuses
/// those). Build both filters of a comparison from this policy.
pub fn common_subset(policy: &SeccompPolicy, arch: Arch) -> SeccompPolicy {
    let mut p = policy.clone();
    p.rules.retain(|r| {
        let Some(&(_, nr)) = r.numbers.iter().find(|n| n.0 == arch) else { return false };
        resolve(arch, &r.name) == Some(nr) && r.action != policy.default
    });
    p
}

/// Owns a libseccomp filter context.
struct Ctx(*mut std::ffi::c_void);

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: self.0 came from seccomp_init, is non-null (checked in
        // Ctx::new) and is released exactly once here.
        unsafe { sys::seccomp_release(self.0) }
    }
}

/// Turns libseccomp's `-errno` return convention into a result.
fn check(call: &'static str, rc: c_int) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Call { call, source: io::Error::from_raw_os_error(rc.saturating_neg()) })
    }
}

impl Ctx {
    /// A context for `arch` alone, with `default` as the default action,
    /// KILL_PROCESS for other architectures and the binary-tree
    /// optimisation.
    fn new(default: Action, arch: Arch) -> Result<Ctx> {
        let token = arch_token(arch)?;
        // SAFETY: seccomp_init has no preconditions; null is checked below.
        let ctx = Ctx(unsafe { sys::seccomp_init(action(default)) });
        if ctx.0.is_null() {
            return Err(Error::Init);
        }
        // SAFETY (each call below): ctx.0 is a live context from
        // seccomp_init; the arguments are plain integers.
        check("seccomp_attr_set(SCMP_FLTATR_ACT_BADARCH)", unsafe {
            sys::seccomp_attr_set(ctx.0, sys::SCMP_FLTATR_ACT_BADARCH, sys::SCMP_ACT_KILL_PROCESS)
        })?;
        // SAFETY: as above.
        check("seccomp_attr_set(SCMP_FLTATR_CTL_OPTIMIZE)", unsafe {
            sys::seccomp_attr_set(ctx.0, sys::SCMP_FLTATR_CTL_OPTIMIZE, 2)
        })?;
        if token != sys::SCMP_ARCH_X86_64 {
            // SAFETY: as above.
            check("seccomp_arch_add", unsafe { sys::seccomp_arch_add(ctx.0, token) })?;
            // SAFETY: as above.
            check("seccomp_arch_remove", unsafe { sys::seccomp_arch_remove(ctx.0, sys::SCMP_ARCH_NATIVE) })?;
        }
        Ok(ctx)
    }

    /// Adds one rule. Rules take native (x86_64) numbers, which libseccomp
    /// translates per architecture by name; names missing on x86_64
    /// resolve to its pseudo-numbers.
    fn add(&self, name: &str, act: Action, conditions: &[phantom_dsl::values::ArgCondition]) -> Result<()> {
        let cname = CString::new(name).map_err(|_| Error::BadName { name: name.to_string() })?;
        // SAFETY: cname is a valid NUL-terminated string for the call.
        let native = unsafe { sys::seccomp_syscall_resolve_name(cname.as_ptr()) };
        if native == -1 {
            return Err(Error::UnknownSyscall { name: name.to_string() });
        }
        let cmps: Vec<sys::ScmpArgCmp> = conditions
            .iter()
            .map(|c| {
                let (op, a, b) = match c.op {
                    CmpOp::Ne => (sys::SCMP_CMP_NE, c.value, 0),
                    CmpOp::Lt => (sys::SCMP_CMP_LT, c.value, 0),
                    CmpOp::Le => (sys::SCMP_CMP_LE, c.value, 0),
                    CmpOp::Eq => (sys::SCMP_CMP_EQ, c.value, 0),
                    CmpOp::Ge => (sys::SCMP_CMP_GE, c.value, 0),
                    CmpOp::Gt => (sys::SCMP_CMP_GT, c.value, 0),
                    CmpOp::MaskedEq { mask } => (sys::SCMP_CMP_MASKED_EQ, mask, c.value),
                };
                sys::ScmpArgCmp { arg: c_uint::from(c.arg), op, datum_a: a, datum_b: b }
            })
            .collect();
        let count = c_uint::try_from(cmps.len()).expect("at most a handful of conditions per rule");
        // SAFETY: self.0 is live; cmps holds `count` initialised structs
        // and outlives the call.
        let rc = unsafe { sys::seccomp_rule_add_array(self.0, action(act), native, count, cmps.as_ptr()) };
        check("seccomp_rule_add_array", rc).map_err(|e| match e {
            Error::Call { source, .. } => Error::AddRule { syscall: name.to_string(), source },
            e => e,
        })
    }

    /// `seccomp_export_bpf` into a memfd, read back.
    fn export(&self) -> Result<Vec<u8>> {
        const NAME: &CStr = c"phantom-libseccomp-export";
        // SAFETY: memfd_create with a valid name and flags; the result is
        // checked.
        let fd = unsafe { libc::memfd_create(NAME.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Export(io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: self.0 is live; file's descriptor is open for writing for
        // the whole call.
        check("seccomp_export_bpf", unsafe { sys::seccomp_export_bpf(self.0, file.as_raw_fd()) })?;
        file.seek(SeekFrom::Start(0))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        if bytes.len() % 8 != 0 {
            return Err(Error::Truncated { len: bytes.len() });
        }
        Ok(bytes)
    }
}

/// libseccomp's filter for `policy` on `arch` (binary-tree optimisation,
/// bad-arch action KILL_PROCESS), as the `struct sock_filter` array
/// `seccomp_export_bpf` writes. Every rule must be one libseccomp accepts:
/// pass [`common_subset`] of a policy, not the policy.
pub fn export_bpf(policy: &SeccompPolicy, arch: Arch) -> Result<Vec<u8>> {
    let ctx = Ctx::new(policy.default, arch)?;
    for r in &policy.rules {
        ctx.add(&r.name, r.action, &r.conditions)?;
    }
    ctx.export()
}

#[cfg(test)]
mod tests {
    use super::*;
    use phantom_dsl::ir::{Origin, SyscallRule};
    use phantom_dsl::values::ArgCondition;

    fn policy(rules: Vec<SyscallRule>) -> SeccompPolicy {
        SeccompPolicy {
            enabled: true,
            default: Action::Errno(1),
            default_origin: Origin::NONE,
            allow_x32: false,
            rules,
        }
    }

    fn rule(name: &str, action: Action, conditions: Vec<ArgCondition>) -> SyscallRule {
        let numbers = Arch::POLICY_ARCHES
            .iter()
            .filter_map(|&a| phantom_dsl::syscalls::number(a, name).map(|nr| (a, nr)))
            .collect();
        SyscallRule { name: name.into(), numbers, action, conditions, origin: Origin::NONE }
    }

    #[test]
    fn reports_a_2_5_library() {
        let (major, minor, _) = version();
        assert_eq!(major, 2, "libseccomp {major}.{minor}");
        assert!(minor >= 5, "libseccomp {major}.{minor}");
    }

    #[test]
    fn resolves_names_per_arch() {
        assert_eq!(resolve(Arch::X86_64, "getppid"), Some(110));
        assert_eq!(resolve(Arch::Aarch64, "getppid"), Some(173));
        assert_eq!(resolve(Arch::X86_64, "no_such_syscall"), None);
        assert_eq!(resolve(Arch::I386, "getppid"), None);
    }

    #[test]
    fn exports_whole_instructions_for_both_arches() {
        let p = policy(vec![
            rule("getppid", Action::Allow, vec![]),
            rule("umask", Action::Allow, vec![ArgCondition { arg: 0, op: CmpOp::Eq, value: 0o22 }]),
            rule("clone", Action::Allow, vec![ArgCondition { arg: 0, op: CmpOp::MaskedEq { mask: 0xff }, value: 0 }]),
        ]);
        for arch in Arch::POLICY_ARCHES {
            let bytes = export_bpf(&p, arch).unwrap();
            assert!(bytes.len() >= 8 * 8, "{}: {} bytes", arch.name(), bytes.len());
            let token = arch_token(arch).unwrap().to_le_bytes();
            // The first load is the arch, the first comparison against it.
            assert!(bytes.windows(4).any(|w| w == token), "{}: no arch check", arch.name());
        }
    }

    #[test]
    fn the_subset_drops_default_actions_and_unknown_names() {
        let mut p = policy(vec![rule("getppid", Action::Allow, vec![]), rule("getpid", Action::Errno(1), vec![])]);
        p.rules.push(SyscallRule {
            name: "not_a_syscall".into(),
            numbers: vec![(Arch::X86_64, 9999)],
            action: Action::Allow,
            conditions: vec![],
            origin: Origin::NONE,
        });
        let s = common_subset(&p, Arch::X86_64);
        assert_eq!(s.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["getppid"]);
        assert!(matches!(export_bpf(&p, Arch::X86_64), Err(Error::AddRule { .. } | Error::UnknownSyscall { .. })));
    }

    #[test]
    fn other_arches_are_errors() {
        assert!(matches!(export_bpf(&policy(vec![]), Arch::I386), Err(Error::UnsupportedArch { arch: "i386" })));
    }
}
