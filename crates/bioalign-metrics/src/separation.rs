//! KG separation: how far apart the true and the false statements sit in
//! cosine geometry (`SPEC.md` section 3).
//!
//! The reference study computed `|mean(C_true) - mean(C_false)|`, where `C_x`
//! is the full cosine-similarity matrix of the rows of class `x`, diagonal
//! included. With unit vectors `u_i` and `S = sum_i u_i`, the mean of that
//! matrix is `||S||^2 / n^2`, so the measure costs one pass over the data,
//! O(n d), instead of O(n^2 d). The off-diagonal variant, which does not
//! reward a class for being small, is `(||S||^2 - n) / (n (n - 1))`.
//!
//! Sums are accumulated in f64; rows are split between threads.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::check;
use crate::error::{Error, Result};

/// KG separation of one embedding set (class 1 = true statements, 0 = false).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KgSeparation {
    /// The reference's measure: `|mean(C_true) - mean(C_false)|`, diagonal included.
    pub separation: f64,
    /// `mean(C_true) - mean(C_false)`, diagonal included (positive: true statements are tighter).
    pub signed: f64,
    /// Mean cosine similarity among true rows, diagonal included.
    pub mean_cos_true: f64,
    /// Mean cosine similarity among false rows, diagonal included.
    pub mean_cos_false: f64,
    /// `|offdiag_signed|`.
    pub offdiag_separation: f64,
    /// The same difference with the diagonal left out of both means.
    pub offdiag_signed: f64,
    /// Mean cosine similarity among distinct true rows.
    pub offdiag_mean_cos_true: f64,
    /// Mean cosine similarity among distinct false rows.
    pub offdiag_mean_cos_false: f64,
    /// Rows labelled 1.
    pub n_true: usize,
    /// Rows labelled 0.
    pub n_false: usize,
}

impl KgSeparation {
    /// Builds the measure from the squared norms of the two classes' unit-vector sums.
    pub fn from_sums(norm2_false: f64, n_false: usize, norm2_true: f64, n_true: usize) -> Self {
        let diag = |s: f64, n: usize| s / (n as f64 * n as f64);
        let off = |s: f64, n: usize| (s - n as f64) / (n as f64 * (n as f64 - 1.0));
        let mean_cos_true = diag(norm2_true, n_true);
        let mean_cos_false = diag(norm2_false, n_false);
        let offdiag_mean_cos_true = off(norm2_true, n_true);
        let offdiag_mean_cos_false = off(norm2_false, n_false);
        let signed = mean_cos_true - mean_cos_false;
        let offdiag_signed = offdiag_mean_cos_true - offdiag_mean_cos_false;
        Self {
            separation: signed.abs(),
            signed,
            mean_cos_true,
            mean_cos_false,
            offdiag_separation: offdiag_signed.abs(),
            offdiag_signed,
            offdiag_mean_cos_true,
            offdiag_mean_cos_false,
            n_true,
            n_false,
        }
    }
}

/// KG separation of embeddings `x` (`[n, d]`) with binary `labels` (1 = true statement).
///
/// Errors: empty input, length mismatch, a label other than 0/1, a class with
/// fewer than 2 rows, a non-finite value or a zero-norm row.
///
/// ```
/// use ndarray::array;
/// let x = array![[1.0f32, 0.0], [1.0, 0.1], [1.0, 0.0], [-1.0, 0.0]];
/// let s = bioalign_metrics::kg_separation(x.view(), &[1, 1, 0, 0])?;
/// assert!(s.mean_cos_true > 0.99);        // the two true rows nearly coincide
/// assert!((s.mean_cos_false - 0.0).abs() < 1e-12); // (1 + 1 - 1 - 1) / 4
/// assert!((s.separation - s.signed.abs()).abs() < 1e-15);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn kg_separation(x: ArrayView2<'_, f32>, labels: &[usize]) -> Result<KgSeparation> {
    const WHAT: &str = "KG separation";
    if x.nrows() == 0 || x.ncols() == 0 {
        return Err(Error::Empty { what: WHAT });
    }
    check::same_len(
        "KG separation: embeddings rows vs labels",
        x.nrows(),
        labels.len(),
    )?;
    let counts = check::both_classes(WHAT, labels, 2)?;
    let sums = class_unit_sums(x, labels, WHAT)?;
    let n2 = |s: &[f64]| s.iter().map(|v| v * v).sum::<f64>();
    Ok(KgSeparation::from_sums(
        n2(&sums[0]),
        counts[0],
        n2(&sums[1]),
        counts[1],
    ))
}

