//! Scalar reference kernels.

use super::{KC, NC, TileCtx, WeightSource};
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

/// `out[i][c0 + j] += Σ_k x[i][k0 + k] · tile[k][j]`.
pub(super) fn tile_product(ctx: &TileCtx<'_>, m: usize, out: &mut [f32]) {
    for i in 0..m {
        let xr = &ctx.x[i * ctx.cols + ctx.k0..i * ctx.cols + ctx.k0 + ctx.kc];
        let o = &mut out[i * ctx.width + ctx.out_col0..i * ctx.width + ctx.out_col0 + ctx.nc];
        for (j, oj) in o.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (k, &xv) in xr.iter().enumerate() {
                acc += xv * ctx.tile[k * NC + j];
            }
            *oj += acc;
        }
    }
}
