//! A BTF encoder: the type table of `.BTF`.
//!
//! BTF is what lets libbpf and aya find BTF-defined maps in `.maps`, and
//! what lets the kernel attach `func_info` and `line_info` (policy lines)
//! to a loaded program. Only the kinds Phantom's objects need are
//! supported. Types are deduplicated structurally (adding the same type
//! twice returns the first id) and strings are interned once each, so a
//! table built in the same order always serialises to the same bytes.
//!
//! Layout (`include/uapi/linux/btf.h`): a 24-byte header, the type
//! section (each type a 12-byte `struct btf_type` plus kind-specific
//! data), then the string section, which starts with the empty string.

use std::collections::HashMap;

pub const BTF_MAGIC: u16 = 0xEB9F;
pub const BTF_VERSION: u8 = 1;
pub const HEADER_LEN: u32 = 24;

pub const KIND_INT: u32 = 1;
pub const KIND_PTR: u32 = 2;
pub const KIND_ARRAY: u32 = 3;
pub const KIND_STRUCT: u32 = 4;
pub const KIND_FWD: u32 = 7;
pub const KIND_FUNC: u32 = 12;
pub const KIND_FUNC_PROTO: u32 = 13;
pub const KIND_VAR: u32 = 14;
pub const KIND_DATASEC: u32 = 15;

/// A type id: 0 is `void`, real types count from 1 in insertion order.
pub type TypeId = u32;

/// `BTF_INT_SIGNED` and friends: how an integer is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntEncoding {
    Unsigned = 0,
    Signed = 1,
    Char = 2,
    Bool = 4,
}

/// `BTF_FUNC_STATIC` / `BTF_FUNC_GLOBAL`: programs are global, as clang
/// emits them (libbpf refuses static entry points).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FuncLinkage {
    Static = 0,
    Global = 1,
}

/// `BTF_VAR_STATIC` / `BTF_VAR_GLOBAL_ALLOCATED`: libbpf requires maps in
/// `.maps` to be global allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VarLinkage {
    Static = 0,
    GlobalAllocated = 1,
}

/// A struct member; `bit_offset` counts bits from the struct's start.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    pub name: String,
    pub ty: TypeId,
    pub bit_offset: u32,
}

/// A function parameter; the kernel requires every one to be named.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Param {
    pub name: String,
    pub ty: TypeId,
}

/// One variable placed in a data section (`struct btf_var_secinfo`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VarSecInfo {
    pub var: TypeId,
    pub offset: u32,
    pub size: u32,
}

/// One BTF type. Names are kept as strings (an empty string is "no name");
/// offsets into the string section exist only in the encoded form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BtfType {
    Int {
        name: String,
        size: u32,
        encoding: IntEncoding,
        bits: u32,
    },
    Ptr {
        to: TypeId,
    },
    Array {
        elem: TypeId,
        index: TypeId,
        nelems: u32,
    },
    /// `name` empty for an anonymous struct (map definitions are).
    Struct {
        name: String,
        size: u32,
        members: Vec<Member>,
    },
    /// A forward declaration `struct name;` (`union` for `union name;`).
    Fwd {
        name: String,
        union: bool,
    },
    FuncProto {
        ret: TypeId,
        params: Vec<Param>,
    },
    Func {
        name: String,
        proto: TypeId,
        linkage: FuncLinkage,
    },
    Var {
        name: String,
        ty: TypeId,
        linkage: VarLinkage,
    },
    DataSec {
        name: String,
        size: u32,
        vars: Vec<VarSecInfo>,
    },
}

impl BtfType {
    /// The `BTF_KIND_*` number.
    pub fn kind(&self) -> u32 {
        match self {
            BtfType::Int { .. } => KIND_INT,
            BtfType::Ptr { .. } => KIND_PTR,
            BtfType::Array { .. } => KIND_ARRAY,
            BtfType::Struct { .. } => KIND_STRUCT,
            BtfType::Fwd { .. } => KIND_FWD,
            BtfType::FuncProto { .. } => KIND_FUNC_PROTO,
            BtfType::Func { .. } => KIND_FUNC,
            BtfType::Var { .. } => KIND_VAR,
            BtfType::DataSec { .. } => KIND_DATASEC,
        }
    }
}

/// The string section: NUL-terminated strings, each stored once, offset
/// 0 being the empty string.
#[derive(Debug, Clone)]
pub struct StringTable {
    bytes: Vec<u8>,
    offsets: HashMap<String, u32>,
}

impl Default for StringTable {
    fn default() -> Self {
        StringTable { bytes: vec![0], offsets: HashMap::from([(String::new(), 0)]) }
    }
}

