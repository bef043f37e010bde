//! seccomp values: filter actions, errno names and syscall argument conditions.

use super::{char_at, did_you_mean, parse_u64_exact, span_while, trim, ValueError};
use nom::branch::alt;
use nom::bytes::complete::tag;
use nom::character::complete::{digit1, multispace0};
use nom::Parser;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;

// ---------------------------------------------------------------------------
// errno table
// ---------------------------------------------------------------------------

/// Linux errno names and numbers (asm-generic, used by x86_64, aarch64,
/// riscv64 and most other architectures). 41 and 58 are unused by Linux.
#[rustfmt::skip]
const ERRNOS: &[(&str, u16)] = &[
    ("EPERM", 1), ("ENOENT", 2), ("ESRCH", 3), ("EINTR", 4), ("EIO", 5), ("ENXIO", 6),
    ("E2BIG", 7), ("ENOEXEC", 8), ("EBADF", 9), ("ECHILD", 10), ("EAGAIN", 11), ("ENOMEM", 12),
    ("EACCES", 13), ("EFAULT", 14), ("ENOTBLK", 15), ("EBUSY", 16), ("EEXIST", 17), ("EXDEV", 18),
    ("ENODEV", 19), ("ENOTDIR", 20), ("EISDIR", 21), ("EINVAL", 22), ("ENFILE", 23), ("EMFILE", 24),
    ("ENOTTY", 25), ("ETXTBSY", 26), ("EFBIG", 27), ("ENOSPC", 28), ("ESPIPE", 29), ("EROFS", 30),
    ("EMLINK", 31), ("EPIPE", 32), ("EDOM", 33), ("ERANGE", 34), ("EDEADLK", 35),
    ("ENAMETOOLONG", 36), ("ENOLCK", 37), ("ENOSYS", 38), ("ENOTEMPTY", 39), ("ELOOP", 40),
    ("ENOMSG", 42), ("EIDRM", 43), ("ECHRNG", 44), ("EL2NSYNC", 45), ("EL3HLT", 46), ("EL3RST", 47),
    ("ELNRNG", 48), ("EUNATCH", 49), ("ENOCSI", 50), ("EL2HLT", 51), ("EBADE", 52), ("EBADR", 53),
    ("EXFULL", 54), ("ENOANO", 55), ("EBADRQC", 56), ("EBADSLT", 57), ("EBFONT", 59), ("ENOSTR", 60),
    ("ENODATA", 61), ("ETIME", 62), ("ENOSR", 63), ("ENONET", 64), ("ENOPKG", 65), ("EREMOTE", 66),
    ("ENOLINK", 67), ("EADV", 68), ("ESRMNT", 69), ("ECOMM", 70), ("EPROTO", 71), ("EMULTIHOP", 72),
    ("EDOTDOT", 73), ("EBADMSG", 74), ("EOVERFLOW", 75), ("ENOTUNIQ", 76), ("EBADFD", 77),
    ("EREMCHG", 78), ("ELIBACC", 79), ("ELIBBAD", 80), ("ELIBSCN", 81), ("ELIBMAX", 82),
    ("ELIBEXEC", 83), ("EILSEQ", 84), ("ERESTART", 85), ("ESTRPIPE", 86), ("EUSERS", 87),
    ("ENOTSOCK", 88), ("EDESTADDRREQ", 89), ("EMSGSIZE", 90), ("EPROTOTYPE", 91), ("ENOPROTOOPT", 92),
    ("EPROTONOSUPPORT", 93), ("ESOCKTNOSUPPORT", 94), ("EOPNOTSUPP", 95), ("EPFNOSUPPORT", 96),
    ("EAFNOSUPPORT", 97), ("EADDRINUSE", 98), ("EADDRNOTAVAIL", 99), ("ENETDOWN", 100),
    ("ENETUNREACH", 101), ("ENETRESET", 102), ("ECONNABORTED", 103), ("ECONNRESET", 104),
    ("ENOBUFS", 105), ("EISCONN", 106), ("ENOTCONN", 107), ("ESHUTDOWN", 108), ("ETOOMANYREFS", 109),
    ("ETIMEDOUT", 110), ("ECONNREFUSED", 111), ("EHOSTDOWN", 112), ("EHOSTUNREACH", 113),
    ("EALREADY", 114), ("EINPROGRESS", 115), ("ESTALE", 116), ("EUCLEAN", 117), ("ENOTNAM", 118),
    ("ENAVAIL", 119), ("EISNAM", 120), ("EREMOTEIO", 121), ("EDQUOT", 122), ("ENOMEDIUM", 123),
    ("EMEDIUMTYPE", 124), ("ECANCELED", 125), ("ENOKEY", 126), ("EKEYEXPIRED", 127),
    ("EKEYREVOKED", 128), ("EKEYREJECTED", 129), ("EOWNERDEAD", 130), ("ENOTRECOVERABLE", 131),
    ("ERFKILL", 132), ("EHWPOISON", 133),
];

