//! Sizes in bytes: `512MB`, `1GiB`, `1.5GiB`, `4096`.

use super::{char_at, parse_u64_exact, span_while, trim, ValueError};
use serde::{Deserialize, Serialize};
use std::fmt;

const EXPECTED: &str = "a size such as `512MB` or `1GiB`";
const UNIT_LIST: &str = "valid units are B, KB, MB, GB, TB (powers of 1000) and KiB, MiB, GiB, TiB (powers of 1024)";

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// All units, largest value first (the order `Display` tries them in).
const UNITS: &[(&str, u64)] = &[
    ("TiB", TIB),
    ("TB", 1_000_000_000_000),
    ("GiB", GIB),
    ("GB", 1_000_000_000),
    ("MiB", MIB),
    ("MB", 1_000_000),
    ("KiB", KIB),
    ("KB", 1_000),
    ("B", 1),
];

/// A size in bytes.
///
/// Display is canonical: the value in the largest unit (binary or decimal)
/// that divides it exactly, e.g. `512MB`, `1GiB`, `1536MiB`, `1000KiB`;
/// `<n>B` when no unit divides it; `0B` for zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n == 0 {
            return f.write_str("0B");
        }
        for &(name, mult) in UNITS {
            if n.is_multiple_of(mult) {
                return write!(f, "{}{name}", n / mult);
            }
        }
        unreachable!("B divides everything")
    }
}

impl std::str::FromStr for Size {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_size(s)
    }
}

/// Parses a size.
///
/// Grammar: `DIGITS ('.' DIGITS)? UNIT?` where DIGITS is decimal (`_` allowed
/// between digits of the integer part) and UNIT is one of `B KB MB GB TB`
/// (powers of 1000) or `KiB MiB GiB TiB` (powers of 1024), case-sensitive.
/// No unit means bytes. A fraction needs a unit and must come to a whole
/// number of bytes (`1.5GiB` is fine, `1.3KiB` is not). Hex/octal/binary
/// are not accepted (`0x1000` → error suggesting `4KiB`).
pub fn parse_size(s: &str) -> Result<Size, ValueError> {
    let (off, t) = trim(s);
    parse_trimmed(t).map_err(|e| e.shifted(off))
}

fn err(msg: impl Into<String>, at: std::ops::Range<usize>) -> ValueError {
    ValueError::new(msg, EXPECTED, at)
}

