//! A BTF reader for the kinds [`btf`](super::btf) writes: the other half
//! of the encoder's round-trip tests, and a way for tools and tests to
//! look at the `.BTF` of an object Phantom wrote (for example to resolve
//! the file and line strings that `.BTF.ext` line_info points at).

use super::btf::{
    BtfType, FuncLinkage, IntEncoding, Member, Param, TypeId, VarLinkage, VarSecInfo, BTF_MAGIC, KIND_ARRAY,
    KIND_DATASEC, KIND_FUNC, KIND_FUNC_PROTO, KIND_FWD, KIND_INT, KIND_PTR, KIND_STRUCT, KIND_VAR,
};
use super::ElfError;

/// A decoded `.BTF` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedBtf {
    /// In id order: `types[0]` has id 1.
    pub types: Vec<BtfType>,
    pub strings: Vec<u8>,
}

impl ParsedBtf {
    /// The string at `off` in the string section.
    pub fn string_at(&self, off: u32) -> Result<&str, ElfError> {
        let bad = || ElfError::BadBtf(format!("string offset {off} out of range"));
        let rest = self.strings.get(off as usize..).ok_or_else(bad)?;
        let end = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
        std::str::from_utf8(&rest[..end]).map_err(|_| ElfError::BadBtf(format!("string at {off} is not UTF-8")))
    }

    /// The type with id `id` (not `void`).
    pub fn type_by_id(&self, id: TypeId) -> Option<&BtfType> {
        self.types.get((id as usize).checked_sub(1)?)
    }
}

/// Little-endian cursor over a byte slice; running off the end is an error.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn u32(&mut self) -> Result<u32, ElfError> {
        let b = self
            .data
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| ElfError::BadBtf(format!("truncated at byte {}", self.pos)))?;
        self.pos += 4;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Decodes a `.BTF` section (little-endian).
pub fn parse(data: &[u8]) -> Result<ParsedBtf, ElfError> {
    if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
        return Err(ElfError::BadBtf("missing BTF magic".into()));
    }
    let mut c = Cursor { data, pos: 4 };
    let hdr_len = c.u32()? as usize;
    let (type_off, type_len, str_off, str_len) = (c.u32()?, c.u32()?, c.u32()?, c.u32()?);
    let slice = |off: u32, len: u32| {
        data.get(hdr_len + off as usize..hdr_len + off as usize + len as usize)
            .ok_or_else(|| ElfError::BadBtf("section out of range".into()))
    };
    let type_bytes = slice(type_off, type_len)?;
    let strings = slice(str_off, str_len)?.to_vec();
    let mut btf = ParsedBtf { types: Vec::new(), strings };
    let mut c = Cursor { data: type_bytes, pos: 0 };
    while c.pos < type_bytes.len() {
        let t = parse_type(&mut c, &btf)?;
        btf.types.push(t);
    }
    Ok(btf)
}

fn parse_type(c: &mut Cursor<'_>, btf: &ParsedBtf) -> Result<BtfType, ElfError> {
    let name = btf.string_at(c.u32()?)?.to_string();
    let info = c.u32()?;
    let size_or_type = c.u32()?;
    let (vlen, kind, kind_flag) = (info & 0xffff, (info >> 24) & 0x1f, info >> 31 == 1);
    let named = |c: &mut Cursor<'_>| -> Result<(String, u32), ElfError> {
        Ok((btf.string_at(c.u32()?)?.to_string(), c.u32()?))
    };
    Ok(match kind {
        KIND_INT => {
            let v = c.u32()?;
            let encoding = match v >> 24 {
                0 => IntEncoding::Unsigned,
                1 => IntEncoding::Signed,
                2 => IntEncoding::Char,
                4 => IntEncoding::Bool,
                e => return Err(ElfError::BadBtf(format!("INT encoding {e}"))),
            };
            BtfType::Int { name, size: size_or_type, encoding, bits: v & 0xff }
        }
        KIND_PTR => BtfType::Ptr { to: size_or_type },
        KIND_ARRAY => BtfType::Array { elem: c.u32()?, index: c.u32()?, nelems: c.u32()? },
        KIND_STRUCT => {
            let mut members = Vec::new();
            for _ in 0..vlen {
                let (name, ty) = named(c)?;
                members.push(Member { name, ty, bit_offset: c.u32()? });
            }
            BtfType::Struct { name, size: size_or_type, members }
        }
        KIND_FWD => BtfType::Fwd { name, union: kind_flag },
        KIND_FUNC_PROTO => {
            let mut params = Vec::new();
            for _ in 0..vlen {
                let (name, ty) = named(c)?;
                params.push(Param { name, ty });
            }
            BtfType::FuncProto { ret: size_or_type, params }
        }
        KIND_FUNC => {
            let linkage = if vlen == 0 { FuncLinkage::Static } else { FuncLinkage::Global };
            BtfType::Func { name, proto: size_or_type, linkage }
        }
        KIND_VAR => {
            let linkage = if c.u32()? == 0 { VarLinkage::Static } else { VarLinkage::GlobalAllocated };
            BtfType::Var { name, ty: size_or_type, linkage }
        }
        KIND_DATASEC => {
            let mut vars = Vec::new();
            for _ in 0..vlen {
                vars.push(VarSecInfo { var: c.u32()?, offset: c.u32()?, size: c.u32()? });
            }
            BtfType::DataSec { name, size: size_or_type, vars }
        }
        k => return Err(ElfError::BadBtf(format!("kind {k} is not one Phantom writes"))),
    })
}

