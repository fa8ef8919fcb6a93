//! 8-bit weights in GGUF's `Q8_0` form: each run of 32 consecutive values of a row
//! is `d · q` with one scale `d` and signed 8-bit codes `q`. llama.cpp stores token
//! embeddings this way; kept in this form they take a quarter of the f32 bytes, and
//! `d · q` (an f16 scale widened to f32 times an 8-bit integer) is exact in f32, so
//! every product sees the same weight values as the expanded table.

use super::Isa;
use crate::{Error, Result};

/// Values per `Q8_0` block (one scale each).
pub const Q8_BLOCK: usize = 32;

/// An 8-bit weight `[rows, cols]`: codes row-major, one f32 scale per
/// [`Q8_BLOCK`] codes (`cols` a multiple of it, so no block spans two rows).
#[derive(Debug, Clone, Copy)]
pub struct Q8Weight<'a> {
    qs: &'a [i8],
    scales: &'a [f32],
    rows: usize,
    cols: usize,
}

impl<'a> Q8Weight<'a> {
    /// Checks `cols` against the block size and the lengths of `qs` and `scales`.
    pub fn new(qs: &'a [i8], scales: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        if !cols.is_multiple_of(Q8_BLOCK) {
            return Err(Error::shape(
                "Q8_0 weight columns",
                format!("a multiple of {Q8_BLOCK}"),
                cols,
            ));
        }
        if qs.len() != rows * cols {
            return Err(Error::shape("Q8_0 codes", rows * cols, qs.len()));
        }
        if scales.len() != rows * cols / Q8_BLOCK {
            return Err(Error::shape(
                "Q8_0 scales",
                rows * cols / Q8_BLOCK,
                scales.len(),
            ));
        }
        Ok(Q8Weight {
            qs,
            scales,
            rows,
            cols,
        })
    }

    /// Output features (rows of `W`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features (columns of `W`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Flat elements `start..start + out.len()` as f32.
    #[inline]
    pub(crate) fn dequant_range(&self, isa: Isa, start: usize, out: &mut [f32]) {
        let qs = &self.qs[start..start + out.len()];
        #[cfg(target_arch = "x86_64")]
        if matches!(isa, Isa::Avx2 | Isa::Avx512) {
            // SAFETY: AVX2 checked by the caller through `Isa::available`.
            unsafe { dequant_avx2(qs, self.scales, start, out) };
            return;
        }
        let _ = isa;
        dequant_runs(qs, self.scales, start, out);
    }

    /// `W[r] · x` (`x` of `cols` values).
    #[inline]
    pub(crate) fn dot_row(&self, isa: Isa, r: usize, x: &[f32]) -> f32 {
        let qs = &self.qs[r * self.cols..(r + 1) * self.cols];
        let scales = &self.scales[r * self.cols / Q8_BLOCK..(r + 1) * self.cols / Q8_BLOCK];
        #[cfg(target_arch = "x86_64")]
        if matches!(isa, Isa::Avx2 | Isa::Avx512) {
            // SAFETY: as in `dequant_range`.
            return unsafe { dot_avx2(qs, scales, x) };
        }
        let _ = isa;
        let mut acc = 0f32;
        for ((q, d), xb) in qs
            .chunks_exact(Q8_BLOCK)
            .zip(scales)
            .zip(x.chunks_exact(Q8_BLOCK))
        {
            for (&q, &xv) in q.iter().zip(xb) {
                acc += d * f32::from(q) * xv;
            }
        }
        acc
    }
}

/// `out[i] = d · q` for element `start + i`, block run by block run (the loop the
/// SIMD build vectorizes too).
#[inline(always)]
fn dequant_runs(qs: &[i8], scales: &[f32], start: usize, out: &mut [f32]) {
    let mut i = 0;
    while i < out.len() {
        let block = (start + i) / Q8_BLOCK;
        let end = ((block + 1) * Q8_BLOCK - start).min(out.len());
        let d = scales[block];
        for (o, &q) in out[i..end].iter_mut().zip(&qs[i..end]) {
            *o = d * f32::from(q);
        }
        i = end;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dequant_avx2(qs: &[i8], scales: &[f32], start: usize, out: &mut [f32]) {
    dequant_runs(qs, scales, start, out)
}

/// Block by block: widen 8 codes at a time, scale them, and accumulate `w · x` in
/// four lanes of eight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_avx2(qs: &[i8], scales: &[f32], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 4];
    for ((q, &d), xb) in qs
        .chunks_exact(Q8_BLOCK)
        .zip(scales)
        .zip(x.chunks_exact(Q8_BLOCK))
    {
        let dv = _mm256_set1_ps(d);
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: 32 codes and 32 floats in each chunk; 8 read at offset 8·j.
            unsafe {
                let c = _mm_loadl_epi64(q.as_ptr().add(8 * j) as *const __m128i);
                let w = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c)));
                *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(xb.as_ptr().add(8 * j)), *a);
            }
        }
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    super::x86::hsum256(s)
}

