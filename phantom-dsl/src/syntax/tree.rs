//! The syntax tree of the YAML-shaped policy language: maps, sequences and
//! scalars, each with its span and the comments around it (kept for `fmt`).
//! Scalars are untyped strings here; the schema decoder gives them types.

use crate::source::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    Plain,
    SingleQuoted,
    DoubleQuoted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    /// The value with quotes removed and escapes resolved.
    pub text: String,
    pub style: ScalarStyle,
    /// Span of the value text (inside the quotes for quoted scalars), so
    /// that value errors can point at a byte inside it.
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Scalar(Scalar),
    Map(Vec<Entry>),
    /// `flow` records `[a, b]` versus block `- a` form.
    Seq {
        items: Vec<Item>,
        flow: bool,
    },
    /// A key with no value (`key:` and nothing indented under it).
    Empty,
    /// A value whose syntax error was already reported; the decoder skips
    /// it silently so that one mistake gives one diagnostic.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    pub span: Span,
}

/// Comments and blank lines attached to a map entry or sequence item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trivia {
    /// Full-line comments directly above, without the `#`.
    pub leading: Vec<String>,
    /// A blank line separated this element from the previous one.
    pub blank_before: bool,
    /// End-of-line comment on the element's first line.
    pub trailing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
    pub trivia: Trivia,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub value: Node,
    pub trivia: Trivia,
}

/// A parsed file: the root map plus comments that follow the last entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub root: Node,
    pub trailing_comments: Vec<String>,
}

impl Node {
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            NodeKind::Scalar(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.kind {
            NodeKind::Map(e) => Some(e),
            _ => None,
        }
    }
    pub fn as_seq(&self) -> Option<&[Item]> {
        match &self.kind {
            NodeKind::Seq { items, .. } => Some(items),
            _ => None,
        }
    }
    /// What this node is, for "found ..." in diagnostics.
    pub fn describe(&self) -> String {
        match &self.kind {
            NodeKind::Scalar(s) if s.style == ScalarStyle::Plain => format!("`{}`", s.text),
            NodeKind::Scalar(s) => format!("the string {:?}", s.text),
            NodeKind::Map(_) => "a map".into(),
            NodeKind::Seq { .. } => "a list".into(),
            NodeKind::Empty => "nothing".into(),
            NodeKind::Invalid => "an invalid value".into(),
        }
    }
    /// Looks up a key in a map node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|e| e.key == key).map(|e| &e.value)
    }
}
