//! Value grammars of the Phantom policy language.
//!
//! Every function here is a pure parser from one scalar string (the text of a
//! single value in a policy) to a typed value. Errors carry the byte range of
//! the offending part *inside that scalar*, so the caller can add the scalar's
//! own offset and put a caret under it.
//!
//! Every type has a canonical `Display` form that parses back to the same
//! value: `parse(x.to_string()) == Ok(x)`.
//!
//! Shared conventions (see the individual modules for each grammar):
//! - whitespace around the whole scalar is ignored;
//! - whitespace *inside* a value is an error (except in argument conditions,
//!   where it is optional between tokens and after `errno` in actions);
//! - keywords and units are case-sensitive.

mod cpu;
mod duration;
mod net;
mod seccomp;
mod size;

pub use cpu::{parse_cpu, Cpu};
pub use duration::{parse_duration, Duration};
pub use net::{parse_cidr, parse_port_range, parse_protocol, Cidr, PortRange, Protocol};
pub use seccomp::{errno_name, errno_number, parse_action, parse_arg_condition, Action, ArgCondition, CmpOp};
pub use size::{parse_size, Size};

use std::fmt;
use std::ops::Range;

/// Error in a scalar. `at` is the byte range inside the scalar text that is
/// wrong (used to put a caret under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// Short, lower-case description: "unknown size unit `mb`".
    pub message: String,
    /// What would have been valid: "a size such as `512MB` or `1GiB`".
    pub expected: String,
    /// Optional concrete suggestion.
    pub help: Option<String>,
    /// Byte range inside the scalar; always within the input and on `char`
    /// boundaries (may be empty, e.g. `len..len` for "missing ..." errors).
    pub at: Range<usize>,
}

impl ValueError {
    pub fn new(message: impl Into<String>, expected: impl Into<String>, at: Range<usize>) -> Self {
        ValueError { message: message.into(), expected: expected.into(), help: None, at }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Moves `at` right by `by` bytes (for errors found in a sub-slice).
    pub fn shifted(mut self, by: usize) -> Self {
        self.at = self.at.start + by..self.at.end + by;
        self
    }

    pub(crate) fn with_expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = expected.into();
        self
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValueError {}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// Strips surrounding whitespace; returns the byte offset of the kept part.
pub(crate) fn trim(s: &str) -> (usize, &str) {
    let start = s.len() - s.trim_start().len();
    (start, s.trim())
}

/// The char starting at byte `i` (which must be a char boundary) and its range.
pub(crate) fn char_at(s: &str, i: usize) -> Option<(char, Range<usize>)> {
    let c = s.get(i..)?.chars().next()?;
    Some((c, i..i + c.len_utf8()))
}

/// Length in bytes of the leading run of chars satisfying `pred`.
pub(crate) fn span_while(s: &str, pred: impl Fn(char) -> bool) -> usize {
    s.char_indices().find(|&(_, c)| !pred(c)).map_or(s.len(), |(i, _)| i)
}

/// Serde helper: deserialize a value from its string form with a parser.
pub(crate) fn de_str<'de, D, T>(
    d: D,
    what: &'static str,
    parse: fn(&str) -> Result<T, ValueError>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    parse(&s).map_err(|e| {
        serde::de::Error::custom(format_args!("invalid {what} `{s}`: {}; expected {}", e.message, e.expected))
    })
}

/// Closest candidate by edit distance, if reasonably close.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_lowercase();
    if let Some(c) = candidates.iter().find(|c| c.to_lowercase() == lower) {
        return Some(c);
    }
    let (best, dist) =
        candidates.iter().map(|c| (*c, strsim::levenshtein(&lower, &c.to_lowercase()))).min_by_key(|&(_, d)| d)?;
    let limit = if word.chars().count() <= 3 { 1 } else { 2 };
    (dist <= limit).then_some(best)
}

// ---------------------------------------------------------------------------
// Integers
// ---------------------------------------------------------------------------

const EXPECTED_INT: &str = "an unsigned integer such as `42`, `0x2a`, `0o52` or `0b101010`";
pub(crate) const MSG_TOO_LARGE: &str = "number is too large";

