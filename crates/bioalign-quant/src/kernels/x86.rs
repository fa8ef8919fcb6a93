//! x86_64 SIMD kernels (AVX-512F and AVX2+FMA), selected at run time.
//!
//! Each function carries `#[target_feature]` and is only called after
//! [`Isa::available`] confirmed the feature, which makes the `unsafe` calls sound.

use std::arch::x86_64::*;

use super::{Isa, Nf4Weight};

/// Dequantizes whole 32-element chunks starting at flat element `start` (a
/// multiple of 32) into `out` (a multiple of 32 long).
pub(super) fn dequant_chunks(isa: Isa, w: &Nf4Weight<'_>, start: usize, out: &mut [f32]) {
    debug_assert!(start.is_multiple_of(32) && out.len().is_multiple_of(32));
    debug_assert!((start + out.len()) / 2 <= w.packed.len());
    // SAFETY: the caller checked the CPU features through `Isa::available`.
    unsafe {
        match isa {
            Isa::Avx512 => dequant512(w, start, out),
            _ => dequant256(w, start, out),
        }
    }
}

#[inline(always)]
fn nibbles(raw: __m128i) -> (__m128i, __m128i) {
    // SAFETY-free SSE2 arithmetic; SSE2 is baseline on x86_64.
    unsafe {
        let mask = _mm_set1_epi8(0x0f);
        let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
        let lo = _mm_and_si128(raw, mask);
        (_mm_unpacklo_epi8(hi, lo), _mm_unpackhi_epi8(hi, lo))
    }
}

/// 16 packed bytes at flat element `e` (`e + 32 <= n`).
#[inline(always)]
fn load16(packed: &[u8], e: usize) -> __m128i {
    let bytes = &packed[e / 2..e / 2 + 16];
    // SAFETY: `bytes` has 16 readable bytes; unaligned load.
    unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn lut512(code: &[f32; 16]) -> __m512 {
    // SAFETY: 16 readable floats.
    unsafe { _mm512_loadu_ps(code.as_ptr()) }
}

/// The 32 values of the chunk at `e`, unscaled: elements 0..16 and 16..32.
#[target_feature(enable = "avx512f,avx2,fma")]
fn chunk512(packed: &[u8], e: usize, lut: __m512) -> (__m512, __m512) {
    let (a, b) = nibbles(load16(packed, e));
    (
        _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(a), lut),
        _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(b), lut),
    )
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn dequant512(w: &Nf4Weight<'_>, start: usize, out: &mut [f32]) {
    let lut = lut512(w.quant_type.code());
    let shift = w.blocksize.get().trailing_zeros();
    for (c, o) in out.chunks_exact_mut(32).enumerate() {
        let e = start + c * 32;
        // The code book times the block's scale, looked up already scaled: one
        // multiply per 32 values instead of two, the same products.
        let scaled = _mm512_mul_ps(lut, _mm512_set1_ps(w.absmax[e >> shift]));
        let (va, vb) = chunk512(w.packed, e, scaled);
        // SAFETY: `o` has 32 writable floats.
        unsafe {
            _mm512_storeu_ps(o.as_mut_ptr(), va);
            _mm512_storeu_ps(o.as_mut_ptr().add(16), vb);
        }
    }
}

/// Dequantizes the `nb` values from flat element `start` (both multiples of 32)
/// straight into rows of the blocked kernel's 16-column panels: values `16q..16q + 16`
/// go to `dst[q · stride..][..16]`. The input gradient's weight panels were
/// dequantized into a row buffer and copied from there, 16 values at a time (3% of a
/// QLoRA step in the copies).
pub(super) fn dequant_panels(
    w: &Nf4Weight<'_>,
    start: usize,
    nb: usize,
    dst: &mut [f32],
    stride: usize,
) {
    assert!(
        start.is_multiple_of(32) && nb.is_multiple_of(32) && (start + nb) / 2 <= w.packed.len()
    );
    assert!(nb == 0 || dst.len() >= (nb / 16 - 1) * stride + 16);
    // SAFETY: AVX-512F was checked by the caller (`Isa::Avx512`); bounds asserted above.
    unsafe { dequant_panels512(w, start, nb, dst.as_mut_ptr(), stride) }
}

#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dequant_panels512(
    w: &Nf4Weight<'_>,
    start: usize,
    nb: usize,
    dst: *mut f32,
    stride: usize,
) {
    let lut = lut512(w.quant_type.code());
    let shift = w.blocksize.get().trailing_zeros();
    for c in 0..nb / 32 {
        let e = start + c * 32;
        // The code book times the block's scale: one multiply per 32 values instead
        // of two, and `(code · s)[c]` is the same product as `code[c] · s`.
        let scaled = _mm512_mul_ps(lut, _mm512_set1_ps(w.absmax[e >> shift]));
        let (va, vb) = chunk512(w.packed, e, scaled);
        // SAFETY: rows `2c` and `2c + 1` lie inside `dst` (checked by `dequant_panels`).
        unsafe {
            _mm512_storeu_ps(dst.add(2 * c * stride), va);
            _mm512_storeu_ps(dst.add((2 * c + 1) * stride), vb);
        }
    }
}

/// 16-entry table look-up with AVX2: two 8-entry permutes, blended on the sign.
/// `idx` holds each code sign-extended from the byte `code | code << 4`, so
/// its low three bits pick within a half and its sign bit (code bit 3) picks
/// the half: no shift or compare to build the blend mask.
#[target_feature(enable = "avx2,fma")]
fn lookup256(idx: __m256i, lo: __m256, hi: __m256) -> __m256 {
    let a = _mm256_permutevar8x32_ps(lo, idx);
    let b = _mm256_permutevar8x32_ps(hi, idx);
    _mm256_blendv_ps(a, b, _mm256_castsi256_ps(idx))
}

/// Codes (bytes below 16) copied into their high nibble: `c | c << 4`, whose
/// sign bit is the code's bit 3 (16-bit shifts cannot carry across bytes here).
#[inline(always)]
fn signed_codes(c: __m128i) -> __m128i {
    // SAFETY-free SSE2 arithmetic; SSE2 is baseline on x86_64.
    unsafe { _mm_or_si128(c, _mm_slli_epi16(c, 4)) }
}

#[target_feature(enable = "avx2,fma")]
fn lut256(code: &[f32; 16]) -> (__m256, __m256) {
    // SAFETY: 16 readable floats.
    unsafe {
        (
            _mm256_loadu_ps(code.as_ptr()),
            _mm256_loadu_ps(code.as_ptr().add(8)),
        )
    }
}

/// The 32 values of the chunk at `e`, unscaled, as four 8-lane vectors.
#[target_feature(enable = "avx2,fma")]
fn chunk256(packed: &[u8], e: usize, lo: __m256, hi: __m256) -> [__m256; 4] {
    let (a, b) = nibbles(load16(packed, e));
    let (a, b) = (signed_codes(a), signed_codes(b));
    [
        lookup256(_mm256_cvtepi8_epi32(a), lo, hi),
        lookup256(_mm256_cvtepi8_epi32(_mm_srli_si128(a, 8)), lo, hi),
        lookup256(_mm256_cvtepi8_epi32(b), lo, hi),
        lookup256(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)), lo, hi),
    ]
}

#[target_feature(enable = "avx2,fma")]
fn dequant256(w: &Nf4Weight<'_>, start: usize, out: &mut [f32]) {
    stream256::<0>(w, start, out);
}

/// `y[j] = x · dequant(W[r0 + j])`, fused: codes are looked up in registers.
pub(super) fn gemv_nf4(isa: Isa, w: &Nf4Weight<'_>, x: &[f32], r0: usize, y: &mut [f32]) {
    let cols = w.cols;
    if isa == Isa::Avx2 && cols.is_multiple_of(64) {
        // SAFETY: the caller checked AVX2 and FMA through `Isa::available`.
        unsafe { gemv_nf4_planes(w, x, r0, y) };
        return;
    }
    if isa == Isa::Avx512 && cols.is_multiple_of(64) && w.blocksize.get() >= 64 {
        // SAFETY: the caller checked AVX-512F through `Isa::available`.
        unsafe { gemv_nf4_nibbles512(w, x, r0, y) };
        return;
    }
    for (j, yj) in y.iter_mut().enumerate() {
        let s = (r0 + j) * cols;
        let head = ((32 - s % 32) % 32).min(cols);
        let chunks = (cols - head) / 32;
        let mut buf = [0f32; 32];
        let mut acc = 0f32;
        w.scalar_range(s, &mut buf[..head]);
        for (a, b) in buf[..head].iter().zip(x) {
            acc += a * b;
        }
        let body = head + chunks * 32;
        // SAFETY: features checked by the caller through `Isa::available`.
        acc += unsafe {
            match isa {
                Isa::Avx512 => dot_nf4_512(w, s + head, &x[head..body]),
                _ => dot_nf4_256(w, s + head, &x[head..body]),
            }
        };
        let tail = cols - body;
        w.scalar_range(s + body, &mut buf[..tail]);
        for (a, b) in buf[..tail].iter().zip(&x[body..]) {
            acc += a * b;
        }
        *yj = acc;
    }
}

