//! CO-RE field relocations (`.BTF.ext` core_relo, kind
//! `BPF_CORE_FIELD_BYTE_OFFSET`): an instruction that reads a kernel
//! struct member carries the member's offset in a *local* struct
//! definition written to `.BTF`; the loader (libbpf, aya) finds the member
//! by name in the running kernel's BTF and rewrites the offset (a load's
//! `off`, an ALU instruction's `imm`). Loaders check that the instruction
//! holds the local offset before rewriting it.
//!
//! Local structs are minimal: the members the programs read, at the
//! offsets the caller chose, with a type of the right kind (the loaders
//! check kinds: integer, pointer, struct by name).

use super::btf::{Btf, BtfType, IntEncoding, Member, TypeId};
use std::collections::BTreeMap;

/// `BPF_CORE_FIELD_BYTE_OFFSET`.
pub const FIELD_BYTE_OFFSET: u32 = 0;
pub const CORE_RELO_REC_SIZE: u32 = 16;

/// The kind of a relocated member's type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberKind {
    /// An unsigned integer of this many bytes.
    Int(u32),
    /// Any pointer.
    Ptr,
    /// A struct, matched by name; `size` bytes locally.
    Struct { name: String, size: u32 },
}

/// One relocated read: instruction `slot` (8-byte slots from the start of
/// the program) uses `member` of `struct strukt`, at `local_offset` in the
/// local definition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CoreField {
    pub slot: usize,
    pub strukt: String,
    pub member: String,
    pub kind: MemberKind,
    pub local_offset: u32,
}

/// `struct bpf_core_relo`; offsets are into the `.BTF` strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreRecord {
    pub insn_off: u32,
    pub type_id: u32,
    pub access_str_off: u32,
    pub kind: u32,
}

/// The local struct definitions of a set of relocations, added to `btf`
/// once per struct name; returns each struct's type id and its member
/// names in member-index order.
#[derive(Debug, Default)]
pub struct LocalStructs {
    structs: BTreeMap<String, (TypeId, Vec<String>)>,
}

impl LocalStructs {
    /// Defines every struct the relocations name.
    pub fn define(btf: &mut Btf, fields: &[&CoreField]) -> LocalStructs {
        let mut members: BTreeMap<&str, BTreeMap<u32, (&str, &MemberKind)>> = BTreeMap::new();
        for f in fields {
            members.entry(&f.strukt).or_default().insert(f.local_offset, (&f.member, &f.kind));
        }
        let mut out = LocalStructs::default();
        for (strukt, by_off) in members {
            let mut ms = Vec::new();
            let mut names = Vec::new();
            let mut size = 0;
            for (off, (name, kind)) in by_off {
                let (ty, len) = member_type(btf, kind);
                ms.push(Member { name: name.to_string(), ty, bit_offset: off * 8 });
                names.push(name.to_string());
                size = size.max(off + len);
            }
            let id = btf.add(BtfType::Struct { name: strukt.to_string(), size: size.next_multiple_of(8), members: ms });
            out.structs.insert(strukt.to_string(), (id, names));
        }
        out
    }

    /// The relocation record of `f` at byte `insn_off` of its section.
    pub fn record(&self, btf: &mut Btf, f: &CoreField, insn_off: u32) -> CoreRecord {
        let (type_id, names) = &self.structs[&f.strukt];
        let index = names.iter().position(|n| *n == f.member).expect("defined above");
        let access_str_off = btf.string(&format!("0:{index}"));
        CoreRecord { insn_off, type_id: *type_id, access_str_off, kind: FIELD_BYTE_OFFSET }
    }
}

fn member_type(btf: &mut Btf, kind: &MemberKind) -> (TypeId, u32) {
    match kind {
        MemberKind::Int(size) => {
            let name = match size {
                1 => "unsigned char",
                2 => "unsigned short",
                4 => "unsigned int",
                _ => "long long unsigned int",
            };
            (
                btf.add(BtfType::Int {
                    name: name.into(),
                    size: *size,
                    encoding: IntEncoding::Unsigned,
                    bits: size * 8,
                }),
                *size,
            )
        }
        MemberKind::Ptr => {
            (btf.add(BtfType::Ptr { to: 0 }), 8) // void *
        }
        MemberKind::Struct { name, size } => {
            (btf.add(BtfType::Struct { name: name.clone(), size: *size, members: Vec::new() }), *size)
        }
    }
}
