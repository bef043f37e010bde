//! The pure parts of the instruction set: ALU results and jump conditions.

/// One ALU op at one width: `$u`/`$i` the unsigned/signed type, `$mask`
/// the shift mask (width - 1). Division by zero is 0, modulo by zero keeps
/// dst (as the kernel).
macro_rules! alu_at {
    ($op:expr, $d:expr, $s:expr, $u:ty, $i:ty, $mask:expr) => {{
        let (d, s): ($u, $u) = ($d as $u, $s as $u);
        match $op {
            0x00 => d.wrapping_add(s),
            0x10 => d.wrapping_sub(s),
            0x20 => d.wrapping_mul(s),
            0x30 => d.checked_div(s).unwrap_or(0),
            0x40 => d | s,
            0x50 => d & s,
            0x60 => d.wrapping_shl(s as u32 & $mask),
            0x70 => d.wrapping_shr(s as u32 & $mask),
            0x80 => d.wrapping_neg(),
            0x90 => d.checked_rem(s).unwrap_or(d),
            0xa0 => d ^ s,
            0xb0 => s,
            0xc0 => ((d as $i) >> (s & $mask)) as $u,
            _ => return Err(format!("bad ALU op {:#x}", $op)),
        }
    }};
}

/// ALU or ALU64 op `code` on `d` and `s` (`imm` for byte swaps).
pub fn alu(code: u8, d: u64, s: u64, imm: i32) -> Result<u64, String> {
    let (wide, op) = (code & 7 == 0x07, code & 0xf0);
    if op == 0xd0 {
        return swap(code, d, imm);
    }
    Ok(if wide { alu_at!(op, d, s, u64, i64, 63) } else { u64::from(alu_at!(op, d, s, u32, i32, 31)) })
}

/// `END` ops: ALU|SRC_X = to big-endian (a swap on this little-endian
/// host), ALU|SRC_K = to little-endian (truncation only), ALU64|SRC_K =
/// unconditional swap; all keep the low `imm` bits.
fn swap(code: u8, v: u64, imm: i32) -> Result<u64, String> {
    let swapped = match imm {
        16 => u64::from((v as u16).swap_bytes()),
        32 => u64::from((v as u32).swap_bytes()),
        64 => v.swap_bytes(),
        _ => return Err(format!("bad byte swap width {imm}")),
    };
    let trunc = if imm == 64 { v } else { v & ((1u64 << imm) - 1) };
    match (code & 7 == 0x07, code & 0x08 != 0) {
        (true, true) => Err(format!("bad byte swap {code:#x}")),
        (true, false) | (false, true) => Ok(swapped),
        (false, false) => Ok(trunc),
    }
}

/// Whether conditional jump `code` (JMP or JMP32) is taken.
pub fn taken(code: u8, d: u64, s: u64) -> Result<bool, String> {
    let (d, s, sd, ss) = if code & 7 == 0x06 {
        (u64::from(d as u32), u64::from(s as u32), i64::from(d as i32), i64::from(s as i32))
    } else {
        (d, s, d as i64, s as i64)
    };
    Ok(match code & 0xf0 {
        0x10 => d == s,
        0x20 => d > s,
        0x30 => d >= s,
        0x40 => d & s != 0,
        0x50 => d != s,
        0x60 => sd > ss,
        0x70 => sd >= ss,
        0xa0 => d < s,
        0xb0 => d <= s,
        0xc0 => sd < ss,
        0xd0 => sd <= ss,
        _ => return Err(format!("bad jump op {code:#x}")),
    })
}
