//! Policy lines of the kernel switches. `KernelPolicy` carries no origins
//! in the IR, so the kernel-hook programs find their line in the policy
//! text: the `<switch>:` key inside a `kernel:` block, else the `level:`
//! line (the switch then has its level default). A plain line scan, enough
//! for the block style the formatter writes; flow-style `kernel: {...}`
//! maps fall back to the `level:` line.

use super::Switch;
use crate::bpf::SourceLoc;
use std::collections::BTreeMap;

const SWITCHES: [Switch; 7] = [
    Switch::Ptrace,
    Switch::Mount,
    Switch::Bpf,
    Switch::UserNamespaces,
    Switch::Signals,
    Switch::RawSockets,
    Switch::UnixSockets,
];

/// `(indent, key)` of a `key:` line, without comments and blank lines.
fn key_of(line: &str) -> Option<(usize, &str)> {
    let body = line.split('#').next().unwrap_or("");
    let trimmed = body.trim_start();
    let indent = body.len() - trimmed.len();
    let (key, _) = trimmed.split_once(':')?;
    let key = key.trim();
    (!key.is_empty() && !key.contains(' ')).then_some((indent, key))
}

/// The positions of the switches in `text` (file `file`).
pub fn toggle_locs(file: &str, text: &str) -> BTreeMap<Switch, SourceLoc> {
    let mut out = BTreeMap::new();
    let mut level = None;
    let mut kernel_indent: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let Some((indent, key)) = key_of(line) else { continue };
        let loc = SourceLoc::new(file, n as u32 + 1, indent as u32 + 1);
        if kernel_indent.is_some_and(|k| indent <= k) {
            kernel_indent = None;
        }
        match (kernel_indent, key) {
            (None, "kernel") => kernel_indent = Some(indent),
            (None, "level") => level = Some(loc),
            (Some(_), k) => {
                if let Some(s) = SWITCHES.iter().find(|s| s.key() == k) {
                    out.insert(*s, loc);
                }
            }
            _ => {}
        }
    }
    if let Some(level) = level {
        // `unix_sockets` has no level default.
        for s in SWITCHES.into_iter().filter(|s| *s != Switch::UnixSockets) {
            out.entry(s).or_insert_with(|| level.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_kernel_keys_and_falls_back_to_level() {
        let text = "security:\n  level: high\n  kernel:\n    mount: deny  # no\n    ptrace: deny\nfiles: x\n";
        let locs = toggle_locs("p.yaml", text);
        assert_eq!(locs[&Switch::Mount], SourceLoc::new("p.yaml", 4, 5));
        assert_eq!(locs[&Switch::Bpf], SourceLoc::new("p.yaml", 2, 3));
        assert_eq!(locs[&Switch::UserNamespaces], SourceLoc::new("p.yaml", 2, 3));
    }

    #[test]
    fn nothing_without_kernel_or_level() {
        assert!(toggle_locs("p.yaml", "version: 1\n").is_empty());
    }
}