/// Unsigned 64-bit integer: decimal, `0x` hex, `0o` octal or `0b` binary.
///
/// `_` may separate digits (`1_000_000`, `0xffff_ffff`) but may not lead,
/// trail or repeat. No sign. Decimal numbers may not have leading zeros
/// (`0755` is an error: it is ambiguous with C octal; write `0o755` or `755`).
/// Radix prefixes are lower-case; hex digits may be either case.
pub fn parse_u64(s: &str) -> Result<u64, ValueError> {
    let (off, t) = trim(s);
    parse_u64_exact(t).map_err(|e| e.shifted(off))
}

/// Like [`parse_u64`] but without trimming (offsets relative to `t`).
pub(crate) fn parse_u64_exact(t: &str) -> Result<u64, ValueError> {
    let err = |msg: String, at: Range<usize>| ValueError::new(msg, EXPECTED_INT, at);
    let Some((first, first_at)) = char_at(t, 0) else {
        return Err(err("empty number".into(), 0..0));
    };
    match first {
        '-' => {
            let mut e = err("negative numbers are not allowed".into(), first_at);
            if let Ok(n) = parse_u64_exact(&t[1..]) {
                if n != 0 {
                    e = e.with_help(format!(
                        "values are unsigned 64-bit integers; -{n} in two's complement is `{:#x}`",
                        0u64.wrapping_sub(n)
                    ));
                }
            }
            return Err(e);
        }
        '+' => {
            return Err(
                err("a sign is not allowed".into(), first_at).with_help(format!("remove the `+`: `{}`", &t[1..]))
            )
        }
        _ => {}
    }

    let bytes = t.as_bytes();
    let (radix, start, radix_name) = match (bytes.first(), bytes.get(1)) {
        (Some(b'0'), Some(b'x')) => (16, 2, "a hexadecimal"),
        (Some(b'0'), Some(b'o')) => (8, 2, "an octal"),
        (Some(b'0'), Some(b'b')) => (2, 2, "a binary"),
        (Some(b'0'), Some(p @ (b'X' | b'O' | b'B'))) => {
            let lower = (*p as char).to_ascii_lowercase();
            return Err(
                err("radix prefix must be lower-case".into(), 0..2).with_help(format!("write `0{lower}{}`", &t[2..]))
            );
        }
        _ => (10, 0, "a decimal"),
    };
    let digits = &t[start..];
    if digits.is_empty() {
        return Err(err(format!("missing digits after `{}`", &t[..2]), 0..2));
    }

    let mut value: u64 = 0;
    let mut overflow = false;
    let mut prev_underscore = true; // a leading `_` is as bad as a doubled one
    for (i, c) in digits.char_indices() {
        let at = start + i..start + i + c.len_utf8();
        if c == '_' {
            if prev_underscore {
                return Err(err("`_` must be between digits".into(), at));
            }
            prev_underscore = true;
            continue;
        }
        prev_underscore = false;
        match c.to_digit(radix) {
            Some(d) => match value.checked_mul(u64::from(radix)).and_then(|v| v.checked_add(u64::from(d))) {
                Some(v) => value = v,
                None => overflow = true,
            },
            None => {
                let e = if c == '.' {
                    err("fractions are not allowed here".into(), at).with_help("write a whole number")
                } else if c.is_ascii_digit() {
                    err(format!("invalid digit `{c}` in {radix_name} number"), at)
                } else {
                    err(format!("unexpected character `{}`", c.escape_debug()), at)
                };
                let looks_hex =
                    t.bytes().all(|b| b.is_ascii_hexdigit() || b == b'_') && t.bytes().any(|b| b.is_ascii_alphabetic());
                let exponent = {
                    let after = &digits[i + c.len_utf8()..];
                    let after = after.strip_prefix(['+', '-']).unwrap_or(after);
                    !after.is_empty() && after.bytes().all(|b| b.is_ascii_digit())
                };
                let e = if radix == 10 && (c == 'e' || c == 'E') && i > 0 && exponent {
                    e.with_help("exponent notation is not supported; write the number in full")
                } else if radix == 10 && looks_hex {
                    e.with_help(format!("hexadecimal numbers start with `0x`: `0x{t}`"))
                } else {
                    e
                };
                return Err(e);
            }
        }
    }
    if prev_underscore {
        let end = t.len();
        return Err(err("`_` must be between digits".into(), end - 1..end));
    }
    if radix == 10 && t.len() > 1 && t.starts_with('0') {
        let plain: String = t.chars().filter(|&c| c != '_').collect();
        let dec = plain.trim_start_matches('0');
        let dec = if dec.is_empty() { "0" } else { dec };
        let help = if plain.chars().all(|c| ('0'..='7').contains(&c)) {
            format!("write `{dec}` for decimal or `0o{dec}` for octal")
        } else {
            format!("write `{dec}`")
        };
        return Err(err("leading zeros are not allowed".into(), 0..1).with_help(help));
    }
    if overflow {
        return Err(err(MSG_TOO_LARGE.into(), 0..t.len()).with_help(format!(
            "the largest value is {} ({:#x})",
            u64::MAX,
            u64::MAX
        )));
    }
    Ok(value)
}

