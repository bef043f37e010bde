//! Second pass: logical lines to the tree, by indentation. Errors are
//! recorded and the offending line (with everything indented under it) is
//! skipped, so one run reports every problem of a file.

use super::inline::{parse_inline, parse_key};
use super::lines::{lex, Line};
use super::tree::{Document, Entry, Item, Node, NodeKind, Trivia};
use crate::diag::{Diagnostic, Diagnostics};
use crate::source::{FileId, Span};

/// Parses a policy file into its syntax tree. Always returns a tree (possibly
/// partial); errors go to `diags`.
pub fn parse_document(file: FileId, text: &str, diags: &mut Diagnostics) -> Document {
    if text.starts_with('\u{feff}') {
        diags.push(
            Diagnostic::error("P0005", Span::new(file, 0, 3), "byte-order mark at start of file")
                .help("save the file as UTF-8 without a BOM"),
        );
    }
    let lexed = lex(file, text, diags);
    let mut p = BlockParser { file, lines: lexed.lines, pos: 0, diags };
    let root = if p.lines.is_empty() {
        p.diags.push(
            Diagnostic::error("P0006", Span::new(file, 0, 0), "empty policy file")
                .expected("a map with at least `profile:`")
                .help("start with `profile: my-profile`"),
        );
        Node { kind: NodeKind::Map(Vec::new()), span: Span::new(file, 0, 0) }
    } else {
        let first = p.lines[0].indent;
        if first != 0 {
            let l = &p.lines[0];
            p.diags.push(
                Diagnostic::error(
                    "P0002",
                    Span::new(file, l.start.saturating_sub(l.indent), l.start),
                    "top-level keys must start at column 1",
                )
                .found(format!("indentation of {} spaces", l.indent))
                .help("remove the indentation of the first line"),
            );
        }
        let root = p.parse_block(first, false);
        while p.pos < p.lines.len() {
            let l = p.lines[p.pos].clone();
            p.unexpected_indent(&l, 0);
        }
        if !matches!(root.kind, NodeKind::Map(_)) {
            p.diags.push(
                Diagnostic::error("P0007", root.span, "the policy must be a map of keys")
                    .expected("`key: value` lines")
                    .found(root.describe()),
            );
        }
        root
    };
    Document { root, trailing_comments: lexed.trailing_comments }
}

struct BlockParser<'s, 'd> {
    file: FileId,
    lines: Vec<Line<'s>>,
    pos: usize,
    diags: &'d mut Diagnostics,
}

