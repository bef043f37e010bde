//! Reading BPF ELF objects back: the programs of an object with their map
//! relocations and line_info, as [`Encoded`] programs that
//! [`crate::bpf::disasm`] lists with map names and policy lines. What
//! `phantom-policy inspect` shows for `cgroup.bpf.o`, and the golden tests
//! compare.
//!
//! A small ELF64 little-endian reader, enough for relocatable `EM_BPF`
//! objects in libbpf conventions (those [`super::ObjectBuilder`] writes and
//! clang's): section headers, one `.symtab`, `SHT_REL` sections, `.BTF`
//! strings and `.BTF.ext` line_info. Every offset is bounds-checked: a
//! malformed file is an [`ElfError::BadElf`], never a panic.

use super::btf::BtfType;
use super::btf_read::ParsedBtf;
use super::{btf_ext, btf_read, ElfError, MapDef};
use crate::bpf::opcode::{RawInsn, INSN_SIZE};
use crate::bpf::{Encoded, MapReloc, SourceLoc};
use std::collections::BTreeMap;
use std::sync::Arc;

const SHT_SYMTAB: u32 = 2;
const SHT_REL: u32 = 9;
const SHF_EXECINSTR: u64 = 4;
const STT_FUNC: u8 = 2;
const STB_LOCAL: u8 = 0;
const EM_BPF: u16 = 247;

/// One program of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectProgram {
    /// Its section (`cgroup/connect4`, `xdp`, ...).
    pub section: String,
    /// Its symbol (and BTF function) name.
    pub name: String,
    /// Slots, map relocations by map symbol, and the policy position of
    /// every slot that has a line_info record.
    pub code: Encoded,
    /// The source text line_info records for each slot, where not empty.
    pub source_lines: BTreeMap<usize, String>,
}

/// The parts of an object a reader of its programs needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedObject {
    /// The `license` section's string, if any.
    pub license: Option<String>,
    /// Global functions in executable sections, in section, then offset order.
    pub programs: Vec<ObjectProgram>,
    /// Symbols defined in `.maps`, in offset order.
    pub maps: Vec<String>,
    /// Their definitions, from the `.maps` BTF (libbpf's `__uint(field,
    /// value)` members, the form [`super::ObjectBuilder`] writes), in the
    /// same order; empty when the object has no `.BTF`.
    pub map_defs: Vec<MapDef>,
}

#[derive(Debug, Clone)]
struct Shdr {
    name: String,
    sh_type: u32,
    flags: u64,
    offset: usize,
    size: usize,
    link: u32,
    info: u32,
}

#[derive(Debug, Clone)]
struct Sym {
    name: String,
    bind: u8,
    kind: u8,
    shndx: usize,
    value: u64,
    size: u64,
}

fn bad(msg: impl Into<String>) -> ElfError {
    ElfError::BadElf(msg.into())
}

fn get(data: &[u8], off: usize, len: usize) -> Result<&[u8], ElfError> {
    off.checked_add(len)
        .and_then(|end| data.get(off..end))
        .ok_or_else(|| bad(format!("{len} bytes at offset {off} are past the end of the file ({})", data.len())))
}

