//! The cache-blocked product `y = x · Vᵀ` (BLIS's loop order), for every
//! instruction set: AVX-512, AVX2 and the portable scalar micro-kernel.
//!
//! Threads own disjoint ranges of output columns (rows of `V`; `x` is packed once,
//! shared, before the split), or, when `V` has too few panels to share out (a
//! projection to few features over many tokens), disjoint ranges of rows of `x`.
//! Each packs a
//! block of `V`, up to [`KB`] deep and [`NB`] wide, into panels of [`NR`] columns
//! (`panel[k][j]`, 18 KiB: it stays in L1 while the micro-kernel sweeps a pass
//! of [`MB`] rows of `x`, themselves packed into micro-panels of [`MR`] rows and
//! kept in L2), dequantizing NF4 on the way. The micro-kernel (`6 × 16` on AVX2,
//! `6 × 32` over two adjacent panels on AVX-512) keeps its accumulators in
//! registers over the whole depth and adds them into `y` once, so nothing is
//! staged in between.
//!
//! The earlier tiling (one `64 × 256` tile of `V`, `6 × 16` passes (`6 × 64` on
//! AVX-512) reading `x` unpacked, results staged through a row buffer and copied
//! back per thread) ran at 60 to 118 GFLOP/s on a 2-core AVX2 EPYC and took 1.18 s
//! for SmolLM2's `[1024, 576] · [576, 49152]` LM head on a 2-core AVX-512 Xeon,
//! where this one takes 0.26 s; both are measured in `benches/quant.rs`
//! (`gemm512_*`, `input_grad256_*`, `dense1024_*`).

use std::mem::MaybeUninit;

use super::{Isa, WeightSource, thread_count};

/// Columns of a packed panel: two AVX2 vectors, one AVX-512 vector.
pub(crate) const NR: usize = 16;
/// Rows of `x` per micro-kernel call.
pub(crate) const MR: usize = 6;
/// Depth of a packed block, at most (a 16-column panel of it is 18 KiB, in L1).
const KB: usize = 288;
/// Columns of a packed block, at most (64 panels, 1.1 MiB: read from L3 once per
/// sweep of [`MB`] rows).
const NB: usize = 1024;
/// Rows of `x` per sweep over a block (packed, 135 KiB, in L2).
const MB: usize = 120;

/// A weight `[rows, cols]` already in this kernel's panels ([`crate::F32Packed`]):
/// `values[p][k][j] = W[p·16 + j][k]`, one panel `cols · 16` values long. Products read
/// the panels where they lie instead of packing blocks of them.
#[derive(Clone, Copy)]
pub(crate) struct F32Panels<'a> {
    pub(crate) values: &'a [f32],
    pub(crate) cols: usize,
}

impl F32Panels<'_> {
    /// `W[r][k]`.
    #[inline]
    pub(crate) fn value(&self, r: usize, k: usize) -> f32 {
        self.values[(r / NR * self.cols + k) * NR + r % NR]
    }
}

/// Lays a matrix of `rows` rows, each `width` values made by `row(r, buf)`, out in
/// panels of [`NR`] rows, `out[p][k][j]` (`width · 16` values per panel, zero past the
/// last row), panels in parallel: the layout of [`F32Panels`] and of the bf16 panels.
pub(crate) fn fill_panels<T: Copy + Default + Send>(
    out: &mut [T],
    rows: usize,
    width: usize,
    row: impl Fn(usize, &mut [T]) + Sync,
) {
    if width == 0 {
        return;
    }
    super::par_chunks_mut(out, width * NR, |p, panel| {
        let mut buf = vec![T::default(); width];
        for j in 0..NR {
            let r = p * NR + j;
            if r < rows {
                row(r, &mut buf);
            } else {
                buf.fill(T::default());
            }
            for (k, &v) in buf.iter().enumerate() {
                panel[k * NR + j] = v;
            }
        }
    });
}

