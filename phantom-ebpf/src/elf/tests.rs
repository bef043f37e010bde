//! Structure of written objects, read back with the `object` crate (an
//! independent ELF reader) and our BTF decoders: what `readelf -S -s -r`
//! would show, plus `.BTF` and `.BTF.ext` contents and determinism. The
//! kernel and loader checks are in `tests/elf_kernel.rs`.

use super::btf::{BtfType, VarLinkage};
use super::{btf_ext, btf_read, ElfError, MapDef, ObjectBuilder, Program, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_RINGBUF};
use crate::bpf::{encode, Helper, Insn, Reg::*, SourceLoc};
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SectionKind, SymbolKind};

const POLICY: &str = "version: 1\nnet:\n  allow: dns\n";

fn loc(line: u32) -> SourceLoc {
    SourceLoc::new("p.yaml", line, 3)
}

fn xdp() -> Program {
    let code = encode(&[
        Insn::st_w(R10, -4, 0),
        Insn::mov64_reg(R2, R10),
        Insn::add64_imm(R2, -4),
        Insn::ld_map(R1, "hits").at(loc(3)),
        Insn::call(Helper::MapLookupElem),
        Insn::mov64_imm(R0, 2).at(loc(2)),
        Insn::exit(),
    ])
    .unwrap();
    Program::new("xdp", "pass", code)
}

fn sock(name: &str) -> Program {
    Program::new("cgroup/sock_create", name, encode(&[Insn::mov64_imm(R0, 1).at(loc(3)), Insn::exit()]).unwrap())
}

fn builder() -> ObjectBuilder {
    ObjectBuilder::new("GPL")
        .map(MapDef::new("hits", BPF_MAP_TYPE_ARRAY, 4, 8, 1))
        .map(MapDef::new("events", BPF_MAP_TYPE_RINGBUF, 0, 0, 4096))
        .program(xdp())
        .program(sock("sock_a"))
        .program(sock("sock_b"))
        .source("p.yaml", POLICY)
}

fn section<'a>(file: &'a object::File<'a>, name: &str) -> object::Section<'a, 'a> {
    file.section_by_name(name).unwrap_or_else(|| panic!("section {name} is missing"))
}

#[test]
fn sections_symbols_and_relocations_follow_libbpf_conventions() {
    let bytes = builder().build().unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    assert_eq!(file.architecture(), object::Architecture::Bpf);
    assert!(file.is_little_endian() && file.is_64());
    assert_eq!(file.kind(), object::ObjectKind::Relocatable);

    let names: Vec<&str> = file.sections().map(|s| s.name().unwrap()).collect();
    assert_eq!(
        names,
        [".strtab", "xdp", "cgroup/sock_create", "license", ".maps", ".relxdp", ".BTF", ".BTF.ext", ".symtab"]
    );
    assert_eq!(section(&file, "xdp").kind(), SectionKind::Text);
    assert_eq!(section(&file, "xdp").size(), 8 * 8);
    assert_eq!(section(&file, "cgroup/sock_create").size(), 2 * 2 * 8, "two programs share the section");
    assert_eq!(section(&file, "license").data().unwrap(), b"GPL\0");
    assert_eq!(
        section(&file, ".maps").data().unwrap(),
        [0u8; 32 + 16],
        "hits: 4 members (no flags), events: 2 (no sizes)"
    );

    let sym = |name: &str| file.symbols().find(|s| s.name() == Ok(name)).unwrap_or_else(|| panic!("symbol {name}"));
    for (name, sec, addr, size) in [("pass", "xdp", 0, 64), ("sock_a", "cgroup/sock_create", 0, 16)] {
        let s = sym(name);
        assert_eq!((s.kind(), s.is_global(), s.address(), s.size()), (SymbolKind::Text, true, addr, size));
        assert_eq!(s.section_index(), Some(section(&file, sec).index()));
    }
    assert_eq!(sym("sock_b").address(), 16);
    assert_eq!((sym("_license").kind(), sym("_license").size()), (SymbolKind::Data, 4));
    assert_eq!((sym("hits").address(), sym("hits").size()), (0, 32));
    assert_eq!((sym("events").address(), sym("events").size()), (32, 16));

    let rels: Vec<_> = section(&file, "xdp").relocations().collect();
    assert_eq!(rels.len(), 1);
    let (offset, rel) = &rels[0];
    assert_eq!(*offset, 3 * 8, "the LD_IMM64 of `hits` is the fourth slot");
    assert_eq!(rel.flags(), RelocationFlags::Elf { r_type: super::writer::R_BPF_64_64 });
    assert_eq!(rel.target(), RelocationTarget::Symbol(sym("hits").index()));
    let insn = &section(&file, "xdp").data().unwrap()[24..32];
    assert_eq!((insn[0], insn[1] >> 4, &insn[4..8]), (0x18, 1, &[0u8; 4][..]), "ld_imm64 pseudo-map-fd, imm 0");
}

