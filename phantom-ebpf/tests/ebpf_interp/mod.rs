//! The test tree's eBPF interpreter, for programs this host cannot run
//! (cgroup sock_addr, sock and device programs have no
//! `BPF_PROG_TEST_RUN`; BPF-LSM cannot be loaded). It reads the encoded
//! 8-byte slots, not the logical instructions, so the encoder is under
//! test too.
//!
//! Covered here: ALU and ALU64 (all ops, byte swaps), JMP and JMP32 (all
//! conditions, `ja`, `exit`, helper calls), LDX/STX/ST MEM and `LD_IMM64`
//! (plain and `BPF_PSEUDO_MAP_FD`, as [`MAPS`] + fd). The 512-byte stack
//! is the interpreter's; every other region (context, map values, fake
//! kernel structs) and every helper is the caller's [`Env`]. Anything
//! else, and any out-of-bounds access, is an error, not a guess.

pub mod helpers;
mod ops;

/// Where r1 points at entry; the [`Env`] maps the context there.
pub const CTX: u64 = 0x1_0000_0000;
const STACK: u64 = 0x2_0000_0000;
const STACK_SIZE: usize = 512;
/// `LD_IMM64` of map fd `n` loads `MAPS + n` (see [`map_fd`]).
pub const MAPS: u64 = 0x4_0000_0000;
/// Plenty for the programs under test; a runaway loop is an error.
const STEP_LIMIT: usize = 1_000_000;

/// What differs between the programs under test: their memory outside the
/// stack and their helpers.
pub trait Env: Sized {
    /// The region holding `addr` and the address of its first byte, or
    /// `None` if nothing is mapped there. The interpreter checks the
    /// access against the region's length.
    fn region(&mut self, addr: u64) -> Option<(&mut [u8], u64)>;

    /// Helper `id` called with r1-r5; its result is r0.
    fn call(mem: &mut Mem<Self>, id: i32, args: [u64; 5]) -> Result<u64, String>;
}

/// The program's memory as helpers see it: the stack, the caller's
/// regions and the ring buffer records sent so far.
pub struct Mem<'e, E> {
    pub env: &'e mut E,
    stack: [u8; STACK_SIZE],
    pub records: Vec<Vec<u8>>,
}

impl<E: Env> Mem<'_, E> {
    /// The `len` bytes at `addr`, all inside one region.
    pub fn bytes(&mut self, addr: u64, len: usize) -> Result<&mut [u8], String> {
        let (buf, base): (&mut [u8], u64) = if addr >> 32 == STACK >> 32 {
            (&mut self.stack, STACK)
        } else {
            self.env.region(addr).ok_or(format!("access to unmapped address {addr:#x}"))?
        };
        let off = addr.checked_sub(base).and_then(|o| usize::try_from(o).ok());
        off.and_then(|off| buf.get_mut(off..off.checked_add(len)?))
            .ok_or(format!("out-of-bounds access at {addr:#x} (+{len})"))
    }

    pub fn load(&mut self, addr: u64, len: usize) -> Result<u64, String> {
        let mut v = [0u8; 8];
        v[..len].copy_from_slice(self.bytes(addr, len)?);
        Ok(u64::from_le_bytes(v))
    }

    pub fn store(&mut self, addr: u64, len: usize, val: u64) -> Result<(), String> {
        self.bytes(addr, len)?.copy_from_slice(&val.to_le_bytes()[..len]);
        Ok(())
    }
}

/// The fd of a map pointer loaded by `LD_IMM64`.
pub fn map_fd(ptr: u64) -> Option<i32> {
    ptr.checked_sub(MAPS).and_then(|fd| i32::try_from(fd).ok())
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub r0: u64,
    /// Instructions executed (LD_IMM64 counts once).
    pub steps: usize,
    /// What `bpf_ringbuf_output` sent, in order.
    pub records: Vec<Vec<u8>>,
}

/// One decoded slot: opcode, dst, src, off, imm.
type Slot = (u8, usize, usize, i16, i32);

