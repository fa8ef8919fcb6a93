//! Blockwise 4-bit quantization and dequantization, bit-exact with
//! bitsandbytes' CPU path (0.50.2).
//!
//! The weight is flattened row-major and cut into blocks of `blocksize`
//! elements (the last one may be short). Per block bitsandbytes' default
//! quantizer (`backends/default/ops.py`, used on CPU) computes
//! `absmax = max |x|`, scales `x * (1 / max(absmax, 1e-38))` clamped to
//! `[-1, 1]` (the short last block divides by `max(absmax, 1e-38)` instead and
//! stores that clamped value as its absmax), and picks the code with
//! `torch.bucketize` against the midpoints of the sorted code book, so a value
//! exactly on a midpoint takes the lower code. Two codes share a byte, the first
//! element in the high nibble; an odd element count is padded with the code of 0.
//!
//! Non-finite input is rejected ([`Error::NonFinite`]): bitsandbytes turns the
//! whole block into NaN scales and code 15 (an infinity gives absmax inf and
//! `inf * 0 = NaN`), which silently destroys the block.

use crate::codebook::{BlockSize, QuantType};
use crate::{Error, Result};

/// Smallest scale bitsandbytes divides by (`absmax.clamp(min=1e-38)`).
pub(crate) const MIN_SCALE: f32 = 1e-38;

/// Number of bytes holding `n` packed 4-bit codes.
pub fn packed_len(n: usize) -> usize {
    n.div_ceil(2)
}

/// Sorted-position index of a scaled value `s` in `[-1, 1]`: bucketize
/// against the sorted midpoints (count of bounds strictly below `s`).
#[inline(always)]
fn bucket(s: f32, bounds: &[f32; 15]) -> u8 {
    let mut idx = 0u8;
    for b in bounds {
        idx += u8::from(*b < s);
    }
    idx
}

/// Quantizes one block (`x.len()` even unless it is the last block of an odd
/// tensor) into `out` (`packed_len(x.len())` bytes); returns the stored absmax.
#[inline(always)]
fn quantize_block(
    x: &[f32],
    is_short: bool,
    first_index: usize,
    block: usize,
    bounds: &[f32; 15],
    order: Option<&[u8; 16]>,
    out: &mut [u8],
) -> Result<f32> {
    // |x| compared as integers: monotonic for non-negative floats, and every
    // infinity or NaN has bits >= 0x7f80_0000.
    let mut bits = 0u32;
    for &v in x {
        bits = bits.max(v.to_bits() & 0x7fff_ffff);
    }
    if bits >= 0x7f80_0000 {
        return Err(non_finite(x, first_index, block));
    }
    let am = f32::from_bits(bits);
    let clamped = am.max(MIN_SCALE);
    let inv = 1.0 / clamped;
    // 64 values at a time through a small code buffer (a whole-block buffer
    // would be zeroed for every block).
    for (xc, oc) in x.chunks(64).zip(out.chunks_mut(32)) {
        let mut codes = [0u8; 64];
        let codes = &mut codes[..xc.len()];
        if is_short {
            for (c, &v) in codes.iter_mut().zip(xc) {
                *c = bucket((v / clamped).clamp(-1.0, 1.0), bounds);
            }
        } else {
            for (c, &v) in codes.iter_mut().zip(xc) {
                *c = bucket((v * inv).clamp(-1.0, 1.0), bounds);
            }
        }
        let mut pad = bucket(0.0, bounds);
        if let Some(order) = order {
            for c in codes.iter_mut() {
                *c = order[(*c & 15) as usize];
            }
            pad = order[pad as usize];
        }
        let mut pairs = codes.chunks_exact(2);
        for (o, p) in oc.iter_mut().zip(&mut pairs) {
            *o = (p[0] << 4) | p[1];
        }
        if let [last] = pairs.remainder() {
            oc[xc.len() / 2] = (last << 4) | pad;
        }
    }
    Ok(if is_short { clamped } else { am })
}

/// The error for a block holding an infinity or NaN, naming the first one.
#[cold]
fn non_finite(x: &[f32], first_index: usize, block: usize) -> Error {
    let (i, &value) = x
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .unwrap_or((0, &f32::NAN));
    Error::NonFinite {
        index: first_index + i,
        block,
        value,
        context: String::new(),
    }
}

/// Blocks `first_block..` of the tensor (`full` = number of whole blocks).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn quantize_blocks(
    first_block: usize,
    full: usize,
    bs: usize,
    bounds: &[f32; 15],
    order: Option<&[u8; 16]>,
    data: &[f32],
    packed: &mut [u8],
    absmax: &mut [f32],
) -> Result<()> {
    for_each_block(first_block, bs, data, packed, absmax, |b, x, out| {
        quantize_block(x, b >= full, b * bs, b, bounds, order, out)
    })
}

