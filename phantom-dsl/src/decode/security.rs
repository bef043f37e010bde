//! `security.seccomp`, `security.landlock`, `filesystem`, `exec`, `kernel`.

use super::fields::Decoder;
use crate::diag::Diagnostic;
use crate::ir::*;
use crate::syntax::Node;
use crate::syscalls::{self, Arch};
use crate::values::{parse_action, parse_arg_condition, Action};
use std::collections::BTreeSet;

const SECCOMP_KEYS: &[&str] = &["default", "allow", "deny", "kill", "log", "allow_x32", "rules"];

pub(crate) fn decode_seccomp(d: &mut Decoder, n: Option<&Node>) -> SeccompPolicy {
    let mut p = SeccompPolicy {
        enabled: false,
        default: Action::Allow,
        default_origin: Origin::NONE,
        allow_x32: false,
        rules: Vec::new(),
    };
    let Some(n) = n else { return p };
    p.enabled = true;
    let example = "seccomp:\n  default: deny\n  allow: [read, write]";
    let Some(f) = d.map(n, "security.seccomp", SECCOMP_KEYS, example) else { return p };
    match f.get("default") {
        Some(v) => {
            p.default_origin = d.origin(v.span);
            p.default = d.value(v, "seccomp default action", parse_action).unwrap_or(Action::Errno(1));
        }
        None => {
            d.missing(&f, "default", "security.seccomp", "default: deny");
            p.default = Action::Errno(1);
        }
    }
    if let Some(v) = f.get("allow_x32") {
        p.allow_x32 = d.boolean(v, "seccomp.allow_x32").unwrap_or(false);
    }
    // Conditional rules first: for one syscall, the first matching rule wins,
    // and an unconditional list entry is the fallback.
    if let Some(v) = f.get("rules") {
        for item in d.list(v, "seccomp.rules", "rules:\n  - syscall: socket\n    action: allow\n    when: [arg0 == 1]")
        {
            decode_syscall_rule(d, item, &mut p.rules);
        }
    }
    for (key, action) in
        [("allow", Action::Allow), ("deny", Action::Errno(1)), ("kill", Action::KillProcess), ("log", Action::Log)]
    {
        let Some(v) = f.get(key) else { continue };
        for item in d.list(v, &format!("seccomp.{key}"), &format!("{key}: [read, write]")) {
            if let Some(rule) = syscall_rule(d, item, action, Vec::new()) {
                p.rules.push(rule);
            }
        }
    }
    p
}

fn decode_syscall_rule(d: &mut Decoder, item: &Node, out: &mut Vec<SyscallRule>) {
    let Some(f) =
        d.map(item, "seccomp rule", &["syscall", "syscalls", "action", "when"], "- syscall: socket\n  action: allow")
    else {
        return;
    };
    let mut names: Vec<&Node> = Vec::new();
    match (f.get("syscall"), f.get("syscalls")) {
        (Some(_), Some(_)) => {
            let span = f.key_span("syscalls").unwrap_or(item.span);
            d.push(
                Diagnostic::error("P0107", span, "a rule has `syscall` or `syscalls`, not both")
                    .help("merge them into `syscalls: [...]`"),
            );
        }
        (Some(s), None) => names.push(s),
        (None, Some(s)) => names = d.list(s, "seccomp rule syscalls", "syscalls: [socket, socketpair]"),
        (None, None) => d.missing(&f, "syscall", "seccomp rule", "syscall: NAME"),
    }
    let action = match f.get("action") {
        Some(a) => d.value(a, "seccomp rule action", parse_action),
        None => {
            d.missing(&f, "action", "seccomp rule", "action: allow");
            None
        }
    };
    let mut conditions = Vec::new();
    if let Some(w) = f.get("when") {
        for c in d.one_or_many(w, "seccomp rule when", "when: [arg0 == 1]") {
            if let Some(cond) = d.value(c, "argument condition", parse_arg_condition) {
                if let Some(dup) = conditions.iter().find(|x: &&crate::values::ArgCondition| {
                    x.arg == cond.arg
                        && x.op == cond.op
                        && x.value != cond.value
                        && matches!(cond.op, crate::values::CmpOp::Eq)
                }) {
                    d.push(
                        Diagnostic::error("P0201", c.span, "contradictory conditions: this rule can never match")
                            .found(format!("`{cond}` together with `{dup}`"))
                            .help("conditions in `when` must all hold; use two rules for alternatives"),
                    );
                }
                conditions.push(cond);
            }
        }
    }
    let Some(action) = action else { return };
    for n in names {
        if let Some(r) = syscall_rule(d, n, action, conditions.clone()) {
            out.push(r);
        }
    }
}