/// Per-class sums of unit rows (`labels` already checked to be 0/1).
pub(crate) fn class_unit_sums(
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    what: &'static str,
) -> Result<[Vec<f64>; 2]> {
    let (n, d) = x.dim();
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(n.div_ceil(64))
        .max(1);
    let chunk = n.div_ceil(threads);
    let partial: Vec<Result<[Vec<f64>; 2]>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let start = (t * chunk).min(n);
                let end = ((t + 1) * chunk).min(n);
                scope.spawn(move || accumulate(x, labels, start, end, what))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut total = [vec![0.0f64; d], vec![0.0f64; d]];
    for part in partial {
        let part = part?;
        for (t, p) in total.iter_mut().zip(part.iter()) {
            for (a, b) in t.iter_mut().zip(p) {
                *a += b;
            }
        }
    }
    Ok(total)
}

fn accumulate(
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    start: usize,
    end: usize,
    what: &'static str,
) -> Result<[Vec<f64>; 2]> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `accumulate_avx2` is compiled for.
            return unsafe { accumulate_avx2(x, labels, start, end, what) };
        }
    }
    accumulate_body(x, labels, start, end, what)
}

/// The same loop compiled with AVX2 (4 f64 lanes instead of SSE2's 2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_avx2(
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    start: usize,
    end: usize,
    what: &'static str,
) -> Result<[Vec<f64>; 2]> {
    accumulate_body(x, labels, start, end, what)
}

#[inline(always)]
fn accumulate_body(
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    start: usize,
    end: usize,
    what: &'static str,
) -> Result<[Vec<f64>; 2]> {
    let d = x.ncols();
    let mut sums = [vec![0.0f64; d], vec![0.0f64; d]];
    let mut buf = Vec::new();
    for i in start..end {
        let row = x.row(i);
        let r: &[f32] = match row.as_slice() {
            Some(s) => s,
            None => {
                buf.clear();
                buf.extend(row.iter().copied());
                &buf
            }
        };
        let norm2 = sum_squares(r);
        if !norm2.is_finite() {
            let (col, v) = r
                .iter()
                .enumerate()
                .find(|(_, v)| !v.is_finite())
                .map(|(c, v)| (c, f64::from(*v)))
                .unwrap_or((0, norm2));
            return Err(Error::NonFinite {
                what,
                row: i,
                col,
                value: v,
            });
        }
        if norm2 == 0.0 {
            return Err(Error::ZeroNorm { what, row: i });
        }
        add_scaled(&mut sums[labels[i]], r, 1.0 / norm2.sqrt());
    }
    Ok(sums)
}

/// Sum of squares in f64 with independent lanes (vectorises).
#[inline(always)]
pub(crate) fn sum_squares(r: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = r.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            let v = f64::from(c[k]);
            acc[k] += v * v;
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum();
    acc.iter().sum::<f64>() + tail
}

#[inline(always)]
fn add_scaled(acc: &mut [f64], r: &[f32], s: f64) {
    for (a, &v) in acc.iter_mut().zip(r) {
        *a += f64::from(v) * s;
    }
}

