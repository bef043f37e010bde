//! Durations: `30s`, `500ms`, `5m`, `1h30m`, `2d`.

use super::{char_at, span_while, trim, ValueError};
use nom::bytes::complete::take_while1;
use nom::character::complete::{char as nom_char, digit1};
use nom::combinator::opt;
use nom::sequence::preceded;
use nom::Parser;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;

const EXPECTED: &str = "a duration such as `30s`, `500ms` or `1h30m`";
const UNIT_LIST: &str = "valid units are `d`, `h`, `m`, `s` and `ms`";

/// Units, largest first: (name, milliseconds).
const UNITS: &[(&str, u64)] = &[("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// A duration in milliseconds.
///
/// Display is canonical: largest units first, zero components omitted,
/// e.g. `1m30s`, `1s500ms`, `1d2h`, `250ms`. (`Duration(0)` displays as `0s`,
/// which is not a valid literal: durations must be positive.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(pub u64 /* ms */);

impl Duration {
    pub fn as_millis(self) -> u64 {
        self.0
    }
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for &(name, mult) in UNITS {
            let n = rest / mult;
            if n > 0 {
                write!(f, "{n}{name}")?;
                rest %= mult;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Duration {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_duration(s)
    }
}

fn err(msg: impl Into<String>, at: Range<usize>) -> ValueError {
    ValueError::new(msg, EXPECTED, at)
}

/// Parses a duration.
///
/// Grammar: one or more `DIGITS UNIT` components with no spaces, units
/// `d` (24h), `h`, `m`, `s`, `ms`, each at most once and from largest to
/// smallest (`1h30m`, not `30m1h`). A component may exceed the next unit
/// (`90s`, `1500ms` are fine). A unit is required; fractions are not
/// accepted (`1.5h` → error suggesting `1h30m`); the total must be > 0.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let (off, t) = trim(s);
    parse_trimmed(t, true).map(Duration).map_err(|e| e.shifted(off))
}

type NomErr<'a> = nom::error::Error<&'a str>;

/// One `NUMBER ('.' DIGITS)? UNIT?` token.
struct Component<'a> {
    int: &'a str,
    frac: Option<&'a str>,
    unit: Option<&'a str>,
}

fn component(input: &str) -> nom::IResult<&str, Component<'_>, NomErr<'_>> {
    let (rest, (int, frac, unit)) = (
        digit1,
        opt(preceded(nom_char('.'), digit1)),
        // `µ` is alphabetic, so `10µs` reaches the unit table and gets a message.
        opt(take_while1(|c: char| c.is_alphabetic())),
    )
        .parse(input)?;
    Ok((rest, Component { int, frac, unit }))
}

fn parse_trimmed(t: &str, strict: bool) -> Result<u64, ValueError> {
    let Some((first, first_at)) = char_at(t, 0) else {
        return Err(err("empty duration", 0..0));
    };
    match first {
        '-' => return Err(err("durations cannot be negative", first_at)),
        '+' => return Err(err("a sign is not allowed", first_at).with_help(format!("write `{}`", &t[1..]))),
        _ => {}
    }
    let too_large = |at: Range<usize>| {
        err("duration is too large", at).with_help("durations are limited to about 584 million years")
    };

    let mut total: u64 = 0;
    let mut prev: Option<usize> = None; // index into UNITS of the previous component
    let mut pos = 0;
    while pos < t.len() {
        let rest = &t[pos..];
        let ws = span_while(rest, char::is_whitespace);
        if ws > 0 {
            let fixed: String = t.split_whitespace().collect();
            return Err(err("unexpected space in duration", pos..pos + ws).with_help(format!("write `{fixed}`")));
        }
        let Ok((after, c)) = component(rest) else {
            let (ch, at) = char_at(t, pos).unwrap_or((' ', pos..pos));
            if ch.is_alphabetic() {
                let w = span_while(rest, char::is_alphabetic);
                return Err(err(format!("missing number before unit `{}`", &rest[..w]), pos..pos + w));
            }
            if ch == '.' {
                return Err(err("missing digits before `.`", at));
            }
            return Err(err(format!("unexpected character `{}`", ch.escape_debug()), at));
        };
        let end = t.len() - after.len();
        let num_end = pos + c.int.len() + c.frac.map_or(0, |f| f.len() + 1);
        let num_at = pos..num_end;

        let Some(unit) = c.unit else {
            // No unit: either the end of the input or some other character.
            if after.is_empty() {
                let suggestion = match prev {
                    None => Some("s"),
                    Some(i) => UNITS.get(i + 1).map(|u| u.0),
                };
                let mut e = err("missing unit", num_at);
                if let Some(u) = suggestion {
                    e = e.with_help(format!("add a unit: `{t}{u}`"));
                } else {
                    e = e.with_help(UNIT_LIST);
                }
                return Err(e);
            }
            if after.starts_with('.') {
                return Err(if c.frac.is_some() {
                    err("unexpected `.`", end..end + 1)
                } else {
                    err("missing digits after `.`", end..end + 1)
                });
            }
            let (ch, at) = char_at(t, end).unwrap_or((' ', end..end));
            if ch.is_whitespace() {
                let fixed: String = t.split_whitespace().collect();
                return Err(err("unexpected space in duration", end..end + span_while(after, char::is_whitespace))
                    .with_help(format!("write `{fixed}`")));
            }
            return Err(err(format!("unexpected character `{}`", ch.escape_debug()), at)
                .with_help(format!("each number needs a unit; {UNIT_LIST}")));
        };
        let unit_at = num_end..end;
        let Some(idx) = UNITS.iter().position(|u| u.0 == unit) else {
            return Err(unknown_unit(&t[pos..num_end], unit, unit_at));
        };
        let mult = UNITS[idx].1;

        if let Some(frac) = c.frac {
            let mut e = err("fractional durations are not supported", num_end - frac.len() - 1..num_end);
            if let Some(ms) = exact_ms(c.int, frac, mult) {
                if ms > 0 {
                    e = e.with_help(format!("write `{}`", Duration(ms)));
                }
            } else {
                e = e.with_help("use a smaller unit, e.g. `1h30m` instead of `1.5h`");
            }
            return Err(e);
        }

        if strict {
            if let Some(p) = prev {
                if idx <= p {
                    let mut e = if idx == p {
                        err(format!("duplicate unit `{unit}`"), unit_at)
                    } else {
                        err("units must go from largest to smallest", pos..end)
                    };
                    match parse_trimmed(t, false) {
                        Ok(ms) if ms > 0 => e = e.with_help(format!("write `{}`", Duration(ms))),
                        _ => e = e.with_help("write larger units first, as in `1h30m`"),
                    }
                    return Err(e);
                }
            }
        }

        let n: u64 = c.int.parse().map_err(|_| too_large(num_at.clone()))?;
        let ms = n.checked_mul(mult).ok_or_else(|| too_large(pos..end))?;
        total = total.checked_add(ms).ok_or_else(|| too_large(0..end))?;
        prev = Some(idx);
        pos = end;
    }
    if total == 0 && strict {
        return Err(err("duration must be greater than zero", 0..t.len()).with_help("the shortest duration is `1ms`"));
    }
    Ok(total)
}

/// `int.frac` × `mult`, if it is a whole number of milliseconds.
fn exact_ms(int: &str, frac: &str, mult: u64) -> Option<u64> {
    let frac = frac.trim_end_matches('0');
    if frac.len() > 18 {
        return None;
    }
    let int: u128 = int.parse().ok()?;
    let f: u128 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    let den = 10u128.pow(frac.len() as u32);
    let scaled = f * u128::from(mult);
    if !scaled.is_multiple_of(den) {
        return None;
    }
    u64::try_from(int.checked_mul(u128::from(mult))?.checked_add(scaled / den)?).ok()
}

fn unknown_unit(number: &str, unit: &str, at: Range<usize>) -> ValueError {
    let e = err(format!("unknown duration unit `{unit}`"), at);
    if let Some((name, _)) = UNITS.iter().find(|(name, _)| name.eq_ignore_ascii_case(unit)) {
        return e.with_help(format!("units are lower-case: did you mean `{number}{name}`?"));
    }
    let suggestion = match unit {
        "sec" | "secs" | "second" | "seconds" => Some("s"),
        "min" | "mins" | "minute" | "minutes" => Some("m"),
        "hr" | "hrs" | "hour" | "hours" => Some("h"),
        "day" | "days" => Some("d"),
        "msec" | "msecs" | "millis" | "millisecond" | "milliseconds" => Some("ms"),
        _ => None,
    };
    if let Some(u) = suggestion {
        return e.with_help(format!("did you mean `{number}{u}`?"));
    }
    match unit {
        "us" | "µs" | "μs" | "ns" => e.with_help("durations have millisecond precision; the smallest is `1ms`"),
        "w" | "wk" | "week" | "weeks" => match number.parse::<u64>().ok().and_then(|n| n.checked_mul(7)) {
            Some(days) => e.with_help(format!("weeks are not supported: write `{days}d`")),
            None => e.with_help(UNIT_LIST),
        },
        _ => e.with_help(UNIT_LIST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn ok(s: &str) -> u64 {
        match parse_duration(s) {
            Ok(v) => v.0,
            Err(e) => panic!("{s:?}: {e:?}"),
        }
    }
    #[track_caller]
    fn bad(s: &str) -> ValueError {
        match parse_duration(s) {
            Ok(v) => panic!("{s:?} parsed as {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn valid() {
        let cases: &[(&str, u64)] = &[
            ("30s", 30_000),
            ("500ms", 500),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("2m30s", 150_000),
            ("1d", 86_400_000),
            ("1d2h3m4s5ms", 93_784_005),
            ("90s", 90_000),
            ("1500ms", 1500),
            ("1h05m", 3_900_000),
            ("0h1m", 60_000),
            ("1ms", 1),
            (" 10s\t", 10_000),
            ("18446744073709551615ms", u64::MAX),
        ];
        for &(s, want) in cases {
            assert_eq!(ok(s), want, "{s:?}");
        }
    }

    #[test]
    fn invalid() {
        let e = bad("30");
        assert_eq!((e.message.as_str(), e.at.clone()), ("missing unit", 0..2));
        assert_eq!(e.help.as_deref(), Some("add a unit: `30s`"));
        assert_eq!(bad("1h30").help.as_deref(), Some("add a unit: `1h30m`"));
        assert_eq!(bad("1h30").at, 2..4);
        assert_eq!(bad("1s500").help.as_deref(), Some("add a unit: `1s500ms`"));
        assert_eq!(bad("1ms5").help.as_deref(), Some(UNIT_LIST));
        let e = bad("0s");
        assert_eq!((e.message.as_str(), e.at), ("duration must be greater than zero", 0..2));
        assert_eq!(bad("0h0m").message, "duration must be greater than zero");
        let e = bad("");
        assert_eq!((e.message.as_str(), e.at), ("empty duration", 0..0));
        assert_eq!(bad(" ").at, 1..1);
        assert_eq!(bad("-5s").message, "durations cannot be negative");
        assert_eq!(bad("+5s").message, "a sign is not allowed");
        let e = bad("30S");
        assert_eq!((e.message.as_str(), e.at.clone()), ("unknown duration unit `S`", 2..3));
        assert_eq!(e.help.as_deref(), Some("units are lower-case: did you mean `30s`?"));
        assert_eq!(bad("5MS").help.as_deref(), Some("units are lower-case: did you mean `5ms`?"));
        assert_eq!(bad("30sec").help.as_deref(), Some("did you mean `30s`?"));
        assert_eq!(bad("5min").help.as_deref(), Some("did you mean `5m`?"));
        assert_eq!(bad("2hours").help.as_deref(), Some("did you mean `2h`?"));
        assert_eq!(bad("2w").help.as_deref(), Some("weeks are not supported: write `14d`"));
        let e = bad("10µs");
        assert_eq!((e.message.as_str(), e.at.clone()), ("unknown duration unit `µs`", 2..5));
        assert_eq!(bad("5x").help.as_deref(), Some(UNIT_LIST));
        let e = bad("1h 30m");
        assert_eq!(
            (e.message.as_str(), e.at.clone(), e.help.as_deref()),
            ("unexpected space in duration", 2..3, Some("write `1h30m`"))
        );
        assert_eq!(bad("1 h").at, 1..2);
        let e = bad("30m1h");
        assert_eq!(
            (e.message.as_str(), e.at.clone(), e.help.as_deref()),
            ("units must go from largest to smallest", 3..5, Some("write `1h30m`"))
        );
        let e = bad("1h1h");
        assert_eq!(
            (e.message.as_str(), e.at.clone(), e.help.as_deref()),
            ("duplicate unit `h`", 3..4, Some("write `2h`"))
        );
        let e = bad("1.5h");
        assert_eq!(
            (e.message.as_str(), e.at.clone(), e.help.as_deref()),
            ("fractional durations are not supported", 1..3, Some("write `1h30m`"))
        );
        assert_eq!(bad("0.5s").help.as_deref(), Some("write `500ms`"));
        assert_eq!(bad("1.5ms").help.as_deref(), Some("use a smaller unit, e.g. `1h30m` instead of `1.5h`"));
        assert_eq!(bad("h").message, "missing number before unit `h`");
        assert_eq!(bad("1h,30m").at, 2..3);
        assert_eq!(bad("1h_").message, "unexpected character `_`");
        assert_eq!(bad(".5s").message, "missing digits before `.`");
        assert_eq!(bad("1.s").message, "missing digits after `.`");
        assert_eq!(bad("1.5.5s").message, "unexpected `.`");
        let e = bad("99999999999999999999999s");
        assert_eq!((e.message.as_str(), e.at), ("duration is too large", 0..23));
        assert_eq!(bad("18446744073709551615s").message, "duration is too large");
        assert_eq!(bad("18446744073709551s616ms").message, "duration is too large");
        assert_eq!(bad("30🦀").at, 2..6);
    }

    #[test]
    fn display() {
        let cases: &[(u64, &str)] = &[
            (1, "1ms"),
            (500, "500ms"),
            (1000, "1s"),
            (1500, "1s500ms"),
            (90_000, "1m30s"),
            (3_600_000, "1h"),
            (5_400_000, "1h30m"),
            (86_400_000, "1d"),
            (93_784_005, "1d2h3m4s5ms"),
            (86_400_001, "1d1ms"),
            (0, "0s"),
        ];
        for &(n, want) in cases {
            assert_eq!(Duration(n).to_string(), want);
        }
    }

    #[test]
    fn round_trip() {
        let mut vals: Vec<u64> = (1..2000).collect();
        vals.extend([59_999, 60_000, 60_001, 3_599_999, 86_399_999, 86_400_000, u64::MAX, u64::MAX - 1]);
        for &(_, m) in UNITS {
            vals.extend([m, m + 1, m * 7 + 3, m * 1000]);
        }
        for v in vals {
            let d = Duration(v);
            assert_eq!(parse_duration(&d.to_string()), Ok(d), "{v}");
        }
        for s in ["90s", "1500ms", "1h30m", "2m30s", "25h"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&d.to_string()), Ok(d));
        }
        assert_eq!(Duration(1500).to_std(), std::time::Duration::from_millis(1500));
        assert_eq!(serde_json::to_string(&Duration(1500)).unwrap(), "1500");
    }
}
