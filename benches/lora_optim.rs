//! One optimizer step over the LoRA tensors of SmolLM2-135M (r 16 on q, k, v, o,
//! gate, up, down of 30 layers: 420 tensors, 4.88M parameters): f32 AdamW and
//! bitsandbytes-style 8-bit AdamW, both over plain f32 slices.
//!
//! `cargo bench -p bioalign-benches --bench lora_optim`; the same step in torch and
//! bitsandbytes: `scripts/bench/lora_optim_bnb.py` (see docs/lora.md).

// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;

use bioalign_lora::optim::{AdamWConfig, Optimizer, OptimizerKind};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn smollm2_lora_sizes() -> Vec<usize> {
    let (h, i, kv, r) = (576, 1536, 192, 16);
    let mut sizes = Vec::new();
    for _ in 0..30 {
        for (inp, out) in [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)] {
            sizes.push(r * inp);
            sizes.push(out * r);
        }
    }
    sizes
}

fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 - 0.5) * 0.02
        })
        .collect()
}

fn optim_step(c: &mut Criterion) {
    let sizes = smollm2_lora_sizes();
    let total: usize = sizes.iter().sum();
    let grads: Vec<Vec<f32>> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| pseudo(n, k as u32 + 1))
        .collect();
    let mut g = c.benchmark_group("lora_optim_step_smollm2_r16");
    g.sample_size(20);
    g.throughput(Throughput::Elements(total as u64));
    for (name, kind) in [
        ("adamw", OptimizerKind::AdamW),
        ("adamw8bit", OptimizerKind::AdamW8bit),
    ] {
        let mut params: Vec<Vec<f32>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| pseudo(n, 1000 + k as u32))
            .collect();
        let mut opt = Optimizer::new(kind, AdamWConfig::default(), &sizes);
        g.bench_function(name, |b| {
            b.iter(|| {
                opt.step(black_box(2e-4), &mut params, black_box(&grads));
            })
        });
        black_box(&params);
    }
    g.finish();
}

criterion_group!(benches, optim_step);
criterion_main!(benches);