/// The 16 code values split into byte planes for `vpshufb`: plane `k` holds
/// byte `k` (little-endian) of every code's f32 bits, in both 128-bit lanes.
#[target_feature(enable = "avx2,fma")]
fn byte_planes(code: &[f32; 16]) -> [__m256i; 4] {
    let mut planes = [[0u8; 16]; 4];
    for (c, v) in code.iter().enumerate() {
        for (plane, b) in planes.iter_mut().zip(v.to_bits().to_le_bytes()) {
            plane[c] = b;
        }
    }
    // SAFETY: each plane has 16 readable bytes.
    planes.map(|p| unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(p.as_ptr().cast())) })
}

/// Looks up 32 codes (one per byte of `idx`, each below 16) with four `vpshufb`
/// and rebuilds the f32 bits with byte and word interleaves. The four vectors
/// hold the codes of bytes `{0..4, 16..20}`, `{4..8, 20..24}`, `{8..12, 24..28}`
/// and `{12..16, 28..32}`: in-lane interleaves keep 128-bit lanes apart.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lookup_planes(idx: __m256i, p: &[__m256i; 4]) -> [__m256; 4] {
    let b0 = _mm256_shuffle_epi8(p[0], idx);
    let b1 = _mm256_shuffle_epi8(p[1], idx);
    let b2 = _mm256_shuffle_epi8(p[2], idx);
    let b3 = _mm256_shuffle_epi8(p[3], idx);
    let (la, lb) = (_mm256_unpacklo_epi8(b0, b1), _mm256_unpackhi_epi8(b0, b1));
    let (ha, hb) = (_mm256_unpacklo_epi8(b2, b3), _mm256_unpackhi_epi8(b2, b3));
    [
        _mm256_castsi256_ps(_mm256_unpacklo_epi16(la, ha)),
        _mm256_castsi256_ps(_mm256_unpackhi_epi16(la, ha)),
        _mm256_castsi256_ps(_mm256_unpacklo_epi16(lb, hb)),
        _mm256_castsi256_ps(_mm256_unpackhi_epi16(lb, hb)),
    ]
}

/// Position, within a 64-element chunk, of the value that [`lookup_planes`]
/// puts at lane `i` (`0..64`) when the chunk's 32 bytes are looked up high
/// nibbles first (vectors 0-3), then low nibbles (vectors 4-7).
fn plane_order(i: usize) -> usize {
    let (v, lane) = (i / 8, i % 8);
    let byte = 16 * (lane / 4) + 4 * (v % 4) + lane % 4;
    2 * byte + usize::from(v >= 4)
}

/// AVX2 GEMV for `cols % 64 == 0`: `x` is permuted once into the order
/// [`lookup_planes`] produces, so each 64-value chunk of a row costs one
/// 32-byte load, eight `vpshufb` and sixteen interleaves, and no lane crossing.
#[target_feature(enable = "avx2,fma")]
fn gemv_nf4_planes(w: &Nf4Weight<'_>, x: &[f32], r0: usize, y: &mut [f32]) {
    let cols = w.cols;
    let mut xp = vec![0f32; cols];
    for (c, chunk) in xp.chunks_exact_mut(64).enumerate() {
        for (i, v) in chunk.iter_mut().enumerate() {
            *v = x[64 * c + plane_order(i)];
        }
    }
    let planes = byte_planes(w.quant_type.code());
    let mask = _mm256_set1_epi8(0x0f);
    let shift = w.blocksize.get().trailing_zeros();
    let split = w.blocksize.get() < 64;
    let chunks = cols / 64;
    assert!(w.packed.len() >= (r0 + y.len()) * cols / 2);
    assert!(w.absmax.len() >= ((r0 + y.len()) * cols) >> shift);
    // One chunk's dot product with `xp`, scaled by its block scale(s).
    let chunk = |e: usize, c: usize| -> __m256 {
        // SAFETY: the asserts above bound every byte, scale and `xp` read.
        unsafe {
            let raw = _mm256_loadu_si256(w.packed.as_ptr().add(e / 2).cast());
            let hi = lookup_planes(_mm256_and_si256(_mm256_srli_epi16(raw, 4), mask), &planes);
            let lo = lookup_planes(_mm256_and_si256(raw, mask), &planes);
            let p = xp.as_ptr().add(64 * c);
            let mut t0 = _mm256_mul_ps(hi[0], _mm256_loadu_ps(p));
            let mut t1 = _mm256_mul_ps(hi[1], _mm256_loadu_ps(p.add(8)));
            t0 = _mm256_fmadd_ps(hi[2], _mm256_loadu_ps(p.add(16)), t0);
            t1 = _mm256_fmadd_ps(hi[3], _mm256_loadu_ps(p.add(24)), t1);
            t0 = _mm256_fmadd_ps(lo[0], _mm256_loadu_ps(p.add(32)), t0);
            t1 = _mm256_fmadd_ps(lo[1], _mm256_loadu_ps(p.add(40)), t1);
            t0 = _mm256_fmadd_ps(lo[2], _mm256_loadu_ps(p.add(48)), t0);
            t1 = _mm256_fmadd_ps(lo[3], _mm256_loadu_ps(p.add(56)), t1);
            let a0 = *w.absmax.get_unchecked(e >> shift);
            // Lanes 0-3 hold values from the chunk's first 32, lanes 4-7 from its
            // second 32: with 32-value blocks the two scales differ.
            let scale = if split {
                let a1 = *w.absmax.get_unchecked((e + 32) >> shift);
                _mm256_setr_m128(_mm_set1_ps(a0), _mm_set1_ps(a1))
            } else {
                _mm256_set1_ps(a0)
            };
            _mm256_mul_ps(_mm256_add_ps(t0, t1), scale)
        }
    };
    for (j, yj) in y.iter_mut().enumerate() {
        let s = (r0 + j) * cols;
        // Two accumulators in registers, so consecutive chunks do not wait on
        // each other's additions.
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for c in (0..chunks & !1).step_by(2) {
            acc0 = _mm256_add_ps(acc0, chunk(s + 64 * c, c));
            acc1 = _mm256_add_ps(acc1, chunk(s + 64 * c + 64, c + 1));
        }
        if chunks % 2 == 1 {
            acc0 = _mm256_add_ps(acc0, chunk(s + 64 * (chunks - 1), chunks - 1));
        }
        *yj = hsum256(_mm256_add_ps(acc0, acc1));
    }
}

/// Lane `l` of look-up `k` (`0..8`) in a 128-value group of
/// [`gemv_nf4_nibbles512`] holds element `8l + (k ^ 1)`: dword `l` of the group's
/// 64 bytes holds elements `8l..8l + 8`, and its bits `4k..4k + 4` are the low
/// (`k` even, the odd element) or high (`k` odd, the even element) nibble of
/// byte `k / 2`.
/// (The order itself; the GEMV's permutes are checked against it in the tests.)
#[cfg_attr(not(test), allow(dead_code))]
fn nibble_order(k: usize, l: usize) -> usize {
    8 * l + (k ^ 1)
}

/// `permutex2var` indices of [`permute_nibble_order512`]'s three stages: `[stage][o]`
/// gives output `o` (0 or 1) of a stage's pair of input registers, lane by lane, as an
/// index into the pair (0..16 the first register, 16..32 the second). `k' = k ^ 1` is
/// the element's place within its 8-value run, `l` its run (see [`nibble_order`]).
const NIBBLE_STAGES: [[[u32; 16]; 2]; 3] = nibble_stages();

const fn nibble_stages() -> [[[u32; 16]; 2]; 3] {
    let mut t = [[[0u32; 16]; 2]; 3];
    let mut o = 0;
    while o < 2 {
        let mut lane = 0;
        while lane < 16 {
            // Stage 1: in, x[32a..32a + 32] (runs l = 4a..4a + 4, every k'); out `o`,
            // k' = 4o + lane / 4 and l = 4a + lane % 4, element 8(l - 4a) + k'.
            t[0][o][lane] = (8 * (lane % 4) + 4 * o + lane / 4) as u32;
            // Stage 2: in, two stage-1 outputs of one half (k' = 4h..4h + 4, runs
            // 8b..8b + 4 and 8b + 4..8b + 8, lane 4(k' - 4h) + l % 4); out `o`,
            // k' = 4h + 2o + lane / 8 and l = 8b + lane % 8.
            t[1][o][lane] = (16 * (lane % 8 / 4) + 4 * (2 * o + lane / 8) + lane % 4) as u32;
            // Stage 3: in, two stage-2 outputs (runs 0..8 and 8..16, lane
            // 8(k' - first k') + l % 8); out `o`, k' = first k' + o and l = lane.
            t[2][o][lane] = (16 * (lane / 8) + 8 * o + lane % 8) as u32;
            lane += 1;
        }
        o += 1;
    }
    t
}

