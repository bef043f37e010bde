//! `.BTF.ext`: func_info and line_info, per program section.
//!
//! func_info gives each program its BTF `FUNC` (name and prototype);
//! line_info maps instructions to source positions, which for Phantom are
//! lines of the policy file, so that `bpftool prog dump xlated linum` and
//! verifier logs show the policy line an instruction implements. In the
//! object file, instruction offsets are in bytes from the start of the
//! section (libbpf and aya divide by 8 when loading). CO-RE field
//! relocations are written for programs that carry them ([`super::core`]).

use super::ElfError;

pub const BTF_EXT_HEADER_LEN: u32 = 32;
pub const FUNC_INFO_REC_SIZE: u32 = 8;
pub const LINE_INFO_REC_SIZE: u32 = 16;
/// The kernel packs line and column into one word: column in the low 10
/// bits, line in the upper 22.
pub const MAX_COL: u32 = (1 << 10) - 1;
pub const MAX_LINE: u32 = (1 << 22) - 1;

/// `struct bpf_func_info` with the byte offset of the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuncRecord {
    pub insn_off: u32,
    pub type_id: u32,
}

/// `struct bpf_line_info`; the offsets are into the `.BTF` strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRecord {
    pub insn_off: u32,
    pub file_name_off: u32,
    pub line_off: u32,
    pub line: u32,
    pub col: u32,
}

impl LineRecord {
    /// `line_col`, with line and column clamped to what the kernel can hold.
    pub fn line_col(&self) -> u32 {
        (self.line.min(MAX_LINE) << 10) | self.col.min(MAX_COL)
    }
}

/// The records of one ELF section; `sec_name_off` is the section's name in
/// the `.BTF` strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtSection<R> {
    pub sec_name_off: u32,
    pub records: Vec<R>,
}

/// Serialises header, func_info and line_info. Sections without records
/// are left out: libbpf rejects an info block with `num_info` = 0.
pub fn encode(funcs: &[ExtSection<FuncRecord>], lines: &[ExtSection<LineRecord>]) -> Vec<u8> {
    encode_with_core(funcs, lines, &[])
}

/// [`encode`] plus CO-RE relocations ([`super::core`]).
pub fn encode_with_core(
    funcs: &[ExtSection<FuncRecord>],
    lines: &[ExtSection<LineRecord>],
    core: &[ExtSection<super::core::CoreRecord>],
) -> Vec<u8> {
    let core_blob = blob(super::core::CORE_RELO_REC_SIZE, core, |r, out| {
        put(out, r.insn_off);
        put(out, r.type_id);
        put(out, r.access_str_off);
        put(out, r.kind);
    });
    let func_blob = blob(FUNC_INFO_REC_SIZE, funcs, |r, out| {
        put(out, r.insn_off);
        put(out, r.type_id);
    });
    let line_blob = blob(LINE_INFO_REC_SIZE, lines, |r, out| {
        put(out, r.insn_off);
        put(out, r.file_name_off);
        put(out, r.line_off);
        put(out, r.line_col());
    });
    let mut out = Vec::new();
    out.extend_from_slice(&super::btf::BTF_MAGIC.to_le_bytes());
    out.push(1); // version
    out.push(0); // flags
    put(&mut out, BTF_EXT_HEADER_LEN);
    put(&mut out, 0); // func_info_off
    put(&mut out, func_blob.len() as u32);
    put(&mut out, func_blob.len() as u32); // line_info_off
    put(&mut out, line_blob.len() as u32);
    put(&mut out, (func_blob.len() + line_blob.len()) as u32); // core_relo_off
    put(&mut out, core_blob.len() as u32); // core_relo_len
    out.extend_from_slice(&func_blob);
    out.extend_from_slice(&line_blob);
    out.extend_from_slice(&core_blob);
    out
}

