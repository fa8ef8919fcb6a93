//! Property tests: every SIMD path agrees with the scalar reference, the
//! fused product equals the product with the dequantized weight, and the
//! round-trip error stays within the NF4 bound.

use bioalign_quant::blockwise::{packed_len, quantize_4bit, quantize_4bit_into};
use bioalign_quant::codebook::NF4;
use bioalign_quant::kernels::{self, Isa, Nf4Weight};
use bioalign_quant::{BlockSize, QuantType, QuantizeOptions, Quantized4bit, SourceDtype};
use proptest::prelude::*;

fn case() -> impl Strategy<Value = (usize, usize, usize, QuantType, Vec<f32>, usize)> {
    (1usize..24, 1usize..300, 0usize..4, any::<bool>(), 1usize..8).prop_flat_map(
        |(r, c, b, fp4, m)| {
            let bs = [32, 64, 128, 256][b];
            let qt = if fp4 { QuantType::Fp4 } else { QuantType::Nf4 };
            (
                Just(r),
                Just(c),
                Just(bs),
                Just(qt),
                prop::collection::vec(-4.0f32..4.0, r * c),
                Just(m),
            )
        },
    )
}

fn tolerance(x: &[f32], w: &[f32], cols: usize, i: usize, j: usize) -> f32 {
    let s: f32 = (0..cols)
        .map(|k| (x[i * cols + k] * w[j * cols + k]).abs())
        .sum();
    1e-5 * s + 1e-6
}

/// The first element of `y = x · W` (`x` `[m, rows]`, `W` `[rows, cols]`) off the f64
/// product by more than 1e-5 of its terms' magnitude, described.
fn input_gradient_mismatch(
    x: &[f32],
    m: usize,
    w: &[f32],
    rows: usize,
    cols: usize,
    y: &[f32],
) -> Option<String> {
    for i in 0..m {
        for k in 0..cols {
            let (mut want, mut mag) = (0f64, 0f64);
            for j in 0..rows {
                let p = x[i * rows + j] as f64 * w[j * cols + k] as f64;
                want += p;
                mag += p.abs();
            }
            let got = y[i * cols + k] as f64;
            if (got - want).abs() > 1e-5 * mag + 1e-6 {
                return Some(format!("y[{i}][{k}] {got} vs {want}"));
            }
        }
    }
    None
}

