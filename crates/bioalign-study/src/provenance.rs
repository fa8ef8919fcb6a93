//! Provenance of a `reproduce` run: what went in (data card, model file hashes, every
//! flag, the seed, the library version) and what each stage cost (wall time, peak
//! resident memory). Written into `report.json` and `report.md`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, file_err};

/// A file and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    /// The path as found.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
}

/// SHA-256 of a file's bytes, streamed.
pub fn sha256_file(path: &Path) -> Result<FileHash> {
    let mut f =
        std::fs::File::open(path).map_err(|e| file_err(path, format!("cannot open: {e}")))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .map_err(|e| file_err(path, format!("cannot read: {e}")))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        bytes += k as u64;
    }
    let sha256 = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(FileHash {
        path: path.display().to_string(),
        bytes,
        sha256,
    })
}

/// The files that make up a model: the file itself (`.gguf`), or a Hugging Face
/// folder's weights, configs and tokenizer files (`*.safetensors`, `*.json`,
/// `*.gguf`, `*.model`, `*.txt`), sorted by name, each hashed.
pub fn model_files(model: &Path) -> Result<Vec<FileHash>> {
    if model.is_file() {
        return Ok(vec![sha256_file(model)?]);
    }
    let entries =
        std::fs::read_dir(model).map_err(|e| file_err(model, format!("cannot list: {e}")))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|x| {
                    matches!(
                        x.to_string_lossy().as_ref(),
                        "safetensors" | "json" | "gguf" | "model" | "txt"
                    )
                })
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(file_err(
            model,
            "no model files (.gguf, .safetensors, .json)",
        ));
    }
    paths.iter().map(|p| sha256_file(p)).collect()
}

/// Peak resident memory of this process (`VmHWM` in `/proc/self/status`; Linux only).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Resets the peak resident memory to the current one (`echo 5 > /proc/self/clear_refs`),
/// so the next [`peak_rss_bytes`] is the peak since now. False where the kernel refuses
/// (then peaks are the process's since it started).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}

/// One pipeline stage as run (or found finished and skipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// Stage name (`prepare`, `eval-base`, ...).
    pub name: String,
    /// Wall time of the run that finished it, seconds.
    pub wall_s: f64,
    /// Peak resident memory during the stage (or of the process up to its end when the
    /// peak could not be reset: see `peak_rss_is_per_stage`).
    pub peak_rss_bytes: Option<u64>,
    /// True if the peak was reset at the stage's start.
    pub peak_rss_is_per_stage: bool,
    /// The files or folders it produced (relative to the run folder).
    pub outputs: Vec<String>,
    /// Seconds since the Unix epoch when it finished.
    pub finished_unix_s: u64,
}

/// Everything needed to say how a report's numbers were obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// `bioalign-study <version>`.
    pub tool: String,
    /// Every flag as resolved (defaults filled in).
    pub flags: BTreeMap<String, String>,
    /// The master seed.
    pub seed: u64,
    /// The model files with their SHA-256.
    pub model_files: Vec<FileHash>,
    /// `dataset_card.json` of the prepared data, as written by bioalign-ctd.
    pub dataset_card: Option<serde_json::Value>,
    /// The stages in order.
    pub stages: Vec<StageRecord>,
    /// Sum of the stages' wall times, seconds.
    pub total_wall_s: f64,
    /// `os/arch, N CPUs`.
    pub host: String,
}

/// `os/arch, N CPUs` of this machine.
pub fn host_description() -> String {
    format!(
        "{}/{}, {} CPUs",
        std::env::consts::OS,
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc.txt");
        std::fs::write(&p, b"abc").unwrap();
        let h = sha256_file(&p).unwrap();
        // FIPS 180-2 test vector
        assert_eq!(
            h.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.bytes, 3);
        let files = model_files(dir.path()).unwrap();
        assert_eq!(files, vec![h]);
        assert!(model_files(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn peak_rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() > 1 << 20);
        }
    }
}
