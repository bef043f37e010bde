//! LPM-trie contents shared by the cgroup socket programs and the XDP
//! programs. Key: prefixlen (u32, host order) + the network's address bytes.
//! Value: a bitmap of the groups (rules, or XDP rule classes) that have a
//! CIDR containing the entry's network, so the longest match alone answers
//! "which groups contain this address".

use super::{MapSpec, BPF_F_NO_PREALLOC, BPF_MAP_TYPE_LPM_TRIE};
use phantom_dsl::values::Cidr;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `(prefix, address)` with the address as a number `width` bits wide.
fn net(c: &Cidr) -> (u8, u128, u32) {
    match c.addr {
        IpAddr::V4(a) => (c.prefix, u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (c.prefix, u128::from(a), 128),
    }
}

fn masked(addr: u128, prefix: u8, width: u32) -> u128 {
    if prefix == 0 {
        0
    } else {
        addr & (u128::MAX << (width - u32::from(prefix))) & (u128::MAX >> (128 - width))
    }
}

/// The trie for the CIDRs of one family (`v6`) in `groups`. Each entry ORs
/// the bitmaps of its ancestors (at most 129 lookups), instead of testing
/// every CIDR against every other.
pub(crate) fn trie(name: &str, v6: bool, groups: &[&[Cidr]]) -> MapSpec {
    let width = if v6 { 128 } else { 32 };
    let value_words = groups.len().div_ceil(32).max(1);
    let in_family = |c: &&Cidr| c.addr.is_ipv6() == v6;
    // Which groups name each network directly.
    let mut direct: BTreeMap<(u8, u128), Vec<u32>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        for c in g.iter().filter(in_family) {
            let (p, a, _) = net(c);
            let bits = direct.entry((p, a)).or_insert_with(|| vec![0; value_words]);
            bits[i / 32] |= 1 << (i % 32);
        }
    }
    let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for &(prefix, addr) in direct.keys() {
        let mut bits = vec![0u32; value_words];
        for p in 0..=prefix {
            if let Some(d) = direct.get(&(p, masked(addr, p, width))) {
                bits.iter_mut().zip(d).for_each(|(b, d)| *b |= d);
            }
        }
        let mut key = u32::from(prefix).to_ne_bytes().to_vec();
        key.extend(&addr.to_be_bytes()[(16 - width as usize / 8)..]);
        entries.insert(key, bits.iter().flat_map(|w| w.to_ne_bytes()).collect());
    }
    MapSpec {
        name: name.to_string(),
        map_type: BPF_MAP_TYPE_LPM_TRIE,
        key_size: 4 + width / 8,
        value_size: 4 * value_words as u32,
        max_entries: entries.len().max(1) as u32,
        flags: BPF_F_NO_PREALLOC,
        entries: entries.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phantom_dsl::values::parse_cidr;

    /// The direct definition: group i's bit is set when one of its CIDRs
    /// contains the entry's network.
    fn naive(groups: &[Vec<Cidr>], v6: bool) -> Vec<(Vec<u8>, Vec<u32>)> {
        let mut out = BTreeMap::new();
        for c in groups.iter().flatten().filter(|c| c.addr.is_ipv6() == v6) {
            let mut bits = vec![0u32; groups.len().div_ceil(32).max(1)];
            for (i, g) in groups.iter().enumerate() {
                if g.iter().any(|o| o.contains_cidr(c)) {
                    bits[i / 32] |= 1 << (i % 32);
                }
            }
            let mut key = u32::from(c.prefix).to_ne_bytes().to_vec();
            match c.addr {
                IpAddr::V4(a) => key.extend(a.octets()),
                IpAddr::V6(a) => key.extend(a.octets()),
            }
            out.insert(key, bits);
        }
        out.into_iter().collect()
    }

    #[test]
    fn ancestors_give_the_same_bitmaps_as_pairwise_containment() {
        let g = |v: &[&str]| v.iter().map(|s| parse_cidr(s).unwrap()).collect::<Vec<_>>();
        let groups = vec![
            g(&["10.0.0.0/8", "192.168.1.0/24", "::/0"]),
            g(&["10.1.0.0/16", "0.0.0.0/0"]),
            g(&["10.1.2.3", "2001:db8::/32"]),
            g(&["10.1.2.0/24", "2001:db8:1::/48", "192.168.0.0/16"]),
        ];
        for v6 in [false, true] {
            let refs: Vec<&[Cidr]> = groups.iter().map(Vec::as_slice).collect();
            let got: Vec<(Vec<u8>, Vec<u32>)> = trie("t", v6, &refs)
                .entries
                .into_iter()
                .map(|(k, v)| (k, v.chunks(4).map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]])).collect()))
                .collect();
            assert_eq!(got, naive(&groups, v6), "v6 = {v6}");
        }
    }
}