fn syscall_rule(
    d: &mut Decoder,
    n: &Node,
    action: Action,
    conditions: Vec<crate::values::ArgCondition>,
) -> Option<SyscallRule> {
    let name = d.scalar(n, "syscall name", "a syscall name", "allow: [read, write]")?.text.clone();
    let numbers: Vec<(Arch, u32)> =
        Arch::POLICY_ARCHES.iter().filter_map(|a| syscalls::number(*a, &name).map(|nr| (*a, nr))).collect();
    if numbers.is_empty() {
        let mut diag = Diagnostic::error("P0106", n.span, format!("unknown syscall `{name}`"))
            .label("not a syscall on x86_64 or aarch64")
            .expected("a syscall name from the x86_64 or aarch64 table")
            .found(format!("`{name}`"));
        if let Some(s) = syscalls::suggest(&name) {
            diag = diag.help(format!("did you mean `{s}`?"));
        }
        d.push(diag);
        return None;
    }
    Some(SyscallRule { name, numbers, action, conditions, origin: d.origin(n.span) })
}

// ------------------------------------------------------------- filesystem

const ACCESS_EXAMPLE: &str = "access: read-only   (or read-write, or a list: [read, exec])";

fn decode_access(d: &mut Decoder, n: &Node, what: &str) -> Option<BTreeSet<Access>> {
    use Access::*;
    if n.as_scalar().is_some() {
        let set: &[Access] = d.keyword(
            n,
            what,
            &[
                ("read-only", &[Read, Exec][..]),
                ("read-write", &[Read, Write, Create, Remove][..]),
                ("all", &Access::ALL[..]),
            ],
        )?;
        return Some(set.iter().copied().collect());
    }
    let opts: Vec<(&str, Access)> = Access::ALL.iter().map(|a| (a.name(), *a)).collect();
    let items = d.list(n, what, ACCESS_EXAMPLE);
    let mut set = BTreeSet::new();
    for i in items {
        if let Some(a) = d.keyword(i, what, &opts) {
            set.insert(a);
        }
    }
    if set.is_empty() {
        d.push(
            Diagnostic::error("P0105", n.span, format!("`{what}` is empty"))
                .help("list at least one of read, write, exec, create, remove"),
        );
        return None;
    }
    Some(set)
}

/// An absolute path, optionally ending in a prefix glob, normalised.
pub(crate) fn decode_path(d: &mut Decoder, n: &Node, what: &str) -> Option<PathPattern> {
    let s = d.scalar(n, what, "an absolute path", "path: /workspace")?;
    let text = s.text.as_str();
    let err = |code, msg: &str, help: String| {
        Diagnostic::error(code, s.span, msg.to_string()).found(format!("`{text}`")).help(help)
    };
    if !text.starts_with('/') {
        let hint = if text.starts_with('~') {
            "paths are absolute; `~` is not expanded: write the full path".to_string()
        } else {
            format!("paths are absolute: did you mean `/{}`?", text.trim_start_matches("./"))
        };
        d.push(err("P0108", "relative path", hint).expected("an absolute path starting with `/`"));
        return None;
    }
    if text.len() > 4095 {
        d.push(err("P0108", "path longer than PATH_MAX (4095 bytes)", "shorten the path".into()));
        return None;
    }
    if text.contains('\0') {
        d.push(err("P0108", "path contains a NUL byte", "remove it".into()));
        return None;
    }
    let mut comps: Vec<&str> = Vec::new();
    for c in text.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." {
            d.push(err(
                "P0108",
                "`.` and `..` are not allowed in paths",
                "write the normalised path: rules match the path the kernel resolves".into(),
            ));
            return None;
        }
        comps.push(c);
    }
    let mut prefix_glob = false;
    if let Some((i, _)) = comps.iter().enumerate().find(|(_, c)| c.contains(['*', '?', '[', ']', '{', '}'])) {
        let last = comps[i];
        let ok = i == comps.len() - 1
            && last.ends_with('*')
            && !last[..last.len() - 1].contains(['*', '?', '[', ']', '{', '}']);
        if !ok || last == "*" {
            let help = if last == "*" {
                format!("write `/{}`: a directory rule already covers everything below it", comps[..i].join("/"))
            } else {
                "only a trailing `*` on the last component is supported (a prefix glob such as `/usr/lib/python3*`)"
                    .to_string()
            };
            d.push(err("P0108", "unsupported glob", help).expected("a path, optionally ending in `*`"));
            return None;
        }
        prefix_glob = true;
        comps[i] = &last[..last.len() - 1];
    }
    Some(PathPattern { path: format!("/{}", comps.join("/")), prefix_glob })
}

