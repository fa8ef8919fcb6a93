//! Frozen weights laid out once in panels of 16 rows, for inference.
//!
//! [`F32Packed`]: f32 values in the blocked kernel's own panel layout, `[panel][k][16]`,
//! which the micro-kernel reads in place: a product packs only `x`, where a weight
//! given as a matrix is packed again by every product (and by each part of a batch
//! split over the cores). The same sums as the f32 kernel on the matrix, bit for bit.
//!
//! [`Bf16Packed`]: a weight rounded to bf16 (8 bits of mantissa), half the bytes of
//! f32, an inference option rather than the reference path. Two products:
//! - [`Bf16Packed::matmul_nt`]: `x` stays f32; the blocked f32 kernel widens the
//!   panels as it packs them (exactly: a bf16 value is an f32 value), so only the
//!   weight's rounding separates it from the f32 model.
//! - [`Bf16Packed::matmul_nt_dot`]: `x` is rounded to bf16 too and pairs are
//!   multiplied by AVX-512 BF16's `vdpbf16ps` (sums in f32), twice an f32 FMA's
//!   multiply-adds per instruction.

use crate::kernels::bf16_gemm::{self, NR, Panels};
use crate::kernels::blocked::{self, F32Panels};
use crate::kernels::{self, Isa, WeightSource};
use crate::{Error, Result};

/// A weight `[rows, cols]` (`y = x · Wᵀ`, Hugging Face's `[out, in]`) in f32 panels of
/// 16 rows, `[panel][k][16]` (zero past the last row).
#[derive(Clone)]
pub struct F32Packed {
    values: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl F32Packed {
    /// Packs `w` (`[rows, cols]`, row-major). A non-finite value is an error naming its
    /// position.
    pub fn from_f32(w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        check_weight(w, rows, cols, "f32")?;
        let mut values = vec![0f32; rows.div_ceil(NR) * cols * NR];
        blocked::fill_panels(&mut values, rows, cols, |r, row| {
            row.copy_from_slice(&w[r * cols..(r + 1) * cols])
        });
        Ok(F32Packed { values, rows, cols })
    }

    fn panels(&self) -> F32Panels<'_> {
        F32Panels {
            values: &self.values,
            cols: self.cols,
        }
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held (panels padded to 16 rows).
    pub fn nbytes(&self) -> usize {
        4 * self.values.len()
    }

    /// The weight, `[rows, cols]` row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let p = self.panels();
        unpanel(self.rows, self.cols, |r, k| p.value(r, k))
    }

    /// `x · Wᵀ`: `x` `[m, cols]` to `[m, rows]` (large outputs come from
    /// [`kernels::pool`]).
    pub fn matmul_nt(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        self.matmul_nt_with(x, m, Isa::detect(), 0)
    }

    /// [`Self::matmul_nt`] with a chosen instruction set and thread count (0: the
    /// rayon pool's).
    pub fn matmul_nt_with(
        &self,
        x: &[f32],
        m: usize,
        isa: Isa,
        threads: usize,
    ) -> Result<Vec<f32>> {
        let src = WeightSource::F32Panels(self.panels());
        kernels::product_of(x, m, &src, self.rows, self.cols, isa, threads)
    }
}

impl std::fmt::Debug for F32Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("F32Packed")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

/// A packed weight's values as `[rows, cols]` row-major, `value(r, k)` each.
fn unpanel(rows: usize, cols: usize, value: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    for (r, row) in out.chunks_exact_mut(cols.max(1)).enumerate() {
        for (k, v) in row.iter_mut().enumerate() {
            *v = value(r, k);
        }
    }
    out
}

/// `w` holds `rows × cols` finite values.
fn check_weight(w: &[f32], rows: usize, cols: usize, what: &str) -> Result<()> {
    if w.len() != rows * cols {
        return Err(Error::shape(
            format!("{what} weight [rows, cols]"),
            rows * cols,
            w.len(),
        ));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            value: w[i],
            index: i,
            block: i / cols.max(1),
            context: format!(" (row of a {what} weight)"),
        });
    }
    Ok(())
}