fn u16_at(d: &[u8], off: usize) -> Result<u16, ElfError> {
    let b = get(d, off, 2)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(d: &[u8], off: usize) -> Result<u32, ElfError> {
    let b = get(d, off, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(d: &[u8], off: usize) -> Result<u64, ElfError> {
    let b = get(d, off, 8)?;
    Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
}

fn cstr(d: &[u8], off: usize) -> Result<String, ElfError> {
    let rest = d.get(off..).ok_or_else(|| bad(format!("string offset {off} out of range")))?;
    let end = rest.iter().position(|&b| b == 0).ok_or_else(|| bad(format!("string at {off} is not terminated")))?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

fn usize_of(v: u64) -> Result<usize, ElfError> {
    usize::try_from(v).map_err(|_| bad(format!("offset {v} does not fit")))
}

/// True when `bytes` starts like an ELF file.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

fn section_headers(d: &[u8]) -> Result<Vec<Shdr>, ElfError> {
    if !is_elf(d) {
        return Err(bad("not an ELF file (no \\x7fELF magic)"));
    }
    if get(d, 4, 2)? != [2, 1] {
        return Err(bad("not a 64-bit little-endian ELF file"));
    }
    if u16_at(d, 18)? != EM_BPF {
        return Err(bad(format!("machine {} is not EM_BPF ({EM_BPF})", u16_at(d, 18)?)));
    }
    let shoff = usize_of(u64_at(d, 40)?)?;
    let shentsize = usize::from(u16_at(d, 58)?);
    let shnum = usize::from(u16_at(d, 60)?);
    let shstrndx = usize::from(u16_at(d, 62)?);
    if shentsize < 64 {
        return Err(bad(format!("section header size {shentsize} is smaller than 64")));
    }
    let mut raw = Vec::with_capacity(shnum.min(4096));
    for i in 0..shnum {
        let h = get(d, i.checked_mul(shentsize).and_then(|x| x.checked_add(shoff)).unwrap_or(usize::MAX), 64)?;
        raw.push((
            u32_at(h, 0)?,
            u32_at(h, 4)?,
            u64_at(h, 8)?,
            usize_of(u64_at(h, 24)?)?,
            usize_of(u64_at(h, 32)?)?,
            u32_at(h, 40)?,
            u32_at(h, 44)?,
        ));
    }
    let &(_, _, _, str_off, str_size, _, _) =
        raw.get(shstrndx).ok_or_else(|| bad(format!("section name table index {shstrndx} out of range")))?;
    let names = get(d, str_off, str_size)?;
    raw.into_iter()
        .map(|(name, sh_type, flags, offset, size, link, info)| {
            let name = if sh_type == 0 { String::new() } else { cstr(names, name as usize)? };
            if sh_type != 8 {
                // SHT_NOBITS has no file contents; all others must be inside the file.
                get(d, offset, size)?;
            }
            Ok(Shdr { name, sh_type, flags, offset, size, link, info })
        })
        .collect()
}

fn data<'a>(d: &'a [u8], s: &Shdr) -> Result<&'a [u8], ElfError> {
    get(d, s.offset, s.size)
}

fn symbols(d: &[u8], secs: &[Shdr]) -> Result<Vec<Sym>, ElfError> {
    let Some(symtab) = secs.iter().find(|s| s.sh_type == SHT_SYMTAB) else { return Ok(Vec::new()) };
    let strtab = secs.get(symtab.link as usize).ok_or_else(|| bad("symbol table links to no string table"))?;
    let (syms, strs) = (data(d, symtab)?, data(d, strtab)?);
    (0..syms.len() / 24)
        .map(|i| {
            let s = &syms[i * 24..i * 24 + 24];
            Ok(Sym {
                name: cstr(strs, u32_at(s, 0)? as usize)?,
                bind: s[4] >> 4,
                kind: s[4] & 0xf,
                shndx: usize::from(u16_at(s, 6)?),
                value: u64_at(s, 8)?,
                size: u64_at(s, 16)?,
            })
        })
        .collect()
}

/// Reads the programs, maps and license of a BPF ELF object.
pub fn read_object(d: &[u8]) -> Result<ParsedObject, ElfError> {
    let secs = section_headers(d)?;
    let syms = symbols(d, &secs)?;
    let license = secs.iter().find(|s| s.name == "license").map(|s| cstr(data(d, s)?, 0)).transpose()?;

    let maps_idx = secs.iter().position(|s| s.name == ".maps");
    let mut maps: Vec<&Sym> = syms.iter().filter(|s| Some(s.shndx) == maps_idx && !s.name.is_empty()).collect();
    maps.sort_by_key(|s| s.value);

    let btf = secs.iter().find(|s| s.name == ".BTF").map(|b| btf_read::parse(data(d, b)?)).transpose()?;
    let map_defs = match &btf {
        Some(btf) => {
            let defs = map_defs(btf)?;
            maps.iter()
                .map(|m| {
                    defs.iter()
                        .find(|d| d.name == m.name)
                        .cloned()
                        .ok_or_else(|| bad(format!("map `{}` has no BTF definition", m.name)))
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        None => Vec::new(),
    };

    // line_info, by section name: (byte offset, location, source text).
    let mut lines: BTreeMap<String, Vec<(u32, SourceLoc, String)>> = BTreeMap::new();
    if let (Some(btf), Some(e)) = (&btf, secs.iter().find(|s| s.name == ".BTF.ext")) {
        let ext = btf_ext::parse(data(d, e)?)?;
        let mut files: BTreeMap<u32, Arc<str>> = BTreeMap::new();
        for sec in &ext.lines {
            let name = btf.string_at(sec.sec_name_off)?.to_string();
            let out = lines.entry(name).or_default();
            for r in &sec.records {
                let file = match files.get(&r.file_name_off) {
                    Some(f) => f.clone(),
                    None => {
                        let f: Arc<str> = Arc::from(btf.string_at(r.file_name_off)?);
                        files.insert(r.file_name_off, f.clone());
                        f
                    }
                };
                let text = btf.string_at(r.line_off)?.to_string();
                out.push((r.insn_off, SourceLoc { file, line: r.line, col: r.col }, text));
            }
        }
    }

    let mut programs = Vec::new();
    for (idx, sec) in secs.iter().enumerate() {
        if sec.flags & SHF_EXECINSTR == 0 || sec.sh_type == SHT_REL {
            continue;
        }
        let bytes = data(d, sec)?;
        let mut funcs: Vec<&Sym> =
            syms.iter().filter(|s| s.shndx == idx && s.kind == STT_FUNC && s.bind != STB_LOCAL).collect();
        funcs.sort_by_key(|s| s.value);
        // Relocations against this section: (byte offset, symbol index).
        let mut rels = Vec::new();
        for r in secs.iter().filter(|r| r.sh_type == SHT_REL && r.info as usize == idx) {
            let rd = data(d, r)?;
            for i in 0..rd.len() / 16 {
                let info = u64_at(rd, i * 16 + 8)?;
                rels.push((u64_at(rd, i * 16)?, (info >> 32) as usize));
            }
        }
        for f in funcs {
            let start = usize_of(f.value)?;
            let size = if f.size == 0 { bytes.len().saturating_sub(start) } else { usize_of(f.size)? };
            let body = get(bytes, start, size)
                .map_err(|_| bad(format!("program `{}` runs past the end of section `{}`", f.name, sec.name)))?;
            if size % INSN_SIZE != 0 || start % INSN_SIZE != 0 {
                return Err(bad(format!("program `{}` is not aligned to 8-byte instructions", f.name)));
            }
            let insns: Vec<RawInsn> =
                body.chunks_exact(INSN_SIZE).map(|c| RawInsn::from_bytes(c.try_into().expect("chunks of 8"))).collect();
            let range = f.value..f.value + size as u64;
            let mut code = Encoded { insns, ..Encoded::default() };
            for &(off, sym) in rels.iter().filter(|(off, _)| range.contains(off)) {
                let target =
                    syms.get(sym).ok_or_else(|| bad(format!("relocation in `{}` names symbol {sym}", sec.name)))?;
                code.map_relocs.push(MapReloc { slot: ((off - f.value) / 8) as usize, map: target.name.clone() });
            }
            code.map_relocs.sort_by_key(|r| r.slot);
            let mut source_lines = BTreeMap::new();
            for (off, loc, text) in lines.get(&sec.name).into_iter().flatten() {
                if range.contains(&u64::from(*off)) {
                    let slot = ((u64::from(*off) - f.value) / 8) as usize;
                    code.lines.insert(slot, loc.clone());
                    if !text.is_empty() {
                        source_lines.insert(slot, text.clone());
                    }
                }
            }
            programs.push(ObjectProgram { section: sec.name.clone(), name: f.name.clone(), code, source_lines });
        }
    }
    Ok(ParsedObject { license, programs, maps: maps.into_iter().map(|s| s.name.clone()).collect(), map_defs })
}

/// The map definitions of the `.maps` data section: each variable is an
/// anonymous struct whose members point to arrays whose element counts
/// are the values (`type`, `key_size`, `value_size`, `max_entries`,
/// `map_flags`; an absent size is 0, as ring buffers have).
fn map_defs(btf: &ParsedBtf) -> Result<Vec<MapDef>, ElfError> {
    let bad_btf = |what: String| ElfError::BadBtf(what);
    let Some(BtfType::DataSec { vars, .. }) =
        btf.types.iter().find(|t| matches!(t, BtfType::DataSec { name, .. } if name == ".maps"))
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for v in vars {
        let Some(BtfType::Var { name, ty, .. }) = btf.type_by_id(v.var) else {
            return Err(bad_btf(format!(".maps entry {} is not a variable", v.var)));
        };
        let Some(BtfType::Struct { members, .. }) = btf.type_by_id(*ty) else {
            return Err(bad_btf(format!("map `{name}` is not a struct")));
        };
        let mut def = MapDef::new(name.clone(), 0, 0, 0, 0);
        for m in members {
            let value = match btf.type_by_id(m.ty) {
                Some(BtfType::Ptr { to }) => match btf.type_by_id(*to) {
                    Some(BtfType::Array { nelems, .. }) => *nelems,
                    _ => return Err(bad_btf(format!("map `{name}`: `{}` is not __uint(field, value)", m.name))),
                },
                _ => return Err(bad_btf(format!("map `{name}`: `{}` is not a pointer", m.name))),
            };
            match m.name.as_str() {
                "type" => def.map_type = value,
                "key_size" => def.key_size = value,
                "value_size" => def.value_size = value,
                "max_entries" => def.max_entries = value,
                "map_flags" => def.flags = value,
                other => return Err(bad_btf(format!("map `{name}`: field `{other}` is not supported"))),
            }
        }
        out.push(def);
    }
    Ok(out)
}