/// `xp[128g + 16k + l] = x[128g + nibble_order(k, l)]` (zero past `x`'s end) for
/// `x` a whole number of 64-value halves of 128-value groups and `xp` the groups.
/// A group is eight registers `r_i = x[16i..16i + 16]` turned into eight rows by
/// three stages of two-register permutes: pairs of registers into rows of four `k'`
/// (`= k ^ 1`) by four `l`, those into two `k'` by eight `l`, those into one `k'` by
/// sixteen `l`. A scalar loop cost about 10% of a SmolLM2 GEMV on two threads.
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)]
fn permute_nibble_order512(x: &[f32], xp: &mut [f32]) {
    assert!(x.len().is_multiple_of(64) && xp.len() == x.len().div_ceil(128) * 128);
    let idx = |s: usize, h: usize| {
        // SAFETY: 16 readable u32.
        unsafe { _mm512_loadu_si512(NIBBLE_STAGES[s][h].as_ptr().cast()) }
    };
    let (i10, i11, i20, i21, i30, i31) = (
        idx(0, 0),
        idx(0, 1),
        idx(1, 0),
        idx(1, 1),
        idx(2, 0),
        idx(2, 1),
    );
    for (g, out) in xp.chunks_exact_mut(128).enumerate() {
        let r: [__m512; 8] = std::array::from_fn(|i| {
            let at = 128 * g + 16 * i;
            if at + 16 <= x.len() {
                // SAFETY: 16 readable floats at `at`.
                unsafe { _mm512_loadu_ps(x.as_ptr().add(at)) }
            } else {
                _mm512_setzero_ps()
            }
        });
        // s[a][h]: l = 4a..4a + 4, k' = 4h..4h + 4.
        let s: [[__m512; 2]; 4] = std::array::from_fn(|a| {
            [
                _mm512_permutex2var_ps(r[2 * a], i10, r[2 * a + 1]),
                _mm512_permutex2var_ps(r[2 * a], i11, r[2 * a + 1]),
            ]
        });
        for h in 0..2 {
            // v[b][q]: l = 8b..8b + 8, k' = 4h + 2q..4h + 2q + 2.
            let v: [[__m512; 2]; 2] = std::array::from_fn(|b| {
                [
                    _mm512_permutex2var_ps(s[2 * b][h], i20, s[2 * b + 1][h]),
                    _mm512_permutex2var_ps(s[2 * b][h], i21, s[2 * b + 1][h]),
                ]
            });
            for q in 0..2 {
                let k0 = 4 * h + 2 * q;
                let w0 = _mm512_permutex2var_ps(v[0][q], i30, v[1][q]);
                let w1 = _mm512_permutex2var_ps(v[0][q], i31, v[1][q]);
                // Look-up k holds k' = k ^ 1: k' = k0 goes to row k0 + 1 and back.
                // SAFETY: rows k0 and k0 + 1 (< 8) of this 128-float group.
                unsafe {
                    _mm512_storeu_ps(out.as_mut_ptr().add(16 * (k0 + 1)), w0);
                    _mm512_storeu_ps(out.as_mut_ptr().add(16 * k0), w1);
                }
            }
        }
    }
}

/// AVX-512 GEMV for rows of whole 64-value chunks and blocks of 64 or more.
/// `vpermps` reads only the low 4 bits of each index, so a dword of codes shifted
/// right by `4k` looks up its `k`-th nibble directly: a 128-value group costs one
/// 64-byte load, seven shifts and eight look-ups, with no widening or
/// interleaving. `x` is permuted once per call into that order
/// ([`nibble_order`]); a last half group (`cols % 128 == 64`) reads 32 bytes
/// against zeros in the other half of the permuted `x`.
#[target_feature(enable = "avx512f,avx2,fma")]
fn gemv_nf4_nibbles512(w: &Nf4Weight<'_>, x: &[f32], r0: usize, y: &mut [f32]) {
    let cols = w.cols;
    let groups = cols.div_ceil(128);
    let mut xp = vec![0f32; groups * 128];
    permute_nibble_order512(&x[..cols], &mut xp);
    let lut = lut512(w.quant_type.code());
    let shift = w.blocksize.get().trailing_zeros();
    let full = cols / 128;
    assert!(x.len() >= cols && w.packed.len() >= (r0 + y.len()) * cols / 2);
    assert!(w.absmax.len() >= ((r0 + y.len()) * cols) >> shift);
    // Σ_k lut[codes >> 4k] · xp_k over one group, in four partial sums.
    let group = |codes: __m512i, p: *const f32| -> __m512 {
        // SAFETY: `p` points at a 128-float group of `xp`.
        unsafe {
            let x = |k: usize| _mm512_loadu_ps(p.add(16 * k));
            let (v0, x0) = (_mm512_permutexvar_ps(codes, lut), x(0));
            let (v1, x1) = (
                _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(codes), lut),
                x(1),
            );
            let (v2, x2) = (
                _mm512_permutexvar_ps(_mm512_srli_epi32::<8>(codes), lut),
                x(2),
            );
            let (v3, x3) = (
                _mm512_permutexvar_ps(_mm512_srli_epi32::<12>(codes), lut),
                x(3),
            );
            let (v4, x4) = (
                _mm512_permutexvar_ps(_mm512_srli_epi32::<16>(codes), lut),
                x(4),
            );
            let (v5, x5) = (
                _mm512_permutexvar_ps(_mm512_srli_epi32::<20>(codes), lut),
                x(5),
            );
            let (v6, x6) = (
                _mm512_permutexvar_ps(_mm512_srli_epi32::<24>(codes), lut),
                x(6),
            );
            let (v7, x7) = (
                _mm512_permutexvar_ps(_mm512_srli_epi32::<28>(codes), lut),
                x(7),
            );
            let a = _mm512_fmadd_ps(v4, x4, _mm512_mul_ps(v0, x0));
            let b = _mm512_fmadd_ps(v5, x5, _mm512_mul_ps(v1, x1));
            let c = _mm512_fmadd_ps(v6, x6, _mm512_mul_ps(v2, x2));
            let d = _mm512_fmadd_ps(v7, x7, _mm512_mul_ps(v3, x3));
            _mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d))
        }
    };
    for (j, yj) in y.iter_mut().enumerate() {
        let s = (r0 + j) * cols;
        let mut acc = _mm512_setzero_ps();
        for g in 0..full {
            let e = s + 128 * g;
            // SAFETY: bytes `e / 2..e / 2 + 64` and scales up to `(e + 64) >> shift`
            // lie in row `r0 + j`, bounded by the asserts above.
            unsafe {
                let codes = _mm512_loadu_si512(w.packed.as_ptr().add(e / 2).cast());
                let sum = group(codes, xp.as_ptr().add(128 * g));
                let lo = _mm512_set1_ps(*w.absmax.get_unchecked(e >> shift));
                let hi = _mm512_set1_ps(*w.absmax.get_unchecked((e + 64) >> shift));
                acc = _mm512_fmadd_ps(sum, _mm512_mask_blend_ps(0xff00, lo, hi), acc);
            }
        }
        if full < groups {
            let e = s + 128 * full;
            // SAFETY: the half group's 32 bytes and its scale lie in row `r0 + j`.
            unsafe {
                let codes = _mm512_maskz_loadu_epi32(0x00ff, w.packed.as_ptr().add(e / 2).cast());
                let sum = group(codes, xp.as_ptr().add(128 * full));
                let scale = _mm512_set1_ps(*w.absmax.get_unchecked(e >> shift));
                acc = _mm512_fmadd_ps(sum, scale, acc);
            }
        }
        *yj = _mm512_reduce_add_ps(acc);
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn dot_nf4_512(w: &Nf4Weight<'_>, start: usize, x: &[f32]) -> f32 {
    let lut = lut512(w.quant_type.code());
    let shift = w.blocksize.get().trailing_zeros();
    let mut acc0 = _mm512_setzero_ps();
    let mut acc1 = _mm512_setzero_ps();
    let mut pairs = x.chunks_exact(64);
    let mut e = start;
    for xc in &mut pairs {
        let (a0, b0) = chunk512(w.packed, e, lut);
        let (a1, b1) = chunk512(w.packed, e + 32, lut);
        // SAFETY: `xc` has 64 readable floats.
        let (x0, x1, x2, x3) = unsafe {
            let p = xc.as_ptr();
            (
                _mm512_loadu_ps(p),
                _mm512_loadu_ps(p.add(16)),
                _mm512_loadu_ps(p.add(32)),
                _mm512_loadu_ps(p.add(48)),
            )
        };
        let t0 = _mm512_fmadd_ps(b0, x1, _mm512_mul_ps(a0, x0));
        let t1 = _mm512_fmadd_ps(b1, x3, _mm512_mul_ps(a1, x2));
        acc0 = _mm512_fmadd_ps(t0, _mm512_set1_ps(w.absmax[e >> shift]), acc0);
        acc1 = _mm512_fmadd_ps(t1, _mm512_set1_ps(w.absmax[(e + 32) >> shift]), acc1);
        e += 64;
    }
    let xs = pairs.remainder();
    if xs.len() == 32 {
        let (a0, b0) = chunk512(w.packed, e, lut);
        // SAFETY: the remainder holds 32 readable floats.
        let (x0, x1) = unsafe {
            (
                _mm512_loadu_ps(xs.as_ptr()),
                _mm512_loadu_ps(xs.as_ptr().add(16)),
            )
        };
        let t0 = _mm512_fmadd_ps(b0, x1, _mm512_mul_ps(a0, x0));
        acc0 = _mm512_fmadd_ps(t0, _mm512_set1_ps(w.absmax[e >> shift]), acc0);
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
}

#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma")]
fn dot_nf4_256(w: &Nf4Weight<'_>, start: usize, x: &[f32]) -> f32 {
    let (lo, hi) = lut256(w.quant_type.code());
    let shift = w.blocksize.get().trailing_zeros();
    let mut acc = _mm256_setzero_ps();
    for (c, xc) in x.chunks_exact(32).enumerate() {
        let e = start + c * 32;
        let v = chunk256(w.packed, e, lo, hi);
        // SAFETY: `xc` has 32 readable floats.
        let t = unsafe {
            let p = xc.as_ptr();
            let t = _mm256_mul_ps(v[0], _mm256_loadu_ps(p));
            let t = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(p.add(8)), t);
            let t = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(p.add(16)), t);
            _mm256_fmadd_ps(v[3], _mm256_loadu_ps(p.add(24)), t)
        };
        acc = _mm256_fmadd_ps(t, _mm256_set1_ps(w.absmax[e >> shift]), acc);
    }
    hsum256(acc)
}