/// Alternative names accepted on input; display uses the primary name.
const ERRNO_ALIASES: &[(&str, u16)] = &[("EWOULDBLOCK", 11), ("EDEADLOCK", 35), ("ENOTSUP", 95)];

/// The standard name of errno `n` (`1` → `EPERM`); aliases are never returned.
pub fn errno_name(n: u16) -> Option<&'static str> {
    ERRNOS.binary_search_by_key(&n, |e| e.1).ok().map(|i| ERRNOS[i].0)
}

/// The number of an errno name (case-sensitive; aliases such as
/// `EWOULDBLOCK` included).
pub fn errno_number(name: &str) -> Option<u16> {
    ERRNOS.iter().chain(ERRNO_ALIASES).find(|e| e.0 == name).map(|e| e.1)
}

// ---------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------

const EXPECTED_ACTION: &str =
    "a seccomp action: `allow`, `deny`, `kill-process`, `kill-thread`, `trap`, `log`, `notify` or `errno <number or name>`";
const MAX_ERRNO: u64 = 4095;

/// What a seccomp filter does with a matching syscall.
///
/// Display is canonical: `allow`, `kill-process`, `kill-thread`, `trap`,
/// `log`, `notify`, and `errno EPERM` (by name when the number has one,
/// else `errno 1234`). The sugar `deny` displays as `errno EPERM`, `kill`
/// as `kill-process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action", content = "errno")]
pub enum Action {
    Allow,
    Errno(u16),
    KillProcess,
    KillThread,
    Trap,
    Log,
    Notify,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Allow => f.write_str("allow"),
            Action::Errno(n) => match errno_name(*n) {
                Some(name) => write!(f, "errno {name}"),
                None => write!(f, "errno {n}"),
            },
            Action::KillProcess => f.write_str("kill-process"),
            Action::KillThread => f.write_str("kill-thread"),
            Action::Trap => f.write_str("trap"),
            Action::Log => f.write_str("log"),
            Action::Notify => f.write_str("notify"),
        }
    }
}

impl std::str::FromStr for Action {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_action(s)
    }
}

const ACTION_WORDS: &[&str] =
    &["allow", "deny", "kill", "kill-process", "kill-thread", "trap", "log", "notify", "errno"];

fn aerr(msg: impl Into<String>, at: Range<usize>) -> ValueError {
    ValueError::new(msg, EXPECTED_ACTION, at)
}

/// Parses a seccomp action.
///
/// Grammar: `allow` | `deny` (= `errno EPERM`) | `kill` | `kill-process` |
/// `kill-thread` | `trap` | `log` | `notify` | `errno` WS+ (NUMBER | NAME).
/// NUMBER is a [`super::parse_u64`] integer in 0..=4095; NAME is an errno
/// name such as `EACCES` (upper-case). Keywords are lower-case.
pub fn parse_action(s: &str) -> Result<Action, ValueError> {
    let (off, t) = trim(s);
    parse_action_trimmed(t).map_err(|e| e.shifted(off))
}