fn parse_trimmed(t: &str) -> Result<Size, ValueError> {
    let Some((first, first_at)) = char_at(t, 0) else {
        return Err(err("empty size", 0..0));
    };
    match first {
        '-' => return Err(err("sizes cannot be negative", first_at)),
        '+' => return Err(err("a sign is not allowed", first_at).with_help(format!("write `{}`", &t[1..]))),
        '.' => return Err(err("missing digits before `.`", first_at).with_help(format!("write `0{t}`"))),
        _ => {}
    }
    // Radix prefixes: `0x10` is rejected rather than guessed at. (`0b` without
    // a following binary digit falls through: it is `0` with unit `b`.)
    let b = t.as_bytes();
    if b.len() > 2 && b[0] == b'0' {
        let radix_digit = match b[1] {
            b'x' => b[2].is_ascii_hexdigit() || b[2] == b'_',
            b'o' => (b'0'..=b'7').contains(&b[2]) || b[2] == b'_',
            b'b' => b[2] == b'0' || b[2] == b'1' || b[2] == b'_',
            _ => false,
        };
        if radix_digit {
            let mut e = err("sizes are written in decimal", 0..2);
            if let Ok(n) = parse_u64_exact(t) {
                e = e.with_help(format!("write `{}`", Size(n)));
            }
            return Err(e);
        }
    }

    // Integer part.
    let int_end = span_while(t, |c| c.is_ascii_digit() || c == '_');
    if int_end == 0 {
        let (c, at) = char_at(t, 0).unwrap_or((' ', 0..0));
        return Err(err(format!("expected a number, found `{}`", c.escape_debug()), at));
    }
    let int_s = &t[..int_end];
    for (i, c) in int_s.char_indices() {
        if c == '_' {
            let bad = i == 0 || i + 1 == int_s.len() || int_s.as_bytes()[i - 1] == b'_';
            if bad {
                return Err(err("`_` must be between digits", i..i + 1));
            }
        }
    }

    // Fraction.
    let mut num_end = int_end;
    let mut frac = "";
    if t[int_end..].starts_with('.') {
        let f_start = int_end + 1;
        let f_len = span_while(&t[f_start..], |c| c.is_ascii_digit());
        if f_len == 0 {
            return Err(err("missing digits after `.`", int_end..f_start));
        }
        frac = &t[f_start..f_start + f_len];
        num_end = f_start + f_len;
    }
    let number = &t[..num_end];

    // Unit.
    let rest = &t[num_end..];
    let ws = span_while(rest, char::is_whitespace);
    if ws > 0 {
        let fixed: String = t.split_whitespace().collect();
        return Err(err("unexpected space between number and unit", num_end..num_end + ws)
            .with_help(format!("write `{fixed}`")));
    }
    let unit_at = num_end..t.len();
    let mult = if rest.is_empty() {
        None
    } else {
        match UNITS.iter().find(|(name, _)| *name == rest) {
            Some(&(_, m)) => Some(m),
            None => return Err(unknown_unit(number, rest, unit_at)),
        }
    };

    // Value, computed exactly in u128.
    let too_large = || {
        err("size is too large", 0..t.len())
            .with_help(format!("the largest size is {} bytes (just under 16777216TiB)", u64::MAX))
    };
    let mut int: u128 = 0;
    for c in int_s.chars().filter(char::is_ascii_digit) {
        int = int * 10 + u128::from(c as u8 - b'0');
        if int > u128::from(u64::MAX) {
            return Err(too_large());
        }
    }
    let frac = frac.trim_end_matches('0');
    let Some(mult) = mult else {
        if !frac.is_empty() {
            return Err(err("a fractional size needs a unit", 0..t.len())
                .with_help(format!("a bare number counts bytes; add a unit, e.g. `{number}KiB`")));
        }
        return Ok(Size(int as u64));
    };
    let mult = u128::from(mult);
    let whole = int * mult; // < 2^64 * 2^40: fits
    if frac.is_empty() {
        return u64::try_from(whole).map(Size).map_err(|_| too_large());
    }
    if frac.len() > 20 {
        return Err(err("too many decimal places", num_end - frac.len()..num_end)
            .with_help("a size is a whole number of bytes; use a smaller unit"));
    }
    let den = 10u128.pow(frac.len() as u32);
    let mut f: u128 = 0;
    for c in frac.chars() {
        f = f * 10 + u128::from(c as u8 - b'0');
    }
    let scaled = f * mult; // < 10^20 * 2^40 < 2^107
    let bytes = whole + scaled / den;
    if bytes > u128::from(u64::MAX) {
        return Err(too_large());
    }
    if !scaled.is_multiple_of(den) {
        let mut e = err(format!("`{t}` is not a whole number of bytes"), 0..t.len());
        if let (Ok(lo), Ok(hi)) = (u64::try_from(bytes), u64::try_from(bytes + 1)) {
            e = e.with_help(format!("the nearest whole sizes are `{}` and `{}`", Size(lo), Size(hi)));
        }
        return Err(e);
    }
    u64::try_from(bytes).map(Size).map_err(|_| too_large())
}