/// The output, shared by the threads; each writes only its own columns or rows.
pub(super) struct OutPtr(pub(super) *mut f32);
// SAFETY: threads write disjoint elements (their own column or row ranges) and the
// scope joins them before the buffer is used again.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `y = x · Vᵀ`: `x` `[m, cols]`, `V` `[rows, cols]` from `src`, `y` `[m, rows]`.
/// Every element of `y` is written before it is read (the first depth block
/// stores, later ones add), so `y` need not be initialised.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    isa: Isa,
    src: &WeightSource<'_>,
    x: &[f32],
    m: usize,
    rows: usize,
    cols: usize,
    y: &mut [MaybeUninit<f32>],
    threads: usize,
) {
    debug_assert!(x.len() >= m * cols && y.len() >= m * rows);
    if cols == 0 {
        y[..m * rows].iter_mut().for_each(|v| {
            v.write(0.0);
        });
        return;
    }
    let panels = rows.div_ceil(NR);
    let work = m * rows * cols / (1 << 21) + 1;
    // Threads split the output by columns (`x` packed once, shared; each packs its
    // share of `V`) or by rows (each packs its rows of `x` and all of `V`). Split
    // by columns, every value is packed once and every weight read from memory once,
    // so rows are split only when `V` has too few panels to share out well (fewer
    // than 8 per thread: a projection to few features over many tokens). With the
    // weight already in cache, splitting by rows is a little faster even for more
    // panels (SmolLM2's `q` over 1024 rows: 2.34 against 2.48 ms, fastest of 60);
    // in a whole SmolLM2 forward, whose 425 MB of f32 weights come from memory,
    // splitting by columns gave 3% more tokens/s, and keeping `k`/`v` (12 panels)
    // split by rows 2.5% more again (`models_bench`, alternating runs).
    let t_rows = thread_count(threads, work.min(m / MR));
    let by_rows = t_rows > 1 && panels < 8 * t_rows;
    let t = if by_rows {
        t_rows
    } else {
        thread_count(threads, work.min(panels))
    };
    let out = OutPtr(y.as_mut_ptr().cast());
    let out = &out;
    let kstep = k_step(cols);
    // Split by columns, every thread would pack all of `x` once per block of `NB`
    // columns (48 times over for SmolLM2's LM head on 2 threads): pack it once,
    // shared, before the split.
    let j_blocks = (rows.div_ceil(t)).div_ceil(NB);
    let shared = !by_rows && (t > 1 || j_blocks > 1);
    let m_pad = m.next_multiple_of(MR);
    let xp = shared.then(|| {
        // Taken out of the thread-local (not borrowed), so a product run by this
        // thread while it waits for the others finds an empty buffer, not a lock.
        let mut buf = PREPACKED.with_borrow_mut(std::mem::take);
        if buf.len() < m_pad * cols {
            buf = vec![0f32; m_pad * cols];
        }
        super::par_chunks_mut(&mut buf[..m_pad * cols], kstep * m_pad, |b, xb| {
            let (k0, kc) = (b * kstep, kstep.min(cols - b * kstep));
            pack_rows(isa, x, cols, 0, m, k0, kc, xb, kc * MR);
        });
        buf
    });
    let shared_x = xp.as_deref().map(|b| (&b[..m_pad * cols], m_pad));
    let mut ranges = shares(by_rows, m, rows, t, 1);
    super::par_chunks_mut(&mut ranges, 1, |_, r| {
        let (r0, r1, c0, c1) = r[0];
        columns(
            isa,
            src,
            x,
            shared_x,
            kstep,
            (r0, r1),
            rows,
            cols,
            (c0, c1),
            out,
        );
    });
    if let Some(buf) = xp.filter(|b| b.len() <= KEEP_PREPACKED) {
        PREPACKED.with_borrow_mut(|kept| {
            if buf.len() > kept.len() {
                *kept = buf;
            }
        });
    }
}

/// `t` threads' shares of a `[m, rows]` output, `(r0, r1, c0, c1)`: rows in multiples
/// of [`MR`], or columns in multiples of `step` panels of [`NR`].
pub(super) fn shares(
    by_rows: bool,
    m: usize,
    rows: usize,
    t: usize,
    step: usize,
) -> Vec<(usize, usize, usize, usize)> {
    if by_rows {
        let per = m.div_ceil(t).next_multiple_of(MR).max(MR);
        (0..m)
            .step_by(per)
            .map(|r0| (r0, (r0 + per).min(m), 0, rows))
            .collect()
    } else {
        let per = rows
            .div_ceil(NR)
            .div_ceil(t)
            .next_multiple_of(step)
            .max(step)
            * NR;
        (0..rows)
            .step_by(per)
            .map(|c0| (0, m, c0, (c0 + per).min(rows)))
            .collect()
    }
}

/// Rows of `x` (per thread) up to which an f32 `W` `[cols, n]` is read in place rather
/// than packed (see `columns`).
const KN_IN_PLACE_MAX_M: usize = 24;