fn parse_action_trimmed(t: &str) -> Result<Action, ValueError> {
    if t.is_empty() {
        return Err(aerr("empty action", 0..0));
    }
    let word_end = span_while(t, |c| !c.is_whitespace() && !matches!(c, '(' | '=' | ':'));
    let word = &t[..word_end];
    let rest = &t[word_end..];
    let simple = match word {
        "allow" => Some(Action::Allow),
        "deny" => Some(Action::Errno(1)),
        "kill" | "kill-process" => Some(Action::KillProcess),
        "kill-thread" => Some(Action::KillThread),
        "trap" => Some(Action::Trap),
        "log" => Some(Action::Log),
        "notify" => Some(Action::Notify),
        "errno" => None,
        "" => {
            let (c, at) = char_at(t, 0).unwrap_or((' ', 0..0));
            return Err(aerr(format!("unexpected `{c}`"), at));
        }
        _ => return Err(unknown_action(word)),
    };
    if let Some(action) = simple {
        if rest.is_empty() {
            return Ok(action);
        }
        let r0 = word_end + span_while(rest, char::is_whitespace);
        return Err(aerr(format!("unexpected `{}` after `{word}`", t[r0..].escape_debug()), r0..t.len())
            .with_help(format!("`{word}` takes no argument")));
    }

    // errno
    const ERRNO_HELP: &str = "write `errno EPERM` or `errno 1`";
    if rest.is_empty() {
        return Err(aerr("missing errno value", 0..word_end).with_help(ERRNO_HELP));
    }
    if !rest.starts_with(char::is_whitespace) {
        let inner = rest[1..].trim().trim_end_matches(')').trim();
        let e = aerr("expected a space after `errno`", word_end..word_end + 1);
        return Err(if inner.is_empty() {
            e.with_help(ERRNO_HELP)
        } else {
            e.with_help(format!("write `errno {inner}`"))
        });
    }
    let arg_start = word_end + span_while(rest, char::is_whitespace);
    let arg_len = span_while(&t[arg_start..], |c| !c.is_whitespace());
    let arg = &t[arg_start..arg_start + arg_len];
    let arg_at = arg_start..arg_start + arg_len;
    if arg_start + arg_len < t.len() {
        let r0 = arg_start + arg_len + span_while(&t[arg_start + arg_len..], char::is_whitespace);
        return Err(aerr(format!("unexpected `{}` after the errno value", t[r0..].escape_debug()), r0..t.len()));
    }
    if arg.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
        let n = parse_u64_exact(arg).map_err(|e| {
            let e = e.shifted(arg_start).with_expected(EXPECTED_ACTION);
            match arg.strip_prefix('-') {
                Some(abs) => ValueError { help: Some(format!("errno values are positive: write `errno {abs}`")), ..e },
                None => e,
            }
        })?;
        if n > MAX_ERRNO {
            return Err(
                aerr(format!("errno value {n} is out of range"), arg_at).with_help("errno values go from 0 to 4095")
            );
        }
        return Ok(Action::Errno(n as u16));
    }
    if let Some(n) = errno_number(arg) {
        return Ok(Action::Errno(n));
    }
    let e = aerr(format!("unknown errno name `{}`", arg.escape_debug()), arg_at);
    let upper = arg.to_ascii_uppercase();
    if errno_number(&upper).is_some() {
        return Err(e.with_help(format!("errno names are upper-case: did you mean `{upper}`?")));
    }
    let names: Vec<&str> = ERRNOS.iter().chain(ERRNO_ALIASES).map(|e| e.0).collect();
    Err(match did_you_mean(arg, &names) {
        Some(n) => e.with_help(format!("did you mean `{n}`?")),
        None => e.with_help("use a Linux errno name such as `EPERM` or `EACCES`, or a number"),
    })
}

fn unknown_action(word: &str) -> ValueError {
    let e = aerr(format!("unknown action `{}`", word.escape_debug()), 0..word.len());
    if errno_number(word).is_some() || word.bytes().all(|b| b.is_ascii_digit()) {
        return e.with_help(format!("did you mean `errno {word}`?"));
    }
    let upper = word.to_ascii_uppercase();
    if errno_number(&upper).is_some() {
        return e.with_help(format!("did you mean `errno {upper}`?"));
    }
    // libseccomp spellings: SCMP_ACT_KILL_PROCESS, SCMP_ACT_ALLOW, ...
    let lowered = word.strip_prefix("SCMP_ACT_").unwrap_or(word).to_ascii_lowercase().replace('_', "-");
    let lowered = match lowered.as_str() {
        "notif" | "user-notif" | "user-notify" => "notify".to_string(),
        "errno" if word.starts_with("SCMP_ACT_") => "errno".to_string(),
        _ => lowered,
    };
    if let Some(w) = ACTION_WORDS.iter().find(|w| **w == lowered) {
        let w = if *w == "errno" { "errno EPERM" } else { w };
        return e.with_help(format!("did you mean `{w}`?"));
    }
    if lowered == "trace" {
        return e.with_help("tracing is not supported; use `notify` to hand the syscall to a supervisor");
    }
    match did_you_mean(word, ACTION_WORDS) {
        Some(w) => e.with_help(format!("did you mean `{w}`?")),
        None => e,
    }
}

// ---------------------------------------------------------------------------
// Argument conditions
// ---------------------------------------------------------------------------

const EXPECTED_COND: &str = "a condition such as `arg0 == 1` or `arg1 & 0x3 == 1`";
const OPS_HELP: &str = "operators are `==`, `!=`, `<`, `<=`, `>`, `>=`, and `&` for a mask (`arg1 & 0x3 == 1`)";

/// Comparison on a 64-bit syscall argument (unsigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(arg & mask) == value`.
    MaskedEq {
        mask: u64,
    },
}

/// `arg<arg> <op> <value>`.
///
/// Display is canonical: `arg0 == 2`, `arg2 < 0x1000`,
/// `arg1 & 0x3 == 1`: single spaces around operators; values in decimal
/// below 4096 and lower-case `0x` hex from 4096 up; masks always in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ArgCondition {
    pub arg: u8,
    pub op: CmpOp,
    pub value: u64,
}

impl ArgCondition {
    /// Whether a syscall argument value satisfies the condition (unsigned
    /// 64-bit comparison).
    pub fn matches(&self, arg_value: u64) -> bool {
        let v = self.value;
        match self.op {
            CmpOp::Eq => arg_value == v,
            CmpOp::Ne => arg_value != v,
            CmpOp::Lt => arg_value < v,
            CmpOp::Le => arg_value <= v,
            CmpOp::Gt => arg_value > v,
            CmpOp::Ge => arg_value >= v,
            CmpOp::MaskedEq { mask } => arg_value & mask == v,
        }
    }
}

