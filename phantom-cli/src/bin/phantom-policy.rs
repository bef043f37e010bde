//! `phantom-policy`: check, compile and format Phantom policy files.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use phantom_cli::{bundle, render};
use phantom_dsl::Compilation;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "phantom-policy",
    version,
    about = "Compile Phantom sandbox policies into kernel enforcement artifacts"
)]
#[command(
    after_help = "Examples:\n  phantom-policy check policies/*.yaml\n  phantom-policy compile policies/python-ai-turbo.yaml -o out/\n  phantom-policy fmt --write policies/python-ai-turbo.yaml\n\nThe policy language is described in docs/policy-language.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Format {
    /// Rendered diagnostics with source excerpts (stderr).
    Human,
    /// One JSON document on stdout.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and check policies; report every error and warning.
    #[command(
        after_help = "Exit status: 0 when no file has errors, 1 when one has, 2 on usage or I/O problems.\n\nExample:\n  phantom-policy check policies/*.yaml\n  phantom-policy check --format json my.yaml | jq '.[].diagnostics'"
    )]
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Compile one policy into a bundle directory (IR, manifest, artifacts).
    #[command(
        after_help = "Writes DIR/policy.ir.json and DIR/manifest.json (source hash, artifact hashes, layers).\nThe same input always produces byte-identical files.\n\nExample:\n  phantom-policy compile policies/python-ai-turbo.yaml -o build/python-ai-turbo"
    )]
    Compile {
        file: PathBuf,
        /// Output directory (created if missing).
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Print policies in canonical form (comments kept).
    #[command(
        after_help = "Without --write or --check, prints the formatted file to stdout.\n\nExample:\n  phantom-policy fmt --check policies/*.yaml\n  phantom-policy fmt --write my.yaml"
    )]
    Fmt {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Rewrite the files in place.
        #[arg(long, conflicts_with = "check")]
        write: bool,
        /// Exit 1 if a file is not formatted; change nothing.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("phantom-policy: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { files, format, deny_warnings } => check(&files, format, deny_warnings),
        Command::Compile { file, output, format } => compile(&file, &output, format),
        Command::Fmt { files, write, check } => fmt(&files, write, check),
    }
}

fn load(file: &PathBuf) -> Result<Compilation> {
    phantom_dsl::compile_file(file).with_context(|| format!("cannot read {}", file.display()))
}

fn summary_line(c: &Compilation) -> String {
    let e = c.diagnostics.error_count();
    let w = c.diagnostics.warning_count();
    let plural = |n: usize, s: &str| format!("{n} {s}{}", if n == 1 { "" } else { "s" });
    format!("{}, {}", plural(e, "error"), plural(w, "warning"))
}

fn check(files: &[PathBuf], format: Format, deny_warnings: bool) -> Result<ExitCode> {
    let mut failed = false;
    let mut json = Vec::new();
    for f in files {
        let c = load(f)?;
        let bad = c.has_errors() || (deny_warnings && c.diagnostics.warning_count() > 0);
        failed |= bad;
        match format {
            Format::Human => {
                eprint!("{}", render::render_all(&c.sources, &c.diagnostics));
                eprintln!(
                    "{}: {}",
                    f.display(),
                    if bad { format!("failed ({})", summary_line(&c)) } else { format!("ok ({})", summary_line(&c)) }
                );
            }
            Format::Json => json.push(serde_json::json!({
                "file": f.display().to_string(),
                "ok": !bad,
                "errors": c.diagnostics.error_count(),
                "warnings": c.diagnostics.warning_count(),
                "diagnostics": render::to_json(&c.sources, &c.diagnostics),
            })),
        }
    }
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn compile(file: &PathBuf, out: &PathBuf, format: Format) -> Result<ExitCode> {
    let c = load(file)?;
    let Some(policy) = &c.policy else {
        match format {
            Format::Human => {
                eprint!("{}", render::render_all(&c.sources, &c.diagnostics));
                eprintln!("{}: not compiled ({})", file.display(), summary_line(&c));
            }
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"ok": false, "diagnostics": render::to_json(&c.sources, &c.diagnostics)})
                )?
            ),
        }
        return Ok(ExitCode::from(1));
    };
    let files = bundle::build(policy);
    bundle::write(out, &files).with_context(|| format!("cannot write bundle to {}", out.display()))?;
    match format {
        Format::Human => {
            eprint!("{}", render::render_all(&c.sources, &c.diagnostics));
            let layers: Vec<String> =
                policy.layers().iter().map(|l| format!("{} ({} rules)", l.layer.name(), l.rules)).collect();
            eprintln!(
                "{}: compiled to {} ({}); layers: {}",
                file.display(),
                out.display(),
                summary_line(&c),
                if layers.is_empty() { "none".into() } else { layers.join(", ") }
            );
        }
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": true,
                "output": out.display().to_string(),
                "files": files.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "layers": policy.layers(),
                "diagnostics": render::to_json(&c.sources, &c.diagnostics),
            }))?
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt(files: &[PathBuf], write: bool, check: bool) -> Result<ExitCode> {
    let mut failed = false;
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let formatted = match phantom_dsl::format_source(&f.to_string_lossy(), &text) {
            Ok(s) => s,
            Err((sources, diags)) => {
                eprint!("{}", render::render_all(&sources, &diags));
                eprintln!("{}: not formatted: fix the syntax errors first", f.display());
                failed = true;
                continue;
            }
        };
        if check {
            if formatted != text {
                eprintln!("{}: not in canonical form (run `phantom-policy fmt --write {}`)", f.display(), f.display());
                failed = true;
            }
        } else if write {
            if formatted != text {
                let tmp = f.with_extension("yaml.fmt-tmp");
                std::fs::write(&tmp, &formatted).with_context(|| format!("cannot write {}", tmp.display()))?;
                std::fs::rename(&tmp, f).with_context(|| format!("cannot replace {}", f.display()))?;
                eprintln!("{}: formatted", f.display());
            }
        } else {
            let mut out = std::io::stdout().lock();
            if files.len() > 1 && std::io::stdout().is_terminal() {
                writeln!(out, "# {}", f.display())?;
            }
            out.write_all(formatted.as_bytes())?;
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