/// An integer in `min..=max` (any [`parse_u64`] form), e.g. a pid limit.
/// `what` describes the quantity for `expected`, e.g. "a number of
/// processes" gives "a number of processes from 1 to 4194304".
pub fn parse_u32_in(s: &str, min: u32, max: u32, what: &str) -> Result<u32, ValueError> {
    let (off, t) = trim(s);
    let expected = format!("{what} from {min} to {max}");
    let at = off..off + t.len();
    let above = || {
        ValueError::new(format!("`{t}` is above the maximum of {max}"), expected.clone(), at.clone())
            .with_help(format!("the largest allowed value is {max}"))
    };
    let n = match parse_u64_exact(t) {
        Ok(n) => n,
        Err(e) if e.message == MSG_TOO_LARGE => return Err(above()),
        Err(e) => return Err(e.shifted(off).with_expected(expected)),
    };
    if n < u64::from(min) {
        return Err(ValueError::new(format!("`{t}` is below the minimum of {min}"), expected, at)
            .with_help(format!("the smallest allowed value is {min}")));
    }
    if n > u64::from(max) {
        return Err(above());
    }
    // n <= max <= u32::MAX
    Ok(u32::try_from(n).unwrap_or(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn err(s: &str) -> ValueError {
        match parse_u64(s) {
            Ok(v) => panic!("{s:?} parsed as {v}"),
            Err(e) => e,
        }
    }

    #[test]
    fn u64_valid() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("7", 7),
            ("42", 42),
            ("1_000_000", 1_000_000),
            ("0x2a", 42),
            ("0x2A", 42),
            ("0xffff_ffff", 0xffff_ffff),
            ("0o755", 0o755),
            ("0b1010", 10),
            ("0b1_0", 2),
            ("18446744073709551615", u64::MAX),
            ("0xffffffffffffffff", u64::MAX),
            ("0x0000000000000000000001", 1),
            ("0x0", 0),
            ("0o0", 0),
            ("0b0", 0),
            ("  12  ", 12),
        ];
        for &(s, want) in cases {
            assert_eq!(parse_u64(s), Ok(want), "{s:?}");
        }
    }

    #[test]
    fn u64_invalid() {
        let e = err("");
        assert_eq!((e.message.as_str(), e.at, e.expected.as_str()), ("empty number", 0..0, EXPECTED_INT));
        assert_eq!(err("   ").at, 3..3);
        let e = err("-1");
        assert_eq!((e.message.as_str(), e.at.clone()), ("negative numbers are not allowed", 0..1));
        assert!(e.help.unwrap().contains("`0xffffffffffffffff`"));
        assert_eq!(err("-0").help, None);
        assert_eq!(err("+1").at, 0..1);
        let e = err("18446744073709551616");
        assert_eq!((e.message.as_str(), e.at), (MSG_TOO_LARGE, 0..20));
        assert_eq!(err(" 0x1_0000_0000_0000_0000").at, 1..24);
        let e = err("0755");
        assert_eq!((e.message.as_str(), e.at.clone()), ("leading zeros are not allowed", 0..1));
        assert_eq!(e.help.as_deref(), Some("write `755` for decimal or `0o755` for octal"));
        assert_eq!(err("09").help.as_deref(), Some("write `9`"));
        assert_eq!(err("00").help.as_deref(), Some("write `0` for decimal or `0o0` for octal"));
        assert_eq!(err("0_1").message, "leading zeros are not allowed");
        let e = err("0x");
        assert_eq!((e.message.as_str(), e.at), ("missing digits after `0x`", 0..2));
        assert_eq!(err("0b").message, "missing digits after `0b`");
        assert_eq!(err("0X1f").help.as_deref(), Some("write `0x1f`"));
        let e = err("0o8");
        assert_eq!((e.message.as_str(), e.at), ("invalid digit `8` in an octal number", 2..3));
        assert_eq!(err("0b102").message, "invalid digit `2` in a binary number");
        assert_eq!(err("0b102").at, 4..5);
        let e = err("1f");
        assert_eq!(
            (e.message.as_str(), e.help.as_deref()),
            ("unexpected character `f`", Some("hexadecimal numbers start with `0x`: `0x1f`"))
        );
        assert_eq!(err("12z").help, None);
        assert_eq!(err("0xfg").at, 3..4);
        let e = err("1e9");
        assert_eq!(e.at, 1..2);
        assert_eq!(e.help.as_deref(), Some("exponent notation is not supported; write the number in full"));
        assert_eq!(err("1ea").help.as_deref(), Some("hexadecimal numbers start with `0x`: `0x1ea`"));
        let e = err("1e+9");
        assert_eq!(e.help.as_deref(), Some("exponent notation is not supported; write the number in full"));
        assert_eq!(err("1.5").message, "fractions are not allowed here");
        assert_eq!(err("_1").at, 0..1);
        assert_eq!(err("1_").at, 1..2);
        assert_eq!(err("1__0").at, 2..3);
        assert_eq!(err("0x_1").at, 2..3);
        assert_eq!(err("0b_1").at, 2..3);
        assert_eq!(err("1é").at, 1..3);
        assert_eq!(err(" 1 2").at, 2..3);
        assert_eq!(err("١").at, 0..2); // Arabic-Indic digit one
    }

    #[test]
    fn u32_in() {
        assert_eq!(parse_u32_in("1", 1, 10, "pids"), Ok(1));
        assert_eq!(parse_u32_in("10", 1, 10, "pids"), Ok(10));
        assert_eq!(parse_u32_in("0xa", 1, 10, "pids"), Ok(10));
        assert_eq!(parse_u32_in("1_0", 1, 10, "pids"), Ok(10));
        let e = parse_u32_in("0", 1, 10, "a number of processes").unwrap_err();
        assert_eq!((e.message.as_str(), e.at), ("`0` is below the minimum of 1", 0..1));
        assert_eq!(e.expected, "a number of processes from 1 to 10");
        assert_eq!(e.help.as_deref(), Some("the smallest allowed value is 1"));
        let e = parse_u32_in(" 11", 1, 10, "pids").unwrap_err();
        assert_eq!((e.message.as_str(), e.at), ("`11` is above the maximum of 10", 1..3));
        let e = parse_u32_in("99999999999999999999999", 1, 10, "pids").unwrap_err();
        assert_eq!((e.message.as_str(), e.at), ("`99999999999999999999999` is above the maximum of 10", 0..23));
        let e = parse_u32_in(" x", 1, 10, "a number of file descriptors").unwrap_err();
        assert_eq!((e.message.as_str(), e.at), ("unexpected character `x`", 1..2));
        assert_eq!(e.expected, "a number of file descriptors from 1 to 10");
        assert_eq!(parse_u32_in("-1", 0, 10, "n").unwrap_err().message, "negative numbers are not allowed");
        assert_eq!(parse_u32_in("4294967295", 0, u32::MAX, "n"), Ok(u32::MAX));
        assert!(parse_u32_in("4294967296", 0, u32::MAX, "n").is_err());
        assert!(parse_u32_in("5", 10, 1, "n").is_err()); // empty range: never panics
    }

    #[test]
    fn did_you_mean_works() {
        assert_eq!(did_you_mean("TCP", &["tcp", "udp"]), Some("tcp"));
        assert_eq!(did_you_mean("tpc", &["tcp", "udp"]), None); // distance 2, short word
        assert_eq!(did_you_mean("kill_process", &["kill-process", "allow"]), Some("kill-process"));
        assert_eq!(did_you_mean("zzzzzz", &["allow"]), None);
    }

    // ---- robustness: no parser panics, every `at` is in bounds ----

    const WEIRD: &[&str] = &[
        "",
        " ",
        "-",
        "+",
        "_",
        ".",
        "/",
        "&",
        "=",
        "==",
        "9999999999999999999999",
        "1e9",
        "0x",
        "0b",
        "0o",
        "0B",
        "0X",
        "é",
        "日本",
        "🦀",
        "1🦀",
        "🦀1",
        "1.5🦀",
        "\u{0}",
        "\t\n",
        "0.",
        ".5",
        "1..2",
        "1.2.3",
        "arg",
        "arg9",
        "arg0 ==",
        "arg0 & == 1",
        "errno",
        "errno ",
        "errno 🦀",
        "1h🦀",
        "🦀/8",
        "10.0.0.0/🦀",
        "::/",
        "/",
        "-/-",
        "1-",
        "-1",
        "1--2",
        "18446744073709551615",
        "18446744073709551616",
        "18446744073709551615TiB",
        "99999999999999999999999999999999999999999d",
        "0.99999999999999999999999999999999999GiB",
        "1.0000000000000000000000000000000000001KiB",
        "4294967296",
        "1000000000000000000000m",
        "1\u{a0}s",
        "\u{a0}",
        "ａ",
        "１",
        "٣",
        "arg٣ == 1",
        "arg0 == ٣",
        "10.0.0.0/٣",
    ];

    fn alphabet() -> Vec<&'static str> {
        vec![
            "0", "1", "5", "9", "x", "b", "o", "_", ".", "-", "/", ":", "&", "=", "!", "<", ">", " ", "B", "K", "M",
            "G", "T", "i", "m", "s", "h", "d", "arg", "errno", "E", "PERM", "é", "🦀", "a", "f", "tcp", "::", "255",
            "0x", "TiB",
        ]
    }

    #[track_caller]
    fn check_result<T: fmt::Debug + PartialEq + fmt::Display>(
        s: &str,
        r: Result<T, ValueError>,
        parse: fn(&str) -> Result<T, ValueError>,
    ) {
        match r {
            Ok(v) => {
                let shown = v.to_string();
                assert_eq!(parse(&shown).as_ref(), Ok(&v), "round trip of {s:?} via {shown:?}");
            }
            Err(e) => {
                assert!(e.at.start <= e.at.end && e.at.end <= s.len(), "{s:?}: {e:?}");
                assert!(s.is_char_boundary(e.at.start) && s.is_char_boundary(e.at.end), "{s:?}: {e:?}");
                assert!(!e.message.is_empty() && !e.expected.is_empty(), "{s:?}: {e:?}");
            }
        }
    }

    fn check_all(s: &str) {
        #[derive(Debug, PartialEq)]
        struct U(u64);
        impl fmt::Display for U {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
        check_result(s, parse_u64(s).map(U), |x| parse_u64(x).map(U));
        check_result(s, parse_u32_in(s, 1, 100, "n").map(|n| U(n.into())), |x| {
            parse_u32_in(x, 1, 100, "n").map(|n| U(n.into()))
        });
        check_result(s, parse_size(s), parse_size);
        check_result(s, parse_cpu(s), parse_cpu);
        check_result(s, parse_duration(s), parse_duration);
        check_result(s, parse_cidr(s), parse_cidr);
        check_result(s, parse_port_range(s), parse_port_range);
        check_result(s, parse_protocol(s), parse_protocol);
        check_result(s, parse_action(s), parse_action);
        check_result(s, parse_arg_condition(s), parse_arg_condition);
    }

    #[test]
    fn weird_inputs_do_not_panic() {
        for s in WEIRD {
            check_all(s);
        }
    }

    #[test]
    fn generated_inputs_do_not_panic() {
        // Deterministic xorshift generator: no proptest needed.
        let alpha = alphabet();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let len = (next() % 9) as usize;
            let s: String = (0..len).map(|_| alpha[(next() % alpha.len() as u64) as usize]).collect();
            check_all(&s);
        }
    }
}