struct Num(u64);
impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 4096 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{:#x}", self.0)
        }
    }
}

impl fmt::Display for ArgCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::MaskedEq { mask } => {
                return write!(f, "arg{} & {mask:#x} == {}", self.arg, Num(self.value));
            }
        };
        write!(f, "arg{} {op} {}", self.arg, Num(self.value))
    }
}

impl std::str::FromStr for ArgCondition {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_arg_condition(s)
    }
}

type NomErr<'a> = nom::error::Error<&'a str>;

fn ws(i: &str) -> &str {
    multispace0::<&str, NomErr<'_>>(i).map_or(i, |(rest, _)| rest)
}

#[derive(Clone, Copy)]
enum OpTok {
    Cmp(CmpOp),
    Mask,
}

fn op_token(i: &str) -> nom::IResult<&str, OpTok, NomErr<'_>> {
    alt((
        tag("==").map(|_| OpTok::Cmp(CmpOp::Eq)),
        tag("!=").map(|_| OpTok::Cmp(CmpOp::Ne)),
        tag("<=").map(|_| OpTok::Cmp(CmpOp::Le)),
        tag(">=").map(|_| OpTok::Cmp(CmpOp::Ge)),
        tag("<").map(|_| OpTok::Cmp(CmpOp::Lt)),
        tag(">").map(|_| OpTok::Cmp(CmpOp::Gt)),
        tag("&").map(|_| OpTok::Mask),
    ))
    .parse(i)
}

fn cerr(msg: impl Into<String>, at: Range<usize>) -> ValueError {
    ValueError::new(msg, EXPECTED_COND, at)
}

/// Parses a syscall argument condition.
///
/// Grammar (whitespace between tokens optional):
/// `'arg' INDEX OP VALUE` or `'arg' INDEX '&' MASK '==' VALUE`, with INDEX
/// 0..=5, OP one of `== != < <= > >=` (unsigned comparison) and MASK/VALUE
/// [`super::parse_u64`] integers. A masked comparison whose value has bits
/// outside the mask can never match and is an error.
pub fn parse_arg_condition(s: &str) -> Result<ArgCondition, ValueError> {
    let (off, t) = trim(s);
    parse_cond_trimmed(t).map_err(|e| e.shifted(off))
}

fn parse_cond_trimmed(t: &str) -> Result<ArgCondition, ValueError> {
    let pos = |rest: &str| t.len() - rest.len();
    if t.is_empty() {
        return Err(cerr("empty condition", 0..0));
    }

    // `arg` INDEX
    let Ok((rest, _)) = tag::<&str, &str, NomErr<'_>>("arg").parse(t) else {
        let len = span_while(t, |c| c.is_alphanumeric() || matches!(c, '_' | '$' | '[' | ']'));
        let len = if len == 0 { char_at(t, 0).map_or(0, |(c, _)| c.len_utf8()) } else { len };
        let tok = &t[..len];
        let mut e = cerr(format!("expected `arg0` to `arg5`, found `{}`", tok.escape_debug()), 0..len);
        let digits: String = tok.chars().filter(char::is_ascii_digit).collect();
        if !digits.is_empty() && digits.len() == 1 && digits.as_str() <= "5" && tok.chars().any(char::is_alphabetic) {
            e = e.with_help(format!("write `arg{digits}`"));
        }
        return Err(e);
    };
    let Ok((rest, idx)) = digit1::<&str, NomErr<'_>>(rest) else {
        return Err(
            cerr("missing argument index after `arg`", 0..3).with_help("syscall arguments are `arg0` to `arg5`")
        );
    };
    let idx_at = 3..3 + idx.len();
    let arg = match idx {
        "0" | "1" | "2" | "3" | "4" | "5" => idx.as_bytes()[0] - b'0',
        _ => {
            return Err(cerr(format!("argument index {idx} is out of range"), idx_at)
                .with_help("syscalls have six arguments, `arg0` to `arg5`"))
        }
    };
    let rest = ws(rest);

    // operator
    let (rest, op) = match op_token(rest) {
        Ok(_) if rest.starts_with("<>") => return Err(bad_operator(t, pos(rest))),
        Ok(x) => x,
        Err(_) => return Err(bad_operator(t, pos(rest))),
    };
    let rest = ws(rest);

    let (op, rest, value_at, value) = match op {
        OpTok::Cmp(op) => {
            let (rest, at, v) = number(t, rest)?;
            (op, rest, at, v)
        }
        OpTok::Mask => {
            if rest.starts_with('&') {
                let p = pos(rest);
                return Err(cerr("`&&` is not supported", p - 1..p + 1)
                    .with_help("a condition has exactly one comparison; write several conditions instead"));
            }
            let (rest, _, mask) = number(t, rest)?;
            let rest = ws(rest);
            let p = pos(rest);
            let rest = match op_token(rest) {
                Ok((r, OpTok::Cmp(CmpOp::Eq))) => r,
                Ok((r, _)) => {
                    return Err(cerr("only `==` can follow a mask", p..pos(r))
                        .with_help(format!("write `arg{arg} & {:#x} == <value>`", mask)))
                }
                Err(_) if rest.is_empty() => {
                    return Err(cerr("missing `==` after the mask", p..p)
                        .with_help(format!("write `arg{arg} & {mask:#x} == <value>`")))
                }
                Err(_) => return Err(bad_operator(t, p)),
            };
            let rest = ws(rest);
            let (rest, at, v) = number(t, rest)?;
            (CmpOp::MaskedEq { mask }, rest, at, v)
        }
    };

    let rest = ws(rest);
    if !rest.is_empty() {
        let p = pos(rest);
        let mut e = cerr(format!("unexpected `{}`", rest.escape_debug()), p..t.len());
        if rest.starts_with("&&") || rest.starts_with("||") || rest.starts_with("and") || rest.starts_with("or") {
            e = e.with_help("a condition has exactly one comparison; write several conditions instead");
        }
        return Err(e);
    }

    if let CmpOp::MaskedEq { mask } = op {
        if value & !mask != 0 {
            return Err(cerr("value has bits outside the mask", value_at).with_help(format!(
                "`arg{arg} & {mask:#x}` can never equal {value:#x}, so this condition would never match"
            )));
        }
    }
    Ok(ArgCondition { arg, op, value })
}

