//! Thin command-line binaries over the BioAlign crates; see the `[[example]]`
//! entries in this package's `Cargo.toml`. The library part is empty on purpose:
//! logic lives in the `bioalign-*` crates.
