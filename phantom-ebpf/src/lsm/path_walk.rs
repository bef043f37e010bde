//! Emits the walk of a `path_trie.rs` tree as straight-line code: no
//! map, no loop, only loads at constant offsets from r9 (the key).
//!
//! At a node of depth `d`: one child -> its whole edge is compared in 8-,
//! 4-, 2- and 1-byte chunks starting at `d`; several -> the byte at `d` is
//! loaded once and dispatched (a `jeq` chain for up to [`CHAIN`] children,
//! else a binary search on the byte), then the rest of the chosen edge is
//! compared. Any mismatch jumps to the decision block of the deepest stop
//! passed, which the code knows statically. Decision blocks are shared by
//! every stop with the same [`Decision`]: one `jset` per deny rule on the
//! access bits (r8) to that rule's denial, then the exec-list test, then
//! `allow`.
//!
//! Labels this code jumps to and the caller defines: `allow`, `deny<n>`
//! for each rule in [`Used::rules`], and `exec_deny` when [`Used::exec`].

use super::emit::Emitter;
use super::file_open::FMODE_EXEC;
use super::path_trie::{Decision, Node};
use crate::bpf::{Insn, Reg::*, SourceLoc};
use std::collections::{BTreeMap, BTreeSet};

/// Up to this many children the dispatch is a chain of `jeq`.
const CHAIN: usize = 4;

/// Policy positions: of each entry (by index), of each deny rule, of the
/// exec list, and the program's own (when one of those has none).
pub(super) struct Locs<'a> {
    pub entries: &'a [Option<SourceLoc>],
    pub rules: &'a [Option<SourceLoc>],
    pub exec: Option<SourceLoc>,
    pub default: Option<SourceLoc>,
}

/// The denials the emitted code jumps to.
#[derive(Debug, Default)]
pub(super) struct Used {
    pub rules: BTreeSet<usize>,
    pub exec: bool,
}

/// Emits the walk from `root` and the decision blocks after it.
/// `masks[n]`: deny rule n's access bits.
pub(super) fn emit(e: &mut Emitter, root: &Node, masks: &[u32], locs: &Locs) -> Used {
    let mut w = Walk { e, masks, locs, blocks: BTreeMap::new(), labels: 0, used: Used::default() };
    let fallback = w.block(root.decision.as_ref().expect("the root always decides"));
    w.node(root, &fallback);
    w.blocks();
    w.used
}

struct Walk<'e, 'a> {
    e: &'e mut Emitter,
    masks: &'a [u32],
    locs: &'a Locs<'a>,
    blocks: BTreeMap<Decision, String>,
    labels: usize,
    used: Used,
}

impl Walk<'_, '_> {
    fn fresh(&mut self, what: &str) -> String {
        self.labels += 1;
        format!("{what}{}", self.labels)
    }

    fn loc(&self, l: &Option<SourceLoc>) -> Option<SourceLoc> {
        l.clone().or_else(|| self.locs.default.clone())
    }

    /// The position of the code under a node: its first entry's.
    fn node_loc(&self, n: &Node) -> Option<SourceLoc> {
        self.loc(self.locs.entries.get(n.first).unwrap_or(&None))
    }

    /// The label of `d`'s block (emitted later); `allow` needs none.
    fn block(&mut self, d: &Decision) -> String {
        if d.allows_all() {
            return "allow".into();
        }
        if let Some(l) = self.blocks.get(d) {
            return l.clone();
        }
        let l = format!("decide{}", self.blocks.len());
        self.blocks.insert(d.clone(), l.clone());
        l
    }

    /// The code of `n`, whose key prefix the walk has matched; `fallback`
    /// decides when nothing deeper matches.
    fn node(&mut self, n: &Node, fallback: &str) {
        let here = match &n.decision {
            Some(d) => self.block(d),
            None => fallback.to_string(),
        };
        self.e.loc = self.node_loc(n);
        match n.children.as_slice() {
            [] => self.e.push(Insn::ja(here.as_str())),
            [only] => {
                self.e.compare_bytes(R9, n.depth, &only.label, &here);
                self.node(&only.node, &here);
            }
            many => {
                self.e.push(Insn::ldx_b(R1, R9, n.depth as i16));
                let kids: Vec<(u8, String)> = many.iter().map(|c| (c.label[0], self.fresh("byte"))).collect();
                self.dispatch(&kids, &here);
                for (c, (_, l)) in many.iter().zip(kids) {
                    self.e.label(l);
                    self.e.loc = self.node_loc(&c.node);
                    self.e.compare_bytes(R9, n.depth + 1, &c.label[1..], &here);
                    self.node(&c.node, &here);
                }
            }
        }
    }

    /// Jumps on r1 (the byte) to its child's label, else to `miss`.
    fn dispatch(&mut self, kids: &[(u8, String)], miss: &str) {
        if kids.len() <= CHAIN {
            for (b, l) in kids {
                self.e.push(Insn::jeq_imm(R1, i32::from(*b), l.as_str()));
            }
            self.e.push(Insn::ja(miss));
            return;
        }
        let mid = kids.len() / 2;
        let upper = self.fresh("from");
        self.e.push(Insn::jge_imm(R1, i32::from(kids[mid].0), upper.as_str()));
        self.dispatch(&kids[..mid], miss);
        self.e.label(upper);
        self.dispatch(&kids[mid..], miss);
    }

    /// Each decision block: the deny rules in order, the exec-list test,
    /// then allow.
    fn blocks(&mut self) {
        for (d, label) in std::mem::take(&mut self.blocks) {
            self.e.label(label);
            for &n in &d.deny {
                self.e.loc = self.loc(&self.locs.rules[n]);
                self.e.push(Insn::jset_imm(R8, self.masks[n] as i32, format!("deny{n}")));
                self.used.rules.insert(n);
            }
            if d.exec_deny {
                self.e.loc = self.loc(&self.locs.exec);
                self.e.push(Insn::jset_imm(R8, FMODE_EXEC as i32, "exec_deny"));
                self.used.exec = true;
            }
            self.e.push(Insn::ja("allow"));
        }
    }
}
