//! `cargo xtask run`: take every example policy through the pipeline and
//! report what happened at each stage.
//!
//! The pipeline is compile -> bundle for every policy, then a sandbox demo
//! (`demo.rs`) that runs a Python script under the reference profile's
//! runnable sibling. Each stage
//! is a function from the previous stage's output to a [`StageResult`], and
//! the summary prints one column per stage.

use crate::util;
use anyhow::Result;
use phantom_dsl::ir::{LayerSummary, Mode, Policy};
use phantom_dsl::Compilation;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Policy files to run (default: every policies/*.yaml, sorted).
    files: Vec<PathBuf>,
    /// Where bundles go, one directory per profile.
    /// A relative path is relative to the workspace root.
    #[arg(long, default_value = "target/phantom/bundles")]
    out: PathBuf,
    /// Skip the sandbox demo (it needs root: namespaces, cgroups).
    #[arg(long)]
    no_demo: bool,
}

/// What one stage did for one policy.
#[derive(Debug)]
enum StageResult {
    Ok(String),
    Failed(String),
    /// Not attempted because an earlier stage failed.
    Skipped,
}

impl StageResult {
    fn failed(&self) -> bool {
        matches!(self, StageResult::Failed(_))
    }
    fn cell(&self) -> &'static str {
        match self {
            StageResult::Ok(_) => "ok",
            StageResult::Failed(_) => "FAILED",
            StageResult::Skipped => "-",
        }
    }
}

/// Everything `run` learned about one policy file.
#[derive(Debug)]
struct PolicyRun {
    path: PathBuf,
    profile: Option<String>,
    mode: Option<String>,
    layers: Vec<LayerSummary>,
    errors: usize,
    warnings: usize,
    compile: StageResult,
    bundle: StageResult,
}

impl PolicyRun {
    fn failed(&self) -> bool {
        self.compile.failed() || self.bundle.failed()
    }
}

pub fn main(args: &Args) -> Result<ExitCode> {
    let files = if args.files.is_empty() {
        util::example_policies()?
    } else {
        args.files.iter().map(|f| util::from_caller(f)).collect()
    };
    if files.is_empty() {
        anyhow::bail!("no policies to run (policies/*.yaml is empty)");
    }
    let mut runs = Vec::new();
    // Two files with the same profile would overwrite each other's bundle.
    let mut written: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in &files {
        let run = run_one(path, &args.out, &mut written);
        runs.push(run);
    }
    print_table(&runs, &args.out);
    let mut failed = runs.iter().any(PolicyRun::failed);
    if args.files.is_empty() && !args.no_demo {
        if let Err(e) = crate::demo::run(&util::workspace_root()) {
            println!("demo FAILED: {e:#}");
            failed = true;
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn run_one(path: &Path, out: &Path, written: &mut BTreeMap<String, PathBuf>) -> PolicyRun {
    println!("━━ {} {}", path.display(), "━".repeat(70usize.saturating_sub(path.display().to_string().len())));
    let mut run = PolicyRun {
        path: path.to_path_buf(),
        profile: None,
        mode: None,
        layers: Vec::new(),
        errors: 0,
        warnings: 0,
        compile: StageResult::Skipped,
        bundle: StageResult::Skipped,
    };

    // Stage 1: compile.
    let compilation = match phantom_dsl::compile_file(path) {
        Ok(c) => c,
        Err(e) => {
            println!("  cannot read: {e}\n");
            run.compile = StageResult::Failed(format!("cannot read: {e}"));
            return run;
        }
    };
    run.errors = compilation.diagnostics.error_count();
    run.warnings = compilation.diagnostics.warning_count();
    run.compile = match &compilation.policy {
        Some(_) => StageResult::Ok(String::new()),
        None => StageResult::Failed(format!("{} errors", run.errors)),
    };
    print_compilation(&compilation, &mut run);

    // Stage 2: bundle.
    if let Some(policy) = &compilation.policy {
        run.bundle = write_bundle(policy, path, out, written);
        match &run.bundle {
            StageResult::Ok(msg) => println!("  {:<12} {msg}", "bundle"),
            StageResult::Failed(msg) => println!("  {:<12} FAILED: {msg}", "bundle"),
            StageResult::Skipped => {}
        }
    }
    // Later stages (load, spawn, exec) go here, each taking the previous
    // stage's output.
    println!();
    run
}

fn mode_name(m: Mode) -> String {
    serde_json::to_value(m).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{m:?}"))
}

fn print_compilation(c: &Compilation, run: &mut PolicyRun) {
    if let Some(policy) = &c.policy {
        let declared = mode_name(policy.mode);
        let effective = mode_name(policy.effective_mode());
        let mode = if declared == effective { effective } else { format!("{effective} (from `{declared}`)") };
        println!("  {:<12} {}", "profile", policy.profile);
        println!("  {:<12} {mode}", "mode");
        run.profile = Some(policy.profile.clone());
        run.mode = Some(mode);
        run.layers = policy.layers();
        if run.layers.is_empty() {
            println!("  {:<12} none (this policy compiles to no kernel layer)", "layers");
        } else {
            println!("  {:<12} {:<12} {:>6}  required", "layers", "layer", "rules");
            for l in &run.layers {
                println!(
                    "  {:<12} {:<12} {:>6}  {}",
                    "",
                    l.layer.name(),
                    l.rules,
                    if l.required { "yes" } else { "no" }
                );
            }
        }
    }
    println!("  {:<12} {}, {}", "diagnostics", plural(run.errors, "error"), plural(run.warnings, "warning"));
    if !c.diagnostics.items.is_empty() {
        let rendered = phantom_cli::render::render_all(&c.sources, &c.diagnostics);
        for line in rendered.trim_end().lines() {
            println!("    {}", line.trim_end());
        }
    }
}

fn write_bundle(policy: &Policy, path: &Path, out: &Path, written: &mut BTreeMap<String, PathBuf>) -> StageResult {
    if let Some(first) = written.get(&policy.profile) {
        return StageResult::Failed(format!("profile `{}` was already written by {}", policy.profile, first.display()));
    }
    let dir = out.join(&policy.profile);
    let built = match phantom_ebpf::bundle::build(policy) {
        Ok(b) => b,
        Err(e) => return StageResult::Failed(format!("backends: {e}")),
    };
    if let Err(e) = phantom_ebpf::bundle::write(&dir, &built) {
        return StageResult::Failed(format!("writing {}: {e}", dir.display()));
    }
    written.insert(policy.profile.clone(), path.to_path_buf());
    let names: Vec<&str> = built.files.iter().map(|(n, _)| n.as_str()).collect();
    let bytes: usize = built.files.iter().map(|(_, b)| b.len()).sum();
    StageResult::Ok(format!("{}/ ({}; {bytes} bytes)", dir.display(), names.join(", ")))
}

fn plural(n: usize, what: &str) -> String {
    match (n, what.strip_suffix('y')) {
        (1, _) => format!("1 {what}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {what}s"),
    }
}

fn layers_cell(layers: &[LayerSummary]) -> String {
    if layers.is_empty() {
        return "-".into();
    }
    layers
        .iter()
        .map(|l| format!("{}{}:{}", l.layer.name(), if l.required { "!" } else { "" }, l.rules))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_table(runs: &[PolicyRun], out: &Path) {
    let rows: Vec<[String; 8]> = runs
        .iter()
        .map(|r| {
            [
                r.path.display().to_string(),
                r.profile.clone().unwrap_or_else(|| "-".into()),
                r.mode.clone().unwrap_or_else(|| "-".into()),
                layers_cell(&r.layers),
                r.errors.to_string(),
                r.warnings.to_string(),
                r.compile.cell().into(),
                r.bundle.cell().into(),
            ]
        })
        .collect();
    let header =
        ["policy", "profile", "mode", "layers (rules, ! = required)", "errors", "warnings", "compile", "bundle"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(&header.map(String::from));
    line(&widths.map(|w| "─".repeat(w)));
    for row in &rows {
        line(row);
    }
    let failed = runs.iter().filter(|r| r.failed()).count();
    let errors: usize = runs.iter().map(|r| r.errors).sum();
    let warnings: usize = runs.iter().map(|r| r.warnings).sum();
    println!();
    println!(
        "xtask run: {}, {} ok, {failed} failed ({}, {}); bundles in {}/",
        plural(runs.len(), "policy"),
        runs.len() - failed,
        plural(errors, "error"),
        plural(warnings, "warning"),
        out.display()
    );
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "policy"), "1 policy");
        assert_eq!(plural(6, "policy"), "6 policies");
        assert_eq!(plural(0, "warning"), "0 warnings");
    }
}
