//! Phantom's policy language front end: a strict, YAML-shaped language parsed
//! with nom into a spanned tree, decoded against the schema, checked, and
//! lowered to the typed [`ir::Policy`], the only input of the backends.
//!
//! The front end is pure: no kernel access, and the same input always gives
//! the same IR and diagnostics (invariant 1 in ARCHITECTURE.md).

pub mod check;
mod decode;
pub mod diag;
pub mod extends;
pub mod import;
pub mod ir;
pub mod source;
pub mod syntax;
pub mod syscalls;
pub mod values;

use diag::Diagnostics;
use extends::{FileLoader, FsLoader};
use ir::{Policy, SourceInfo};
use source::{SourceFile, SourceMap};
use std::path::Path;

/// The result of compiling one policy: every source file involved, every
/// diagnostic, and the IR when there was no error.
#[derive(Debug, Clone)]
pub struct Compilation {
    pub sources: SourceMap,
    pub diagnostics: Diagnostics,
    pub policy: Option<Policy>,
}

impl Compilation {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.has_errors()
    }
}

/// Reads and compiles a policy file (and the files it extends).
pub fn compile_file(path: &Path) -> std::io::Result<Compilation> {
    let text = std::fs::read_to_string(path)?;
    Ok(compile_source(&path.to_string_lossy(), &text, &FsLoader))
}

/// Compiles policy text named `name`; `extends` paths resolve relative to
/// `name` through `loader`.
pub fn compile_source(name: &str, text: &str, loader: &dyn FileLoader) -> Compilation {
    let mut sources = SourceMap::new();
    let mut diags = Diagnostics::default();
    let id = sources.add(SourceFile::new(name, text));
    let root = std::path::PathBuf::from(name);
    let mut chain = vec![root.canonicalize().unwrap_or(root)];
    let doc = extends::load_merged(loader, &mut sources, &mut diags, id, &mut chain);
    let infos: Vec<SourceInfo> =
        sources.files().map(|(_, f)| SourceInfo { path: f.name.clone(), sha256: f.sha256_hex() }).collect();
    let policy = {
        let mut d = decode::Decoder { sources: &sources, diags: &mut diags };
        let policy = decode::decode_policy(&mut d, &doc.root, infos);
        check::check(&policy, &mut diags);
        policy
    };
    diags.sort();
    let policy = if diags.has_errors() { None } else { Some(policy) };
    Compilation { sources, diagnostics: diags, policy }
}

/// Compiles text that must not use `extends` (tests, fuzzing, benchmarks).
pub fn compile_str(name: &str, text: &str) -> Compilation {
    struct NoFiles;
    impl FileLoader for NoFiles {
        fn load(&self, _: &Path) -> std::io::Result<String> {
            Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "`extends` is not available here"))
        }
    }
    compile_source(name, text, &NoFiles)
}

/// Canonical formatting (`phantom-policy fmt`). Formats only syntactically
/// valid files; returns the syntax diagnostics otherwise.
pub fn format_source(name: &str, text: &str) -> Result<String, (SourceMap, Diagnostics)> {
    let mut sources = SourceMap::new();
    let mut diags = Diagnostics::default();
    let id = sources.add(SourceFile::new(name, text));
    let doc = syntax::parse_document(id, text, &mut diags);
    if diags.has_errors() {
        diags.sort();
        return Err((sources, diags));
    }
    Ok(syntax::print::print_document(&doc))
}
