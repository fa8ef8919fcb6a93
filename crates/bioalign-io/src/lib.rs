//! Shared I/O for the BioAlign crates.
//!
//! Two things every layer needs and none should write twice:
//! - [`atomic_write`]: results and checkpoints are written to a temporary file in
//!   the destination folder, flushed, synced and renamed over the target, so a
//!   reader never sees half a file and a crash never destroys the previous one.
//! - [`data_mirror`]: the one setting (`BIOALIGN_DATA_MIRROR`) through which tests,
//!   benches and examples find third-party data (CTD files, models), defaulting to
//!   `../shared/datasets` relative to the workspace root.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Errors of the shared I/O helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`create`, `write`, `rename`, ...).
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `path` atomically: `write` fills a buffered temporary file beside
/// `path`, which is synced and renamed over `path` only if `write` succeeds.
///
/// Parent folders are created. On error the temporary file is removed and any
/// previous `path` is left untouched.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("out.txt");
/// bioalign_io::atomic_write(&path, |w| w.write_all(b"hello"))?;
/// assert_eq!(std::fs::read(&path).unwrap(), b"hello");
/// # use std::io::Write;
/// # Ok::<(), bioalign_io::Error>(())
/// ```
pub fn atomic_write<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> io::Result<()>,
{
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io_err("create folder", &dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_string());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        let mut w = BufWriter::new(file);
        write(&mut w).map_err(io_err("write", &tmp))?;
        let file = w
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` atomically (see [`atomic_write`]).
pub fn atomic_write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write(path, |w| w.write_all(bytes))
}

/// The name of the environment variable that points at the data mirror.
pub const DATA_MIRROR_ENV: &str = "BIOALIGN_DATA_MIRROR";

/// The folder holding third-party data (CTD files, fetched models).
///
/// `BIOALIGN_DATA_MIRROR` if set, else `../shared/datasets` next to the
/// workspace root (found from this crate's manifest directory at build time).
pub fn data_mirror() -> PathBuf {
    if let Some(dir) = std::env::var_os(DATA_MIRROR_ENV) {
        return PathBuf::from(dir);
    }
    workspace_root().join("..").join("shared").join("datasets")
}

/// The workspace root, derived from this crate's location (`crates/bioalign-io`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The folder `datasets/fetch.sh` fills (models, unpacked packages): `BIOALIGN_DATA_DIR`
/// if set, else `data/` at the workspace root.
pub fn data_dir() -> PathBuf {
    std::env::var_os("BIOALIGN_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("data"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_previous_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.json");
        atomic_write_bytes(&path, b"old").unwrap();
        let err = atomic_write(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("boom"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary file left behind");
    }

    #[test]
    fn creates_parent_folders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.bin");
        atomic_write_bytes(&path, &[1, 2, 3]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), vec![1, 2, 3]);
    }
}
