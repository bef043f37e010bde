//! `phantom-policy`: check, compile and format Phantom policy files.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use phantom_cli::render;
use phantom_dsl::Compilation;
use phantom_ebpf::bundle;
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
        after_help = "Writes DIR/policy.ir.json, the artifacts (seccomp-<arch>.bpf, landlock.json, cgroup.bpf.o: the cgroup-BPF\nprograms as a BPF ELF object that libbpf and aya load) and DIR/manifest.json (source hash, artifact hashes, layers).\nThe same input always produces byte-identical files.\n\nExample:\n  phantom-policy compile policies/python-ai-turbo.yaml -o build/python-ai-turbo"
    )]
    Compile {
        file: PathBuf,
        /// Output directory (created if missing).
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Show what a bundle enforces: disassembly with policy lines, rulesets.
    #[command(
        after_help = "DIR is a bundle written by `compile`; every artifact is checked against the manifest's sha256.\nA single artifact file (seccomp-*.bpf, landlock.json) can be inspected on its own (no policy lines);\nan eBPF object (cgroup.bpf.o, or any BPF ELF object) shows the policy lines of its line_info.\n\nExample:\n  phantom-policy compile policies/agent-workspace.yaml -o build/agent\n  phantom-policy inspect build/agent\n  phantom-policy inspect --json build/agent | jq '.artifacts[0].instructions[0]'\n  phantom-policy inspect build/agent/cgroup.bpf.o"
    )]
    Inspect {
        path: PathBuf,
        /// Print JSON (per-instruction records) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Convert another format into a policy (see `import seccomp --help`).
    #[command(subcommand)]
    Import(ImportCommand),
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

#[derive(Subcommand, Debug)]
enum ImportCommand {
    /// Convert a Docker/OCI seccomp profile (JSON) into policy syntax.
    #[command(
        after_help = "Entries conditional on architecture or capabilities (`includes`/`excludes`) are resolved for\n--arch and the capability set (default: Docker's default capabilities); `minKernel` is taken as\nsatisfied. Names that are not syscalls on the target architecture are skipped and listed in a\ncomment at the top of the output.\n\nExample:\n  phantom-policy import seccomp tests/data/docker-default-seccomp.json -o docker.yaml\n  phantom-policy import seccomp profile.json --cap CAP_SYS_ADMIN --name my-profile"
    )]
    Seccomp {
        profile: PathBuf,
        /// Write the policy here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Target architecture: x86_64 or aarch64.
        #[arg(long, default_value = "x86_64")]
        arch: String,
        /// Capabilities granted (repeatable); replaces the default set.
        #[arg(long = "cap")]
        caps: Vec<String>,
        /// Extra capabilities on top of Docker's defaults (repeatable).
        #[arg(long = "add-cap")]
        add_caps: Vec<String>,
        /// The `profile:` name of the generated policy.
        #[arg(long, default_value = "imported-seccomp")]
        name: String,
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
        Command::Inspect { path, json } => {
            let (text, doc) = phantom_cli::inspect::inspect(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{text}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Import(ImportCommand::Seccomp { profile, output, arch, caps, add_caps, name }) => {
            import_seccomp(&profile, output.as_deref(), &arch, caps, add_caps, &name)
        }
    }
}

fn load(file: &std::path::Path) -> Result<Compilation> {
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

fn compile(file: &std::path::Path, out: &std::path::Path, format: Format) -> Result<ExitCode> {
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
    // The texts the front end read become the source lines of the eBPF
    // object's line_info (the compiler itself reads no files).
    let texts: Vec<(String, String)> = c.sources.texts();
    let built = match bundle::build_with_sources(policy, &texts) {
        Ok(b) => b,
        Err(e) => {
            eprint!("{}", render::render_all(&c.sources, &c.diagnostics));
            eprintln!("{}: not compiled: {e}", file.display());
            return Ok(ExitCode::from(1));
        }
    };
    bundle::write(out, &built).with_context(|| format!("cannot write bundle to {}", out.display()))?;
    let files = &built.files;
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

fn import_seccomp(
    profile: &std::path::Path,
    output: Option<&std::path::Path>,
    arch: &str,
    caps: Vec<String>,
    add_caps: Vec<String>,
    name: &str,
) -> Result<ExitCode> {
    use phantom_dsl::import::docker_seccomp::{import, DOCKER_DEFAULT_CAPS};
    use phantom_dsl::syscalls::Arch;
    let arch = match arch {
        "x86_64" | "amd64" => Arch::X86_64,
        "aarch64" | "arm64" => Arch::Aarch64,
        other => anyhow::bail!("unknown architecture `{other}`: use x86_64 or aarch64"),
    };
    let json = std::fs::read_to_string(profile).with_context(|| format!("cannot read {}", profile.display()))?;
    let mut caps: Vec<String> =
        if caps.is_empty() { DOCKER_DEFAULT_CAPS.iter().map(|c| c.to_string()).collect() } else { caps };
    caps.extend(add_caps);
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let imported = import(&json, name, arch, &caps).with_context(|| format!("cannot import {}", profile.display()))?;
    // The output must be a valid policy: compile it before writing.
    let c = phantom_dsl::compile_str("imported.yaml", &imported.text);
    if c.has_errors() {
        eprint!("{}", render::render_all(&c.sources, &c.diagnostics));
        anyhow::bail!("the imported policy does not compile; this is a bug in the importer");
    }
    match output {
        Some(path) => {
            std::fs::write(path, &imported.text).with_context(|| format!("cannot write {}", path.display()))?;
            let rules = c.policy.as_ref().map_or(0, |p| p.seccomp.rules.len());
            eprintln!(
                "{}: {} rules from {} entries ({} skipped by includes/excludes, {} names not on {})",
                path.display(),
                rules,
                imported.entries_used,
                imported.entries_skipped,
                imported.unknown_names.len(),
                arch.name()
            );
        }
        None => print!("{}", imported.text),
    }
    Ok(ExitCode::SUCCESS)
}
