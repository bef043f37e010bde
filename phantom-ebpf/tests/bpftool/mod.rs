//! bpftool, the libbpf-based oracle of the kernel tests: run it, fail
//! loudly if it is missing or refuses.

use std::process::Command;

/// bpftool's stdout; any failure panics with its whole output.
pub fn bpftool(args: &[&str]) -> String {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("bpftool must be installed for this test (Debian package bpftool): {e}"));
    assert!(
        out.status.success(),
        "bpftool {args:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
