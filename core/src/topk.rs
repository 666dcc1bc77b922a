//! Fixed-capacity top-k selection over caller-provided slots.
//!
//! A [`TopK`] keeps the `k` best `(score, index)` pairs seen so far in `k` slots borrowed from
//! the arena (4 bytes of score and 2 bytes of index per slot: 6 bytes per slot). Once full, the
//! slots form a binary min-heap whose root is the worst kept pair, so the common case of a
//! streamed pair that does not make the cut costs one comparison, and an accepted pair costs
//! `O(log k)`; before that, pairs are simply appended.
//!
//! Order: a pair is better when its rank (the score, or its magnitude, see [`Rank`]) is larger;
//! on equal rank the lower index is better, so the selection is deterministic. A NaN rank never
//! compares better than a kept pair, so it is only kept while free slots remain.

/// What a score is ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rank {
    /// The score itself (attention scores, ReLU activations).
    Value,
    /// The absolute value of the score (signed activations); the kept score keeps its sign.
    Magnitude,
}

/// The `k` best `(score, index)` pairs of a stream, in `k` caller-provided slots.
pub struct TopK<'a> {
    scores: &'a mut [f32],
    idx: &'a mut [u16],
    len: usize,
    /// Whether the slots are ordered as a heap (only once they are full).
    heap: bool,
    rank: Rank,
}

/// Bit of [`TopK::state`] that says the slots are heap-ordered.
const HEAP_BIT: u32 = 1 << 31;

impl<'a> TopK<'a> {
    /// An empty selector whose capacity `k` is `min(scores.len(), idx.len(), 2^31 - 1)` slots.
    pub fn new(scores: &'a mut [f32], idx: &'a mut [u16], rank: Rank) -> Self {
        let k = scores.len().min(idx.len()).min((HEAP_BIT - 1) as usize);
        let (scores, _) = scores.split_at_mut(k);
        let (idx, _) = idx.split_at_mut(k);
        TopK {
            scores,
            idx,
            len: 0,
            heap: false,
            rank,
        }
    }

    /// The selection's state (fill count and slot order) as an opaque `u32`, for
    /// [`TopK::resume`]; 0 is the empty selection.
    pub fn state(&self) -> u32 {
        self.len as u32 | if self.heap { HEAP_BIT } else { 0 }
    }

    /// Resumes a selection over the slots a previous selector left in `state` (see
    /// [`TopK::state`]), so that many selections can live in one arena buffer without a struct
    /// each. The slots must be those of that selector, untouched since.
    pub fn resume(scores: &'a mut [f32], idx: &'a mut [u16], state: u32, rank: Rank) -> Self {
        let mut t = TopK::new(scores, idx, rank);
        t.len = ((state & !HEAP_BIT) as usize).min(t.capacity());
        t.heap = state & HEAP_BIT != 0 && t.len == t.capacity();
        t
    }

    /// Capacity in slots.
    pub fn capacity(&self) -> usize {
        self.scores.len()
    }

    /// Number of pairs kept.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The worst kept score once the slots are full and heap-ordered (that is, after the
    /// first pair offered to full slots): a later pair is kept only if its rank beats it
    /// (`Rank::Value`: a larger score). `None` before.
    pub fn worst(&self) -> Option<f32> {
        (self.heap && self.len > 0).then(|| self.scores[0])
    }

    /// Forgets every kept pair.
    pub fn clear(&mut self) {
        self.len = 0;
        self.heap = false;
    }

    #[inline]
    fn key(&self, s: f32) -> f32 {
        match self.rank {
            Rank::Value => s,
            Rank::Magnitude => s.abs(),
        }
    }

    /// True when the pair in slot `a` is worse than the pair in slot `b`.
    #[inline]
    fn worse(&self, a: usize, b: usize) -> bool {
        let (ka, kb) = (self.key(self.scores[a]), self.key(self.scores[b]));
        ka < kb || (ka == kb && self.idx[a] > self.idx[b])
    }

    /// Offers the pair `(score, index)`; keeps it if it is among the `k` best seen so far.
    /// Indices may come in any order, but streaming them in increasing order (as attention and
    /// the feed-forward do) makes ties a single comparison.
    #[inline]
    pub fn push(&mut self, score: f32, index: u16) {
        let k = self.capacity();
        if self.len < k {
            // Until the slots are full every pair is kept: append. They are ordered as a heap
            // only when a pair arrives with no free slot (O(k) once, instead of a sift per
            // pair, and never when all pairs fit, as with k >= the number of keys).
            self.scores[self.len] = score;
            self.idx[self.len] = index;
            self.len += 1;
            return;
        }
        if k == 0 {
            return;
        }
        if !self.heap {
            for start in (0..k / 2).rev() {
                self.sift_down(start, k);
            }
            self.heap = true;
        }
        // Reject test against the worst kept pair: the common case once the heap is full.
        let (kn, kr) = (self.key(score), self.key(self.scores[0]));
        if !(kn > kr || (kn == kr && index < self.idx[0])) {
            return;
        }
        self.scores[0] = score;
        self.idx[0] = index;
        self.sift_down(0, k);
    }

    /// [`TopK::sift`] for the selection heap (the worst kept pair on top).
    fn sift_down(&mut self, c: usize, end: usize) {
        self.sift(c, end, Self::worse);
    }

    /// Moves slot `c` down the heap on `..end` in which slot `a` belongs above slot `b` when
    /// `above(self, a, b)`.
    #[inline(always)]
    fn sift(&mut self, mut c: usize, end: usize, above: impl Fn(&Self, usize, usize) -> bool) {
        loop {
            let l = 2 * c + 1;
            if l >= end {
                break;
            }
            let r = l + 1;
            let m = if r < end && above(self, r, l) { r } else { l };
            if !above(self, m, c) {
                break;
            }
            self.scores.swap(c, m);
            self.idx.swap(c, m);
            c = m;
        }
    }