/// `y[j] = x · W[r0 + j]` for a plain f32 weight.
pub(super) fn gemv_f32(isa: Isa, w: &[f32], cols: usize, x: &[f32], r0: usize, y: &mut [f32]) {
    for (j, yj) in y.iter_mut().enumerate() {
        let row = &w[(r0 + j) * cols..(r0 + j + 1) * cols];
        // SAFETY: features checked by the caller through `Isa::available`.
        *yj = unsafe {
            match isa {
                Isa::Avx512 => dot_f32_512(row, x),
                _ => dot_f32_256(row, x),
            }
        };
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn dot_f32_512(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [_mm512_setzero_ps(); 4];
    let ca = a.chunks_exact(64);
    let cb = b.chunks_exact(64);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (pa, pb) in ca.zip(cb) {
        for (q, aq) in acc.iter_mut().enumerate() {
            // SAFETY: 64 readable floats in each chunk.
            unsafe {
                let va = _mm512_loadu_ps(pa.as_ptr().add(16 * q));
                let vb = _mm512_loadu_ps(pb.as_ptr().add(16 * q));
                *aq = _mm512_fmadd_ps(va, vb, *aq);
            }
        }
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    let mut t = _mm512_reduce_add_ps(s);
    for (x, y) in ra.iter().zip(rb) {
        t += x * y;
    }
    t
}

#[target_feature(enable = "avx2,fma")]
fn dot_f32_256(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let ca = a.chunks_exact(32);
    let cb = b.chunks_exact(32);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (pa, pb) in ca.zip(cb) {
        for (q, aq) in acc.iter_mut().enumerate() {
            // SAFETY: 32 readable floats in each chunk.
            unsafe {
                let va = _mm256_loadu_ps(pa.as_ptr().add(8 * q));
                let vb = _mm256_loadu_ps(pb.as_ptr().add(8 * q));
                *aq = _mm256_fmadd_ps(va, vb, *aq);
            }
        }
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut t = hsum256(s);
    for (x, y) in ra.iter().zip(rb) {
        t += x * y;
    }
    t
}

/// Dequantizes `out.len()` elements from flat element `start` with
/// non-temporal 64-byte stores (no read-for-ownership of the destination),
/// for outputs much larger than the caches. Same values as [`dequant_chunks`].
pub(super) fn dequant_stream(w: &Nf4Weight<'_>, start: usize, out: &mut [f32]) {
    // Elements before the first 64-byte aligned address (a multiple of 4
    // elements since allocations are 16-byte aligned, so the start stays even).
    let addr = out.as_ptr() as usize;
    let head = (((64 - addr % 64) % 64) / 4).min(out.len());
    if !addr.is_multiple_of(4) || !(start + head).is_multiple_of(2) {
        w.scalar_range(start, out);
        return;
    }
    w.scalar_range(start, &mut out[..head]);
    let body = (out.len() - head) / 16 * 16;
    // SAFETY: AVX-512 was detected by the caller; `out[head..head + body]` is 64-byte aligned.
    unsafe { stream512(w, start + head, &mut out[head..head + body]) };
    w.scalar_range(start + head + body, &mut out[head + body..]);
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn stream512(w: &Nf4Weight<'_>, start: usize, out: &mut [f32]) {
    let lut = lut512(w.quant_type.code());
    let shift = w.blocksize.get().trailing_zeros();
    let bs = w.blocksize.get();
    let mask4 = _mm_set1_epi8(0x0f);
    for (c, o) in out.chunks_exact_mut(16).enumerate() {
        let e = start + c * 16;
        let bytes = &w.packed[e / 2..e / 2 + 8];
        // SAFETY: 8 readable bytes.
        let raw = unsafe { _mm_loadl_epi64(bytes.as_ptr().cast()) };
        let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask4);
        let lo = _mm_and_si128(raw, mask4);
        let idx = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo));
        let b0 = e >> shift;
        let s0 = _mm512_set1_ps(w.absmax[b0]);
        // Blocks hold at least 32 elements: at most one boundary in 16 lanes.
        let boundary = ((b0 + 1) << shift) - e;
        let scale = if boundary < 16 {
            let s1 = _mm512_set1_ps(w.absmax[b0 + 1]);
            _mm512_mask_blend_ps((0xffffu32 << boundary) as u16, s0, s1)
        } else {
            s0
        };
        debug_assert!(bs >= 32);
        let v = _mm512_mul_ps(_mm512_permutexvar_ps(idx, lut), scale);
        // SAFETY: `o` is 16 floats at a 64-byte aligned address.
        unsafe { _mm512_stream_ps(o.as_mut_ptr(), v) };
    }
    _mm_sfence();
}

/// AVX2 dequantization of whole 32-element chunks (`start` a multiple of 32)
/// with non-temporal stores, for outputs past the caches: the stores skip the
/// read-for-ownership of every output line. 32-byte aligned outputs take
/// 256-bit streams, 16-byte aligned ones 128-bit streams, others plain stores.
pub(super) fn dequant_stream_avx2(w: &Nf4Weight<'_>, start: usize, out: &mut [f32]) {
    debug_assert!(start.is_multiple_of(32));
    let body = out.len() / 32 * 32;
    // SAFETY: AVX2 and FMA were detected by the caller.
    unsafe {
        match out.as_ptr() as usize % 32 {
            0 => stream256::<32>(w, start, &mut out[..body]),
            16 => stream256::<16>(w, start, &mut out[..body]),
            _ => dequant256(w, start, &mut out[..body]),
        }
    }
    w.scalar_range(start + body, &mut out[body..]);
}

/// AVX2 dequantization of whole 32-element chunks; `ALIGN` is the output's
/// alignment for non-temporal stores (32: 256-bit, 16: 128-bit), 0 for plain stores.
#[target_feature(enable = "avx2,fma")]
fn stream256<const ALIGN: usize>(w: &Nf4Weight<'_>, start: usize, out: &mut [f32]) {
    let (lo, hi) = lut256(w.quant_type.code());
    let shift = w.blocksize.get().trailing_zeros();
    for (c, o) in out.chunks_exact_mut(32).enumerate() {
        let e = start + c * 32;
        let s = _mm256_set1_ps(w.absmax[e >> shift]);
        let v = chunk256(w.packed, e, lo, hi);
        for (q, vq) in v.iter().enumerate() {
            let r = _mm256_mul_ps(*vq, s);
            // SAFETY: `o` has 32 writable floats; for ALIGN > 0 at an address
            // aligned to ALIGN bytes.
            unsafe {
                let p = o.as_mut_ptr().add(8 * q);
                match ALIGN {
                    32 => _mm256_stream_ps(p, r),
                    16 => {
                        _mm_stream_ps(p, _mm256_castps256_ps128(r));
                        _mm_stream_ps(p.add(4), _mm256_extractf128_ps::<1>(r));
                    }
                    _ => _mm256_storeu_ps(p, r),
                }
            }
        }
    }
    if ALIGN > 0 {
        _mm_sfence();
    }
}

/// `$f::<MR>(args)` for the run-time row count `$mr` (1 to 6) of a micro-kernel call.
macro_rules! by_rows {
    ($mr:expr, $f:ident ( $($arg:expr),* )) => {
        by_rows!($mr, $f[] ($($arg),*))
    };
    // `f[P](..)`: further const arguments after the row count.
    ($mr:expr, $f:ident [ $($g:tt),* ] ( $($arg:expr),* )) => {
        match $mr {
            6 => $f::<6 $(, $g)*>($($arg),*),
            5 => $f::<5 $(, $g)*>($($arg),*),
            4 => $f::<4 $(, $g)*>($($arg),*),
            3 => $f::<3 $(, $g)*>($($arg),*),
            2 => $f::<2 $(, $g)*>($($arg),*),
            1 => $f::<1 $(, $g)*>($($arg),*),
            mr => unreachable!("micro-kernel rows: {mr}"),
        }
    };
}

/// The `mr × 16` micro-kernel (`mr ≤ 6`) of the blocked product: `c[i][j] (+)=
/// Σ_k a[k·6 + i] · b[k·16 + j]` for `j < nc` (`a` a packed micro-panel of 6 rows).
#[allow(clippy::too_many_arguments)]
pub(super) fn micro_6x16(
    mr: usize,
    a: *const f32,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    // SAFETY: AVX2 and FMA were detected by the caller; the caller checked that
    // `a` holds `kc × 6` values, `b` `kc × 16` values, and that `c` addresses `mr`
    // rows of `nc` writable values `ldc` apart.
    unsafe { by_rows!(mr, micro(a, b, kc, c, ldc, nc, accumulate)) }
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)]
unsafe fn micro<const MR: usize>(
    a: *const f32,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    // SAFETY (whole body): bounds as stated by `micro_6x16`'s caller.
    unsafe {
        for k in 0..kc {
            let bk = b.add(k * 16);
            let ak = a.add(k * 6);
            let b0 = _mm256_loadu_ps(bk);
            let b1 = _mm256_loadu_ps(bk.add(8));
            for r in 0..MR {
                let av = _mm256_broadcast_ss(&*ak.add(r));
                acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
            }
        }
        for r in 0..MR {
            let cr = c.add(r * ldc);
            if nc == 16 {
                let (mut v0, mut v1) = (acc[r][0], acc[r][1]);
                if accumulate {
                    v0 = _mm256_add_ps(_mm256_loadu_ps(cr), v0);
                    v1 = _mm256_add_ps(_mm256_loadu_ps(cr.add(8)), v1);
                }
                _mm256_storeu_ps(cr, v0);
                _mm256_storeu_ps(cr.add(8), v1);
            } else {
                let mut tmp = [0f32; 16];
                _mm256_storeu_ps(tmp.as_mut_ptr(), acc[r][0]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), acc[r][1]);
                for (j, t) in tmp[..nc].iter().enumerate() {
                    let o = cr.add(j);
                    *o = if accumulate { *o + t } else { *t };
                }
            }
        }
    }
}

