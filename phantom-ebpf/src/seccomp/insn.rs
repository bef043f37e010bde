//! Classic BPF instructions as the kernel's seccomp loader takes them
//! (`struct sock_filter`), with typed builders for the handful of opcodes a
//! seccomp filter needs.

/// `BPF_LD | BPF_W | BPF_ABS`: `A = *(u32 *)(data + k)`.
pub const LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JA`: `pc += k` (32-bit offset).
pub const JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
pub const JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGT | BPF_K` (unsigned).
pub const JGT_K: u16 = 0x25;
/// `BPF_JMP | BPF_JGE | BPF_K` (unsigned).
pub const JGE_K: u16 = 0x35;
/// `BPF_JMP | BPF_JSET | BPF_K`: jump if `A & k != 0`.
pub const JSET_K: u16 = 0x45;
/// `BPF_ALU | BPF_AND | BPF_K`: `A &= k`.
pub const AND_K: u16 = 0x54;
/// `BPF_RET | BPF_K`: return `k`.
pub const RET_K: u16 = 0x06;

/// Size of one encoded instruction.
pub const INSN_SIZE: usize = 8;

/// One cBPF instruction, field for field a `struct sock_filter`: `code`,
/// the true and false jump offsets (relative to the next instruction) and
/// the constant `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl Insn {
    /// `A = *(u32 *)(seccomp_data + offset)`.
    pub const fn load(offset: u32) -> Insn {
        Insn { code: LD_W_ABS, jt: 0, jf: 0, k: offset }
    }

    /// Unconditional jump over `off` instructions.
    pub const fn ja(off: u32) -> Insn {
        Insn { code: JA, jt: 0, jf: 0, k: off }
    }

    /// Conditional jump `code` (one of the `J*_K` opcodes) against `k`.
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
        Insn { code, jt, jf, k }
    }

    /// `A &= k`.
    pub const fn and(k: u32) -> Insn {
        Insn { code: AND_K, jt: 0, jf: 0, k }
    }

    /// `return k`.
    pub const fn ret(k: u32) -> Insn {
        Insn { code: RET_K, jt: 0, jf: 0, k }
    }

    /// Whether this is a conditional jump (uses `jt`/`jf`).
    pub const fn is_cond_jump(&self) -> bool {
        self.code & 0x07 == 0x05 && self.code & 0xf0 != 0x00
    }

    /// The `struct sock_filter` bytes: little-endian `code: u16`, `jt: u8`,
    /// `jf: u8`, `k: u32` (what libseccomp's `seccomp_export_bpf` writes on a
    /// little-endian host).
    pub fn to_bytes(&self) -> [u8; INSN_SIZE] {
        let c = self.code.to_le_bytes();
        let k = self.k.to_le_bytes();
        [c[0], c[1], self.jt, self.jf, k[0], k[1], k[2], k[3]]
    }

    /// Decodes one instruction from 8 `struct sock_filter` bytes.
    pub fn from_bytes(b: [u8; INSN_SIZE]) -> Insn {
        Insn {
            code: u16::from_le_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Decodes a whole `struct sock_filter` array; `None` if the length is not a
/// multiple of 8.
pub fn decode(bytes: &[u8]) -> Option<Vec<Insn>> {
    if !bytes.len().is_multiple_of(INSN_SIZE) {
        return None;
    }
    Some(bytes.chunks_exact(INSN_SIZE).map(|c| Insn::from_bytes(c.try_into().expect("8-byte chunk"))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_sock_filter() {
        let i = Insn::jump(JEQ_K, 0xc000_003e, 1, 2);
        assert_eq!(i.to_bytes(), [0x15, 0x00, 1, 2, 0x3e, 0x00, 0x00, 0xc0]);
        assert_eq!(Insn::from_bytes(i.to_bytes()), i);
        assert_eq!(decode(&[0; 9]), None);
    }

    #[test]
    fn classifies_jumps() {
        assert!(Insn::jump(JGE_K, 1, 0, 0).is_cond_jump());
        assert!(Insn::jump(JSET_K, 1, 0, 0).is_cond_jump());
        assert!(!Insn::ja(3).is_cond_jump());
        assert!(!Insn::ret(0).is_cond_jump());
        assert!(!Insn::load(0).is_cond_jump());
    }
}
