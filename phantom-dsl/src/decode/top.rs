//! Top-level keys, resources and performance.

use super::fields::Decoder;
use crate::diag::Diagnostic;
use crate::ir::*;
use crate::syntax::Node;
use crate::values::{parse_cpu, parse_duration, parse_size, parse_u32_in};
use std::collections::BTreeSet;

pub(crate) const TOP_KEYS: &[&str] = &[
    "profile",
    "extends",
    "mode",
    "runtime",
    "require",
    "audit",
    "security",
    "filesystem",
    "exec",
    "network",
    "devices",
    "kernel",
    "resources",
    "performance",
];

pub(crate) fn decode_policy(d: &mut Decoder, root: &Node, sources: Vec<SourceInfo>) -> Policy {
    let f = d.map(root, "policy", TOP_KEYS, "profile: my-profile");
    let get = |k: &str| f.as_ref().and_then(|f| f.get(k));

    let profile = match get("profile") {
        Some(n) => {
            d.string(n, "profile", "profile: python-ai").map(|p| check_profile_name(d, n, p)).unwrap_or_default()
        }
        None => {
            if let Some(f) = &f {
                d.missing(f, "profile", "policy", "profile: my-profile");
            }
            String::new()
        }
    };
    let mode = get("mode")
        .and_then(|n| {
            d.keyword(
                n,
                "mode",
                &[
                    ("direct", Mode::Direct),
                    ("sandbox", Mode::Sandbox),
                    ("hardened", Mode::Hardened),
                    ("wasm", Mode::Wasm),
                    ("auto", Mode::Auto),
                ],
            )
        })
        .unwrap_or(Mode::Auto);
    let runtime = get("runtime")
        .and_then(|n| {
            d.keyword(n, "runtime", &[("auto", Runtime::Auto), ("native", Runtime::Native), ("wasm", Runtime::Wasm)])
        })
        .unwrap_or(Runtime::Auto);
    let require = get("require").map(|n| decode_require(d, n)).unwrap_or_default();
    if let (Some(m), Some(r)) = (get("mode"), get("runtime")) {
        if (mode == Mode::Wasm && runtime == Runtime::Native)
            || (runtime == Runtime::Wasm && !matches!(mode, Mode::Wasm | Mode::Auto))
        {
            d.push(
                Diagnostic::error("P0201", r.span, "contradictory `mode` and `runtime`")
                    .related(m.span, "mode set here")
                    .help("`mode: wasm` runs WebAssembly; use `runtime: wasm` or `auto` with it, and a native mode otherwise"),
            );
        }
    }
    if let (Some(m), Some(r)) = (get("mode"), get("require")) {
        if mode == Mode::Direct && !require.is_empty() {
            d.push(
                Diagnostic::error("P0201", r.span, "`require` with `mode: direct`")
                    .related(m.span, "direct mode runs without any enforcement")
                    .help("direct mode is for debugging and enforces nothing; use `sandbox` or `hardened`"),
            );
        }
    }
    let audit = get("audit").and_then(|n| decode_audit(d, n)).unwrap_or(AuditMode::Enforce);

    let security = get("security")
        .and_then(|n| d.map(n, "security", &["level", "seccomp", "landlock"], "security:\n  level: medium"));
    let sget = |k: &str| security.as_ref().and_then(|s| s.get(k));
    let level = sget("level")
        .and_then(|n| {
            d.keyword(n, "security.level", &[("low", Level::Low), ("medium", Level::Medium), ("high", Level::High)])
        })
        .unwrap_or(Level::Medium);
    let seccomp = super::security::decode_seccomp(d, sget("seccomp"));
    let filesystem = super::security::decode_filesystem(d, sget("landlock"), get("filesystem"));
    let exec = get("exec").map(|n| super::security::decode_exec(d, n));
    let level_origin = sget("level").map(|n| d.origin(n.span));
    let kernel = super::security::decode_kernel(d, get("kernel"), level, level_origin);
    let seccomp = super::switches::lower(seccomp, &kernel);
    let network = super::network::decode_network(d, get("network"));
    let devices = super::network::decode_devices(d, get("devices"));
    let resources = get("resources").map(|n| decode_resources(d, n)).unwrap_or_default();
    let performance = decode_performance(d, get("performance"));

    Policy {
        profile,
        sources,
        mode,
        runtime,
        level,
        require_origin: get("require").map(|n| d.origin(n.span)),
        require,
        audit,
        seccomp,
        filesystem,
        exec,
        network,
        devices,
        kernel,
        resources,
        performance,
    }
}

