//! A minimal ELF64 little-endian relocatable-object writer for `EM_BPF`.
//!
//! BPF objects need only a handful of ELF features (sections, one symbol
//! table, `SHT_REL` relocations), so writing them directly is shorter than
//! adapting a general writer, and it makes byte-for-byte determinism
//! obvious: the layout is exactly the order in which sections and symbols
//! were added. Section index 1 is `.strtab`, which holds both section and
//! symbol names (as clang does); `.symtab` comes last.

use std::collections::HashMap;

pub const EM_BPF: u16 = 247;
pub const ET_REL: u16 = 1;
pub const SHT_PROGBITS: u32 = 1;
pub const SHT_SYMTAB: u32 = 2;
pub const SHT_STRTAB: u32 = 3;
pub const SHT_REL: u32 = 9;
pub const SHF_WRITE: u64 = 1;
pub const SHF_ALLOC: u64 = 2;
pub const SHF_EXECINSTR: u64 = 4;
pub const SHF_INFO_LINK: u64 = 0x40;
pub const STB_GLOBAL: u8 = 1;
pub const STT_OBJECT: u8 = 1;
pub const STT_FUNC: u8 = 2;
/// `R_BPF_64_64`: a 64-bit immediate (`LD_IMM64`) that receives a symbol's
/// address; libbpf and aya read it as "this instruction loads that map".
pub const R_BPF_64_64: u32 = 1;

const EHDR_SIZE: usize = 64;
const SHDR_SIZE: usize = 64;
const SYM_SIZE: usize = 24;
const REL_SIZE: usize = 16;

/// Index of `.strtab`, fixed so that every section can name it.
const STRTAB_INDEX: usize = 1;

/// A section with its contents.
#[derive(Debug, Clone)]
struct Section {
    name: String,
    sh_type: u32,
    flags: u64,
    align: u64,
    data: Vec<u8>,
    /// For `SHT_REL`: the section the relocations apply to.
    rel_target: Option<usize>,
}

/// A symbol in `.symtab`. Only global symbols are written (Phantom's
/// objects have no local ones), so `sh_info` is always 1.
#[derive(Debug, Clone)]
pub struct Symbol {
    pub name: String,
    pub kind: u8,
    pub section: usize,
    pub value: u64,
    pub size: u64,
}

/// One `Elf64_Rel`: at byte `offset` of the target section, relocation
/// `r_type` against symbol `symbol` (an index returned by
/// [`ElfWriter::symbol`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rel {
    pub offset: u64,
    pub symbol: u32,
    pub r_type: u32,
}

#[derive(Debug, Default)]
pub struct ElfWriter {
    sections: Vec<Section>,
    symbols: Vec<Symbol>,
}

impl ElfWriter {
    pub fn new() -> ElfWriter {
        ElfWriter::default()
    }

    /// Adds a section and returns its ELF section index.
    pub fn section(&mut self, name: &str, sh_type: u32, flags: u64, align: u64, data: Vec<u8>) -> usize {
        self.sections.push(Section { name: name.to_string(), sh_type, flags, align, data, rel_target: None });
        self.sections.len() + STRTAB_INDEX
    }

    /// Adds `.rel<target name>` with `rels` against section `target`.
    pub fn rel_section(&mut self, target: usize, rels: &[Rel]) -> usize {
        let name = format!(".rel{}", self.sections[target - STRTAB_INDEX - 1].name);
        let mut data = Vec::with_capacity(rels.len() * REL_SIZE);
        for r in rels {
            data.extend_from_slice(&r.offset.to_le_bytes());
            data.extend_from_slice(&((u64::from(r.symbol) << 32) | u64::from(r.r_type)).to_le_bytes());
        }
        let idx = self.section(&name, SHT_REL, SHF_INFO_LINK, 8, data);
        self.sections[idx - STRTAB_INDEX - 1].rel_target = Some(target);
        idx
    }

    /// Adds a global symbol and returns its symbol index.
    pub fn symbol(&mut self, sym: Symbol) -> u32 {
        self.symbols.push(sym);
        self.symbols.len() as u32
    }

