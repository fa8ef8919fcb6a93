//! bioalign-quant kernels on the layer shapes of SmolLM2-135M and Llama-3-8B,
//! each beside the f32 operation of the same shape on the same backend.
//!
//! ```text
//! cargo bench -p bioalign-benches --bench quant
//! ```
//! The side-by-side bitsandbytes / torch figures come from
//! `scripts/bench/quant_bnb.py`; both are collected in docs/benchmarks-quant.md.

// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bioalign_quant::blockwise::{packed_len, quantize_4bit, quantize_4bit_into};
use bioalign_quant::kernels::{self, Isa, Nf4Weight};
use bioalign_quant::{BlockSize, NestedScales, QuantType};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// `(label, out_features, in_features)`.
const SHAPES: [(&str, usize, usize); 4] = [
    ("smollm2_q_576x576", 576, 576),
    ("smollm2_gate_1536x576", 1536, 576),
    ("llama3_q_4096x4096", 4096, 4096),
    ("llama3_gate_14336x4096", 14336, 4096),
];

fn weights(n: usize) -> Vec<f32> {
    // Deterministic, roughly normal-looking values (sum of three uniforms).
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut u = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..n).map(|_| (u() + u() + u()) * 0.04).collect()
}

fn config(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group("quant");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g
}

fn memcpy(c: &mut Criterion) {
    let mut g = config(c);
    let n = 64 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    g.throughput(Throughput::Bytes(2 * n as u64));
    g.bench_function("memcpy_64MiB", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)));
    });
    // The machine's copy ceiling for outputs the size of a Llama-3 MLP weight,
    // split over every core as the dequantization is.
    let n = 256 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    g.throughput(Throughput::Bytes(2 * n as u64));
    g.bench_function("memcpy_parallel_256MiB", |b| {
        b.iter(|| {
            let per = n.div_ceil(threads);
            std::thread::scope(|s| {
                for (d, c) in dst.chunks_mut(per).zip(black_box(&src).chunks(per)) {
                    s.spawn(move || d.copy_from_slice(c));
                }
            });
        });
    });
    g.finish();
}

fn dequantize_and_quantize(c: &mut Criterion) {
    let isa = Isa::detect();
    let mut g = config(c);
    for (label, rows, cols) in SHAPES {
        let n = rows * cols;
        let w = weights(n);
        let (packed, absmax) =
            quantize_4bit(&w, BlockSize::DEFAULT, QuantType::Nf4).expect("quantize");
        let nw = Nf4Weight::new(
            &packed,
            &absmax,
            rows,
            cols,
            BlockSize::DEFAULT,
            QuantType::Nf4,
        )
        .expect("weight");
        let mut out = vec![0f32; n];
        // Bytes moved: packed codes + scales read, f32 written.
        g.throughput(Throughput::Bytes(
            (packed.len() + 4 * absmax.len() + 4 * n) as u64,
        ));
        g.bench_function(BenchmarkId::new("dequantize_f32", label), |b| {
            b.iter(|| kernels::dequantize_f32(black_box(&nw), &mut out, isa, 0).expect("dequant"));
        });
        if n < 1 << 20 {
            // Outputs that stay in L2: one thread against that thread's store
            // ceilings for the same output (a fill, which writes without reading,
            // and a copy of an f32 tensor that size).
            g.bench_function(BenchmarkId::new("dequantize_f32_1thread", label), |b| {
                b.iter(|| {
                    kernels::dequantize_f32(black_box(&nw), &mut out, isa, 1).expect("dequant")
                });
            });
            g.bench_function(BenchmarkId::new("fill_f32_1thread", label), |b| {
                b.iter(|| black_box(&mut out).fill(black_box(0.5)));
            });
            let src = vec![0.25f32; n];
            g.bench_function(BenchmarkId::new("copy_f32_1thread", label), |b| {
                b.iter(|| black_box(&mut out).copy_from_slice(black_box(&src)));
            });
        }
        g.throughput(Throughput::Elements(n as u64));
        let mut p = vec![0u8; packed_len(n)];
        let mut a = vec![0f32; BlockSize::DEFAULT.blocks(n)];
        g.bench_function(BenchmarkId::new("quantize_nf4_double", label), |b| {
            b.iter(|| {
                quantize_4bit_into(
                    black_box(&w),
                    BlockSize::DEFAULT,
                    QuantType::Nf4,
                    &mut p,
                    &mut a,
                    0,
                )
                .expect("q");
                black_box(NestedScales::compress(&a))
            });
        });
    }
    g.finish();
}