fn slot(prog: &[u8], pc: usize) -> Result<Slot, String> {
    let b = prog.get(pc * 8..pc * 8 + 8).ok_or(format!("pc {pc} past the end"))?;
    let (dst, src) = (usize::from(b[1] & 0xf), usize::from(b[1] >> 4));
    if dst > 10 || src > 10 {
        return Err(format!("pc {pc}: bad register"));
    }
    Ok((b[0], dst, src, i16::from_le_bytes([b[2], b[3]]), i32::from_le_bytes([b[4], b[5], b[6], b[7]])))
}

/// Runs `prog` (encoded bytes, map fds bound as `env` expects) with r1 =
/// [`CTX`] and r10 = the top of a zeroed stack.
pub fn run<E: Env>(prog: &[u8], env: &mut E) -> Result<Outcome, String> {
    let mut mem = Mem { env, stack: [0; STACK_SIZE], records: Vec::new() };
    let mut r = [0u64; 11];
    r[1] = CTX;
    r[10] = STACK + STACK_SIZE as u64;
    let (mut pc, mut steps) = (0usize, 0usize);
    loop {
        steps += 1;
        if steps > STEP_LIMIT {
            return Err("step limit".into());
        }
        let at = pc;
        let (code, dst, src, off, imm) = slot(prog, pc)?;
        pc += 1;
        let (class, op) = (code & 7, code & 0xf0);
        let s = if code & 0x08 != 0 { r[src] } else { imm as i64 as u64 };
        let addr = |base: u64| base.wrapping_add(off as i64 as u64);
        let size = [4, 2, 1, 8][usize::from(code >> 3 & 3)];
        let step = match class {
            // ALU ops use no offset; a nonzero one is sdiv/smod/movsx.
            0x04 | 0x07 if off != 0 => Err(format!("ALU {code:#x} with offset {off}")),
            0x04 | 0x07 => ops::alu(code, r[dst], s, imm).map(|v| r[dst] = v),
            0x05 if op == 0x00 => {
                pc = (pc as i64 + i64::from(off)) as usize;
                Ok(())
            }
            0x05 if op == 0x90 => return Ok(Outcome { r0: r[0], steps, records: mem.records }),
            0x05 if op == 0x80 && src != 0 => Err(format!("call with src {src} (imm {imm})")),
            0x05 if op == 0x80 => E::call(&mut mem, imm, [r[1], r[2], r[3], r[4], r[5]]).map(|v| {
                r[0] = v;
                // r1-r5 are clobbered by calls.
                r[1..=5].fill(0xdead_beef_dead_beef);
            }),
            0x05 | 0x06 => ops::taken(code, r[dst], s).map(|t| {
                if t {
                    pc = (pc as i64 + i64::from(off)) as usize;
                }
            }),
            0x00 if code == 0x18 => {
                let (hi_code, hi_dst, hi_src, hi_off, hi) = slot(prog, pc)?;
                pc += 1;
                let v = match src {
                    _ if (hi_code, hi_dst, hi_src, hi_off) != (0, 0, 0, 0) => Err("LD_IMM64: bad second slot".into()),
                    0 => Ok(u64::from(imm as u32) | u64::from(hi as u32) << 32),
                    1 if hi == 0 => Ok(MAPS + u64::from(imm as u32)),
                    _ => Err(format!("unsupported LD_IMM64 src {src}")),
                };
                v.map(|v| r[dst] = v)
            }
            0x01 if code & 0xe0 == 0x60 => mem.load(addr(r[src]), size).map(|v| r[dst] = v),
            0x02 if code & 0xe0 == 0x60 => mem.store(addr(r[dst]), size, imm as i64 as u64),
            0x03 if code & 0xe0 == 0x60 => mem.store(addr(r[dst]), size, r[src]),
            _ => Err(format!("unsupported opcode {code:#x}")),
        };
        step.map_err(|e| format!("pc {at}: {e}"))?;
    }
}
