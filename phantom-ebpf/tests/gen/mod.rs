//! Deterministic random inputs and small IR builders shared by the cgroup
//! (netprog_common) and XDP (xdp_common) test helpers.

use phantom_dsl::ir::{NetRule, Origin};
use phantom_dsl::source::{FileId, Span};
use phantom_dsl::values::{Cidr, PortRange, Protocol};

/// Picks from an array whose elements may themselves draw from the rng.
#[macro_export]
macro_rules! pick {
    ($rng:expr, $arr:expr) => {{
        let a = $arr;
        *$rng.pick(&a)
    }};
}

/// xorshift64*: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

pub fn origin(line: u32) -> Origin {
    Origin { file: FileId(0), line, col: 5, span: Span { file: FileId(0), start: 0, end: 0 } }
}

pub fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

pub fn ports(rs: &[(u16, u16)]) -> Vec<PortRange> {
    rs.iter().map(|&(start, end)| PortRange { start, end }).collect()
}

/// A rule at policy line `line`.
pub fn rule(cidrs: &[&str], p: &[(u16, u16)], protocol: Protocol, line: u32) -> NetRule {
    NetRule { cidrs: cidrs.iter().map(|c| cidr(c)).collect(), ports: ports(p), protocol, origin: origin(line) }
}
