//! [`ObjectBuilder`]: encoded programs, map definitions and the policy
//! text -> the bytes of a BPF ELF object.
//!
//! Conventions followed (those of clang-built libbpf objects, which both
//! libbpf and aya expect):
//! - each program is a global `STT_FUNC` symbol with its size, in an
//!   executable section named after its attach point (`xdp`, ...);
//! - each map is a global `STT_OBJECT` in `.maps`, described in `.BTF` by a
//!   `VAR` in the `.maps` `DATASEC`; an instruction loading it gets an
//!   `R_BPF_64_64` relocation against that symbol (and `imm = 0`: loaders
//!   find the map by the symbol's offset in `.maps`);
//! - `license` holds the NUL-terminated license (symbol `_license`);
//! - `.BTF.ext` has one func_info per program and a line_info per policy
//!   line.

use super::btf::{Btf, BtfType, TypeId, VarSecInfo};
use super::btf_ext::{self, ExtSection, FuncRecord, LineRecord};
use super::core::{CoreField, LocalStructs};
use super::types;
use super::writer::{self as w, ElfWriter, Rel, Symbol};
use super::ElfError;
use crate::bpf::{Encoded, SourceLoc};
use std::collections::BTreeMap;

pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
pub const BPF_MAP_TYPE_RINGBUF: u32 = 27;

/// A map definition (`bpf_map_type`, sizes in bytes, `BPF_F_*` flags).
/// A zero `key_size` or `value_size` is left out of the definition, as
/// ring buffers require.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDef {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl MapDef {
    /// A map without flags.
    pub fn new(name: impl Into<String>, map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
        MapDef { name: name.into(), map_type, key_size, value_size, max_entries, flags: 0 }
    }

    /// The `(member, value)` pairs of its BTF definition, in libbpf order.
    fn fields(&self) -> Vec<(&'static str, u32)> {
        let mut f = vec![("type", self.map_type)];
        if self.key_size != 0 {
            f.push(("key_size", self.key_size));
        }
        if self.value_size != 0 {
            f.push(("value_size", self.value_size));
        }
        f.push(("max_entries", self.max_entries));
        if self.flags != 0 {
            f.push(("map_flags", self.flags));
        }
        f
    }
}

/// A program: its libbpf section name (which tells loaders the program
/// and attach type), its symbol name and its encoded instructions. The
/// source positions in `code.lines` become line_info; map relocations in
/// `code.map_relocs` become ELF relocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub section: String,
    pub name: String,
    pub code: Encoded,
    /// CO-RE field relocations ([`super::core`]); usually none.
    pub core: Vec<CoreField>,
}

impl Program {
    pub fn new(section: impl Into<String>, name: impl Into<String>, code: Encoded) -> Program {
        Program { section: section.into(), name: name.into(), code, core: Vec::new() }
    }

    /// With CO-RE field relocations.
    pub fn with_core(mut self, core: Vec<CoreField>) -> Program {
        self.core = core;
        self
    }
}

/// Collects programs, maps and policy sources; [`build`](Self::build)
/// writes the object. Building is pure: no kernel access, and the same
/// inputs give the same bytes.
#[derive(Debug, Clone, Default)]
pub struct ObjectBuilder {
    license: String,
    maps: Vec<MapDef>,
    programs: Vec<Program>,
    sources: BTreeMap<String, String>,
}

impl ObjectBuilder {
    /// `license` decides which helpers programs may call (`"GPL"` for all).
    pub fn new(license: &str) -> ObjectBuilder {
        ObjectBuilder { license: license.to_string(), ..ObjectBuilder::default() }
    }

    pub fn map(mut self, map: MapDef) -> ObjectBuilder {
        self.maps.push(map);
        self
    }

    pub fn program(mut self, program: Program) -> ObjectBuilder {
        self.programs.push(program);
        self
    }

    /// Registers the text of a policy file, so that line_info records for
    /// positions in `path` carry the source line (what bpftool prints).
    /// Positions in files without registered text get an empty line.
    pub fn source(mut self, path: impl Into<String>, text: impl Into<String>) -> ObjectBuilder {
        self.sources.insert(path.into(), text.into());
        self
    }