impl<'s> BlockParser<'s, '_> {
    fn span_of(&self, l: &Line) -> Span {
        Span::new(self.file, l.start, l.start + l.content.len().max(1))
    }

    fn trivia(l: &Line) -> Trivia {
        Trivia { leading: l.leading.clone(), blank_before: l.blank_before, trailing: l.comment.clone() }
    }

    /// Skips the line at `pos` and every following line indented deeper than `indent`.
    fn skip_subtree(&mut self, indent: usize) {
        self.pos += 1;
        while self.pos < self.lines.len() && self.lines[self.pos].indent > indent {
            self.pos += 1;
        }
    }

    fn unexpected_indent(&mut self, l: &Line, expected: usize) {
        self.diags.push(
            Diagnostic::error("P0002", self.span_of(l), "unexpected indentation")
                .label("this line is indented more than its block")
                .expected(format!("a line at column {}", expected + 1))
                .found(format!("column {}", l.indent + 1))
                .help("align this line with the keys of its block, or give the key above an empty value (`key:`) to nest under it"),
        );
        self.skip_subtree(l.indent.saturating_sub(1).max(expected));
    }

    /// A block starting at `pos`, whose lines are at column `indent`.
    /// `item` is set for the content of a list item, which may be a scalar.
    fn parse_block(&mut self, indent: usize, item: bool) -> Node {
        let l = self.lines[self.pos].clone();
        if l.dash {
            return self.parse_seq(indent);
        }
        if item && parse_key(l.content).is_none() {
            self.pos += 1;
            let node = parse_inline(self.file, l.content, l.start, self.diags);
            self.forbid_children(indent, "a list item that already has a value");
            return node;
        }
        self.parse_map(indent)
    }

    fn forbid_children(&mut self, indent: usize, what: &str) {
        if self.pos < self.lines.len() && self.lines[self.pos].indent > indent {
            let l = self.lines[self.pos].clone();
            self.diags.push(
                Diagnostic::error("P0002", self.span_of(&l), "unexpected indentation")
                    .label(format!("nested under {what}"))
                    .help("a key has either a value on its own line or an indented block under it, not both"),
            );
            self.skip_subtree(indent);
            while self.pos < self.lines.len() && self.lines[self.pos].indent > indent {
                self.pos += 1;
            }
        }
    }

    fn parse_map(&mut self, indent: usize) -> Node {
        let mut entries: Vec<Entry> = Vec::new();
        let first = self.lines[self.pos].start;
        let mut end = first;
        while self.pos < self.lines.len() {
            let l = self.lines[self.pos].clone();
            if l.indent < indent || (l.after_dash && !entries.is_empty()) {
                break;
            }
            if l.indent > indent {
                self.unexpected_indent(&l, indent);
                continue;
            }
            if l.dash {
                self.diags.push(
                    Diagnostic::error("P0008", self.span_of(&l), "a list item where a key was expected")
                        .expected("`key: value`")
                        .found("`- `")
                        .help("list items belong under a key: write `key:` on the line above, then indent the items"),
                );
                self.skip_subtree(indent);
                continue;
            }
            let Some((key, rest_at)) = parse_key(l.content) else {
                self.diags.push(
                    Diagnostic::error("P0009", self.span_of(&l), "expected `key: value`")
                        .expected("a key followed by `:`")
                        .found(format!("`{}`", l.content))
                        .help("keys are words such as `profile` or `io_mode`, followed by `: ` and a value"),
                );
                self.skip_subtree(indent);
                continue;
            };
            let key_span = Span::new(self.file, l.start, l.start + key.len());
            self.pos += 1;
            let rest = l.content[rest_at..].trim_start();
            let value = if !rest.is_empty() {
                let at = l.start + (l.content.len() - rest.len());
                let v = parse_inline(self.file, rest, at, self.diags);
                self.forbid_children(indent, &format!("`{key}`, which already has a value"));
                v
            } else if self.pos < self.lines.len() && self.lines[self.pos].indent > indent {
                let child = self.lines[self.pos].indent;
                self.parse_block(child, false)
            } else if self.pos < self.lines.len() && self.lines[self.pos].indent == indent && self.lines[self.pos].dash
            {
                // `key:` followed by `- item` at the same column, as YAML allows.
                self.parse_seq(indent)
            } else {
                let at = l.start + l.content.len();
                Node { kind: NodeKind::Empty, span: Span::new(self.file, at, at) }
            };
            if let Some(prev) = entries.iter().find(|e| e.key == key) {
                self.diags.push(
                    Diagnostic::error("P0010", key_span, format!("duplicate key `{key}`"))
                        .label("defined again here")
                        .related(prev.key_span, "first defined here")
                        .help("each key may appear once per map; merge the two entries"),
                );
            }
            end = end.max(value.span.end as usize).max(key_span.end as usize);
            entries.push(Entry { key: key.to_string(), key_span, value, trivia: Self::trivia(&l) });
        }
        Node { kind: NodeKind::Map(entries), span: Span::new(self.file, first, end) }
    }

    fn parse_seq(&mut self, indent: usize) -> Node {
        let mut items = Vec::new();
        let first = self.lines[self.pos].start;
        let mut end = first + 1;
        while self.pos < self.lines.len() {
            let l = self.lines[self.pos].clone();
            if l.indent != indent || !l.dash {
                if l.indent > indent {
                    self.unexpected_indent(&l, indent);
                    continue;
                }
                break;
            }
            self.pos += 1;
            let mut trivia = Self::trivia(&l);
            let value = if self.pos < self.lines.len() && self.lines[self.pos].indent > indent {
                let next = &self.lines[self.pos];
                let scalar_item = next.after_dash && !next.dash && parse_key(next.content).is_none();
                if scalar_item && trivia.trailing.is_none() {
                    trivia.trailing = next.comment.clone();
                }
                let child = next.indent;
                self.parse_block(child, true)
            } else {
                Node { kind: NodeKind::Empty, span: Span::new(self.file, l.start, l.start + 1) }
            };
            end = end.max(value.span.end as usize);
            items.push(Item { value, trivia });
        }
        Node { kind: NodeKind::Seq { items, flow: false }, span: Span::new(self.file, first, end) }
    }
}
