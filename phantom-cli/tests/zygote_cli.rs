//! `phantom run` through a resident zygote (root): the first run starts it,
//! a warm run finds it from the policy file's bytes without compiling and
//! still gets the policy's wall time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn phantom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phantom")).args(args).output().unwrap()
}

/// Stops the zygote serving `policy` (started by `phantom run`, which names
/// the policy's absolute path on its command line) when dropped.
struct Zygote(PathBuf);

impl Drop for Zygote {
    fn drop(&mut self) {
        let needle = format!("serve\0--policy\0{}\0", self.0.display());
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if cmdline.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                // SAFETY: SIGTERM to the zygote this test started: it stops
                // and removes what it made.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
    }
}

fn policy(dir: &Path) -> PathBuf {
    let p = dir.join("zygote.yaml");
    // The directory's name makes the file (and so its zygote) this test's own.
    let text = format!(
        "# {}\nprofile: zygote-cli\nsecurity:\n  level: low\nnetwork:\n  mode: none\nresources:\n  wall_time: 1s\nperformance:\n  zygote: true\n",
        dir.display()
    );
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn warm_runs_go_through_the_zygote_with_the_policy_wall_time() {
    let dir = std::env::temp_dir().join(format!("phantom-zygote-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = policy(&dir);
    let _zygote = Zygote(p.clone());
    let ps = p.to_str().unwrap();

    let cold = phantom(&["run", "-q", "--policy", ps, "--", "sh", "-c", "echo cold; exit 3"]);
    assert_eq!(cold.status.code(), Some(3), "{}", String::from_utf8_lossy(&cold.stderr));
    assert_eq!(String::from_utf8_lossy(&cold.stdout), "cold\n");

    let warm = phantom(&["run", "--json", "--policy", ps, "--", "sh", "-c", "echo warm"]);
    assert!(warm.status.success(), "{}", String::from_utf8_lossy(&warm.stderr));
    let r: serde_json::Value = serde_json::from_slice(&warm.stdout).unwrap();
    assert_eq!(r["stdout"], "warm\n");
    // No "spawning directly" note: it went through the zygote.
    assert!(warm.stderr.is_empty(), "{}", String::from_utf8_lossy(&warm.stderr));

    // No --timeout: the zygote applies the policy's wall time (1s).
    let slow = phantom(&["run", "-q", "--policy", ps, "--", "sleep", "60"]);
    assert_eq!(slow.status.code(), Some(124), "{}", String::from_utf8_lossy(&slow.stderr));

    // A command the sandbox cannot start: the zygote's error is the answer,
    // said once, with no second attempt without the zygote.
    let missing = phantom(&["run", "--policy", ps, "--", "/usr/bin/phantom-no-such-command"]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(125), "{err}");
    assert_eq!(
        err.trim_end(),
        "phantom: the sandbox could not start: exec: /usr/bin/phantom-no-such-command: No such file or directory (os error 2)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `phantom reload` after editing the policy file: the zygote serves the
/// edited policy, its running sandbox is moved to the new cgroup-BPF
/// programs without a gap, and later runs of the edited file find the
/// same zygote (its socket moved to the edited file's key).
#[test]
fn reload_moves_a_running_sandbox_and_later_runs_to_the_edited_policy() {
    let dir = std::env::temp_dir().join(format!("phantom-reload-cli-{}", std::process::id()));
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::set_permissions(&ws, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let p = dir.join("reload.yaml");
    // /dev/zero (1:5) is writable under neither version, /dev/urandom
    // (1:9) under the edited one only.
    let version = |urandom: &str| {
        format!(
            "# {}\nprofile: reload-cli\nsecurity:\n  level: low\nnetwork:\n  mode: none\ndevices:\n  allow:\n    - {{type: char, major: 1, minor: 9, access: [{urandom}]}}\n    - {{type: char, major: 1, minor: 5, access: [read]}}\nresources:\n  wall_time: 60s\nperformance:\n  zygote: true\n",
            dir.display()
        )
    };
    std::fs::write(&p, version("read")).unwrap();
    let _zygote = Zygote(p.clone());
    let ps = p.to_str().unwrap();
    let first = phantom(&["run", "-q", "--policy", ps, "--", "true"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));

    // Shared with the other crate's update test: tests/data/README.md.
    let script = include_str!("../../tests/data/device_update_probe.py");
    let running = Command::new(env!("CARGO_BIN_EXE_phantom"))
        .args(["run", "--json", "--workspace", ws.to_str().unwrap(), "--policy", ps, "--", "python3", "-c", script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ws.join("ready").exists() {
        assert!(std::time::Instant::now() < deadline, "the sandbox never got ready");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }

    std::fs::write(&p, version("read, write")).unwrap();
    let reload = phantom(&["reload", "--json", "--policy", ps]);
    assert!(reload.status.success(), "{}", String::from_utf8_lossy(&reload.stderr));
    let updates: serde_json::Value = serde_json::from_slice(&reload.stdout).unwrap();
    let updates = updates.as_array().unwrap();
    assert_eq!(updates.len(), 1, "one zygote serves the file: {updates:#?}");
    let outcome = &updates[0]["result"]["Ok"];
    assert_eq!(outcome["outcome"], "updated", "{updates:#?}");
    assert!(outcome["running"]["sandboxes"].as_u64().unwrap() >= 1, "{updates:#?}");
    assert_eq!(outcome["running"]["errors"], serde_json::json!([]), "{updates:#?}");

    let out = running.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["stdout"], "v1 EPERM EPERM\nv2 ok EPERM\nleaks 0 tries many\n", "{r:#}");

    // The edited file's next run is warm: the same zygote, found by the
    // edited bytes, with the edited rules.
    let warm = phantom(&["run", "--json", "--policy", ps, "--", "sh", "-c", "echo x > /dev/urandom && echo written"]);
    assert!(warm.status.success(), "{}", String::from_utf8_lossy(&warm.stderr));
    assert!(warm.stderr.is_empty(), "went through the zygote: {}", String::from_utf8_lossy(&warm.stderr));
    let r: serde_json::Value = serde_json::from_slice(&warm.stdout).unwrap();
    assert_eq!(r["stdout"], "written\n", "{r:#}");

    // A policy with errors changes nothing and says so.
    std::fs::write(&p, "profile: reload-cli\nnetwork:\n  mode: sometimes\n").unwrap();
    let bad = phantom(&["reload", "--policy", ps]);
    assert_eq!(bad.status.code(), Some(1), "{}", String::from_utf8_lossy(&bad.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