    /// Writes the object.
    pub fn build(&self) -> Result<Vec<u8>, ElfError> {
        self.validate()?;
        let mut btf = Btf::new();
        let mut elf = ElfWriter::new();

        let sections = self.program_sections();
        let mut sec_index = Vec::new();
        let mut funcs = Vec::new();
        let mut lines = Vec::new();
        let mut core_secs = Vec::new();
        let all_core: Vec<&CoreField> = self.programs.iter().flat_map(|p| &p.core).collect();
        let local = LocalStructs::define(&mut btf, &all_core);
        for ProgSection { name, progs, data } in &sections {
            let idx = elf.section(name, w::SHT_PROGBITS, w::SHF_ALLOC | w::SHF_EXECINSTR, 8, data.clone());
            sec_index.push(idx);
            let sec_name_off = btf.string(name);
            let mut f = ExtSection { sec_name_off, records: Vec::new() };
            let mut l = ExtSection { sec_name_off, records: Vec::new() };
            let mut c = ExtSection { sec_name_off, records: Vec::new() };
            for &(p, off) in progs {
                let type_id = types::program_func(&mut btf, &p.name, types::ctx_type(name));
                f.records.push(FuncRecord { insn_off: off as u32, type_id });
                l.records.extend(self.line_records(&mut btf, &p.code, off as u32));
                for cf in &p.core {
                    c.records.push(local.record(&mut btf, cf, off as u32 + cf.slot as u32 * 8));
                }
            }
            funcs.push(f);
            lines.push(l);
            core_secs.push(c);
        }

        let lic = self.license_bytes();
        let lic_idx = elf.section("license", w::SHT_PROGBITS, w::SHF_ALLOC | w::SHF_WRITE, 1, lic.clone());
        let lic_ty = types::char_array(&mut btf, lic.len() as u32);
        let lic_var = types::global_var(&mut btf, "_license", lic_ty);
        datasec(&mut btf, "license", &[(lic_var, 0, lic.len() as u32)]);

        // Maps: definitions in .BTF, zeroed storage in .maps.
        let mut map_layout = Vec::new(); // (var, offset, size)
        let mut maps_size = 0u32;
        for m in &self.maps {
            let (def, size) = types::map_struct(&mut btf, &m.fields());
            map_layout.push((types::global_var(&mut btf, &m.name, def), maps_size, size));
            maps_size += size;
        }
        let maps_idx = (!self.maps.is_empty()).then(|| {
            datasec(&mut btf, ".maps", &map_layout);
            elf.section(".maps", w::SHT_PROGBITS, w::SHF_ALLOC | w::SHF_WRITE, 8, vec![0; maps_size as usize])
        });

        // Symbols: programs, the license, maps.
        for (ProgSection { progs, .. }, &idx) in sections.iter().zip(&sec_index) {
            for &(p, off) in progs {
                let size = p.code.insns.len() as u64 * 8;
                elf.symbol(Symbol { name: p.name.clone(), kind: w::STT_FUNC, section: idx, value: off, size });
            }
        }
        let license_sym =
            Symbol { name: "_license".into(), kind: w::STT_OBJECT, section: lic_idx, value: 0, size: lic.len() as u64 };
        elf.symbol(license_sym);
        let mut map_syms = BTreeMap::new();
        for (m, &(_, off, size)) in self.maps.iter().zip(&map_layout) {
            let section = maps_idx.unwrap_or_default();
            let sym =
                Symbol { name: m.name.clone(), kind: w::STT_OBJECT, section, value: off.into(), size: size.into() };
            map_syms.insert(m.name.as_str(), elf.symbol(sym));
        }

        // Relocations: every map load, against the map's symbol.
        for (ProgSection { progs, .. }, &idx) in sections.iter().zip(&sec_index) {
            let mut rels = Vec::new();
            for &(p, off) in progs {
                for r in &p.code.map_relocs {
                    let symbol = *map_syms
                        .get(r.map.as_str())
                        .ok_or_else(|| ElfError::UnknownMap { program: p.name.clone(), map: r.map.clone() })?;
                    rels.push(Rel { offset: off + r.slot as u64 * 8, symbol, r_type: w::R_BPF_64_64 });
                }
            }
            if !rels.is_empty() {
                elf.rel_section(idx, &rels);
            }
        }

        // line_records interned its file names and lines above: .BTF is complete.
        let ext = btf_ext::encode_with_core(&funcs, &lines, &core_secs);
        elf.section(".BTF", w::SHT_PROGBITS, 0, 4, btf.to_bytes());
        elf.section(".BTF.ext", w::SHT_PROGBITS, 0, 4, ext);
        Ok(elf.finish())
    }

