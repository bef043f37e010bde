//! Inline values with nom: plain and quoted scalars, `[flow, lists]` and
//! `{flow: maps}`, and the `key:` prefix of a map line. YAML features that
//! the policy language forbids (anchors, aliases, tags, block scalars) are
//! recognised here so that the error names them.

use super::tree::{Entry, Item, Node, NodeKind, Scalar, ScalarStyle, Trivia};
use crate::diag::{Diagnostic, Diagnostics};
use crate::source::{FileId, Span};
use nom::branch::alt;
use nom::bytes::complete::{escaped_transform, is_not, tag, take_while, take_while1};
use nom::character::complete::{char, satisfy};
use nom::combinator::{recognize, value};
use nom::sequence::{delimited, pair};
use nom::{IResult, Parser};

fn is_key_start(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn key(i: &str) -> IResult<&str, &str> {
    recognize(pair(satisfy(is_key_start), take_while(is_key_char))).parse(i)
}

/// `key:` at the start of a line: returns the key and the byte index after
/// the colon. The colon must be followed by a blank or the end of the line.
pub(crate) fn parse_key(content: &str) -> Option<(&str, usize)> {
    let (rest, k) = key(content).ok()?;
    let (rest, _) = char::<&str, nom::error::Error<&str>>(':').parse(rest).ok()?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some((k, content.len() - rest.len()))
}

/// Blanks between tokens; newlines occur only inside multi-line flow values.
/// A comment line inside such a value was already reported by the lexer;
/// it is skipped here so that it causes no second error.
fn blanks(i: &str) -> IResult<&str, &str> {
    let mut rest = i;
    loop {
        let (r, ws) = take_while(|c| matches!(c, ' ' | '\n' | '\r')).parse(rest)?;
        rest = r;
        if ws.contains('\n') && rest.starts_with('#') {
            rest = rest.find('\n').map_or("", |n| &rest[n..]);
            continue;
        }
        return Ok((rest, &i[..i.len() - rest.len()]));
    }
}

fn double_quoted(i: &str) -> IResult<&str, String> {
    // Strings end on their line: a newline inside quotes is an error.
    let body = escaped_transform(
        is_not("\"\\\n"),
        '\\',
        alt((
            value("\\", tag("\\")),
            value("\"", tag("\"")),
            value("\n", tag("n")),
            value("\t", tag("t")),
            value("\r", tag("r")),
            value("\0", tag("0")),
        )),
    );
    delimited(char('"'), alt((body, value(String::new(), tag("")))), char('"')).parse(i)
}

fn single_quoted(i: &str) -> IResult<&str, String> {
    let (mut rest, _) = char('\'').parse(i)?;
    let mut out = String::new();
    loop {
        let (r, chunk) = take_while(|c| c != '\'' && c != '\n').parse(rest)?;
        out.push_str(chunk);
        let (r, _) = char('\'').parse(r)?;
        if let Some(r2) = r.strip_prefix('\'') {
            out.push('\'');
            rest = r2;
        } else {
            return Ok((r, out));
        }
    }
}

/// A plain scalar inside `[...]` or `{...}`: stops at `,`, `]`, `}` (and
/// at `:` followed by a blank inside a flow map).
fn flow_plain(i: &str) -> IResult<&str, &str> {
    take_while1(|c: char| !matches!(c, ',' | ']' | '}' | '[' | '{' | '\n' | '\r')).parse(i)
}

struct Inline<'a, 'd> {
    file: FileId,
    /// The whole inline text and its byte offset in the file.
    text: &'a str,
    base: usize,
    diags: &'d mut Diagnostics,
}

impl<'a> Inline<'a, '_> {
    fn off(&self, rest: &str) -> usize {
        self.base + (self.text.len() - rest.len())
    }
    fn span(&self, from: &str, to: &str) -> Span {
        Span::new(self.file, self.off(from), self.off(to))
    }

    fn forbidden(&mut self, at: &'a str) -> Option<Diagnostic> {
        let c = at.chars().next()?;
        let sp = Span::new(self.file, self.off(at), self.off(at) + c.len_utf8());
        let (what, help) = match c {
            '&' => (
                "anchors are not allowed",
                "write the value out in full; to share settings between policies use `extends:`",
            ),
            '*' => (
                "aliases are not allowed",
                "write the value out in full; to share settings between policies use `extends:`",
            ),
            '!' => ("tags are not allowed", "remove the tag: every value is typed by the schema"),
            '|' | '>' => ("block scalars are not allowed", "write the value on one line, quoted if needed"),
            '@' | '`' | '%' => ("reserved character at the start of a value", "quote the value: \"...\""),
            _ => return None,
        };
        Some(Diagnostic::error("P0011", sp, what).label("here").found(format!("`{c}`")).help(help))
    }

    /// A value in block context: the rest of a `key: ...` line or a list item.
    fn block_value(&mut self) -> Node {
        let text = self.text;
        if let Some(d) = self.forbidden(text) {
            self.diags.push(d);
            let n = self.plain(text, text.len());
            return Node { kind: NodeKind::Invalid, span: n.span };
        }
        let node = match text.chars().next() {
            Some('[') | Some('{') | Some('"') | Some('\'') => self.flow_value(text, false),
            _ => {
                if let Some(pos) = text.find(": ") {
                    let at = &text[pos..];
                    self.diags.push(
                        Diagnostic::error(
                            "P0012",
                            Span::new(self.file, self.off(at), self.off(at) + 1),
                            "`: ` inside a plain value",
                        )
                        .label("a second `key: value` cannot start here")
                        .help("put nested keys on their own indented lines, or quote the value"),
                    );
                }
                return self.plain(text, text.len());
            }
        };
        let (rest, node) = node;
        if !rest.trim().is_empty() {
            self.diags.push(
                Diagnostic::error("P0013", self.span(rest, &rest[rest.len()..]), "unexpected text after the value")
                    .found(format!("`{}`", rest.trim()))
                    .help("quote the whole value, or start a comment with ` #`"),
            );
        }
        node
    }

    fn plain(&self, at: &'a str, len: usize) -> Node {
        let raw = &at[..len];
        let trimmed = raw.trim_end();
        let lead = raw.len() - raw.trim_start().len();
        let sp = Span::new(self.file, self.off(at) + lead, self.off(at) + trimmed.len());
        Node {
            kind: NodeKind::Scalar(Scalar {
                text: trimmed.trim_start().to_string(),
                style: ScalarStyle::Plain,
                span: sp,
            }),
            span: sp,
        }
    }

    /// A value inside flow context or starting with a flow indicator.
    fn flow_value(&mut self, i: &'a str, in_flow: bool) -> (&'a str, Node) {
        let (i, _) = blanks(i).unwrap_or((i, ""));
        if let Some(d) = self.forbidden(i) {
            self.diags.push(d);
            let end = flow_plain(i).map_or(i.len(), |(rest, _)| i.len() - rest.len());
            let rest = &i[end..];
            return (rest, Node { kind: NodeKind::Invalid, span: self.span(i, rest) });
        }
        match i.chars().next() {
            Some('[') => self.flow_seq(i),
            Some('{') => self.flow_map(i),
            Some('"') => self.quoted(i, ScalarStyle::DoubleQuoted),
            Some('\'') => self.quoted(i, ScalarStyle::SingleQuoted),
            _ if in_flow => match flow_plain(i) {
                Ok((rest, s)) => (rest, self.plain(i, s.len())),
                Err(_) => {
                    let sp =
                        Span::new(self.file, self.off(i), self.off(i) + i.chars().next().map_or(0, char::len_utf8));
                    self.diags.push(
                        Diagnostic::error("P0014", sp, "expected a value")
                            .found(i.chars().next().map_or("the end of the line".into(), |c| format!("`{c}`"))),
                    );
                    (i, Node { kind: NodeKind::Invalid, span: sp })
                }
            },
            _ => (&i[i.len()..], self.plain(i, i.len())),
        }
    }

    fn quoted(&mut self, i: &'a str, style: ScalarStyle) -> (&'a str, Node) {
        let parsed = match style {
            ScalarStyle::DoubleQuoted => double_quoted(i),
            _ => single_quoted(i),
        };
        match parsed {
            Ok((rest, text)) => {
                let outer = self.span(i, rest);
                let inner = Span::new(self.file, outer.start as usize + 1, (outer.end as usize).saturating_sub(1));
                (rest, Node { kind: NodeKind::Scalar(Scalar { text, style, span: inner }), span: outer })
            }
            Err(_) => {
                let sp = Span::new(self.file, self.off(i), self.off(i) + i.len());
                self.diags.push(
                    Diagnostic::error("P0015", sp, "unterminated or invalid quoted string")
                        .expected(if style == ScalarStyle::DoubleQuoted {
                            "a closing `\"`; escapes are \\\\ \\\" \\n \\t \\r \\0"
                        } else {
                            "a closing `'`"
                        })
                        .help("strings end on the line where they start"),
                );
                (&i[i.len()..], Node { kind: NodeKind::Invalid, span: sp })
            }
        }
    }

    fn expect_close(&mut self, i: &'a str, open: &'a str, close: char) -> Result<&'a str, &'a str> {
        let (i, _) = blanks(i).unwrap_or((i, ""));
        match i.strip_prefix(close) {
            Some(r) => Ok(r),
            None => {
                let sp = Span::new(self.file, self.off(i), self.off(i) + i.chars().next().map_or(0, char::len_utf8));
                self.diags.push(
                    Diagnostic::error("P0016", sp, format!("expected `,` or `{close}`"))
                        .found(i.chars().next().map_or("the end of the line".into(), |c| format!("`{c}`")))
                        .related(Span::new(self.file, self.off(open), self.off(open) + 1), "list or map opened here")
                        .help(format!(
                            "close it with `{close}`; a list or map may continue over several lines until it is closed"
                        )),
                );
                Err(&i[i.len()..])
            }
        }
    }

    fn flow_seq(&mut self, i: &'a str) -> (&'a str, Node) {
        let errors_before = self.diags.items.len();
        let open = i;
        let mut rest = &i[1..];
        let mut items = Vec::new();
        loop {
            let (r, _) = blanks(rest).unwrap_or((rest, ""));
            if let Some(r2) = r.strip_prefix(']') {
                rest = r2;
                break;
            }
            if r.is_empty() {
                let _ = self.expect_close(r, open, ']');
                rest = r;
                break;
            }
            let (r, node) = self.flow_value(r, true);
            items.push(Item { value: node, trivia: Trivia::default() });
            let (r, _) = blanks(r).unwrap_or((r, ""));
            if let Some(r2) = r.strip_prefix(',') {
                rest = r2;
                continue;
            }
            rest = self.expect_close(r, open, ']').unwrap_or_else(|e| e);
            break;
        }
        // After an error inside, the partial list would only cause more errors.
        let kind = if self.diags.items.len() > errors_before {
            NodeKind::Invalid
        } else {
            NodeKind::Seq { items, flow: true }
        };
        (rest, Node { kind, span: self.span(open, rest) })
    }

    fn flow_map(&mut self, i: &'a str) -> (&'a str, Node) {
        let errors_before = self.diags.items.len();
        let open = i;
        let mut rest = &i[1..];
        let mut entries: Vec<Entry> = Vec::new();
        loop {
            let (r, _) = blanks(rest).unwrap_or((rest, ""));
            if let Some(r2) = r.strip_prefix('}') {
                rest = r2;
                break;
            }
            let Ok((after_key, k)) = key(r) else {
                let sp = Span::new(self.file, self.off(r), self.off(r) + r.chars().next().map_or(0, char::len_utf8));
                self.diags.push(
                    Diagnostic::error("P0016", sp, "expected a key in `{...}`")
                        .found(r.chars().next().map_or("the end of the line".into(), |c| format!("`{c}`"))),
                );
                rest = &r[r.len()..];
                break;
            };
            let key_span = self.span(r, after_key);
            let Some(after_colon) = after_key
                .strip_prefix(": ")
                .or_else(|| after_key.strip_prefix(':').filter(|s| s.starts_with([',', '}'])))
            else {
                self.diags.push(
                    Diagnostic::error(
                        "P0016",
                        Span::new(
                            self.file,
                            self.off(after_key),
                            self.off(after_key) + after_key.chars().next().map_or(0, char::len_utf8),
                        ),
                        "expected `: ` after the key",
                    )
                    .found(after_key.chars().next().map_or("the end of the line".into(), |c| format!("`{c}`"))),
                );
                rest = &r[r.len()..];
                break;
            };
            // Inside a flow map, a plain value also stops at the next `key:`-free comma.
            let (r, node) = self.flow_value(after_colon, true);
            if let Some(prev) = entries.iter().find(|e| e.key == k) {
                self.diags.push(
                    Diagnostic::error("P0010", key_span, format!("duplicate key `{k}`"))
                        .label("defined again here")
                        .related(prev.key_span, "first defined here"),
                );
            }
            entries.push(Entry { key: k.to_string(), key_span, value: node, trivia: Trivia::default() });
            let (r, _) = blanks(r).unwrap_or((r, ""));
            if let Some(r2) = r.strip_prefix(',') {
                rest = r2;
                continue;
            }
            rest = self.expect_close(r, open, '}').unwrap_or_else(|e| e);
            break;
        }
        let kind = if self.diags.items.len() > errors_before { NodeKind::Invalid } else { NodeKind::Map(entries) };
        (rest, Node { kind, span: self.span(open, rest) })
    }
}

