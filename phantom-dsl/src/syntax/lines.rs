//! First pass: physical lines to logical lines. Strips comments, measures
//! indentation, rejects tabs and document markers, and splits `- ` list
//! markers into their own logical lines so that `- key: value` becomes a
//! dash at column N followed by `key: value` at column N + 2.

use crate::diag::{Diagnostic, Diagnostics};
use crate::source::{FileId, Span};

#[derive(Debug, Clone)]
pub(crate) struct Line<'s> {
    /// Column of the content (0-based, in bytes: indentation is ASCII).
    pub indent: usize,
    /// Byte offset of `content` in the file.
    pub start: usize,
    /// Content without indentation, trailing comment or trailing blanks.
    pub content: &'s str,
    /// A `-` list marker (content is empty).
    pub dash: bool,
    /// Produced by splitting the text after a `- ` marker.
    pub after_dash: bool,
    /// Comment at the end of this physical line (only on its last piece).
    pub comment: Option<String>,
    /// Full-line comments directly above (only on the first piece).
    pub leading: Vec<String>,
    pub blank_before: bool,
}

pub(crate) struct Lexed<'s> {
    pub lines: Vec<Line<'s>>,
    /// Comments after the last content line.
    pub trailing_comments: Vec<String>,
}

pub(crate) fn lex<'s>(file: FileId, text: &'s str, diags: &mut Diagnostics) -> Lexed<'s> {
    let mut lines = Vec::new();
    let mut leading = Vec::new();
    let mut blank = false;
    let raws: Vec<(usize, &str)> = text
        .split_inclusive('\n')
        .scan(0, |off, raw| {
            let start = *off;
            *off += raw.len();
            Some((start, raw))
        })
        .collect();
    let mut idx = 0;
    while idx < raws.len() {
        let (line_start, raw) = raws[idx];
        idx += 1;
        let body = raw.trim_end_matches(['\n', '\r']);
        let ws_len = body.len() - body.trim_start_matches([' ', '\t']).len();
        let indentation = &body[..ws_len];
        let mut indent = ws_len;
        if let Some(tab) = indentation.find('\t') {
            let rest = &body[ws_len..];
            if !rest.is_empty() && !rest.starts_with('#') {
                diags.push(
                    Diagnostic::error(
                        "P0003",
                        Span::new(file, line_start + tab, line_start + tab + 1),
                        "tab in indentation",
                    )
                    .label("tab here")
                    .expected("spaces")
                    .found("a tab character")
                    .help("indent with spaces only; tabs are not allowed in policy files"),
                );
            }
            // Count a tab as two spaces so that the rest of the file still parses.
            indent = indentation.chars().map(|c| if c == '\t' { 2 } else { 1 }).sum();
        }
        let rest = &body[ws_len..];
        if rest.trim().is_empty() {
            blank = true;
            continue;
        }
        if let Some(c) = rest.strip_prefix('#') {
            leading.push(c.strip_prefix(' ').unwrap_or(c).trim_end().to_string());
            continue;
        }
        let content_start = line_start + ws_len;
        if ws_len == 0 && (rest.starts_with("---") || rest.starts_with("...")) && rest[3..].trim().is_empty() {
            diags.push(
                Diagnostic::error(
                    "P0004",
                    Span::new(file, content_start, content_start + 3),
                    "document markers are not allowed",
                )
                .label("document marker")
                .expected("a single policy document")
                .found(format!("`{}`", &rest[..3]))
                .help("a policy file holds exactly one document; remove the marker"),
            );
            continue;
        }
        if ws_len == 0 && rest.starts_with('%') {
            diags.push(
                Diagnostic::error(
                    "P0004",
                    Span::new(file, content_start, content_start + rest.trim_end().len()),
                    "YAML directives are not allowed",
                )
                .label("directive")
                .found(format!("`{}`", rest.trim_end()))
                .help("remove the directive; policy files are not general YAML"),
            );
            continue;
        }
        let (mut content, mut comment) = split_comment(rest);
        // A `[...]` or `{...}` left open continues on the following lines;
        // the content then spans them (newlines are blanks in flow context).
        if comment.is_none() && flow_depth(content) > 0 {
            // Continuation lines must be indented deeper than the line that
            // opened the list, so an unclosed `[` cannot swallow the file.
            while idx < raws.len() {
                let (next_start, next_raw) = raws[idx];
                let body = next_raw.trim_end_matches(['\n', '\r']);
                let (c, com) = split_comment(body);
                if c.trim().is_empty() && com.is_none() {
                    idx += 1;
                    continue;
                }
                let next_indent = body.len() - body.trim_start_matches([' ', '\t']).len();
                if next_indent <= indent {
                    break;
                }
                let candidate = &text[content_start..next_start + c.len()];
                let depth = flow_depth(candidate);
                if body.contains('\t') || (com.is_some() && (depth > 0 || c.trim().is_empty())) {
                    let what = if body.contains('\t') {
                        "tab inside a multi-line `[...]` or `{...}`"
                    } else {
                        "comments inside a multi-line `[...]` or `{...}` are allowed only after its closing bracket"
                    };
                    diags.push(
                        Diagnostic::error("P0016", Span::new(file, next_start, next_start + body.len()), what)
                            .help("move the comment above the key, or write a block list with one `- item` per line"),
                    );
                    idx += 1;
                    continue;
                }
                idx += 1;
                content = candidate;
                if depth == 0 {
                    comment = com;
                    break;
                }
            }
        }
        let mut piece = Line {
            indent,
            start: content_start,
            content,
            dash: false,
            after_dash: false,
            comment: None,
            leading: std::mem::take(&mut leading),
            blank_before: std::mem::replace(&mut blank, false),
        };
        // Split `- ` markers off the front.
        loop {
            let c = piece.content;
            let is_dash = c == "-" || c.starts_with("- ");
            if !is_dash {
                break;
            }
            let after = &c[1..];
            let skip = 1 + (after.len() - after.trim_start_matches(' ').len());
            lines.push(Line { content: "", dash: true, ..piece.clone() });
            piece = Line {
                indent: piece.indent + skip,
                start: piece.start + skip,
                content: &c[skip..],
                dash: false,
                after_dash: true,
                comment: None,
                leading: Vec::new(),
                blank_before: false,
            };
        }
        let comment = comment.map(|c| c.strip_prefix(' ').unwrap_or(c).trim_end().to_string());
        if piece.content.is_empty() {
            // The line was only dashes: the comment belongs to the last dash.
            if let Some(last) = lines.last_mut() {
                last.comment = comment;
            }
        } else {
            piece.comment = comment;
            lines.push(piece);
        }
    }
    Lexed { lines, trailing_comments: leading }
}