fn products(c: &mut Criterion) {
    let isa = Isa::detect();
    let mut g = config(c);
    for (label, rows, cols) in SHAPES {
        let n = rows * cols;
        let w = weights(n);
        let (packed, absmax) =
            quantize_4bit(&w, BlockSize::DEFAULT, QuantType::Nf4).expect("quantize");
        let nw = Nf4Weight::new(
            &packed,
            &absmax,
            rows,
            cols,
            BlockSize::DEFAULT,
            QuantType::Nf4,
        )
        .expect("weight");
        for m in [1usize, 512] {
            if m == 512 && rows > 4096 {
                continue; // 60 GFLOP per call: too slow for a 2-core run.
            }
            let x = weights(m * cols);
            let mut y = vec![0f32; m * rows];
            g.throughput(Throughput::Elements((2 * m * n) as u64));
            let name = if m == 1 { "gemv" } else { "gemm512" };
            g.bench_function(BenchmarkId::new(format!("{name}_nf4_fused"), label), |b| {
                b.iter(|| kernels::matmul_nt(black_box(&x), m, &nw, &mut y, isa, 0).expect("mm"));
            });
            g.bench_function(BenchmarkId::new(format!("{name}_f32"), label), |b| {
                b.iter(|| {
                    kernels::matmul_nt_f32(black_box(&x), m, &w, rows, cols, &mut y, isa, 0)
                        .expect("mm")
                });
            });
            if m == 1 && rows * cols < 1 << 21 {
                // One core, no hand-off to the pool: the kernels alone.
                g.bench_function(BenchmarkId::new("gemv_nf4_fused_1thread", label), |b| {
                    b.iter(|| {
                        kernels::matmul_nt(black_box(&x), m, &nw, &mut y, isa, 1).expect("mm")
                    });
                });
                g.bench_function(BenchmarkId::new("gemv_f32_1thread", label), |b| {
                    b.iter(|| {
                        kernels::matmul_nt_f32(black_box(&x), m, &w, rows, cols, &mut y, isa, 1)
                            .expect("mm")
                    });
                });
            }
        }
    }
    g.finish();
}

/// The input gradient of a frozen NF4 layer in training, `dX = dY · dequant(W)`
/// (`dY` `[256, out]`: batch 2 × 128 tokens): the fused kernel against what burn-flex
/// did before it, dequantizing the whole weight and calling its matmul (gemm).
fn input_gradient(c: &mut Criterion) {
    use burn::tensor::{Tensor, TensorData};
    use burn_flex::{Flex, FlexDevice};
    let isa = Isa::detect();
    let mut g = config(c);
    let m = 256;
    for (label, rows, cols) in &SHAPES[..3] {
        let (rows, cols) = (*rows, *cols);
        let n = rows * cols;
        let w = weights(n);
        let (packed, absmax) =
            quantize_4bit(&w, BlockSize::DEFAULT, QuantType::Nf4).expect("quantize");
        let nw = Nf4Weight::new(
            &packed,
            &absmax,
            rows,
            cols,
            BlockSize::DEFAULT,
            QuantType::Nf4,
        )
        .expect("weight");
        let dy = weights(m * rows);
        let mut dx = vec![0f32; m * cols];
        g.throughput(Throughput::Elements((2 * m * n) as u64));
        g.bench_function(BenchmarkId::new("input_grad256_nf4_fused", label), |b| {
            b.iter(|| kernels::matmul_nn(black_box(&dy), m, &nw, &mut dx, isa, 0).expect("mm"));
        });
        let d = FlexDevice;
        let dyt = Tensor::<Flex, 2>::from_data(TensorData::new(dy.clone(), [m, rows]), &d);
        g.bench_function(
            BenchmarkId::new("input_grad256_dequant_flex_matmul", label),
            |b| {
                b.iter(|| {
                    let mut deq = vec![0f32; n];
                    kernels::dequantize_f32(&nw, &mut deq, isa, 0).expect("dequant");
                    let wt = Tensor::<Flex, 2>::from_data(TensorData::new(deq, [rows, cols]), &d);
                    black_box(dyt.clone().matmul(wt).into_data())
                });
            },
        );
    }
    g.finish();
}

