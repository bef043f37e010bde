//! The dispatch tree over syscall numbers.
//!
//! The number line `0..=max` is cut into ranges ([`Segment`]s), each with one
//! leaf: consecutive numbers with the same unconditional result form one
//! range, gaps between the policy's syscalls take the default's range (a
//! "gap"), and a syscall with argument conditions is a range of its own.
//!
//! [`Tree::build_with`] searches the ranges with two kinds of node:
//!
//! * `if A >= split` (a range split, one instruction), and
//! * a `jeq` chain: for a small region whose syscall ranges hold at most
//!   [`MAX_CHAIN`] numbers in all, `if A == nr` per number (a merged range of
//!   a few numbers is tested number by number), the rest falling to the
//!   gap's leaf. A lone syscall between two gaps then costs one comparison
//!   instead of two range splits.
//!
//! Every range may come with a depth budget (the most comparisons before it
//! is decided; [`Limits`]). The planner minimises, in this order, the
//! comparisons beyond the budgets, the deepest comparison count in a
//! region, and the sum over its syscall ranges (so syscalls are favoured
//! over gaps on ties). Unconstrained, regions of at most [`SEARCH_LIMIT`]
//! ranges try a chain and splits at the three middle ranges, larger ones
//! split at the middle. Where that shape breaks a budget, the region is
//! searched again per depth: up to [`BOUND_SEARCH_LIMIT`] ranges every split,
//! larger ones the middle ranges and the best [`HINTS_TRIED`] hinted splits
//! (the caller's idea of a shape that meets the budgets). Chain tests run
//! tightest budget first. Everything is memoised and deterministic.

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

/// Regions with at most this many ranges try a chain and splits at the
/// three middle ranges; larger ones split at the middle.
pub(crate) const SEARCH_LIMIT: usize = 64;
/// Under binding budgets, regions with at most this many ranges try every
/// split.
pub(crate) const BOUND_SEARCH_LIMIT: usize = 16;
/// Hinted splits tried per region under binding budgets.
pub(crate) const HINTS_TRIED: usize = 4;
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

/// What the planner minimises, in this order: comparisons beyond the
/// segments' budgets, the deepest comparison count, the sum over syscall
/// ranges, the sum over gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cost {
    over: u32,
    max: u32,
    sum: u64,
    gaps: u64,
}

#[derive(Debug, Clone, Copy)]
enum Choice {
    Leaf,
    Chain,
    Split(usize),
}

/// Limits for [`Tree::build_with`].
#[derive(Default)]
pub(crate) struct Limits<'f> {
    /// The most comparisons that may be executed before every number in
    /// `lo..=hi` is decided (the smallest budget of those numbers; for a
    /// chain point, its `jeq` included); `None`: no limit.
    pub budget: Option<Box<dyn Fn(u32, u32) -> u32 + 'f>>,
    /// Per segment index `t`: a split before `t` worth trying in large
    /// regions, with its rank (lower first).
    pub hints: Vec<Option<u32>>,
}

/// A `jeq` chain over a region: the numbers tested, in order, with their
/// segments, and the segment the numbers left over take.
struct ChainPlan {
    points: Vec<(u32, usize)>,
    rest: usize,
}

struct Planner<'s, 'f, L> {
    segs: &'s [Segment<L>],
    gap: Vec<bool>,
    /// Per segment: the budget of its numbers (the smallest).
    budget: Vec<u32>,
    budget_of: Option<Box<dyn Fn(u32, u32) -> u32 + 'f>>,
    hints: Vec<Option<u32>>,
    /// Prefix counts of non-gap segments.
    points: Vec<u64>,
    /// Keyed by region and the comparisons executed before it.
    memo: HashMap<(u32, u32, u32), (Cost, Choice)>,
}

