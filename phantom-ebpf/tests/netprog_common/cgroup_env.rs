//! A small eBPF interpreter for the cgroup programs' differential tests:
//! the kernel cannot `BPF_PROG_TEST_RUN` cgroup sock_addr, sock and device
//! programs, so the encoded bytes run here instead. It reads the raw
//! 8-byte slots (not the logical instructions), so the encoder is under
//! test too.
//!
//! Covered: ALU and ALU64 (all ops, byte swaps), JMP and JMP32 (all
//! conditions, `ja`, `exit`, helper call 1 = `bpf_map_lookup_elem` on LPM
//! tries; the audit helpers with fixed answers: `bpf_ktime_get_ns`,
//! `bpf_get_current_pid_tgid`, `bpf_get_current_comm`,
//! `bpf_get_current_cgroup_id` ([`TASK`]) and `bpf_ringbuf_output`, whose
//! records are collected), LDX/STX/ST MEM on the context, the 512-byte stack and map
//! values, and `LD_IMM64` (plain and `BPF_PSEUDO_MAP_FD`). Anything else,
//! and any out-of-bounds access, is an error, not a guess.

use std::collections::BTreeMap;

const CTX_BASE: u64 = 0x1_0000_0000;
const STACK_BASE: u64 = 0x2_0000_0000;
const STACK_SIZE: u64 = 512;
const VALUE_BASE: u64 = 0x3_0000_0000;
const VALUE_STRIDE: u64 = 0x10_0000;
const MAP_BASE: u64 = 0x4_0000_0000;

/// An LPM trie as the kernel's: key = prefixlen (u32, host order) + data.
#[derive(Debug, Clone)]
pub struct Lpm {
    pub key_size: usize,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Lpm {
    /// The value of the longest entry whose prefix covers the key's first
    /// `prefixlen` bits.
    pub fn lookup(&self, key: &[u8]) -> Option<&[u8]> {
        let want = u32::from_ne_bytes(key[..4].try_into().unwrap()) as usize;
        let data = &key[4..];
        let bit = |d: &[u8], i: usize| (d[i / 8] >> (7 - i % 8)) & 1;
        self.entries
            .iter()
            .filter(|(k, _)| {
                let plen = u32::from_ne_bytes(k[..4].try_into().unwrap()) as usize;
                plen <= want && (0..plen).all(|i| bit(&k[4..], i) == bit(data, i))
            })
            .max_by_key(|(k, _)| u32::from_ne_bytes(k[..4].try_into().unwrap()))
            .map(|(_, v)| v.as_slice())
    }
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub r0: u64,
    /// Instructions executed (LD_IMM64 counts once).
    pub steps: usize,
    /// What `bpf_ringbuf_output` sent, in order.
    pub records: Vec<Vec<u8>>,
}

/// What the audit helpers answer: the acting task.
pub struct Task;

impl Task {
    pub const CGROUP: u64 = 0x1234_5678;
    pub const TIME: u64 = 42;
    pub const TGID: u32 = 4242;
    pub const PID: u32 = 4243;
    pub const COMM: &'static [u8; 16] = b"interp-task\0\0\0\0\0";
}

/// The audit helpers' ids (include/uapi/linux/bpf.h).
const KTIME_GET_NS: i32 = 5;
const GET_CURRENT_PID_TGID: i32 = 14;
const GET_CURRENT_COMM: i32 = 16;
const GET_CURRENT_CGROUP_ID: i32 = 80;
const RINGBUF_OUTPUT: i32 = 130;

struct Mem<'a> {
    ctx: &'a mut [u8],
    stack: [u8; STACK_SIZE as usize],
    values: Vec<Vec<u8>>,
}

impl Mem<'_> {
    fn region(&mut self, addr: u64, len: usize) -> Result<&mut [u8], String> {
        let (buf, off): (&mut [u8], u64) = if (CTX_BASE..CTX_BASE + 0x1000).contains(&addr) {
            (&mut *self.ctx, addr - CTX_BASE)
        } else if (STACK_BASE..=STACK_BASE + STACK_SIZE).contains(&addr) {
            (&mut self.stack[..], addr - STACK_BASE)
        } else if (VALUE_BASE..MAP_BASE).contains(&addr) {
            let i = ((addr - VALUE_BASE) / VALUE_STRIDE) as usize;
            let v = self.values.get_mut(i).ok_or(format!("bad map value pointer {addr:#x}"))?;
            (v.as_mut_slice(), (addr - VALUE_BASE) % VALUE_STRIDE)
        } else {
            return Err(format!("access to unmapped address {addr:#x}"));
        };
        let off = off as usize;
        buf.get_mut(off..off + len).ok_or(format!("out-of-bounds access at {addr:#x} (+{len})"))
    }

    fn load(&mut self, addr: u64, len: usize) -> Result<u64, String> {
        let b = self.region(addr, len)?;
        let mut v = [0u8; 8];
        v[..len].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    }

    fn store(&mut self, addr: u64, len: usize, val: u64) -> Result<(), String> {
        let b = self.region(addr, len)?;
        b.copy_from_slice(&val.to_le_bytes()[..len]);
        Ok(())
    }
}