/// The quadratic-cost definition (explicit cosine matrix), for tests and small inputs.
#[cfg(test)]
pub(crate) fn kg_separation_naive(x: ArrayView2<'_, f32>, labels: &[usize]) -> (f64, f64) {
    let unit: Vec<Vec<f64>> = x
        .outer_iter()
        .map(|r| {
            let n = r
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt();
            r.iter().map(|&v| f64::from(v) / n).collect()
        })
        .collect();
    let mean = |class: usize| {
        let idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        let mut s = 0.0;
        for &i in &idx {
            for &j in &idx {
                s += unit[i]
                    .iter()
                    .zip(&unit[j])
                    .map(|(a, b)| a * b)
                    .sum::<f64>();
            }
        }
        s / (idx.len() * idx.len()) as f64
    };
    (mean(1), mean(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn data(n: usize, d: usize) -> Array2<f32> {
        Array2::from_shape_fn((n, d), |(i, j)| {
            ((i * 31 + j * 17) % 23) as f32 - 9.5 + (i % 3) as f32
        })
    }

    #[test]
    fn matches_the_quadratic_definition_on_odd_shapes() {
        for (n, d) in [(5, 1), (7, 9), (130, 13), (257, 33)] {
            let x = data(n, d);
            let labels: Vec<usize> = (0..n).map(|i| usize::from(i % 3 == 0)).collect();
            let s = kg_separation(x.view(), &labels).unwrap();
            let (t, f) = kg_separation_naive(x.view(), &labels);
            assert!((s.mean_cos_true - t).abs() < 1e-12, "{n}x{d}");
            assert!((s.mean_cos_false - f).abs() < 1e-12, "{n}x{d}");
            assert!((s.signed - (t - f)).abs() < 1e-12);
        }
    }

    #[test]
    fn vectorised_and_plain_paths_agree_bitwise() {
        for (n, d) in [(9, 1), (33, 7), (64, 4099)] {
            let x = data(n, d);
            let labels: Vec<usize> = (0..n).map(|i| usize::from(i % 4 == 1)).collect();
            let plain = accumulate_body(x.view(), &labels, 0, n, "t").unwrap();
            let dispatched = accumulate(x.view(), &labels, 0, n, "t").unwrap();
            assert_eq!(plain, dispatched, "{n}x{d}");
        }
    }

    #[test]
    fn non_contiguous_rows_give_the_same_answer() {
        let x = data(40, 11);
        let labels: Vec<usize> = (0..40).map(|i| i % 2).collect();
        let a = kg_separation(x.view(), &labels).unwrap();
        let xt = x.t().to_owned();
        let b = kg_separation(xt.t(), &labels).unwrap();
        assert!((a.signed - b.signed).abs() < 1e-14);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let mut x = data(10, 4);
        let labels: Vec<usize> = (0..10).map(|i| i % 2).collect();
        assert!(matches!(
            kg_separation(x.view(), &labels[..9]),
            Err(Error::LengthMismatch {
                expected: 10,
                found: 9,
                ..
            })
        ));
        assert!(matches!(
            kg_separation(x.view(), &[1; 10]),
            Err(Error::TooFewClasses { found: 1, .. })
        ));
        let mut three = labels.clone();
        three[4] = 2;
        assert!(matches!(
            kg_separation(x.view(), &three),
            Err(Error::NotBinary {
                row: 4,
                label: 2,
                ..
            })
        ));
        x[[3, 2]] = f32::NAN;
        assert!(matches!(
            kg_separation(x.view(), &labels),
            Err(Error::NonFinite { row: 3, col: 2, .. })
        ));
        x.row_mut(3).fill(0.0);
        assert!(matches!(
            kg_separation(x.view(), &labels),
            Err(Error::ZeroNorm { row: 3, .. })
        ));
        let one_true = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            kg_separation(data(10, 4).view(), &one_true),
            Err(Error::ClassTooSmall {
                class: 1,
                count: 1,
                ..
            })
        ));
    }
}
