//! `phantom-policy inspect`: what an auditor reads. For a bundle directory:
//! the manifest, each artifact checked against its recorded hash, and each
//! program's disassembly with the policy line of every instruction: seccomp
//! filters (cBPF) and the eBPF programs of `cgroup.bpf.o` and `xdp.bpf.o` (bpftool's
//! `prog dump xlated` syntax; policy lines from the object's own line_info,
//! cross-checked with the manifest).

use anyhow::{bail, Context, Result};
use phantom_dsl::source::sha256_hex;
use phantom_ebpf::bpf::disasm as ebpf_disasm;
use phantom_ebpf::bundle::{read_manifest, Artifact, Manifest, MapContents, CGROUP_LAYER, XDP_LAYER};
use phantom_ebpf::elf::read::{is_elf, read_object};
use phantom_ebpf::landlock::LandlockRuleset;
use phantom_ebpf::seccomp::{disasm, insn};
use serde_json::{json, Value};
use std::fmt::Write;
use std::path::Path;

/// One artifact's audit view.
struct View {
    name: String,
    text: String,
    json: Value,
}

fn seccomp_view(name: &str, bytes: &[u8], a: Option<&Artifact>) -> Result<View> {
    let Some(insns) = insn::decode(bytes) else {
        bail!("{name}: not a seccomp filter (length {} is not a multiple of 8)", bytes.len());
    };
    let mut lines = vec![None; insns.len()];
    for (i, l) in a.map(|a| a.lines.as_slice()).unwrap_or_default() {
        if let Some(slot) = lines.get_mut(*i) {
            *slot = Some(*l);
        }
    }
    let listing = disasm::listing(&insns, &lines);
    Ok(View {
        name: name.to_string(),
        text: disasm::disassemble(&insns, &lines),
        json: json!({"name": name, "layer": "seccomp", "instructions": listing}),
    })
}

fn landlock_view(name: &str, bytes: &[u8]) -> Result<View> {
    let r: LandlockRuleset =
        serde_json::from_slice(bytes).with_context(|| format!("{name}: not a Landlock ruleset"))?;
    let mut t = String::new();
    writeln!(t, "required: {}", r.required)?;
    match &r.fs {
        None => writeln!(t, "filesystem: not restricted by Landlock")?,
        Some(rules) => {
            for rule in rules {
                let rights: Vec<String> = rule.rights.iter().map(|x| format!("{x:?}")).collect();
                let glob = if rule.prefix_glob { "*" } else { "" };
                writeln!(t, "allow {}{glob}: {} ; line {}", rule.path, rights.join(" "), rule.line)?;
            }
        }
    }
    let ports = |p: &Option<Vec<u16>>| match p {
        None => "unrestricted".to_string(),
        Some(v) if v.is_empty() => "none".to_string(),
        Some(v) => v.iter().map(u16::to_string).collect::<Vec<_>>().join(", "),
    };
    writeln!(t, "tcp bind: {}", ports(&r.bind_tcp))?;
    writeln!(t, "tcp connect: {}", ports(&r.connect_tcp))?;
    writeln!(t, "scopes: {:?}", r.scopes)?;
    Ok(View { name: name.to_string(), text: t, json: json!({"name": name, "layer": "landlock", "ruleset": r}) })
}

/// An eBPF object: every program's listing with the policy lines of its
/// line_info. With a manifest entry, the programs must be the ones it
/// records (same sections, names, instruction counts and policy lines).
fn ebpf_view(name: &str, bytes: &[u8], a: Option<&Artifact>) -> Result<View> {
    let obj = read_object(bytes).with_context(|| format!("{name}: not a readable BPF object"))?;
    if let Some(a) = a.filter(|a| !a.programs.is_empty()) {
        let found: Vec<(&str, &str, usize)> =
            obj.programs.iter().map(|p| (p.section.as_str(), p.name.as_str(), p.code.insns.len())).collect();
        let recorded: Vec<(&str, &str, usize)> =
            a.programs.iter().map(|p| (p.section.as_str(), p.name.as_str(), p.instructions)).collect();
        if found != recorded {
            bail!("{name}: programs {found:?} do not match the manifest's {recorded:?}");
        }
        for (p, info) in obj.programs.iter().zip(&a.programs) {
            for &(slot, line) in &info.lines {
                if p.code.lines.get(&slot).map(|l| l.line) != Some(line) {
                    bail!("{name}: {} instruction {slot}: line_info does not give policy line {line}", p.name);
                }
            }
        }
    }
    let mut text = String::new();
    writeln!(text, "license: {}", obj.license.as_deref().unwrap_or("(none)"))?;
    if !obj.maps.is_empty() {
        writeln!(text, "maps: {}", obj.maps.join(", "))?;
    }
    let mut programs = Vec::new();
    for p in &obj.programs {
        let listing = ebpf_disasm::listing(&p.code).with_context(|| format!("{name}: program {}", p.name))?;
        writeln!(text, "-- {} {} ({} instructions)", p.section, p.name, p.code.insns.len())?;
        text += &ebpf_disasm::render(&listing);
        let insns: Vec<Value> = listing
            .iter()
            .map(|l| {
                let mut v = json!(l);
                if let Some(src) = p.source_lines.get(&l.index) {
                    v["source"] = json!(src);
                }
                v
            })
            .collect();
        programs
            .push(json!({"section": p.section, "name": p.name, "slots": p.code.insns.len(), "instructions": insns}));
    }
    Ok(View {
        name: name.to_string(),
        text,
        json: json!({"name": name, "layer": layer_of(a, CGROUP_LAYER), "license": obj.license, "maps": obj.maps, "programs": programs}),
    })
}

