//! `extends: base.yaml`: the child's tree is merged over its base before
//! decoding. Maps merge key by key, recursively; any other value in the child
//! (scalar or list) replaces the base's value whole, `profile` included (a
//! child that omits it keeps the base's). Bases resolve relative to the file that names them and may
//! themselves extend (depth at most 8, no cycles).

use crate::diag::{Diagnostic, Diagnostics};
use crate::source::{FileId, SourceFile, SourceMap, Span};
use crate::syntax::{parse_document, Document, Entry, Node, NodeKind};
use std::path::{Path, PathBuf};

pub const MAX_DEPTH: usize = 8;

/// Reads a base file; tests substitute an in-memory map.
pub trait FileLoader {
    fn load(&self, path: &Path) -> std::io::Result<String>;
}

/// Reads from the real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsLoader;

impl FileLoader for FsLoader {
    fn load(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Parses `file` and everything it extends; returns the merged tree.
pub(crate) fn load_merged(
    loader: &dyn FileLoader,
    sources: &mut SourceMap,
    diags: &mut Diagnostics,
    file: FileId,
    chain: &mut Vec<PathBuf>,
) -> Document {
    let text = sources.get(file).text.clone();
    let mut doc = parse_document(file, &text, diags);
    let Some(ext) = doc.root.get("extends").cloned() else { return doc };
    let Some(s) = ext.as_scalar() else {
        diags.push(
            Diagnostic::error("P0102", ext.span, "`extends` must be a path")
                .found(ext.describe())
                .help("extends: base.yaml"),
        );
        return doc;
    };
    let here = PathBuf::from(&sources.get(file).name);
    let base_path = here.parent().unwrap_or(Path::new("")).join(&s.text);
    if chain.len() > MAX_DEPTH {
        diags.push(
            Diagnostic::error("P0109", s.span, format!("`extends` nests deeper than {MAX_DEPTH} files"))
                .help("flatten the chain of base policies"),
        );
        return doc;
    }
    let canon = base_path.canonicalize().unwrap_or_else(|_| base_path.clone());
    if chain.contains(&canon) {
        diags.push(
            Diagnostic::error(
                "P0109",
                s.span,
                format!("`extends` cycle: `{}` is already being extended", base_path.display()),
            )
            .label("this base extends the file that names it")
            .help("a policy cannot extend itself, directly or through its bases"),
        );
        return doc;
    }
    let text = match loader.load(&base_path) {
        Ok(t) => t,
        Err(e) => {
            diags.push(
                Diagnostic::error("P0109", s.span, format!("cannot read base policy `{}`: {e}", base_path.display()))
                    .help("paths in `extends` are relative to the file that contains them"),
            );
            return doc;
        }
    };
    let base_id = sources.add(SourceFile::new(base_path.to_string_lossy(), text));
    chain.push(canon);
    let base = load_merged(loader, sources, diags, base_id, chain);
    chain.pop();
    doc.root = merge(base.root, doc.root);
    doc
}

/// `child` over `base`.
fn merge(base: Node, child: Node) -> Node {
    let (NodeKind::Map(base_entries), NodeKind::Map(child_entries)) = (base.kind, child.kind.clone()) else {
        return child;
    };
    let mut out: Vec<Entry> = Vec::new();
    for b in base_entries {
        if b.key == "extends" {
            continue;
        }
        match child_entries.iter().find(|c| c.key == b.key) {
            Some(c) => {
                let mut e = c.clone();
                e.value = merge(b.value, c.value.clone());
                out.push(e);
            }
            None => out.push(b),
        }
    }
    for c in child_entries {
        if c.key != "extends" && !out.iter().any(|o| o.key == c.key) {
            out.push(c);
        }
    }
    Node { kind: NodeKind::Map(out), span: Span { ..child.span } }
}