fn check_profile_name(d: &mut Decoder, n: &Node, p: String) -> String {
    let ok = !p.is_empty()
        && p.len() <= 64
        && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if !ok {
        d.push(
            Diagnostic::error("P0105", n.span, "invalid profile name")
                .expected(
                    "1 to 64 characters: lowercase letters, digits, `-`, `_`, `.`, starting with a letter or digit",
                )
                .found(format!("`{p}`"))
                .help("the name becomes part of cgroup and pin paths, so it is restricted"),
        );
    }
    p
}

fn decode_require(d: &mut Decoder, n: &Node) -> BTreeSet<Layer> {
    let opts: Vec<(&str, Layer)> = Layer::ALL.iter().map(|l| (l.name(), *l)).collect();
    let mut out = BTreeSet::new();
    for item in d.list(n, "require", "require: [seccomp, landlock]") {
        if let Some(l) = d.keyword(item, "require", &opts) {
            if !out.insert(l) {
                d.push(
                    Diagnostic::warning("P0206", item.span, format!("`{}` is listed twice in `require`", l.name()))
                        .help("remove the duplicate"),
                );
            }
        }
    }
    out
}

fn decode_audit(d: &mut Decoder, n: &Node) -> Option<AuditMode> {
    let f = d.map(n, "audit", &["mode"], "audit:\n  mode: enforce")?;
    let m = f.get("mode")?;
    d.keyword(m, "audit.mode", &[("enforce", AuditMode::Enforce), ("complain", AuditMode::Complain)])
}

fn decode_resources(d: &mut Decoder, n: &Node) -> Resources {
    let keys = ["memory", "cpu", "pids", "wall_time", "file_size", "open_files"];
    let Some(f) = d.map(n, "resources", &keys, "resources:\n  memory: 512MB") else { return Resources::default() };
    Resources {
        memory: f.get("memory").and_then(|n| {
            let v = d.value(n, "resources.memory", parse_size)?;
            if v.0 == 0 {
                d.push(
                    Diagnostic::error("P0105", n.span, "a memory limit of 0 would kill every process")
                        .help("omit `memory` for no limit"),
                );
                return None;
            }
            Some(v)
        }),
        cpu: f.get("cpu").and_then(|n| d.value(n, "resources.cpu", parse_cpu)),
        pids: f
            .get("pids")
            .and_then(|n| d.value(n, "resources.pids", |s| parse_u32_in(s, 1, 4_194_304, "a number of processes"))),
        wall_time: f.get("wall_time").and_then(|n| d.value(n, "resources.wall_time", parse_duration)),
        file_size: f.get("file_size").and_then(|n| d.value(n, "resources.file_size", parse_size)),
        open_files: f.get("open_files").and_then(|n| {
            d.value(n, "resources.open_files", |s| parse_u32_in(s, 3, 1 << 20, "a number of file descriptors"))
        }),
    }
}

fn decode_performance(d: &mut Decoder, n: Option<&Node>) -> Performance {
    let mut p = Performance { zygote: true, io_mode: IoMode::Epoll, memory_allocator: Allocator::System };
    let Some(n) = n else { return p };
    let Some(f) = d.map(n, "performance", &["zygote", "io_mode", "memory_allocator"], "performance:\n  zygote: true")
    else {
        return p;
    };
    if let Some(v) = f.get("zygote").and_then(|n| d.boolean(n, "performance.zygote")) {
        p.zygote = v;
    }
    if let Some(v) = f.get("io_mode").and_then(|n| {
        d.keyword(
            n,
            "performance.io_mode",
            &[("uring", IoMode::Uring), ("epoll", IoMode::Epoll), ("blocking", IoMode::Blocking)],
        )
    }) {
        p.io_mode = v;
    }
    if let Some(v) = f.get("memory_allocator").and_then(|n| {
        d.keyword(
            n,
            "performance.memory_allocator",
            &[("system", Allocator::System), ("jemalloc", Allocator::Jemalloc), ("mimalloc", Allocator::Mimalloc)],
        )
    }) {
        p.memory_allocator = v;
    }
    p
}
