//! `phantom audit [--follow] [--json] [--pin DIR]`: prints the audit
//! records of loaded BPF-LSM programs from their pinned ring buffers
//! (`/sys/fs/bpf/phantom/<hash>/lsm/audit`) and of cgroup-BPF programs
//! pinned by `phantom load` (`<hash>/maps/phantom_audit`; layout in phantom-user's `lsm`
//! module; record format in docs/audit.md).
//!
//! A ring buffer has one consumer position: records printed here are
//! consumed, and two `phantom audit` processes split the stream.

use anyhow::{bail, Context, Result};
use phantom_ebpf::audit::{AuditRecord, Layer, NO_FILE, NO_RULE};
use phantom_ebpf::lsm::Hook;
use phantom_user::lsm::{AuditReader, PinnedInfo, AUDIT_PIN};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where loaded bundles are pinned.
pub const PIN_ROOT: &str = phantom_user::loader::PIN_ROOT;

/// The pin directories (`<root>/<hash>/lsm`) that hold an audit ring
/// buffer, sorted.
pub fn find_pins(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("lsm"))
        .filter(|d| d.join(AUDIT_PIN).exists())
        .collect();
    out.sort();
    out
}

/// The ring buffers of cgroup-BPF programs pinned by `phantom load`
/// (`<root>/<hash>/maps/phantom_audit`), sorted.
pub fn find_cgroup_rings(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("maps").join(phantom_ebpf::audit::RINGBUF_MAP))
        .filter(|p| p.exists())
        .collect();
    out.sort();
    out
}

/// The hook's name (`file_open`, `cgroup/connect4`, ...) of a record.
pub fn hook_name(r: &AuditRecord) -> String {
    let cgroup = || phantom_ebpf::netprog::ProgKind::ALL.into_iter().find(|k| k.audit_id() == r.hook);
    match (Layer::from_code(r.layer), Hook::from_id(r.hook)) {
        (Some(Layer::BpfLsm), Some(h)) => h.name().to_string(),
        (Some(Layer::CgroupBpf), _) if cgroup().is_some() => cgroup().expect("checked").section().to_string(),
        _ => format!("hook-{}", r.hook),
    }
}

/// `file:line` of the record's policy position, when it has one.
pub fn policy_pos(r: &AuditRecord, files: &[String]) -> Option<String> {
    if r.line == 0 {
        return None;
    }
    let file = match r.file {
        NO_FILE => "<policy>".to_string(),
        i => files.get(usize::from(i)).cloned().unwrap_or_else(|| format!("<file {i}>")),
    };
    Some(format!("{file}:{}", r.line))
}

/// One line for people.
pub fn human(r: &AuditRecord, files: &[String]) -> String {
    let mut s = format!(
        "{} {} {} pid {} ({}) sandbox {}",
        r.verdict_name(),
        r.layer_name(),
        hook_name(r),
        r.pid,
        r.comm(),
        r.sandbox
    );
    let object = r.object.display();
    if !object.is_empty() {
        s += &format!(" object {object}");
    }
    if let Some(p) = policy_pos(r, files) {
        s += &format!(" policy {p}");
    }
    if r.rule != NO_RULE {
        s += &format!(" rule {}", r.rule);
    }
    s
}

/// One JSON object (a line of `--json`).
pub fn to_json(r: &AuditRecord, files: &[String]) -> serde_json::Value {
    json!({
        "time_ns": r.time_ns,
        "layer": r.layer_name(),
        "hook": hook_name(r),
        "verdict": r.verdict_name(),
        "sandbox_cgroup": r.sandbox,
        "pid": r.pid,
        "tid": r.tid,
        "comm": r.comm(),
        "object_kind": r.object.kind(),
        "object": r.object.display(),
        "detail": r.detail,
        "rule": (r.rule != NO_RULE).then_some(r.rule),
        "policy": policy_pos(r, files),
    })
}

struct Source {
    reader: AuditReader,
    files: Vec<String>,
}

