//! Differential: the generated cgroup programs, run by the test
//! interpreter (the kernel has no BPF_PROG_TEST_RUN for cgroup sock_addr,
//! sock and device programs; phantom-user/tests/cgroup_bpf.rs checks that
//! and runs a sample for real), agree with the reference interpreter on
//! well over 10,000 random inputs per program kind, over the example
//! policy, random policies, and large policies that use LPM tries.

mod netprog_common;

use netprog_common::ebpf_interp::helpers::Task;
use netprog_common::*;
use phantom_dsl::ir::{DevicePolicy, NetworkPolicy};
use phantom_ebpf::netprog::reference::Reference;
use phantom_ebpf::netprog::{compile_parts, CgroupPrograms, Locator, Options, ProgKind};

struct Case {
    name: String,
    net: NetworkPolicy,
    dev: DevicePolicy,
    opts: Options,
}

fn cases() -> Vec<Case> {
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let web = load_policy("web-fetcher.yaml");
    let mut out = vec![
        Case {
            name: "web-fetcher".into(),
            net: web.network.clone(),
            dev: web.devices.clone(),
            opts: Options::default(),
        },
        Case {
            name: "web-fetcher+loopback+raw".into(),
            net: web.network.clone(),
            dev: web.devices.clone(),
            opts: Options { raw_sockets: true, ..Options::default() },
        },
    ];
    for i in 0..40 {
        let n = 1 + rng.below(6) as usize;
        out.push(Case {
            name: format!("random-{i}"),
            net: random_network(&mut rng, n, 4),
            dev: random_devices(&mut rng),
            opts: Options { raw_sockets: rng.chance(50), ..Options::default() },
        });
    }
    // Large: both families past the threshold (LPM tries), and a tiny
    // threshold so ordinary random policies exercise the trie path too.
    for i in 0..6 {
        let n = 3 + rng.below(40) as usize;
        out.push(Case {
            name: format!("large-{i}"),
            net: random_network(&mut rng, n, 40),
            dev: random_devices(&mut rng),
            opts: Options::default(),
        });
        let n = 1 + rng.below(6) as usize;
        out.push(Case {
            name: format!("lpm-threshold-0-{i}"),
            net: random_network(&mut rng, n, 4),
            dev: random_devices(&mut rng),
            opts: Options { lpm_threshold: 0, ..Options::default() },
        });
    }
    out
}

fn compile(c: &Case) -> CgroupPrograms {
    compile_parts(&c.net, &c.dev, &Locator::new(&["p.yaml".into()]), &c.opts).unwrap()
}

