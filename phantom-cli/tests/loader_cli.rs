//! `phantom load | status | unload` end to end (root, bpffs): a policy file
//! is compiled into the cache and pinned, a second load reuses the pins,
//! status lists the bundle, unload removes the pin directory, and every
//! failure exits with 1 and a message. Nothing skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A scratch directory (policy file and bundle cache), removed on drop,
/// after unloading the bundle if a failed assertion left it loaded.
struct Scratch {
    dir: PathBuf,
    hash: Option<String>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(h) = &self.hash {
            if Path::new("/sys/fs/bpf/phantom").join(h).exists() {
                let _ = phantom(self, &["unload", h]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn phantom(s: &Scratch, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phantom"))
        .current_dir(repo())
        .env("PHANTOM_CACHE_DIR", s.dir.join("cache"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

#[test]
fn load_status_unload_a_policy_file() {
    let dir = std::env::temp_dir().join(format!("phantom-load-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut s = Scratch { dir, hash: None };
    // web-fetcher under another profile name: its own bundle hash, so that
    // other tests (and other runs of this one) never share its pins.
    let profile = format!("web-fetcher-cli-{}", std::process::id());
    let policy = std::fs::read_to_string(repo().join("policies/web-fetcher.yaml"))
        .unwrap()
        .replace("profile: web-fetcher\n", &format!("profile: {profile}\n"));
    let file = s.dir.join("web-fetcher-cli.yaml");
    std::fs::write(&file, policy).unwrap();
    let file = file.to_str().unwrap().to_string();

    let first = json(&phantom(&s, &["load", &file, "--json"]));
    let hash = first["hash"].as_str().unwrap().to_string();
    s.hash = Some(hash.clone());
    assert_eq!(first["reused"], false, "{first}");
    assert_eq!(first["profile"], profile.as_str());
    assert_eq!(first["programs"].as_array().unwrap().len(), 8, "{first}");
    let pin_dir = Path::new("/sys/fs/bpf/phantom").join(&hash);
    assert!(pin_dir.is_dir());
    assert!(s.dir.join("cache").join(format!("{profile}-{hash}")).join("manifest.json").is_file());

    let second = phantom(&s, &["load", &file]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(out.contains("already loaded") && out.contains(&hash), "{}", text(&second));

    let status = json(&phantom(&s, &["status", "--json"]));
    let mine = status.as_array().unwrap().iter().find(|b| b["hash"] == hash.as_str());
    let mine = mine.unwrap_or_else(|| panic!("status lists {hash}: {status}"));
    assert_eq!(mine["profile"], profile.as_str());
    let human = phantom(&s, &["status"]);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains(&format!("{hash} {profile}: 8 programs")),
        "{}",
        text(&human)
    );

    let unloaded = phantom(&s, &["unload", &hash]);
    assert_eq!(unloaded.status.code(), Some(0), "{}", text(&unloaded));
    assert!(!pin_dir.exists(), "{} is gone after unload", pin_dir.display());

    let again = phantom(&s, &["unload", &file]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is loaded"), "{}", text(&again));
    let bad = phantom(&s, &["unload", "not-a-bundle"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    let missing = phantom(&s, &["load", "/nonexistent/policy.yaml"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"), "{}", text(&missing));

    let help = phantom(&s, &["load", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("phantom load policies/web-fetcher.yaml"));
}
