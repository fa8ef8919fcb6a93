//! CTD dataset builder on the real curated file (34,222 rows, 2.6 MB), found
//! through `BIOALIGN_DATA_MIRROR`: the reader alone, the whole build (reader,
//! filter, uniform negatives, shuffle, both splits, statistics) and the build
//! with every output written (Parquet, CSV, card, five PNG plots).
//!
//! `cargo bench -p bioalign-benches --bench ctd`; the 5-million-row streaming
//! figures come from `examples/ctd_stream.rs` (see docs/benchmarks-ctd.md).

// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;

use bioalign_ctd::{
    CtdReader, CtdRecord, PrepareConfig, ReadOptions, SamplerKind, prepare, write_outputs,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn curated(c: &mut Criterion) {
    let path = bioalign_io::data_mirror().join("ctd/CTD_curated_genes_diseases.csv");
    let bytes = std::fs::metadata(&path)
        .expect("curated CTD file in the data mirror")
        .len();
    let mut g = c.benchmark_group("ctd_curated");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("read", |b| {
        b.iter(|| {
            let mut r = CtdReader::open(black_box(&path), ReadOptions::default()).expect("open");
            let mut rec = CtdRecord::default();
            let mut n = 0u64;
            while r.read_record(&mut rec).expect("record") {
                n += 1;
            }
            black_box(n)
        })
    });
    for kind in [
        SamplerKind::Uniform,
        SamplerKind::DegreeMatched,
        SamplerKind::CorruptOneSide,
    ] {
        let cfg = PrepareConfig {
            negatives: kind,
            ..Default::default()
        };
        g.bench_function(format!("prepare_{kind}"), |b| {
            b.iter(|| black_box(prepare(black_box(&path), &cfg, |_, _| {}).expect("prepare")))
        });
    }
    let out = std::env::temp_dir().join(format!("bioalign-bench-ctd-{}", std::process::id()));
    let cfg = PrepareConfig::default();
    g.bench_function("prepare_and_write_all_outputs", |b| {
        b.iter(|| {
            let p = prepare(black_box(&path), &cfg, |_, _| {}).expect("prepare");
            black_box(write_outputs(&p, &out).expect("write"))
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&out);
}

criterion_group!(benches, curated);
criterion_main!(benches);
