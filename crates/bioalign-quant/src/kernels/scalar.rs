//! Scalar reference kernels.

use super::{KC, WeightSource};
use crate::kernels::Isa;

/// `y[j] = x · W[r0 + j]`: dequantize the row, then a sequential dot product.
pub(super) fn gemv(src: &WeightSource<'_>, x: &[f32], r0: usize, y: &mut [f32]) {
    let cols = x.len();
    let mut row = vec![0f32; KC];
    for (j, yj) in y.iter_mut().enumerate() {
        let mut acc = 0f32;
        for k0 in (0..cols).step_by(KC) {
            let kc = KC.min(cols - k0);
            src.row_slice(Isa::Scalar, r0 + j, k0, &mut row[..kc]);
            for (a, b) in row[..kc].iter().zip(&x[k0..k0 + kc]) {
                acc += a * b;
            }
        }
        *yj = acc;
    }
}