/// The first element of `y = x · Wᵀ` (`x` `[m, cols]`, `W` `[rows, cols]`) off the
/// plain triple loop by more than [`tolerance`], described.
fn naive_mismatch(
    x: &[f32],
    m: usize,
    w: &[f32],
    rows: usize,
    cols: usize,
    y: &[f32],
) -> Option<String> {
    for i in 0..m {
        for j in 0..rows {
            let want: f32 = (0..cols).map(|k| x[i * cols + k] * w[j * cols + k]).sum();
            let got = y[i * rows + j];
            if (got - want).abs() > tolerance(x, w, cols, i, j) {
                return Some(format!("y[{i}][{j}] {got} vs {want}"));
            }
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn simd_agrees_with_scalar((rows, cols, bs, qt, data, m) in case()) {
        let bs = BlockSize::new(bs).unwrap();
        let (packed, absmax) = quantize_4bit(&data, bs, qt).unwrap();
        let w = Nf4Weight::new(&packed, &absmax, rows, cols, bs, qt).unwrap();
        let n = rows * cols;
        let mut reference = vec![0f32; n];
        kernels::dequantize_f32(&w, &mut reference, Isa::Scalar, 1).unwrap();
        let x: Vec<f32> = (0..m * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let mut y_ref = vec![0f32; m * rows];
        kernels::matmul_nt(&x, m, &w, &mut y_ref, Isa::Scalar, 1).unwrap();
        // The scalar path runs the same blocking as the SIMD ones: check it
        // against the plain triple loop over the dequantized weight first.
        if let Some(bad) = naive_mismatch(&x, m, &reference, rows, cols, &y_ref) {
            prop_assert!(false, "scalar {bad}");
        }
        for isa in Isa::all_available() {
            let mut out = vec![0f32; n];
            kernels::dequantize_f32(&w, &mut out, isa, 3).unwrap();
            prop_assert!(out.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?} dequant");
            let mut y = vec![0f32; m * rows];
            kernels::matmul_nt(&x, m, &w, &mut y, isa, 3).unwrap();
            let mut y32 = vec![0f32; m * rows];
            kernels::matmul_nt_f32(&x, m, &reference, rows, cols, &mut y32, isa, 2).unwrap();
            for i in 0..m {
                for j in 0..rows {
                    let t = tolerance(&x, &reference, cols, i, j);
                    let (a, b, c) = (y[i * rows + j], y_ref[i * rows + j], y32[i * rows + j]);
                    prop_assert!((a - b).abs() <= t, "{isa:?} fused y[{i}][{j}] {a} vs scalar {b}");
                    prop_assert!((c - b).abs() <= t, "{isa:?} f32 y[{i}][{j}] {c} vs scalar {b}");
                }
            }
        }
    }

    /// The input gradient `y = x · dequant(W)` (`x` `[m, rows]`): every ISA and thread
    /// count against the f64 product on the dequantized weight.
    #[test]
    fn input_gradient_product_matches_dense((rows, cols, bs, qt, data, m) in case()) {
        let bs = BlockSize::new(bs).unwrap();
        let (packed, absmax) = quantize_4bit(&data, bs, qt).unwrap();
        let w = Nf4Weight::new(&packed, &absmax, rows, cols, bs, qt).unwrap();
        let mut deq = vec![0f32; rows * cols];
        kernels::dequantize_f32(&w, &mut deq, Isa::Scalar, 1).unwrap();
        let x: Vec<f32> = (0..m * rows).map(|i| ((i * 41 % 103) as f32 - 51.0) / 26.0).collect();
        for isa in Isa::all_available() {
            for threads in [1, 3] {
                let mut y = vec![f32::NAN; m * cols];
                kernels::matmul_nn(&x, m, &w, &mut y, isa, threads).unwrap();
                let bad = input_gradient_mismatch(&x, m, &deq, rows, cols, &y);
                prop_assert!(bad.is_none(), "{isa:?}/{threads}: {}", bad.unwrap_or_default());
            }
        }
    }

    #[test]
    fn quantize_is_thread_invariant((_r, _c, bs, qt, data, t) in case()) {
        let bs = BlockSize::new(bs).unwrap();
        let (p1, a1) = quantize_4bit(&data, bs, qt).unwrap();
        let mut p2 = vec![0u8; packed_len(data.len())];
        let mut a2 = vec![0f32; bs.blocks(data.len())];
        quantize_4bit_into(&data, bs, qt, &mut p2, &mut a2, t).unwrap();
        prop_assert_eq!(p1, p2);
        prop_assert_eq!(a1, a2);
    }

    #[test]
    fn nf4_round_trip_error_within_bound((rows, cols, bs, _qt, data, _m) in case()) {
        let opts = QuantizeOptions { blocksize: BlockSize::new(bs).unwrap(), double_quant: false, ..Default::default() };
        let q = Quantized4bit::quantize(&data, &[rows, cols], SourceDtype::F32, opts).unwrap();
        let back = q.dequantize_f32();
        // Half the widest gap between neighbouring NF4 values, times the block absmax.
        let half_gap = NF4.windows(2).map(|w| w[1] - w[0]).fold(0.0f32, f32::max) / 2.0;
        for (blk, (x, y)) in data.chunks(bs).zip(back.chunks(bs)).enumerate() {
            let am = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (a, b) in x.iter().zip(y) {
                prop_assert!((a - b).abs() <= half_gap * am * (1.0 + 1e-6) + 1e-30, "block {blk}: {a} -> {b}");
            }
        }
        // Double quantization only perturbs the scales slightly.
        let opts = QuantizeOptions { double_quant: true, ..opts };
        let qd = Quantized4bit::quantize(&data, &[rows, cols], SourceDtype::F32, opts).unwrap();
        let plain = q.absmax_f32();
        let spread = plain.iter().fold(0.0f32, |m, v| m.max(*v)) - plain.iter().fold(f32::MAX, |m, v| m.min(*v));
        for (a, b) in plain.iter().zip(qd.absmax_f32()) {
            prop_assert!((a - b).abs() <= 0.02 * spread + 1e-6, "scale {a} -> {b}");
        }
    }
}

/// Many packed blocks, ragged last panels (1100 rows = 34 pairs of 16-column panels
/// and 12 columns), and (past 2^20 weights) a split over threads, for the row-dot
/// (m = 1) and the blocked (m = 9) paths.
#[test]
fn multi_tile_product_matches_scalar() -> Result<(), bioalign_quant::Error> {
    for m in [1, 9] {
        multi_tile(m)?;
    }
    Ok(())
}

fn multi_tile(m: usize) -> Result<(), bioalign_quant::Error> {
    let (rows, cols) = (1100, 1000);
    let data: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 700.0)
        .collect();
    let (packed, absmax) = quantize_4bit(&data, BlockSize::DEFAULT, QuantType::Nf4)?;
    let w = Nf4Weight::new(
        &packed,
        &absmax,
        rows,
        cols,
        BlockSize::DEFAULT,
        QuantType::Nf4,
    )?;
    let mut deq = vec![0f32; rows * cols];
    kernels::dequantize_f32(&w, &mut deq, Isa::Scalar, 1)?;
    let x: Vec<f32> = (0..m * cols)
        .map(|i| ((i * 31 % 97) as f32 - 48.0) / 50.0)
        .collect();
    let mut y_ref = vec![0f32; m * rows];
    kernels::matmul_nt(&x, m, &w, &mut y_ref, Isa::Scalar, 1)?;
    if let Some(bad) = naive_mismatch(&x, m, &deq, rows, cols, &y_ref) {
        panic!("scalar {bad}");
    }
    for isa in Isa::all_available() {
        for threads in [1, 2, 3] {
            let mut y = vec![0f32; m * rows];
            kernels::matmul_nt(&x, m, &w, &mut y, isa, threads)?;
            for i in 0..m {
                for j in 0..rows {
                    let t = tolerance(&x, &deq, cols, i, j);
                    let (a, b) = (y[i * rows + j], y_ref[i * rows + j]);
                    assert!(
                        (a - b).abs() <= t,
                        "{isa:?}/{threads}: y[{i}][{j}] {a} vs {b}"
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn shape_errors_are_reported() {
    let (packed, absmax) = quantize_4bit(&[0.5; 64], BlockSize::DEFAULT, QuantType::Nf4).unwrap();
    assert!(Nf4Weight::new(&packed, &absmax, 2, 33, BlockSize::DEFAULT, QuantType::Nf4).is_err());
    let w = Nf4Weight::new(&packed, &absmax, 2, 32, BlockSize::DEFAULT, QuantType::Nf4).unwrap();
    let mut y = vec![0f32; 2];
    assert!(kernels::matmul_nt(&[1.0; 31], 1, &w, &mut y, Isa::detect(), 1).is_err());
    // The input gradient takes `[m, rows]` and writes `[m, cols]`.
    let mut g = vec![0f32; 32];
    assert!(kernels::matmul_nn(&[1.0; 32], 1, &w, &mut g, Isa::detect(), 1).is_err());
    assert!(kernels::matmul_nn(&[1.0; 2], 1, &w, &mut y, Isa::detect(), 1).is_err());
    kernels::matmul_nn(&[1.0; 2], 1, &w, &mut g, Isa::detect(), 1).unwrap();
    let mut out = vec![0f32; 63];
    assert!(kernels::dequantize_f32(&w, &mut out, Isa::detect(), 1).is_err());
}

#[test]
fn input_gradient_spans_several_tiles() -> bioalign_quant::Result<()> {
    // rows 600 = two full 256-deep tiles and a partial one; cols 200 = three 64-wide
    // tiles and a partial one; m 9 = a 6-row micro-kernel and three single rows.
    let (rows, cols, m) = (600, 200, 9);
    let data: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 250.0)
        .collect();
    let (packed, absmax) = quantize_4bit(&data, BlockSize::DEFAULT, QuantType::Nf4)?;
    let w = Nf4Weight::new(
        &packed,
        &absmax,
        rows,
        cols,
        BlockSize::DEFAULT,
        QuantType::Nf4,
    )?;
    let mut deq = vec![0f32; rows * cols];
    kernels::dequantize_f32(&w, &mut deq, Isa::Scalar, 1)?;
    let x: Vec<f32> = (0..m * rows)
        .map(|i| ((i * 31 % 97) as f32 - 48.0) / 50.0)
        .collect();
    for isa in Isa::all_available() {
        for threads in [1, 2, 3] {
            let mut y = vec![f32::NAN; m * cols];
            kernels::matmul_nn(&x, m, &w, &mut y, isa, threads)?;
            if let Some(bad) = input_gradient_mismatch(&x, m, &deq, rows, cols, &y) {
                panic!("{isa:?}/{threads}: {bad}");
            }
        }
    }
    Ok(())
}

/// Shapes that cross every block boundary of the blocked product (rows of `x` past
/// one 120-row sweep and one 6-row micro-tile, output columns past a 16-column panel
/// and a 1024-column block, depth past a 288-deep block and off multiples of 8), and
/// products of one to three rows, for each weight source, ISA and thread count,
/// against the f64 product.
#[test]
fn blocked_products_match_f64_across_block_edges() {
    let bs = BlockSize::new(64).unwrap();
    for (m, rows, cols) in [
        (7, 33, 9),
        (80, 270, 520),
        (4, 129, 257),
        (151, 17, 64),
        (13, 2100, 40),
        // More rows than output columns: threads split the rows of `x`.
        (300, 40, 400),
        // ... with a part micro-panel at the end, and a projection to 8 features.
        (301, 40, 400),
        (700, 8, 640),
        // The input gradient over two threads' column ranges of a 288-wide weight:
        // 144 columns each, so AVX-512 dequantizes 128 straight into the panels and
        // copies the last 16 (first thread), or copies all (second thread, unaligned).
        (300, 40, 288),
        // One panel wide (a rank-16 LoRA product): `x` read unpacked on AVX-512, over
        // two depth blocks, a part micro-panel, and a part panel.
        (150, 16, 600),
        (9, 5, 300),
        // Few rows against a weight of whole 16-column panels (a LoRA gradient, `dB =
        // tᵀ · dU`): AVX-512 reads `[in, out]` weights in place, across depth blocks
        // (600) and 1024-column blocks (2048).
        (16, 1536, 150),
        (16, 576, 600),
        (20, 2048, 64),
        // Fewer than four rows: row dot products, or for `[in, out]` weights columns
        // streamed per thread (1100 × 300 splits over three threads, 2100 × 70 ends
        // in a part 16-column chunk).
        (1, 1100, 300),
        (3, 2100, 70),
        (2, 33, 9),
    ] {
        let (packed, absmax, deq) = nf4_pattern(rows, cols, bs);
        let w = Nf4Weight::new(&packed, &absmax, rows, cols, bs, QuantType::Nf4).unwrap();
        // `deq` as `[cols, rows]`: the `[in, out]` layout of `matmul_kn_f32`.
        let mut deq_t = vec![0f32; rows * cols];
        for j in 0..rows {
            for k in 0..cols {
                deq_t[k * rows + j] = deq[j * cols + k];
            }
        }
        let x: Vec<f32> = (0..m * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let xg: Vec<f32> = (0..m * rows)
            .map(|i| ((i * 41 % 103) as f32 - 51.0) / 26.0)
            .collect();
        for isa in Isa::all_available() {
            for threads in [1, 2, 3] {
                let what = format!("{m}x{rows}x{cols} {isa:?}/{threads}");
                let mut y = vec![f32::NAN; m * rows];
                kernels::matmul_nt(&x, m, &w, &mut y, isa, threads).unwrap();
                check_nt(&x, m, &deq_t, rows, cols, &y, &format!("nf4 {what}"));
                let mut y = vec![f32::NAN; m * rows];
                kernels::matmul_nt_f32(&x, m, &deq, rows, cols, &mut y, isa, threads).unwrap();
                check_nt(&x, m, &deq_t, rows, cols, &y, &format!("f32 {what}"));
                let mut y = vec![f32::NAN; m * rows];
                kernels::matmul_kn_f32(&x, m, &deq_t, cols, rows, &mut y, isa, threads).unwrap();
                check_nt(
                    &x,
                    m,
                    &deq_t,
                    rows,
                    cols,
                    &y,
                    &format!("f32 [in, out] {what}"),
                );
                let mut g = vec![f32::NAN; m * cols];
                kernels::matmul_nn(&xg, m, &w, &mut g, isa, threads).unwrap();
                let bad = input_gradient_mismatch(&xg, m, &deq, rows, cols, &g);
                assert!(bad.is_none(), "nn {what}: {}", bad.unwrap_or_default());
            }
        }
    }
}

/// The forward product's NF4 panels are dequantized from byte-transposed codes on
/// AVX-512 (whole 16-row panels of 32-aligned depth blocks), the f32 weight's panels
/// by transposing floats: both must hold the same values, so `x · Wᵀ` equals the
/// product with the dequantized weight bit for bit, on every ISA, for block sizes 32
/// to 256, widths that are and are not multiples of 32, and part panels.
#[test]
fn nf4_forward_panels_equal_the_dequantized_weights() {
    for (m, rows, cols, bs) in [
        (200, 48, 64, 32),
        (200, 40, 576, 64),
        (160, 33, 96, 128),
        (160, 64, 1536, 256),
        (160, 32, 100, 64),
        (170, 17, 288, 32),
    ] {
        let bs = BlockSize::new(bs).unwrap();
        let (packed, absmax, deq) = nf4_pattern(rows, cols, bs);
        let w = Nf4Weight::new(&packed, &absmax, rows, cols, bs, QuantType::Nf4).unwrap();
        let x: Vec<f32> = (0..m * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for isa in Isa::all_available() {
            for threads in [1, 2] {
                let mut y = vec![f32::NAN; m * rows];
                kernels::matmul_nt(&x, m, &w, &mut y, isa, threads).unwrap();
                let mut y32 = vec![f32::NAN; m * rows];
                kernels::matmul_nt_f32(&x, m, &deq, rows, cols, &mut y32, isa, threads).unwrap();
                let bad = y
                    .iter()
                    .zip(&y32)
                    .position(|(a, b)| a.to_bits() != b.to_bits());
                assert!(
                    bad.is_none(),
                    "{m}x{rows}x{cols} {isa:?}/{threads}: y[{}] nf4 {} vs f32 {}",
                    bad.unwrap(),
                    y[bad.unwrap()],
                    y32[bad.unwrap()]
                );
            }
        }
    }
}

/// A `[rows, cols]` NF4 weight quantized from a fixed pattern: its codes, its scales,
/// and its values as the scalar path dequantizes them.
fn nf4_pattern(rows: usize, cols: usize, bs: BlockSize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let data: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 300.0)
        .collect();
    let (packed, absmax) = quantize_4bit(&data, bs, QuantType::Nf4).unwrap();
    let w = Nf4Weight::new(&packed, &absmax, rows, cols, bs, QuantType::Nf4).unwrap();
    let mut deq = vec![0f32; rows * cols];
    kernels::dequantize_f32(&w, &mut deq, Isa::Scalar, 1).unwrap();
    (packed, absmax, deq)
}

/// `y = x · Wᵀ` within 1e-5 of each element's terms of the f64 product, with `W`
/// given as its `[cols, rows]` transpose `w_t`: the check of `input_gradient_mismatch`.
fn check_nt(x: &[f32], m: usize, w_t: &[f32], rows: usize, cols: usize, y: &[f32], what: &str) {
    let bad = input_gradient_mismatch(x, m, w_t, cols, rows, y);
    assert!(bad.is_none(), "{what}: {}", bad.unwrap_or_default());
}

#[test]
fn kn_product_rejects_wrong_lengths() {
    let x = vec![0f32; 6];
    let w = vec![0f32; 12];
    let mut y = vec![0f32; 8];
    // x [2, 3] · W [3, 4] = y [2, 4]: right; a weight of 11 values names the weight.
    kernels::matmul_kn_f32(&x, 2, &w, 3, 4, &mut y, Isa::detect(), 1).unwrap();
    let e = kernels::matmul_kn_f32(&x, 2, &w[..11], 3, 4, &mut y, Isa::detect(), 1).unwrap_err();
    assert!(e.to_string().contains("weight"), "{e}");
    let e = kernels::matmul_kn_f32(&x, 2, &w, 3, 4, &mut y[..7], Isa::detect(), 1).unwrap_err();
    assert!(e.to_string().contains("output"), "{e}");
}

/// Rows of whole 64-value chunks take AVX2's byte-plane GEMV (`vpshufb`
/// look-ups on a permuted `x`); block sizes below, at and above 64 cover one
/// scale per half chunk, per chunk, and per several rows.
#[test]
fn gemv_on_whole_chunks_matches_scalar() -> Result<(), bioalign_quant::Error> {
    for (cols, bs, qt) in [
        (64, 32, QuantType::Nf4),
        (192, 64, QuantType::Nf4),
        (576, 128, QuantType::Fp4),
        (128, 256, QuantType::Nf4),
        (640, 32, QuantType::Fp4),
        // The AVX-512 nibble-order GEMV: whole 128-value groups, a half group at
        // the end, blocks that start mid-group.
        (1024, 64, QuantType::Nf4),
        (320, 256, QuantType::Nf4),
        (448, 64, QuantType::Fp4),
    ] {
        let rows = 7;
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / (300.0 + (i / 97) as f32))
            .collect();
        let bs = BlockSize::new(bs)?;
        let (packed, absmax) = quantize_4bit(&data, bs, qt)?;
        let w = Nf4Weight::new(&packed, &absmax, rows, cols, bs, qt)?;
        let mut deq = vec![0f32; rows * cols];
        kernels::dequantize_f32(&w, &mut deq, Isa::Scalar, 1)?;
        for m in 1..=3 {
            let x: Vec<f32> = (0..m * cols)
                .map(|i| ((i * 31 % 97) as f32 - 48.0) / 50.0)
                .collect();
            let mut y_ref = vec![0f32; m * rows];
            kernels::matmul_nt(&x, m, &w, &mut y_ref, Isa::Scalar, 1)?;
            for isa in Isa::all_available() {
                let mut y = vec![f32::NAN; m * rows];
                kernels::matmul_nt(&x, m, &w, &mut y, isa, 2)?;
                for i in 0..m {
                    for j in 0..rows {
                        let t = tolerance(&x, &deq, cols, i, j);
                        let (a, b) = (y[i * rows + j], y_ref[i * rows + j]);
                        assert!(
                            (a - b).abs() <= t,
                            "{isa:?} cols {cols} bs {bs:?} {qt:?}: y[{i}][{j}] {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// Outputs of 2^20 values or more are written with non-temporal stores, whose
/// width depends on the output's alignment: every ISA, alignment and thread
/// count gives the scalar path's bits.
#[test]
fn streamed_dequantization_is_bit_exact() -> Result<(), bioalign_quant::Error> {
    let (rows, cols) = (1030, 1024 + 32);
    let data: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 333.0)
        .collect();
    let (packed, absmax) = quantize_4bit(&data, BlockSize::DEFAULT, QuantType::Nf4)?;
    let w = Nf4Weight::new(
        &packed,
        &absmax,
        rows,
        cols,
        BlockSize::DEFAULT,
        QuantType::Nf4,
    )?;
    let n = rows * cols;
    let mut reference = vec![0f32; n];
    kernels::dequantize_f32(&w, &mut reference, Isa::Scalar, 1)?;
    let mut buf = vec![0f32; n + 8];
    for isa in Isa::all_available() {
        for offset in [0, 1, 4, 8] {
            for threads in [1, 2, 3] {
                let out = &mut buf[offset..offset + n];
                out.fill(f32::NAN);
                kernels::dequantize_f32(&w, out, isa, threads)?;
                let bad = out
                    .iter()
                    .zip(&reference)
                    .position(|(a, b)| a.to_bits() != b.to_bits());
                assert_eq!(bad, None, "{isa:?} offset {offset} threads {threads}");
            }
        }
    }
    Ok(())
}

/// `kernels::product` (a fresh output, not zeroed first when the blocked kernel runs)
/// gives bit for bit what the six `matmul_*` functions write into a zeroed output, on
/// either side of the row-dot-product threshold and across threads, and rejects an
/// input of the wrong length naming it.
#[test]
fn product_into_a_fresh_vector_equals_the_matmul_functions() {
    use kernels::{Product, Q8Weight};
    let (rows, cols) = (70, 96);
    let bs = BlockSize::new(64).unwrap();
    let data: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 300.0)
        .collect();
    let (packed, absmax) = quantize_4bit(&data, bs, QuantType::Nf4).unwrap();
    let w = Nf4Weight::new(&packed, &absmax, rows, cols, bs, QuantType::Nf4).unwrap();
    let qs: Vec<i8> = (0..rows * cols).map(|i| (i * 37 % 255) as i8).collect();
    let sc: Vec<f32> = (0..rows * cols / 32)
        .map(|i| 0.01 + i as f32 * 1e-4)
        .collect();
    let q = Q8Weight::new(&qs, &sc, rows, cols).unwrap();
    for isa in Isa::all_available() {
        for (m, threads) in [(1, 1), (3, 2), (4, 1), (150, 2), (151, 3)] {
            let xi: Vec<f32> = (0..m * cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let xo: Vec<f32> = (0..m * rows)
                .map(|i| ((i * 41 % 103) as f32 - 51.0) / 26.0)
                .collect();
            // (product, its input, the same product through a `matmul_*` function).
            type Old<'a> = Box<dyn Fn(&mut [f32]) -> bioalign_quant::Result<()> + 'a>;
            let cases: Vec<(&str, Product<'_>, &[f32], usize, Old<'_>)> = vec![
                (
                    "nt",
                    Product::Nt(w),
                    &xi,
                    rows,
                    Box::new(|y| kernels::matmul_nt(&xi, m, &w, y, isa, threads)),
                ),
                (
                    "nn",
                    Product::Nn(w),
                    &xo,
                    cols,
                    Box::new(|y| kernels::matmul_nn(&xo, m, &w, y, isa, threads)),
                ),
                (
                    "nt f32",
                    Product::NtF32 {
                        w: &data,
                        rows,
                        cols,
                    },
                    &xi,
                    rows,
                    Box::new(|y| {
                        kernels::matmul_nt_f32(&xi, m, &data, rows, cols, y, isa, threads)
                    }),
                ),
                (
                    "kn f32",
                    Product::KnF32 {
                        w: &data,
                        cols: rows,
                        n: cols,
                    },
                    &xo,
                    cols,
                    Box::new(|y| {
                        kernels::matmul_kn_f32(&xo, m, &data, rows, cols, y, isa, threads)
                    }),
                ),
                (
                    "nt q8",
                    Product::NtQ8(q),
                    &xi,
                    rows,
                    Box::new(|y| kernels::matmul_nt_q8(&xi, m, &q, y, isa, threads)),
                ),
                (
                    "nn q8",
                    Product::NnQ8(q),
                    &xo,
                    cols,
                    Box::new(|y| kernels::matmul_nn_q8(&xo, m, &q, y, isa, threads)),
                ),
            ];
            for (name, p, x, out, old) in cases {
                let got = kernels::product(x, m, p, isa, threads).unwrap();
                let mut want = vec![0f32; m * out];
                old(&mut want).unwrap();
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{name} {m} rows {isa:?}/{threads}"
                );
                let e = kernels::product(&x[..x.len() - 1], m, p, isa, threads).unwrap_err();
                assert!(e.to_string().contains("input"), "{name}: {e}");
            }
        }
    }
}