    /// Sorts the kept pairs by increasing index (in place, no allocation; heapsort) and returns
    /// them as `(scores, indices)`. Consumes the selection: call [`TopK::clear`] before reuse.
    pub fn sorted_by_index(&mut self) -> (&mut [f32], &[u16]) {
        let n = self.len;
        self.heap = false;
        // Pairs appended in increasing index order and never displaced are sorted already
        // (attention with k >= the visible keys).
        if self.idx[..n].windows(2).all(|w| w[0] < w[1]) {
            return (&mut self.scores[..n], &self.idx[..n]);
        }
        // Max-heap on the index, then move the largest to the end, repeatedly.
        for start in (0..n / 2).rev() {
            self.sift_down_idx(start, n);
        }
        for end in (1..n).rev() {
            self.scores.swap(0, end);
            self.idx.swap(0, end);
            self.sift_down_idx(0, end);
        }
        (&mut self.scores[..n], &self.idx[..n])
    }

    /// [`TopK::sift`] for a max-heap on the index.
    fn sift_down_idx(&mut self, c: usize, end: usize) {
        self.sift(c, end, |t, a, b| t.idx[a] > t.idx[b]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Naive selection: sort all pairs best first (rank desc, index asc), keep `k`, sort by index.
    fn naive(scores: &[f32], k: usize, rank: Rank) -> ([u16; 64], usize) {
        let key = |s: f32| if rank == Rank::Value { s } else { s.abs() };
        let mut order = [0u16; 64];
        for (i, o) in order.iter_mut().enumerate().take(scores.len()) {
            *o = i as u16;
        }
        let order = &mut order[..scores.len()];
        order.sort_by(|&a, &b| {
            key(scores[b as usize])
                .partial_cmp(&key(scores[a as usize]))
                .unwrap()
                .then(a.cmp(&b))
        });
        let n = k.min(scores.len());
        let mut kept = [0u16; 64];
        kept[..n].copy_from_slice(&order[..n]);
        kept[..n].sort();
        (kept, n)
    }

    fn select(scores: &[f32], k: usize, rank: Rank, out_s: &mut [f32], out_i: &mut [u16]) -> usize {
        select_in(scores, k, rank, false, out_s, out_i)
    }

    /// Pushes in increasing index order, or decreasing when `reverse`.
    fn select_in(
        scores: &[f32],
        k: usize,
        rank: Rank,
        reverse: bool,
        out_s: &mut [f32],
        out_i: &mut [u16],
    ) -> usize {
        let mut s = [0f32; 64];
        let mut ix = [0u16; 64];
        // Each pair goes through a selector resumed from the previous state, as the attention
        // and feed-forward loops do.
        let mut state = 0;
        for j in 0..scores.len() {
            let j = if reverse { scores.len() - 1 - j } else { j };
            let mut r = TopK::resume(&mut s[..k], &mut ix[..k], state, rank);
            r.push(scores[j], j as u16);
            state = r.state();
        }
        let mut t = TopK::resume(&mut s[..k], &mut ix[..k], state, rank);
        let (ks, ki) = t.sorted_by_index();
        out_s[..ks.len()].copy_from_slice(ks);
        out_i[..ki.len()].copy_from_slice(ki);
        ks.len()
    }

    proptest! {
        // Scores drawn from a few integers so that ties are frequent.
        #[test]
        fn matches_naive_selection(
            raw in proptest::collection::vec(-4i8..=4, 0..64),
            k in 1usize..64,
            magnitude in any::<bool>(),
            reverse in any::<bool>(),
        ) {
            let rank = if magnitude { Rank::Magnitude } else { Rank::Value };
            let scores: [f32; 64] = core::array::from_fn(|i| raw.get(i).copied().unwrap_or(0) as f32);
            let scores = &scores[..raw.len()];
            let (want, n) = naive(scores, k, rank);
            let mut got_s = [0f32; 64];
            let mut got_i = [0u16; 64];
            let m = select_in(scores, k, rank, reverse, &mut got_s, &mut got_i);
            prop_assert_eq!(m, n);
            prop_assert_eq!(&got_i[..m], &want[..n]);
            for j in 0..m {
                prop_assert_eq!(got_s[j], scores[got_i[j] as usize]);
            }
        }
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        let scores = [1.0, 2.0, 2.0, 2.0, 0.5, 2.0];
        let mut s = [0f32; 8];
        let mut i = [0u16; 8];
        let n = select(&scores, 2, Rank::Value, &mut s, &mut i);
        assert_eq!(&i[..n], &[1, 2]);
        // Out-of-order pushes obey the same rule.
        let mut ss = [0f32; 2];
        let mut ii = [0u16; 2];
        let mut t = TopK::new(&mut ss, &mut ii, Rank::Value);
        for j in [5u16, 3, 2, 1] {
            t.push(2.0, j);
        }
        assert_eq!(t.sorted_by_index().1, &[1, 2]);
    }

    #[test]
    fn magnitude_keeps_the_sign() {
        let scores = [0.1, -3.0, 2.0, -0.5];
        let mut s = [0f32; 4];
        let mut i = [0u16; 4];
        let n = select(&scores, 2, Rank::Magnitude, &mut s, &mut i);
        assert_eq!(&i[..n], &[1, 2]);
        assert_eq!(&s[..n], &[-3.0, 2.0]);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut t = TopK::new(&mut [], &mut [], Rank::Value);
        t.push(1.0, 0);
        assert!(t.is_empty());
        assert_eq!(t.sorted_by_index().1.len(), 0);
    }
}
