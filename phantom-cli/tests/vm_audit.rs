//! `phantom audit` end to end, in the VM tier (`cargo xtask vm-test`: a
//! kernel with BPF-LSM, `PHANTOM_VM=1`, root): a policy's LSM programs are
//! loaded and pinned where a loaded bundle's go
//! (`/sys/fs/bpf/phantom/<hash>/lsm`), a child in the policy's cgroup is
//! refused, and the `phantom` binary prints the record, as JSON and for
//! people. Behind the `vm-tests` feature, like phantom-user's vm_lsm.rs.

#![cfg(feature = "vm-tests")]

use phantom_ebpf::lsm;
use phantom_user::lsm::LoadedLsm;
use std::path::{Path, PathBuf};
use std::process::Command;

const POLICY_PATH: &str = "policies/vm-audit.yaml";

fn in_vm() {
    assert_eq!(
        std::env::var("PHANTOM_VM").as_deref(),
        Ok("1"),
        "this is the VM test tier: run it with `cargo xtask vm-test`"
    );
}

fn cgroup2_root() -> PathBuf {
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if Path::new(root).join("cgroup.subtree_control").exists() {
            return root.into();
        }
    }
    panic!("no cgroup v2 hierarchy");
}

/// `bpf(BPF_MAP_CREATE)` in a forked child that joined `cgroup`: its pid
/// and errno (0: created).
fn bpf_in_cgroup(cgroup: &Path) -> (u32, i32) {
    let procs = cgroup.join("cgroup.procs");
    // SAFETY: the child only writes a file, makes one syscall and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        if std::fs::write(&procs, "0").is_err() {
            // SAFETY: ends the child.
            unsafe { libc::_exit(99) };
        }
        let attr = [2u32, 4, 8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        // SAFETY: BPF_MAP_CREATE reads size_of_val(&attr) bytes of a live buffer.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), std::mem::size_of_val(&attr)) };
        let code = if fd < 0 { std::io::Error::last_os_error().raw_os_error().unwrap_or(0) } else { 0 };
        // SAFETY: ends the child with the errno.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child status {status}");
    let code = libc::WEXITSTATUS(status);
    assert_ne!(code, 99, "the child could not join {}", cgroup.display());
    (pid as u32, code)
}

fn phantom_audit(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_phantom")).arg("audit").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn phantom_audit_prints_the_records_of_pinned_lsm_programs() {
    in_vm();
    let (code, _, err) = phantom_audit(&[]);
    assert_eq!(code, 1, "nothing loaded yet: {err}");
    assert!(err.contains("nothing is loaded that records denials"), "{err}");

    let text = "profile: vm-audit\nkernel:\n  bpf: deny\n  ptrace: allow\n  signals: allow\n  raw_sockets: allow\n  user_namespaces: allow\n";
    let c = phantom_dsl::compile_str(POLICY_PATH, text);
    assert!(!c.has_errors(), "{:#?}", c.diagnostics);
    let progs = lsm::compile(&c.policy.unwrap(), &lsm::Options::default().source(POLICY_PATH, text)).unwrap();
    let mut loaded = LoadedLsm::load(&progs).unwrap_or_else(|e| panic!("load: {e}"));
    phantom_user::loader::ensure_bpffs().unwrap_or_else(|e| panic!("bpffs: {e}"));
    let bundle = Path::new(phantom_user::loader::PIN_ROOT).join(format!("vmaudit{:09}", std::process::id()));
    let pin = bundle.join("lsm");
    loaded.pin(&pin, &[POLICY_PATH.to_string()]).unwrap_or_else(|e| panic!("pin: {e}"));
    let cgroup = cgroup2_root().join(format!("phantom-vm-audit-{}", std::process::id()));
    std::fs::create_dir(&cgroup).unwrap();
    loaded.attach(&cgroup).unwrap_or_else(|e| panic!("attach: {e}"));

    let (pid, errno) = bpf_in_cgroup(&cgroup);
    assert_eq!(errno, libc::EPERM, "bpf(2) is refused in the cgroup");
    let (code, out, err) = phantom_audit(&["--json"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(events.len(), 1, "{out}");
    let e = &events[0];
    assert_eq!(e["hook"], "bpf");
    assert_eq!(e["verdict"], "deny");
    assert_eq!(e["layer"], "bpf-lsm");
    assert_eq!(e["pid"], pid);
    assert_eq!(e["policy"], format!("{POLICY_PATH}:3"), "`bpf: deny` is line 3");

    // Records are consumed: the next denial is the only one printed.
    let (pid2, _) = bpf_in_cgroup(&cgroup);
    let (code, out, err) = phantom_audit(&["--pin", pin.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("deny bpf-lsm bpf pid "), "{out}");
    assert!(out.contains(&format!("pid {pid2} ")), "{out}");
    assert!(out.contains(&format!("policy {POLICY_PATH}:3")), "{out}");

    loaded.detach_all();
    drop(loaded);
    std::fs::remove_dir_all(&bundle).unwrap_or_else(|e| panic!("rm {}: {e}", bundle.display()));
    std::fs::remove_dir(&cgroup).unwrap();
}
