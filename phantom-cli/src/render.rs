//! Renders compiler diagnostics with miette: `file:line:col`, the source line
//! with a caret under the span, what was expected and found, and a hint.

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use phantom_dsl::diag::{Diagnostic, Diagnostics, Severity};
use phantom_dsl::source::SourceMap;
use std::fmt;

struct Report<'a> {
    d: &'a Diagnostic,
    src: NamedSource<String>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}
impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}
impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        let sev = match self.d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        Some(Box::new(format!("{sev}[{}]", self.d.code)))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.help.as_ref().map(|h| Box::new(h.clone()) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
}

fn span(s: phantom_dsl::source::Span) -> SourceSpan {
    SourceSpan::new((s.start as usize).into(), s.len())
}

/// Renders one diagnostic as plain text (no colour), ending in a newline.
pub fn render_one(sources: &SourceMap, d: &Diagnostic) -> String {
    let file = sources.get(d.span.file);
    let loc = sources.location(d.span);
    // Without a label, "expected ..." goes under the caret instead of into the help.
    let expected_in_label = d.label.is_none() && d.expected.is_some();
    let label = d.label.clone().or_else(|| d.expected.as_ref().map(|e| format!("expected {e}")));
    let mut labels = vec![LabeledSpan::new_primary_with_span(label, span(d.span))];
    let mut notes = Vec::new();
    for (s, what) in &d.related {
        if s.file == d.span.file {
            labels.push(LabeledSpan::new_with_span(Some(what.clone()), span(*s)));
        } else {
            notes.push(format!("{what}: {}", sources.location(*s)));
        }
    }
    let mut help = Vec::new();
    let expected = if expected_in_label { None } else { d.expected.as_ref() };
    match (expected, &d.found) {
        (Some(e), Some(f)) => help.push(format!("expected {e}, found {f}")),
        (Some(e), None) => help.push(format!("expected {e}")),
        (None, Some(f)) => help.push(format!("found {f}")),
        (None, None) => {}
    }
    help.extend(notes);
    if let Some(h) = &d.help {
        help.push(h.clone());
    }
    let report = Report {
        d,
        src: NamedSource::new(file.name.clone(), file.text.clone()),
        labels,
        help: if help.is_empty() { None } else { Some(help.join("\n")) },
    };
    let handler =
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100).with_links(false);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = handler.render_report(&mut out, &report);
    // miette prints `[file:line:col]` above the excerpt.
    let _ = loc;
    out
}

/// Renders all diagnostics and a summary line.
pub fn render_all(sources: &SourceMap, diags: &Diagnostics) -> String {
    let mut out = String::new();
    for d in &diags.items {
        out.push_str(&render_one(sources, d));
        out.push('\n');
    }
    out
}

/// `--format json`: one object per diagnostic.
pub fn to_json(sources: &SourceMap, diags: &Diagnostics) -> serde_json::Value {
    serde_json::Value::Array(diags.items.iter().map(|d| d.to_json(sources)).collect())
}