/// `out[j·ld + i] = Σ_k W[j0 + j][k] · x[i][k]` for `i < m` (1 to 8 rows of `x`,
/// `cols` apart) and `j < jn`: each row of codes widened and scaled once for all `m`
/// dot products.
#[cfg(target_arch = "x86_64")]
pub(super) fn dots_few(
    w: &Q8Weight<'_>,
    x: &[f32],
    m: usize,
    (j0, jn): (usize, usize),
    out: &mut [f32],
    ld: usize,
) {
    assert!((1..=8).contains(&m) && m <= ld && x.len() >= m * w.cols && j0 + jn <= w.rows);
    assert!(jn == 0 || out.len() >= (jn - 1) * ld + m);
    // SAFETY: AVX-512F was checked by the caller (`Isa::Avx512`); bounds asserted.
    unsafe {
        match m {
            1 => dots_few512::<1>(w, x, j0, jn, out, ld),
            2 => dots_few512::<2>(w, x, j0, jn, out, ld),
            3 => dots_few512::<3>(w, x, j0, jn, out, ld),
            4 => dots_few512::<4>(w, x, j0, jn, out, ld),
            5 => dots_few512::<5>(w, x, j0, jn, out, ld),
            6 => dots_few512::<6>(w, x, j0, jn, out, ld),
            7 => dots_few512::<7>(w, x, j0, jn, out, ld),
            _ => dots_few512::<8>(w, x, j0, jn, out, ld),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::needless_range_loop)]
unsafe fn dots_few512<const M: usize>(
    w: &Q8Weight<'_>,
    x: &[f32],
    j0: usize,
    jn: usize,
    out: &mut [f32],
    ld: usize,
) {
    use std::arch::x86_64::*;
    let cols = w.cols;
    for j in 0..jn {
        let o = &mut out[j * ld..j * ld + M];
        let r = j0 + j;
        let scales = &w.scales[r * cols / Q8_BLOCK..(r + 1) * cols / Q8_BLOCK];
        // Two accumulators per row (each block's halves): two FMA chains per row.
        let mut acc = [[_mm512_setzero_ps(); 2]; M];
        // SAFETY (loop): block `b` of row `r` has 32 codes; each `x` row `cols` floats.
        unsafe {
            let q = w.qs.as_ptr().add(r * cols);
            for (b, &d) in scales.iter().enumerate() {
                let d = _mm512_set1_ps(d);
                let c0 = _mm_loadu_si128(q.add(b * Q8_BLOCK).cast());
                let c1 = _mm_loadu_si128(q.add(b * Q8_BLOCK + 16).cast());
                let w0 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c0)));
                let w1 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c1)));
                for i in 0..M {
                    let xi = x.as_ptr().add(i * cols + b * Q8_BLOCK);
                    acc[i][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xi), acc[i][0]);
                    acc[i][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xi.add(16)), acc[i][1]);
                }
            }
        }
        for i in 0..M {
            o[i] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][0], acc[i][1]));
        }
    }
}

