//! CPU amounts in milli-CPUs: `2`, `0.5`, `1.25`, `500m`.

use super::{char_at, span_while, trim, ValueError};
use serde::{Deserialize, Serialize};
use std::fmt;

const EXPECTED: &str = "a CPU amount such as `0.5`, `2` or `500m`";
/// Upper bound in milli-CPUs (1000 CPUs).
const MAX_MILLIS: u64 = 1_000_000;

/// A CPU amount in milli-CPUs (1000 = one whole CPU).
///
/// Display is canonical: a decimal number of CPUs without trailing zeros
/// (`2`, `0.5`, `1.25`, `0.001`). Every value in range has such a form, so
/// the `m` suffix is accepted on input but never produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cpu(pub u32);

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, milli) = (self.0 / 1000, self.0 % 1000);
        if milli == 0 {
            return write!(f, "{whole}");
        }
        let frac = format!("{milli:03}");
        write!(f, "{whole}.{}", frac.trim_end_matches('0'))
    }
}

impl std::str::FromStr for Cpu {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_cpu(s)
    }
}

fn err(msg: impl Into<String>, at: std::ops::Range<usize>) -> ValueError {
    ValueError::new(msg, EXPECTED, at)
}

/// Parses a CPU amount.
///
/// Grammar: `DIGITS ('.' DIGITS)?` (whole CPUs, at most 3 significant
/// decimals) or `DIGITS 'm'` (milli-CPUs, whole). Must be greater than zero
/// and at most 1000 CPUs (`1000` = `1000000m`).
pub fn parse_cpu(s: &str) -> Result<Cpu, ValueError> {
    let (off, t) = trim(s);
    parse_trimmed(t).map_err(|e| e.shifted(off))
}