impl<'s, L> Planner<'s, '_, L> {
    fn npoints(&self, i: usize, j: usize) -> u64 {
        self.points[j] - self.points[i]
    }

    fn ngaps(&self, i: usize, j: usize) -> u64 {
        (j - i) as u64 - self.npoints(i, j)
    }

    fn point_budget(&self, nr: u32) -> u32 {
        self.budget_of.as_ref().map_or(u32::MAX, |f| f(nr, nr))
    }

    /// For a chain over `i..j`: every number of the syscall segments is
    /// tested (at most [`MAX_CHAIN`]), the gaps take the rest; without a
    /// gap, the last segment does. Tightest budget first, then by number.
    fn chain(&self, i: usize, j: usize) -> Option<ChainPlan> {
        let rest = (i..j).find(|&t| self.gap[t]).unwrap_or(j - 1);
        let mut points = Vec::new();
        for t in (i..j).filter(|&t| !self.gap[t] && t != rest) {
            let s = &self.segs[t];
            if u64::from(s.hi - s.lo) + 1 + points.len() as u64 > MAX_CHAIN as u64 {
                return None;
            }
            points.extend((s.lo..=s.hi).map(|nr| (nr, t)));
        }
        points.sort_by_key(|&(nr, _)| (self.point_budget(nr), nr));
        Some(ChainPlan { points, rest })
    }

    fn chain_cost(&self, i: usize, j: usize, depth: Option<u32>) -> Option<Cost> {
        let c = self.chain(i, j)?;
        let m = c.points.len() as u32;
        let mut over = 0;
        if let Some(d) = depth {
            for (k, &(nr, _)) in c.points.iter().enumerate() {
                over += (d + k as u32 + 1).saturating_sub(self.point_budget(nr));
            }
            // Every segment not tested takes the rest's leaf after all tests.
            for t in (i..j).filter(|&t| self.gap[t] || t == c.rest) {
                over += (d + m).saturating_sub(self.budget[t]);
            }
        }
        let m64 = u64::from(m);
        let sum = m64 * (m64 + 1) / 2 + if self.gap[c.rest] { 0 } else { m64 };
        Some(Cost { over, max: m, sum, gaps: m64 * self.ngaps(i, j) })
    }

    /// The cheapest shape for segments `i..j`, `depth` comparisons below
    /// the root; `None`: budgets ignored.
    fn plan(&mut self, i: usize, j: usize, depth: Option<u32>) -> Cost {
        let key = (i as u32, j as u32, depth.unwrap_or(u32::MAX));
        if let Some(&(c, _)) = self.memo.get(&key) {
            return c;
        }
        if let Some(d) = depth {
            // Where even the unconstrained shape stays within every budget,
            // it is the answer.
            let free = self.plan(i, j, None);
            let floor = self.budget[i..j].iter().copied().min().unwrap_or(u32::MAX);
            if d.saturating_add(free.max) <= floor {
                return free;
            }
        }
        let over = |b: u32, at: u32| depth.map_or(0, |d| (d + at).saturating_sub(b));
        let (cost, choice) = if j - i == 1 {
            (Cost { over: over(self.budget[i], 0), max: 0, sum: 0, gaps: 0 }, Choice::Leaf)
        } else {
            let mut best: Option<(Cost, Choice)> = None;
            let len = j - i;
            if len <= 2 * MAX_CHAIN + 1 {
                if let Some(c) = self.chain_cost(i, j, depth) {
                    best = Some((c, Choice::Chain));
                }
            }
            let mid = i + len / 2;
            let mut cands: Vec<usize> = Vec::new();
            if depth.is_some() && len <= BOUND_SEARCH_LIMIT {
                // Middle first: ties go to the more balanced split.
                cands.extend(i + 1..j);
                cands.sort_by_key(|&t| (t.abs_diff(mid), t < mid));
            } else {
                let near: &[usize] = if len <= SEARCH_LIMIT { &[mid, mid - 1, mid + 1] } else { &[mid] };
                // Under budgets, also the caller's hinted splits.
                let mut hints: Vec<usize> = Vec::new();
                if depth.is_some() {
                    hints = (i + 1..j).filter(|&t| self.hints[t].is_some()).collect();
                    hints.sort_by_key(|&t| (self.hints[t], t.abs_diff(mid)));
                    hints.truncate(HINTS_TRIED);
                }
                for &t in near.iter().chain(&hints) {
                    if t > i && t < j && !cands.contains(&t) {
                        cands.push(t);
                    }
                }
            }
            let below = depth.map(|d| d + 1);
            for t in cands {
                let (l, r) = (self.plan(i, t, below), self.plan(t, j, below));
                let c = Cost {
                    over: l.over + r.over,
                    max: 1 + l.max.max(r.max),
                    sum: l.sum + r.sum + self.npoints(i, j),
                    gaps: l.gaps + r.gaps + self.ngaps(i, j),
                };
                if best.is_none_or(|b| c < b.0) {
                    best = Some((c, Choice::Split(t)));
                }
            }
            best.expect("a region of two or more segments can be split")
        };
        self.memo.insert(key, (cost, choice));
        cost
    }

    fn tree(&self, i: usize, j: usize, depth: Option<u32>) -> Tree<'s, L> {
        let at = |d: Option<u32>| self.memo.get(&(i as u32, j as u32, d.unwrap_or(u32::MAX))).map(|m| m.1);
        // A constrained region that took the unconstrained shape has no
        // entry of its own.
        let (choice, depth) = match at(depth) {
            Some(c) => (c, depth),
            None => (at(None).unwrap_or(Choice::Leaf), None),
        };
        match choice {
            Choice::Leaf => Tree::Leaf(&self.segs[i].leaf),
            Choice::Chain => {
                let c = self.chain(i, j).expect("chain was eligible");
                Tree::Chain {
                    points: c.points.iter().map(|&(nr, t)| (nr, &self.segs[t].leaf)).collect(),
                    rest: &self.segs[c.rest].leaf,
                }
            }
            Choice::Split(t) => {
                let below = depth.map(|d| d + 1);
                Tree::Node {
                    split: self.segs[t].lo,
                    left: Box::new(self.tree(i, t, below)),
                    right: Box::new(self.tree(t, j, below)),
                }
            }
        }
    }
}

