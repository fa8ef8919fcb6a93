//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The committed fixtures folder.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The SmolLM2 GGUF, or `None` after a loud message when `datasets/fetch.sh models` has not
/// been run (CI runs it first, so there the tests run).
pub fn smollm2() -> Option<PathBuf> {
    let p = bioalign_models::smollm2_gguf_path();
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "\n!!!!! SKIPPING: {} is absent; run `bash datasets/fetch.sh models` !!!!!\n",
            p.display()
        );
        None
    }
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
