//! Canonical printer: two-space indentation, block maps, flow lists for short
//! lists of scalars, plain scalars where they re-parse unchanged, comments
//! and paragraph breaks kept. `print(parse(print(x))) == print(x)`.

use super::tree::{Document, Entry, Item, Node, NodeKind, Scalar, ScalarStyle, Trivia};

const FLOW_WIDTH: usize = 80;

pub fn print_document(doc: &Document) -> String {
    let mut out = String::new();
    if let NodeKind::Map(entries) = &doc.root.kind {
        print_entries(&mut out, entries, 0, true);
    }
    if !doc.trailing_comments.is_empty() {
        out.push('\n');
        for c in &doc.trailing_comments {
            push_comment(&mut out, 0, c);
        }
    }
    out
}

fn push_comment(out: &mut String, indent: usize, c: &str) {
    out.push_str(&" ".repeat(indent));
    if c.is_empty() {
        out.push_str("#\n");
    } else {
        out.push_str("# ");
        out.push_str(c);
        out.push('\n');
    }
}

fn leading(out: &mut String, t: &Trivia, indent: usize, first: bool) {
    if t.blank_before && !first {
        out.push('\n');
    }
    for c in &t.leading {
        push_comment(out, indent, c);
    }
}

fn trailing(out: &mut String, t: &Trivia) {
    if let Some(c) = &t.trailing {
        out.push_str(" # ");
        out.push_str(c);
    }
    out.push('\n');
}

fn print_entries(out: &mut String, entries: &[Entry], indent: usize, first_in_doc: bool) {
    for (n, e) in entries.iter().enumerate() {
        // The first entry after `- ` continues the dash line.
        let pad = if n == 0 && indent > 0 && out.ends_with("- ") { 0 } else { indent };
        if pad == indent {
            leading(out, &e.trivia, indent, n == 0 && first_in_doc);
        }
        out.push_str(&" ".repeat(pad));
        out.push_str(&e.key);
        out.push(':');
        print_value(out, &e.value, indent, &e.trivia);
    }
}

/// Prints what follows `key:` or `- ` (the caller wrote that prefix).
fn print_value(out: &mut String, v: &Node, indent: usize, t: &Trivia) {
    match &v.kind {
        NodeKind::Empty | NodeKind::Invalid => trailing(out, t),
        NodeKind::Scalar(s) => {
            out.push(' ');
            out.push_str(&scalar(s));
            trailing(out, t);
        }
        NodeKind::Seq { items, .. } if items.is_empty() => {
            out.push_str(" []");
            trailing(out, t);
        }
        NodeKind::Map(entries) if entries.is_empty() => {
            out.push_str(" {}");
            trailing(out, t);
        }
        NodeKind::Seq { items, .. } => {
            if let Some(parts) = flow_parts(items) {
                out.push(' ');
                out.push_str(&wrap_flow(&parts, out_column(out), indent + 2));
                trailing(out, t);
                return;
            }
            trailing(out, t);
            print_items(out, items, indent + 2);
        }
        NodeKind::Map(entries) => {
            trailing(out, t);
            print_entries(out, entries, indent + 2, false);
        }
    }
}

fn print_items(out: &mut String, items: &[Item], indent: usize) {
    for (n, it) in items.iter().enumerate() {
        leading(out, &it.trivia, indent, n == 0);
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match &it.value.kind {
            NodeKind::Map(entries) if !entries.is_empty() => {
                out.push(' ');
                // The dash's own comment goes on the first entry's line.
                let mut entries = entries.clone();
                if entries[0].trivia.trailing.is_none() {
                    entries[0].trivia.trailing = it.trivia.trailing.clone();
                }
                print_entries(out, &entries, indent + 2, false);
            }
            _ => print_value(out, &it.value, indent, &it.trivia),
        }
    }
}

/// The items of a list that can be written `[a, b, c]`: scalars only,
/// without comments.
fn flow_parts(items: &[Item]) -> Option<Vec<String>> {
    let mut parts = Vec::with_capacity(items.len());
    for (n, it) in items.iter().enumerate() {
        let s = it.value.as_scalar()?;
        // A blank line before the first item is never printed (the item
        // follows its key), so it must not keep the list in block form:
        // the next pass would not see it and print `[...]`.
        let mut t = it.trivia.clone();
        if n == 0 {
            t.blank_before = false;
        }
        if t != Trivia::default() {
            return None;
        }
        parts.push(flow_scalar(s));
    }
    Some(parts)
}

fn out_column(out: &str) -> usize {
    out.len() - out.rfind('\n').map_or(0, |i| i + 1)
}

/// `[a, b, c]`, continued on lines indented by `cont` when it would pass
/// FLOW_WIDTH.
fn wrap_flow(parts: &[String], mut col: usize, cont: usize) -> String {
    let mut s = String::from("[");
    col += 1;
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let need = p.len() + 1; // the item and its `,` or `]`
        if i > 0 {
            if col + 1 + need > FLOW_WIDTH {
                s.push('\n');
                s.push_str(&" ".repeat(cont));
                col = cont;
            } else {
                s.push(' ');
                col += 1;
            }
        }
        s.push_str(p);
        col += p.len();
        s.push(if last { ']' } else { ',' });
        col += 1;
    }
    if parts.is_empty() {
        s.push(']');
    }
    s
}

fn flow_scalar(s: &Scalar) -> String {
    if s.text.contains([',', '[', ']', '{', '}']) {
        quote(&s.text)
    } else {
        scalar(s)
    }
}

/// Plain if the text would parse back as the same plain scalar, else quoted.
fn scalar(s: &Scalar) -> String {
    let t = &s.text;
    let plain_ok = !t.is_empty()
        && t.trim() == t
        && !t.contains(": ")
        && !t.contains(" #")
        && !t.ends_with(':')
        && !t.contains(['\n', '\r', '\t', '"'])
        && !t.starts_with(['[', '{', '"', '\'', '&', '*', '!', '|', '>', '@', '`', '%', '#', ','])
        && !(t == "-" || t.starts_with("- "));
    // Quoting is meaningful (a quoted `sandbox` is a string, not a keyword),
    // so fmt keeps every quoted scalar quoted.
    if plain_ok && s.style == ScalarStyle::Plain {
        t.clone()
    } else {
        quote(t)
    }
}

fn quote(t: &str) -> String {
    let mut q = String::with_capacity(t.len() + 2);
    q.push('"');
    for c in t.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            '\0' => q.push_str("\\0"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}
