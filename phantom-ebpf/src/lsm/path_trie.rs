//! The byte trie (radix tree) file_open walks instead of comparing the
//! path with every pattern: keys, the tree, and the decision at each place
//! a walk can stop. Pure data; `path_walk.rs` emits the code.
//!
//! # Keys
//! The program turns the path of `len` bytes (NUL included) into the key
//! `path + "/" + NUL` (a `/` over the path's NUL, a NUL after it). A
//! pattern becomes a key prefix ([`key_of`]) such that "the pattern
//! matches the path" (component boundaries, prefix globs, `/`) is "the key
//! starts with the prefix":
//! - `/tmp` -> `/tmp/`: `/tmp` and `/tmp/x` match, `/tmpx` does not;
//! - `/usr/lib/python3*` -> `/usr/lib/python3`;
//! - `/` (glob or not) -> the empty prefix: everything matches;
//! - a glob ending in `/` (`G/`, only from hand-made IR) matches paths
//!   starting with `G/`, but the key of the path `G` itself also starts
//!   with `G/`: such a prefix is *strict* (the key must go on past it with
//!   a byte that is not the key's final NUL).
//!
//! The NUL after the `/` keeps bytes of an earlier, longer path (the buffer
//! is reused) from matching: patterns contain no NUL, so no prefix reaches
//! past it.
//!
//! # Decisions
//! Every key prefix is a *stop* of the tree, and so is `K + NUL` for a
//! strict prefix `K` (where the strict pattern no longer applies). A walk
//! follows the key as far as the tree goes and decides at the deepest stop
//! it passed: all patterns whose prefixes are prefixes of that stop apply,
//! and no others. A stop's [`Decision`] lists the deny rules that apply in
//! policy order (a rule whose access bits earlier rules cover is dropped:
//! it could never be the first match) and whether an exec open is denied
//! (the policy has an exec list, no exec entry applies, and no listed deny
//! rule takes exec opens already).

use super::file_open::FMODE_EXEC;
use phantom_dsl::ir::PathPattern;
use std::collections::BTreeMap;

/// A pattern's key prefix and whether it is strict (see the module docs).
pub(super) fn key_of(p: &PathPattern) -> (Vec<u8>, bool) {
    if p.path == "/" {
        return (Vec::new(), false);
    }
    let mut key = p.path.as_bytes().to_vec();
    if p.prefix_glob {
        let strict = key.ends_with(b"/");
        return (key, strict);
    }
    key.push(b'/');
    (key, false)
}

/// What a pattern stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// The n-th deny rule the program enforces (policy order).
    Deny(usize),
    /// An exec allow-list entry.
    Exec,
}

/// One pattern of the program.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub key: Vec<u8>,
    pub strict: bool,
    pub target: Target,
}

/// What to do at a stop.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Decision {
    /// Deny rules to test in order: the first whose access bits meet the
    /// open's denies it.
    pub deny: Vec<usize>,
    /// Exec opens no listed rule takes are denied (exec-list miss).
    pub exec_deny: bool,
}

impl Decision {
    /// Every open is allowed.
    pub fn allows_all(&self) -> bool {
        self.deny.is_empty() && !self.exec_deny
    }
}

/// A node of the tree: the key prefix of `depth` bytes leading to it.
#[derive(Debug)]
pub(super) struct Node {
    pub depth: usize,
    /// Ascending by the edges' first bytes (all distinct).
    pub children: Vec<Edge>,
    /// Set when the node is a stop.
    pub decision: Option<Decision>,
    /// The lowest entry index under this node (its policy line).
    pub first: usize,
}

#[derive(Debug)]
pub(super) struct Edge {
    /// The bytes from the parent's depth to the child's (at least one).
    pub label: Vec<u8>,
    pub node: Node,
}

/// The tree over `entries`; `masks[n]` is deny rule n's access bits;
/// `exec_list` tells whether the policy has an exec allow-list.
pub(super) fn build(entries: &[Entry], masks: &[u32], exec_list: bool) -> Node {
    // Stops, each with the lowest entry index that made it.
    let mut stops: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        stops.entry(e.key.clone()).or_insert(i);
        if e.strict {
            let mut k = e.key.clone();
            k.push(0);
            stops.entry(k).or_insert(i);
        }
    }
    let keys: Vec<(Vec<u8>, usize)> = stops.into_iter().collect();
    let mut by_key: BTreeMap<&[u8], Vec<&Entry>> = BTreeMap::new();
    for e in entries {
        by_key.entry(&e.key).or_default().push(e);
    }
    let ctx = Ctx { by_key, masks, exec_list };
    if keys.is_empty() {
        return Node { depth: 0, children: Vec::new(), decision: Some(ctx.decide(&[])), first: 0 };
    }
    let mut root = ctx.node(&keys, 0);
    if root.decision.is_none() {
        // The walk passed no stop: no pattern applies.
        root.decision = Some(ctx.decide(&[]));
    }
    root
}

struct Ctx<'a> {
    /// Entries by key prefix.
    by_key: BTreeMap<&'a [u8], Vec<&'a Entry>>,
    masks: &'a [u32],
    exec_list: bool,
}