fn bad_operator(t: &str, p: usize) -> ValueError {
    let rest = &t[p..];
    let Some((c, at)) = char_at(t, p) else {
        return cerr("missing comparison operator", p..p).with_help(OPS_HELP);
    };
    let fix = if rest.starts_with("=<") {
        Some(("=<", "<="))
    } else if rest.starts_with("=>") {
        Some(("=>", ">="))
    } else if rest.starts_with("<>") {
        Some(("<>", "!="))
    } else if rest.starts_with('=') {
        Some(("=", "=="))
    } else {
        None
    };
    if let Some((bad, good)) = fix {
        return cerr(format!("unknown operator `{bad}`"), p..p + bad.len())
            .with_help(format!("did you mean `{good}`?"));
    }
    cerr(format!("expected a comparison operator, found `{}`", c.escape_debug()), at).with_help(OPS_HELP)
}

/// A value token starting at `rest` (a suffix of `t`): everything up to
/// whitespace or an operator character, parsed with `parse_u64` rules.
fn number<'a>(t: &str, rest: &'a str) -> Result<(&'a str, Range<usize>, u64), ValueError> {
    let p = t.len() - rest.len();
    let len = span_while(rest, |c| !c.is_whitespace() && !matches!(c, '=' | '!' | '<' | '>' | '&'));
    if len == 0 {
        return Err(match char_at(t, p) {
            None => cerr("missing value", p..p).with_help("e.g. `arg0 == 1`"),
            Some((c, at)) => cerr(format!("expected a number, found `{}`", c.escape_debug()), at),
        });
    }
    let v = parse_u64_exact(&rest[..len]).map_err(|e| e.shifted(p).with_expected(EXPECTED_COND))?;
    Ok((&rest[len..], p..p + len, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table() {
        assert_eq!(errno_name(1), Some("EPERM"));
        assert_eq!(errno_name(13), Some("EACCES"));
        assert_eq!(errno_name(11), Some("EAGAIN"));
        assert_eq!(errno_name(133), Some("EHWPOISON"));
        assert_eq!(errno_name(0), None);
        assert_eq!(errno_name(41), None);
        assert_eq!(errno_name(58), None);
        assert_eq!(errno_name(134), None);
        assert_eq!(errno_number("EPERM"), Some(1));
        assert_eq!(errno_number("EWOULDBLOCK"), Some(11));
        assert_eq!(errno_number("EDEADLOCK"), Some(35));
        assert_eq!(errno_number("ENOTSUP"), Some(95));
        assert_eq!(errno_number("eperm"), None);
        assert_eq!(errno_number("EFOO"), None);
        // Sorted, unique, covering 1..=133 except the two holes.
        assert!(ERRNOS.windows(2).all(|w| w[0].1 < w[1].1));
        assert_eq!(ERRNOS.len(), 131);
        for n in 1..=133u16 {
            if n != 41 && n != 58 {
                let name = errno_name(n).unwrap();
                assert_eq!(errno_number(name), Some(n));
            }
        }
        let mut names: Vec<_> = ERRNOS.iter().chain(ERRNO_ALIASES).map(|e| e.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ERRNOS.len() + ERRNO_ALIASES.len());
    }

    #[test]
    fn actions_valid() {
        let cases: &[(&str, Action)] = &[
            ("allow", Action::Allow),
            ("deny", Action::Errno(1)),
            ("kill", Action::KillProcess),
            ("kill-process", Action::KillProcess),
            ("kill-thread", Action::KillThread),
            ("trap", Action::Trap),
            ("log", Action::Log),
            ("notify", Action::Notify),
            ("errno 1", Action::Errno(1)),
            ("errno EPERM", Action::Errno(1)),
            ("errno EACCES", Action::Errno(13)),
            ("errno EWOULDBLOCK", Action::Errno(11)),
            ("errno 0", Action::Errno(0)),
            ("errno 4095", Action::Errno(4095)),
            ("errno 0xfff", Action::Errno(4095)),
            ("errno\t  ENOSYS", Action::Errno(38)),
            ("  allow  ", Action::Allow),
        ];
        for (s, a) in cases {
            assert_eq!(parse_action(s), Ok(*a), "{s:?}");
        }
    }

    #[track_caller]
    fn abad(s: &str) -> ValueError {
        match parse_action(s) {
            Ok(a) => panic!("{s:?} parsed as {a:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn actions_invalid() {
        let e = abad("");
        assert_eq!((e.message.as_str(), e.at), ("empty action", 0..0));
        let e = abad("errno");
        assert_eq!((e.message.as_str(), e.at.clone()), ("missing errno value", 0..5));
        assert_eq!(abad("errno  ").message, "missing errno value");
        let e = abad("errno 4096");
        assert_eq!((e.message.as_str(), e.at.clone()), ("errno value 4096 is out of range", 6..10));
        assert_eq!(abad("errno 99999999999999999999999").message, "number is too large");
        let e = abad("errno eperm");
        assert_eq!((e.message.as_str(), e.at.clone()), ("unknown errno name `eperm`", 6..11));
        assert_eq!(e.help.as_deref(), Some("errno names are upper-case: did you mean `EPERM`?"));
        assert_eq!(abad("errno EACESS").help.as_deref(), Some("did you mean `EACCES`?"));
        assert_eq!(
            abad("errno EFOOBARBAZ").help.as_deref(),
            Some("use a Linux errno name such as `EPERM` or `EACCES`, or a number")
        );
        let e = abad("errno -1");
        assert_eq!((e.at.clone(), e.help.as_deref()), (6..7, Some("errno values are positive: write `errno 1`")));
        assert_eq!(abad("errno 1 2").at, 8..9);
        assert_eq!(abad("errno 1x").at, 7..8);
        let e = abad("errno(EPERM)");
        assert_eq!(
            (e.message.as_str(), e.at.clone(), e.help.as_deref()),
            ("expected a space after `errno`", 5..6, Some("write `errno EPERM`"))
        );
        assert_eq!(abad("errno=13").help.as_deref(), Some("write `errno 13`"));
        let e = abad("allow now");
        assert_eq!((e.message.as_str(), e.at.clone()), ("unexpected `now` after `allow`", 6..9));
        let e = abad("ALLOW");
        assert_eq!(
            (e.message.as_str(), e.at.clone(), e.help.as_deref()),
            ("unknown action `ALLOW`", 0..5, Some("did you mean `allow`?"))
        );
        assert_eq!(abad("kill_process").help.as_deref(), Some("did you mean `kill-process`?"));
        assert_eq!(abad("SCMP_ACT_KILL_THREAD").help.as_deref(), Some("did you mean `kill-thread`?"));
        assert_eq!(abad("SCMP_ACT_ERRNO").help.as_deref(), Some("did you mean `errno EPERM`?"));
        assert_eq!(abad("user-notif").help.as_deref(), Some("did you mean `notify`?"));
        assert_eq!(abad("EPERM").help.as_deref(), Some("did you mean `errno EPERM`?"));
        assert_eq!(abad("eacces").help.as_deref(), Some("did you mean `errno EACCES`?"));
        assert_eq!(abad("13").help.as_deref(), Some("did you mean `errno 13`?"));
        assert_eq!(abad("alow").help.as_deref(), Some("did you mean `allow`?"));
        assert!(abad("trace").help.unwrap().contains("notify"));
        assert_eq!(abad("frobnicate").help, None);
        assert_eq!(abad("(").message, "unexpected `(`");
        assert_eq!(abad(" nope").at, 1..5);
    }

    #[test]
    fn actions_display_round_trip_serde() {
        assert_eq!(Action::Errno(1).to_string(), "errno EPERM");
        assert_eq!(parse_action("deny").unwrap().to_string(), "errno EPERM");
        assert_eq!(parse_action("kill").unwrap().to_string(), "kill-process");
        assert_eq!(Action::Errno(0).to_string(), "errno 0");
        assert_eq!(Action::Errno(41).to_string(), "errno 41");
        assert_eq!(Action::Errno(1234).to_string(), "errno 1234");
        assert_eq!(Action::Notify.to_string(), "notify");
        let mut all =
            vec![Action::Allow, Action::KillProcess, Action::KillThread, Action::Trap, Action::Log, Action::Notify];
        all.extend((0..=4095).map(Action::Errno));
        for a in all {
            assert_eq!(parse_action(&a.to_string()), Ok(a), "{a:?}");
        }
        assert_eq!(serde_json::to_string(&Action::Allow).unwrap(), r#"{"action":"allow"}"#);
        assert_eq!(serde_json::to_string(&Action::KillProcess).unwrap(), r#"{"action":"kill-process"}"#);
        assert_eq!(serde_json::to_string(&Action::Errno(13)).unwrap(), r#"{"action":"errno","errno":13}"#);
        for a in [Action::Allow, Action::Errno(13), Action::KillThread, Action::Notify] {
            let j = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<Action>(&j).unwrap(), a);
        }
    }

    fn cond(arg: u8, op: CmpOp, value: u64) -> ArgCondition {
        ArgCondition { arg, op, value }
    }

    #[test]
    fn conditions_valid() {
        let cases: &[(&str, ArgCondition)] = &[
            ("arg0 == 1", cond(0, CmpOp::Eq, 1)),
            ("arg1 != 0x10", cond(1, CmpOp::Ne, 16)),
            ("arg2 < 5", cond(2, CmpOp::Lt, 5)),
            ("arg2 <= 5", cond(2, CmpOp::Le, 5)),
            ("arg3 > 5", cond(3, CmpOp::Gt, 5)),
            ("arg4 >= 5", cond(4, CmpOp::Ge, 5)),
            ("arg1 & 0x3 == 1", cond(1, CmpOp::MaskedEq { mask: 3 }, 1)),
            ("arg5==0", cond(5, CmpOp::Eq, 0)),
            ("arg1&0x3==1", cond(1, CmpOp::MaskedEq { mask: 3 }, 1)),
            ("  arg0   ==\t7  ", cond(0, CmpOp::Eq, 7)),
            ("arg0 == 0xffff_ffff_ffff_ffff", cond(0, CmpOp::Eq, u64::MAX)),
            ("arg0 == 0o755", cond(0, CmpOp::Eq, 0o755)),
            ("arg3 & 0 == 0", cond(3, CmpOp::MaskedEq { mask: 0 }, 0)),
            ("arg3 & 0xff00 == 0x1200", cond(3, CmpOp::MaskedEq { mask: 0xff00 }, 0x1200)),
        ];
        for (s, c) in cases {
            assert_eq!(parse_arg_condition(s), Ok(*c), "{s:?}");
        }
    }

    #[track_caller]
    fn cbad(s: &str) -> ValueError {
        match parse_arg_condition(s) {
            Ok(c) => panic!("{s:?} parsed as {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn conditions_invalid() {
        let e = cbad("arg1 & 0x3 == 4");
        assert_eq!((e.message.as_str(), e.at.clone()), ("value has bits outside the mask", 14..15));
        assert!(e.help.unwrap().contains("never match"));
        let e = cbad("arg6 == 1");
        assert_eq!((e.message.as_str(), e.at.clone()), ("argument index 6 is out of range", 3..4));
        assert_eq!(cbad("arg00 == 1").at, 3..5);
        assert_eq!(
            cbad("arg99999999999999999999999 == 1").message,
            "argument index 99999999999999999999999 is out of range"
        );
        let e = cbad("arg == 1");
        assert_eq!((e.message.as_str(), e.at.clone()), ("missing argument index after `arg`", 0..3));
        let e = cbad("args[1] == 1");
        assert_eq!(e.message, "missing argument index after `arg`");
        let e = cbad("a1 == 1");
        assert_eq!(
            (e.message.as_str(), e.at.clone(), e.help.as_deref()),
            ("expected `arg0` to `arg5`, found `a1`", 0..2, Some("write `arg1`"))
        );
        assert_eq!(cbad("$1 == 1").help.as_deref(), None);
        let e = cbad("arg0 = 1");
        assert_eq!(
            (e.message.as_str(), e.at.clone(), e.help.as_deref()),
            ("unknown operator `=`", 5..6, Some("did you mean `==`?"))
        );
        assert_eq!(cbad("arg0 => 1").help.as_deref(), Some("did you mean `>=`?"));
        assert_eq!(cbad("arg0 =< 1").help.as_deref(), Some("did you mean `<=`?"));
        assert_eq!(cbad("arg0 <> 1").help.as_deref(), Some("did you mean `!=`?"));
        let e = cbad("arg0");
        assert_eq!((e.message.as_str(), e.at), ("missing comparison operator", 4..4));
        let e = cbad("arg0 ==");
        assert_eq!((e.message.as_str(), e.at), ("missing value", 7..7));
        let e = cbad("arg0 == -1");
        assert_eq!((e.message.as_str(), e.at.clone()), ("negative numbers are not allowed", 8..9));
        assert!(e.help.unwrap().contains("0xffffffffffffffff"));
        assert_eq!(cbad("arg0 == 1.5").message, "fractions are not allowed here");
        assert_eq!(cbad("arg0 == 18446744073709551616").at, 8..28);
        assert_eq!(cbad("arg0 == 1 2").at, 10..11);
        assert!(cbad("arg0 == 1 && arg1 == 2").help.unwrap().contains("one comparison"));
        assert_eq!(cbad("arg0 && 1").message, "`&&` is not supported");
        let e = cbad("arg1 & 0x3 != 1");
        assert_eq!((e.message.as_str(), e.at.clone()), ("only `==` can follow a mask", 11..13));
        assert_eq!(cbad("arg1 & 0x3").message, "missing `==` after the mask");
        assert_eq!(cbad("arg1 & == 1").message, "expected a number, found `=`");
        assert_eq!(cbad("arg1 & 0x3 = 1").message, "unknown operator `=`");
        assert_eq!(cbad("arg1 ~ 1").at, 5..6);
        assert_eq!(cbad("arg1x == 1").at, 4..5);
        assert_eq!(cbad("arg0 == 🦀").at, 8..12);
        assert_eq!(cbad("").message, "empty condition");
        assert_eq!(cbad("🦀").at, 0..4);
        assert_eq!(cbad(" arg0 == 0755").at, 9..10);
    }

    #[test]
    fn conditions_display_and_round_trip() {
        let cases: &[(ArgCondition, &str)] = &[
            (cond(0, CmpOp::Eq, 2), "arg0 == 2"),
            (cond(1, CmpOp::MaskedEq { mask: 3 }, 1), "arg1 & 0x3 == 1"),
            (cond(2, CmpOp::Ne, 4095), "arg2 != 4095"),
            (cond(2, CmpOp::Lt, 4096), "arg2 < 0x1000"),
            (cond(3, CmpOp::Le, u64::MAX), "arg3 <= 0xffffffffffffffff"),
            (cond(4, CmpOp::Gt, 0), "arg4 > 0"),
            (cond(5, CmpOp::Ge, 10), "arg5 >= 10"),
            (cond(0, CmpOp::MaskedEq { mask: 0 }, 0), "arg0 & 0x0 == 0"),
            (cond(0, CmpOp::MaskedEq { mask: u64::MAX }, 0x10000), "arg0 & 0xffffffffffffffff == 0x10000"),
        ];
        for (c, s) in cases {
            assert_eq!(c.to_string(), *s);
            assert_eq!(parse_arg_condition(s), Ok(*c));
        }
        for s in ["arg1&3==1", "arg0==0x2", "  arg2<=0b11 ", "arg3 != 1_000_000"] {
            let c = parse_arg_condition(s).unwrap();
            assert_eq!(parse_arg_condition(&c.to_string()), Ok(c), "{s}");
        }
        let ops =
            [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge, CmpOp::MaskedEq { mask: 0xffff_0000 }];
        for arg in 0..=5 {
            for op in ops {
                for v in [0, 1, 4095, 4096, 0xffff_0000, u64::MAX] {
                    let c = cond(arg, op, v);
                    if let CmpOp::MaskedEq { mask } = op {
                        if v & !mask != 0 {
                            continue;
                        }
                    }
                    assert_eq!(parse_arg_condition(&c.to_string()), Ok(c), "{c}");
                }
            }
        }
    }

    #[test]
    fn conditions_match_and_serde() {
        let c = parse_arg_condition("arg1 & 0x3 == 1").unwrap();
        assert!(c.matches(1) && c.matches(5) && c.matches(0xfd));
        assert!(!c.matches(0) && !c.matches(2) && !c.matches(3));
        let m = |s: &str, v: u64| parse_arg_condition(s).unwrap().matches(v);
        assert!(m("arg0 == 5", 5) && !m("arg0 == 5", 6));
        assert!(m("arg0 != 5", 6) && !m("arg0 != 5", 5));
        assert!(m("arg0 < 5", 4) && !m("arg0 < 5", 5));
        assert!(m("arg0 <= 5", 5) && !m("arg0 <= 5", 6));
        assert!(m("arg0 > 5", 6) && !m("arg0 > 5", 5));
        assert!(m("arg0 >= 5", 5) && !m("arg0 >= 5", 4));
        assert!(m("arg0 > 5", u64::MAX)); // unsigned: -1 is large
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"arg":1,"op":{"op":"masked-eq","mask":3},"value":1}"#);
        let e = parse_arg_condition("arg0 <= 7").unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"arg":0,"op":{"op":"le"},"value":7}"#);
        for x in [c, e] {
            let j = serde_json::to_string(&x).unwrap();
            assert_eq!(serde_json::from_str::<ArgCondition>(&j).unwrap(), x);
        }
    }
}