#[test]
fn btf_declares_programs_maps_and_license() {
    let bytes = builder().build().unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let btf = btf_read::parse(section(&file, ".BTF").data().unwrap()).unwrap();
    let by_name = |name: &str| {
        btf.types
            .iter()
            .find(|t| matches!(t, BtfType::Func { name: n, .. } | BtfType::Var { name: n, .. } | BtfType::DataSec { name: n, .. } if n == name))
            .unwrap_or_else(|| panic!("no BTF type named {name}"))
    };
    let BtfType::Func { proto, .. } = by_name("pass") else { unreachable!() };
    let Some(BtfType::FuncProto { params, .. }) = btf.type_by_id(*proto) else { panic!("FUNC without proto") };
    let Some(BtfType::Ptr { to }) = btf.type_by_id(params[0].ty) else { panic!("ctx is not a pointer") };
    assert!(matches!(btf.type_by_id(*to), Some(BtfType::Struct { name, .. }) if name == "xdp_md"));

    let BtfType::DataSec { size, vars, .. } = by_name(".maps") else { unreachable!() };
    assert_eq!((*size, vars.len(), vars[1].offset, vars[1].size), (48, 2, 32, 16));
    let BtfType::Var { ty, linkage, .. } = by_name("events") else { unreachable!() };
    assert_eq!(*linkage, VarLinkage::GlobalAllocated);
    let Some(BtfType::Struct { members, .. }) = btf.type_by_id(*ty) else { panic!("map def is not a struct") };
    let fields: Vec<(&str, u32)> = members
        .iter()
        .map(|m| {
            let Some(BtfType::Ptr { to }) = btf.type_by_id(m.ty) else { panic!("member is not a pointer") };
            let Some(BtfType::Array { nelems, .. }) = btf.type_by_id(*to) else { panic!("not a pointer to array") };
            (m.name.as_str(), *nelems)
        })
        .collect();
    assert_eq!(fields, [("type", BPF_MAP_TYPE_RINGBUF), ("max_entries", 4096)], "ringbuf: no key/value sizes");
    assert!(matches!(by_name("license"), BtfType::DataSec { size: 4, .. }));
}

#[test]
fn btf_ext_has_func_info_per_program_and_policy_lines() {
    let bytes = builder().build().unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let btf = btf_read::parse(section(&file, ".BTF").data().unwrap()).unwrap();
    let ext = btf_ext::parse(section(&file, ".BTF.ext").data().unwrap()).unwrap();
    let secs: Vec<&str> = ext.funcs.iter().map(|s| btf.string_at(s.sec_name_off).unwrap()).collect();
    assert_eq!(secs, ["xdp", "cgroup/sock_create"]);
    let offs: Vec<u32> = ext.funcs[1].records.iter().map(|r| r.insn_off).collect();
    assert_eq!(offs, [0, 16], "func_info offsets are bytes within the section");

    let xdp: Vec<(u32, &str, &str, u32)> = ext.lines[0]
        .records
        .iter()
        .map(|r| (r.insn_off, btf.string_at(r.file_name_off).unwrap(), btf.string_at(r.line_off).unwrap(), r.line))
        .collect();
    assert_eq!(
        xdp,
        [(0, "p.yaml", "  allow: dns", 3), (24, "p.yaml", "  allow: dns", 3), (48, "p.yaml", "net:", 2)],
        "slot 0 has no position of its own and gets the program's first one"
    );
    assert_eq!(ext.lines[1].records.len(), 2, "one line per sock program");
    assert_eq!(ext.lines[1].records[1].insn_off, 16);
}

#[test]
fn building_twice_gives_identical_bytes() {
    let a = builder().build().unwrap();
    let b = builder().build().unwrap();
    assert_eq!(a, b);
    assert_eq!(a, builder().clone().build().unwrap());
}

#[test]
fn objects_without_maps_or_lines_still_have_btf() {
    let code = encode(&[Insn::mov64_imm(R0, 1), Insn::exit()]).unwrap();
    let bytes = ObjectBuilder::new("Dual MIT/GPL").program(Program::new("cgroup/dev", "dev", code)).build().unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    assert!(file.section_by_name(".maps").is_none());
    assert_eq!(section(&file, "license").data().unwrap(), b"Dual MIT/GPL\0");
    let ext = btf_ext::parse(section(&file, ".BTF.ext").data().unwrap()).unwrap();
    assert_eq!(ext.funcs.len(), 1);
    assert!(ext.lines.is_empty(), "no policy positions, no line_info");
}