/// Parses the inline value `text`, which starts at byte `base` of the file.
pub(crate) fn parse_inline(file: FileId, text: &str, base: usize, diags: &mut Diagnostics) -> Node {
    Inline { file, text, base, diags }.block_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(s: &str) -> (Node, Diagnostics) {
        let mut d = Diagnostics::default();
        let n = parse_inline(FileId(0), s, 0, &mut d);
        (n, d)
    }

    #[test]
    fn keys() {
        assert_eq!(parse_key("a: b"), Some(("a", 2)));
        assert_eq!(parse_key("io_mode:"), Some(("io_mode", 8)));
        assert_eq!(parse_key("a:b"), None);
        assert_eq!(parse_key("- a"), None);
    }

    #[test]
    fn flow_list_of_plain_scalars() {
        let (n, d) = inline("[read, write , openat]");
        assert!(d.items.is_empty(), "{d:?}");
        let items = n.as_seq().unwrap();
        let t: Vec<_> = items.iter().map(|i| i.value.as_scalar().unwrap().text.as_str()).collect();
        assert_eq!(t, ["read", "write", "openat"]);
        assert_eq!(items[1].value.span, Span::new(FileId(0), 7, 12));
    }

    #[test]
    fn quoted_scalars_resolve_escapes() {
        let (n, d) = inline(r#""a\"b\n""#);
        assert!(d.items.is_empty());
        assert_eq!(n.as_scalar().unwrap().text, "a\"b\n");
        let (n, _) = inline("'it''s'");
        assert_eq!(n.as_scalar().unwrap().text, "it's");
        let (n, _) = inline("\"\"");
        assert_eq!(n.as_scalar().unwrap().text, "");
    }

    #[test]
    fn flow_map() {
        let (n, d) = inline("{path: /tmp, access: read-only}");
        assert!(d.items.is_empty(), "{d:?}");
        assert_eq!(n.get("access").unwrap().as_scalar().unwrap().text, "read-only");
    }

    #[test]
    fn forbidden_yaml_features_are_named() {
        for (s, code) in [
            ("&a x", "P0011"),
            ("*a", "P0011"),
            ("!!str x", "P0011"),
            ("|", "P0011"),
            ("[a, b", "P0016"),
            ("\"abc", "P0015"),
            ("a: b", "P0012"),
        ] {
            let (_, d) = inline(s);
            assert_eq!(d.items.first().map(|d| d.code), Some(code), "{s}");
        }
    }
}
