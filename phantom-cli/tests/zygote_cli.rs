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
    let _ = std::fs::remove_dir_all(&dir);
}
