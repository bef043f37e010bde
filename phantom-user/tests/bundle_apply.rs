//! A compiled bundle applied by the runtime in forked children: Landlock and
//! seccomp from the bundle files, each witnessed by a denial with the
//! expected errno, with allowed actions still working.

mod common;

use common::{fork_child, in_child, ChildEnd};
use phantom_user::apply::apply_bundle;
use phantom_user::report::Enforcement;
use std::path::PathBuf;

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bundle(name: &str, policy: impl Fn(&str) -> String) -> (Scratch, PathBuf) {
    let root = std::env::temp_dir().join(format!("phantom-bundle-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("work")).unwrap();
    std::fs::write(root.join("work/in.txt"), "inside").unwrap();
    std::fs::write(root.join("outside.txt"), "outside").unwrap();
    let text = policy(&root.display().to_string());
    let c = phantom_dsl::compile_str("test.yaml", &text);
    let p = c.policy.unwrap_or_else(|| panic!("{:#?}", c.diagnostics.items));
    let b = phantom_ebpf::bundle::build(&p).unwrap();
    let dir = root.join("bundle");
    phantom_ebpf::bundle::write(&dir, &b).unwrap();
    (Scratch(root), dir)
}

fn errno_of(r: i64) -> i32 {
    if r == -1 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    }
}

#[test]
fn bundle_layers_deny_and_allow() {
    let (s, dir) = bundle("layers", |root| {
        format!(
            "profile: t\nrequire: [seccomp, landlock]\nsecurity:\n  seccomp:\n    default: allow\n    rules:\n      - syscall: uname\n        action: errno EACCES\n      - syscall: umask\n        action: errno ENOTSUP\n        when: [arg0 == 0o777]\n  landlock:\n    paths:\n      - path: {root}/work\n        access: read-write\n"
        )
    });
    let root = s.0.display().to_string();
    let code = in_child(|| {
        let report = apply_bundle(&dir).map_err(|e| e.to_string())?;
        let layers: Vec<(&str, Enforcement)> = report.layers.iter().map(|l| (l.layer, l.enforcement)).collect();
        if layers != [("landlock", Enforcement::Full), ("seccomp", Enforcement::Full)] {
            return Err(format!("report: {layers:?}"));
        }
        // seccomp: denied with the configured errno, allowed still works.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: `u` is a valid, writable utsname.
        let r = unsafe { libc::syscall(libc::SYS_uname, &mut u as *mut libc::utsname) };
        if errno_of(r) != libc::EACCES {
            return Err(format!("uname: expected EACCES, got r={r} errno={}", errno_of(r)));
        }
        // SAFETY: umask has no pointer arguments.
        let r = unsafe { libc::syscall(libc::SYS_umask, 0o777) };
        if errno_of(r) != libc::ENOTSUP {
            return Err(format!("umask(0777): expected ENOTSUP, got r={r}"));
        }
        // SAFETY: as above.
        let r = unsafe { libc::syscall(libc::SYS_umask, 0o022) };
        if r < 0 {
            return Err("umask(022) should be allowed".into());
        }
        // SAFETY: getppid has no arguments.
        if unsafe { libc::syscall(libc::SYS_getppid) } <= 0 {
            return Err("getppid failed".into());
        }
        // Landlock: inside readable and writable, outside denied.
        std::fs::read_to_string(format!("{root}/work/in.txt")).map_err(|e| format!("read inside: {e}"))?;
        std::fs::write(format!("{root}/work/new.txt"), "x").map_err(|e| format!("write inside: {e}"))?;
        match std::fs::read_to_string(format!("{root}/outside.txt")) {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => Ok(()),
            other => Err(format!("read outside: expected EACCES, got {other:?}")),
        }
    });
    assert_eq!(code, 0, "see the child's stderr");
}

#[test]
fn kill_action_kills_the_child() {
    let (_s, dir) =
        bundle("kill", |_| "profile: k\nsecurity:\n  seccomp:\n    default: allow\n    kill: [getpgid]\n".into());
    let end = fork_child(|| {
        apply_bundle(&dir).map_err(|e| e.to_string())?;
        // SAFETY: getpgid(0) has no pointer arguments.
        unsafe { libc::syscall(libc::SYS_getpgid, 0) };
        Err("still alive after a killed syscall".into())
    });
    assert_eq!(end, ChildEnd::Signaled(libc::SIGSYS));
}

#[test]
fn a_tampered_or_missing_bundle_is_refused() {
    let (_s, dir) =
        bundle("missing", |_| "profile: m\nsecurity:\n  seccomp:\n    default: allow\n    deny: [uname]\n".into());
    std::fs::remove_file(dir.join("seccomp-x86_64.bpf")).unwrap();
    std::fs::remove_file(dir.join("seccomp-aarch64.bpf")).unwrap();
    let code = in_child(|| match apply_bundle(&dir) {
        Err(e) if e.to_string().contains("seccomp-") => Ok(()),
        other => Err(format!("expected a read error, got {other:?}")),
    });
    assert_eq!(code, 0);
}

/// `kernel.io_uring: deny` (the default of level high) is enforced by
/// seccomp even without a seccomp section: io_uring_setup fails with EPERM
/// in the child, other syscalls work.
#[test]
fn io_uring_deny_refuses_io_uring_setup() {
    let (_s, dir) = bundle("io-uring", |_| "profile: u\nsecurity:\n  level: high\n".into());
    let code = in_child(|| {
        // Before: the kernel has io_uring (a refusal now means our filter).
        let mut params = [0u8; 120];
        // SAFETY: io_uring_setup(1, params) with a zeroed, writable 120-byte
        // struct io_uring_params; the fd is closed right away.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
        if fd < 0 {
            return Err(format!("io_uring_setup before the filter: errno {}", errno_of(fd)));
        }
        // SAFETY: closing the fd just made.
        unsafe { libc::close(fd as i32) };
        let report = apply_bundle(&dir).map_err(|e| e.to_string())?;
        if !report.layers.iter().any(|l| l.layer == "seccomp") {
            return Err(format!("no seccomp layer: {:?}", report.layers));
        }
        let mut params = [0u8; 120];
        // SAFETY: as above.
        let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
        if errno_of(r) != libc::EPERM {
            return Err(format!("io_uring_setup: expected EPERM, got r={r} errno={}", errno_of(r)));
        }
        // SAFETY: getppid has no arguments.
        if unsafe { libc::syscall(libc::SYS_getppid) } <= 0 {
            return Err("getppid failed".into());
        }
        Ok(())
    });
    assert_eq!(code, 0, "see the child's stderr");
}
