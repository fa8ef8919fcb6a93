//! [`Q8Packed`]: an owned 8-bit matrix in GGUF's `Q8_0` form (see
//! [`crate::kernels::Q8Weight`]), for a frozen token embedding and the LM head tied
//! to it. SmolLM2-135M's GGUF stores its `[49152, 576]` embedding this way: 113 MB
//! as f32, 30 MB here, with the same values.

use half::f16;

use crate::kernels::{self, Isa, Product, Q8_BLOCK, Q8Weight};
use crate::{Error, Result};

/// Bytes of one GGUF `Q8_0` block: an f16 scale, then 32 signed codes.
pub const GGML_Q8_0_BLOCK_BYTES: usize = 2 + Q8_BLOCK;

/// An 8-bit matrix `[rows, cols]` with one f32 scale per 32 values of a row.
#[derive(Debug, Clone)]
pub struct Q8Packed {
    qs: Vec<i8>,
    scales: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl Q8Packed {
    /// From codes and scales, checked as [`Q8Weight::new`] does.
    pub fn new(qs: Vec<i8>, scales: Vec<f32>, rows: usize, cols: usize) -> Result<Self> {
        Q8Weight::new(&qs, &scales, rows, cols)?;
        if let Some(i) = scales.iter().position(|d| !d.is_finite()) {
            return Err(Error::NonFinite {
                value: scales[i],
                index: i * Q8_BLOCK,
                block: i,
                context: " (Q8_0 scale)".into(),
            });
        }
        Ok(Q8Packed {
            qs,
            scales,
            rows,
            cols,
        })
    }

    /// From the bytes of a GGUF `Q8_0` tensor with `rows` rows of `cols` values
    /// (`ne = [cols, rows]` in GGUF's order).
    pub fn from_ggml_q8_0(bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        if !cols.is_multiple_of(Q8_BLOCK) {
            return Err(Error::shape(
                "Q8_0 weight columns",
                format!("a multiple of {Q8_BLOCK}"),
                cols,
            ));
        }
        let blocks = rows * cols / Q8_BLOCK;
        if bytes.len() != blocks * GGML_Q8_0_BLOCK_BYTES {
            return Err(Error::shape(
                "Q8_0 tensor bytes",
                blocks * GGML_Q8_0_BLOCK_BYTES,
                bytes.len(),
            ));
        }
        let mut qs = Vec::with_capacity(rows * cols);
        let mut scales = Vec::with_capacity(blocks);
        for b in bytes.chunks_exact(GGML_Q8_0_BLOCK_BYTES) {
            scales.push(f16::from_le_bytes([b[0], b[1]]).to_f32());
            qs.extend(b[2..].iter().map(|&q| q as i8));
        }
        Self::new(qs, scales, rows, cols)
    }

    /// The kernel view.
    pub fn weight(&self) -> Q8Weight<'_> {
        Q8Weight::new(&self.qs, &self.scales, self.rows, self.cols).expect("checked in new")
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held (codes and scales).
    pub fn nbytes(&self) -> usize {
        self.qs.len() + 4 * self.scales.len()
    }

    /// The whole matrix as f32, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let ids: Vec<usize> = (0..self.rows).collect();
        self.gather(&ids).expect("every row exists")
    }

    /// Rows `ids` as f32 `[ids.len(), cols]`; an id past the last row is an error.
    pub fn gather(&self, ids: &[usize]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; ids.len() * self.cols];
        kernels::gather_rows_q8(&self.weight(), ids, &mut out, Isa::detect())?;
        Ok(out)
    }

    /// `x · Wᵀ`: `x` `[m, cols]` to `[m, rows]`.
    pub fn matmul_nt(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        kernels::product(x, m, Product::NtQ8(self.weight()), Isa::detect(), 0)
    }

    /// `x · W`: `x` `[m, rows]` to `[m, cols]` (the input gradient of [`Self::matmul_nt`]).
    pub fn matmul_nn(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        kernels::product(x, m, Product::NnQ8(self.weight()), Isa::detect(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks laid out as ggml writes them (`block_q8_0 { ggml_half d; int8_t qs[32]; }`).
    fn ggml_bytes(scales: &[f32], qs: &[i8]) -> Vec<u8> {
        let mut b = Vec::new();
        for (d, q) in scales.iter().zip(qs.chunks_exact(Q8_BLOCK)) {
            b.extend(f16::from_f32(*d).to_le_bytes());
            b.extend(q.iter().map(|&v| v as u8));
        }
        b
    }

    #[test]
    fn reads_ggml_blocks_and_gathers_exact_values() {
        let (rows, cols) = (3, 64);
        let scales = [0.5f32, -0.25, 0.125, 1.0, 2.0, 0.0625];
        let qs: Vec<i8> = (0..rows * cols)
            .map(|i| (i as i32 * 7 % 255 - 127) as i8)
            .collect();
        let t = Q8Packed::from_ggml_q8_0(&ggml_bytes(&scales, &qs), rows, cols).unwrap();
        assert_eq!(t.nbytes(), rows * cols + 4 * scales.len());
        let all = t.dequantize();
        for (e, v) in all.iter().enumerate() {
            assert_eq!(*v, scales[e / Q8_BLOCK] * f32::from(qs[e]), "element {e}");
        }
        assert_eq!(t.gather(&[2, 2]).unwrap()[..cols], all[2 * cols..]);
        assert!(t.gather(&[3]).is_err());
    }

    #[test]
    fn rejects_wrong_sizes_and_non_finite_scales() {
        let qs = vec![1i8; 64];
        let bytes = ggml_bytes(&[1.0, 1.0], &qs);
        assert!(Q8Packed::from_ggml_q8_0(&bytes, 1, 64).is_ok());
        let e = Q8Packed::from_ggml_q8_0(&bytes[..60], 1, 64).unwrap_err();
        assert!(e.to_string().contains("Q8_0 tensor bytes"), "{e}");
        assert!(Q8Packed::from_ggml_q8_0(&bytes, 2, 32 + 16).is_err());
        let bad = ggml_bytes(&[1.0, f32::INFINITY], &qs);
        let e = Q8Packed::from_ggml_q8_0(&bad, 1, 64).unwrap_err();
        assert!(e.to_string().contains("Q8_0 scale"), "{e}");
    }
}