fn print_all(sources: &mut [Source], json: bool, out: &mut impl Write) -> Result<usize> {
    let mut n = 0;
    for s in sources.iter_mut() {
        for r in s.reader.drain() {
            match r {
                Ok(r) if json => writeln!(out, "{}", to_json(&r, &s.files))?,
                Ok(r) => writeln!(out, "{}", human(&r, &s.files))?,
                Err(e) => eprintln!("phantom: skipping an audit record: {e}"),
            }
            n += 1;
        }
    }
    out.flush()?;
    Ok(n)
}

/// The command: every pinned ring buffer under `root` (or the one pin
/// directory `pin`), printed once, or followed until interrupted.
pub fn run(root: &Path, pin: Option<&Path>, follow: bool, json: bool, out: &mut impl Write) -> Result<()> {
    let (dirs, rings) = match pin {
        Some(p) => (vec![p.to_path_buf()], Vec::new()),
        None => (find_pins(root), find_cgroup_rings(root)),
    };
    if dirs.is_empty() && rings.is_empty() {
        bail!(
            "nothing is loaded that records denials: no audit ring buffer under {root}/*/lsm/{AUDIT_PIN} \
             (BPF-LSM programs, which need a kernel booted with `bpf` in `lsm=`, see `phantom doctor`) \
             or {root}/*/maps/{ring} (cgroup-BPF programs pinned by `phantom load`)",
            root = root.display(),
            ring = phantom_ebpf::audit::RINGBUF_MAP,
        );
    }
    let mut sources = Vec::new();
    for d in &dirs {
        let reader = AuditReader::open_pinned(&d.join(AUDIT_PIN))
            .with_context(|| format!("opening the audit ring buffer of {}", d.display()))?;
        let files = PinnedInfo::read(d).map(|i| i.files).unwrap_or_default();
        sources.push(Source { reader, files });
    }
    for r in &rings {
        let reader =
            AuditReader::open_pinned(r).with_context(|| format!("opening the audit ring buffer {}", r.display()))?;
        sources.push(Source { reader, files: Vec::new() });
    }
    print_all(&mut sources, json, out)?;
    if !follow {
        return Ok(());
    }
    loop {
        let slice = Duration::from_millis(200 / sources.len().max(1) as u64);
        for s in &sources {
            s.reader.wait(slice);
        }
        print_all(&mut sources, json, out)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phantom_ebpf::audit::{Object, Verdict};

    fn record() -> AuditRecord {
        AuditRecord {
            layer: Layer::BpfLsm.code(),
            verdict: Verdict::Deny.code(),
            hook: Hook::FileOpen.id(),
            file: 0,
            rule: 2,
            line: 14,
            sandbox: 77,
            time_ns: 5,
            pid: 41,
            tid: 41,
            comm: *b"cat\0\0\0\0\0\0\0\0\0\0\0\0\0",
            detail: 1,
            object: Object::Path(b"/etc/shadow".to_vec()),
        }
    }

    #[test]
    fn human_lines_name_hook_object_and_policy_line() {
        let line = human(&record(), &["policies/a.yaml".into()]);
        assert_eq!(
            line,
            "deny bpf-lsm file_open pid 41 (cat) sandbox 77 object /etc/shadow policy policies/a.yaml:14 rule 2"
        );
    }

    #[test]
    fn json_lines_carry_every_field() {
        let v = to_json(&record(), &[]);
        assert_eq!(v["hook"], "file_open");
        assert_eq!(v["verdict"], "deny");
        assert_eq!(v["object"], "/etc/shadow");
        assert_eq!(v["policy"], "<file 0>:14");
        assert_eq!(v["rule"], 2);
        let mut none = record();
        none.rule = NO_RULE;
        none.line = 0;
        let v = to_json(&none, &[]);
        assert!(v["rule"].is_null() && v["policy"].is_null(), "{v}");
    }

    #[test]
    fn nothing_loaded_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("phantom-audit-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = run(&dir, None, false, false, &mut Vec::new()).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("nothing is loaded that records denials"), "{err}");
        assert!(err.contains("lsm="), "{err}");
    }
}