/// How many `[`/`{` are open at the end of `s` (outside quotes).
fn flow_depth(s: &str) -> usize {
    let mut depth: usize = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in s.chars() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' if depth > 0 => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    depth
}

/// Splits `content # comment`, ignoring `#` inside quotes and `#` not
/// preceded by a blank (`a#b` is a plain scalar, as in YAML).
fn split_comment(s: &str) -> (&str, Option<&str>) {
    let bytes = s.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(b'"') if b == b'\\' => i += 1,
            Some(q) if b == q => {
                // '' inside single quotes is an escaped quote.
                if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                    i += 1;
                } else {
                    quote = None;
                }
            }
            Some(_) => {}
            None => {
                let at_token_start = i == 0 || matches!(bytes[i - 1], b' ' | b'[' | b'{' | b',' | b':');
                if (b == b'"' || b == b'\'') && at_token_start {
                    quote = Some(b);
                } else if b == b'#' && (i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
                    return (s[..i].trim_end(), Some(&s[i + 1..]));
                }
            }
        }
        i += 1;
    }
    (s.trim_end(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_split_outside_quotes_only() {
        assert_eq!(split_comment("a: b # c"), ("a: b", Some(" c")));
        assert_eq!(split_comment("a: \"b # c\""), ("a: \"b # c\"", None));
        assert_eq!(split_comment("a: b#c"), ("a: b#c", None));
        assert_eq!(split_comment("a: 'it''s # x' # y"), ("a: 'it''s # x'", Some(" y")));
    }

    #[test]
    fn dashes_split_into_pieces() {
        let mut d = Diagnostics::default();
        let l = lex(FileId(0), "paths:\n  - path: /tmp\n    access: ro\n", &mut d);
        let v: Vec<_> = l.lines.iter().map(|l| (l.indent, l.dash, l.content)).collect();
        assert_eq!(v, vec![(0, false, "paths:"), (2, true, ""), (4, false, "path: /tmp"), (4, false, "access: ro")]);
        assert!(d.items.is_empty());
    }
}