/// The `mr × 32` AVX-512 micro-kernel (`mr ≤ 6`) of the blocked product over two
/// adjacent 16-column panels, `b` and `b + stride`, whose rows are `ldb` apart (16 when
/// packed): `c[i][j] (+)= Σ_k a[k·6 + i] · panel[j / 16][k·ldb + j % 16]` for `j < nc`
/// (`nc ≤ 32`; the second panel is read only when `nc > 16`). Twelve 16-wide accumulators cover the FMA latency of two 512-bit
/// FMA units, and each broadcast of `x` feeds two FMAs.
#[allow(clippy::too_many_arguments)]
pub(super) fn micro_6x32(
    mr: usize,
    a: *const f32,
    b: *const f32,
    stride: usize,
    ldb: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    debug_assert!(nc <= 32);
    // SAFETY: AVX-512F was detected by the caller; the caller checked that `a`
    // holds `kc × 6` values, `b` `kc` rows of 16 values `ldb` apart (and `b + stride`
    // as many when `nc > 16`), and that `c` addresses `mr` rows of `nc` writable
    // values `ldc` apart.
    unsafe {
        if nc <= 16 {
            by_rows!(mr, micro512x1(a, b, ldb, kc, c, ldc, nc, accumulate))
        } else {
            by_rows!(
                mr,
                micro512x2(a, b, stride, ldb, kc, c, ldc, nc, accumulate)
            )
        }
    }
}

/// One panel of [`micro_6x32`] (`nc ≤ 16`): a rank-16 LoRA product's whole width, or
/// a weight's last panel. Run through the two-panel kernel, it did the work twice.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn micro512x1<const MR: usize>(
    a: *const f32,
    b: *const f32,
    ldb: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    // SAFETY: bounds as stated by `micro_6x32`'s caller.
    unsafe { one_panel::<MR>(|k, r| *a.add(k * 6 + r), b, ldb, kc, c, ldc, nc, accumulate) }
}

/// [`micro_6x32`]'s one-panel case (`nc ≤ 16`) on `mr` rows of `x` read where they lie
/// (`a[i·lda + k]`), not packed: in a product one panel wide (a rank-16 LoRA
/// product) each `x` value is read once, so packing it first only copied it. The
/// same sums in the same order as the packed kernel.
#[allow(clippy::too_many_arguments)]
pub(super) fn micro_rows_x16(
    mr: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    debug_assert!(nc <= 16);
    // SAFETY: AVX-512F was detected by the caller; the caller checked that `a` holds
    // `mr` rows of `kc` values `lda` apart, `b` `kc × 16` values, and that `c`
    // addresses `mr` rows of `nc` writable values `ldc` apart.
    unsafe { by_rows!(mr, micro512x1_rows(a, lda, b, kc, c, ldc, nc, accumulate)) }
}

#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn micro512x1_rows<const MR: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    // SAFETY: bounds as stated by `micro_rows_x16`'s caller.
    unsafe {
        let rows: [*const f32; MR] = core::array::from_fn(|r| a.add(r * lda));
        one_panel::<MR>(|k, r| *rows[r].add(k), b, 16, kc, c, ldc, nc, accumulate)
    }
}

/// The one-panel kernels' body: `c[r][j] (+)= Σ_k a(k, r) · b[k·16 + j]` for `r < MR`,
/// `j < nc`, inlined into each (AVX-512) caller with its way of reading `x`.
///
/// # Safety
/// AVX-512F is available; `a(k, r)` may be read for `k < kc`, `r < MR`; `b` holds
/// `kc` rows of 16 values `ldb` apart; `c` addresses `MR` rows of `nc` writable values
/// `ldc` apart.
#[inline(always)]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn one_panel<const MR: usize>(
    a: impl Fn(usize, usize) -> f32,
    b: *const f32,
    ldb: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    // SAFETY (whole body): guaranteed by the caller.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); MR];
        for k in 0..kc {
            let b0 = _mm512_loadu_ps(b.add(k * ldb));
            for r in 0..MR {
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a(k, r)), b0, acc[r]);
            }
        }
        let m0 = lane_mask(nc);
        for r in 0..MR {
            store_acc(c.add(r * ldc), m0, acc[r], accumulate);
        }
    }
}

/// The first `n` lanes (all 16 for `n ≥ 16`).
#[inline(always)]
fn lane_mask(n: usize) -> __mmask16 {
    if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
}

/// `c[..] (+)= v` on the lanes of `m`.
///
/// # Safety
/// AVX-512F is available and the lanes of `m` at `c` are writable.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn store_acc(c: *mut f32, m: __mmask16, v: __m512, accumulate: bool) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let v = if accumulate {
            _mm512_add_ps(_mm512_maskz_loadu_ps(m, c), v)
        } else {
            v
        };
        _mm512_mask_storeu_ps(c, m, v);
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn micro512x2<const MR: usize>(
    a: *const f32,
    b: *const f32,
    stride: usize,
    ldb: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    // SAFETY (whole body): bounds as stated by `micro_6x32`'s caller; with
    // `nc <= 16` the second panel is `b` itself, so nothing past it is read.
    unsafe {
        let b1p = if nc > 16 { b.add(stride) } else { b };
        // The `c` tile is read (or written) once the depth is done: fetch its lines
        // into L1 meanwhile.
        for r in 0..MR {
            _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc + nc - 1) as *const i8);
        }
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for k in 0..kc {
            let ak = a.add(k * 6);
            let b0 = _mm512_loadu_ps(b.add(k * ldb));
            let b1 = _mm512_loadu_ps(b1p.add(k * ldb));
            for r in 0..MR {
                let av = _mm512_set1_ps(*ak.add(r));
                acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
            }
        }
        let (m0, m1) = (lane_mask(nc), lane_mask(nc.saturating_sub(16)));
        for r in 0..MR {
            let cr = c.add(r * ldc);
            store_acc(cr, m0, acc[r][0], accumulate);
            if nc > 16 {
                store_acc(cr.add(16), m1, acc[r][1], accumulate);
            }
        }
    }
}

