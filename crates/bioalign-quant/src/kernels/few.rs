//! Products of a few rows of `x` (fewer than [`FEW_MAX`]) with an 8-bit (`Q8_0`)
//! weight on AVX-512: each weight value is widened and scaled once for every row,
//! and nothing is packed.
//!
//! The blocked kernel packs (dequantizes and lays out) the whole weight whatever the
//! number of rows; for a handful of rows that packing is most of the work. Under a
//! response-only loss the LM head runs on the supervised positions only (4 rows of a
//! SmolLM2 micro-batch of 2): its `[49152, 576]` 8-bit weight took 12-14 ms per
//! product through the blocked kernel, forward and backward each, 4% of a QLoRA step.

#[cfg(target_arch = "x86_64")]
use super::q8;
use super::{Isa, VALUES_PER_THREAD, WeightSource, par_chunks_mut, thread_count};

/// Rows of `x` from which the blocked kernel runs instead.
pub(super) const FEW_MAX: usize = 16;

/// Whether `m` rows of `x` against `src` take this path on `isa`: an 8-bit weight on
/// AVX-512, up to `FEW_MAX - 1` rows (at least 2 where the row-dot GEMV reads rows of
/// `V`).
pub(super) fn applies(m: usize, src: &WeightSource<'_>, isa: Isa) -> bool {
    if isa != Isa::Avx512 || !cfg!(target_arch = "x86_64") {
        return false;
    }
    match src {
        WeightSource::Q8(_) => (2..FEW_MAX).contains(&m),
        WeightSource::Q8T(_) => (1..FEW_MAX).contains(&m),
        _ => false,
    }
}

/// `y = x · Vᵀ`: `x` `[m, cols]`, `V` `[rows, cols]` from `src`, `y` `[m, rows]`
/// (where [`applies`] holds).
#[allow(clippy::too_many_arguments)]
pub(super) fn product(
    src: &WeightSource<'_>,
    x: &[f32],
    m: usize,
    rows: usize,
    cols: usize,
    y: &mut [f32],
    threads: usize,
) {
    // Threads own ranges of output columns (32-aligned), one per `VALUES_PER_THREAD`
    // weights. Each fills `[columns][m]` (rows of `V`: dot products) or `[m][columns]`
    // (columns of `W`: row updates), scattered into `y` afterwards.
    let t = thread_count(threads, rows * cols / VALUES_PER_THREAD + 1);
    let per = rows.div_ceil(t).next_multiple_of(32);
    let mut parts = vec![0f32; rows * m];
    let by_rows = matches!(src, WeightSource::Q8(_));
    par_chunks_mut(&mut parts, per * m, |ti, part| {
        let (j0, jn) = (ti * per, part.len() / m);
        #[cfg(target_arch = "x86_64")]
        match src {
            // Up to 8 rows of `x` per pass, written straight into their slots.
            WeightSource::Q8(w) => {
                for i0 in (0..m).step_by(8) {
                    let mg = 8.min(m - i0);
                    q8::dots_few(w, &x[i0 * cols..], mg, (j0, jn), &mut part[i0..], m);
                }
            }
            WeightSource::Q8T(w) => q8::axpy_few(w, x, m, j0, jn, part),
            _ => unreachable!("few::applies admits 8-bit weights only"),
        }
        let _ = (j0, jn, cols, x);
    });
    for (ti, part) in parts.chunks(per * m).enumerate() {
        let (j0, jn) = (ti * per, part.len() / m);
        for i in 0..m {
            let yi = &mut y[i * rows + j0..i * rows + j0 + jn];
            if by_rows {
                for (j, v) in yi.iter_mut().enumerate() {
                    *v = part[j * m + i];
                }
            } else {
                yi.copy_from_slice(&part[i * jn..(i + 1) * jn]);
            }
        }
    }
}
