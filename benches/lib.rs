//! Criterion benchmarks for the BioAlign crates; see the `[[bench]]` entries in
//! this package's `Cargo.toml` (`cargo bench -p bioalign-benches`).