#[cfg(test)]
mod tests {
    use super::super::btf::*;
    use super::*;

    fn sample() -> Btf {
        let mut b = Btf::new();
        let int = b.add(BtfType::Int { name: "int".into(), size: 4, encoding: IntEncoding::Signed, bits: 32 });
        let arr = b.add(BtfType::Array { elem: int, index: int, nelems: 2 });
        let ptr = b.add(BtfType::Ptr { to: arr });
        let def = b.add(BtfType::Struct {
            name: String::new(),
            size: 8,
            members: vec![Member { name: "type".into(), ty: ptr, bit_offset: 0 }],
        });
        let var = b.add(BtfType::Var { name: "m".into(), ty: def, linkage: VarLinkage::GlobalAllocated });
        b.add(BtfType::DataSec { name: ".maps".into(), size: 8, vars: vec![VarSecInfo { var, offset: 0, size: 8 }] });
        let fwd = b.add(BtfType::Fwd { name: "xdp_md".into(), union: false });
        let ctx = b.add(BtfType::Ptr { to: fwd });
        let proto = b.add(BtfType::FuncProto { ret: int, params: vec![Param { name: "ctx".into(), ty: ctx }] });
        b.add(BtfType::Func { name: "prog".into(), proto, linkage: FuncLinkage::Global });
        b
    }

    #[test]
    fn round_trip_every_kind() {
        let b = sample();
        let parsed = parse(&b.to_bytes()).unwrap();
        assert_eq!(parsed.types, b.types());
        assert_eq!(parsed.types.len(), 10);
    }

    #[test]
    fn identical_types_and_strings_are_stored_once() {
        let mut b = sample();
        let n = b.types().len();
        let before = b.to_bytes();
        let int = b.add(BtfType::Int { name: "int".into(), size: 4, encoding: IntEncoding::Signed, bits: 32 });
        assert_eq!(int, 1);
        assert_eq!(b.add(BtfType::Ptr { to: 2 }), 3);
        assert_eq!(b.types().len(), n);
        assert_eq!(b.string("xdp_md"), b.string("xdp_md"));
        assert_eq!(b.to_bytes(), before, "re-adding known types and strings changes nothing");
        let parsed = parse(&before).unwrap();
        assert_eq!(parsed.strings.iter().filter(|&&c| c == 0).count(), 8, "{:?}", parsed.strings);
    }

    #[test]
    fn header_and_string_section_are_what_the_kernel_checks() {
        let bytes = sample().to_bytes();
        assert_eq!(&bytes[..4], &[0x9f, 0xeb, 1, 0], "magic 0xeB9F LE, version 1, flags 0");
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        assert_eq!(word(4), 24, "hdr_len");
        assert_eq!(word(8), 0, "type_off");
        assert_eq!(word(16), word(12), "str_off follows the types");
        assert_eq!(24 + word(16) + word(20), bytes.len() as u32);
        let strings = &bytes[(24 + word(16)) as usize..];
        assert_eq!(strings.first(), Some(&0), "string section starts with the empty string");
        assert_eq!(strings.last(), Some(&0), "and ends with a NUL");
        assert_eq!(word(12) % 4, 0, "type section is 4-byte aligned");
    }

    #[test]
    fn type_ids_count_from_one() {
        let b = sample();
        let parsed = parse(&b.to_bytes()).unwrap();
        assert!(matches!(parsed.type_by_id(1), Some(BtfType::Int { .. })));
        assert!(parsed.type_by_id(0).is_none(), "id 0 is void");
        assert_eq!(parsed.string_at(0).unwrap(), "");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(&[0u8; 10]).is_err());
        let mut bytes = sample().to_bytes();
        bytes.truncate(40);
        assert!(parse(&bytes).is_err());
    }
}
