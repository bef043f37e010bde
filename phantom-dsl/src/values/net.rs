//! Network values: CIDR networks, port ranges and protocols.

use super::{char_at, de_str, did_you_mean, span_while, trim, ValueError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

// ---------------------------------------------------------------------------
// CIDR
// ---------------------------------------------------------------------------

const EXPECTED_CIDR: &str = "an IP network such as `10.0.0.0/8`, `192.168.1.5` or `2001:db8::/32`";

/// An IP network: address plus prefix length. Parsed values always have the
/// host bits (the bits after the prefix) zero.
///
/// Display is canonical: `<addr>/<prefix>`, always with the prefix, IPv6 in
/// RFC 5952 form (`2001:db8::/32`, `::1/128`). Serialized as that string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

fn mask4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)
}

fn mask6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0)
}

/// `addr` with everything after `prefix` cleared.
fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask4(prefix))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask6(prefix))),
    }
}

impl Cidr {
    pub fn is_v4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `ip` is inside this network. Address families never mix: an
    /// IPv4 network contains no IPv6 address (not even IPv4-mapped ones).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = mask4(self.prefix);
                u32::from(n) & m == u32::from(a) & m
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = mask6(self.prefix);
                u128::from(n) & m == u128::from(a) & m
            }
            _ => false,
        }
    }

    /// Whether every address of `other` is inside this network.
    pub fn contains_cidr(&self, other: &Cidr) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4() && other.prefix >= self.prefix && self.contains(other.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_cidr(s)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_str(d, "network", parse_cidr)
    }
}

/// Parses an IP network.
///
/// Grammar: `ADDR ('/' PREFIX)?`. ADDR is an IPv4 dotted quad (no leading
/// zeros) or an IPv6 address (no brackets, no `%zone`). PREFIX is decimal,
/// 0..=32 for IPv4 and 0..=128 for IPv6; without it the network is a single
/// host (/32 or /128). Host bits must be zero (`10.0.0.1/8` is an error).
pub fn parse_cidr(s: &str) -> Result<Cidr, ValueError> {
    let (off, t) = trim(s);
    parse_cidr_trimmed(t).map_err(|e| e.shifted(off))
}

fn cerr(msg: impl Into<String>, at: Range<usize>) -> ValueError {
    ValueError::new(msg, EXPECTED_CIDR, at)
}

fn parse_cidr_trimmed(t: &str) -> Result<Cidr, ValueError> {
    if t.is_empty() {
        return Err(cerr("empty network address", 0..0));
    }
    let ws = span_while(t, |c| !c.is_whitespace());
    if ws < t.len() {
        let len = span_while(&t[ws..], char::is_whitespace);
        let fixed: String = t.split_whitespace().collect();
        return Err(cerr("unexpected space in network address", ws..ws + len).with_help(format!("write `{fixed}`")));
    }
    let (addr_s, slash) = match t.find('/') {
        Some(i) => (&t[..i], Some(i)),
        None => (t, None),
    };
    let addr = parse_addr(addr_s)?;

    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    let prefix = match slash {
        None => max,
        Some(i) => parse_prefix(t, i, addr, max, family)?,
    };

    let net = network(addr, prefix);
    if net != addr {
        return Err(cerr(format!("host bits are set in `{t}`"), 0..t.len())
            .with_help(format!("did you mean `{}`?", Cidr { addr: net, prefix })));
    }
    Ok(Cidr { addr, prefix })
}

