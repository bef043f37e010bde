//! `phantom audit` reads the denial records of cgroup-BPF programs that
//! `phantom load` pinned (root, host tier): a child in a cgroup with the
//! pinned programs attached is refused a connect, and the record shows up
//! as a JSON line naming the layer, the program and the address. Loopback
//! only; the cgroup, the pins and the scratch directory are removed.

use phantom_user::loader::{self, BundleRef};
use std::net::TcpListener;
use std::process::Command;

fn phantom(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phantom")).args(args).output().unwrap()
}

#[test]
fn audit_prints_the_records_of_pinned_cgroup_programs() {
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, d) = (allowed.local_addr().unwrap(), denied.local_addr().unwrap());
    let dir = std::env::temp_dir().join(format!("phantom-audit-cg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("audit-cg.yaml");
    std::fs::write(
        &policy,
        format!(
            "profile: audit-cg-{}\nnetwork:\n  mode: allowlist\n  egress:\n    - to: 127.0.0.1\n      ports: {}\n      protocol: tcp\n",
            std::process::id(),
            a.port()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_phantom-policy"))
        .args(["compile", policy.to_str().unwrap(), "-o"])
        .arg(dir.join("bundle"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bundle = dir.join("bundle");
    let load = phantom(&["load", bundle.to_str().unwrap()]);
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    let hash = BundleRef::Dir(bundle.clone()).hash().unwrap();

    let cg = loader::cgroup2_mount()
        .expect("a cgroup v2 hierarchy")
        .join(format!("phantom-audit-cg-{}", std::process::id()));
    std::fs::create_dir(&cg).unwrap();
    let attachment = loader::attach_pinned(&hash, &cg).unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: the child only writes its pid, connects and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string()).is_ok()
            && std::net::TcpStream::connect(d).err().and_then(|e| e.raw_os_error()) == Some(libc::EPERM);
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(status, 0, "the child could not join the cgroup or was not refused with EPERM");

    let audit = phantom(&["audit", "--json"]);
    let text = String::from_utf8_lossy(&audit.stdout).into_owned();
    attachment.detach().unwrap();
    let _ = std::fs::remove_dir(&cg);
    let unload = phantom(&["unload", &hash]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
    assert!(unload.status.success(), "{}", String::from_utf8_lossy(&unload.stderr));
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let want = format!("127.0.0.1:{}", d.port());
    let hit = records.iter().find(|r| r["object"].as_str() == Some(want.as_str()));
    let r = hit.unwrap_or_else(|| panic!("no record for {want} in:\n{text}"));
    assert_eq!(r["layer"], "cgroup-bpf", "{r}");
    assert_eq!(r["hook"], "cgroup/connect4", "{r}");
    assert_eq!(r["verdict"], "deny", "{r}");
    assert!(!loader::pin_dir(&hash).exists(), "unload removed the pins");
}
