//! The bf16 product `y = x · Wᵀ` over a weight packed once into panels of bf16
//! pairs ([`crate::Bf16Packed`]), with f32 accumulation.
//!
//! One AVX-512 BF16 instruction (`vdpbf16ps`) multiplies 32 pairs of bf16 values and
//! adds them into 16 f32 sums: twice the multiply-adds of an f32 FMA, from half the
//! bytes. The loop order is the f32 kernel's (see `blocked`): `x` is rounded to bf16
//! and packed once per product into micro-panels of [`MR`] rows, `[pair][row]`;
//! threads own disjoint output columns (or rows, for a weight of few panels); the
//! micro-kernel sweeps a pass of [`MB`] rows against two adjacent 16-column panels of
//! at most [`KBP`] pairs (32 KiB, in L1), keeping its twelve sums in registers.
//! Unlike the f32 kernel, the weight is never packed during a product: its panels
//! were laid out when it was loaded.
//!
//! Rounding follows the instructions, so the portable path gives the same bits:
//! values are rounded to nearest even, subnormal inputs count as zero (f32 values
//! converted, bf16 values multiplied, and the running sums), and a subnormal sum is
//! flushed to zero; each pair adds its odd-depth product first, each addition
//! rounded to f32 (a product of two bf16 values is exact in f32).

use std::mem::MaybeUninit;

use super::blocked::{OutPtr, shares};
use super::{Isa, VALUES_PER_THREAD, par_chunks_mut, thread_count};

/// Columns of a panel.
pub(crate) const NR: usize = 16;
/// Rows of `x` per micro-kernel call.
const MR: usize = 6;
/// Depth of a block, in pairs, at most: two 16-column panels of it are 32 KiB.
const KBP: usize = 256;
/// Columns of `y` per block (64 panels, 1 MiB of a 256-pair block: kept in L2 while
/// [`MB`]-row passes of `x` sweep it).
const NB: usize = 1024;
/// Rows of `x` per pass over a block (120 KiB packed, in L2).
const MB: usize = 120;

/// A weight `[rows, cols]` as panels of [`NR`] rows: `words[p][k][j]` holds
/// `W[p·16 + j][2k]` in its low half and `W[p·16 + j][2k + 1]` in its high half
/// (zero past the last row or column). A panel is `pairs · 16` words.
#[derive(Clone, Copy)]
pub(crate) struct Panels<'a> {
    pub(crate) words: &'a [u32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

impl Panels<'_> {
    pub(crate) fn pairs(&self) -> usize {
        self.cols.div_ceil(2)
    }

    /// `W[r][k]` as f32.
    #[inline]
    pub(crate) fn value(&self, r: usize, k: usize) -> f32 {
        let word = self.words[(r / NR * self.pairs() + k / 2) * NR + r % NR];
        widen(word, k % 2 == 1)
    }

    /// Rows `j0..j0 + 16` (`j0` a multiple of 16), columns `k0..k0 + kc` (`k0` even),
    /// widened to f32 into `panel[k][j]` (16 values per `k`).
    pub(crate) fn widen_panel(&self, j0: usize, k0: usize, kc: usize, panel: &mut [f32]) {
        debug_assert!(j0.is_multiple_of(NR) && k0.is_multiple_of(2));
        let base = (j0 / NR * self.pairs() + k0 / 2) * NR;
        let words = &self.words[base..base + kc.div_ceil(2) * NR];
        for (k, dst) in panel[..kc * NR].chunks_exact_mut(NR).enumerate() {
            let src: &[u32; NR] = words[k / 2 * NR..k / 2 * NR + NR]
                .try_into()
                .expect("16 words");
            let dst: &mut [f32; NR] = dst.try_into().expect("16 values");
            let odd = k % 2 == 1;
            for (d, &w) in dst.iter_mut().zip(src) {
                *d = widen(w, odd);
            }
        }
    }
}

/// The bf16 value in the high (`odd`) or low half of a pair word, as f32.
#[inline(always)]
fn widen(word: u32, odd: bool) -> f32 {
    f32::from_bits(if odd { word & 0xffff_0000 } else { word << 16 })
}

/// Whether the AVX-512 BF16 kernels run on this CPU with `isa`.
pub(crate) fn fast(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        return super::x86::has_avx512_bf16();
    }
    let _ = isa;
    false
}

/// `v` with a subnormal value replaced by zero of its sign.
#[inline]
fn flush(v: f32) -> f32 {
    if v.is_subnormal() {
        f32::from_bits(v.to_bits() & 0x8000_0000)
    } else {
        v
    }
}