impl StringTable {
    /// The offset of `s`, adding it on first use. `s` must not contain NUL
    /// (callers validate names before they get here).
    pub fn intern(&mut self, s: &str) -> u32 {
        debug_assert!(!s.contains('\0'), "BTF string with NUL: {s:?}");
        if let Some(&off) = self.offsets.get(s) {
            return off;
        }
        let off = self.bytes.len() as u32;
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        self.offsets.insert(s.to_string(), off);
        off
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A BTF type table under construction.
#[derive(Debug, Clone, Default)]
pub struct Btf {
    types: Vec<BtfType>,
    ids: HashMap<BtfType, TypeId>,
    strings: StringTable,
}

impl Btf {
    pub fn new() -> Btf {
        Btf::default()
    }

    /// Adds `t` (or finds an identical type added before) and returns its
    /// id. Its names are interned now, so string offsets follow the order
    /// in which types were added.
    pub fn add(&mut self, t: BtfType) -> TypeId {
        if let Some(&id) = self.ids.get(&t) {
            return id;
        }
        for name in names(&t) {
            self.strings.intern(name);
        }
        self.types.push(t.clone());
        let id = self.types.len() as TypeId;
        self.ids.insert(t, id);
        id
    }

    /// Interns a string that no type names, such as the file names and
    /// source lines that `.BTF.ext` line_info points at.
    pub fn string(&mut self, s: &str) -> u32 {
        self.strings.intern(s)
    }

    /// The types in id order (`types()[0]` has id 1).
    pub fn types(&self) -> &[BtfType] {
        &self.types
    }

    /// Serialises header, types and strings.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut strings = self.strings.clone();
        let mut types = Vec::new();
        for t in &self.types {
            encode_type(t, &mut strings, &mut types);
        }
        let strs = strings.bytes();
        let mut out = Vec::with_capacity(HEADER_LEN as usize + types.len() + strs.len());
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.push(BTF_VERSION);
        out.push(0); // flags
        put(&mut out, HEADER_LEN);
        put(&mut out, 0); // type_off
        put(&mut out, types.len() as u32);
        put(&mut out, types.len() as u32); // str_off
        put(&mut out, strs.len() as u32);
        out.extend_from_slice(&types);
        out.extend_from_slice(strs);
        out
    }
}

/// Every name a type carries, in encoding order.
fn names(t: &BtfType) -> Vec<&str> {
    match t {
        BtfType::Int { name, .. }
        | BtfType::Fwd { name, .. }
        | BtfType::Func { name, .. }
        | BtfType::Var { name, .. }
        | BtfType::DataSec { name, .. } => vec![name],
        BtfType::Struct { name, members, .. } => {
            std::iter::once(name.as_str()).chain(members.iter().map(|m| m.name.as_str())).collect()
        }
        BtfType::FuncProto { params, .. } => params.iter().map(|p| p.name.as_str()).collect(),
        BtfType::Ptr { .. } | BtfType::Array { .. } => Vec::new(),
    }
}

fn put(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// `struct btf_type`: name_off, info (vlen | kind << 24 | kind_flag << 31),
/// size or type.
fn header(out: &mut Vec<u8>, name_off: u32, kind: u32, vlen: usize, kind_flag: bool, size_or_type: u32) {
    put(out, name_off);
    put(out, (vlen as u32 & 0xffff) | (kind << 24) | (u32::from(kind_flag) << 31));
    put(out, size_or_type);
}

fn encode_type(t: &BtfType, s: &mut StringTable, out: &mut Vec<u8>) {
    let kind = t.kind();
    match t {
        BtfType::Int { name, size, encoding, bits } => {
            header(out, s.intern(name), kind, 0, false, *size);
            put(out, ((*encoding as u32) << 24) | (bits & 0xff));
        }
        BtfType::Ptr { to } => header(out, 0, kind, 0, false, *to),
        BtfType::Array { elem, index, nelems } => {
            header(out, 0, kind, 0, false, 0);
            put(out, *elem);
            put(out, *index);
            put(out, *nelems);
        }
        BtfType::Struct { name, size, members } => {
            header(out, s.intern(name), kind, members.len(), false, *size);
            for m in members {
                put(out, s.intern(&m.name));
                put(out, m.ty);
                put(out, m.bit_offset);
            }
        }
        BtfType::Fwd { name, union } => header(out, s.intern(name), kind, 0, *union, 0),
        BtfType::FuncProto { ret, params } => {
            header(out, 0, kind, params.len(), false, *ret);
            for p in params {
                put(out, s.intern(&p.name));
                put(out, p.ty);
            }
        }
        BtfType::Func { name, proto, linkage } => header(out, s.intern(name), kind, *linkage as usize, false, *proto),
        BtfType::Var { name, ty, linkage } => {
            header(out, s.intern(name), kind, 0, false, *ty);
            put(out, *linkage as u32);
        }
        BtfType::DataSec { name, size, vars } => {
            header(out, s.intern(name), kind, vars.len(), false, *size);
            for v in vars {
                put(out, v.var);
                put(out, v.offset);
                put(out, v.size);
            }
        }
    }
}
