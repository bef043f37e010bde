//! `network` and `devices`.

use super::fields::Decoder;
use crate::diag::Diagnostic;
use crate::ir::*;
use crate::syntax::Node;
use crate::values::{parse_cidr, parse_port_range, parse_protocol, parse_u32_in, Protocol};
use std::collections::BTreeSet;

pub(crate) fn decode_network(d: &mut Decoder, n: Option<&Node>) -> NetworkPolicy {
    let mut p = NetworkPolicy { mode: NetMode::None, egress: Vec::new(), ingress: Vec::new(), bind: Vec::new() };
    let Some(n) = n else { return p };
    let Some(f) = d.map(n, "network", &["mode", "egress", "ingress", "bind"], "network:\n  mode: loopback-only") else {
        return p;
    };
    if let Some(m) = f.get("mode") {
        if let Some(m) = d.keyword(
            m,
            "network.mode",
            &[("none", NetMode::None), ("loopback-only", NetMode::LoopbackOnly), ("allowlist", NetMode::Allowlist)],
        ) {
            p.mode = m;
        }
    }
    if let Some(v) = f.get("egress") {
        for item in d.list(v, "network.egress", "egress:\n  - to: 10.0.0.0/8\n    ports: [443]") {
            if let Some(r) = decode_net_rule(d, item, "to") {
                p.egress.push(r);
            }
        }
    }
    if let Some(v) = f.get("ingress") {
        for item in d.list(v, "network.ingress", "ingress:\n  - from: 10.0.0.0/8\n    ports: [8080]") {
            if let Some(r) = decode_net_rule(d, item, "from") {
                p.ingress.push(r);
            }
        }
    }
    if let Some(v) = f.get("bind") {
        for item in d.list(v, "network.bind", "bind:\n  - ports: [8080]") {
            let Some(rf) = d.map(item, "bind rule", &["ports", "protocol"], "- ports: [8080]\n  protocol: tcp") else {
                continue;
            };
            let protocol =
                rf.get("protocol").and_then(|n| d.value(n, "protocol", parse_protocol)).unwrap_or(Protocol::Tcp);
            let ports = match rf.get("ports") {
                Some(pn) => ports(d, pn),
                None => {
                    d.missing(&rf, "ports", "bind rule", "ports: [8080]");
                    continue;
                }
            };
            if matches!(protocol, Protocol::Icmp) {
                d.push(
                    Diagnostic::error(
                        "P0105",
                        rf.get("protocol").map_or(item.span, |n| n.span),
                        "icmp sockets cannot bind ports",
                    )
                    .help("use `tcp` or `udp`"),
                );
                continue;
            }
            p.bind.push(BindRule { ports, protocol, origin: d.origin(item.span) });
        }
    }
    p
}

fn ports(d: &mut Decoder, n: &Node) -> Vec<crate::values::PortRange> {
    reject_empty_list(d, n, "ports");
    d.one_or_many(n, "ports", "ports: [443, 8000-8100]")
        .into_iter()
        .filter_map(|p| d.value(p, "port", parse_port_range))
        .collect()
}

fn decode_net_rule(d: &mut Decoder, item: &Node, peer_key: &str) -> Option<NetRule> {
    let rf = d.map(
        item,
        "network rule",
        &[peer_key, "ports", "protocol"],
        &format!("- {peer_key}: 10.0.0.0/8\n  ports: [443]\n  protocol: tcp"),
    )?;
    let cidrs = match rf.get(peer_key) {
        Some(c) if reject_empty_list(d, c, peer_key) => Vec::new(),
        Some(c) => d
            .one_or_many(c, peer_key, "to: [10.0.0.0/8, 2001:db8::/32]")
            .into_iter()
            .filter_map(|c| d.value(c, "address", parse_cidr))
            .collect(),
        None => Vec::new(),
    };
    let protocol = rf.get("protocol").and_then(|n| d.value(n, "protocol", parse_protocol)).unwrap_or(Protocol::Any);
    let ports = rf.get("ports").map(|n| ports(d, n)).unwrap_or_default();
    if protocol == Protocol::Icmp && !ports.is_empty() {
        d.push(
            Diagnostic::error("P0201", rf.get("ports").map_or(item.span, |n| n.span), "icmp has no ports")
                .help("remove `ports`, or use `protocol: tcp` or `udp`"),
        );
        return None;
    }
    if rf.get(peer_key).is_none() && rf.get("ports").is_none() && rf.get("protocol").is_none() {
        d.push(Diagnostic::error("P0103", item.span, "an empty network rule would match all traffic").help(format!(
            "add `{peer_key}:`, `ports:` or `protocol:`; to allow everything write `{peer_key}: [0.0.0.0/0, ::/0]`"
        )));
        return None;
    }
    Some(NetRule { cidrs, ports, protocol, origin: d.origin(item.span) })
}