    /// Lays out and serialises the object.
    pub fn finish(self) -> Vec<u8> {
        let symtab_index = self.sections.len() + STRTAB_INDEX + 1;
        let mut strtab = Strtab::default();
        let names: Vec<u32> = self.sections.iter().map(|s| strtab.add(&s.name)).collect();
        let (strtab_name, symtab_name) = (strtab.add(".strtab"), strtab.add(".symtab"));
        let mut symtab = vec![0u8; SYM_SIZE];
        for s in &self.symbols {
            symtab.extend_from_slice(&strtab.add(&s.name).to_le_bytes());
            symtab.push((STB_GLOBAL << 4) | s.kind);
            symtab.push(0); // STV_DEFAULT: libbpf rejects hidden programs
            symtab.extend_from_slice(&(s.section as u16).to_le_bytes());
            symtab.extend_from_slice(&s.value.to_le_bytes());
            symtab.extend_from_slice(&s.size.to_le_bytes());
        }

        // Section headers in index order, after the null section.
        let mut all = Vec::with_capacity(self.sections.len() + 2);
        all.push(Shdr {
            name: strtab_name,
            sh_type: SHT_STRTAB,
            flags: 0,
            align: 1,
            data: &strtab.bytes,
            ..Shdr::default()
        });
        for (s, &name) in self.sections.iter().zip(&names) {
            let (link, info, entsize) = match s.rel_target {
                Some(target) => (symtab_index as u32, target as u32, REL_SIZE as u64),
                None => (0, 0, 0),
            };
            let (sh_type, flags, align, data) = (s.sh_type, s.flags, s.align, s.data.as_slice());
            all.push(Shdr { name, sh_type, flags, align, data, link, info, entsize });
        }
        let (link, entsize) = (STRTAB_INDEX as u32, SYM_SIZE as u64);
        all.push(Shdr {
            name: symtab_name,
            sh_type: SHT_SYMTAB,
            align: 8,
            data: &symtab,
            link,
            info: 1,
            entsize,
            flags: 0,
        });

        let mut body = vec![0u8; EHDR_SIZE];
        let mut offsets = Vec::with_capacity(all.len());
        for h in &all {
            pad_to(&mut body, h.align.max(1) as usize);
            offsets.push(body.len() as u64);
            body.extend_from_slice(h.data);
        }
        pad_to(&mut body, 8);
        let shoff = body.len() as u64;
        body.extend_from_slice(&[0u8; SHDR_SIZE]); // the null section
        for (h, &off) in all.iter().zip(&offsets) {
            body.extend_from_slice(&h.name.to_le_bytes());
            body.extend_from_slice(&h.sh_type.to_le_bytes());
            body.extend_from_slice(&h.flags.to_le_bytes());
            body.extend_from_slice(&0u64.to_le_bytes()); // sh_addr
            body.extend_from_slice(&off.to_le_bytes());
            body.extend_from_slice(&(h.data.len() as u64).to_le_bytes());
            body.extend_from_slice(&h.link.to_le_bytes());
            body.extend_from_slice(&h.info.to_le_bytes());
            body.extend_from_slice(&h.align.to_le_bytes());
            body.extend_from_slice(&h.entsize.to_le_bytes());
        }
        let header = elf_header(shoff, (all.len() + 1) as u16);
        body[..EHDR_SIZE].copy_from_slice(&header);
        body
    }
}

/// A section header with the section's contents.
#[derive(Debug, Default)]
struct Shdr<'a> {
    name: u32,
    sh_type: u32,
    flags: u64,
    align: u64,
    data: &'a [u8],
    link: u32,
    info: u32,
    entsize: u64,
}

fn pad_to(buf: &mut Vec<u8>, align: usize) {
    let rem = buf.len() % align;
    if rem != 0 {
        buf.resize(buf.len() + align - rem, 0);
    }
}

fn elf_header(shoff: u64, shnum: u16) -> [u8; EHDR_SIZE] {
    let mut h = [0u8; EHDR_SIZE];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // ELFDATA2LSB
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&ET_REL.to_le_bytes());
    h[18..20].copy_from_slice(&EM_BPF.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes()); // e_version
    h[40..48].copy_from_slice(&shoff.to_le_bytes());
    h[52..54].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes()); // e_ehsize
    h[58..60].copy_from_slice(&(SHDR_SIZE as u16).to_le_bytes()); // e_shentsize
    h[60..62].copy_from_slice(&shnum.to_le_bytes());
    h[62..64].copy_from_slice(&(STRTAB_INDEX as u16).to_le_bytes()); // e_shstrndx
    h
}

/// `.strtab`: each name once, offset 0 the empty name.
#[derive(Debug)]
struct Strtab {
    bytes: Vec<u8>,
    offsets: HashMap<String, u32>,
}

impl Default for Strtab {
    fn default() -> Self {
        Strtab { bytes: vec![0], offsets: HashMap::new() }
    }
}

impl Strtab {
    fn add(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&off) = self.offsets.get(s) {
            return off;
        }
        let off = self.bytes.len() as u32;
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        self.offsets.insert(s.to_string(), off);
        off
    }
}