fn parse_trimmed(t: &str) -> Result<Cpu, ValueError> {
    let Some((first, first_at)) = char_at(t, 0) else {
        return Err(err("empty cpu amount", 0..0));
    };
    match first {
        '-' => return Err(err("cpu amounts cannot be negative", first_at)),
        '+' => return Err(err("a sign is not allowed", first_at).with_help(format!("write `{}`", &t[1..]))),
        '.' => return Err(err("missing digits before `.`", first_at).with_help(format!("write `0{t}`"))),
        _ => {}
    }
    let int_end = span_while(t, |c| c.is_ascii_digit());
    if int_end == 0 {
        return Err(err(format!("expected a number, found `{}`", first.escape_debug()), first_at));
    }
    let too_large = || err("cpu amount is too large", 0..t.len()).with_help("the maximum is 1000 CPUs (`1000`)");
    let mut int: u64 = 0;
    for b in t[..int_end].bytes() {
        int = int.checked_mul(10).and_then(|v| v.checked_add(u64::from(b - b'0'))).ok_or_else(too_large)?;
    }

    let mut end = int_end;
    let mut frac_at = None;
    if t[end..].starts_with('.') {
        let f_start = end + 1;
        let f_len = span_while(&t[f_start..], |c| c.is_ascii_digit());
        if f_len == 0 {
            return Err(err("missing digits after `.`", end..f_start));
        }
        end = f_start + f_len;
        frac_at = Some(f_start..end);
    }

    let rest = &t[end..];
    let ws = span_while(rest, char::is_whitespace);
    if ws > 0 {
        let fixed: String = t.split_whitespace().collect();
        return Err(err("unexpected space in cpu amount", end..end + ws).with_help(format!("write `{fixed}`")));
    }
    let millis = match rest {
        "" => {
            let mut millis = int.checked_mul(1000).ok_or_else(too_large)?;
            if let Some(at) = frac_at {
                let digits = t[at.clone()].trim_end_matches('0');
                if digits.len() > 3 {
                    return Err(err("too many decimal places", at.start..at.start + digits.len())
                        .with_help("cpu amounts have at most 3 decimal places (`0.001` = `1m`)"));
                }
                let mut m: u64 = 0;
                for (i, b) in digits.bytes().enumerate() {
                    m += u64::from(b - b'0') * 10u64.pow(2 - i as u32);
                }
                millis += m;
            }
            millis
        }
        "m" => {
            if let Some(at) = frac_at {
                return Err(err("milli-cpu amounts must be whole", at.start - 1..at.end)
                    .with_help(format!("write `{}m`", &t[..int_end])));
            }
            int
        }
        _ => {
            let number = &t[..end];
            let e = err(format!("unknown cpu unit `{}`", rest.escape_debug()), end..t.len());
            let help = match rest {
                "M" | "mc" | "mcpu" | "millicpu" | "millicpus" | "millis" => {
                    format!("the milli-cpu suffix is a lower-case `m`: `{number}m`")
                }
                "cpu" | "cpus" | "CPU" | "CPUs" | "core" | "cores" | "c" => {
                    format!("write just the number of CPUs: `{number}`")
                }
                "%" => "write a fraction of a CPU, e.g. `0.5` for 50%".to_string(),
                _ => "write whole CPUs (`2`, `0.5`) or milli-CPUs (`500m`)".to_string(),
            };
            return Err(e.with_help(help));
        }
    };
    if millis == 0 {
        return Err(
            err("cpu amount must be greater than zero", 0..t.len()).with_help("the smallest amount is `0.001` (`1m`)")
        );
    }
    if millis > MAX_MILLIS {
        return Err(too_large());
    }
    Ok(Cpu(millis as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn ok(s: &str) -> u32 {
        match parse_cpu(s) {
            Ok(v) => v.0,
            Err(e) => panic!("{s:?}: {e:?}"),
        }
    }
    #[track_caller]
    fn bad(s: &str) -> ValueError {
        match parse_cpu(s) {
            Ok(v) => panic!("{s:?} parsed as {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn valid() {
        let cases: &[(&str, u32)] = &[
            ("1.0", 1000),
            ("0.5", 500),
            ("2", 2000),
            ("500m", 500),
            ("1m", 1),
            ("0.001", 1),
            ("0.25", 250),
            ("1.25", 1250),
            ("1.250", 1250),
            ("1.2500000", 1250),
            ("1000", 1_000_000),
            ("1000000m", 1_000_000),
            ("1000.000", 1_000_000),
            ("02", 2000),
            ("0500m", 500),
            (" 4 ", 4000),
        ];
        for &(s, want) in cases {
            assert_eq!(ok(s), want, "{s:?}");
        }
    }

    #[test]
    fn invalid() {
        let e = bad("");
        assert_eq!((e.message.as_str(), e.at), ("empty cpu amount", 0..0));
        let e = bad("0");
        assert_eq!(e.message, "cpu amount must be greater than zero");
        assert_eq!(bad("0m").message, "cpu amount must be greater than zero");
        assert_eq!(bad("0.0").message, "cpu amount must be greater than zero");
        let e = bad("0.0005");
        assert_eq!((e.message.as_str(), e.at), ("too many decimal places", 2..6));
        assert_eq!(bad("1.2345").at, 2..6);
        assert_eq!(bad("1000.001").message, "cpu amount is too large");
        assert_eq!(bad("1000001m").message, "cpu amount is too large");
        assert_eq!(bad("99999999999999999999999").message, "cpu amount is too large");
        assert_eq!(bad("18446744073709551").message, "cpu amount is too large");
        assert_eq!(bad("-1").at, 0..1);
        assert_eq!(bad("+1").message, "a sign is not allowed");
        assert_eq!(bad(".5").help.as_deref(), Some("write `0.5`"));
        assert_eq!(bad("1.").at, 1..2);
        let e = bad("1.5m");
        assert_eq!(
            (e.message.as_str(), e.at.clone(), e.help.as_deref()),
            ("milli-cpu amounts must be whole", 1..3, Some("write `1m`"))
        );
        let e = bad("500M");
        assert_eq!((e.message.as_str(), e.at.clone()), ("unknown cpu unit `M`", 3..4));
        assert_eq!(e.help.as_deref(), Some("the milli-cpu suffix is a lower-case `m`: `500m`"));
        assert_eq!(bad("2cpus").help.as_deref(), Some("write just the number of CPUs: `2`"));
        assert_eq!(bad("50%").message, "unknown cpu unit `%`");
        assert_eq!(bad("500 m").at, 3..4);
        assert_eq!(bad("1e3").message, "unknown cpu unit `e3`");
        assert_eq!(bad("m").message, "expected a number, found `m`");
        assert_eq!(bad("1_000").message, "unknown cpu unit `_000`");
        assert_eq!(bad("0x10").message, "unknown cpu unit `x10`");
        assert_eq!(bad("½").at, 0..2);
    }

    #[test]
    fn display() {
        let cases: &[(u32, &str)] = &[
            (1000, "1"),
            (2000, "2"),
            (500, "0.5"),
            (1500, "1.5"),
            (250, "0.25"),
            (1, "0.001"),
            (10, "0.01"),
            (1001, "1.001"),
            (1_000_000, "1000"),
        ];
        for &(n, want) in cases {
            assert_eq!(Cpu(n).to_string(), want);
        }
    }

    #[test]
    fn round_trip() {
        for n in (1..=3000).chain([999_999, 1_000_000]) {
            let c = Cpu(n);
            assert_eq!(parse_cpu(&c.to_string()), Ok(c), "{n}");
        }
        for s in ["1.0", "500m", "0.5", "2", "1250m"] {
            let c = parse_cpu(s).unwrap();
            assert_eq!(parse_cpu(&c.to_string()), Ok(c));
        }
        assert_eq!(serde_json::to_string(&Cpu(500)).unwrap(), "500");
        assert_eq!(serde_json::from_str::<Cpu>("1500").unwrap(), Cpu(1500));
    }
}