/// `[]` where "any" is meant by omitting the key: an error, since an empty
/// list reads as "none" but would match everything. Returns true if empty.
fn reject_empty_list(d: &mut Decoder, n: &Node, key: &str) -> bool {
    if n.as_seq().is_some_and(<[_]>::is_empty) {
        d.push(Diagnostic::error("P0103", n.span, format!("empty `{key}` list")).help(format!(
            "omit `{key}` to match any; an empty list is not allowed because it would read as \"none\""
        )));
        return true;
    }
    false
}

pub(crate) fn decode_devices(d: &mut Decoder, n: Option<&Node>) -> DevicePolicy {
    let mut p = DevicePolicy { allow: Vec::new() };
    let Some(n) = n else { return p };
    let Some(f) = d.map(
        n,
        "devices",
        &["allow"],
        "devices:\n  allow:\n    - {type: char, major: 1, minor: 3, access: [read, write]}",
    ) else {
        return p;
    };
    let Some(v) = f.get("allow") else { return p };
    for item in d.list(v, "devices.allow", "allow:\n  - {type: char, major: 1, minor: 3, access: [read, write]}") {
        let Some(rf) = d.map(
            item,
            "device rule",
            &["type", "major", "minor", "access"],
            "- {type: char, major: 1, minor: 3, access: [read, write]}",
        ) else {
            continue;
        };
        let kind = match rf.get("type") {
            Some(t) => d.keyword(
                t,
                "device type",
                &[("char", DeviceType::Char), ("block", DeviceType::Block), ("any", DeviceType::Any)],
            ),
            None => {
                d.missing(&rf, "type", "device rule", "type: char");
                None
            }
        };
        let mut num = |key: &str| -> Option<Option<u32>> {
            match rf.get(key) {
                None => Some(None),
                Some(v) if v.as_scalar().is_some_and(|s| s.text == "*") => Some(None),
                Some(v) => {
                    // Linux device numbers: 12-bit major, 20-bit minor.
                    let max = if key == "major" { 4095 } else { (1 << 20) - 1 };
                    d.value(v, &format!("device {key}"), |s| parse_u32_in(s, 0, max, "a device number")).map(Some)
                }
            }
        };
        let (major, minor) = (num("major"), num("minor"));
        let access = match rf.get("access") {
            Some(a) => {
                let mut set = BTreeSet::new();
                for i in d.one_or_many(a, "device access", "access: [read, write]") {
                    if let Some(x) = d.keyword(
                        i,
                        "device access",
                        &[("read", DeviceAccess::Read), ("write", DeviceAccess::Write), ("mknod", DeviceAccess::Mknod)],
                    ) {
                        set.insert(x);
                    }
                }
                if set.is_empty() {
                    d.push(
                        Diagnostic::error("P0103", a.span, "empty device `access`").help("list read, write or mknod"),
                    );
                    None
                } else {
                    Some(set)
                }
            }
            None => {
                d.missing(&rf, "access", "device rule", "access: [read, write]");
                None
            }
        };
        if let (Some(kind), Some(major), Some(minor), Some(access)) = (kind, major, minor, access) {
            p.allow.push(DeviceRule { kind, major, minor, access, origin: d.origin(item.span) });
        }
    }
    p
}