/// f32 to bf16 bits as `vcvtne2ps2bf16` rounds: subnormals to zero, nearest even,
/// NaN kept quiet.
#[inline]
pub(crate) fn to_bf16(v: f32) -> u16 {
    super::f32_to_bf16_rne(flush(v))
}

/// `out[p] = bf16(src[2p]) | bf16(src[2p + 1]) << 16`, zero past the end of `src`.
pub(crate) fn pairs_into(fast: bool, src: &[f32], out: &mut [u32]) {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if fast {
        done = super::x86::bf16_pairs(src, out);
    }
    let _ = fast;
    for (p, o) in out.iter_mut().enumerate().skip(done / 2) {
        let lo = src.get(2 * p).copied().unwrap_or(0.0);
        let hi = src.get(2 * p + 1).copied().unwrap_or(0.0);
        *o = u32::from(to_bf16(lo)) | u32::from(to_bf16(hi)) << 16;
    }
}

/// Packs `w` (`[rows, cols]`, row-major) into `out` (`rows.div_ceil(16) · pairs · 16`
/// words), panels in parallel.
pub(crate) fn pack_weight(isa: Isa, w: &[f32], rows: usize, cols: usize, out: &mut [u32]) {
    let pairs = cols.div_ceil(2);
    let fast = fast(isa);
    if pairs == 0 {
        return;
    }
    super::blocked::fill_panels(out, rows, pairs, |r, row| {
        pairs_into(fast, &w[r * cols..(r + 1) * cols], row)
    });
}

thread_local! {
    /// `x` packed for a product, kept between calls (at most [`KEEP_PACKED`] words).
    static PACKED: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most of a packed `x` a thread keeps between products (4 MiB).
const KEEP_PACKED: usize = 1 << 20;

/// `y = x · Wᵀ`: `x` `[m, cols]`, `y` `[m, rows]`. Every element of `y` is written
/// (the first depth block stores, later ones add), so `y` need not be initialised.
pub(crate) fn gemm(
    isa: Isa,
    w: Panels<'_>,
    x: &[f32],
    m: usize,
    y: &mut [MaybeUninit<f32>],
    threads: usize,
) {
    let (rows, cols, pairs) = (w.rows, w.cols, w.pairs());
    debug_assert!(x.len() >= m * cols && y.len() >= m * rows);
    debug_assert!(w.words.len() >= rows.div_ceil(NR) * pairs * NR);
    if m == 0 || rows == 0 {
        return;
    }
    if cols == 0 {
        y[..m * rows].iter_mut().for_each(|v| {
            v.write(0.0);
        });
        return;
    }
    let fast = fast(isa);
    let kstep = pairs.div_ceil(pairs.div_ceil(KBP));
    let m_pad = m.next_multiple_of(MR);
    // Taken out of the thread-local, so a product this thread runs while it waits
    // for the others finds an empty buffer, not a borrowed one.
    let mut xp = PACKED.with_borrow_mut(std::mem::take);
    if xp.len() < m_pad * pairs {
        xp = vec![0u32; m_pad * pairs];
    }
    par_chunks_mut(&mut xp[..m_pad * pairs], kstep * m_pad, |b, xb| {
        let (k0, kc) = (b * kstep, kstep.min(pairs - b * kstep));
        pack_x(fast, x, m, cols, k0, kc, xb);
    });
    let panels = rows.div_ceil(NR);
    // Threads by multiply-adds (one per 2^22), but for a few rows by the weight read
    // (as the GEMVs and few-row paths): a generation step's product is bound by
    // streaming the weight, which two cores do faster than one.
    let work = (m * rows * cols / (1 << 22)).max(rows * cols / VALUES_PER_THREAD) + 1;
    let t_rows = thread_count(threads, work.min(m_pad / MR));
    let by_rows = t_rows > 1 && panels < 8 * t_rows;
    let t = if by_rows {
        t_rows
    } else {
        thread_count(threads, work.min(panels.div_ceil(2)))
    };
    let mut ranges = shares(by_rows, m, rows, t, 2);
    let out = OutPtr(y.as_mut_ptr().cast());
    let out = &out;
    let xs = &xp[..m_pad * pairs];
    par_chunks_mut(&mut ranges, 1, |_, r| {
        let (r0, r1, c0, c1) = r[0];
        block(fast, w, xs, m_pad, kstep, (r0, r1), (c0, c1), out);
    });
    if xp.len() <= KEEP_PACKED {
        PACKED.with_borrow_mut(|kept| {
            if xp.len() > kept.len() {
                *kept = xp;
            }
        });
    }
}

/// Packs pairs `k0..k0 + kc` of every row of `x` (`[m, cols]`) into micro-panels of
/// [`MR`] rows, `out[q][k][r]` (`kc · 6` words apart; rows past `m` are zero).
fn pack_x(fast: bool, x: &[f32], m: usize, cols: usize, k0: usize, kc: usize, out: &mut [u32]) {
    let mut rows = [[0u32; KBP]; MR];
    let (c0, c1) = ((2 * k0).min(cols), (2 * (k0 + kc)).min(cols));
    for (q, panel) in out.chunks_exact_mut(kc * MR).enumerate() {
        for (r, row) in rows.iter_mut().enumerate() {
            let i = q * MR + r;
            if i < m {
                pairs_into(fast, &x[i * cols + c0..i * cols + c1], &mut row[..kc]);
            } else {
                row[..kc].iter_mut().for_each(|v| *v = 0);
            }
        }
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: `u32` and `f32` have the same size and alignment; the
            // interleave only moves 32-bit lanes.
            let r: [&[f32]; MR] = std::array::from_fn(|r| unsafe {
                std::slice::from_raw_parts(rows[r].as_ptr().cast::<f32>(), kc)
            });
            let dst = unsafe {
                std::slice::from_raw_parts_mut(panel.as_mut_ptr().cast::<f32>(), panel.len())
            };
            done = super::x86::interleave6(&r, dst);
        }
        for k in done..kc {
            for r in 0..MR {
                panel[k * MR + r] = rows[r][k];
            }
        }
    }
}