pub(crate) fn decode_filesystem(d: &mut Decoder, landlock: Option<&Node>, fs: Option<&Node>) -> FsPolicy {
    let mut p = FsPolicy { landlock: true, rules: Vec::new() };
    if let Some(n) = landlock {
        if let Some(f) =
            d.map(n, "security.landlock", &["enabled", "paths"], "landlock:\n  enabled: true\n  paths: [...]")
        {
            if let Some(v) = f.get("enabled") {
                p.landlock = d.boolean(v, "landlock.enabled").unwrap_or(true);
            }
            if let Some(v) = f.get("paths") {
                for item in d.list(v, "landlock.paths", "paths:\n  - path: /tmp\n    access: read-write") {
                    let Some(rf) =
                        d.map(item, "landlock path", &["path", "access"], "- path: /tmp\n  access: read-write")
                    else {
                        continue;
                    };
                    let path = match rf.get("path") {
                        Some(pn) => decode_path(d, pn, "path"),
                        None => {
                            d.missing(&rf, "path", "landlock path", "path: /some/dir");
                            None
                        }
                    };
                    let access = match rf.get("access") {
                        Some(a) => decode_access(d, a, "access"),
                        None => {
                            d.missing(&rf, "access", "landlock path", "access: read-only");
                            None
                        }
                    };
                    if let (Some(path), Some(access)) = (path, access) {
                        p.rules.push(FsRule {
                            effect: Effect::Allow,
                            path,
                            access,
                            from_landlock_section: true,
                            origin: d.origin(item.span),
                        });
                    }
                }
            }
        }
    }
    let Some(n) = fs else { return p };
    let Some(f) =
        d.map(n, "filesystem", &["rules"], "filesystem:\n  rules:\n    - allow: /workspace\n      access: read-write")
    else {
        return p;
    };
    let Some(rules) = f.get("rules") else { return p };
    for item in d.list(rules, "filesystem.rules", "rules:\n  - deny: /workspace/.git/hooks") {
        let Some(rf) =
            d.map(item, "filesystem rule", &["allow", "deny", "access"], "- allow: /workspace\n  access: read-write")
        else {
            continue;
        };
        let (effect, pn) = match (rf.get("allow"), rf.get("deny")) {
            (Some(a), None) => (Effect::Allow, a),
            (None, Some(x)) => (Effect::Deny, x),
            (Some(_), Some(_)) => {
                d.push(
                    Diagnostic::error(
                        "P0107",
                        rf.key_span("deny").unwrap_or(item.span),
                        "a rule is `allow:` or `deny:`, not both",
                    )
                    .help("split it into two rules"),
                );
                continue;
            }
            (None, None) => {
                d.missing(&rf, "allow` or `deny", "filesystem rule", "allow: /some/dir");
                continue;
            }
        };
        let path = decode_path(d, pn, if effect == Effect::Allow { "allow" } else { "deny" });
        let access = match (rf.get("access"), effect) {
            (Some(a), _) => decode_access(d, a, "access"),
            (None, Effect::Deny) => Some(Access::ALL.into_iter().collect()),
            (None, Effect::Allow) => {
                d.missing(&rf, "access", "filesystem allow rule", "access: read-only");
                None
            }
        };
        if let (Some(path), Some(access)) = (path, access) {
            p.rules.push(FsRule { effect, path, access, from_landlock_section: false, origin: d.origin(item.span) });
        }
    }
    p
}

