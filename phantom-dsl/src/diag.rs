//! Structured diagnostics. The compiler only builds these values; rendering
//! (miette, JSON) happens at the CLI edge.

use crate::source::{Location, SourceMap, Span};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// One finding about a policy: what was expected, what was found, and a hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable code, e.g. `P0102`; documented in docs/diagnostics.md.
    pub code: &'static str,
    pub message: String,
    #[serde(skip)]
    pub span: Span,
    /// Text printed under the caret.
    pub label: Option<String>,
    pub expected: Option<String>,
    pub found: Option<String>,
    pub help: Option<String>,
    /// Secondary spans (e.g. "first defined here").
    #[serde(skip)]
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            label: None,
            expected: None,
            found: None,
            help: None,
            related: Vec::new(),
        }
    }
    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Self::error(code, span, message) }
    }
    pub fn label(mut self, l: impl Into<String>) -> Self {
        self.label = Some(l.into());
        self
    }
    pub fn expected(mut self, e: impl Into<String>) -> Self {
        self.expected = Some(e.into());
        self
    }
    pub fn found(mut self, f: impl Into<String>) -> Self {
        self.found = Some(f.into());
        self
    }
    pub fn help(mut self, h: impl Into<String>) -> Self {
        self.help = Some(h.into());
        self
    }
    pub fn related(mut self, span: Span, what: impl Into<String>) -> Self {
        self.related.push((span, what.into()));
        self
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// A serialisable view with resolved locations, for `--format json`.
    pub fn to_json(&self, sources: &SourceMap) -> serde_json::Value {
        let loc = sources.location(self.span);
        let end = sources.location(Span { start: self.span.end, ..self.span });
        serde_json::json!({
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "file": loc.file,
            "line": loc.line,
            "col": loc.col,
            "end_line": end.line,
            "end_col": end.col,
            "label": self.label,
            "expected": self.expected,
            "found": self.found,
            "help": self.help,
            "related": self.related.iter().map(|(s, what)| {
                let l: Location = sources.location(*s);
                serde_json::json!({"file": l.file, "line": l.line, "col": l.col, "message": what})
            }).collect::<Vec<_>>(),
        })
    }
}

/// Collects diagnostics; parsing and checking never stop at the first error.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }
    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }
    pub fn warning_count(&self) -> usize {
        self.items.len() - self.error_count()
    }
    /// Source order, errors and warnings interleaved as they appear.
    pub fn sort(&mut self) {
        self.items.sort_by_key(|d| (d.span.file, d.span.start, d.severity));
        self.items.dedup();
    }
}