/// A weight `[rows, cols]` (`y = x · Wᵀ`, Hugging Face's `[out, in]`) in bf16 panels.
#[derive(Clone)]
pub struct Bf16Packed {
    words: Vec<u32>,
    rows: usize,
    cols: usize,
}

impl Bf16Packed {
    /// Rounds `w` (`[rows, cols]`, row-major f32) to bf16 (nearest even; subnormal
    /// values become zero, as the AVX-512 conversion does) and packs it. A
    /// non-finite value is an error naming its position.
    pub fn from_f32(w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        check_weight(w, rows, cols, "bf16")?;
        let mut words = vec![0u32; rows.div_ceil(NR) * cols.div_ceil(2) * NR];
        bf16_gemm::pack_weight(Isa::detect(), w, rows, cols, &mut words);
        Ok(Bf16Packed { words, rows, cols })
    }

    fn panels(&self) -> Panels<'_> {
        Panels {
            words: &self.words,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held (panels padded to 16 rows and an even number of columns).
    pub fn nbytes(&self) -> usize {
        4 * self.words.len()
    }

    /// The weight's bf16 values as f32, `[rows, cols]` row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let p = self.panels();
        unpanel(self.rows, self.cols, |r, k| p.value(r, k))
    }

    /// `x · Wᵀ`: `x` `[m, cols]` to `[m, rows]` in f32: the bf16 weight values are
    /// widened to f32 as the blocked kernel packs them, so the result is the f32
    /// product with [`Self::to_f32`]'s values, bit for bit. Large outputs come from
    /// [`kernels::pool`].
    pub fn matmul_nt(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        self.matmul_nt_with(x, m, Isa::detect(), 0)
    }

    /// [`Self::matmul_nt`] with a chosen instruction set and thread count (0: the
    /// rayon pool's).
    pub fn matmul_nt_with(
        &self,
        x: &[f32],
        m: usize,
        isa: Isa,
        threads: usize,
    ) -> Result<Vec<f32>> {
        let src = WeightSource::Bf16(self.panels());
        kernels::product_of(x, m, &src, self.rows, self.cols, isa, threads)
    }

    /// `x · Wᵀ` with `x` rounded to bf16 too and the pairs multiplied by AVX-512
    /// BF16's dot product (`vdpbf16ps`, sums in f32) where the CPU has it, by a
    /// portable kernel with the same bits elsewhere. Twice the multiply-adds of
    /// an f32 FMA per instruction; whether that is faster depends on the CPU (see
    /// `docs/benchmarks-quant.md`).
    pub fn matmul_nt_dot(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        self.matmul_nt_dot_with(x, m, Isa::detect(), 0)
    }

    /// [`Self::matmul_nt_dot`] with a chosen instruction set (the portable kernel for
    /// any but AVX-512 with BF16) and thread count (0: the rayon pool's).
    pub fn matmul_nt_dot_with(
        &self,
        x: &[f32],
        m: usize,
        isa: Isa,
        threads: usize,
    ) -> Result<Vec<f32>> {
        if x.len() != m * self.cols {
            return Err(Error::shape("input x [m, cols]", m * self.cols, x.len()));
        }
        let len = m * self.rows;
        let isa = if isa.available() { isa } else { Isa::Scalar };
        let mut y = kernels::pool::take(len);
        bf16_gemm::gemm(
            isa,
            self.panels(),
            x,
            m,
            &mut y.spare_capacity_mut()[..len],
            threads,
        );
        // SAFETY: `gemm` wrote all `len` elements (none when `m` or `rows` is 0).
        unsafe { y.set_len(len) };
        Ok(y)
    }
}