#[test]
fn cgroup_programs_agree_with_the_reference_interpreter() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut checked: std::collections::BTreeMap<ProgKind, usize> = Default::default();
    let mut allowed: std::collections::BTreeMap<ProgKind, usize> = Default::default();
    let mut lpm_programs = 0;
    let mut max_steps: std::collections::BTreeMap<ProgKind, usize> = Default::default();
    let mut recorded: std::collections::BTreeMap<ProgKind, usize> = Default::default();
    for case in cases() {
        let set = compile(&case);
        let reference = Reference::new(&case.net, &case.dev, &case.opts);
        for prog in &set.programs {
            let runnable = Runnable::new(prog, &set);
            // LPM tries have keys; the audit ring buffer has none.
            if runnable.maps.values().any(|m| m.key_size > 0) {
                lpm_programs += 1;
            }
            let n = 600;
            for _ in 0..n {
                let (mut ctx, want, what) = match prog.kind {
                    ProgKind::Connect4 | ProgKind::Sendmsg4 | ProgKind::Connect6 | ProgKind::Sendmsg6 => {
                        let v6 = matches!(prog.kind, ProgKind::Connect6 | ProgKind::Sendmsg6);
                        let addr = random_addr(&mut rng, &case.net, v6);
                        let port = random_port(&mut rng, &case.net);
                        let proto = random_proto(&mut rng);
                        (
                            sock_addr_ctx(addr, port, proto),
                            reference.egress(addr, port, proto),
                            format!("{addr} port {port} proto {proto}"),
                        )
                    }
                    ProgKind::Bind4 | ProgKind::Bind6 => {
                        let addr = random_addr(&mut rng, &case.net, prog.kind == ProgKind::Bind6);
                        let port = random_port(&mut rng, &case.net);
                        let proto = random_proto(&mut rng);
                        (
                            sock_addr_ctx(addr, port, proto),
                            reference.bind(port, proto),
                            format!("bind port {port} proto {proto}"),
                        )
                    }
                    ProgKind::SockCreate => {
                        let family = pick!(rng, [2, 10, 2, 10, 1, 17, rng.next() as u32 & 0x3f]);
                        let ty = pick!(rng, [1, 2, 3, 5, rng.next() as u32 & 0xf]);
                        let proto = random_proto(&mut rng);
                        (
                            sock_ctx(family, ty, proto),
                            reference.sock_create(family, ty, proto),
                            format!("socket({family}, {ty}, {proto})"),
                        )
                    }
                    ProgKind::Device => {
                        let ty = pick!(rng, [1, 2, 2, rng.next() as u32 & 0xffff]);
                        let acc = pick!(rng, [2, 2, 4, 6, 6, 1, 3, 7, rng.below(8) as u32, rng.next() as u32 & 0xffff]);
                        let named: Vec<(u32, u32)> = case
                            .dev
                            .allow
                            .iter()
                            .map(|r| (r.major.unwrap_or(7), r.minor.unwrap_or(7)))
                            .chain([(1, 3), (1, 9), (5, 0)])
                            .collect();
                        let (major, minor) = if rng.chance(60) {
                            pick!(rng, named)
                        } else {
                            (
                                pick!(rng, [1, 5, rng.below(13) as u32, rng.next() as u32]),
                                pick!(rng, [3, 9, 0, rng.below(13) as u32, rng.next() as u32]),
                            )
                        };
                        let at = (acc << 16) | ty;
                        (
                            dev_ctx(at, major, minor),
                            reference.device(at, major, minor),
                            format!("dev {ty} {major}:{minor} access {acc}"),
                        )
                    }
                };
                let (got, steps, records) = runnable.run_recorded(&mut ctx);
                if !got {
                    check_record(prog.kind, &ctx, &records[0]);
                    *recorded.entry(prog.kind).or_default() += 1;
                }
                *allowed.entry(prog.kind).or_default() += usize::from(got);
                assert_eq!(got, want, "{} {}: {what}", case.name, prog.kind.section());
                *checked.entry(prog.kind).or_default() += 1;
                let m = max_steps.entry(prog.kind).or_default();
                *m = (*m).max(steps);
            }
        }
    }
    eprintln!(
        "inputs checked per program: {checked:?}\nallowed: {allowed:?}\nmax instructions executed: {max_steps:?}\n\
         denial records checked: {recorded:?}"
    );
    for kind in ProgKind::ALL {
        let n = checked.get(&kind).copied().unwrap_or(0);
        assert!(n >= 10_000, "{kind:?}: only {n} inputs");
        // Both verdicts must be well represented, or the comparison is weak.
        let yes = allowed.get(&kind).copied().unwrap_or(0);
        assert!(yes * 10 >= n && (n - yes) * 10 >= n, "{kind:?}: {yes} of {n} allowed");
    }
    assert!(lpm_programs >= 20, "only {lpm_programs} programs used an LPM trie");
}

/// A denial's audit record (docs/audit.md): the cgroup-BPF layer, the
/// program's hook id, the interpreter's task, no rule, and the object read
/// from the context.
fn check_record(kind: ProgKind, ctx: &[u8], bytes: &[u8]) {
    use phantom_ebpf::audit::{AuditRecord, Layer, Object, Verdict, NO_FILE, NO_RULE};
    let r = AuditRecord::decode(bytes).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    let u32_at = |o: usize| u32::from_le_bytes(ctx[o..o + 4].try_into().unwrap());
    let port = || u16::from_be(u32_at(24) as u16);
    let want = match kind {
        ProgKind::Connect4 | ProgKind::Sendmsg4 | ProgKind::Bind4 => {
            Object::Inet4 { addr: ctx[4..8].try_into().unwrap(), port: port() }
        }
        ProgKind::Connect6 | ProgKind::Sendmsg6 | ProgKind::Bind6 => {
            Object::Inet6 { addr: ctx[8..24].try_into().unwrap(), port: port() }
        }
        ProgKind::SockCreate => Object::Socket { family: u32_at(4), kind: u32_at(8), protocol: u32_at(12) },
        ProgKind::Device => Object::Device { access_type: u32_at(0), major: u32_at(4), minor: u32_at(8) },
    };
    assert_eq!(r.object, want, "{kind:?}");
    assert_eq!((r.layer, r.verdict, r.hook), (Layer::CgroupBpf.code(), Verdict::Deny.code(), kind.audit_id()));
    assert_eq!((r.file, r.rule, r.line), (NO_FILE, NO_RULE, 0), "{kind:?}: a denial has no rule");
    assert_eq!((r.sandbox, r.time_ns, r.pid, r.tid), (Task::CGROUP, Task::TIME, Task::TGID, Task::PID));
    assert_eq!(&r.comm, Task::COMM);
}

