//! Double quantization of the block scales, as bitsandbytes does it.
//!
//! `offset = mean(absmax)` (torch's CPU float32 mean, reproduced by
//! [`torch_mean_f32`]); `absmax - offset` is quantized in blocks of 256 with
//! the signed 8-bit dynamic map by bitsandbytes' C++ CPU `quantize_cpu`, which
//! picks codes through a 65,536-entry look-up table over `[-1, 1]`
//! ([`quantize_blockwise_8bit`]). Dequantization is
//! `dynamic[q] * nested_absmax[i / 256] + offset` in f32, as
//! `dequantize_blockwise(...)` followed by `absmax += offset`.

use std::sync::OnceLock;

use crate::dynamic_map::DYNAMIC_MAP;
use crate::{Error, Result};

/// Block size of the nested quantization.
pub const NESTED_BLOCKSIZE: usize = 256;

/// Block scales stored in 8 bits (bitsandbytes' `state2` plus `offset`).
#[derive(Debug, Clone, PartialEq)]
pub struct NestedScales {
    /// One 8-bit dynamic code per 4-bit block (stored as `.weight.absmax`, uint8).
    pub codes: Vec<u8>,
    /// One f32 scale per 256 codes (`.weight.nested_absmax`).
    pub nested_absmax: Vec<f32>,
    /// The mean that was subtracted (`nested_offset` in the JSON state).
    pub offset: f32,
}

impl NestedScales {
    /// Compresses f32 block scales (bitsandbytes `compress_statistics=True`),
    /// the mean computed as torch does with one thread.
    pub fn compress(absmax: &[f32]) -> Self {
        Self::compress_with(absmax, TORCH_LANES, 1)
    }

    /// Compresses with the mean computed as torch does with `lanes`-wide
    /// vectors and `threads` intra-op threads (see [`torch_mean_f32`]); they
    /// only change the offset's last bits, and only past 32,768 blocks or
    /// between AVX2 and AVX-512 builds.
    pub fn compress_with(absmax: &[f32], lanes: usize, threads: usize) -> Self {
        let offset = torch_mean_f32(absmax, lanes, threads);
        let centered: Vec<f32> = absmax.iter().map(|a| a - offset).collect();
        let (codes, nested_absmax) = quantize_blockwise_8bit(&centered, NESTED_BLOCKSIZE);
        NestedScales {
            codes,
            nested_absmax,
            offset,
        }
    }

    /// Expands to f32 block scales.
    pub fn expand(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.codes.len()];
        self.expand_into(&mut out);
        out
    }

    /// Expands into `out` (`codes.len()` values).
    pub fn expand_into(&self, out: &mut [f32]) {
        for ((o, &q), i) in out.iter_mut().zip(&self.codes).zip(0..) {
            let v = DYNAMIC_MAP[q as usize] * self.nested_absmax[i / NESTED_BLOCKSIZE];
            *o = v + self.offset;
        }
    }

    /// Checks that the pieces fit together for `blocks` 4-bit blocks.
    pub fn validate(&self, blocks: usize, tensor: &str) -> Result<()> {
        if self.codes.len() != blocks {
            return Err(Error::quant_state(
                tensor,
                format!(
                    "absmax has {} codes, the weight needs {blocks}",
                    self.codes.len()
                ),
            ));
        }
        let want = blocks.div_ceil(NESTED_BLOCKSIZE);
        if self.nested_absmax.len() != want {
            return Err(Error::quant_state(
                tensor,
                format!(
                    "nested_absmax has {} values, expected {want}",
                    self.nested_absmax.len()
                ),
            ));
        }
        if !self.offset.is_finite() || self.nested_absmax.iter().any(|v| !v.is_finite()) {
            return Err(Error::quant_state(
                tensor,
                "non-finite nested_absmax or nested_offset",
            ));
        }
        Ok(())
    }
}

