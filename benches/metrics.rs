//! bioalign-metrics against the reference's scikit-learn code
//! (`scripts/bench/metrics_sklearn.py` builds the same data and times it).
//!
//! - `kg_separation/13689x4096`: KG separation at the reference test-split size.
//! - `suite_reference/500x4096`: what the study computed per model (KG
//!   separation, 70/30 logistic-regression probe, silhouette of a 2-D t-SNE of
//!   the first 400 rows).
//! - `suite_full/500x4096`: the whole suite with cross-validation, raw and PCA
//!   silhouettes and 1000-resample bootstrap intervals.
//!
//! Data: `x[i, j] = u(i * d + j) - 0.5 + 0.1 + 0.05 * y_i * [j < 64]`, `u` the
//! top 53 bits of splitmix64 as a float in [0, 1), `y_i` the top bit of
//! splitmix64(10^9 + 7 + i); computed in f64, stored as f32. The Python script
//! builds the identical array.

// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use bioalign_metrics::{SuiteConfig, evaluate, kg_separation};
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use ndarray::Array2;

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The benchmark data shared with `scripts/bench/metrics_sklearn.py`.
fn synthetic(n: usize, d: usize) -> (Array2<f32>, Vec<usize>) {
    let labels: Vec<usize> = (0..n)
        .map(|i| (splitmix64(1_000_000_007 + i as u64) >> 63) as usize)
        .collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        let u = (splitmix64((i * d + j) as u64) >> 11) as f64 / (1u64 << 53) as f64;
        let shift = if j < 64 { 0.05 * labels[i] as f64 } else { 0.0 };
        (u - 0.5 + 0.1 + shift) as f32
    });
    (x, labels)
}

fn kg(c: &mut Criterion) {
    let (n, d) = (13_689, 4_096);
    let (x, labels) = synthetic(n, d);
    let s = kg_separation(x.view(), &labels).expect("valid input");
    println!("kg_separation {n}x{d}: value {:.9}", s.separation);
    let mut g = c.benchmark_group("kg_separation");
    g.sample_size(20);
    g.throughput(Throughput::Elements((n * d) as u64));
    g.bench_with_input(
        BenchmarkId::from_parameter(format!("{n}x{d}")),
        &x,
        |b, x| {
            b.iter(|| {
                black_box(
                    kg_separation(black_box(x.view()), black_box(&labels)).expect("valid input"),
                )
            })
        },
    );
    g.finish();
}

fn suite(c: &mut Criterion) {
    let (n, d) = (500, 4_096);
    let (x, labels) = synthetic(n, d);
    let r = evaluate(x.view(), &labels, &SuiteConfig::reference()).expect("valid input");
    println!(
        "suite_reference {n}x{d}: kg {:.6}, probe accuracy {:.6}, t-SNE silhouette {:.6}",
        r.kg_separation.separation, r.probe.accuracy, r.silhouette_tsne
    );
    for (name, cfg) in [
        ("suite_reference", SuiteConfig::reference()),
        ("suite_full", SuiteConfig::default()),
    ] {
        let mut g = c.benchmark_group(name);
        g.sample_size(10);
        g.throughput(Throughput::Elements((n * d) as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{n}x{d}")),
            &x,
            |b, x| {
                b.iter(|| {
                    black_box(
                        evaluate(black_box(x.view()), black_box(&labels), &cfg)
                            .expect("valid input"),
                    )
                })
            },
        );
        g.finish();
    }
}

criterion_group!(benches, kg, suite);
criterion_main!(benches);