/// Dequantizes rows `row0..row0 + 16`, columns `k0..k0 + kc` of `w` straight into a
/// transposed 16-column panel: `panel[k·16 + j] = W[row0 + j][k0 + k]` (`w.cols`, `k0`
/// and `kc` multiples of 32). The forward product `x · Wᵀ` packs its NF4 weight this
/// way: the codes are transposed as bytes (a 16 × 16 byte transpose per 32 columns)
/// and looked up already in panel order, where dequantizing rows and transposing the
/// floats moved 16 times the bytes through the shuffle unit.
pub(super) fn dequant_panel_t(
    w: &Nf4Weight<'_>,
    row0: usize,
    k0: usize,
    kc: usize,
    panel: &mut [f32],
) {
    assert!(w.cols.is_multiple_of(32) && k0.is_multiple_of(32) && kc.is_multiple_of(32));
    assert!(row0 + 16 <= w.rows && k0 + kc <= w.cols && panel.len() >= kc * 16);
    // SAFETY: AVX-512F was checked by the caller (`Isa::Avx512`); every row start
    // `(row0 + j)·cols + k0 + 32c` is a multiple of 32 inside the weight (asserted).
    unsafe { dequant_panel_t512(w, row0, k0, kc, panel.as_mut_ptr()) }
}

#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dequant_panel_t512(w: &Nf4Weight<'_>, row0: usize, k0: usize, kc: usize, dst: *mut f32) {
    let lut = lut512(w.quant_type.code());
    let shift = w.blocksize.get().trailing_zeros();
    for c in 0..kc / 32 {
        let k = k0 + 32 * c;
        let start = |j: usize| (row0 + j) * w.cols + k;
        // Byte `b` of the 16 rows' chunks: codes of columns `2b` (high nibble) and
        // `2b + 1` (low nibble), lane `j` from row `j`. A 32-value chunk lies in one
        // block (block sizes are multiples of 32).
        let bytes = transpose16_u8(core::array::from_fn(|j| load16(w.packed, start(j))));
        let scales: [f32; 16] = core::array::from_fn(|j| w.absmax[start(j) >> shift]);
        // SAFETY: 16 readable floats; the 32 stores stay inside `kc × 16` (checked by
        // `dequant_panel_t`).
        unsafe {
            let s = _mm512_loadu_ps(scales.as_ptr());
            for (b, v) in bytes.iter().enumerate() {
                // `vpermps` reads the low 4 bits of each index: the byte itself picks
                // the low nibble's code, the byte shifted right by 4 the high one's.
                let idx = _mm512_cvtepu8_epi32(*v);
                let hi = _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(idx), lut);
                let lo = _mm512_permutexvar_ps(idx, lut);
                let o = dst.add((32 * c + 2 * b) * 16);
                _mm512_storeu_ps(o, _mm512_mul_ps(hi, s));
                _mm512_storeu_ps(o.add(16), _mm512_mul_ps(lo, s));
            }
        }
    }
}

/// The transpose of a 16 × 16 byte matrix held as 16 rows: `out[b]` byte `j` =
/// `rows[j]` byte `b` (four rounds of interleaves, each doubling the unit).
#[inline(always)]
fn transpose16_u8(r: [__m128i; 16]) -> [__m128i; 16] {
    // SAFETY (all four rounds): SSE2 shuffles; SSE2 is baseline on x86_64.
    unsafe {
        // Round `g` (2, 4, 8, 16) pairs, within each group of `g` rows, row `i` with
        // row `i + g/2` into slots `2i`, `2i + 1`; each round doubles the unit.
        let pairs =
            |g: usize| move |q: usize| (q / g * g + q % g / 2, q / g * g + g / 2 + q % g / 2);
        // 16-bit units (rows 2i, 2i + 1) of bytes 0..8 (even slots) and 8..16 (odd).
        let t = interleave(
            &r,
            pairs(2),
            |a, b| _mm_unpacklo_epi8(a, b),
            |a, b| _mm_unpackhi_epi8(a, b),
        );
        // 32-bit units (rows 4i..4i + 4): `u[4i + h]` holds bytes 4h..4h + 4.
        let u = interleave(
            &t,
            pairs(4),
            |a, b| _mm_unpacklo_epi16(a, b),
            |a, b| _mm_unpackhi_epi16(a, b),
        );
        // 64-bit units (rows 8g..8g + 8): `v[8g + p]` holds bytes 2p, 2p + 1.
        let v = interleave(
            &u,
            pairs(8),
            |a, b| _mm_unpacklo_epi32(a, b),
            |a, b| _mm_unpackhi_epi32(a, b),
        );
        // All 16 rows of byte `b`.
        interleave(
            &v,
            pairs(16),
            |a, b| _mm_unpacklo_epi64(a, b),
            |a, b| _mm_unpackhi_epi64(a, b),
        )
    }
}

/// One round of [`transpose16_u8`]: `out[q] = lo(src[i], src[j])` for even `q`,
/// `hi(src[i], src[j])` for odd `q`, with `(i, j) = pair(q)`.
#[inline(always)]
fn interleave(
    src: &[__m128i; 16],
    pair: impl Fn(usize) -> (usize, usize),
    lo: impl Fn(__m128i, __m128i) -> __m128i,
    hi: impl Fn(__m128i, __m128i) -> __m128i,
) -> [__m128i; 16] {
    core::array::from_fn(|q| {
        let (i, j) = pair(q);
        if q % 2 == 0 {
            lo(src[i], src[j])
        } else {
            hi(src[i], src[j])
        }
    })
}

/// `panel[k·16 + j] = src[j·ld + k]` for `j < 16`, `k < kc` (`kc` a multiple of 8):
/// 8 × 8 register transposes.
pub(super) fn transpose_16xk(src: &[f32], ld: usize, kc: usize, panel: &mut [f32]) {
    assert!(kc.is_multiple_of(8) && src.len() >= 15 * ld + kc && panel.len() >= kc * 16);
    // SAFETY: AVX was detected by the caller (AVX2 implies it); bounds asserted above.
    unsafe { transpose_avx(src.as_ptr(), ld, kc, panel.as_mut_ptr()) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_avx(src: *const f32, ld: usize, kc: usize, dst: *mut f32) {
    // SAFETY: bounds checked by `transpose_16xk`.
    unsafe {
        for h in 0..2 {
            let s = src.add(h * 8 * ld);
            for k in (0..kc).step_by(8) {
                let r: [__m256; 8] = core::array::from_fn(|j| _mm256_loadu_ps(s.add(j * ld + k)));
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let cols = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (q, v) in cols.iter().enumerate() {
                    _mm256_storeu_ps(dst.add((k + q) * 16 + h * 8), *v);
                }
            }
        }
    }
}

/// Largest `|x|` of `x` as f32 bits (sign cleared): integer order equals float
/// order for non-negative floats, and every infinity or NaN is `>= 0x7f80_0000`.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn abs_max_bits(x: &[f32]) -> u32 {
    let mask = _mm256_set1_epi32(0x7fff_ffff);
    let mut m = _mm256_setzero_si256();
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        // SAFETY: `c` has 8 readable floats.
        let v = unsafe { _mm256_loadu_si256(c.as_ptr().cast()) };
        m = _mm256_max_epu32(m, _mm256_and_si256(v, mask));
    }
    let mut lanes = [0u32; 8];
    // SAFETY: `lanes` has room for 8 u32.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), m) };
    let tail = chunks.remainder().iter().map(|v| v.to_bits() & 0x7fff_ffff);
    lanes.into_iter().chain(tail).max().unwrap_or(0)
}

/// Sorted-code position of 8 scaled values: the count of `bounds` strictly below
/// each, found by a four-step binary search (the thresholds of steps 3 and 4
/// come from `vpermps` on the quarter and half points).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn bucket8(
    s: __m256,
    b7: __m256,
    b3: __m256,
    b11: __m256,
    quarters: __m256,
    halves: __m256,
) -> __m256i {
    let m8 = _mm256_cmp_ps::<_CMP_LT_OQ>(b7, s);
    let mut idx = _mm256_and_si256(_mm256_castps_si256(m8), _mm256_set1_epi32(8));
    let m4 = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_blendv_ps(b3, b11, m8), s);
    idx = _mm256_or_si256(
        idx,
        _mm256_and_si256(_mm256_castps_si256(m4), _mm256_set1_epi32(4)),
    );
    let t2 = _mm256_permutevar8x32_ps(quarters, _mm256_srli_epi32(idx, 2));
    let m2 = _mm256_cmp_ps::<_CMP_LT_OQ>(t2, s);
    idx = _mm256_or_si256(
        idx,
        _mm256_and_si256(_mm256_castps_si256(m2), _mm256_set1_epi32(2)),
    );
    let t1 = _mm256_permutevar8x32_ps(halves, _mm256_srli_epi32(idx, 1));
    let m1 = _mm256_cmp_ps::<_CMP_LT_OQ>(t1, s);
    _mm256_or_si256(
        idx,
        _mm256_and_si256(_mm256_castps_si256(m1), _mm256_set1_epi32(1)),
    )
}

