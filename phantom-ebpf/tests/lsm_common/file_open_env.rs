//! A small eBPF interpreter for the file_open program (BPF-LSM programs
//! cannot be loaded on the host): it runs the encoded 8-byte slots, so the
//! encoder is under test too.
//!
//! Covered: ALU64/ALU32 (no byte swaps), JMP/JMP32 (all conditions, `ja`,
//! `exit`), LDX/STX/ST MEM on the context, a fake `struct file`, the stack
//! and the scratch map value, `LD_IMM64` (plain and map fds). Helpers:
//! `bpf_map_lookup_elem` on the scratch map returns [`Run::scratch`] (kept
//! between runs, so stale bytes of earlier paths stay, as in the per-CPU
//! value); `bpf_d_path` writes [`Run::path`] the way the kernel does (built
//! at the end of the buffer, then moved to its start) or returns
//! `-ENAMETOOLONG`; `bpf_ringbuf_output` collects the record; the task
//! helpers answer constants. Anything else, and any access outside a
//! region, is an error, not a guess.

use phantom_ebpf::lsm::KernelLayout;

pub const SCRATCH_FD: i32 = 1;
pub const RINGBUF_FD: i32 = 2;
const CTX: u64 = 0x1_0000_0000;
const STACK: u64 = 0x2_0000_0000;
const STACK_SIZE: usize = 512;
const SCRATCH: u64 = 0x3_0000_0000;
const MAPS: u64 = 0x4_0000_0000;
const FILE: u64 = 0x5_0000_0000;
const FILE_SIZE: usize = 256;
const ENAMETOOLONG: i64 = 36;

/// One call of the program.
pub struct Run<'a> {
    pub layout: KernelLayout,
    pub f_mode: u32,
    pub f_flags: u32,
    /// What `bpf_d_path` writes (without its NUL).
    pub path: &'a [u8],
    pub scratch: &'a mut [u8],
}

#[derive(Debug)]
pub struct Outcome {
    pub r0: u64,
    pub steps: usize,
    pub records: Vec<Vec<u8>>,
}

struct Mem<'r, 'a> {
    run: &'r mut Run<'a>,
    ctx: [u8; 8],
    file: [u8; FILE_SIZE],
    stack: [u8; STACK_SIZE],
}

impl Mem<'_, '_> {
    fn region(&mut self, addr: u64, len: usize) -> Result<&mut [u8], String> {
        let (buf, base): (&mut [u8], u64) = match addr >> 32 {
            1 => (&mut self.ctx, CTX),
            2 => (&mut self.stack, STACK),
            3 => (&mut *self.run.scratch, SCRATCH),
            5 => (&mut self.file, FILE),
            _ => return Err(format!("access to unmapped address {addr:#x}")),
        };
        let off = (addr - base) as usize;
        buf.get_mut(off..off + len).ok_or(format!("out-of-bounds access at {addr:#x} (+{len})"))
    }

    fn load(&mut self, addr: u64, len: usize) -> Result<u64, String> {
        let mut v = [0u8; 8];
        v[..len].copy_from_slice(self.region(addr, len)?);
        Ok(u64::from_le_bytes(v))
    }

    fn store(&mut self, addr: u64, len: usize, val: u64) -> Result<(), String> {
        self.region(addr, len)?.copy_from_slice(&val.to_le_bytes()[..len]);
        Ok(())
    }

    fn bytes(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        Ok(self.region(addr, len)?.to_vec())
    }

    /// Helper `id` with arguments r1-r5.
    fn call(&mut self, id: i32, r: &[u64; 11], records: &mut Vec<Vec<u8>>) -> Result<u64, String> {
        Ok(match id {
            1 => {
                if r[1] != MAPS + SCRATCH_FD as u64 || self.load(r[2], 4)? != 0 {
                    return Err("map lookup: not key 0 of the scratch map".into());
                }
                SCRATCH
            }
            147 => self.d_path(r[1], r[2], r[3] as usize)?,
            130 => {
                if r[1] != MAPS + RINGBUF_FD as u64 || r[4] != 0 {
                    return Err("ringbuf_output: not the ring buffer, or flags".into());
                }
                records.push(self.bytes(r[2], r[3] as usize)?);
                0
            }
            5 => 42,
            14 => 4242 << 32 | 4243,
            80 => 0x1234_5678,
            16 => {
                let comm = b"interp-task\0\0\0\0\0";
                if r[2] != 16 {
                    return Err(format!("comm buffer of {} bytes", r[2]));
                }
                self.region(r[1], 16)?.copy_from_slice(comm);
                0
            }
            _ => return Err(format!("unsupported helper {id}")),
        })
    }

    fn d_path(&mut self, path_ptr: u64, buf: u64, size: usize) -> Result<u64, String> {
        if path_ptr != FILE + u64::from(self.run.layout.file_f_path) {
            return Err(format!("bpf_d_path: {path_ptr:#x} is not &file->f_path"));
        }
        let path = self.run.path.to_vec();
        let len = path.len() + 1;
        if len > size {
            return Ok((-ENAMETOOLONG) as u64);
        }
        let b = self.region(buf, size)?;
        // d_path builds the name backwards from the buffer's end.
        b[size - len..size - 1].copy_from_slice(&path);
        b[size - 1] = 0;
        b.copy_within(size - len..size, 0);
        Ok(len as u64)
    }
}

