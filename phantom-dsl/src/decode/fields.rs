//! Typed accessors over syntax nodes, each reporting its own diagnostic.

use crate::diag::{Diagnostic, Diagnostics};
use crate::ir::Origin;
use crate::source::{SourceMap, Span};
use crate::syntax::{Entry, Node, NodeKind, Scalar, ScalarStyle};
use crate::values::ValueError;
use std::collections::BTreeMap;

pub(crate) struct Decoder<'a> {
    pub sources: &'a SourceMap,
    pub diags: &'a mut Diagnostics,
}

/// The entries of one map, checked against the keys its schema allows.
pub(crate) struct Fields<'n> {
    pub node: &'n Node,
    pub entries: BTreeMap<&'n str, &'n Entry>,
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.get(key).map(|e| &e.value)
    }
    pub fn key_span(&self, key: &str) -> Option<Span> {
        self.entries.get(key).map(|e| e.key_span)
    }
}

pub(crate) fn closest<'k>(word: &str, candidates: &[&'k str]) -> Option<&'k str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn one_of(options: &[&str]) -> String {
    let quoted: Vec<String> = options.iter().map(|o| format!("`{o}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

impl<'a> Decoder<'a> {
    pub fn origin(&self, span: Span) -> Origin {
        let loc = self.sources.get(span.file).line_col(span.start as usize);
        Origin { file: span.file, line: loc.0, col: loc.1, span }
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str, example: &str) {
        if node.kind == NodeKind::Invalid {
            return;
        }
        let d = Diagnostic::error("P0102", node.span, format!("`{what}` must be {expected}"))
            .label(format!("expected {expected}"))
            .expected(expected.to_string())
            .found(node.describe());
        let d = if example.is_empty() { d } else { d.help(format!("for example: {example}")) };
        self.push(d);
    }

    /// A map with only the `allowed` keys; `what` names it in messages.
    pub fn map<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str], example: &str) -> Option<Fields<'n>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.wrong_type(node, what, "a map of keys", example);
            return None;
        };
        let mut out = BTreeMap::new();
        for e in entries {
            if allowed.contains(&e.key.as_str()) {
                out.entry(e.key.as_str()).or_insert(e);
                continue;
            }
            let mut d = Diagnostic::error("P0101", e.key_span, format!("unknown key `{}` in `{what}`", e.key))
                .label("unknown key")
                .expected(one_of(allowed))
                .found(format!("`{}`", e.key));
            if let Some(s) = closest(&e.key, allowed) {
                d = d.help(format!("did you mean `{s}`?"));
            }
            self.push(d);
        }
        Some(Fields { node, entries: out })
    }

    /// Reports a missing required key at the map's first line.
    pub fn missing(&mut self, fields: &Fields, key: &str, what: &str, example: &str) {
        let span = Span { end: fields.node.span.start, ..fields.node.span };
        self.push(
            Diagnostic::error("P0103", span, format!("missing key `{key}` in `{what}`"))
                .expected(format!("`{key}:`"))
                .help(format!("add `{example}`")),
        );
    }

    /// A plain or quoted scalar.
    pub fn scalar<'n>(&mut self, node: &'n Node, what: &str, expected: &str, example: &str) -> Option<&'n Scalar> {
        match &node.kind {
            NodeKind::Scalar(s) => Some(s),
            _ => {
                self.wrong_type(node, what, expected, example);
                None
            }
        }
    }

    /// A scalar that must be written plain (numbers, booleans, keywords):
    /// quoting it would make it a string.
    fn plain<'n>(&mut self, node: &'n Node, what: &str, expected: &str, example: &str) -> Option<&'n Scalar> {
        let s = self.scalar(node, what, expected, example)?;
        if s.style != ScalarStyle::Plain {
            self.push(
                Diagnostic::error("P0102", node.span, format!("`{what}` must be {expected}, not a quoted string"))
                    .expected(expected.to_string())
                    .found(node.describe())
                    .help("remove the quotes: values are typed by the schema"),
            );
            return None;
        }
        Some(s)
    }

    pub fn string(&mut self, node: &Node, what: &str, example: &str) -> Option<String> {
        self.scalar(node, what, "a string", example).map(|s| s.text.clone())
    }

    pub fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        let s = self.plain(node, what, "`true` or `false`", "")?;
        match s.text.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            other => {
                let mut d = Diagnostic::error("P0104", s.span, format!("`{what}` must be `true` or `false`"))
                    .expected("`true` or `false`")
                    .found(format!("`{other}`"));
                if matches!(other, "yes" | "on" | "True" | "TRUE" | "y") {
                    d = d.help("write `true`: the policy language has no YAML 1.1 booleans");
                } else if matches!(other, "no" | "off" | "False" | "FALSE" | "n") {
                    d = d.help("write `false`: the policy language has no YAML 1.1 booleans");
                }
                self.push(d);
                None
            }
        }
    }

    /// One of a fixed set of keywords.
    pub fn keyword<T: Copy>(&mut self, node: &Node, what: &str, options: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = options.iter().map(|o| o.0).collect();
        let expected = one_of(&names);
        let s = self.plain(node, what, &format!("one of {expected}"), "")?;
        if let Some((_, v)) = options.iter().find(|o| o.0 == s.text) {
            return Some(*v);
        }
        let mut d = Diagnostic::error("P0104", s.span, format!("invalid value for `{what}`"))
            .label("not a known value")
            .expected(expected)
            .found(format!("`{}`", s.text));
        if let Some(c) = closest(&s.text, &names) {
            d = d.help(format!("did you mean `{c}`?"));
        }
        self.push(d);
        None
    }

    /// A scalar parsed by a value grammar; errors point into the scalar.
    pub fn value<T>(&mut self, node: &Node, what: &str, parse: impl Fn(&str) -> Result<T, ValueError>) -> Option<T> {
        let s = self.plain(node, what, "a value", "")?;
        self.parse_scalar(s, what, parse)
    }

    pub fn parse_scalar<T>(
        &mut self,
        s: &Scalar,
        what: &str,
        parse: impl Fn(&str) -> Result<T, ValueError>,
    ) -> Option<T> {
        match parse(&s.text) {
            Ok(v) => Some(v),
            Err(e) => {
                // Byte offsets inside the scalar are exact for plain scalars
                // and for quoted ones without escapes.
                let span = if s.text.len() == s.span.len() && e.at.end <= s.text.len() && e.at.start < e.at.end {
                    s.span.sub(e.at.start, e.at.end)
                } else {
                    s.span
                };
                let mut d = Diagnostic::error("P0105", span, format!("invalid `{what}`: {}", e.message))
                    .expected(e.expected)
                    .found(format!("`{}`", s.text));
                if let Some(h) = e.help {
                    d = d.help(h);
                }
                self.push(d);
                None
            }
        }
    }

    /// A list; `allow_single` also takes one bare scalar as a one-item list.
    pub fn list<'n>(&mut self, node: &'n Node, what: &str, example: &str) -> Vec<&'n Node> {
        match &node.kind {
            NodeKind::Seq { items, .. } => items.iter().map(|i| &i.value).collect(),
            _ => {
                self.wrong_type(node, what, "a list", example);
                Vec::new()
            }
        }
    }

    /// A list, or a single scalar standing for a one-item list (`ports: 443`).
    pub fn one_or_many<'n>(&mut self, node: &'n Node, what: &str, example: &str) -> Vec<&'n Node> {
        match &node.kind {
            NodeKind::Scalar(_) => vec![node],
            NodeKind::Invalid => Vec::new(),
            _ => self.list(node, what, example),
        }
    }
}