#[test]
fn mistakes_are_named_errors() {
    let err = |b: ObjectBuilder| b.build().unwrap_err();
    let unknown = ObjectBuilder::new("GPL").program(xdp());
    assert_eq!(err(unknown), ElfError::UnknownMap { program: "pass".into(), map: "hits".into() });
    let dup = builder().program(sock("sock_a"));
    assert_eq!(err(dup), ElfError::Duplicate { what: "program", name: "sock_a".into() });
    let clash = builder().map(MapDef::new("pass", BPF_MAP_TYPE_ARRAY, 4, 4, 1));
    assert_eq!(err(clash), ElfError::Duplicate { what: "map", name: "pass".into() });
    let license = builder().map(MapDef::new("_license", BPF_MAP_TYPE_ARRAY, 4, 4, 1));
    assert!(matches!(err(license), ElfError::Duplicate { .. }));
    assert!(matches!(err(builder().program(sock("bad-name"))), ElfError::InvalidName { what: "program", .. }));
    let reserved = Program { section: ".maps".into(), ..sock("x") };
    assert!(matches!(err(builder().program(reserved)), ElfError::InvalidName { what: "section", .. }));
    let empty = Program::new("xdp", "nothing", encode(&[]).unwrap());
    assert_eq!(err(builder().program(empty)), ElfError::EmptyProgram { program: "nothing".into() });
    let kfunc = Program::new("xdp", "k", encode(&[Insn::call_kfunc("bpf_foo"), Insn::exit()]).unwrap());
    assert!(matches!(err(builder().program(kfunc)), ElfError::UnsupportedKfunc { .. }));
    assert_eq!(err(ObjectBuilder::new("G\0PL")), ElfError::InvalidLicense);
}

#[test]
fn reading_back_gives_the_programs_relocations_and_lines() {
    let bytes = builder().build().unwrap();
    let obj = super::read::read_object(&bytes).unwrap();
    assert_eq!(obj.license.as_deref(), Some("GPL"));
    assert_eq!(obj.maps, ["hits", "events"]);
    let names: Vec<(&str, &str)> = obj.programs.iter().map(|p| (p.section.as_str(), p.name.as_str())).collect();
    assert_eq!(names, [("xdp", "pass"), ("cgroup/sock_create", "sock_a"), ("cgroup/sock_create", "sock_b")]);
    let (orig, back) = (xdp().code, &obj.programs[0].code);
    assert_eq!(back.insns, orig.insns);
    assert_eq!(back.map_relocs, orig.map_relocs);
    // line_info: the program's own positions, plus slot 0 (see line_records).
    let mut lines = orig.lines.clone();
    lines.insert(0, loc(3));
    assert_eq!(back.lines, lines);
    assert_eq!(
        obj.programs[0].source_lines.get(&6).map(String::as_str),
        Some("net:"),
        "mov r0, 2 follows the two-slot LD_IMM64"
    );
    // The second program of a section: slots and lines relative to its start.
    assert_eq!(obj.programs[2].code.insns, sock("x").code.insns);
    assert_eq!(obj.programs[2].code.lines.keys().copied().collect::<Vec<_>>(), [0]);
}

#[test]
fn reading_malformed_objects_is_an_error_not_a_panic() {
    let bytes = builder().build().unwrap();
    for len in 0..bytes.len() {
        let _ = super::read::read_object(&bytes[..len]);
    }
    for i in (0..bytes.len()).step_by(7) {
        let mut b = bytes.clone();
        b[i] ^= 0xff;
        let _ = super::read::read_object(&b);
    }
    assert!(matches!(super::read::read_object(b"not elf"), Err(ElfError::BadElf(_))));
}

#[test]
fn map_definitions_read_back_from_the_maps_btf() {
    let mut lpm = MapDef::new("trie", 11, 8, 4, 65);
    lpm.flags = 1;
    let bytes = builder().map(lpm.clone()).build().unwrap();
    let parsed = super::read::read_object(&bytes).unwrap();
    assert_eq!(parsed.maps, ["hits", "events", "trie"]);
    assert_eq!(
        parsed.map_defs,
        [
            MapDef::new("hits", BPF_MAP_TYPE_ARRAY, 4, 8, 1),
            MapDef::new("events", BPF_MAP_TYPE_RINGBUF, 0, 0, 4096),
            lpm
        ]
    );
}