/// Codes of a whole block (`x.len()` a multiple of 32) scaled by `inv` and
/// clamped to `[-1, 1]`, exactly as the scalar path rounds them, packed two
/// per byte (first element in the high nibble) into `out` (`x.len() / 2`
/// bytes). `order` maps sorted positions to codes (FP4).
#[target_feature(enable = "avx2,fma")]
pub(crate) fn quantize_codes(
    x: &[f32],
    inv: f32,
    bounds: &[f32; 15],
    order: Option<&[u8; 16]>,
    out: &mut [u8],
) {
    assert!(x.len().is_multiple_of(32) && out.len() == x.len() / 2);
    let b = |i: usize| _mm256_set1_ps(bounds[i]);
    let (b7, b3, b11) = (b(7), b(3), b(11));
    let q = [
        bounds[1], bounds[5], bounds[9], bounds[13], 0.0, 0.0, 0.0, 0.0,
    ];
    let h: [f32; 8] = core::array::from_fn(|i| bounds[2 * i]);
    // SAFETY: 8 readable floats each.
    let (quarters, halves) = unsafe { (_mm256_loadu_ps(q.as_ptr()), _mm256_loadu_ps(h.as_ptr())) };
    let identity: [u8; 16] = core::array::from_fn(|i| i as u8);
    // SAFETY: 16 readable bytes.
    let map = unsafe {
        _mm256_broadcastsi128_si256(_mm_loadu_si128(order.unwrap_or(&identity).as_ptr().cast()))
    };
    let (vinv, lo, hi) = (
        _mm256_set1_ps(inv),
        _mm256_set1_ps(-1.0),
        _mm256_set1_ps(1.0),
    );
    let pair = _mm256_set1_epi16(0x0110); // bytes (16, 1): 16 * first + second
    for (xc, oc) in x.chunks_exact(32).zip(out.chunks_exact_mut(16)) {
        let idx: [__m256i; 4] = core::array::from_fn(|k| {
            // SAFETY: `xc` has 32 readable floats.
            let v = unsafe { _mm256_loadu_ps(xc.as_ptr().add(8 * k)) };
            let s = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v, vinv), lo), hi);
            bucket8(s, b7, b3, b11, quarters, halves)
        });
        // 32 positions as bytes, back in element order after the in-lane packs.
        let w = _mm256_packus_epi16(
            _mm256_packus_epi32(idx[0], idx[1]),
            _mm256_packus_epi32(idx[2], idx[3]),
        );
        let bytes = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let codes = _mm256_shuffle_epi8(map, bytes);
        let pairs = _mm256_maddubs_epi16(codes, pair);
        let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(pairs, pairs));
        // SAFETY: `oc` has 16 writable bytes.
        unsafe { _mm_storeu_si128(oc.as_mut_ptr().cast(), _mm256_castsi256_si128(packed)) };
    }
}

/// [`abs_max_bits`] sixteen lanes wide.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) fn abs_max_bits512(x: &[f32]) -> u32 {
    let mask = _mm512_set1_epi32(0x7fff_ffff);
    let mut m = _mm512_setzero_si512();
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        // SAFETY: `c` has 16 readable floats.
        let v = unsafe { _mm512_loadu_si512(c.as_ptr().cast()) };
        m = _mm512_max_epu32(m, _mm512_and_si512(v, mask));
    }
    let tail = chunks.remainder().iter().map(|v| v.to_bits() & 0x7fff_ffff);
    tail.fold(_mm512_reduce_max_epu32(m), u32::max)
}

/// [`quantize_codes`] sixteen lanes wide: the same scaling, clamping and
/// binary search over the 15 midpoints (each step one `vpermps` look-up of the
/// probe), so the same codes.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) fn quantize_codes512(
    x: &[f32],
    inv: f32,
    bounds: &[f32; 15],
    order: Option<&[u8; 16]>,
    out: &mut [u8],
) {
    assert!(x.len().is_multiple_of(32) && out.len() == x.len() / 2);
    let mut b16 = [f32::INFINITY; 16];
    b16[..15].copy_from_slice(bounds);
    let identity: [u8; 16] = core::array::from_fn(|i| i as u8);
    let map: [i32; 16] = core::array::from_fn(|i| order.unwrap_or(&identity)[i] as i32);
    // SAFETY: 16 readable values each.
    let (bv, mapv) = unsafe {
        (
            _mm512_loadu_ps(b16.as_ptr()),
            _mm512_loadu_si512(map.as_ptr().cast()),
        )
    };
    let (vinv, lo, hi) = (
        _mm512_set1_ps(inv),
        _mm512_set1_ps(-1.0),
        _mm512_set1_ps(1.0),
    );
    let steps = [8, 4, 2, 1].map(|s| (_mm512_set1_epi32(s), _mm512_set1_epi32(s - 1)));
    let pair = _mm256_set1_epi16(0x0110); // bytes (16, 1): 16 * first + second
    for (xc, oc) in x.chunks_exact(32).zip(out.chunks_exact_mut(16)) {
        let codes: [__m128i; 2] = core::array::from_fn(|k| {
            // SAFETY: `xc` has 32 readable floats.
            let v = unsafe { _mm512_loadu_ps(xc.as_ptr().add(16 * k)) };
            let s = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, vinv), lo), hi);
            let mut idx = _mm512_setzero_si512();
            for &(step, back) in &steps {
                let t = _mm512_permutexvar_ps(_mm512_add_epi32(idx, back), bv);
                let lt = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(t, s);
                idx = _mm512_mask_add_epi32(idx, lt, idx, step);
            }
            _mm512_cvtepi32_epi8(_mm512_permutexvar_epi32(idx, mapv))
        });
        let bytes = _mm256_set_m128i(codes[1], codes[0]);
        let pairs = _mm256_maddubs_epi16(bytes, pair);
        let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(pairs, pairs));
        // SAFETY: `oc` has 16 writable bytes.
        unsafe { _mm_storeu_si128(oc.as_mut_ptr().cast(), _mm256_castsi256_si128(packed)) };
    }
}

/// Interleaves six rows of `x` into a micro-panel of the blocked product,
/// `dst[k·6 + r] = rows[r][k]`, 16 values of `k` at a time; returns how many values of
/// `k` it did (a multiple of 16; the caller does the rest).
pub(super) fn interleave6(rows: &[&[f32]; 6], dst: &mut [f32]) -> usize {
    let kc = rows
        .iter()
        .map(|r| r.len())
        .min()
        .unwrap_or(0)
        .min(dst.len() / 6);
    let done = kc / 16 * 16;
    // SAFETY: AVX-512F was detected by the caller; every row holds `done` values and
    // `dst` `6 · done`.
    unsafe { interleave6_avx512(rows, done, dst.as_mut_ptr()) };
    done
}

#[target_feature(enable = "avx512f")]
unsafe fn interleave6_avx512(rows: &[&[f32]; 6], kc: usize, dst: *mut f32) {
    // Pairs of rows interleaved (`[r0[k], r1[k]]` for k in 0..8, then 8..16), then, as
    // 64-bit pairs, three rows' pairs merged: two permutes per output vector.
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    // Output vector `o` takes pairs `o·8 .. o·8 + 8` of the sequence a0 b0 c0 a1 b1 c1 …
    // (a, b, c the pairs of rows 0-1, 2-3, 4-5): from a and b first, then from c.
    let ab = [
        _mm512_setr_epi64(0, 8, 0, 1, 9, 0, 2, 10),
        _mm512_setr_epi64(0, 3, 11, 0, 4, 12, 0, 5),
        _mm512_setr_epi64(13, 0, 6, 14, 0, 7, 15, 0),
    ];
    let c = [
        _mm512_setr_epi64(0, 0, 0, 0, 0, 1, 0, 0),
        _mm512_setr_epi64(2, 0, 0, 3, 0, 0, 4, 0),
        _mm512_setr_epi64(0, 5, 0, 0, 6, 0, 0, 7),
    ];
    let cm: [__mmask8; 3] = [0b0010_0100, 0b0100_1001, 0b1001_0010];
    // SAFETY (whole body): bounds as stated by `interleave6`.
    unsafe {
        for k in (0..kc).step_by(16) {
            let r: [__m512; 6] = core::array::from_fn(|i| _mm512_loadu_ps(rows[i].as_ptr().add(k)));
            for (h, idx) in [lo, hi].into_iter().enumerate() {
                let a = _mm512_castps_pd(_mm512_permutex2var_ps(r[0], idx, r[1]));
                let b = _mm512_castps_pd(_mm512_permutex2var_ps(r[2], idx, r[3]));
                let cc = _mm512_castps_pd(_mm512_permutex2var_ps(r[4], idx, r[5]));
                for o in 0..3 {
                    let t = _mm512_permutex2var_pd(a, ab[o], b);
                    let v = _mm512_mask_permutexvar_pd(t, cm[o], c[o], cc);
                    _mm512_storeu_pd(dst.add(k * 6 + h * 48 + o * 16) as *mut f64, v);
                }
            }
        }
    }
}

