//! A small classic-BPF interpreter over `struct seccomp_data`, for tests and
//! benches: runs a filter (ours or libseccomp's) on one input and counts the
//! instructions executed.
//!
//! It implements the instructions the kernel's seccomp loader accepts
//! (loads, ALU, jumps, returns, scratch memory); anything else is an error.

/// `struct seccomp_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeccompData {
    pub nr: u32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

impl SeccompData {
    /// `sizeof(struct seccomp_data)`.
    pub const SIZE: u32 = 64;

    pub fn new(arch: u32, nr: u32, args: [u64; 6]) -> SeccompData {
        SeccompData { nr, arch, instruction_pointer: 0, args }
    }

    /// The 32-bit word at byte offset `off` (little-endian layout).
    pub fn word(&self, off: u32) -> Option<u32> {
        if !off.is_multiple_of(4) || off >= Self::SIZE {
            return None;
        }
        let half = |v: u64, high: bool| if high { (v >> 32) as u32 } else { v as u32 };
        Some(match off {
            0 => self.nr,
            4 => self.arch,
            8 | 12 => half(self.instruction_pointer, off == 12),
            _ => {
                let i = ((off - 16) / 8) as usize;
                half(self.args[i], (off - 16) % 8 == 4)
            }
        })
    }
}

/// The result of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The filter's return value.
    pub ret: u32,
    /// Instructions executed, the return included.
    pub executed: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    #[error("instruction {pc}: unsupported opcode {code:#06x}")]
    BadOpcode { pc: usize, code: u16 },
    #[error("instruction {pc}: load from offset {off} outside struct seccomp_data")]
    BadLoad { pc: usize, off: u32 },
    #[error("ran off the end of the filter (pc {pc})")]
    OffTheEnd { pc: usize },
}

/// Runs `insns` on `data`.
pub fn run(insns: &[super::Insn], data: &SeccompData) -> Result<Outcome, InterpError> {
    let (mut a, mut x): (u32, u32) = (0, 0);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    let mut executed = 0usize;
    loop {
        let insn = *insns.get(pc).ok_or(InterpError::OffTheEnd { pc })?;
        executed += 1;
        let k = insn.k;
        let bad = InterpError::BadOpcode { pc, code: insn.code };
        pc += 1;
        match insn.code {
            0x20 => a = data.word(k).ok_or(InterpError::BadLoad { pc: pc - 1, off: k })?,
            0x80 => a = SeccompData::SIZE,
            0x81 => x = SeccompData::SIZE,
            0x00 => a = k,
            0x01 => x = k,
            0x60 => a = *mem.get(k as usize).ok_or(bad)?,
            0x61 => x = *mem.get(k as usize).ok_or(bad)?,
            0x02 => *mem.get_mut(k as usize).ok_or(bad)? = a,
            0x03 => *mem.get_mut(k as usize).ok_or(bad)? = x,
            0x07 => x = a,
            0x87 => a = x,
            0x06 => return Ok(Outcome { ret: k, executed }),
            0x16 => return Ok(Outcome { ret: a, executed }),
            0x05 => pc = pc.checked_add(k as usize).ok_or(bad)?,
            code if code & 0x07 == 0x04 => {
                let src = if code & 0x08 != 0 { x } else { k };
                a = match code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 => a.checked_div(src).unwrap_or(0),
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a.checked_shl(src).unwrap_or(0),
                    0x70 => a.checked_shr(src).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => a.checked_rem(src).unwrap_or(0),
                    0xa0 => a ^ src,
                    _ => return Err(bad),
                };
            }
            code if code & 0x07 == 0x05 => {
                let src = if code & 0x08 != 0 { x } else { k };
                let taken = match code & 0xf0 {
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    _ => return Err(bad),
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            _ => return Err(bad),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::insn::{Insn, JEQ_K};

    #[test]
    fn words() {
        let d =
            SeccompData { nr: 1, arch: 2, instruction_pointer: 0x3_0000_0004, args: [0x6_0000_0005, 0, 0, 0, 0, 7] };
        assert_eq!(d.word(0), Some(1));
        assert_eq!(d.word(4), Some(2));
        assert_eq!(d.word(8), Some(4));
        assert_eq!(d.word(12), Some(3));
        assert_eq!(d.word(16), Some(5));
        assert_eq!(d.word(20), Some(6));
        assert_eq!(d.word(56), Some(7));
        assert_eq!(d.word(64), None);
        assert_eq!(d.word(2), None);
    }

    #[test]
    fn runs_and_counts() {
        let p = [Insn::load(0), Insn::jump(JEQ_K, 3, 0, 1), Insn::ret(10), Insn::ret(20)];
        let out = run(&p, &SeccompData::new(0, 3, [0; 6])).unwrap();
        assert_eq!(out, Outcome { ret: 10, executed: 3 });
        assert_eq!(run(&p, &SeccompData::new(0, 4, [0; 6])).unwrap().ret, 20);
        assert!(run(&p[..2], &SeccompData::new(0, 3, [0; 6])).is_err());
    }
}
