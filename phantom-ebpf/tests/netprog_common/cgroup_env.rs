//! What the cgroup programs see in the interpreter: their context, the
//! LPM tries behind `bpf_map_lookup_elem` (each value found is a region of
//! its own), the audit ring buffer and the task helpers.

use super::ebpf_interp::helpers::{self, MAP_LOOKUP_ELEM, RINGBUF_OUTPUT};
use super::ebpf_interp::{self, map_fd, Env, Mem, Outcome, CTX};
use std::collections::BTreeMap;

const VALUES: u64 = 0x3_0000_0000;
const VALUE_STRIDE: u64 = 0x10_0000;

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

struct Cgroup<'a> {
    ctx: &'a mut [u8],
    tries: &'a BTreeMap<i32, Lpm>,
    ringbuf_fd: i32,
    /// Copies of the values lookups found, at `VALUES + i * VALUE_STRIDE`.
    values: Vec<Vec<u8>>,
}

impl Env for Cgroup<'_> {
    fn region(&mut self, addr: u64) -> Option<(&mut [u8], u64)> {
        match addr >> 32 {
            1 => Some((&mut *self.ctx, CTX)),
            3 => {
                let i = (addr - VALUES) / VALUE_STRIDE;
                Some((self.values.get_mut(i as usize)?, VALUES + i * VALUE_STRIDE))
            }
            _ => None,
        }
    }

    fn call(mem: &mut Mem<Self>, id: i32, args: [u64; 5]) -> Result<u64, String> {
        match id {
            MAP_LOOKUP_ELEM => lookup(mem, args[0], args[1]),
            RINGBUF_OUTPUT => {
                let fd = mem.env.ringbuf_fd;
                helpers::ringbuf_output(mem, fd, args)
            }
            _ => helpers::task(mem, id, args),
        }
    }
}

fn lookup(mem: &mut Mem<Cgroup>, map: u64, key: u64) -> Result<u64, String> {
    let fd = map_fd(map).ok_or("map lookup: r1 is not a map")?;
    let lpm = mem.env.tries.get(&fd).ok_or(format!("map lookup: no LPM trie with fd {fd}"))?;
    let key = mem.bytes(key, lpm.key_size)?.to_vec();
    let Some(value) = lpm.lookup(&key) else { return Ok(0) };
    let values = &mut mem.env.values;
    values.push(value.to_vec());
    Ok(VALUES + (values.len() as u64 - 1) * VALUE_STRIDE)
}

/// Runs `prog` (encoded bytes, LPM tries bound to the keys of `tries`, the
/// audit ring buffer to `ringbuf_fd`) with r1 pointing at `ctx`.
pub fn run(prog: &[u8], ctx: &mut [u8], tries: &BTreeMap<i32, Lpm>, ringbuf_fd: i32) -> Result<Outcome, String> {
    ebpf_interp::run(prog, &mut Cgroup { ctx, tries, ringbuf_fd, values: Vec::new() })
}
