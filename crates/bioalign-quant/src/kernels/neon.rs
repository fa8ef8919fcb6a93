//! AArch64 Advanced SIMD (NEON) kernels: 4-bit dequantization, the fused GEMV and
//! the blocked product's `6 × 16` micro-kernel.
//!
//! NEON has no lane permute for 32-bit values by index, so the 16-entry code book
//! is looked up one byte of the f32 bits at a time: four `tbl` look-ups (one per
//! byte plane) and two rounds of zips rebuild 16 floats in order. NEON is part of
//! the AArch64 baseline; the functions still carry `#[target_feature]` and are
//! only called after [`Isa::available`](super::Isa::available) confirmed it.

use std::arch::aarch64::*;

use super::Nf4Weight;

/// The 16 code values split into byte planes: plane `k` holds byte `k`
/// (little-endian) of every code's f32 bits.
#[target_feature(enable = "neon")]
fn byte_planes(code: &[f32; 16]) -> [uint8x16_t; 4] {
    let mut planes = [[0u8; 16]; 4];
    for (c, v) in code.iter().enumerate() {
        for (plane, b) in planes.iter_mut().zip(v.to_bits().to_le_bytes()) {
            plane[c] = b;
        }
    }
    // SAFETY: each plane has 16 readable bytes.
    planes.map(|p| unsafe { vld1q_u8(p.as_ptr()) })
}

/// The code values of 16 codes (bytes below 16), in order, as four vectors.
#[inline]
#[target_feature(enable = "neon")]
fn lookup16(idx: uint8x16_t, p: &[uint8x16_t; 4]) -> [float32x4_t; 4] {
    let (b0, b1) = (vqtbl1q_u8(p[0], idx), vqtbl1q_u8(p[1], idx));
    let (b2, b3) = (vqtbl1q_u8(p[2], idx), vqtbl1q_u8(p[3], idx));
    // Low and high 16-bit halves of codes 0..8 and 8..16.
    let (lo_a, lo_b) = (
        vreinterpretq_u16_u8(vzip1q_u8(b0, b1)),
        vreinterpretq_u16_u8(vzip2q_u8(b0, b1)),
    );
    let (hi_a, hi_b) = (
        vreinterpretq_u16_u8(vzip1q_u8(b2, b3)),
        vreinterpretq_u16_u8(vzip2q_u8(b2, b3)),
    );
    [
        vreinterpretq_f32_u16(vzip1q_u16(lo_a, hi_a)),
        vreinterpretq_f32_u16(vzip2q_u16(lo_a, hi_a)),
        vreinterpretq_f32_u16(vzip1q_u16(lo_b, hi_b)),
        vreinterpretq_f32_u16(vzip2q_u16(lo_b, hi_b)),
    ]
}

/// The 32 unscaled values of the chunk at flat element `e` (a multiple of 32), in
/// order: the high nibble of each byte is the even element.
#[inline]
#[target_feature(enable = "neon")]
fn chunk32(packed: &[u8], e: usize, p: &[uint8x16_t; 4]) -> [[float32x4_t; 4]; 2] {
    let bytes = &packed[e / 2..e / 2 + 16];
    // SAFETY: `bytes` has 16 readable bytes.
    let raw = unsafe { vld1q_u8(bytes.as_ptr()) };
    let hi = vshrq_n_u8::<4>(raw);
    let lo = vandq_u8(raw, vdupq_n_u8(0x0f));
    [
        lookup16(vzip1q_u8(hi, lo), p),
        lookup16(vzip2q_u8(hi, lo), p),
    ]
}

/// Dequantizes whole 32-element chunks starting at flat element `start` (a
/// multiple of 32) into `out` (a multiple of 32 long): `code[c] · absmax`, the
/// scalar path's product, so the values are the same bits.
pub(super) fn dequant_chunks(w: &Nf4Weight<'_>, start: usize, out: &mut [f32]) {
    debug_assert!(start.is_multiple_of(32) && out.len().is_multiple_of(32));
    // SAFETY: NEON was checked by the caller through `Isa::available`.
    unsafe { dequant(w, start, out) }
}