fn slot(prog: &[u8], pc: usize) -> Result<(u8, usize, usize, i16, i32), String> {
    let b = prog.get(pc * 8..pc * 8 + 8).ok_or(format!("pc {pc} past the end"))?;
    Ok((
        b[0],
        usize::from(b[1] & 0xf),
        usize::from(b[1] >> 4),
        i16::from_le_bytes([b[2], b[3]]),
        i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    ))
}

/// Runs `prog` (encoded bytes, map fds bound to the keys of `maps`) with
/// r1 pointing at `ctx`.
pub fn run(prog: &[u8], ctx: &mut [u8], maps: &BTreeMap<i32, Lpm>) -> Result<Outcome, String> {
    let mut mem = Mem { ctx, stack: [0; STACK_SIZE as usize], values: Vec::new() };
    let mut r = [0u64; 11];
    r[1] = CTX_BASE;
    r[10] = STACK_BASE + STACK_SIZE;
    let mut pc = 0usize;
    let mut steps = 0usize;
    let mut records = Vec::new();
    loop {
        steps += 1;
        if steps > 100_000 {
            return Err("step limit".into());
        }
        let (code, dst, src, off, imm) = slot(prog, pc)?;
        if dst > 10 || src > 10 {
            return Err(format!("pc {pc}: bad register"));
        }
        pc += 1;
        let class = code & 7;
        match class {
            0x04 | 0x07 => {
                let wide = class == 0x07;
                let op = code & 0xf0;
                if op == 0xd0 {
                    let bits = imm as u32;
                    let v = r[dst];
                    let swapped = match bits {
                        16 => u64::from((v as u16).swap_bytes()),
                        32 => u64::from((v as u32).swap_bytes()),
                        64 => v.swap_bytes(),
                        _ => return Err(format!("pc {}: bad byte swap width {bits}", pc - 1)),
                    };
                    let trunc = |v: u64| if bits == 64 { v } else { v & ((1u64 << bits) - 1) };
                    // ALU | END | SRC_X = to big-endian (swap on this LE host);
                    // SRC_K = to little-endian (truncate only); ALU64 = bswap.
                    r[dst] = if wide || code & 0x08 != 0 { swapped } else { trunc(v) };
                    continue;
                }
                let s = if code & 0x08 != 0 { r[src] } else { imm as i64 as u64 };
                let d = r[dst];
                let v = if wide {
                    match op {
                        0x00 => d.wrapping_add(s),
                        0x10 => d.wrapping_sub(s),
                        0x20 => d.wrapping_mul(s),
                        0x30 => d.checked_div(s).unwrap_or(0),
                        0x40 => d | s,
                        0x50 => d & s,
                        0x60 => d.wrapping_shl(s as u32 & 63),
                        0x70 => d.wrapping_shr(s as u32 & 63),
                        0x80 => d.wrapping_neg(),
                        0x90 => d.checked_rem(s).unwrap_or(d),
                        0xa0 => d ^ s,
                        0xb0 => s,
                        0xc0 => ((d as i64) >> (s & 63)) as u64,
                        _ => return Err(format!("pc {}: bad ALU64 op {code:#x}", pc - 1)),
                    }
                } else {
                    let (d, s) = (d as u32, s as u32);
                    u64::from(match op {
                        0x00 => d.wrapping_add(s),
                        0x10 => d.wrapping_sub(s),
                        0x20 => d.wrapping_mul(s),
                        0x30 => d.checked_div(s).unwrap_or(0),
                        0x40 => d | s,
                        0x50 => d & s,
                        0x60 => d.wrapping_shl(s & 31),
                        0x70 => d.wrapping_shr(s & 31),
                        0x80 => d.wrapping_neg(),
                        0x90 => d.checked_rem(s).unwrap_or(d),
                        0xa0 => d ^ s,
                        0xb0 => s,
                        0xc0 => ((d as i32) >> (s & 31)) as u32,
                        _ => return Err(format!("pc {}: bad ALU op {code:#x}", pc - 1)),
                    })
                };
                r[dst] = v;
            }
            0x05 | 0x06 => {
                let op = code & 0xf0;
                match (class, op) {
                    (0x05, 0x00) => {
                        pc = (pc as i64 + i64::from(off)) as usize;
                        continue;
                    }
                    (0x05, 0x90) => return Ok(Outcome { r0: r[0], steps, records }),
                    (0x05, 0x80) if src == 0 && imm != 1 => {
                        r[0] = match imm {
                            KTIME_GET_NS => Task::TIME,
                            GET_CURRENT_PID_TGID => (u64::from(Task::TGID) << 32) | u64::from(Task::PID),
                            GET_CURRENT_CGROUP_ID => Task::CGROUP,
                            GET_CURRENT_COMM => {
                                if r[2] != 16 {
                                    return Err(format!("pc {}: comm buffer of {} bytes", pc - 1, r[2]));
                                }
                                for (i, &b) in Task::COMM.iter().enumerate() {
                                    mem.store(r[1] + i as u64, 1, u64::from(b))?;
                                }
                                0
                            }
                            RINGBUF_OUTPUT => {
                                r[1].checked_sub(MAP_BASE).ok_or("ringbuf_output: r1 is not a map")?;
                                let rec: Vec<u8> = (0..r[3])
                                    .map(|i| mem.load(r[2] + i, 1).map(|b| b as u8))
                                    .collect::<Result<_, _>>()?;
                                records.push(rec);
                                0
                            }
                            _ => return Err(format!("pc {}: unsupported call (src {src}, imm {imm})", pc - 1)),
                        };
                        for reg in &mut r[1..=5] {
                            *reg = 0xdead_beef_dead_beef;
                        }
                        continue;
                    }
                    (0x05, 0x80) => {
                        if src != 0 || imm != 1 {
                            return Err(format!("pc {}: unsupported call (src {src}, imm {imm})", pc - 1));
                        }
                        let map = r[1].checked_sub(MAP_BASE).ok_or("r1 is not a map")? as i32;
                        let lpm = maps.get(&map).ok_or(format!("no map with fd {map}"))?;
                        let key: Vec<u8> = (0..lpm.key_size)
                            .map(|i| mem.load(r[2] + i as u64, 1).map(|b| b as u8))
                            .collect::<Result<_, _>>()?;
                        r[0] = match lpm.lookup(&key) {
                            Some(v) => {
                                mem.values.push(v.to_vec());
                                VALUE_BASE + (mem.values.len() as u64 - 1) * VALUE_STRIDE
                            }
                            None => 0,
                        };
                        // r1-r5 are clobbered by calls.
                        for reg in &mut r[1..=5] {
                            *reg = 0xdead_beef_dead_beef;
                        }
                        continue;
                    }
                    _ => {}
                }
                let s = if code & 0x08 != 0 { r[src] } else { imm as i64 as u64 };
                let d = r[dst];
                let (d, s, sd, ss) = if class == 0x06 {
                    (u64::from(d as u32), u64::from(s as u32), i64::from(d as i32), i64::from(s as i32))
                } else {
                    (d, s, d as i64, s as i64)
                };
                let taken = match op {
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
                    _ => return Err(format!("pc {}: bad jump op {code:#x}", pc - 1)),
                };
                if taken {
                    pc = (pc as i64 + i64::from(off)) as usize;
                }
            }
            0x00 if code == 0x18 => {
                let (_, _, _, _, hi) = slot(prog, pc)?;
                pc += 1;
                r[dst] = match src {
                    0 => (u64::from(imm as u32)) | (u64::from(hi as u32) << 32),
                    1 => MAP_BASE + imm as u32 as u64,
                    _ => return Err(format!("pc {}: unsupported LD_IMM64 src {src}", pc - 2)),
                };
            }
            0x01..=0x03 if code & 0xe0 == 0x60 => {
                let len = match code & 0x18 {
                    0x00 => 4,
                    0x08 => 2,
                    0x10 => 1,
                    _ => 8,
                };
                match class {
                    0x01 => r[dst] = mem.load(r[src].wrapping_add(off as i64 as u64), len)?,
                    0x02 => mem.store(r[dst].wrapping_add(off as i64 as u64), len, imm as i64 as u64)?,
                    _ => mem.store(r[dst].wrapping_add(off as i64 as u64), len, r[src])?,
                }
            }
            _ => return Err(format!("pc {}: unsupported opcode {code:#x}", pc - 1)),
        }
    }
}