/// `out[i][c] = Σ_k x[i][k] · W[k][j0 + c]` for `i < m`, `c < jn` (`out` `[m, jn]`,
/// `j0` and `jn` multiples of 16): rows of codes widened and scaled four at a time,
/// then added into every row's outputs.
#[cfg(target_arch = "x86_64")]
pub(super) fn axpy_few(
    w: &Q8Weight<'_>,
    x: &[f32],
    m: usize,
    j0: usize,
    jn: usize,
    out: &mut [f32],
) {
    assert!(j0.is_multiple_of(16) && jn.is_multiple_of(16) && j0 + jn <= w.cols);
    assert!(x.len() >= m * w.rows && out.len() >= m * jn);
    // SAFETY: AVX-512F was checked by the caller (`Isa::Avx512`); bounds asserted.
    unsafe { axpy_few512(w, x, m, j0, jn, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn axpy_few512(
    w: &Q8Weight<'_>,
    x: &[f32],
    m: usize,
    j0: usize,
    jn: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    const R: usize = 4;
    let (k_all, cols) = (w.rows, w.cols);
    out[..m * jn].iter_mut().for_each(|v| *v = 0.0);
    let o = out.as_mut_ptr();
    let mut k = 0;
    while k < k_all {
        let g = R.min(k_all - k);
        for c in (0..jn).step_by(16) {
            let col = j0 + c;
            // SAFETY: rows `k..k + g` exist; 16 codes from `col` lie in one block of
            // row `k + r`; `out` holds `m` rows of `jn`; `x` holds `m` rows of `k_all`.
            unsafe {
                let wv: [__m512; R] = core::array::from_fn(|r| {
                    if r < g {
                        let e = (k + r) * cols + col;
                        let c8 = _mm_loadu_si128(w.qs.as_ptr().add(e).cast());
                        let d = _mm512_set1_ps(*w.scales.get_unchecked(e / Q8_BLOCK));
                        _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c8)))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                for i in 0..m {
                    let op = o.add(i * jn + c);
                    let xi = x.as_ptr().add(i * k_all + k);
                    let mut acc = _mm512_loadu_ps(op);
                    for (r, wr) in wv.iter().enumerate().take(g) {
                        acc = _mm512_fmadd_ps(_mm512_set1_ps(*xi.add(r)), *wr, acc);
                    }
                    _mm512_storeu_ps(op, acc);
                }
            }
        }
        k += g;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(rows: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
        let qs = (0..rows * cols)
            .map(|i| ((i * 37 + 11) % 255) as i32 - 127)
            .map(|v| v as i8)
            .collect();
        let scales = (0..rows * cols / Q8_BLOCK)
            .map(|b| 1e-3 * (1 + b % 7) as f32)
            .collect();
        (qs, scales)
    }

    #[test]
    fn ranges_and_dots_agree_on_every_isa() {
        let (rows, cols) = (5, 96);
        let (qs, sc) = weight(rows, cols);
        let w = Q8Weight::new(&qs, &sc, rows, cols).unwrap();
        let want: Vec<f32> = (0..rows * cols)
            .map(|e| sc[e / Q8_BLOCK] * f32::from(qs[e]))
            .collect();
        let x: Vec<f32> = (0..cols).map(|k| (k as f32 - 40.0) / 17.0).collect();
        for isa in Isa::all_available() {
            // Unaligned starts and lengths crossing blocks.
            for (start, len) in [(0, 480), (3, 61), (31, 2), (64, 32), (100, 0)] {
                let mut out = vec![f32::NAN; len];
                w.dequant_range(isa, start, &mut out);
                assert_eq!(out, want[start..start + len], "{isa:?} {start}+{len}");
            }
            for r in 0..rows {
                let exact: f64 = (0..cols)
                    .map(|k| f64::from(want[r * cols + k]) * f64::from(x[k]))
                    .sum();
                let got = w.dot_row(isa, r, &x);
                assert!((f64::from(got) - exact).abs() < 1e-5, "{isa:?} row {r}");
            }
        }
    }

    /// The products through the 8-bit source equal, bit for bit, the f32 products
    /// of the expanded table through the same kernels (the blocked GEMM packs the
    /// same values); below four rows, and on AVX-512 below 16 (the 8-bit weight's
    /// unpacked few-row path), where the two take different paths, they agree to
    /// rounding.
    #[test]
    fn products_equal_the_expanded_tables() {
        use crate::kernels::{
            gather_rows_q8, matmul_kn_f32, matmul_nn_q8, matmul_nt_f32, matmul_nt_q8,
        };
        let (rows, cols) = (70, 96);
        let (qs, sc) = weight(rows, cols);
        let w = Q8Weight::new(&qs, &sc, rows, cols).unwrap();
        let mut dense = vec![0f32; rows * cols];
        gather_rows_q8(&w, &(0..rows).collect::<Vec<_>>(), &mut dense, Isa::Scalar).unwrap();
        for isa in Isa::all_available() {
            for m in [1, 3, 4, 13, 16] {
                let exact = m >= 16 || (m >= 4 && isa != Isa::Avx512);
                let x: Vec<f32> = (0..m * cols)
                    .map(|i| ((i * 7 % 23) as f32 - 11.0) / 9.0)
                    .collect();
                let (mut a, mut b) = (vec![0f32; m * rows], vec![0f32; m * rows]);
                matmul_nt_q8(&x, m, &w, &mut a, isa, 2).unwrap();
                matmul_nt_f32(&x, m, &dense, rows, cols, &mut b, isa, 2).unwrap();
                if exact {
                    assert_eq!(a, b, "{isa:?} nt m={m}");
                } else {
                    for (p, q) in a.iter().zip(&b) {
                        assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{isa:?} m={m}");
                    }
                }
                let dy: Vec<f32> = (0..m * rows)
                    .map(|i| ((i * 5 % 19) as f32 - 9.0) / 7.0)
                    .collect();
                let (mut a, mut b) = (vec![0f32; m * cols], vec![0f32; m * cols]);
                matmul_nn_q8(&dy, m, &w, &mut a, isa, 2).unwrap();
                matmul_kn_f32(&dy, m, &dense, rows, cols, &mut b, isa, 2).unwrap();
                if exact {
                    assert_eq!(a, b, "{isa:?} nn m={m}");
                } else {
                    // Below four rows the f32 `[in, out]` product streams columns
                    // (`gemv_kn`), a different summation order from the blocked one.
                    for (p, q) in a.iter().zip(&b) {
                        assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{isa:?} nn m={m}");
                    }
                }
            }
        }
        let mut one = vec![0f32; 2 * cols];
        gather_rows_q8(&w, &[69, 0], &mut one, Isa::detect()).unwrap();
        assert_eq!(one[..cols], dense[69 * cols..]);
        assert_eq!(one[cols..], dense[..cols]);
        let err = gather_rows_q8(&w, &[70], &mut one[..cols], Isa::detect()).unwrap_err();
        assert!(err.to_string().contains("row id"), "{err}");
    }

    #[test]
    fn rejects_bad_shapes() {
        let (qs, sc) = weight(2, 64);
        assert!(Q8Weight::new(&qs, &sc, 2, 64).is_ok());
        assert!(Q8Weight::new(&qs[..64 * 2 - 32], &sc, 2, 64).is_err());
        assert!(Q8Weight::new(&qs, &sc[..3], 2, 64).is_err());
        let err = Q8Weight::new(&qs, &sc, 4, 32 + 16).unwrap_err();
        assert!(err.to_string().contains("multiple of 32"), "{err}");
    }

    /// Few-row products (1 to 15 rows; the unpacked path on AVX-512) of both
    /// orientations against the f64 product of the expanded table: row counts across
    /// the 8-row groups of the dot products, weights split over 1 to 3 threads into
    /// 32-column ranges with a short last one, and a row count not a multiple of 4.
    #[test]
    fn few_row_products_match_f64() {
        use crate::kernels::{gather_rows_q8, matmul_nn_q8, matmul_nt_q8};
        for (rows, cols) in [(70, 96), (1111, 160), (37, 4128)] {
            let (qs, sc) = weight(rows, cols);
            let w = Q8Weight::new(&qs, &sc, rows, cols).unwrap();
            let mut dense = vec![0f32; rows * cols];
            gather_rows_q8(&w, &(0..rows).collect::<Vec<_>>(), &mut dense, Isa::Scalar).unwrap();
            for isa in Isa::all_available() {
                for m in [1, 2, 5, 8, 9, 15] {
                    for threads in [1, 2, 3] {
                        let what = format!("{rows}x{cols} {isa:?} m={m} threads={threads}");
                        let x: Vec<f32> = (0..m * cols)
                            .map(|i| ((i * 7 % 23) as f32 - 11.0) / 9.0)
                            .collect();
                        let mut y = vec![f32::NAN; m * rows];
                        matmul_nt_q8(&x, m, &w, &mut y, isa, threads).unwrap();
                        let term = |i: usize, j: usize, k: usize| {
                            f64::from(x[i * cols + k]) * f64::from(dense[j * cols + k])
                        };
                        assert_near_f64(&y, [m, rows, cols], term, &format!("nt {what}"));
                        let dy: Vec<f32> = (0..m * rows)
                            .map(|i| ((i * 5 % 19) as f32 - 9.0) / 7.0)
                            .collect();
                        let mut g = vec![f32::NAN; m * cols];
                        matmul_nn_q8(&dy, m, &w, &mut g, isa, threads).unwrap();
                        let term = |i: usize, k: usize, j: usize| {
                            f64::from(dy[i * rows + j]) * f64::from(dense[j * cols + k])
                        };
                        assert_near_f64(&g, [m, cols, rows], term, &format!("nn {what}"));
                    }
                }
            }
        }
    }

    /// `got` (`[m, n]`) within 1e-5 of the magnitude of its terms of the f64 sums
    /// `Σ_k term(i, j, k)` over `depth` terms.
    fn assert_near_f64(
        got: &[f32],
        [m, n, depth]: [usize; 3],
        term: impl Fn(usize, usize, usize) -> f64,
        what: &str,
    ) {
        for i in 0..m {
            for j in 0..n {
                let (mut e, mut s) = (0f64, 0f64);
                for k in 0..depth {
                    let t = term(i, j, k);
                    e += t;
                    s += t.abs();
                }
                let g = f64::from(got[i * n + j]);
                assert!(
                    (g - e).abs() <= 1e-5 * s + 1e-6,
                    "{what} [{i}][{j}] {g} vs {e}"
                );
            }
        }
    }
}
