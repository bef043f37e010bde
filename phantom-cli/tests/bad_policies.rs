//! Snapshot tests of rendered diagnostics: every file in tests/policies/bad
//! must fail to compile, and its rendered diagnostics must equal the
//! `.stderr` file next to it. Bless new output with `PHANTOM_BLESS=1`.

use phantom_dsl::extends::FileLoader;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Resolves repo-relative names, so snapshots show stable relative paths.
struct RepoLoader(PathBuf);
impl FileLoader for RepoLoader {
    fn load(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(self.0.join(path))
    }
}

fn render(rel: &str) -> (String, bool) {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join(rel)).unwrap();
    let c = phantom_dsl::compile_source(rel, &text, &RepoLoader(root));
    let mut out = phantom_cli::render::render_all(&c.sources, &c.diagnostics);
    let plural = |n: usize, s: &str| format!("{n} {s}{}", if n == 1 { "" } else { "s" });
    out.push_str(&format!(
        "{}, {}\n",
        plural(c.diagnostics.error_count(), "error"),
        plural(c.diagnostics.warning_count(), "warning")
    ));
    (out, c.has_errors())
}

#[test]
fn bad_policies_fail_with_their_snapshot() {
    let root = repo_root();
    let dir = root.join("tests/policies/bad");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 40, "expected at least 40 bad policies, found {}", names.len());
    let bless = std::env::var_os("PHANTOM_BLESS").is_some();
    let mut failures = Vec::new();
    for name in &names {
        let rel = format!("tests/policies/bad/{name}");
        let (out, failed) = render(&rel);
        if !failed {
            failures.push(format!("{rel}: compiled without errors, but bad policies must fail"));
        }
        let snap = dir.join(name.replace(".yaml", ".stderr"));
        if bless {
            std::fs::write(&snap, &out).unwrap();
            continue;
        }
        match std::fs::read_to_string(&snap) {
            Ok(expected) if expected == out => {}
            Ok(expected) => failures.push(format!(
                "{rel}: rendered diagnostics differ from {}\n--- expected\n{expected}\n--- actual\n{out}",
                snap.display()
            )),
            Err(_) => failures.push(format!("{rel}: no snapshot {} (run with PHANTOM_BLESS=1)\n{out}", snap.display())),
        }
    }
    assert!(failures.is_empty(), "{} of {} bad policies failed:\n{}", failures.len(), names.len(), failures.join("\n"));
}

#[test]
fn every_diagnostic_code_in_snapshots_is_documented() {
    let root = repo_root();
    let doc = std::fs::read_to_string(root.join("docs/diagnostics.md")).unwrap_or_default();
    let mut missing = Vec::new();
    for e in std::fs::read_dir(root.join("tests/policies/bad")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "stderr") {
            let text = std::fs::read_to_string(&p).unwrap();
            for (i, _) in text.match_indices("[P0") {
                let code = &text[i + 1..i + 6];
                if !doc.contains(code) && !missing.contains(&code.to_string()) {
                    missing.push(code.to_string());
                }
            }
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "codes not in docs/diagnostics.md: {missing:?}");
}