/// Runs `f(block index, values, packed bytes)` over the blocks of `data` from
/// `first_block`, storing each returned absmax.
#[inline(always)]
fn for_each_block(
    first_block: usize,
    bs: usize,
    data: &[f32],
    packed: &mut [u8],
    absmax: &mut [f32],
    mut f: impl FnMut(usize, &[f32], &mut [u8]) -> Result<f32>,
) -> Result<()> {
    for (j, ((x, out), am)) in data
        .chunks(bs)
        .zip(packed.chunks_mut(bs / 2))
        .zip(absmax.iter_mut())
        .enumerate()
    {
        *am = f(first_block + j, x, out)?;
    }
    Ok(())
}

/// Explicit SIMD kernels for whole blocks, the portable code for the short last
/// block: AVX-512 ([`crate::kernels::abs_max_bits512`],
/// [`crate::kernels::quantize_codes512`]: the binary search over the midpoints with
/// one `vpermps` look-up per step) or AVX2 ([`crate::kernels::abs_max_bits`],
/// [`crate::kernels::quantize_codes`]). (On AVX-512, the portable code compiled with
/// AVX-512 enabled, which the explicit kernels replaced, ran at a tenth to a twelfth
/// of bitsandbytes' speed on an AVX-512 Xeon.)
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn quantize_blocks_simd(
    isa: crate::kernels::Isa,
    first_block: usize,
    full: usize,
    bs: usize,
    bounds: &[f32; 15],
    order: Option<&[u8; 16]>,
    data: &[f32],
    packed: &mut [u8],
    absmax: &mut [f32],
) -> Result<()> {
    use crate::kernels::{Isa, abs_max_bits, abs_max_bits512, quantize_codes, quantize_codes512};
    let wide = isa == Isa::Avx512;
    for_each_block(first_block, bs, data, packed, absmax, |b, x, out| {
        if b >= full {
            return quantize_block(x, true, b * bs, b, bounds, order, out);
        }
        // SAFETY: the caller detected `isa` (AVX-512F, or AVX2 + FMA) on this CPU.
        let bits = unsafe {
            if wide {
                abs_max_bits512(x)
            } else {
                abs_max_bits(x)
            }
        };
        if bits >= 0x7f80_0000 {
            return Err(non_finite(x, b * bs, b));
        }
        let a = f32::from_bits(bits);
        let inv = 1.0 / a.max(MIN_SCALE);
        // SAFETY: as above.
        unsafe {
            if wide {
                quantize_codes512(x, inv, bounds, order, out)
            } else {
                quantize_codes(x, inv, bounds, order, out)
            }
        }
        Ok(a)
    })
}

#[allow(clippy::too_many_arguments)]
fn quantize_blocks_dispatch(
    first_block: usize,
    full: usize,
    bs: usize,
    bounds: &[f32; 15],
    order: Option<&[u8; 16]>,
    data: &[f32],
    packed: &mut [u8],
    absmax: &mut [f32],
) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        let isa = crate::kernels::Isa::detect();
        if isa != crate::kernels::Isa::Scalar {
            return quantize_blocks_simd(
                isa,
                first_block,
                full,
                bs,
                bounds,
                order,
                data,
                packed,
                absmax,
            );
        }
    }
    quantize_blocks(first_block, full, bs, bounds, order, data, packed, absmax)
}

/// Quantizes `data` (flattened row-major) into `packed` (`packed_len(n)`
/// bytes) and `absmax` (`blocksize.blocks(n)` values), with up to `threads`
/// threads (0 = all cores). Output is identical for any thread count.
pub fn quantize_4bit_into(
    data: &[f32],
    blocksize: BlockSize,
    quant_type: QuantType,
    packed: &mut [u8],
    absmax: &mut [f32],
    threads: usize,
) -> Result<()> {
    let n = data.len();
    let bs = blocksize.get();
    if packed.len() != packed_len(n) {
        return Err(Error::shape("packed output", packed_len(n), packed.len()));
    }
    if absmax.len() != blocksize.blocks(n) {
        return Err(Error::shape(
            "absmax output",
            blocksize.blocks(n),
            absmax.len(),
        ));
    }
    let bounds = quant_type.bounds();
    let order_table = quant_type.order();
    let order = (quant_type != QuantType::Nf4).then_some(&order_table);
    let full = n / bs;
    let run = |first_block: usize, data: &[f32], packed: &mut [u8], absmax: &mut [f32]| {
        quantize_blocks_dispatch(first_block, full, bs, &bounds, order, data, packed, absmax)
    };
    let blocks = blocksize.blocks(n);
    let threads = crate::kernels::thread_count(threads, n / (1 << 18) + 1);
    if threads <= 1 {
        return run(0, data, packed, absmax);
    }
    let per = blocks.div_ceil(threads);
    let mut parts: Vec<_> = data
        .chunks(per * bs)
        .zip(packed.chunks_mut(per * bs / 2))
        .zip(absmax.chunks_mut(per))
        .map(|((d, p), a)| (d, p, a, Ok(())))
        .collect();
    crate::kernels::par_chunks_mut(&mut parts, 1, |t, part| {
        let (d, p, a, r) = &mut part[0];
        *r = run(t * per, d, p, a);
    });
    parts.into_iter().try_for_each(|(_, _, _, r)| r)
}

