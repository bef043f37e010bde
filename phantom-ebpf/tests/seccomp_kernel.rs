//! Real kernel: filters are installed in forked children only (never in the
//! test process), which report through their exit status.

use phantom_dsl::syscalls::Arch;
use phantom_ebpf::seccomp::{compile, Filter};

const POLICY: &str = "\
profile: kernel-test
security:
  seccomp:
    default: allow
    kill: [getpgid]
    rules:
      - syscall: getcwd
        action: errno EACCES
      - syscall: umask
        action: errno EPERM
        when: arg0 == 0x1ff
";

fn host_arch() -> Arch {
    if cfg!(target_arch = "x86_64") {
        Arch::X86_64
    } else if cfg!(target_arch = "aarch64") {
        Arch::Aarch64
    } else {
        panic!("seccomp kernel tests run on x86_64 or aarch64 hosts")
    }
}

fn filter() -> Filter {
    let c = phantom_dsl::compile_str("kernel-test.yaml", POLICY);
    let policy = c.policy.unwrap_or_else(|| panic!("test policy does not compile: {:?}", c.diagnostics));
    compile(&policy.seccomp, host_arch()).expect("filter")
}

/// How a child ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Exit(i32),
    Signal(i32),
}

/// Forks; the child installs `filter`, runs `body` and exits with its
/// result. `body` must only make raw syscalls (no allocation, no locks).
fn in_child(filter: &Filter, body: fn() -> i32) -> End {
    let insns: Vec<libc::sock_filter> =
        filter.insns.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect();
    let prog = libc::sock_fprog { len: insns.len() as u16, filter: insns.as_ptr() as *mut libc::sock_filter };
    // SAFETY: fork has no memory preconditions; the child only makes raw
    // syscalls on memory prepared before the fork, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: prctl/syscall with valid arguments; `prog` and the
        // instructions it points to live until _exit.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                libc::_exit(101);
            }
            let rc =
                libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog as *const libc::sock_fprog);
            if rc != 0 {
                libc::_exit(102);
            }
            libc::_exit(body());
        }
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFSIGNALED(status) {
        End::Signal(libc::WTERMSIG(status))
    } else {
        End::Exit(libc::WEXITSTATUS(status))
    }
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

#[test]
fn allowed_syscall_runs() {
    let end = in_child(&filter(), || {
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
        if ppid > 0 {
            0
        } else {
            1
        }
    });
    assert_eq!(end, End::Exit(0));
}

#[test]
fn denied_syscall_fails_with_the_configured_errno() {
    let end = in_child(&filter(), || {
        let mut buf = [0u8; 64];
        // SAFETY: buf is valid for 64 bytes.
        let rc = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
        if rc == -1 && errno() == libc::EACCES {
            0
        } else {
            1
        }
    });
    assert_eq!(end, End::Exit(0));
}

#[test]
fn kill_action_kills_with_sigsys() {
    let end = in_child(&filter(), || {
        // SAFETY: getpgid(0) has no preconditions.
        unsafe { libc::syscall(libc::SYS_getpgid, 0) };
        0
    });
    assert_eq!(end, End::Signal(libc::SIGSYS));
}

#[test]
fn conditional_rule_depends_on_the_argument() {
    let end = in_child(&filter(), || {
        // SAFETY: umask has no memory arguments.
        let denied = unsafe { libc::syscall(libc::SYS_umask, 0x1ffu64) };
        if denied != -1 || errno() != libc::EPERM {
            return 1;
        }
        // SAFETY: as above.
        let allowed = unsafe { libc::syscall(libc::SYS_umask, 0o22u64) };
        if allowed < 0 {
            return 2;
        }
        // The high half differs: not equal, so allowed.
        // SAFETY: as above.
        let high = unsafe { libc::syscall(libc::SYS_umask, 0x1_0000_01ffu64) };
        if high < 0 {
            return 3;
        }
        0
    });
    assert_eq!(end, End::Exit(0));
}

#[test]
fn foreign_arch_and_x32_are_killed_in_the_interpreter() {
    use phantom_ebpf::seccomp::{ret, SeccompData, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};
    let f =
        compile(&phantom_dsl::compile_str("kernel-test.yaml", POLICY).policy.unwrap().seccomp, Arch::X86_64).unwrap();
    assert_eq!(f.run(&SeccompData::new(AUDIT_ARCH_I386, 20, [0; 6])).unwrap().ret, ret::KILL_PROCESS);
    assert_eq!(
        f.run(&SeccompData::new(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 39, [0; 6])).unwrap().ret,
        ret::KILL_PROCESS
    );
    assert_eq!(f.run(&SeccompData::new(AUDIT_ARCH_X86_64, u32::MAX, [0; 6])).unwrap().ret, ret::ALLOW);
}