/// Rows of `x` up to which [`gemm_in_place`] runs a product over prepacked panels
/// (a decoding step's GEMVs): packing `x` and sharing it out would cost more.
pub(crate) const IN_PLACE_MAX_M: usize = MR;

/// Whether [`gemm_in_place`] runs `m` rows of `x` against `src`: a weight already in
/// panels (`F32Panels`, or `Bf16` widened in registers), at most
/// [`IN_PLACE_MAX_M`] rows, on AVX-512.
pub(crate) fn in_place_applies(isa: Isa, src: &WeightSource<'_>, m: usize) -> bool {
    cfg!(target_arch = "x86_64")
        && isa == Isa::Avx512
        && (1..=IN_PLACE_MAX_M).contains(&m)
        && matches!(src, WeightSource::F32Panels(_) | WeightSource::Bf16(_))
}

/// `y = x · Vᵀ` for a few rows of `x` over a weight already in panels (see
/// [`in_place_applies`], which the caller checked): the panels are read where they
/// lie and `x` unpacked, threads split the columns (a thread per 2^18 weights: the
/// product is bound by memory), and the depth blocks and order of the sums are the
/// blocked kernel's, so the bits are its own.
pub(crate) fn gemm_in_place(
    src: &WeightSource<'_>,
    x: &[f32],
    m: usize,
    (rows, cols): (usize, usize),
    y: &mut [MaybeUninit<f32>],
    threads: usize,
) {
    debug_assert!(x.len() >= m * cols && y.len() >= m * rows);
    if rows == 0 {
        return;
    }
    if cols == 0 {
        y[..m * rows].iter_mut().for_each(|v| {
            v.write(0.0);
        });
        return;
    }
    let kstep = k_step(cols);
    let panels = rows.div_ceil(NR);
    let t = thread_count(
        threads,
        (rows * cols / (1 << 18) + 1).min(panels.div_ceil(2)),
    );
    let mut ranges = shares(false, m, rows, t, 2);
    let out = OutPtr(y.as_mut_ptr().cast());
    let out = &out;
    super::par_chunks_mut(&mut ranges, 1, |_, r| {
        let (_, _, c0, c1) = r[0];
        for j in (c0..c1).step_by(2 * NR) {
            let nc = (2 * NR).min(c1 - j);
            for k0 in (0..cols).step_by(kstep) {
                let klen = kstep.min(cols - k0);
                for i in (0..m).step_by(MR) {
                    let mr = MR.min(m - i);
                    let (a, c) = (&x[i * cols + k0..], i * rows + j);
                    in_place(src, mr, a, cols, j, k0, klen, (out, c, rows), nc, k0 > 0);
                }
            }
        }
    });
}

/// One call of [`gemm_in_place`]'s micro-kernel: rows `a` (`lda` apart, `klen`
/// values from depth `k0`), output columns `j..j + nc` (`j` a multiple of 16) at
/// element `c` of `out` (rows `ldc` apart).
#[allow(clippy::too_many_arguments)]
fn in_place(
    src: &WeightSource<'_>,
    mr: usize,
    a: &[f32],
    lda: usize,
    j: usize,
    k0: usize,
    klen: usize,
    (out, c, ldc): (&OutPtr, usize, usize),
    nc: usize,
    accumulate: bool,
) {
    assert!(a.len() >= (mr - 1) * lda + klen);
    // Only x86_64 has in-place micro-kernels (`in_place_applies` is false elsewhere).
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (j, k0, out, c, ldc, nc, accumulate);
    match src {
        #[cfg(target_arch = "x86_64")]
        WeightSource::F32Panels(w) => {
            let stride = w.cols * NR;
            for p in 0..nc.div_ceil(NR) {
                let b = &w.values[(j / NR + p) * stride + k0 * NR..][..klen * NR];
                // SAFETY: AVX-512F (checked by the caller); `a` holds `mr` rows of
                // `klen` values (asserted), `b` `klen × 16`; the output columns
                // belong to this thread and lie inside `y`.
                unsafe {
                    super::x86::micro_rows_x16(
                        mr,
                        a.as_ptr(),
                        lda,
                        b.as_ptr(),
                        klen,
                        out.0.add(c + p * NR),
                        ldc,
                        (nc - p * NR).min(NR),
                        accumulate,
                    )
                };
            }
        }
        #[cfg(target_arch = "x86_64")]
        WeightSource::Bf16(w) => {
            let stride = w.pairs() * NR;
            let b = &w.words[j / NR * stride + k0 / 2 * NR..];
            assert!(b.len() >= (nc - 1) / NR * stride + klen.div_ceil(2) * NR);
            // SAFETY: AVX-512F (checked by the caller); bounds asserted above; the
            // output columns belong to this thread and lie inside `y`.
            unsafe {
                super::x86::micro_bf16w_rows(
                    mr,
                    a.as_ptr(),
                    lda,
                    b.as_ptr(),
                    stride,
                    klen,
                    out.0.add(c),
                    ldc,
                    nc,
                    accumulate,
                )
            };
        }
        _ => unreachable!("checked by in_place_applies"),
    }
}