    /// Program sections in order of first appearance; programs sharing a
    /// section name are laid out one after the other.
    fn program_sections(&self) -> Vec<ProgSection<'_>> {
        let mut sections: Vec<ProgSection<'_>> = Vec::new();
        for p in &self.programs {
            let i = match sections.iter().position(|s| s.name == p.section) {
                Some(i) => i,
                None => {
                    sections.push(ProgSection { name: &p.section, progs: Vec::new(), data: Vec::new() });
                    sections.len() - 1
                }
            };
            let s = &mut sections[i];
            s.progs.push((p, s.data.len() as u64));
            s.data.extend_from_slice(&p.code.to_bytes());
        }
        sections
    }

    /// `license` as its section holds it: the string and one NUL.
    fn license_bytes(&self) -> Vec<u8> {
        let mut v = self.license.as_bytes().to_vec();
        v.push(0);
        v
    }

    /// line_info for one program starting at byte `off` of its section.
    /// The kernel requires the first instruction of every function to have
    /// a record when any does; if the program's first slot has no policy
    /// position, it gets the first position the program has (the rule the
    /// program as a whole exists for).
    fn line_records(&self, btf: &mut Btf, code: &Encoded, off: u32) -> Vec<LineRecord> {
        let mut locs: Vec<(usize, &SourceLoc)> = code.lines.iter().map(|(&slot, loc)| (slot, loc)).collect();
        if let Some(&(first, loc)) = locs.first() {
            if first != 0 {
                locs.insert(0, (0, loc));
            }
        }
        locs.into_iter()
            .map(|(slot, loc)| LineRecord {
                insn_off: off + slot as u32 * 8,
                file_name_off: btf.string(&loc.file),
                line_off: btf.string(self.source_line(loc)),
                line: loc.line,
                col: loc.col,
            })
            .collect()
    }

    /// The text of the (1-based) line `loc` points at, without its line
    /// ending; empty when the file was not registered or is shorter.
    fn source_line(&self, loc: &SourceLoc) -> &str {
        let Some(text) = self.sources.get(&*loc.file) else { return "" };
        let line = (loc.line as usize).checked_sub(1).and_then(|i| text.lines().nth(i)).unwrap_or("");
        // BTF strings are NUL-terminated; a NUL in the policy ends the line.
        line.split('\0').next().unwrap_or("").trim_end_matches('\r')
    }

    fn validate(&self) -> Result<(), ElfError> {
        if self.license.contains('\0') {
            return Err(ElfError::InvalidLicense);
        }
        // Programs and maps share the symbol table with `_license`.
        let mut seen = BTreeMap::from([("_license", "symbol")]);
        let names =
            self.programs.iter().map(|p| ("program", &p.name)).chain(self.maps.iter().map(|m| ("map", &m.name)));
        for (what, name) in names {
            identifier(what, name)?;
            if seen.insert(name, what).is_some() {
                return Err(ElfError::Duplicate { what, name: name.clone() });
            }
        }
        for p in &self.programs {
            section_name(&p.section)?;
            if p.code.insns.is_empty() {
                return Err(ElfError::EmptyProgram { program: p.name.clone() });
            }
            if let Some(k) = p.code.kfunc_relocs.first() {
                return Err(ElfError::UnsupportedKfunc { program: p.name.clone(), name: k.name.clone() });
            }
        }
        Ok(())
    }
}

/// One executable section: its programs with their byte offsets, and its
/// contents.
struct ProgSection<'a> {
    name: &'a str,
    progs: Vec<(&'a Program, u64)>,
    data: Vec<u8>,
}

/// Adds a `DATASEC` named `name` holding `vars` as `(var, offset, size)`.
fn datasec(btf: &mut Btf, name: &str, vars: &[(TypeId, u32, u32)]) -> TypeId {
    let size = vars.iter().map(|&(_, off, size)| off + size).max().unwrap_or(0);
    let vars = vars.iter().map(|&(var, offset, size)| VarSecInfo { var, offset, size }).collect();
    btf.add(BtfType::DataSec { name: name.into(), size, vars })
}

/// BTF `FUNC` and `VAR` names must be C identifiers (the kernel checks).
fn identifier(what: &'static str, name: &str) -> Result<(), ElfError> {
    let bad = |reason| Err(ElfError::InvalidName { what, name: name.to_string(), reason });
    let mut chars = name.chars();
    match chars.next() {
        None => bad("empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => bad("must start with a letter or `_`"),
        _ if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') => bad("only ASCII letters, digits and `_`"),
        _ if name.len() > 127 => bad("longer than 127 bytes"),
        _ => Ok(()),
    }
}

/// Program sections must not collide with the sections the writer owns.
fn section_name(name: &str) -> Result<(), ElfError> {
    let bad = |reason| Err(ElfError::InvalidName { what: "section", name: name.to_string(), reason });
    if name.is_empty() || name.contains('\0') {
        return bad("empty or contains NUL");
    }
    if name.starts_with('.') || name == "license" || name == "version" || name == "maps" {
        return bad("reserved for data, maps and metadata sections");
    }
    Ok(())
}