/// Rows `r0..r1`, columns `c0..c1` of `y`.
#[allow(clippy::too_many_arguments)]
fn block(
    fast: bool,
    w: Panels<'_>,
    xp: &[u32],
    m_pad: usize,
    kstep: usize,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    out: &OutPtr,
) {
    let (rows, pairs) = (w.rows, w.pairs());
    let stride = pairs * NR;
    for j0 in (c0..c1).step_by(NB) {
        let nb = NB.min(c1 - j0);
        for k0 in (0..pairs).step_by(kstep) {
            let kc = kstep.min(pairs - k0);
            for i0 in (r0..r1).step_by(MB) {
                let i1 = (i0 + MB).min(r1);
                for p in (0..nb.div_ceil(NR)).step_by(2) {
                    let nc = (2 * NR).min(nb - p * NR);
                    let b = &w.words[(j0 / NR + p) * stride + k0 * NR..];
                    for i in (i0..i1).step_by(MR) {
                        let mr = MR.min(i1 - i);
                        let a = &xp[k0 * m_pad + i / MR * kc * MR..][..kc * MR];
                        // SAFETY: rows `i..i + mr`, columns `j0 + p·16 ..+ nc` of `y`
                        // lie inside `y` (`m × rows`) and belong to this thread.
                        let c = unsafe { out.0.add(i * rows + j0 + p * NR) };
                        micro(fast, mr, a, b, stride, kc, c, rows, nc, k0 > 0);
                    }
                }
            }
        }
    }
}

/// `c[i][j] (+)= Σ_k` of pair `k` of `a[k·6 + i]` and of panel `j / 16`'s `[k][j % 16]`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn micro(
    fast: bool,
    mr: usize,
    a: &[u32],
    b: &[u32],
    stride: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    debug_assert!(a.len() >= kc * MR && b.len() >= (nc - 1) / NR * stride + kc * NR);
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: AVX-512 BF16 was detected (`fast`); the lengths are checked above
        // and `c` is as `block` states.
        unsafe {
            super::x86::micro_bf16_6x32(
                mr,
                a.as_ptr(),
                b.as_ptr(),
                stride,
                kc,
                c,
                ldc,
                nc,
                accumulate,
            )
        };
        return;
    }
    let _ = fast;
    let half = |v: u32, hi: bool| flush(f32::from_bits(if hi { v & 0xffff_0000 } else { v << 16 }));
    for i in 0..mr {
        for j in 0..nc {
            let bj = &b[j / NR * stride + j % NR..];
            let mut acc = 0f32;
            for k in 0..kc {
                let (av, bv) = (a[k * MR + i], bj[k * NR]);
                acc = flush(acc + half(av, true) * half(bv, true));
                acc = flush(acc + half(av, false) * half(bv, false));
            }
            // SAFETY: as in `block`.
            unsafe {
                let o = c.add(i * ldc + j);
                *o = if accumulate { *o + acc } else { acc };
            }
        }
    }
}