/// Hand-picked inputs whose verdicts are part of the documented semantics.
#[test]
fn documented_edge_cases() {
    use phantom_dsl::values::Protocol::*;
    let net = allowlist(
        vec![
            rule(&["198.51.100.0/24", "2001:db8:100::/48"], &[(443, 443), (8443, 8443)], Tcp, 3),
            rule(&["192.0.2.53"], &[(53, 53)], Udp, 4),
            rule(&["203.0.113.0/24"], &[], Icmp, 5),
            rule(&["10.0.0.0/8"], &[(1000, 2000)], Any, 6),
        ],
        vec![phantom_dsl::ir::BindRule { ports: ports(&[(8080, 8080)]), protocol: Tcp, origin: origin(8) }],
    );
    let dev = DevicePolicy { allow: Vec::new() };
    let opts = Options::default();
    let set = compile_parts(&net, &dev, &Locator::new(&["p.yaml".into()]), &opts).unwrap();
    let r = Reference::new(&net, &dev, &opts);
    let run = |kind: ProgKind, mut ctx: Vec<u8>| Runnable::new(set.get(kind).unwrap(), &set).run(&mut ctx).0;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let cases = [
        ("198.51.100.7", 443, 6, true),
        ("198.51.100.7", 443, 17, false),
        ("198.51.100.7", 444, 6, false),
        ("198.51.101.7", 443, 6, false),
        ("::ffff:198.51.100.7", 443, 6, true), // v4-mapped: judged as IPv4
        ("::ffff:198.51.101.7", 443, 6, false),
        ("2001:db8:100:ffff::1", 8443, 6, true),
        ("2001:db8:101::1", 8443, 6, false),
        ("192.0.2.53", 53, 17, true),
        ("203.0.113.9", 0, 1, true),
        ("203.0.113.9", 0, 58, true),
        ("203.0.114.9", 0, 1, false),
        ("10.1.2.3", 1500, 17, true),
        ("10.1.2.3", 1500, 132, false), // ports only match TCP and UDP
        ("10.1.2.3", 999, 6, false),
        ("127.0.0.1", 443, 6, false), // loopback is not special
        ("::1", 443, 6, false),
    ];
    for (a, port, proto, want) in cases {
        let addr = ip(a);
        assert_eq!(r.egress(addr, port, proto), want, "reference: {a} {port} {proto}");
        let kind = if addr.is_ipv4() { ProgKind::Connect4 } else { ProgKind::Connect6 };
        assert_eq!(run(kind, sock_addr_ctx(addr, port, proto)), want, "program: {a} {port} {proto}");
    }
    // bind: port 0 always, 8080/tcp by rule.
    for (port, proto, want) in [(0, 6, true), (0, 17, true), (8080, 6, true), (8080, 17, false), (8081, 6, false)] {
        assert_eq!(r.bind(port, proto), want);
        assert_eq!(run(ProgKind::Bind4, sock_addr_ctx(ip("0.0.0.0"), port, proto)), want, "bind {port} {proto}");
    }
    // sock_create: tcp (rules 3, 6), udp (4, 6), ping (5, 6), no raw, no sctp.
    for (fam, ty, proto, want) in [
        (2, 1, 6, true),
        (10, 2, 17, true),
        (2, 2, 1, true),
        (10, 2, 58, true),
        (10, 2, 1, false),
        (2, 3, 1, false),
        (2, 1, 132, false),
        (2, 5, 132, false),
        (1, 1, 0, true), // AF_UNIX: not this program's business
    ] {
        assert_eq!(r.sock_create(fam, ty, proto), want, "reference socket({fam}, {ty}, {proto})");
        assert_eq!(run(ProgKind::SockCreate, sock_ctx(fam, ty, proto)), want, "program socket({fam}, {ty}, {proto})");
    }
    // dev: minimal /dev only, read/write, no mknod.
    for (at, major, minor, want) in [
        ((2 << 16) | 2, 1, 3, true),
        ((6 << 16) | 2, 1, 9, true),
        ((1 << 16) | 2, 1, 3, false),
        ((2 << 16) | 1, 1, 3, false),
        ((2 << 16) | 2, 1, 1, false),
        (2, 1, 1, false), // no access kind requested: still only for named devices
        (2, 1, 3, true),
    ] {
        assert_eq!(r.device(at, major, minor), want);
        assert_eq!(run(ProgKind::Device, dev_ctx(at, major, minor)), want, "dev {at:#x} {major}:{minor}");
    }
}
