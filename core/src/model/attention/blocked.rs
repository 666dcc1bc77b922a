//! The blocked paths of [`crate::kernels::Kernels::Fast`]: blocks of up to 16 queries (lanes)
//! against tiles and key blocks, through the block kernels of [`crate::kernels`].

use super::params::VIS_STRIDE;
use super::{AttnScratch, Ctx, FAST};
use crate::arena::padded;
use crate::kernels::attention::{
    ATTN_BLOCK, ATTN_LANES, ATTN_TILE, AttnDenseState, AttnTopkWork, attn_transpose_queries,
};
use crate::kernels::{AttnSoftmaxArgs, AttnTile, AttnTopkArgs, KvRows, attn_softmax_kv_rows};
use crate::topk::{Rank, TopK};

impl Ctx<'_> {
    /// Visibility of the tile of keys `t0..t0 + nk` to the lanes `0..lanes` of a block whose
    /// first query is at `pos0`: `vis[j]` has bit `l` when query `l` sees key `t0 + j`.
    /// Returns whether any lane sees any key of the tile.
    pub(super) fn tile_vis(
        &self,
        t0: usize,
        nk: usize,
        pos0: usize,
        lanes: usize,
        vis: &mut [u16; ATTN_TILE],
    ) -> bool {
        let all = if lanes >= ATTN_LANES {
            u16::MAX
        } else {
            (1u16 << lanes) - 1
        };
        let mut any = 0;
        for (j, m) in vis.iter_mut().enumerate() {
            let key = t0 + j;
            *m = if j >= nk || !self.keys.valid.is_none_or(|v| v[key]) {
                0
            } else if self.causal && key > pos0 {
                // Lanes l with pos0 + l >= key.
                let first = key - pos0;
                if first >= lanes {
                    0
                } else {
                    all & !((1u16 << first) - 1)
                }
            } else {
                all
            };
            any |= *m;
        }
        any != 0
    }

    /// Scores, into `sc`, each tile of keys that a lane of the block whose first query is at
    /// `gpos` sees (`lanes` queries of KV head `kvh`, transposed in `qt`), and calls
    /// `f(t0, (v, stride), tile)` with the tile's first key `t0`, its value rows as f32 (when
    /// `need_v`, else empty; the cache's rows, or for stored keys rows dequantized into `buf`)
    /// and the tile.
    #[inline(always)]
    fn visible_tiles(
        &self,
        (kvh, gpos, lanes): (usize, usize, usize),
        qt: &[f32],
        (sc, buf, need_v): (&mut [f32; ATTN_BLOCK], &mut [f32], bool),
        mut f: impl FnMut(usize, (&[f32], usize), &AttnTile<'_>),
    ) {
        let (kbuf, vbuf) = buf.split_at_mut(buf.len() / 2);
        let mut vis = [0u16; ATTN_TILE];
        let end = self.key_end(gpos.saturating_add(lanes - 1));
        for t0 in (0..end).step_by(ATTN_TILE) {
            let nk = ATTN_TILE.min(end - t0);
            if !self.tile_vis(t0, nk, gpos, lanes, &mut vis) {
                continue;
            }
            let kr = self.tile_rows(&self.keys.k, (t0, nk, kvh), kbuf);
            FAST.attn_scores_tile(&self.scores_args(qt, kr, nk), sc);
            let tile = AttnTile {
                s: sc,
                vis: &vis,
                nk,
            };
            let vr = if need_v {
                self.tile_rows(&self.keys.v, (t0, nk, kvh), vbuf)
            } else {
                (&[][..], 0)
            };
            f(t0, vr, &tile);
        }
    }

    /// Dense head `h` for one chunk of queries `qc` (the first at `pos0`), into `oc`, by the
    /// block kernels: per block of lanes, the blocked online softmax over the key tiles.
    /// Its block buffers are in `fast` ([`fast_parts`]: transposed queries, accumulators, a
    /// tile of scores).
    pub(super) fn fast_dense_head(
        &self,
        h: usize,
        (qc, pos0): (&[f32], usize),
        (fast, buf): (&mut [f32], &mut [f32]),
        oc: &mut [f32],
    ) {
        let (hd, q_dim) = (self.hd, self.q_dim);
        let nc = qc.len() / q_dim;
        let kvh = h / self.group;
        let (qt, rest) = fast.split_at_mut(ATTN_LANES * hd);
        let (acc, rest) = rest.split_at_mut(ATTN_LANES * hd);
        let Ok(sc) = <&mut [f32; ATTN_BLOCK]>::try_from(&mut rest[..ATTN_BLOCK]) else {
            return;
        };
        let mut st = AttnDenseState::new(acc);
        for g0 in (0..nc).step_by(ATTN_LANES) {
            let lanes = ATTN_LANES.min(nc - g0);
            let gpos = pos0.saturating_add(g0);
            attn_transpose_queries(&qc[g0 * q_dim + h * hd..], q_dim, lanes, hd, qt);
            st.max = [f32::NEG_INFINITY; ATTN_LANES];
            st.sum = [0.0; ATTN_LANES];
            st.acc[..lanes * hd].fill(0.0);
            let bufs = (&mut *sc, &mut *buf, true);
            self.visible_tiles((kvh, gpos, lanes), qt, bufs, |_, (v, vs), tile| {
                FAST.attn_dense_tile(tile, v, vs, hd, &mut st);
            });
            for l in 0..lanes {
                let out = &mut oc[(g0 + l) * q_dim + h * hd..][..hd];
                let acc = &st.acc[l * hd..][..hd];
                if st.sum[l] > 0.0 {
                    let inv = 1.0 / st.sum[l];
                    out.iter_mut().zip(acc).for_each(|(o, &a)| *o = a * inv);
                } else {
                    out.fill(0.0);
                }
            }
        }
    }

    /// Visibility of the keys `kb0..kb1` (whole tiles from `kb0`, at most [`VIS_STRIDE`]) to
    /// the lanes `0..lanes` of a block whose first query is at `pos0`: `valid[t]` has bit `j`
    /// when key `kb0 + t * ATTN_TILE + j` exists and is not padding (what every lane sees
    /// without a causal mask); when causal, `vis[lane * stride + t]` is that lane's part of it.
    /// Returns, per tile, whether any lane sees any of its keys (bit `t`).
    pub(super) fn lane_vis(
        &self,
        (kb0, kb1): (usize, usize),
        pos0: usize,
        lanes: usize,
        valid: &mut [u16; VIS_STRIDE],
        (vis, stride): (&mut [u16], usize),
    ) -> u16 {
        let mut any = 0u16;
        for (t, t0) in (kb0..kb1).step_by(ATTN_TILE).enumerate() {
            let nk = ATTN_TILE.min(kb1 - t0);
            let mut m = if nk >= ATTN_TILE {
                u16::MAX
            } else {
                (1u16 << nk) - 1
            };
            if let Some(v) = self.keys.valid {
                for (j, &ok) in v[t0..t0 + nk].iter().enumerate() {
                    m &= !(u16::from(!ok) << j);
                }
            }
            valid[t] = m;
            let mut seen = m;
            if self.causal {
                seen = 0;
                for l in 0..lanes {
                    // Keys t0 + j <= pos0 + l: the first pos0 + l + 1 - t0 of the tile.
                    let lim = (pos0.saturating_add(l) + 1).saturating_sub(t0);
                    let ml = if lim < ATTN_TILE {
                        m & ((1u16 << lim) - 1)
                    } else {
                        m
                    };
                    vis[l * stride + t] = ml;
                    seen |= ml;
                }
            }
            if seen != 0 {
                any |= 1 << t;
            }
        }
        any
    }

    /// Top-k attention (keeping `k <= ATTN_SELECT_MAX_K` keys per query) of the heads
    /// `0..n_heads` for one chunk of queries `qc`, into `oc`, by the block kernels: per head,
    /// block of lanes and block of [`ATTN_KEY_BLOCK`] keys, the lane-major scores of the visible
    /// tiles, then each lane's slots merged with the block
    /// ([`crate::kernels::attention::attn_topk_block`]: exact top-k, slots in key order), then the
    /// softmax over the slots. The block buffers, in `fast` ([`fast_parts`] for blocks of `kb`
    /// keys), serve the whole chunk, all heads.
    pub(super) fn fast_topk_chunk(
        &self,
        (n_heads, k): (usize, usize),
        (qc, pos0): (&[f32], usize),
        s: &mut AttnScratch<'_>,
        (fast, kb, buf): (&mut [f32], usize, &mut [f32]),
        oc: &mut [f32],
    ) {
        let (hd, q_dim) = (self.hd, self.q_dim);
        let nc = qc.len() / q_dim;
        let stride = kb / ATTN_TILE;
        let (qt, rest) = fast.split_at_mut(ATTN_LANES * hd);
        let (rows, rest) = rest.split_at_mut(ATTN_LANES * kb);
        let (vis, rest) = rest.split_at_mut(padded(2 * ATTN_LANES * stride) / 4);
        let vis: &mut [u16] = bytemuck::cast_slice_mut(vis);
        let mut valid = [0u16; VIS_STRIDE];
        let mut work = AttnTopkWork::new(&mut rest[..AttnTopkWork::words(k, kb)]);
        for h in 0..n_heads {
            let kvh = h / self.group;
            for g0 in (0..nc).step_by(ATTN_LANES) {
                let lanes = ATTN_LANES.min(nc - g0);
                let gpos = pos0.saturating_add(g0);
                attn_transpose_queries(&qc[g0 * q_dim + h * hd..], q_dim, lanes, hd, qt);
                let lens = &mut s.lens[g0..g0 + lanes];
                lens.fill(0);
                let end = self.key_end(gpos.saturating_add(lanes - 1));
                for kb0 in (0..end).step_by(kb) {
                    let kb1 = end.min(kb0 + kb);
                    let nt = (kb1 - kb0).div_ceil(ATTN_TILE);
                    let lv = (&mut *vis, stride);
                    let any = self.lane_vis((kb0, kb1), gpos, lanes, &mut valid, lv);
                    if any == 0 {
                        continue;
                    }
                    for t in (0..nt).filter(|&t| any >> t & 1 != 0) {
                        let t0 = kb0 + t * ATTN_TILE;
                        let nk = ATTN_TILE.min(kb1 - t0);
                        let kr = self.tile_rows(&self.keys.k, (t0, nk, kvh), &mut *buf);
                        let a = self.scores_args(qt, kr, nk);
                        FAST.attn_scores_rows(&a, &mut rows[t * ATTN_TILE..], kb);
                    }
                    for (l, len) in lens.iter_mut().enumerate() {
                        let lv = if self.causal {
                            &vis[l * stride..][..nt]
                        } else {
                            &valid[..nt]
                        };
                        if self.causal && lv.iter().all(|&m| m == 0) {
                            continue;
                        }
                        let qi = g0 + l;
                        // Visible keys are below MAX_KEYS (checked): their indices fit in u16.
                        let a = AttnTopkArgs {
                            row: &rows[l * kb..][..nt * ATTN_TILE],
                            vis: lv,
                            kb0,
                            k,
                        };
                        *len = FAST.attn_topk_block(
                            &a,
                            &mut s.scores[qi * k..(qi + 1) * k],
                            &mut s.idx[qi * k..(qi + 1) * k],
                            *len as usize,
                            &mut work,
                        ) as u32;
                    }
                }
            }
            self.fast_topk_output((h, k, nc), s, &mut *buf, oc);
        }
    }

    /// The output of the fast top-k paths: per query, the softmax over its `s.lens` kept
    /// slots weighting their value rows, in slot order (stored values dequantized a row at a
    /// time into `buf`).
    pub(super) fn fast_topk_output(
        &self,
        (h, k, nc): (usize, usize, usize),
        s: &mut AttnScratch<'_>,
        buf: &mut [f32],
        oc: &mut [f32],
    ) {
        let (hd, q_dim, kv_dim) = (self.hd, self.q_dim, self.kv_dim);
        let kvh = h / self.group;
        if k == 0 {
            // No keys (k is at most their number): every query gets zeros.
            for qi in 0..nc {
                oc[qi * q_dim + h * hd..][..hd].fill(0.0);
            }
            return;
        }
        let KvRows::F32(v) = self.keys.v else {
            for qi in 0..nc {
                let n = (s.lens[qi] as usize).min(k);
                let (scores, idx) = (&s.scores[qi * k..][..n], &s.idx[qi * k..][..n]);
                let out = &mut oc[qi * q_dim + h * hd..][..hd];
                let rows = (&self.keys.v, kvh * hd, kv_dim);
                attn_softmax_kv_rows((scores, idx), rows, hd, &mut *buf, out);
            }
            return;
        };
        for g0 in (0..nc).step_by(ATTN_LANES) {
            let lanes = ATTN_LANES.min(nc - g0);
            let a = AttnSoftmaxArgs {
                scores: &s.scores[g0 * k..],
                idx: &s.idx[g0 * k..],
                lens: &s.lens[g0..g0 + lanes],
                k,
                v: &v[kvh * hd..],
                stride: kv_dim,
                hd,
            };
            FAST.attn_softmax_lanes(&a, &mut oc[g0 * q_dim + h * hd..], q_dim);
        }
    }

    /// Top-k head `h` for `k > ATTN_SELECT_MAX_K` by the block kernels and the heap of
    /// [`TopK`]: each tile's scores are compared with every lane's threshold (its k-th best so
    /// far, or none while it has free slots) and only the candidates are pushed; keys reach a
    /// lane's heap in increasing order, so a later key loses ties. The kept rows are summed in
    /// heap order.
    /// Its block buffers are in `fast` ([`fast_parts`]: transposed queries, a tile of scores).
    pub(super) fn fast_topk_heap_head(
        &self,
        (h, k): (usize, usize),
        (qc, pos0): (&[f32], usize),
        s: &mut AttnScratch<'_>,
        (fast, buf): (&mut [f32], &mut [f32]),
        oc: &mut [f32],
    ) {
        let (hd, q_dim) = (self.hd, self.q_dim);
        let nc = qc.len() / q_dim;
        let kvh = h / self.group;
        let (qt, rest) = fast.split_at_mut(ATTN_LANES * hd);
        let Ok(sc) = <&mut [f32; ATTN_BLOCK]>::try_from(&mut rest[..ATTN_BLOCK]) else {
            return;
        };
        let mut cand = [0u16; ATTN_TILE];
        s.lens[..nc].fill(0);
        for g0 in (0..nc).step_by(ATTN_LANES) {
            let lanes = ATTN_LANES.min(nc - g0);
            let gpos = pos0.saturating_add(g0);
            attn_transpose_queries(&qc[g0 * q_dim + h * hd..], q_dim, lanes, hd, qt);
            let mut thr = [f32::NEG_INFINITY; ATTN_LANES];
            let mut open: u16 = if lanes >= ATTN_LANES {
                u16::MAX
            } else {
                (1 << lanes) - 1
            };
            let bufs = (&mut *sc, &mut *buf, false);
            self.visible_tiles((kvh, gpos, lanes), qt, bufs, |t0, _, tile| {
                if FAST.attn_candidates(tile, &thr, open, &mut cand) == 0 {
                    return;
                }
                for (j, &cj) in cand[..tile.nk].iter().enumerate() {
                    let mut cm = cj;
                    while cm != 0 {
                        let l = cm.trailing_zeros() as usize;
                        cm &= cm - 1;
                        let qi = g0 + l;
                        let slots = &mut s.scores[qi * k..(qi + 1) * k];
                        let idx = &mut s.idx[qi * k..(qi + 1) * k];
                        let mut sel = TopK::resume(slots, idx, s.lens[qi], Rank::Value);
                        // t0 + j < MAX_KEYS (checked): the key index fits in u16.
                        sel.push(tile.s[j * ATTN_LANES + l], (t0 + j) as u16);
                        s.lens[qi] = sel.state();
                        if let Some(w) = sel.worst() {
                            thr[l] = w;
                            open &= !(1 << l);
                        }
                    }
                }
            });
        }
        for qi in 0..nc {
            let slots = &mut s.scores[qi * k..(qi + 1) * k];
            let idx = &mut s.idx[qi * k..(qi + 1) * k];
            s.lens[qi] = TopK::resume(slots, idx, s.lens[qi], Rank::Value).len() as u32;
        }
        self.fast_topk_output((h, k, nc), s, buf, oc);
    }
}