impl Ctx<'_> {
    /// `keys`: sorted, distinct, sharing their first `depth` bytes.
    fn node(&self, keys: &[(Vec<u8>, usize)], depth: usize) -> Node {
        let first = keys.iter().map(|k| k.1).min().expect("a node has keys");
        let (decision, rest) = match keys.first() {
            Some((k, _)) if k.len() == depth => (Some(self.decide(k)), &keys[1..]),
            _ => (None, keys),
        };
        let mut children = Vec::new();
        let mut i = 0;
        while i < rest.len() {
            let b = rest[i].0[depth];
            let n = rest[i..].iter().take_while(|k| k.0[depth] == b).count();
            let group = &rest[i..i + n];
            // Sorted: the common prefix of the first and last is everyone's.
            let (a, z) = (&group[0].0, &group[n - 1].0);
            let end = depth + a[depth..].iter().zip(&z[depth..]).take_while(|(x, y)| x == y).count();
            children.push(Edge { label: a[depth..end].to_vec(), node: self.node(group, end) });
            i += n;
        }
        Node { depth, children, decision, first }
    }

    /// The decision for a walk whose deepest stop is `stop`.
    fn decide(&self, stop: &[u8]) -> Decision {
        let mut rules: Vec<usize> = Vec::new();
        let mut exec = false;
        let applying = (0..=stop.len())
            .filter_map(|n| self.by_key.get(&stop[..n]))
            .flatten()
            .filter(|e| !(e.strict && stop.get(e.key.len()) == Some(&0)));
        for e in applying {
            match e.target {
                Target::Deny(n) => rules.push(n),
                Target::Exec => exec = true,
            }
        }
        rules.sort_unstable();
        rules.dedup();
        let mut seen = 0u32;
        let mut deny = Vec::new();
        for n in rules {
            if self.masks[n] & !seen != 0 {
                deny.push(n);
                seen |= self.masks[n];
            }
        }
        Decision { deny, exec_deny: self.exec_list && !exec && seen & FMODE_EXEC == 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> PathPattern {
        PathPattern::parse(s)
    }

    #[test]
    fn keys_turn_boundaries_into_prefixes() {
        assert_eq!(key_of(&pat("/tmp")), (b"/tmp/".to_vec(), false));
        assert_eq!(key_of(&pat("/usr/lib/python3*")), (b"/usr/lib/python3".to_vec(), false));
        assert_eq!(key_of(&pat("/")), (Vec::new(), false));
        assert_eq!(key_of(&pat("/*")), (Vec::new(), false));
        assert_eq!(key_of(&pat("/tmp/*")), (b"/tmp/".to_vec(), true));
    }

    #[test]
    fn the_tree_shares_prefixes_and_ors_ancestors_in() {
        let entries = [
            Entry { key: b"/tmp/".to_vec(), strict: false, target: Target::Deny(0) },
            Entry { key: b"/tmp/a/".to_vec(), strict: false, target: Target::Deny(1) },
            Entry { key: b"/usr/bin/".to_vec(), strict: false, target: Target::Exec },
        ];
        let masks = [0x2, 0x1];
        let root = build(&entries, &masks, true);
        assert_eq!(root.decision, Some(Decision { deny: vec![], exec_deny: true }));
        assert_eq!(root.children.len(), 1);
        assert_eq!(root.children[0].label, b"/");
        let slash = &root.children[0].node;
        assert_eq!(
            slash.children.iter().map(|e| e.label.clone()).collect::<Vec<_>>(),
            [b"tmp/".to_vec(), b"usr/bin/".to_vec()]
        );
        let tmp = &slash.children[0].node;
        assert_eq!(tmp.decision, Some(Decision { deny: vec![0], exec_deny: true }));
        let a = &tmp.children[0].node;
        assert_eq!(a.depth, 7);
        assert_eq!(a.decision, Some(Decision { deny: vec![0, 1], exec_deny: true }));
        assert_eq!(slash.children[1].node.decision, Some(Decision { deny: vec![], exec_deny: false }));
    }

    #[test]
    fn covered_rules_are_dropped_and_strict_globs_stop_at_the_nul() {
        let entries = [
            Entry { key: b"/a/".to_vec(), strict: false, target: Target::Deny(0) },
            Entry { key: b"/a/b/".to_vec(), strict: true, target: Target::Deny(1) },
        ];
        let root = build(&entries, &[0x23, 0x1], false);
        let a = &root.children[0].node;
        assert_eq!(a.decision, Some(Decision { deny: vec![0], exec_deny: false }));
        let b = &a.children[0].node;
        assert_eq!(b.decision, Some(Decision { deny: vec![0], exec_deny: false }), "rule 1 is covered by rule 0");
        let root = build(&entries[1..], &[0, 0x1], false);
        let b = &root.children[0].node;
        assert_eq!(b.decision, Some(Decision { deny: vec![1], exec_deny: false }));
        assert_eq!(b.children[0].label, b"\0");
        assert_eq!(b.children[0].node.decision, Some(Decision { deny: vec![], exec_deny: false }));
    }
}
