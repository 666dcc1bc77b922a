//! The reference loops ([`crate::kernels::Kernels::Reference`], and heads wider than the block
//! kernels take): one query and one key at a time with the generic kernels.

use super::{AttnScratch, Ctx, KEY_TILE};
use crate::kernels::{axpy, dot, scale};
use crate::math;
use crate::topk::{Rank, TopK};

impl Ctx<'_> {
    /// Dense head `h` for one chunk of queries `qc` (the first at `pos0`), into `oc`.
    /// `tile` holds a tile of dequantized key and value rows for stored (f16, int8) keys.
    pub(super) fn dense_head(
        &self,
        h: usize,
        (qc, pos0): (&[f32], usize),
        s: &mut AttnScratch<'_>,
        tile: &mut [f32],
        oc: &mut [f32],
    ) {
        let nc = qc.len() / self.q_dim;
        let kvh = h / self.group;
        let (max, rest) = s.scores.split_at_mut(nc);
        let sum = &mut rest[..nc];
        sum.fill(0.0);
        for i in 0..nc {
            oc[i * self.q_dim + h * self.hd..][..self.hd].fill(0.0);
        }
        let end = self.key_end(pos0.saturating_add(nc - 1));
        let (kbuf, vbuf) = tile.split_at_mut(tile.len() / 2);
        let mut t0 = 0;
        while t0 < end {
            let t1 = end.min(t0 + KEY_TILE);
            let (kt, ks) = self.tile_rows(&self.keys.k, (t0, t1 - t0, kvh), kbuf);
            let (vt, vs) = self.tile_rows(&self.keys.v, (t0, t1 - t0, kvh), vbuf);
            for i in 0..nc {
                let pos = pos0.saturating_add(i);
                let qr = &qc[i * self.q_dim + h * self.hd..][..self.hd];
                let acc = &mut oc[i * self.q_dim + h * self.hd..][..self.hd];
                for j in t0..t1 {
                    if !self.visible(j, pos) {
                        continue;
                    }
                    let sc = dot(qr, &kt[(j - t0) * ks..][..self.hd]) * self.scale;
                    let v = &vt[(j - t0) * vs..][..self.hd];
                    // The sum is 0 exactly until the first visible key (weights are > 0).
                    if sum[i] == 0.0 {
                        max[i] = sc;
                        sum[i] = 1.0;
                        acc.copy_from_slice(v);
                    } else if sc > max[i] {
                        // New maximum: rescale what was accumulated relative to it.
                        let c = math::exp(max[i] - sc);
                        scale(acc, c);
                        sum[i] = sum[i] * c + 1.0;
                        max[i] = sc;
                        axpy(acc, 1.0, v);
                    } else {
                        let w = math::exp(sc - max[i]);
                        sum[i] += w;
                        axpy(acc, w, v);
                    }
                }
            }
            t0 = t1;
        }
        for i in 0..nc {
            if sum[i] > 0.0 {
                scale(
                    &mut oc[i * self.q_dim + h * self.hd..][..self.hd],
                    1.0 / sum[i],
                );
            }
        }
    }

    /// Top-k head `h` (keeping `k` keys per query) for one chunk of queries `qc`, into `oc`.
    /// `tile` holds a tile of dequantized key rows (and one value row) for stored keys.
    pub(super) fn topk_head(
        &self,
        (h, k): (usize, usize),
        (qc, pos0): (&[f32], usize),
        s: &mut AttnScratch<'_>,
        tile: &mut [f32],
        oc: &mut [f32],
    ) {
        let nc = qc.len() / self.q_dim;
        let kvh = h / self.group;
        let lens = &mut s.lens[..nc];
        lens.fill(0);
        let end = self.key_end(pos0.saturating_add(nc - 1));
        let (kbuf, vbuf) = tile.split_at_mut(tile.len() / 2);
        let mut t0 = 0;
        while t0 < end {
            let t1 = end.min(t0 + KEY_TILE);
            let (kt, ks) = self.tile_rows(&self.keys.k, (t0, t1 - t0, kvh), kbuf);
            for (i, len) in lens.iter_mut().enumerate() {
                let pos = pos0.saturating_add(i);
                let qr = &qc[i * self.q_dim + h * self.hd..][..self.hd];
                let mut sel = TopK::resume(
                    &mut s.scores[i * k..(i + 1) * k],
                    &mut s.idx[i * k..(i + 1) * k],
                    *len,
                    Rank::Value,
                );
                for j in t0..t1 {
                    if self.visible(j, pos) {
                        // j < MAX_KEYS was checked, so it fits in u16.
                        let kr = &kt[(j - t0) * ks..][..self.hd];
                        sel.push(dot(qr, kr) * self.scale, j as u16);
                    }
                }
                *len = sel.state();
            }
            t0 = t1;
        }
        for (i, &len) in lens.iter().enumerate() {
            let acc = &mut oc[i * self.q_dim + h * self.hd..][..self.hd];
            acc.fill(0.0);
            let mut sel = TopK::resume(
                &mut s.scores[i * k..(i + 1) * k],
                &mut s.idx[i * k..(i + 1) * k],
                len,
                Rank::Value,
            );
            let (sc, ix) = sel.sorted_by_index();
            if sc.is_empty() {
                continue;
            }
            let m = sc
                .iter()
                .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
            let mut sum = 0.0;
            for (&x, &j) in sc.iter().zip(ix) {
                let w = math::exp(x - m);
                sum += w;
                let (v, _) = self.tile_rows(&self.keys.v, (j as usize, 1, kvh), vbuf);
                axpy(acc, w, &v[..self.hd]);
            }
            scale(acc, 1.0 / sum);
        }
    }
}