fn parse_prefix(t: &str, slash: usize, addr: IpAddr, max: u8, family: &str) -> Result<u8, ValueError> {
    let p = &t[slash + 1..];
    let at = slash + 1..t.len();
    if p.is_empty() {
        return Err(cerr("missing prefix length after `/`", slash..slash + 1)
            .with_help(format!("{family} prefixes go from /0 to /{max}")));
    }
    if let Some(i) = p.find('/') {
        return Err(cerr("unexpected second `/`", slash + 1 + i..slash + 2 + i));
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        let mut e = cerr(format!("invalid prefix length `{}`", p.escape_debug()), at);
        if let (IpAddr::V4(_), Ok(mask)) = (addr, p.parse::<Ipv4Addr>()) {
            let m = u32::from(mask);
            if m.leading_ones() + m.trailing_zeros() == 32 {
                e = cerr("netmasks are not supported", e.at).with_help(format!(
                    "write `{}/{}`",
                    &t[..slash],
                    m.leading_ones()
                ));
            } else {
                e = cerr("netmasks are not supported", e.at)
                    .with_help("write the prefix length, e.g. `/24` for 255.255.255.0");
            }
        } else {
            e = e.with_help(format!("{family} prefixes go from /0 to /{max}"));
        }
        return Err(e);
    }
    match p.parse::<u64>() {
        Ok(n) if n <= u64::from(max) => Ok(n as u8),
        _ => Err(cerr(format!("prefix length /{p} is too long for an {family} address"), at)
            .with_help(format!("{family} prefixes go from /0 to /{max}"))),
    }
}

fn parse_addr(a: &str) -> Result<IpAddr, ValueError> {
    let at = 0..a.len();
    if a.is_empty() {
        return Err(cerr("missing address before `/`", 0..0));
    }
    if let Ok(ip) = a.parse::<IpAddr>() {
        return Ok(ip);
    }
    if let Some(inner) = a.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        let e = cerr("brackets are not used around IPv6 addresses", at);
        return Err(if inner.parse::<Ipv6Addr>().is_ok() { e.with_help(format!("write `{inner}`")) } else { e });
    }
    if let Some(i) = a.find('%') {
        return Err(cerr("zone indices are not supported", i..a.len()).with_help(format!("write `{}`", &a[..i])));
    }
    let only_v4_chars = a.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if only_v4_chars {
        return Err(ipv4_error(a));
    }
    if let Some(i) = a.rfind(':') {
        let host = &a[..i];
        if host.parse::<Ipv4Addr>().is_ok() && a[i + 1..].bytes().all(|b| b.is_ascii_digit()) {
            return Err(cerr("a network address has no port", i..a.len())
                .with_help(format!("write `{host}` and give the port separately")));
        }
    }
    if !a.contains(':') && a.chars().any(char::is_alphabetic) {
        return Err(cerr(format!("`{}` is not an IP address", a.escape_debug()), at)
            .with_help("host names are not resolved; write an IP address or network such as `10.0.0.0/8`"));
    }
    Err(cerr(format!("invalid IP address `{}`", a.escape_debug()), at))
}