/// The most of `x` packed once per product (see [`gemm`]) that a thread keeps
/// between calls (8 MiB: a 1024-token batch of SmolLM2's 1536 MLP features); larger
/// inputs get a buffer of their own.
const KEEP_PREPACKED: usize = 1 << 21;

thread_local! {
    /// `x` packed for a product split by columns, kept between calls.
    static PREPACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Depth of the packed blocks for `cols`: equal blocks (multiples of 8) of at
/// most [`KB`] rather than a short last one.
pub(super) fn k_step(cols: usize) -> usize {
    cols.div_ceil(cols.div_ceil(KB)).next_multiple_of(8).min(KB)
}

/// Output columns `c0..c1` of rows `r0..r1`.
#[allow(clippy::too_many_arguments)]
fn columns(
    isa: Isa,
    src: &WeightSource<'_>,
    x: &[f32],
    xp: Option<(&[f32], usize)>,
    kstep: usize,
    (r0, m): (usize, usize),
    rows: usize,
    cols: usize,
    (c0, c1): (usize, usize),
    out: &OutPtr,
) {
    let nb_max = NB.min((c1 - c0).next_multiple_of(NR));
    let (pack_len, apack_len) = (KB * nb_max, MB.next_multiple_of(MR) * KB);
    let scratch_len = (NR * KB).max(NB);
    // Few rows of `x` against `W` `[cols, n]` (a LoRA gradient: 16 rows against a
    // micro-batch's activations): each value of `W` would be packed for 16 uses, so the
    // AVX-512 micro-kernel reads `W`'s rows in place instead (whole panels only).
    let kn_in_place = match src {
        WeightSource::F32Kn { n, .. } => {
            isa == Isa::Avx512 && m - r0 <= KN_IN_PLACE_MAX_M && n.is_multiple_of(NR)
        }
        _ => false,
    };
    BUFFERS.with_borrow_mut(|buf| {
        // The packing below writes every value the micro-kernel then reads
        // (padding included), so what an earlier call left here is never read.
        if buf.len() < pack_len + apack_len + scratch_len {
            *buf = vec![0f32; pack_len + apack_len + scratch_len];
        }
        let (pack, rest) = buf.split_at_mut(pack_len);
        let (apack, scratch) = rest.split_at_mut(apack_len);
        let scratch = &mut scratch[..scratch_len];
        for j0 in (c0..c1).step_by(nb_max) {
            let nb = nb_max.min(c1 - j0);
            for k0 in (0..cols).step_by(kstep) {
                let kc = kstep.min(cols - k0);
                // The block's panels, `pstride` apart with rows `ldb` apart: packed
                // here, or read in place.
                let (pack, pstride, ldb): (&[f32], usize, usize) = match src {
                    WeightSource::F32Panels(w) => {
                        (&w.values[(j0 / NR * cols + k0) * NR..], cols * NR, NR)
                    }
                    WeightSource::F32Kn { w, n } if kn_in_place => (&w[k0 * n + j0..], NR, *n),
                    _ => {
                        pack_block(isa, src, j0, nb, k0, kc, pack, scratch);
                        (&pack[..], KB * NR, NR)
                    }
                };
                // One panel wide, unshared `x`: the micro-kernel reads `x` unpacked.
                #[cfg(target_arch = "x86_64")]
                if isa == Isa::Avx512 && nb <= NR && xp.is_none() && ldb == NR {
                    let panel = &pack[..kc * NR];
                    for i in (r0..m).step_by(MR) {
                        let mr = MR.min(m - i);
                        let a = &x[i * cols + k0..(i + mr - 1) * cols + k0 + kc];
                        // SAFETY: rows `i..i + mr`, columns `j0..j0 + nb` of `y` lie
                        // inside `y` (`m × rows`) and belong to this thread.
                        let c = unsafe { out.0.add(i * rows + j0) };
                        super::x86::micro_rows_x16(
                            mr,
                            a.as_ptr(),
                            cols,
                            panel.as_ptr(),
                            kc,
                            c,
                            rows,
                            nb,
                            k0 > 0,
                        );
                    }
                    continue;
                }
                for i0 in (r0..m).step_by(MB) {
                    let i1 = (i0 + MB).min(m);
                    // Micro-panels of `x`, `stride` apart: packed here, or by `gemm`.
                    let (a_all, stride) = match xp {
                        Some((xp, m_pad)) => (&xp[k0 * m_pad + i0 / MR * kc * MR..], kc * MR),
                        None => {
                            pack_rows(isa, x, cols, i0, i1, k0, kc, apack, KB * MR);
                            (&apack[..], KB * MR)
                        }
                    };
                    // AVX-512 runs two panels (32 columns) per micro-kernel call.
                    let step = if isa == Isa::Avx512 { 2 } else { 1 };
                    for p in (0..nb.div_ceil(NR)).step_by(step) {
                        let nc = (step * NR).min(nb - p * NR);
                        let end = p * pstride + (nc - 1) / NR * pstride + (kc - 1) * ldb + NR;
                        let panel = &pack[p * pstride..end];
                        for (q, i) in (i0..i1).step_by(MR).enumerate() {
                            let mr = MR.min(i1 - i);
                            let a = &a_all[q * stride..q * stride + kc * MR];
                            // SAFETY: rows `i..i + mr`, columns `j0 + p·NR ..+ nc` of `y`
                            // lie inside `y` (`m × rows`) and belong to this thread.
                            let c = unsafe { out.0.add(i * rows + j0 + p * NR) };
                            micro(isa, mr, a, panel, (pstride, ldb), kc, c, rows, nc, k0 > 0);
                        }
                    }
                }
            }
        }
    });
}

thread_local! {
    /// Each thread's packing buffers (1.3 MiB at most), kept between calls: a
    /// training step makes thousands of products, and allocating and zeroing the
    /// buffers for each was 1.4% of its time.
    static BUFFERS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Packs rows `i0..i1`, columns `k0..k0 + kc` of `x` into micro-panels of [`MR`]
/// rows, `apack[q][k][r]` (`stride` apart; rows past `i1` are zero), so the
/// micro-kernel reads `x` as one sequential stream.
#[allow(clippy::too_many_arguments)]
fn pack_rows(
    isa: Isa,
    x: &[f32],
    cols: usize,
    i0: usize,
    i1: usize,
    k0: usize,
    kc: usize,
    apack: &mut [f32],
    stride: usize,
) {
    for (q, i) in (i0..i1).step_by(MR).enumerate() {
        let panel = &mut apack[q * stride..q * stride + kc * MR];
        if i + MR <= i1 {
            // Whole micro-panel: six row streams in, one sequential stream out.
            let r: [&[f32]; MR] =
                std::array::from_fn(|r| &x[(i + r) * cols + k0..(i + r) * cols + k0 + kc]);
            #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx512 {
                done = super::x86::interleave6(&r, panel);
            }
            let _ = isa;
            for (k, dst) in panel.chunks_exact_mut(MR).enumerate().skip(done) {
                for (d, row) in dst.iter_mut().zip(&r) {
                    *d = row[k];
                }
            }
            continue;
        }
        for r in 0..MR {
            if i + r < i1 {
                let row = &x[(i + r) * cols + k0..(i + r) * cols + k0 + kc];
                for (k, &v) in row.iter().enumerate() {
                    panel[k * MR + r] = v;
                }
            } else {
                for k in 0..kc {
                    panel[k * MR + r] = 0.0;
                }
            }
        }
    }
}

/// `y[i][j] (+)= Σ_k a[k][i] · panel[j / NR][k][j % NR]` for `i < mr`, `j < nc` (`a` a
/// packed micro-panel of [`MR`] rows; `nc ≤ 2 · NR` on AVX-512, which reads the panel
/// after this one, `KB · NR` further, `nc ≤ NR` otherwise).
#[allow(clippy::too_many_arguments)]
#[inline]
fn micro(
    isa: Isa,
    mr: usize,
    a: &[f32],
    panel: &[f32],
    (stride, ldb): (usize, usize),
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    debug_assert!(panel.len() >= (nc - 1) / NR * stride + (kc - 1) * ldb + NR);
    debug_assert!(a.len() >= kc * MR && (ldb == NR || isa == Isa::Avx512));
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => super::x86::micro_6x32(
            mr,
            a.as_ptr(),
            panel.as_ptr(),
            stride,
            ldb,
            kc,
            c,
            ldc,
            nc,
            accumulate,
        ),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            super::x86::micro_6x16(mr, a.as_ptr(), panel.as_ptr(), kc, c, ldc, nc, accumulate)
        }
        // SAFETY: NEON was checked through `Isa::available`; `a` holds a packed
        // micro-panel, `panel` one panel of `kc` rows (`ldb == NR`), `c` the tile.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe {
            super::neon::micro_6x16(mr, a.as_ptr(), panel.as_ptr(), kc, c, ldc, nc, accumulate)
        },
        _ => {
            for i in 0..mr {
                for j in 0..nc {
                    let mut acc = 0f32;
                    let b = &panel[j / NR * stride + j % NR..];
                    for k in 0..kc {
                        acc += a[k * MR + i] * b[k * ldb];
                    }
                    // SAFETY: as in `columns`.
                    unsafe {
                        let o = c.add(i * ldc + j);
                        *o = if accumulate { *o + acc } else { acc };
                    }
                }
            }
        }
    }
}