/// Lanes of torch's `Vectorized<float>` in its CPU sum kernel: 8 (torch 2.x
/// wheels run `cascade_sum` with 256-bit vectors, checked against torch's sums
/// on an AVX-512 machine whose `get_cpu_capability()` reads "AVX512").
pub const TORCH_LANES: usize = 8;
const LUT_SIZE: usize = 65_536;

/// bitsandbytes' `build_quantize_lut`: nearest code for 65,536 points of `[-1, 1]`.
fn build_lut(code: &[f32; 256]) -> Vec<u8> {
    let mid: Vec<f32> = code.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
    let mut lut = vec![0u8; LUT_SIZE];
    let mut ci = 0usize;
    for (i, l) in lut.iter_mut().enumerate() {
        let val = -1.0f32 + (2.0f32 * i as f32) / (LUT_SIZE - 1) as f32;
        while ci < 255 && mid[ci] < val {
            ci += 1;
        }
        *l = ci as u8;
    }
    lut
}

fn dynamic_lut() -> &'static [u8] {
    static LUT: OnceLock<Vec<u8>> = OnceLock::new();
    LUT.get_or_init(|| build_lut(&DYNAMIC_MAP))
}

/// bitsandbytes' `norm_to_lut_index` (multiply and add rounded separately).
#[inline]
fn lut_index(v: f32) -> usize {
    let v = v.clamp(-1.0, 1.0);
    ((v + 1.0) * 0.5 * (LUT_SIZE - 1) as f32 + 0.5) as u16 as usize
}

/// 8-bit blockwise quantization with the signed dynamic map, as bitsandbytes'
/// C++ `quantize_cpu` (float32). Returns `(codes, absmax per block)`.
pub fn quantize_blockwise_8bit(data: &[f32], blocksize: usize) -> (Vec<u8>, Vec<f32>) {
    let lut = dynamic_lut();
    let mut codes = vec![0u8; data.len()];
    let mut absmax = Vec::with_capacity(data.len().div_ceil(blocksize));
    for (x, q) in data.chunks(blocksize).zip(codes.chunks_mut(blocksize)) {
        let am = x
            .iter()
            .fold(0.0f32, |m, v| if m < v.abs() { v.abs() } else { m });
        absmax.push(am);
        if am == 0.0 {
            continue;
        }
        let inv = 1.0f32 / am;
        for (c, &v) in q.iter_mut().zip(x) {
            *c = lut[lut_index(v * inv)];
        }
    }
    (codes, absmax)
}

/// torch's CPU `CeilLog2`.
fn ceil_log2(x: usize) -> usize {
    if x <= 2 {
        1
    } else {
        (usize::BITS - (x - 1).leading_zeros()) as usize
    }
}

/// torch's `multi_row_sum` with 4 rows (indexed loops kept as in torch) over `size` rows of `row(i, k)`.
#[allow(clippy::needless_range_loop)]
fn multi_row_sum<const L: usize>(
    size: usize,
    load: impl Fn(usize, usize) -> [f32; L],
) -> [[f32; L]; 4] {
    const LEVELS: usize = 4;
    let level_power = 4.max(ceil_log2(size) / LEVELS);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let mut acc = [[[0.0f32; L]; 4]; LEVELS];
    let add = |a: &mut [f32; L], b: &[f32; L]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    let mut i = 0usize;
    while i + level_step <= size {
        for _ in 0..level_step {
            for k in 0..4 {
                let v = load(i, k);
                add(&mut acc[0][k], &v);
            }
            i += 1;
        }
        for j in 1..LEVELS {
            for k in 0..4 {
                let lower = acc[j - 1][k];
                add(&mut acc[j][k], &lower);
                acc[j - 1][k] = [0.0; L];
            }
            if i & (level_mask << (j * level_power)) != 0 {
                break;
            }
        }
    }
    while i < size {
        for k in 0..4 {
            let v = load(i, k);
            add(&mut acc[0][k], &v);
        }
        i += 1;
    }
    for j in 1..LEVELS {
        for k in 0..4 {
            let v = acc[j][k];
            add(&mut acc[0][k], &v);
        }
    }
    acc[0]
}

