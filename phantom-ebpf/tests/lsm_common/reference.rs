//! What file_open decides, by its linear definition (module docs of
//! `phantom_ebpf::lsm`, "# file_open"): the deny rules in policy order,
//! each pattern compared on whole components, then the exec allow-list.
//! Written from the definition, not from the emitter.

use phantom_dsl::ir::{Effect, Origin, PathPattern, Policy};
use phantom_ebpf::audit::{NO_FILE, NO_RULE};
use phantom_ebpf::lsm::{access_mask, FMODE_BACKING, FMODE_EXEC, PATH_BUF};

/// The decision and the record it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Allow,
    /// Denied (or recorded and allowed in complain mode) at this site,
    /// with this object (the path and its NUL; empty when too long).
    Deny {
        file: u16,
        rule: u32,
        line: u32,
        object: Vec<u8>,
    },
}

/// `pattern` covers `path` (bytes, no NUL): `/` covers everything; else
/// the pattern's bytes, then (unless a prefix glob) the end or a `/`.
pub fn matches(pattern: &PathPattern, path: &[u8]) -> bool {
    let p = pattern.path.as_bytes();
    if p == b"/" {
        return true;
    }
    path.starts_with(p) && (pattern.prefix_glob || matches!(path.get(p.len()), None | Some(b'/')))
}

fn site(o: &Origin, rule: u32) -> (u16, u32, u32) {
    if o.line == 0 {
        (NO_FILE, rule, 0)
    } else {
        (o.file.0, rule, o.line)
    }
}

/// The decision for an open with access bits `access` (f_mode with
/// `__FMODE_EXEC` or'ed in) of `path`.
pub fn expect(policy: &Policy, extra: &[PathPattern], access: u32, path: &[u8]) -> Expect {
    if access & FMODE_BACKING != 0 {
        return Expect::Allow;
    }
    let deny: Vec<(usize, &phantom_dsl::ir::FsRule)> = policy
        .filesystem
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.effect == Effect::Deny && access_mask(r.access.iter().copied()) != 0)
        .collect();
    let exec_first = policy.exec.as_ref().and_then(|e| e.allow.first()).map(|(_, o)| o);
    let first = deny.first().map(|(_, r)| &r.origin).or(exec_first).unwrap_or(&Origin::NONE);
    let with = |(file, rule, line): (u16, u32, u32), object: Vec<u8>| Expect::Deny { file, rule, line, object };
    if path.len() + 1 > PATH_BUF as usize {
        return with(site(first, NO_RULE), Vec::new());
    }
    let object = [path, b"\0"].concat();
    for (i, r) in &deny {
        if access & access_mask(r.access.iter().copied()) != 0 && matches(&r.path, path) {
            return with(site(&r.origin, *i as u32), object);
        }
    }
    if let Some(exec) = &policy.exec {
        if access & FMODE_EXEC != 0 {
            let listed = exec.allow.iter().map(|(p, _)| p).chain(extra);
            if !listed.into_iter().any(|p| matches(p, path)) {
                let s = exec_first.map_or((NO_FILE, NO_RULE, 0), |o| site(o, NO_RULE));
                return with(s, object);
            }
        }
    }
    Expect::Allow
}