/// Packs `V[j0..j0 + nb][k0..k0 + kc]` into panels `pack[p][k][j]` (stride `KB · NR`
/// per panel), zero beyond `nb`.
#[allow(clippy::too_many_arguments)]
fn pack_block(
    isa: Isa,
    src: &WeightSource<'_>,
    j0: usize,
    nb: usize,
    k0: usize,
    kc: usize,
    pack: &mut [f32],
    scratch: &mut [f32],
) {
    let panels = nb.div_ceil(NR);
    match src {
        // `V[j][k] = W[k][j]` straight from row `k` of `W`, 16 values per panel.
        WeightSource::F32Kn { w, n } => {
            for k in 0..kc {
                let row = &w[(k0 + k) * n + j0..(k0 + k) * n + j0 + nb];
                for (p, src) in row.chunks(NR).enumerate() {
                    let dst = &mut pack[p * KB * NR + k * NR..p * KB * NR + k * NR + NR];
                    copy_padded(src, dst);
                }
            }
        }
        // `V[j][k] = W[k][j]`: row `k` of `W` holds the block's columns contiguously.
        WeightSource::Nf4T(_) | WeightSource::Q8T(_) => {
            // On AVX-512, NF4 runs of 32 aligned values go straight into the panels.
            let direct = match src {
                #[cfg(target_arch = "x86_64")]
                WeightSource::Nf4T(w)
                    if isa == Isa::Avx512 && w.cols.is_multiple_of(32) && j0.is_multiple_of(32) =>
                {
                    nb / 32 * 32
                }
                _ => 0,
            };
            let row = &mut scratch[..nb - direct];
            for k in 0..kc {
                #[cfg(target_arch = "x86_64")]
                if let (WeightSource::Nf4T(w), true) = (src, direct > 0) {
                    let start = (k0 + k) * w.cols + j0;
                    super::x86::dequant_panels(w, start, direct, &mut pack[k * NR..], KB * NR);
                }
                if direct == nb {
                    continue;
                }
                src.column_run(isa, k0 + k, j0 + direct, row);
                for (p, src) in row.chunks(NR).enumerate() {
                    let p = p + direct / NR;
                    let dst = &mut pack[p * KB * NR + k * NR..p * KB * NR + k * NR + NR];
                    copy_padded(src, dst);
                }
            }
        }
        // Already in panels (`columns` reads them in place; copied for completeness).
        WeightSource::F32Panels(w) => {
            for p in 0..panels {
                let at = ((j0 / NR + p) * w.cols + k0) * NR;
                pack[p * KB * NR..p * KB * NR + kc * NR]
                    .copy_from_slice(&w.values[at..at + kc * NR]);
            }
        }
        // Already in panels of 16 rows: widened to f32 where they lie.
        WeightSource::Bf16(w) => {
            for p in 0..panels {
                let panel = &mut pack[p * KB * NR..p * KB * NR + kc * NR];
                w.widen_panel(j0 + p * NR, k0, kc, panel);
            }
        }
        // Rows of `V` are contiguous: dequantize 16 of them, then transpose.
        WeightSource::Nf4(_) | WeightSource::F32 { .. } | WeightSource::Q8(_) => {
            for p in 0..panels {
                let nc = NR.min(nb - p * NR);
                let panel = &mut pack[p * KB * NR..p * KB * NR + kc * NR];
                #[cfg(target_arch = "x86_64")]
                if let (WeightSource::Nf4(w), Isa::Avx512, NR) = (src, isa, nc)
                    && w.cols.is_multiple_of(32)
                    && k0.is_multiple_of(32)
                    && kc.is_multiple_of(32)
                {
                    super::x86::dequant_panel_t(w, j0 + p * NR, k0, kc, panel);
                    continue;
                }
                if let (WeightSource::F32 { w, cols }, NR) = (src, nc) {
                    // Transposed straight from `W`'s rows, without the scratch copy.
                    let start = (j0 + p * NR) * cols + k0;
                    transpose_panel(
                        isa,
                        &w[start..start + (NR - 1) * cols + kc],
                        *cols,
                        kc,
                        panel,
                    );
                    continue;
                }
                for j in 0..NR {
                    let dst = &mut scratch[j * KB..j * KB + kc];
                    if j < nc {
                        src.row_slice(isa, j0 + p * NR + j, k0, dst);
                    } else {
                        dst.iter_mut().for_each(|v| *v = 0.0);
                    }
                }
                transpose_panel(isa, scratch, KB, kc, panel);
            }
        }
    }
}