/// A dense f32 projection of the inference forward, `[1024, in] · [in, out]` (a
/// 32 × 32-token batch; the weight in burn's `[in, out]` layout): burn-flex's matmul
/// (the `gemm` crate) against the blocked kernel the models crate uses on burn-flex.
fn dense_forward(c: &mut Criterion) {
    use burn::tensor::{Tensor, TensorData};
    use burn_flex::{Flex, FlexDevice};
    let isa = Isa::detect();
    let mut g = config(c);
    let m = 1024;
    // SmolLM2's projections and its tied LM head.
    let shapes = [
        ("smollm2_q_576x576", 576, 576),
        ("smollm2_kv_192x576", 192, 576),
        ("smollm2_gate_1536x576", 1536, 576),
        ("smollm2_down_576x1536", 576, 1536),
        ("smollm2_lm_head_49152x576", 49152, 576),
    ];
    let d = FlexDevice;
    for (label, rows, cols) in shapes {
        let w = weights(rows * cols);
        let x = weights(m * cols);
        let mut y = vec![0f32; m * rows];
        g.throughput(Throughput::Elements((2 * m * rows * cols) as u64));
        g.bench_function(BenchmarkId::new("dense1024_blocked", label), |b| {
            b.iter(|| {
                kernels::matmul_kn_f32(black_box(&x), m, &w, cols, rows, &mut y, isa, 0)
                    .expect("mm")
            });
        });
        // The same shape as a bf16 weight (`[out, in]`): f32 sums over the widened
        // values, and the AVX-512 BF16 dot product of x rounded to bf16.
        let wb = bioalign_quant::Bf16Packed::from_f32(&w, rows, cols).expect("bf16");
        g.bench_function(BenchmarkId::new("dense1024_bf16", label), |b| {
            b.iter(|| black_box(wb.matmul_nt(black_box(&x), m).expect("mm")));
        });
        g.bench_function(BenchmarkId::new("dense1024_bf16_dot", label), |b| {
            b.iter(|| black_box(wb.matmul_nt_dot(black_box(&x), m).expect("mm")));
        });
        let xt = Tensor::<Flex, 2>::from_data(TensorData::new(x.clone(), [m, cols]), &d);
        let wt = Tensor::<Flex, 2>::from_data(TensorData::new(w.clone(), [cols, rows]), &d);
        g.bench_function(BenchmarkId::new("dense1024_flex_matmul", label), |b| {
            b.iter(|| black_box(xt.clone().matmul(wt.clone())));
        });
    }
    g.finish();
}

/// One decoding step's projections of SmolLM2-135M at batch 1: the 7 GEMVs of each
/// of its 30 layers, each on its own weight, as generation runs them. The f32
/// weights (425 MB) do not fit any cache, so every step streams them from memory;
/// the NF4 ones move 7x fewer bytes, the bf16 ones half. The per-shape GEMVs above run one weight
/// again and again, which then sits in L2/L3.
fn decode_step(c: &mut Criterion) {
    let isa = Isa::detect();
    let mut g = config(c);
    let (hidden, kv, inter, layers) = (576, 192, 1536, 30);
    let shapes = [
        (hidden, hidden), // q
        (kv, hidden),     // k
        (kv, hidden),     // v
        (hidden, hidden), // o
        (inter, hidden),  // gate
        (inter, hidden),  // up
        (hidden, inter),  // down
    ];
    let all: Vec<(usize, usize)> = (0..layers).flat_map(|_| shapes).collect();
    let total: usize = all.iter().map(|(r, c)| r * c).sum();
    let flat = weights(total);
    let (packed, absmax) =
        quantize_4bit(&flat, BlockSize::DEFAULT, QuantType::Nf4).expect("quantize");
    // Each projection's weight, as views into the flat buffers, built once.
    let bs = BlockSize::DEFAULT.get();
    let mut start = 0;
    let mut nf4 = Vec::with_capacity(all.len());
    let mut dense = Vec::with_capacity(all.len());
    for &(rows, cols) in &all {
        let n = rows * cols;
        nf4.push(
            Nf4Weight::new(
                &packed[start / 2..(start + n) / 2],
                &absmax[start / bs..(start + n) / bs],
                rows,
                cols,
                BlockSize::DEFAULT,
                QuantType::Nf4,
            )
            .expect("weight"),
        );
        dense.push((&flat[start..start + n], rows, cols));
        start += n;
    }
    let x = weights(inter);
    let mut y = vec![0f32; inter];
    g.throughput(Throughput::Elements(2 * total as u64));
    g.bench_function("decode_step_nf4_fused/smollm2_135m", |b| {
        b.iter(|| {
            for w in &nf4 {
                let (x, y) = (&x[..w.cols()], &mut y[..w.rows()]);
                kernels::matmul_nt(black_box(x), 1, w, y, isa, 0).expect("mm");
            }
        });
    });
    // The same weights in bf16 (half the f32 bytes), f32 sums.
    let bf16: Vec<bioalign_quant::Bf16Packed> = dense
        .iter()
        .map(|&(w, rows, cols)| bioalign_quant::Bf16Packed::from_f32(w, rows, cols).expect("bf16"))
        .collect();
    g.bench_function("decode_step_bf16/smollm2_135m", |b| {
        b.iter(|| {
            for w in &bf16 {
                black_box(w.matmul_nt(black_box(&x[..w.cols()]), 1).expect("mm"));
            }
        });
    });
    // The same bf16 weights with `x` rounded to bf16 too (`vdpbf16ps` where present).
    g.bench_function("decode_step_bf16_dot/smollm2_135m", |b| {
        b.iter(|| {
            for w in &bf16 {
                black_box(w.matmul_nt_dot(black_box(&x[..w.cols()]), 1).expect("mm"));
            }
        });
    });
    g.bench_function("decode_step_f32/smollm2_135m", |b| {
        b.iter(|| {
            for &(w, rows, cols) in &dense {
                let (x, y) = (&x[..cols], &mut y[..rows]);
                kernels::matmul_nt_f32(black_box(x), 1, w, rows, cols, y, isa, 0).expect("mm");
            }
        });
    });
    g.finish();
}

