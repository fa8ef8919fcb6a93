//! Set-up shared by the SmolLM2 integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// SmolLM2-135M-Instruct and a file under `BIOALIGN_DATA_MIRROR` (`rel`), or `None`
/// after a loud message when either is absent (CI fetches both first, so there the
/// tests run).
pub fn smollm2_and(rel: &str) -> Option<(PathBuf, PathBuf)> {
    let model = bioalign_models::smollm2_gguf_path();
    let data = bioalign_io::data_mirror().join(rel);
    for p in [&model, &data] {
        if !p.exists() {
            eprintln!(
                "\n!!!!! SKIPPING: {} is absent; run `bash datasets/fetch.sh` / set BIOALIGN_DATA_MIRROR !!!!!\n",
                p.display()
            );
            return None;
        }
    }
    Some((model, data))
}

/// SmolLM2 and the reference's test split (`seed-splits/test_pairs.csv`).
pub fn smollm2_and_test_pairs() -> Option<(PathBuf, PathBuf)> {
    smollm2_and("seed-splits/test_pairs.csv")
}

/// A `prepare_data`-like folder holding `train.parquet` with the first `n` rows of `csv`.
pub fn data_folder(csv: &Path, n: usize, dir: &Path) -> bioalign_study::Result<()> {
    let rows = bioalign_ctd::read_csv(csv)?;
    let picked: Vec<&bioalign_ctd::Example> = rows.iter().take(n).collect();
    bioalign_ctd::write_parquet(&dir.join("train.parquet"), &picked)?;
    Ok(())
}
