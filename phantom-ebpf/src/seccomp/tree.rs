//! The dispatch tree over syscall numbers.
//!
//! The number line `0..=max` is cut into ranges ([`Segment`]s), each with one
//! leaf: consecutive numbers with the same unconditional result form one
//! range, gaps between the policy's syscalls take the default's range (a
//! "gap"), and a syscall with argument conditions is a range of its own.
//!
//! [`Tree::build`] searches the ranges with two kinds of node:
//!
//! * `if A >= split` (a range split, one instruction), and
//! * a `jeq` chain: for a small region whose non-gap ranges are single
//!   numbers, `if A == nr` per number, the rest falling to the gap's leaf.
//!   A lone syscall between two gaps then costs one comparison instead of
//!   two range splits.
//!
//! Large regions split at the middle range (balanced: `ceil(log2(ranges))`
//! comparisons); regions of at most [`SEARCH_LIMIT`] ranges pick, with
//! memoisation, the cheapest of: a chain of at most [`MAX_CHAIN`] numbers,
//! or a split at one of the three middle ranges. Cost is the deepest
//! comparison count in the region, then the sum over its syscall ranges
//! (so syscalls are favoured over gaps on ties). Everything is deterministic.

use std::collections::{BTreeMap, HashMap};

/// Numbers `lo..=hi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment<L> {
    pub lo: u32,
    pub hi: u32,
    pub leaf: L,
}

/// Cuts `0..=max` into segments. `points` are the numbers with their own
/// leaf; numbers not in it get `gap`. Adjacent segments are merged when
/// `merge` returns the merged leaf.
pub(crate) fn segments<L: Clone>(
    points: BTreeMap<u32, L>,
    gap: L,
    max: u32,
    merge: impl Fn(&L, &L) -> Option<L>,
) -> Vec<Segment<L>> {
    let mut raw: Vec<Segment<L>> = Vec::with_capacity(points.len() * 2 + 1);
    // The first number not yet covered; `None` once past u32::MAX.
    let mut next: Option<u32> = Some(0);
    for (nr, leaf) in points.into_iter().filter(|(nr, _)| *nr <= max) {
        if let Some(n) = next {
            if nr > n {
                raw.push(Segment { lo: n, hi: nr - 1, leaf: gap.clone() });
            }
        }
        raw.push(Segment { lo: nr, hi: nr, leaf });
        next = nr.checked_add(1);
    }
    if let Some(n) = next {
        if n <= max {
            raw.push(Segment { lo: n, hi: max, leaf: gap });
        }
    }
    let mut out: Vec<Segment<L>> = Vec::with_capacity(raw.len());
    for seg in raw {
        if let Some(last) = out.last_mut() {
            if let Some(m) = merge(&last.leaf, &seg.leaf) {
                last.leaf = m;
                last.hi = seg.hi;
                continue;
            }
        }
        out.push(seg);
    }
    out
}

/// Regions with at most this many ranges are searched for the cheapest
/// shape; larger ones split at the middle.
pub(crate) const SEARCH_LIMIT: usize = 64;
/// The longest `jeq` chain considered.
pub(crate) const MAX_CHAIN: usize = 4;