fn slot(prog: &[u8], pc: usize) -> Result<(u8, usize, usize, i16, i32), String> {
    let b = prog.get(pc * 8..pc * 8 + 8).ok_or(format!("pc {pc} past the end"))?;
    let (dst, src) = (usize::from(b[1] & 0xf), usize::from(b[1] >> 4));
    if dst > 10 || src > 10 {
        return Err(format!("pc {pc}: bad register"));
    }
    Ok((b[0], dst, src, i16::from_le_bytes([b[2], b[3]]), i32::from_le_bytes([b[4], b[5], b[6], b[7]])))
}

fn alu(op: u8, wide: bool, d: u64, s: u64) -> Option<u64> {
    if wide {
        return Some(match op {
            0x00 => d.wrapping_add(s),
            0x10 => d.wrapping_sub(s),
            0x20 => d.wrapping_mul(s),
            0x40 => d | s,
            0x50 => d & s,
            0x60 => d.wrapping_shl(s as u32 & 63),
            0x70 => d.wrapping_shr(s as u32 & 63),
            0xa0 => d ^ s,
            0xb0 => s,
            0xc0 => ((d as i64) >> (s & 63)) as u64,
            _ => return None,
        });
    }
    let (d, s) = (d as u32, s as u32);
    Some(u64::from(match op {
        0x00 => d.wrapping_add(s),
        0x10 => d.wrapping_sub(s),
        0x20 => d.wrapping_mul(s),
        0x40 => d | s,
        0x50 => d & s,
        0x60 => d.wrapping_shl(s & 31),
        0x70 => d.wrapping_shr(s & 31),
        0xa0 => d ^ s,
        0xb0 => s,
        0xc0 => ((d as i32) >> (s & 31)) as u32,
        _ => return None,
    }))
}

fn taken(op: u8, jmp32: bool, d: u64, s: u64) -> Option<bool> {
    let (d, s, sd, ss) = if jmp32 {
        (u64::from(d as u32), u64::from(s as u32), i64::from(d as i32), i64::from(s as i32))
    } else {
        (d, s, d as i64, s as i64)
    };
    Some(match op {
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
        _ => return None,
    })
}

/// Runs `prog` (encoded, the scratch map bound to [`SCRATCH_FD`] and the
/// ring buffer to [`RINGBUF_FD`]) with r1 = the context `[struct file *]`.
pub fn run(prog: &[u8], run: &mut Run) -> Result<Outcome, String> {
    let mut file = [0u8; FILE_SIZE];
    let l = run.layout;
    file[l.file_f_mode as usize..][..4].copy_from_slice(&run.f_mode.to_le_bytes());
    file[l.file_f_flags as usize..][..4].copy_from_slice(&run.f_flags.to_le_bytes());
    let mut mem = Mem { run, ctx: FILE.to_le_bytes(), file, stack: [0; STACK_SIZE] };
    let mut r = [0u64; 11];
    r[1] = CTX;
    r[10] = STACK + STACK_SIZE as u64;
    let (mut pc, mut steps, mut records) = (0usize, 0usize, Vec::new());
    loop {
        steps += 1;
        if steps > 1_000_000 {
            return Err("step limit".into());
        }
        let (code, dst, src, off, imm) = slot(prog, pc)?;
        let at = pc;
        pc += 1;
        let (class, op) = (code & 7, code & 0xf0);
        let s = if code & 0x08 != 0 { r[src] } else { imm as i64 as u64 };
        let addr = |base: u64| base.wrapping_add(off as i64 as u64);
        let size = [4, 2, 1, 8][usize::from(code >> 3 & 3)];
        match class {
            0x04 | 0x07 => r[dst] = alu(op, class == 0x07, r[dst], s).ok_or(format!("pc {at}: ALU {code:#x}"))?,
            0x05 if op == 0x00 => pc = (pc as i64 + i64::from(off)) as usize,
            0x05 if op == 0x90 => return Ok(Outcome { r0: r[0], steps, records }),
            0x05 if op == 0x80 => {
                if src != 0 {
                    return Err(format!("pc {at}: call with src {src}"));
                }
                r[0] = mem.call(imm, &r, &mut records).map_err(|e| format!("pc {at}: {e}"))?;
                r[1..=5].fill(0xdead_beef_dead_beef);
            }
            0x05 | 0x06 => {
                if taken(op, class == 0x06, r[dst], s).ok_or(format!("pc {at}: jump {code:#x}"))? {
                    pc = (pc as i64 + i64::from(off)) as usize;
                }
            }
            0x00 if code == 0x18 => {
                let (_, _, _, _, hi) = slot(prog, pc)?;
                pc += 1;
                r[dst] = match src {
                    0 => u64::from(imm as u32) | u64::from(hi as u32) << 32,
                    1 => MAPS + imm as u32 as u64,
                    _ => return Err(format!("pc {at}: LD_IMM64 src {src}")),
                };
            }
            0x01 if code & 0xe0 == 0x60 => {
                r[dst] = mem.load(addr(r[src]), size).map_err(|e| format!("pc {at}: {e}"))?
            }
            0x02 if code & 0xe0 == 0x60 => {
                mem.store(addr(r[dst]), size, imm as i64 as u64).map_err(|e| format!("pc {at}: {e}"))?
            }
            0x03 if code & 0xe0 == 0x60 => {
                mem.store(addr(r[dst]), size, r[src]).map_err(|e| format!("pc {at}: {e}"))?
            }
            _ => return Err(format!("pc {at}: unsupported opcode {code:#x}")),
        }
    }
}