fn put(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// `rec_size`, then per section `sec_name_off`, `num_info` and the records.
fn blob<R>(rec_size: u32, secs: &[ExtSection<R>], write: impl Fn(&R, &mut Vec<u8>)) -> Vec<u8> {
    let secs: Vec<_> = secs.iter().filter(|s| !s.records.is_empty()).collect();
    if secs.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    put(&mut out, rec_size);
    for s in secs {
        put(&mut out, s.sec_name_off);
        put(&mut out, s.records.len() as u32);
        for r in &s.records {
            write(r, &mut out);
        }
    }
    out
}

/// A decoded `.BTF.ext` (func_info and line_info only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedBtfExt {
    pub funcs: Vec<ExtSection<FuncRecord>>,
    pub lines: Vec<ExtSection<LineRecord>>,
}

/// Decodes what [`encode`] writes, for tests and tools.
pub fn parse(data: &[u8]) -> Result<ParsedBtfExt, ElfError> {
    let word = |i: usize| word(data, i);
    if data.len() < 24 || data[..2] != super::btf::BTF_MAGIC.to_le_bytes() {
        return Err(ElfError::BadBtf(".BTF.ext: missing magic".into()));
    }
    let hdr = word(4)? as usize;
    let (foff, flen, loff, llen) = (word(8)? as usize, word(12)? as usize, word(16)? as usize, word(20)? as usize);
    let funcs = sections(data, hdr + foff, flen, |p| Ok(FuncRecord { insn_off: word(p)?, type_id: word(p + 4)? }))?;
    let lines = sections(data, hdr + loff, llen, |p| {
        let line_col = word(p + 12)?;
        Ok(LineRecord {
            insn_off: word(p)?,
            file_name_off: word(p + 4)?,
            line_off: word(p + 8)?,
            line: line_col >> 10,
            col: line_col & MAX_COL,
        })
    })?;
    Ok(ParsedBtfExt { funcs, lines })
}

fn word(data: &[u8], i: usize) -> Result<u32, ElfError> {
    let b = data.get(i..i + 4).ok_or_else(|| ElfError::BadBtf(format!(".BTF.ext truncated at {i}")))?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Walks one info block: `rec_size`, then sections of `num_info` records,
/// each decoded by `record` from its byte position.
fn sections<R>(
    data: &[u8],
    start: usize,
    len: usize,
    record: impl Fn(usize) -> Result<R, ElfError>,
) -> Result<Vec<ExtSection<R>>, ElfError> {
    let word = |i: usize| word(data, i);
    let mut out = Vec::new();
    if len == 0 {
        return Ok(out);
    }
    let size = word(start)? as usize;
    let mut p = start + 4;
    while p < start + len {
        let (sec_name_off, n) = (word(p)?, word(p + 4)? as usize);
        p += 8;
        let mut records = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            records.push(record(p)?);
            p += size;
        }
        out.push(ExtSection { sec_name_off, records });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let funcs = vec![
            ExtSection { sec_name_off: 5, records: vec![FuncRecord { insn_off: 0, type_id: 7 }] },
            ExtSection { sec_name_off: 9, records: vec![] },
        ];
        let lines = vec![ExtSection {
            sec_name_off: 5,
            records: vec![
                LineRecord { insn_off: 0, file_name_off: 1, line_off: 2, line: 3, col: 4 },
                LineRecord { insn_off: 16, file_name_off: 1, line_off: 3, line: 4, col: 1 },
            ],
        }];
        let bytes = encode(&funcs, &lines);
        // header 32 + func blob (4 + 8 + 8) + line blob (4 + 8 + 2 * 16)
        assert_eq!(bytes.len(), 32 + 20 + 44);
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.funcs, funcs[..1].to_vec(), "the empty section is left out");
        assert_eq!(parsed.lines, lines);
    }

    #[test]
    fn line_col_packs_and_clamps() {
        let r = LineRecord { insn_off: 0, file_name_off: 0, line_off: 0, line: 12, col: 5 };
        assert_eq!(r.line_col(), (12 << 10) | 5);
        let r = LineRecord { col: 5000, line: u32::MAX, ..r };
        assert_eq!(r.line_col(), (MAX_LINE << 10) | MAX_COL);
    }

    #[test]
    fn no_records_means_empty_blocks() {
        let bytes = encode(&[], &[]);
        assert_eq!(bytes.len(), 32);
        assert_eq!(parse(&bytes).unwrap(), ParsedBtfExt::default());
    }
}