/// Whether this CPU has AVX-512 BF16 (`vdpbf16ps`, `vcvtne2ps2bf16`) besides AVX-512F.
pub(super) fn has_avx512_bf16() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

/// The bf16 product's `mr × 32` micro-kernel (`mr ≤ 6`) over two adjacent panels of
/// bf16 pairs, `b` and `b + stride` (`u32` words: the low half the even depth, the
/// high half the odd one): `c[i][j] (+)= Σ_p (a[p·6 + i].hi · b[p][j].hi +
/// a[p·6 + i].lo · b[p][j].lo)` for `j < nc`, each pair added as `vdpbf16ps` does
/// (the high product first, each addition rounded to f32; the products are exact).
/// The second panel is read only when `nc > 16`.
///
/// # Safety
/// AVX-512F and AVX-512 BF16 are available ([`has_avx512_bf16`]); `a` holds `kc × 6`
/// words, `b` `kc × 16` (and `b + stride` as many when `nc > 16`); `c` addresses
/// `mr` rows of `nc` writable values `ldc` apart.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn micro_bf16_6x32(
    mr: usize,
    a: *const u32,
    b: *const u32,
    stride: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    debug_assert!(nc <= 32);
    // SAFETY: guaranteed by the caller.
    unsafe {
        if nc <= 16 {
            by_rows!(mr, bf16_panels[1](a, b, stride, kc, c, ldc, nc, accumulate))
        } else {
            by_rows!(mr, bf16_panels[2](a, b, stride, kc, c, ldc, nc, accumulate))
        }
    }
}

#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn bf16_panels<const MR: usize, const P: usize>(
    a: *const u32,
    b: *const u32,
    stride: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    // SAFETY (whole body): bounds as stated by `micro_bf16_6x32`'s caller.
    unsafe {
        for r in 0..MR {
            _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc + nc - 1) as *const i8);
        }
        let mut acc = [[_mm512_setzero_ps(); P]; MR];
        for k in 0..kc {
            let ak = a.add(k * 6);
            let bv: [__m512bh; P] = core::array::from_fn(|p| {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    b.add(p * stride + k * 16).cast(),
                ))
            });
            for r in 0..MR {
                let av =
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*ak.add(r) as i32));
                for p in 0..P {
                    acc[r][p] = _mm512_dpbf16_ps(acc[r][p], av, bv[p]);
                }
            }
        }
        for r in 0..MR {
            let cr = c.add(r * ldc);
            for p in 0..P {
                let m = lane_mask(nc.saturating_sub(16 * p));
                store_acc(cr.add(16 * p), m, acc[r][p], accumulate);
            }
        }
    }
}

/// `out[p] = bf16(src[2p]) | bf16(src[2p + 1]) << 16` for the whole 32-value runs of
/// `src` (rounded to nearest even by `vcvtne2ps2bf16`); returns how many values
/// were converted (a multiple of 32, at most `src.len()` and `2 · out.len()`).
pub(super) fn bf16_pairs(src: &[f32], out: &mut [u32]) -> usize {
    let n = src.len().min(2 * out.len()) / 32 * 32;
    // SAFETY: AVX-512 BF16 was detected by the caller; `n` values of `src` and
    // `n / 2` words of `out` are in bounds.
    unsafe { bf16_pairs_avx512(src.as_ptr(), n, out.as_mut_ptr()) };
    n
}

#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn bf16_pairs_avx512(src: *const f32, n: usize, out: *mut u32) {
    // SAFETY: bounds as stated by `bf16_pairs`.
    unsafe {
        for i in (0..n).step_by(32) {
            let lo = _mm512_loadu_ps(src.add(i));
            let hi = _mm512_loadu_ps(src.add(i + 16));
            let v = _mm512_cvtne2ps_pbh(hi, lo);
            _mm512_storeu_si512(
                out.add(i / 2).cast(),
                std::mem::transmute::<__m512bh, __m512i>(v),
            );
        }
    }
}

/// `mr` rows of f32 `x` (read where they lie, `lda` apart) times two adjacent panels
/// of bf16 pairs (`b`, `b + stride`; the second read only when `nc > 16`), each pair
/// widened to two f32 vectors in registers: `c[i][j] (+)= Σ_k x[i][k] · W[j][k]` for
/// `k < klen` (`klen` values, the last pair half used when odd), summed in the order
/// of the f32 micro-kernel (one FMA per `k`, in order), so the result is its bits.
///
/// # Safety
/// AVX-512F is available; each row of `a` holds `klen` values; `b` holds
/// `klen.div_ceil(2) × 16` words (and `b + stride` as many when `nc > 16`); `c`
/// addresses `mr` rows of `nc` writable values `ldc` apart.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn micro_bf16w_rows(
    mr: usize,
    a: *const f32,
    lda: usize,
    b: *const u32,
    stride: usize,
    klen: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    debug_assert!(nc <= 32);
    // SAFETY: guaranteed by the caller.
    unsafe {
        if nc <= 16 {
            by_rows!(
                mr,
                widen_panels[1](a, lda, b, stride, klen, c, ldc, nc, accumulate)
            )
        } else {
            by_rows!(
                mr,
                widen_panels[2](a, lda, b, stride, klen, c, ldc, nc, accumulate)
            )
        }
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn widen_panels<const MR: usize, const P: usize>(
    a: *const f32,
    lda: usize,
    b: *const u32,
    stride: usize,
    klen: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    // SAFETY (whole body): bounds as stated by `micro_bf16w_rows`'s caller.
    unsafe {
        let rows: [*const f32; MR] = core::array::from_fn(|r| a.add(r * lda));
        let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
        let mut acc = [[_mm512_setzero_ps(); P]; MR];
        let pairs = klen / 2;
        for k in 0..pairs {
            let words: [__m512i; P] =
                core::array::from_fn(|p| _mm512_loadu_si512(b.add(p * stride + k * 16).cast()));
            let lo: [__m512; P] =
                core::array::from_fn(|p| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(words[p])));
            let hi: [__m512; P] =
                core::array::from_fn(|p| _mm512_castsi512_ps(_mm512_and_si512(words[p], high)));
            for r in 0..MR {
                let x0 = _mm512_set1_ps(*rows[r].add(2 * k));
                let x1 = _mm512_set1_ps(*rows[r].add(2 * k + 1));
                for p in 0..P {
                    acc[r][p] = _mm512_fmadd_ps(x0, lo[p], acc[r][p]);
                    acc[r][p] = _mm512_fmadd_ps(x1, hi[p], acc[r][p]);
                }
            }
        }
        if klen % 2 == 1 {
            let k = pairs;
            let lo: [__m512; P] = core::array::from_fn(|p| {
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_loadu_si512(
                    b.add(p * stride + k * 16).cast(),
                )))
            });
            for r in 0..MR {
                let x0 = _mm512_set1_ps(*rows[r].add(2 * k));
                for p in 0..P {
                    acc[r][p] = _mm512_fmadd_ps(x0, lo[p], acc[r][p]);
                }
            }
        }
        for r in 0..MR {
            let cr = c.add(r * ldc);
            for p in 0..P {
                let m = lane_mask(nc.saturating_sub(16 * p));
                store_acc(cr.add(16 * p), m, acc[r][p], accumulate);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The permuted `x` of the nibble-order GEMV holds element `nibble_order(k, l)` of
    /// its group at `16k + l`, and zeros in a missing half group (AVX-512 only).
    #[test]
    fn permuted_x_follows_nibble_order() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        for cols in [64usize, 128, 576, 640, 1024] {
            let x: Vec<f32> = (0..cols).map(|i| i as f32 + 1.0).collect();
            let mut xp = vec![f32::NAN; cols.div_ceil(128) * 128];
            // SAFETY: AVX-512F was detected above.
            unsafe { permute_nibble_order512(&x, &mut xp) };
            for (i, &v) in xp.iter().enumerate() {
                let c = i / 128 * 128 + nibble_order(i % 128 / 16, i % 16);
                let want = if c < cols { x[c] } else { 0.0 };
                assert_eq!(v, want, "cols {cols}, slot {i}");
            }
        }
    }
}