#[target_feature(enable = "neon")]
fn dequant(w: &Nf4Weight<'_>, start: usize, out: &mut [f32]) {
    let planes = byte_planes(w.quant_type.code());
    let shift = w.blocksize.get().trailing_zeros();
    for (c, o) in out.chunks_exact_mut(32).enumerate() {
        let e = start + c * 32;
        // Blocks are at least 32 long and 32-aligned: one scale per chunk.
        let s = vdupq_n_f32(w.absmax[e >> shift]);
        for (h, half) in chunk32(w.packed, e, &planes).iter().enumerate() {
            for (q, v) in half.iter().enumerate() {
                // SAFETY: `o` has 32 writable floats.
                unsafe { vst1q_f32(o.as_mut_ptr().add(16 * h + 4 * q), vmulq_f32(*v, s)) };
            }
        }
    }
}

/// `y[j] = x · dequant(W[r0 + j])`, fused: codes are looked up in registers and
/// each 32-value chunk is summed before its block scale multiplies it.
pub(super) fn gemv_nf4(w: &Nf4Weight<'_>, x: &[f32], r0: usize, y: &mut [f32]) {
    // SAFETY: NEON was checked by the caller through `Isa::available`.
    unsafe { gemv(w, x, r0, y) }
}

#[target_feature(enable = "neon")]
fn gemv(w: &Nf4Weight<'_>, x: &[f32], r0: usize, y: &mut [f32]) {
    let cols = w.cols;
    let planes = byte_planes(w.quant_type.code());
    let shift = w.blocksize.get().trailing_zeros();
    let mut buf = [0f32; 32];
    for (j, yj) in y.iter_mut().enumerate() {
        let s = (r0 + j) * cols;
        // Scalar head up to a 32-element boundary, chunks, scalar tail.
        let head = ((32 - s % 32) % 32).min(cols);
        let chunks = (cols - head) / 32;
        let mut acc = 0f32;
        w.scalar_range(s, &mut buf[..head]);
        for (a, b) in buf[..head].iter().zip(x) {
            acc += a * b;
        }
        let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        for c in 0..chunks {
            let e = s + head + 32 * c;
            let xc = &x[head + 32 * c..head + 32 * c + 32];
            let v = chunk32(w.packed, e, &planes);
            let (mut t0, mut t1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
            for (h, half) in v.iter().enumerate() {
                for (q, vq) in half.iter().enumerate() {
                    // SAFETY: `xc` has 32 readable floats.
                    let xq = unsafe { vld1q_f32(xc.as_ptr().add(16 * h + 4 * q)) };
                    if q % 2 == 0 {
                        t0 = vfmaq_f32(t0, *vq, xq);
                    } else {
                        t1 = vfmaq_f32(t1, *vq, xq);
                    }
                }
            }
            let scale = vdupq_n_f32(w.absmax[e >> shift]);
            if c % 2 == 0 {
                acc0 = vfmaq_f32(acc0, vaddq_f32(t0, t1), scale);
            } else {
                acc1 = vfmaq_f32(acc1, vaddq_f32(t0, t1), scale);
            }
        }
        acc += vaddvq_f32(vaddq_f32(acc0, acc1));
        let body = head + chunks * 32;
        let tail = cols - body;
        w.scalar_range(s + body, &mut buf[..tail]);
        for (a, b) in buf[..tail].iter().zip(&x[body..]) {
            acc += a * b;
        }
        *yj = acc;
    }
}

/// `y[j] = x · W[r0 + j]` for a plain f32 weight `[rows, cols]`.
pub(super) fn gemv_f32(w: &[f32], cols: usize, x: &[f32], r0: usize, y: &mut [f32]) {
    // SAFETY: NEON was checked by the caller through `Isa::available`.
    unsafe { gemv_f32_neon(w, cols, x, r0, y) }
}

#[target_feature(enable = "neon")]
fn gemv_f32_neon(w: &[f32], cols: usize, x: &[f32], r0: usize, y: &mut [f32]) {
    let x = &x[..cols];
    for (j, yj) in y.iter_mut().enumerate() {
        let row = &w[(r0 + j) * cols..(r0 + j + 1) * cols];
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut rc = row.chunks_exact(16);
        let mut xc = x.chunks_exact(16);
        for (r, xv) in (&mut rc).zip(&mut xc) {
            for (q, a) in acc.iter_mut().enumerate() {
                // SAFETY: both chunks have 16 readable floats.
                unsafe {
                    *a = vfmaq_f32(
                        *a,
                        vld1q_f32(r.as_ptr().add(4 * q)),
                        vld1q_f32(xv.as_ptr().add(4 * q)),
                    );
                }
            }
        }
        let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        let mut s = vaddvq_f32(sum);
        for (a, b) in rc.remainder().iter().zip(xc.remainder()) {
            s += a * b;
        }
        *yj = s;
    }
}

/// The blocked product's micro-kernel: `C[..mr][..nc] (+)= A · B` over depth `kc`,
/// with `A` a packed micro-panel (`a[k · 6 + i]`, 6 rows, zero-padded) and `B` one
/// 16-column panel (`b[k · 16 + j]`). The 24 sums stay in registers over the whole
/// depth; a partial tile is stored through a buffer.
///
/// # Safety
/// `a` holds `6 · kc` floats and `b` `16 · kc`; `c` points at `mr ≤ 6` rows of at
/// least `nc ≤ 16` writable floats, `ldc` apart.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
pub(super) unsafe fn micro_6x16(
    mr: usize,
    a: *const f32,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    let mut acc = [[vdupq_n_f32(0.0); 4]; 6];
    for k in 0..kc {
        // SAFETY: within the packed panels (see the contract above).
        unsafe {
            let bp = b.add(16 * k);
            let bv = [
                vld1q_f32(bp),
                vld1q_f32(bp.add(4)),
                vld1q_f32(bp.add(8)),
                vld1q_f32(bp.add(12)),
            ];
            let a4 = vld1q_f32(a.add(6 * k));
            let a2 = vld1_f32(a.add(6 * k + 4));
            for (q, bq) in bv.iter().enumerate() {
                acc[0][q] = vfmaq_laneq_f32::<0>(acc[0][q], *bq, a4);
                acc[1][q] = vfmaq_laneq_f32::<1>(acc[1][q], *bq, a4);
                acc[2][q] = vfmaq_laneq_f32::<2>(acc[2][q], *bq, a4);
                acc[3][q] = vfmaq_laneq_f32::<3>(acc[3][q], *bq, a4);
                acc[4][q] = vfmaq_lane_f32::<0>(acc[4][q], *bq, a2);
                acc[5][q] = vfmaq_lane_f32::<1>(acc[5][q], *bq, a2);
            }
        }
    }
    if mr == 6 && nc == 16 {
        for (i, row) in acc.iter().enumerate() {
            for (q, v) in row.iter().enumerate() {
                // SAFETY: a whole tile is writable (see the contract above).
                unsafe {
                    let o = c.add(i * ldc + 4 * q);
                    let v = if accumulate {
                        vaddq_f32(vld1q_f32(o), *v)
                    } else {
                        *v
                    };
                    vst1q_f32(o, v);
                }
            }
        }
        return;
    }
    let mut tile = [0f32; 96];
    for (i, row) in acc.iter().enumerate() {
        for (q, v) in row.iter().enumerate() {
            // SAFETY: `tile` has 96 floats.
            unsafe { vst1q_f32(tile.as_mut_ptr().add(16 * i + 4 * q), *v) };
        }
    }
    for i in 0..mr {
        for j in 0..nc {
            // SAFETY: row `i < mr`, column `j < nc` (see the contract above).
            unsafe {
                let o = c.add(i * ldc + j);
                *o = if accumulate {
                    *o + tile[16 * i + j]
                } else {
                    tile[16 * i + j]
                };
            }
        }
    }
}