impl<'a, L> Tree<'a, L> {
    /// Builds the tree; `segs` must be non-empty, sorted and contiguous;
    /// `is_gap` tells the default's ranges.
    #[cfg(test)]
    pub(crate) fn build(segs: &'a [Segment<L>], is_gap: impl Fn(&L) -> bool) -> Tree<'a, L> {
        Tree::build_with(segs, is_gap, Limits::default())
    }

    /// [`Tree::build`] keeping within the depth budgets where it can.
    pub(crate) fn build_with(segs: &'a [Segment<L>], is_gap: impl Fn(&L) -> bool, limits: Limits<'_>) -> Tree<'a, L> {
        assert!(!segs.is_empty(), "a tree needs at least one segment");
        let gap: Vec<bool> = segs.iter().map(|s| is_gap(&s.leaf)).collect();
        let mut points = vec![0u64; segs.len() + 1];
        for (t, g) in gap.iter().enumerate() {
            points[t + 1] = points[t] + u64::from(!g);
        }
        let budget: Vec<u32> =
            segs.iter().map(|s| limits.budget.as_ref().map_or(u32::MAX, |f| f(s.lo, s.hi))).collect();
        let mut hints = limits.hints;
        hints.resize(segs.len(), None);
        let mut p = Planner { segs, gap, budget, budget_of: limits.budget, hints, points, memo: HashMap::new() };
        p.plan(0, segs.len(), Some(0));
        p.tree(0, segs.len(), Some(0))
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

    /// Comparisons before each number of `nrs` is decided.
    fn depth_of(t: &Tree<'_, char>, nr: u32) -> u32 {
        match t {
            Tree::Leaf(_) => 0,
            Tree::Node { split, left, right } => 1 + depth_of(if nr >= *split { right } else { left }, nr),
            Tree::Chain { points, .. } => match points.iter().position(|p| p.0 == nr) {
                Some(k) => k as u32 + 1,
                None => points.len() as u32,
            },
        }
    }

    #[test]
    fn budgets_skew_the_tree() {
        // Balanced, the low gap would take 3 comparisons; its budget is 1.
        let points = BTreeMap::from([(40, 'a'), (41, 'b'), (104, 'c'), (105, 'c'), (106, 'c'), (200, 'e')]);
        let segs = segments(points, 'd', 1000, same);
        let free = Tree::build(&segs, |l| *l == 'd');
        assert!(depth_of(&free, 0) > 1);
        let budget = |lo: u32, _hi: u32| if lo < 40 { 1 } else { 6 };
        let t = Tree::build_with(&segs, |l| *l == 'd', Limits { budget: Some(Box::new(budget)), hints: Vec::new() });
        assert_eq!(depth_of(&t, 0), 1, "{t:?}");
        for s in &segs {
            for nr in [s.lo, s.hi] {
                assert!(depth_of(&t, nr) <= budget(nr, nr), "{nr}: {t:?}");
            }
        }
    }

    #[test]
    fn chains_test_merged_ranges_number_by_number() {
        // 0x38..=0x39 is one range; a chain tests both numbers, tightest
        // budget first.
        let segs = segments(BTreeMap::from([(0x38, 'a'), (0x39, 'a')]), 'd', 0x100, same);
        assert_eq!(segs.len(), 3);
        let budget = |lo: u32, hi: u32| if (lo..=hi).contains(&0x39) { 1 } else { 2 };
        let t = Tree::build_with(&segs, |l| *l == 'd', Limits { budget: Some(Box::new(budget)), hints: Vec::new() });
        assert!(
            matches!(&t, Tree::Chain { points, rest: 'd' } if points == &vec![(0x39, &'a'), (0x38, &'a')]),
            "{t:?}"
        );
    }
}