/// `dst = src` padded with zeros; a whole panel row (`NR` values) is a fixed-size
/// copy the compiler inlines (a `memcpy` call per 64 bytes was 5.6% of a SmolLM2
/// forward).
#[inline(always)]
fn copy_padded(src: &[f32], dst: &mut [f32]) {
    if let (Ok(s), Ok(d)) = (
        <&[f32; NR]>::try_from(src),
        <&mut [f32; NR]>::try_from(&mut *dst),
    ) {
        *d = *s;
    } else {
        dst[..src.len()].copy_from_slice(src);
        dst[src.len()..].iter_mut().for_each(|v| *v = 0.0);
    }
}

/// `panel[k][j] = src[j][k]` for `j < NR`, `k < kc` (`src` rows `ld` apart).
fn transpose_panel(isa: Isa, src: &[f32], ld: usize, kc: usize, panel: &mut [f32]) {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) {
        done = kc / 8 * 8;
        super::x86::transpose_16xk(src, ld, done, panel);
    }
    let _ = isa;
    for k in done..kc {
        for j in 0..NR {
            panel[k * NR + j] = src[j * ld + k];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ISA's packing of `x` (the AVX-512 one interleaves 16 columns at a time
    /// with permutes) writes the scalar loop's micro-panels, partial ones and padding
    /// included.
    #[test]
    fn packed_rows_are_the_same_on_every_isa() {
        let (m, cols): (usize, usize) = (23, 77);
        let x: Vec<f32> = (0..m * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
        for (i0, k0, kc) in [
            (0, 0, 77),
            (0, 8, 64),
            (5, 13, 35),
            (6, 0, 16),
            (17, 40, 37),
        ] {
            let stride = kc * MR + 3;
            let len = (m - i0).div_ceil(MR) * stride;
            let mut want = vec![f32::NAN; len];
            pack_rows(Isa::Scalar, &x, cols, i0, m, k0, kc, &mut want, stride);
            for (q, i) in (i0..m).step_by(MR).enumerate() {
                for k in 0..kc {
                    for r in 0..MR {
                        let v = if i + r < m {
                            x[(i + r) * cols + k0 + k]
                        } else {
                            0.0
                        };
                        assert_eq!(want[q * stride + k * MR + r], v, "q {q} k {k} r {r}");
                    }
                }
            }
            for isa in Isa::all_available() {
                let mut got = vec![f32::NAN; len];
                pack_rows(isa, &x, cols, i0, m, k0, kc, &mut got, stride);
                for (q, (g, w)) in got.chunks(stride).zip(want.chunks(stride)).enumerate() {
                    let (g, w) = (&g[..kc * MR], &w[..kc * MR]);
                    assert!(
                        g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa:?} panel {q}"
                    );
                }
            }
        }
    }
}