/// The artifact's layer, or `default` without a manifest entry.
fn layer_of<'a>(a: Option<&'a Artifact>, default: &'a str) -> &'a str {
    a.and_then(|a| a.layer.as_deref()).unwrap_or(default)
}

fn maps_view(name: &str, bytes: &[u8], a: Option<&Artifact>) -> Result<View> {
    let maps: Vec<MapContents> =
        serde_json::from_slice(bytes).with_context(|| format!("{name}: not a list of map contents"))?;
    let mut t = String::new();
    for m in &maps {
        writeln!(
            t,
            "map {}: type {} key {} B value {} B max {} flags {:#x}, {} entries",
            m.name,
            m.map_type,
            m.key_size,
            m.value_size,
            m.max_entries,
            m.flags,
            m.entries.len()
        )?;
    }
    let layer = layer_of(a, CGROUP_LAYER);
    Ok(View { name: name.to_string(), text: t, json: json!({"name": name, "layer": layer, "maps": maps}) })
}

fn artifact_view(name: &str, bytes: &[u8], a: Option<&Artifact>) -> Result<Option<View>> {
    let layer = a.and_then(|a| a.layer.as_deref());
    let ebpf = matches!(layer, Some(CGROUP_LAYER | XDP_LAYER));
    if ebpf && name.ends_with(".json") {
        return maps_view(name, bytes, a).map(Some);
    }
    if ebpf || (a.is_none() && is_elf(bytes)) {
        return ebpf_view(name, bytes, a).map(Some);
    }
    if layer == Some("seccomp") || (a.is_none() && name.contains("seccomp")) {
        return seccomp_view(name, bytes, a).map(Some);
    }
    if layer == Some("landlock") || (a.is_none() && name.starts_with("landlock")) {
        return landlock_view(name, bytes).map(Some);
    }
    Ok(None)
}

fn header(m: &Manifest) -> String {
    let mut t = format!("profile {} (bundle format {}, {})\n", m.profile, m.format_version, m.compiler);
    for s in &m.sources {
        t += &format!("source {} sha256:{}\n", s.path, s.sha256);
    }
    for l in &m.layers {
        t += &format!("layer {} rules {}{}\n", l.layer.name(), l.rules, if l.required { " (required)" } else { "" });
    }
    t
}

/// Returns the rendered text and the JSON document.
pub fn inspect(path: &Path) -> Result<(String, Value)> {
    if path.is_dir() {
        let m = read_manifest(path)?;
        let mut text = header(&m);
        let mut arts = Vec::new();
        for a in &m.artifacts {
            let file = path.join(&a.name);
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if sha256_hex(&bytes) != a.sha256 {
                bail!("{}: content does not match the manifest's sha256 (the bundle was modified)", file.display());
            }
            if let Some(v) = artifact_view(&a.name, &bytes, Some(a))? {
                text += &format!("\n== {} ({} bytes, sha256:{})\n{}", v.name, a.bytes, &a.sha256[..16], v.text);
                arts.push(v.json);
            }
        }
        let json = json!({"profile": m.profile, "sources": m.sources, "layers": m.layers, "artifacts": arts});
        return Ok((text, json));
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    match artifact_view(&name, &bytes, None)? {
        Some(v) => Ok((v.text, v.json)),
        None => bail!(
            "{}: not a bundle directory or a known artifact (seccomp-*.bpf, landlock.json, a BPF ELF object)",
            path.display()
        ),
    }
}