/// A search tree over segments (borrowing their leaves).
#[derive(Debug)]
pub(crate) enum Tree<'a, L> {
    Leaf(&'a L),
    /// Numbers `>= split` go right.
    Node {
        split: u32,
        left: Box<Tree<'a, L>>,
        right: Box<Tree<'a, L>>,
    },
    /// `if A == nr` for each point in order; the numbers left take `rest`.
    Chain {
        points: Vec<(u32, &'a L)>,
        rest: &'a L,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cost {
    max: u32,
    sum: u64,
}

#[derive(Debug, Clone, Copy)]
enum Choice {
    Leaf,
    Chain,
    Split(usize),
}

struct Planner<'s, L> {
    segs: &'s [Segment<L>],
    gap: Vec<bool>,
    /// Prefix counts of non-gap segments.
    points: Vec<u64>,
    memo: HashMap<(usize, usize), (Cost, Choice)>,
}

impl<'s, L> Planner<'s, L> {
    fn npoints(&self, i: usize, j: usize) -> u64 {
        self.points[j] - self.points[i]
    }

    /// For a chain over `i..j`: the peeled segments and the rest's index.
    fn chain(&self, i: usize, j: usize) -> Option<(Vec<usize>, usize)> {
        let all: Vec<usize> = (i..j).collect();
        if all.iter().any(|&t| !self.gap[t] && self.segs[t].lo != self.segs[t].hi) {
            return None;
        }
        let (peeled, rest): (Vec<usize>, usize) = match all.iter().find(|&&t| self.gap[t]) {
            Some(&g) => (all.iter().copied().filter(|&t| !self.gap[t]).collect(), g),
            // No gap: all but the last are peeled.
            None => (all[..all.len() - 1].to_vec(), j - 1),
        };
        (peeled.len() <= MAX_CHAIN).then_some((peeled, rest))
    }

    fn plan(&mut self, i: usize, j: usize) -> Cost {
        if let Some(&(c, _)) = self.memo.get(&(i, j)) {
            return c;
        }
        let (cost, choice) = if j - i == 1 {
            (Cost { max: 0, sum: 0 }, Choice::Leaf)
        } else {
            let mut best: Option<(Cost, Choice)> = None;
            let len = j - i;
            if len <= SEARCH_LIMIT {
                if let Some((peeled, rest)) = self.chain(i, j) {
                    let m = peeled.len() as u64;
                    let rest_is_point = !self.gap[rest];
                    let sum = m * (m + 1) / 2 + if rest_is_point { m } else { 0 };
                    best = Some((Cost { max: m as u32, sum }, Choice::Chain));
                }
            }
            let mid = i + len / 2;
            let cands: Vec<usize> = if len <= SEARCH_LIMIT {
                [mid, mid - 1, mid + 1].into_iter().filter(|&t| t > i && t < j).collect()
            } else {
                vec![mid]
            };
            for t in cands {
                let (l, r) = (self.plan(i, t), self.plan(t, j));
                let c = Cost { max: 1 + l.max.max(r.max), sum: l.sum + r.sum + self.npoints(i, j) };
                if best.is_none_or(|b| c < b.0) {
                    best = Some((c, Choice::Split(t)));
                }
            }
            best.expect("a region of two or more segments can be split")
        };
        self.memo.insert((i, j), (cost, choice));
        cost
    }

    fn tree(&self, i: usize, j: usize) -> Tree<'s, L> {
        match self.memo.get(&(i, j)).map(|m| m.1).unwrap_or(Choice::Leaf) {
            Choice::Leaf => Tree::Leaf(&self.segs[i].leaf),
            Choice::Chain => {
                let (peeled, rest) = self.chain(i, j).expect("chain was eligible");
                Tree::Chain {
                    points: peeled.iter().map(|&t| (self.segs[t].lo, &self.segs[t].leaf)).collect(),
                    rest: &self.segs[rest].leaf,
                }
            }
            Choice::Split(t) => {
                Tree::Node { split: self.segs[t].lo, left: Box::new(self.tree(i, t)), right: Box::new(self.tree(t, j)) }
            }
        }
    }
}

impl<'a, L> Tree<'a, L> {
    /// Builds the tree; `segs` must be non-empty, sorted and contiguous;
    /// `is_gap` tells the default's ranges.
    pub(crate) fn build(segs: &'a [Segment<L>], is_gap: impl Fn(&L) -> bool) -> Tree<'a, L> {
        assert!(!segs.is_empty(), "a tree needs at least one segment");
        let gap: Vec<bool> = segs.iter().map(|s| is_gap(&s.leaf)).collect();
        let mut points = vec![0u64; segs.len() + 1];
        for (t, g) in gap.iter().enumerate() {
            points[t + 1] = points[t] + u64::from(!g);
        }
        let mut p = Planner { segs, gap, points, memo: HashMap::new() };
        p.plan(0, segs.len());
        p.tree(0, segs.len())
    }

    /// Comparisons on the longest path.
    #[cfg(test)]
    pub(crate) fn depth(&self) -> usize {
        match self {
            Tree::Leaf(_) => 0,
            Tree::Node { left, right, .. } => 1 + left.depth().max(right.depth()),
            Tree::Chain { points, .. } => points.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &char, b: &char) -> Option<char> {
        (a == b).then_some(*a)
    }

    #[test]
    fn gaps_and_merges() {
        let points = BTreeMap::from([(1, 'a'), (2, 'a'), (3, 'b'), (5, 'd')]);
        let segs = segments(points, 'd', 9, same);
        let got: Vec<(u32, u32, char)> = segs.iter().map(|s| (s.lo, s.hi, s.leaf)).collect();
        assert_eq!(got, vec![(0, 0, 'd'), (1, 2, 'a'), (3, 3, 'b'), (4, 9, 'd')]);
    }

    #[test]
    fn covers_the_top_of_the_range() {
        let segs = segments(BTreeMap::from([(u32::MAX, 'x')]), 'd', u32::MAX, same);
        assert_eq!(segs.len(), 2);
        let segs = segments(BTreeMap::from([(0, 'x')]), 'd', 0, same);
        assert_eq!(segs.len(), 1);
    }

    #[test]
    fn never_deeper_than_balanced() {
        for n in 1..200u32 {
            // Wide ranges: no chains possible, pure splits.
            let segs: Vec<Segment<u32>> = (0..n).map(|i| Segment { lo: i * 2, hi: i * 2 + 1, leaf: i }).collect();
            let t = Tree::build(&segs, |_| false);
            let want = (n as f64).log2().ceil() as usize;
            assert_eq!(t.depth(), want, "n = {n}");
        }
    }

    #[test]
    fn lone_syscall_is_one_comparison() {
        let segs = segments(BTreeMap::from([(5, 'a')]), 'd', 100, same);
        let t = Tree::build(&segs, |l| *l == 'd');
        assert!(matches!(&t, Tree::Chain { points, rest: 'd' } if points == &vec![(5, &'a')]), "{t:?}");
    }
}