fn unknown_unit(number: &str, unit: &str, at: std::ops::Range<usize>) -> ValueError {
    let e = err(format!("unknown size unit `{}`", unit.escape_debug()), at);
    if let Some((name, _)) = UNITS.iter().find(|(name, _)| name.eq_ignore_ascii_case(unit)) {
        return e.with_help(format!("units are case-sensitive: did you mean `{number}{name}`?"));
    }
    let prefix = match unit {
        "k" | "K" | "ki" | "Ki" | "KI" => Some('K'),
        "m" | "M" | "mi" | "Mi" | "MI" => Some('M'),
        "g" | "G" | "gi" | "Gi" | "GI" => Some('G'),
        "t" | "T" | "ti" | "Ti" | "TI" => Some('T'),
        _ => None,
    };
    if let Some(p) = prefix {
        return e
            .with_help(format!("did you mean `{number}{p}iB` (powers of 1024) or `{number}{p}B` (powers of 1000)?"));
    }
    if matches!(unit, "byte" | "bytes" | "Byte" | "Bytes") {
        return e.with_help(format!("did you mean `{number}B`?"));
    }
    e.with_help(UNIT_LIST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn ok(s: &str) -> u64 {
        match parse_size(s) {
            Ok(v) => v.0,
            Err(e) => panic!("{s:?}: {e:?}"),
        }
    }
    #[track_caller]
    fn bad(s: &str) -> ValueError {
        match parse_size(s) {
            Ok(v) => panic!("{s:?} parsed as {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn valid() {
        assert_eq!(ok("512MB"), 512_000_000);
        assert_eq!(ok("1GiB"), 1 << 30);
        assert_eq!(ok("0"), 0);
        assert_eq!(ok("0B"), 0);
        assert_eq!(ok("4096"), 4096);
        assert_eq!(ok("4096B"), 4096);
        assert_eq!(ok("1_048_576"), 1 << 20);
        assert_eq!(ok("1KB"), 1000);
        assert_eq!(ok("1KiB"), 1024);
        assert_eq!(ok("2MiB"), 2 << 20);
        assert_eq!(ok("3TB"), 3_000_000_000_000);
        assert_eq!(ok("1TiB"), 1 << 40);
        assert_eq!(ok("1.5GiB"), 3 << 29);
        assert_eq!(ok("0.5KB"), 500);
        assert_eq!(ok("0.5KiB"), 512);
        assert_eq!(ok("1.0GiB"), 1 << 30);
        assert_eq!(ok("1.000B"), 1);
        assert_eq!(ok("2.0B"), 2);
        assert_eq!(ok("0.001KB"), 1);
        assert_eq!(ok("0.0009765625KiB"), 1);
        assert_eq!(ok(" 10MB "), 10_000_000);
        assert_eq!(ok("007MB"), 7_000_000);
        assert_eq!(ok("18446744073709551615"), u64::MAX);
        assert_eq!(ok("18446744073709551615B"), u64::MAX);
        assert_eq!(ok("16777215TiB"), 16_777_215 << 40);
    }

    #[test]
    fn invalid() {
        let e = bad("512mb");
        assert_eq!(e.message, "unknown size unit `mb`");
        assert_eq!(e.at, 3..5);
        assert_eq!(e.help.as_deref(), Some("units are case-sensitive: did you mean `512MB`?"));
        assert_eq!(e.expected, EXPECTED);
        assert_eq!(bad("1gib").help.as_deref(), Some("units are case-sensitive: did you mean `1GiB`?"));
        assert_eq!(bad("1kb").help.as_deref(), Some("units are case-sensitive: did you mean `1KB`?"));
        assert_eq!(bad("0b").help.as_deref(), Some("units are case-sensitive: did you mean `0B`?"));
        let e = bad("512M");
        assert_eq!(e.help.as_deref(), Some("did you mean `512MiB` (powers of 1024) or `512MB` (powers of 1000)?"));
        assert_eq!(bad("1bytes").help.as_deref(), Some("did you mean `1B`?"));
        let e = bad("5PB");
        assert_eq!((e.at.clone(), e.help.as_deref()), (1..3, Some(UNIT_LIST)));
        let e = bad("");
        assert_eq!((e.message.as_str(), e.at), ("empty size", 0..0));
        assert_eq!(bad("  ").at, 2..2);
        let e = bad("-1GiB");
        assert_eq!((e.message.as_str(), e.at), ("sizes cannot be negative", 0..1));
        let e = bad("18446744073709551616");
        assert_eq!(e.message, "size is too large");
        assert_eq!(bad("16777216TiB").message, "size is too large");
        assert_eq!(bad("99999999999999999999999999999TiB").message, "size is too large");
        assert_eq!(bad("16777216.0TiB").message, "size is too large");
        assert_eq!(bad("16777215.99999999TiB").message, "`16777215.99999999TiB` is not a whole number of bytes");
        assert_eq!(ok("16777215.5TiB"), (16_777_215 << 40) + (1 << 39));
        let e = bad("512 MB");
        assert_eq!((e.at.clone(), e.help.as_deref()), (3..4, Some("write `512MB`")));
        let e = bad("1.5");
        assert_eq!(e.message, "a fractional size needs a unit");
        let e = bad("1.3KiB");
        assert_eq!(e.message, "`1.3KiB` is not a whole number of bytes");
        assert_eq!(e.help.as_deref(), Some("the nearest whole sizes are `1331B` and `1332B`"));
        assert_eq!(bad("1.5B").message, "`1.5B` is not a whole number of bytes");
        assert_eq!(bad("1.").message, "missing digits after `.`");
        assert_eq!(bad(".5GiB").help.as_deref(), Some("write `0.5GiB`"));
        let e = bad("0x1000");
        assert_eq!((e.message.as_str(), e.help.as_deref()), ("sizes are written in decimal", Some("write `4KiB`")));
        assert_eq!(bad("0b101").message, "sizes are written in decimal");
        assert_eq!(bad("_1").at, 0..1);
        assert_eq!(bad("1_").at, 1..2);
        assert_eq!(bad("1__0").at, 2..3);
        assert_eq!(bad("1_.5KiB").at, 1..2);
        assert_eq!(bad("1e9").message, "unknown size unit `e9`");
        assert_eq!(bad("GiB").message, "expected a number, found `G`");
        assert_eq!(bad("+1").message, "a sign is not allowed");
        assert_eq!(bad("1.0000000000000000000001KiB").message, "too many decimal places");
        let e = bad("1🦀");
        assert_eq!(e.at, 1..5);
        assert_eq!(bad("1.5.5GiB").message, "unknown size unit `.5GiB`");
    }

    #[test]
    fn display() {
        let cases: &[(u64, &str)] = &[
            (0, "0B"),
            (1, "1B"),
            (999, "999B"),
            (1000, "1KB"),
            (1024, "1KiB"),
            (1536, "1536B"),
            (512_000_000, "512MB"),
            (1 << 30, "1GiB"),
            (3 << 29, "1536MiB"),
            (1_024_000, "1000KiB"),
            (2_048_000_000, "2048MB"),
            (1_000_000_000_000, "1TB"),
            (1 << 40, "1TiB"),
            (u64::MAX, "18446744073709551615B"),
            (u64::MAX - (u64::MAX % TIB), "16777215TiB"),
        ];
        for &(n, want) in cases {
            assert_eq!(Size(n).to_string(), want, "{n}");
        }
    }

    #[test]
    fn round_trip() {
        let mut vals = vec![0, 1, 7, 999, 1000, 1023, 1024, 1_000_000, 1_048_576, 3 << 29, u64::MAX, u64::MAX - 1];
        for &(_, m) in UNITS {
            for k in [1u64, 2, 3, 10, 512, 1000, 1024, 4095] {
                if let Some(v) = m.checked_mul(k) {
                    vals.push(v);
                    vals.push(v + 1);
                }
            }
        }
        for v in vals {
            let s = Size(v);
            assert_eq!(parse_size(&s.to_string()), Ok(s), "{v} -> {s}");
        }
        for s in ["512MB", "1GiB", "1.5GiB", "4096", "1000KiB", "0.5KB", "1.25MiB"] {
            let v = parse_size(s).unwrap();
            assert_eq!(parse_size(&v.to_string()), Ok(v));
        }
    }

    #[test]
    fn serde() {
        assert_eq!(serde_json::to_string(&Size(1024)).unwrap(), "1024");
        assert_eq!(serde_json::from_str::<Size>("1024").unwrap(), Size(1024));
        assert_eq!("2GiB".parse::<Size>(), Ok(Size(2 << 30)));
    }
}