/// SmolLM2's tied LM head `[49152, 576]` kept in GGUF's 8-bit `Q8_0` form (30 MB)
/// against the same values as an f32 table (113 MB), through the same kernels: batch 1
/// (a generation step), 1,024 rows (a 32 × 32 forward) and the input gradient at 256
/// rows (training's supervised positions).
fn lm_head_q8(c: &mut Criterion) {
    use bioalign_quant::kernels::{Q8_BLOCK, Q8Weight};
    let isa = Isa::detect();
    let mut g = config(c);
    let (rows, cols) = (49152, 576);
    let w = weights(rows * cols);
    let mut qs = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(w.len() / Q8_BLOCK);
    for b in w.chunks_exact(Q8_BLOCK) {
        let d = b.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        scales.push(d);
        qs.extend(
            b.iter()
                .map(|v| if d == 0.0 { 0 } else { (v / d).round() as i8 }),
        );
    }
    let q8 = Q8Weight::new(&qs, &scales, rows, cols).expect("q8");
    let dense: Vec<f32> = qs
        .iter()
        .enumerate()
        .map(|(i, &q)| scales[i / Q8_BLOCK] * f32::from(q))
        .collect();
    let label = "smollm2_lm_head_49152x576";
    for m in [1usize, 1024] {
        let x = weights(m * cols);
        let mut y = vec![0f32; m * rows];
        g.throughput(Throughput::Elements((2 * m * rows * cols) as u64));
        let name = if m == 1 { "gemv" } else { "gemm1024" };
        g.bench_function(BenchmarkId::new(format!("{name}_q8"), label), |b| {
            b.iter(|| kernels::matmul_nt_q8(black_box(&x), m, &q8, &mut y, isa, 0).expect("mm"));
        });
        g.bench_function(BenchmarkId::new(format!("{name}_f32"), label), |b| {
            b.iter(|| {
                kernels::matmul_nt_f32(black_box(&x), m, &dense, rows, cols, &mut y, isa, 0)
                    .expect("mm")
            });
        });
    }
    let m = 256;
    let dy = weights(m * rows);
    let mut dx = vec![0f32; m * cols];
    g.throughput(Throughput::Elements((2 * m * rows * cols) as u64));
    g.bench_function(BenchmarkId::new("input_grad256_q8", label), |b| {
        b.iter(|| kernels::matmul_nn_q8(black_box(&dy), m, &q8, &mut dx, isa, 0).expect("mm"));
    });
    g.bench_function(BenchmarkId::new("input_grad256_f32", label), |b| {
        b.iter(|| {
            kernels::matmul_kn_f32(black_box(&dy), m, &dense, rows, cols, &mut dx, isa, 0)
                .expect("mm")
        });
    });
    g.finish();
}

criterion_group!(
    benches,
    decode_step,
    lm_head_q8,
    memcpy,
    dequantize_and_quantize,
    products,
    input_gradient,
    dense_forward
);
criterion_main!(benches);