/// Quantizes `data`; returns `(packed, absmax)`.
pub fn quantize_4bit(
    data: &[f32],
    blocksize: BlockSize,
    quant_type: QuantType,
) -> Result<(Vec<u8>, Vec<f32>)> {
    let mut packed = vec![0u8; packed_len(data.len())];
    let mut absmax = vec![0f32; blocksize.blocks(data.len())];
    quantize_4bit_into(data, blocksize, quant_type, &mut packed, &mut absmax, 0)?;
    Ok((packed, absmax))
}

/// Scalar reference dequantization of elements `start..start + out.len()` of
/// the flattened tensor: `code[nibble] * absmax[block]`, exactly bitsandbytes'
/// `lut[idx] * scale` in f32.
pub fn dequantize_4bit_scalar(
    packed: &[u8],
    absmax: &[f32],
    blocksize: BlockSize,
    quant_type: QuantType,
    start: usize,
    out: &mut [f32],
) {
    let code = quant_type.code();
    let shift = blocksize.get().trailing_zeros();
    for (i, o) in out.iter_mut().enumerate() {
        let e = start + i;
        let byte = packed[e / 2];
        let nib = if e.is_multiple_of(2) {
            byte >> 4
        } else {
            byte & 0x0f
        };
        *o = code[nib as usize] * absmax[e >> shift];
    }
}

/// Checks that `packed` and `absmax` fit a tensor of `n` elements.
pub(crate) fn check_lengths(
    packed: &[u8],
    absmax: &[f32],
    n: usize,
    blocksize: BlockSize,
) -> Result<()> {
    if packed.len() != packed_len(n) {
        return Err(Error::shape(
            "packed weight bytes",
            packed_len(n),
            packed.len(),
        ));
    }
    if absmax.len() != blocksize.blocks(n) {
        return Err(Error::shape(
            "absmax values",
            blocksize.blocks(n),
            absmax.len(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_high_nibble_first_and_pads_odd() {
        let x = [1.0f32, -1.0, 0.0];
        let (p, a) = quantize_4bit(&x, BlockSize::new(32).unwrap(), QuantType::Nf4).unwrap();
        assert_eq!(a, vec![1.0]);
        assert_eq!(p, vec![0xF0, 0x77]);
    }

    #[test]
    fn rejects_non_finite_with_position() {
        let mut x = vec![0.5f32; 130];
        x[100] = f32::INFINITY;
        let err = quantize_4bit(&x, BlockSize::DEFAULT, QuantType::Nf4).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    index: 100,
                    block: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    /// The SIMD kernels pick the same codes as the portable loop, including
    /// values exactly on a midpoint (bucketize takes the lower code), one ulp
    /// either side of it, signed zeros and tiny or huge scales.
    #[test]
    fn simd_codes_equal_portable_codes() {
        for qt in [QuantType::Nf4, QuantType::Fp4] {
            let bounds = qt.bounds();
            let mut x = vec![1.0f32, -1.0, 0.0, -0.0, 1e-30, -3e-39];
            for b in bounds {
                x.extend([b, b.next_up(), b.next_down(), -b]);
            }
            let mut s = 0x2545_f491_4f6c_dd1du64;
            while x.len() < 5000 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let scale = [1.0f32, 3e-5, 7e4, 1e-36][(s >> 60) as usize % 4];
                x.push(((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale);
            }
            for bs in [32, 64, 256, 4096] {
                let blocksize = BlockSize::new(bs).unwrap();
                let n = x.len();
                let order_table = qt.order();
                let order = (qt != QuantType::Nf4).then_some(&order_table);
                let mut p_ref = vec![0u8; packed_len(n)];
                let mut a_ref = vec![0f32; blocksize.blocks(n)];
                quantize_blocks(0, n / bs, bs, &bounds, order, &x, &mut p_ref, &mut a_ref).unwrap();
                let (p, a) = quantize_4bit(&x, blocksize, qt).unwrap();
                assert_eq!(p, p_ref, "{qt:?} bs {bs}: packed codes");
                assert!(
                    a.iter()
                        .zip(&a_ref)
                        .all(|(u, v)| u.to_bits() == v.to_bits()),
                    "{qt:?} bs {bs}: absmax"
                );
            }
        }
    }

    #[test]
    fn zero_short_block_stores_clamped_scale() {
        let x = vec![0.0f32; 70];
        let (_, a) = quantize_4bit(&x, BlockSize::DEFAULT, QuantType::Nf4).unwrap();
        assert_eq!(a, vec![0.0, MIN_SCALE]);
    }
}