/// Explains why a string of digits and dots is not an IPv4 address.
fn ipv4_error(a: &str) -> ValueError {
    let mut start = 0;
    let parts: Vec<(&str, Range<usize>)> = a
        .split('.')
        .map(|p| {
            let r = start..start + p.len();
            start += p.len() + 1;
            (p, r)
        })
        .collect();
    for (p, r) in &parts {
        if p.is_empty() {
            let at = if r.start < a.len() { r.start..r.start + 1 } else { a.len() - 1..a.len() };
            return cerr("empty part in IPv4 address", at);
        }
        if p.len() > 1 && p.starts_with('0') {
            return cerr("leading zeros are not allowed in IPv4 addresses", r.clone()).with_help(format!(
                "they are ambiguous (octal in some tools); write `{}`",
                p.trim_start_matches('0').max("0")
            ));
        }
        if p.parse::<u8>().is_err() {
            return cerr(format!("IPv4 address part `{p}` is out of range"), r.clone())
                .with_help("each part of an IPv4 address is 0 to 255");
        }
    }
    let e = cerr("an IPv4 address has four parts", 0..a.len());
    if parts.len() < 4 {
        let padded: Vec<&str> = parts.iter().map(|p| p.0).chain(std::iter::repeat_n("0", 4 - parts.len())).collect();
        return e.with_help(format!("did you mean `{}`?", padded.join(".")));
    }
    e
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

const EXPECTED_PORT: &str = "a port such as `443` or a range such as `8000-8100`";
const PORT_HELP: &str = "ports go from 1 to 65535";

/// An inclusive port range; a single port has `start == end`.
///
/// Display is canonical: `443` for a single port, `8000-8100` otherwise.
/// Serialized as that string (a bare JSON integer is also accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn contains(&self, p: u16) -> bool {
        self.start <= p && p <= self.end
    }
    pub fn overlaps(&self, o: &PortRange) -> bool {
        self.start <= o.end && o.start <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl std::str::FromStr for PortRange {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_port_range(s)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a port range string such as \"8000-8100\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<PortRange, E> {
                parse_port_range(s).map_err(|e| E::custom(format_args!("invalid port range `{s}`: {}", e.message)))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<PortRange, E> {
                match u16::try_from(n) {
                    Ok(p) if p > 0 => Ok(PortRange { start: p, end: p }),
                    _ => Err(E::custom(format_args!("port {n} is out of range: {PORT_HELP}"))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<PortRange, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format_args!("port {n} is out of range: {PORT_HELP}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

fn perr(msg: impl Into<String>, at: Range<usize>) -> ValueError {
    ValueError::new(msg, EXPECTED_PORT, at)
}

/// Parses a port or an inclusive port range.
///
/// Grammar: `PORT ('-' PORT)?`, PORT decimal in 1..=65535, start <= end,
/// no spaces. `N-N` is the same as `N`.
pub fn parse_port_range(s: &str) -> Result<PortRange, ValueError> {
    let (off, t) = trim(s);
    parse_ports_trimmed(t).map_err(|e| e.shifted(off))
}

fn parse_ports_trimmed(t: &str) -> Result<PortRange, ValueError> {
    if t.is_empty() {
        return Err(perr("empty port", 0..0));
    }
    let nws = span_while(t, |c| !c.is_whitespace());
    if nws < t.len() {
        let len = span_while(&t[nws..], char::is_whitespace);
        let fixed: String = t.split_whitespace().collect();
        return Err(perr("unexpected space in port range", nws..nws + len).with_help(format!("write `{fixed}`")));
    }
    let (a, b) = match t.find('-') {
        None => (t, None),
        Some(i) => (&t[..i], Some(i)),
    };
    if a.is_empty() {
        return Err(perr("missing port before `-`", 0..1).with_help(PORT_HELP));
    }
    let start = parse_port(a, 0)?;
    let Some(dash) = b else {
        return Ok(PortRange { start, end: start });
    };
    let b = &t[dash + 1..];
    if b.is_empty() {
        return Err(perr("missing port after `-`", dash..dash + 1)
            .with_help(format!("write `{a}` for a single port or `{a}-<last>` for a range")));
    }
    if let Some(i) = b.find('-') {
        let p = dash + 1 + i;
        return Err(perr("unexpected second `-`", p..p + 1));
    }
    let end = parse_port(b, dash + 1)?;
    if start > end {
        return Err(perr("port range is reversed", 0..t.len()).with_help(format!("did you mean `{end}-{start}`?")));
    }
    Ok(PortRange { start, end })
}

#[rustfmt::skip]
const SERVICES: &[(&str, u16)] = &[
    ("ssh", 22), ("smtp", 25), ("dns", 53), ("domain", 53), ("http", 80), ("ntp", 123),
    ("https", 443), ("imaps", 993), ("mysql", 3306), ("postgres", 5432), ("postgresql", 5432),
];

fn parse_port(p: &str, off: usize) -> Result<u16, ValueError> {
    let at = off..off + p.len();
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        if let Some(&(name, n)) = SERVICES.iter().find(|(name, _)| name.eq_ignore_ascii_case(p)) {
            return Err(perr(format!("service names are not supported: `{name}`"), at)
                .with_help(format!("write the port number: `{n}`")));
        }
        let i = span_while(p, |c| c.is_ascii_digit());
        let (c, cat) = char_at(p, i).unwrap_or((' ', i..i));
        return Err(perr(
            format!("unexpected character `{}` in port", c.escape_debug()),
            cat.start + off..cat.end + off,
        )
        .with_help(PORT_HELP));
    }
    match p.parse::<u64>() {
        Ok(0) => Err(perr("port 0 is not allowed", at).with_help(PORT_HELP)),
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(perr(format!("port {p} is out of range"), at).with_help(PORT_HELP)),
    }
}

// ---------------------------------------------------------------------------
// Protocol
// ---------------------------------------------------------------------------

const EXPECTED_PROTO: &str = "one of `tcp`, `udp`, `icmp` or `any`";

/// A transport protocol. Display and serde use the lower-case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Any,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Any => "any",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_protocol(s)
    }
}

/// Parses a protocol: exactly `tcp`, `udp`, `icmp` or `any` (lower-case).
pub fn parse_protocol(s: &str) -> Result<Protocol, ValueError> {
    let (off, t) = trim(s);
    let p = match t {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "icmp" => Protocol::Icmp,
        "any" => Protocol::Any,
        "" => return Err(ValueError::new("empty protocol", EXPECTED_PROTO, off..off)),
        _ => {
            let e =
                ValueError::new(format!("unknown protocol `{}`", t.escape_debug()), EXPECTED_PROTO, off..off + t.len());
            const NAMES: &[&str] = &["tcp", "udp", "icmp", "any"];
            let help = if let Some(n) = NAMES.iter().find(|n| n.eq_ignore_ascii_case(t)) {
                Some(format!("protocol names are lower-case: did you mean `{n}`?"))
            } else if matches!(t, "all" | "*" | "ip" | "ALL") {
                Some("did you mean `any`?".to_string())
            } else if matches!(t, "sctp" | "dccp" | "udplite" | "raw" | "gre" | "esp") {
                Some("only `tcp`, `udp`, `icmp` and `any` are supported".to_string())
            } else {
                did_you_mean(t, NAMES).map(|n| format!("did you mean `{n}`?"))
            };
            return Err(match help {
                Some(h) => e.with_help(h),
                None => e,
            });
        }
    };
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    #[track_caller]
    fn cidr(s: &str) -> Cidr {
        match parse_cidr(s) {
            Ok(c) => c,
            Err(e) => panic!("{s:?}: {e:?}"),
        }
    }
    #[track_caller]
    fn cbad(s: &str) -> ValueError {
        match parse_cidr(s) {
            Ok(c) => panic!("{s:?} parsed as {c}"),
            Err(e) => e,
        }
    }

    #[test]
    fn cidr_valid() {
        assert_eq!(cidr("10.0.0.0/8"), Cidr { addr: v4("10.0.0.0"), prefix: 8 });
        assert_eq!(cidr("192.168.1.5"), Cidr { addr: v4("192.168.1.5"), prefix: 32 });
        assert_eq!(cidr("2001:db8::/32"), Cidr { addr: ip("2001:db8::"), prefix: 32 });
        assert_eq!(cidr("::1"), Cidr { addr: ip("::1"), prefix: 128 });
        assert_eq!(cidr("0.0.0.0/0"), Cidr { addr: v4("0.0.0.0"), prefix: 0 });
        assert_eq!(cidr("::/0").prefix, 0);
        assert_eq!(cidr("255.255.255.255/32").prefix, 32);
        assert_eq!(cidr("10.1.2.3/32").prefix, 32);
        assert_eq!(cidr("2001:DB8::/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("2001:0db8:0000::/48").to_string(), "2001:db8::/48");
        assert_eq!(cidr("::ffff:10.0.0.1").to_string(), "::ffff:10.0.0.1/128");
        assert_eq!(cidr(" 10.0.0.0/08 ").prefix, 8);
        assert!(cidr("10.0.0.0/8").is_v4());
        assert!(!cidr("::/0").is_v4());
    }

    #[test]
    fn cidr_invalid() {
        let e = cbad("10.0.0.1/8");
        assert_eq!(e.message, "host bits are set in `10.0.0.1/8`");
        assert_eq!(e.help.as_deref(), Some("did you mean `10.0.0.0/8`?"));
        assert_eq!(e.at, 0..10);
        assert_eq!(cbad("2001:db8::1/32").help.as_deref(), Some("did you mean `2001:db8::/32`?"));
        assert_eq!(cbad("0.0.0.1/0").help.as_deref(), Some("did you mean `0.0.0.0/0`?"));
        let e = cbad("10.0.0.0/33");
        assert_eq!((e.message.as_str(), e.at.clone()), ("prefix length /33 is too long for an IPv4 address", 9..11));
        assert_eq!(e.help.as_deref(), Some("IPv4 prefixes go from /0 to /32"));
        assert_eq!(cbad("::/129").message, "prefix length /129 is too long for an IPv6 address");
        assert_eq!(cbad("::/99999999999999999999999").at, 3..26);
        let e = cbad("10.0.0.0/");
        assert_eq!((e.message.as_str(), e.at), ("missing prefix length after `/`", 8..9));
        assert_eq!(cbad("10.0.0.0/x").message, "invalid prefix length `x`");
        assert_eq!(cbad("10.0.0.0/-1").message, "invalid prefix length `-1`");
        assert_eq!(cbad("10.0.0.0/8/8").at, 10..11);
        let e = cbad("10.0.0.0/255.0.0.0");
        assert_eq!((e.message.as_str(), e.help.as_deref()), ("netmasks are not supported", Some("write `10.0.0.0/8`")));
        let e = cbad("");
        assert_eq!((e.message.as_str(), e.at), ("empty network address", 0..0));
        assert_eq!(cbad("/8").message, "missing address before `/`");
        let e = cbad("256.0.0.0/8");
        assert_eq!((e.message.as_str(), e.at.clone()), ("IPv4 address part `256` is out of range", 0..3));
        let e = cbad("10.010.0.0/16");
        assert_eq!((e.message.as_str(), e.at.clone()), ("leading zeros are not allowed in IPv4 addresses", 3..6));
        assert_eq!(e.help.as_deref(), Some("they are ambiguous (octal in some tools); write `10`"));
        assert_eq!(cbad("10.00.0.0").help.as_deref(), Some("they are ambiguous (octal in some tools); write `0`"));
        let e = cbad("10/8");
        assert_eq!(
            (e.message.as_str(), e.help.as_deref()),
            ("an IPv4 address has four parts", Some("did you mean `10.0.0.0`?"))
        );
        assert_eq!(cbad("1.2.3.4.5").message, "an IPv4 address has four parts");
        assert_eq!(cbad("10..0.0").at, 3..4);
        assert_eq!(cbad("10.0.0.").at, 6..7);
        assert_eq!(cbad("[::1]").help.as_deref(), Some("write `::1`"));
        assert_eq!(cbad("fe80::1%eth0").at, 7..12);
        assert_eq!(cbad("10.0.0.1:80").message, "a network address has no port");
        assert_eq!(cbad("example.com").message, "`example.com` is not an IP address");
        assert_eq!(cbad("2001:db8::g").message, "invalid IP address `2001:db8::g`");
        assert_eq!(cbad("10.0.0.0 /8").at, 8..9);
        assert_eq!(cbad("10.0.0.0/8 x").message, "unexpected space in network address");
    }

    #[test]
    fn cidr_contains() {
        let n = cidr("10.0.0.0/8");
        assert!(n.contains(v4("10.255.1.2")));
        assert!(n.contains(v4("10.0.0.0")));
        assert!(!n.contains(v4("11.0.0.0")));
        assert!(!n.contains(ip("::ffff:10.0.0.1")));
        assert!(cidr("0.0.0.0/0").contains(v4("1.2.3.4")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!cidr("2001:db8::/32").contains(ip("2001:db9::")));
        assert!(cidr("1.2.3.4").contains(v4("1.2.3.4")));
        assert!(!cidr("1.2.3.4").contains(v4("1.2.3.5")));
        assert!(n.contains_cidr(&cidr("10.1.0.0/16")));
        assert!(n.contains_cidr(&n));
        assert!(!cidr("10.1.0.0/16").contains_cidr(&n));
        assert!(!n.contains_cidr(&cidr("11.0.0.0/16")));
        assert!(!cidr("::/0").contains_cidr(&cidr("0.0.0.0/0")));
        assert!(cidr("::/0").contains_cidr(&cidr("::1")));
        // Hand-built values with host bits still compare by network.
        let odd = Cidr { addr: v4("10.1.2.3"), prefix: 8 };
        assert!(odd.contains(v4("10.9.9.9")));
        let huge = Cidr { addr: v4("10.1.2.3"), prefix: 200 };
        assert!(huge.contains(v4("10.1.2.3")));
    }

    #[test]
    fn cidr_round_trip_and_serde() {
        for s in [
            "10.0.0.0/8",
            "192.168.1.5",
            "2001:db8::/32",
            "::1",
            "0.0.0.0/0",
            "::/0",
            "fe80::/10",
            "::ffff:0.0.0.0/96",
            "1.2.3.4/32",
        ] {
            let c = cidr(s);
            assert_eq!(parse_cidr(&c.to_string()), Ok(c), "{s}");
        }
        assert_eq!(cidr("192.168.1.5").to_string(), "192.168.1.5/32");
        assert_eq!(cidr("::1").to_string(), "::1/128");
        let c = cidr("10.0.0.0/8");
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"10.0.0.0/8\"");
        assert_eq!(serde_json::from_str::<Cidr>("\"10.0.0.0/8\"").unwrap(), c);
        assert_eq!(serde_json::from_str::<Cidr>("\"::1\"").unwrap(), cidr("::1/128"));
        let e = serde_json::from_str::<Cidr>("\"10.0.0.1/8\"").unwrap_err().to_string();
        assert!(e.contains("host bits are set"), "{e}");
        assert!(serde_json::from_str::<Cidr>("8").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port_range("443"), Ok(PortRange { start: 443, end: 443 }));
        assert_eq!(parse_port_range("8000-8100"), Ok(PortRange { start: 8000, end: 8100 }));
        assert_eq!(parse_port_range("1-65535"), Ok(PortRange { start: 1, end: 65535 }));
        assert_eq!(parse_port_range(" 80 "), Ok(PortRange { start: 80, end: 80 }));
        assert_eq!(parse_port_range("80-80"), Ok(PortRange { start: 80, end: 80 }));
        assert_eq!(parse_port_range("080"), Ok(PortRange { start: 80, end: 80 }));

        let bad = |s: &str| parse_port_range(s).unwrap_err();
        let e = bad("0");
        assert_eq!(
            (e.message.as_str(), e.at.clone(), e.help.as_deref()),
            ("port 0 is not allowed", 0..1, Some(PORT_HELP))
        );
        let e = bad("65536");
        assert_eq!((e.message.as_str(), e.at), ("port 65536 is out of range", 0..5));
        assert_eq!(bad("1-99999999999999999999999").at, 2..25);
        let e = bad("8100-8000");
        assert_eq!(
            (e.message.as_str(), e.at.clone(), e.help.as_deref()),
            ("port range is reversed", 0..9, Some("did you mean `8000-8100`?"))
        );
        assert_eq!(bad("").message, "empty port");
        assert_eq!(bad("-80").message, "missing port before `-`");
        assert_eq!(bad("80-").at, 2..3);
        assert_eq!(bad("1-2-3").at, 3..4);
        assert_eq!(bad("8000 - 8100").help.as_deref(), Some("write `8000-8100`"));
        let e = bad("https");
        assert_eq!(
            (e.message.as_str(), e.help.as_deref()),
            ("service names are not supported: `https`", Some("write the port number: `443`"))
        );
        assert_eq!(bad("80a").at, 2..3);
        assert_eq!(bad("1-0x10").at, 3..4);
        assert_eq!(bad("8🦀").at, 1..5);
        assert_eq!(bad("+80").message, "unexpected character `+` in port");
    }

    #[test]
    fn port_methods_round_trip_serde() {
        let r = PortRange { start: 8000, end: 8100 };
        assert!(r.contains(8000) && r.contains(8100) && r.contains(8050));
        assert!(!r.contains(7999) && !r.contains(8101));
        assert!(r.overlaps(&PortRange { start: 8100, end: 9000 }));
        assert!(r.overlaps(&PortRange { start: 1, end: 8000 }));
        assert!(r.overlaps(&PortRange { start: 8050, end: 8050 }));
        assert!(!r.overlaps(&PortRange { start: 8101, end: 9000 }));
        assert!(!r.overlaps(&PortRange { start: 1, end: 7999 }));
        for (a, b) in [(1, 1), (443, 443), (8000, 8100), (1, 65535), (65535, 65535)] {
            let r = PortRange { start: a, end: b };
            assert_eq!(parse_port_range(&r.to_string()), Ok(r));
        }
        assert_eq!(PortRange { start: 443, end: 443 }.to_string(), "443");
        assert_eq!(r.to_string(), "8000-8100");
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"8000-8100\"");
        assert_eq!(serde_json::from_str::<PortRange>("\"8000-8100\"").unwrap(), r);
        assert_eq!(serde_json::from_str::<PortRange>("443").unwrap(), PortRange { start: 443, end: 443 });
        assert!(serde_json::from_str::<PortRange>("0").is_err());
        assert!(serde_json::from_str::<PortRange>("70000").is_err());
        assert!(serde_json::from_str::<PortRange>("-1").is_err());
        assert!(serde_json::from_str::<PortRange>("\"9-1\"").is_err());
    }

    #[test]
    fn protocols() {
        for (s, p) in [("tcp", Protocol::Tcp), ("udp", Protocol::Udp), ("icmp", Protocol::Icmp), ("any", Protocol::Any)]
        {
            assert_eq!(parse_protocol(s), Ok(p));
            assert_eq!(p.to_string(), s);
            assert_eq!(parse_protocol(&p.to_string()), Ok(p));
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Protocol>(&format!("\"{s}\"")).unwrap(), p);
        }
        assert_eq!(parse_protocol(" tcp "), Ok(Protocol::Tcp));
        let e = parse_protocol("TCP").unwrap_err();
        assert_eq!((e.message.as_str(), e.at.clone()), ("unknown protocol `TCP`", 0..3));
        assert_eq!(e.help.as_deref(), Some("protocol names are lower-case: did you mean `tcp`?"));
        assert_eq!(parse_protocol("icmpv6").unwrap_err().help.as_deref(), Some("did you mean `icmp`?"));
        assert_eq!(parse_protocol("icmp6").unwrap_err().help.as_deref(), Some("did you mean `icmp`?"));
        assert_eq!(parse_protocol("udpp").unwrap_err().help.as_deref(), Some("did you mean `udp`?"));
        assert_eq!(parse_protocol("all").unwrap_err().help.as_deref(), Some("did you mean `any`?"));
        assert_eq!(
            parse_protocol("sctp").unwrap_err().help.as_deref(),
            Some("only `tcp`, `udp`, `icmp` and `any` are supported")
        );
        assert_eq!(parse_protocol("frobnicate").unwrap_err().help.as_deref(), None);
        let e = parse_protocol("  ").unwrap_err();
        assert_eq!((e.message.as_str(), e.at), ("empty protocol", 2..2));
        assert_eq!(parse_protocol(" quic").unwrap_err().at, 1..5);
    }
}