/// torch's `row_sum` (4-way ILP) over `size` elements `elem(i)`.
#[allow(clippy::needless_range_loop)]
fn row_sum<const L: usize>(size: usize, elem: impl Fn(usize) -> [f32; L]) -> [f32; L] {
    let size_ilp = size / 4;
    let mut partial = multi_row_sum::<L>(size_ilp, |i, k| elem(i * 4 + k));
    for i in size_ilp * 4..size {
        let v = elem(i);
        partial[0].iter_mut().zip(&v).for_each(|(x, y)| *x += y);
    }
    for k in 1..4 {
        let v = partial[k];
        partial[0].iter_mut().zip(&v).for_each(|(x, y)| *x += y);
    }
    partial[0]
}

/// One serial torch CPU sum of a contiguous float32 range (`cascade_sum`).
fn serial_sum<const L: usize>(x: &[f32]) -> f32 {
    let n = x.len();
    if n < L {
        return row_sum::<1>(n, |i| [x[i]])[0];
    }
    let vecs = n / L;
    let v = row_sum::<L>(vecs, |i| core::array::from_fn(|k| x[i * L + k]));
    let mut acc = 0.0f32;
    for &t in &x[vecs * L..] {
        acc += t;
    }
    for p in v {
        acc += p;
    }
    acc
}

fn torch_sum<const L: usize>(x: &[f32], threads: usize) -> f32 {
    const GRAIN: usize = 32_768;
    let n = x.len();
    if n < GRAIN || threads <= 1 {
        return 0.0 + serial_sum::<L>(x);
    }
    let tasks = threads.min(n.div_ceil(GRAIN));
    let chunk = n.div_ceil(tasks);
    // One accumulator per thread (`two_pass_reduction`), idle threads keep 0.
    let mut buffer = vec![0.0f32; threads];
    for (b, c) in buffer.iter_mut().zip(x.chunks(chunk)) {
        *b += serial_sum::<L>(c);
    }
    0.0 + serial_sum::<L>(&buffer)
}

/// torch's CPU float32 `mean` (`sum / n`, the sum by `cascade_sum`), bit for
/// bit, for torch's sum kernel with `lanes`-wide vectors ([`TORCH_LANES`])
/// running `threads` intra-op threads (only matters past 32,768 values).
pub fn torch_mean_f32(x: &[f32], lanes: usize, threads: usize) -> f32 {
    let s = match lanes {
        16 => torch_sum::<16>(x, threads),
        4 => torch_sum::<4>(x, threads),
        _ => torch_sum::<8>(x, threads),
    };
    s / x.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_of_constant_is_exact() {
        for n in [1, 5, 16, 17, 100, 1000, 40_000] {
            let x = vec![0.25f32; n];
            assert_eq!(torch_mean_f32(&x, 16, 1), 0.25, "n={n}");
            assert_eq!(torch_mean_f32(&x, 16, 2), 0.25, "n={n}");
        }
    }

    #[test]
    fn lut_picks_nearest_code_away_from_midpoints() {
        let (q, am) = quantize_blockwise_8bit(&[0.5, -1.0, 0.0, 0.25], 256);
        assert_eq!(am, vec![1.0]);
        assert_eq!(q[1], 0);
        // 0 lands on LUT entry 32768 (= 1.5e-5), as in bitsandbytes.
        assert!(DYNAMIC_MAP[q[2] as usize].abs() < 1e-4);
        let back = DYNAMIC_MAP[q[0] as usize];
        assert!((back - 0.5).abs() < 0.01, "{back}");
    }

    #[test]
    fn nested_round_trip_is_close() {
        let a: Vec<f32> = (0..1000).map(|i| 0.01 + (i % 37) as f32 * 1e-3).collect();
        let ns = NestedScales::compress(&a);
        ns.validate(1000, "t").unwrap();
        for (x, y) in a.iter().zip(ns.expand()) {
            assert!((x - y).abs() < 2e-4, "{x} {y}");
        }
    }
}