impl std::fmt::Debug for Bf16Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bf16Packed")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    fn bf(v: f32) -> f64 {
        f64::from(f32::from_bits(u32::from(bf16_gemm::to_bf16(v)) << 16))
    }

    /// `got` (`[m, rows]`) lies within f32 rounding of the exact sums `Σ_k xq(x[i][k]) ·
    /// wq(w[j][k])` (in f64; the bound of a sum of `cols` rounded additions).
    fn assert_near_exact(
        got: &[f32],
        x: &[f32],
        w: &[f32],
        (m, rows, cols): (usize, usize, usize),
        (xq, wq): (impl Fn(f32) -> f64, impl Fn(f32) -> f64),
    ) {
        for i in 0..m {
            for j in 0..rows {
                let (mut exact, mut mag) = (0f64, 0f64);
                for k in 0..cols {
                    let t = xq(x[i * cols + k]) * wq(w[j * cols + k]);
                    exact += t;
                    mag += t.abs();
                }
                let g = f64::from(got[i * rows + j]);
                let tol = (cols as f64 + 2.0) * f64::from(f32::EPSILON) * mag;
                assert!(
                    (g - exact).abs() <= tol,
                    "[{m}, {rows}, {cols}] ({i}, {j}): {g} vs {exact}"
                );
            }
        }
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
    }

    /// Every shape, row count and thread count: the result lies within f32 rounding
    /// of the exact sum of the bf16-rounded products (computed in f64), and the
    /// AVX-512 BF16 kernel (where this CPU has it) gives the portable kernel's bits.
    #[test]
    fn dot_products_are_exact_bf16_sums_on_every_path() {
        for (m, rows, cols) in [
            (1, 1, 1),
            (1, 16, 32),
            (3, 17, 33),
            (7, 40, 64),
            (13, 33, 600),
            (25, 64, 513),
            (130, 70, 96),
            (6, 300, 2),
            // A batch-1 product over 2^17 weights or more: split over the threads.
            (1, 300, 512),
        ] {
            let w = values(rows * cols, 7 + m as u64);
            let x = values(m * cols, 11 + rows as u64);
            let p = Bf16Packed::from_f32(&w, rows, cols).unwrap();
            let reference = p.matmul_nt_dot_with(&x, m, Isa::Scalar, 1).unwrap();
            assert_near_exact(&reference, &x, &w, (m, rows, cols), (bf, bf));
            for isa in Isa::all_available() {
                for threads in [1, 2, 3] {
                    let got = p.matmul_nt_dot_with(&x, m, isa, threads).unwrap();
                    assert!(
                        same_bits(&got, &reference),
                        "[{m}, {rows}, {cols}] {isa:?} {threads} threads"
                    );
                }
            }
        }
    }

    /// `product` (an f32 product over packed values `wv`) lies within f32 rounding of
    /// the exact sums with `wv` for every instruction set and thread count, and from 4
    /// rows is the f32 blocked kernel's product with `wv` given as a matrix, bit for
    /// bit (fewer rows of a matrix run as row dot products, in another order).
    fn check_f32_product(
        (m, rows, cols): (usize, usize, usize),
        x: &[f32],
        wv: &[f32],
        product: impl Fn(Isa, usize) -> Vec<f32>,
    ) {
        for isa in Isa::all_available() {
            for threads in [1, 2] {
                let got = product(isa, threads);
                assert_near_exact(&got, x, wv, (m, rows, cols), (f64::from, f64::from));
                if m < 4 {
                    continue;
                }
                let want = kernels::product(
                    x,
                    m,
                    kernels::Product::NtF32 { w: wv, rows, cols },
                    isa,
                    threads,
                )
                .unwrap();
                assert!(
                    same_bits(&got, &want),
                    "[{m}, {rows}, {cols}] {isa:?} {threads} threads"
                );
            }
        }
    }

    /// The f32 product over bf16 panels is the f32 product with the weight's bf16
    /// values (`x` keeps its precision), and those are the weight rounded to bf16.
    #[test]
    fn f32_products_equal_the_f32_kernel_on_the_bf16_values() {
        for shape @ (m, rows, cols) in [
            (1, 16, 32),
            (2, 17, 33),
            (3, 40, 64),
            (5, 40, 64),
            (4, 33, 601),
            (6, 70, 577),
            (13, 33, 600),
            (64, 300, 96),
        ] {
            let w = values(rows * cols, 5 + m as u64);
            let x = values(m * cols, 9 + rows as u64);
            let p = Bf16Packed::from_f32(&w, rows, cols).unwrap();
            let wv = p.to_f32();
            assert!(wv.iter().zip(&w).all(|(&a, &b)| f64::from(a) == bf(b)));
            check_f32_product(shape, &x, &wv, |isa, t| {
                p.matmul_nt_with(&x, m, isa, t).unwrap()
            });
        }
    }

    /// An f32 weight packed in the kernel's panels unpacks to itself and gives the
    /// product of the weight as a matrix (bit for bit from 4 rows: both run the
    /// blocked kernel, whose sums do not depend on where the panels come from).
    #[test]
    fn f32_panels_give_the_matrix_product() {
        for shape @ (m, rows, cols) in [
            (1, 16, 32),
            (2, 17, 33),
            (4, 33, 601),
            (7, 40, 64),
            (13, 33, 600),
            (64, 300, 96),
        ] {
            let w = values(rows * cols, 3 + m as u64);
            let x = values(m * cols, 5 + rows as u64);
            let p = F32Packed::from_f32(&w, rows, cols).unwrap();
            assert!(same_bits(&p.to_f32(), &w));
            check_f32_product(shape, &x, &w, |isa, t| {
                p.matmul_nt_with(&x, m, isa, t).unwrap()
            });
        }
        let e = F32Packed::from_f32(&[1.0, f32::INFINITY], 1, 2).unwrap_err();
        assert!(matches!(e, Error::NonFinite { index: 1, .. }), "{e}");
        let p = F32Packed::from_f32(&[0.5; 6], 2, 3).unwrap();
        let e = p.matmul_nt(&[1.0; 5], 2).unwrap_err();
        assert!(e.to_string().contains("input x"), "{e}");
    }

    /// The packed values are the inputs rounded to nearest even (ties included),
    /// with subnormals flushed, whichever conversion packed them.
    #[test]
    fn packing_rounds_to_nearest_even() {
        let mut w = values(3 * 70, 3);
        w[0] = f32::from_bits(0x3f80_8000); // a tie: to even, 1.0
        w[1] = f32::from_bits(0x3f81_8000); // a tie: to even, up
        w[2] = f32::from_bits(0x0000_0001); // subnormal: zero
        w[3] = -f32::from_bits(0x007f_ffff); // subnormal: negative zero
        w[4] = f32::MAX; // rounds up to infinity, as the hardware does
        let p = Bf16Packed::from_f32(&w, 3, 70).unwrap();
        let back = p.to_f32();
        assert_eq!(back[0], 1.0);
        assert_eq!(back[1].to_bits(), 0x3f82_0000);
        assert_eq!(back[2].to_bits(), 0);
        assert_eq!(back[3].to_bits(), 0x8000_0000);
        assert_eq!(back[4], f32::INFINITY);
        for (i, (&a, &b)) in w.iter().zip(&back).enumerate().skip(5) {
            assert_eq!(
                b.to_bits(),
                (a.to_bits() + 0x7fff + ((a.to_bits() >> 16) & 1)) & 0xffff_0000,
                "{i}"
            );
        }
    }

    #[test]
    fn bad_shapes_and_values_are_errors() {
        let e = Bf16Packed::from_f32(&[1.0; 5], 2, 3).unwrap_err();
        assert!(e.to_string().contains("bf16 weight"), "{e}");
        let mut w = vec![0.5f32; 6];
        w[4] = f32::NAN;
        let e = Bf16Packed::from_f32(&w, 2, 3).unwrap_err();
        assert!(matches!(e, Error::NonFinite { index: 4, .. }), "{e}");
        let p = Bf16Packed::from_f32(&[0.5; 6], 2, 3).unwrap();
        for e in [
            p.matmul_nt(&[1.0; 5], 2).unwrap_err(),
            p.matmul_nt_dot(&[1.0; 5], 2).unwrap_err(),
        ] {
            assert!(e.to_string().contains("input x"), "{e}");
        }
        assert!(p.matmul_nt(&[], 0).unwrap().is_empty());
        assert!(p.matmul_nt_dot(&[], 0).unwrap().is_empty());
    }
}