pub(crate) fn decode_exec(d: &mut Decoder, n: &Node) -> ExecPolicy {
    let mut allow = Vec::new();
    if let Some(f) = d.map(n, "exec", &["allow"], "exec:\n  allow: [/usr/bin/python3]") {
        match f.get("allow") {
            Some(v) => {
                for item in d.list(v, "exec.allow", "allow: [/usr/bin/python3]") {
                    if let Some(p) = decode_path(d, item, "exec.allow") {
                        allow.push((p, d.origin(item.span)));
                    }
                }
            }
            None => d.missing(&f, "allow", "exec", "allow: [/usr/bin/python3]"),
        }
    }
    ExecPolicy { allow }
}

// ----------------------------------------------------------------- kernel

const SWITCHES: &[&str] =
    &["ptrace", "mount", "bpf", "user_namespaces", "io_uring", "kernel_modules", "signals", "raw_sockets"];

/// Defaults per level, in `SWITCHES` order. Documented in docs/policy-language.md.
fn level_defaults(level: Level) -> [Toggle; 8] {
    use Toggle::{Allow as A, Deny as D};
    match level {
        Level::Low => [A, D, D, A, A, D, A, A],
        Level::Medium => [D, D, D, D, A, D, D, D],
        Level::High => [D, D, D, D, D, D, D, D],
    }
}

pub(crate) fn decode_kernel(
    d: &mut Decoder,
    n: Option<&Node>,
    level: Level,
    level_origin: Option<Origin>,
) -> KernelPolicy {
    let mut t = level_defaults(level);
    let mut unix_connect = None;
    let mut origins = std::collections::BTreeMap::new();
    if let Some(o) = level_origin {
        origins.extend(SWITCHES.iter().map(|k| (k.to_string(), o)));
    }
    if let Some(n) = n {
        let mut keys = SWITCHES.to_vec();
        keys.push("unix_sockets");
        if let Some(f) = d.map(n, "kernel", &keys, "kernel:\n  ptrace: deny") {
            for (i, k) in SWITCHES.iter().enumerate() {
                if let Some(v) = f.get(k).and_then(|v| {
                    d.keyword(v, &format!("kernel.{k}"), &[("allow", Toggle::Allow), ("deny", Toggle::Deny)])
                }) {
                    t[i] = v;
                    origins.insert(k.to_string(), d.origin(f.key_span(k).expect("present")));
                }
            }
            if let Some(u) = f.get("unix_sockets") {
                unix_connect = decode_unix(d, u);
                origins.insert("unix_sockets".to_string(), d.origin(f.key_span("unix_sockets").unwrap_or(u.span)));
            }
        }
    }
    KernelPolicy {
        ptrace: t[0],
        mount: t[1],
        bpf: t[2],
        user_namespaces: t[3],
        io_uring: t[4],
        kernel_modules: t[5],
        signals_outside: t[6],
        raw_sockets: t[7],
        unix_connect,
        origins,
    }
}

fn decode_unix(d: &mut Decoder, n: &Node) -> Option<Vec<(String, Origin)>> {
    let f =
        d.map(n, "kernel.unix_sockets", &["connect"], "unix_sockets:\n  connect: [/run/app.sock, \"@abstract\"]")?;
    let v = f.get("connect")?;
    let mut out = Vec::new();
    for item in d.list(v, "unix_sockets.connect", "connect: [/run/app.sock, \"@abstract\"]") {
        let Some(s) = d.scalar(item, "unix socket", "a path or \"@abstract-name\"", "connect: [/run/app.sock]") else {
            continue;
        };
        if let Some(name) = s.text.strip_prefix('@') {
            if name.is_empty() || name.len() > 107 {
                d.push(
                    Diagnostic::error("P0105", s.span, "abstract socket names are 1 to 107 bytes")
                        .found(format!("`{}`", s.text)),
                );
                continue;
            }
            out.push((s.text.clone(), d.origin(item.span)));
        } else if let Some(p) = decode_path(d, item, "unix socket") {
            if p.prefix_glob {
                d.push(
                    Diagnostic::error("P0108", s.span, "globs are not supported for unix sockets")
                        .help("list each socket path"),
                );
                continue;
            }
            if p.path.len() > 107 {
                d.push(
                    Diagnostic::error("P0108", s.span, "unix socket paths are at most 107 bytes (sun_path)")
                        .help("connect through a shorter path, e.g. a symlink"),
                );
                continue;
            }
            out.push((p.path, d.origin(item.span)));
        }
    }
    Some(out)
}
