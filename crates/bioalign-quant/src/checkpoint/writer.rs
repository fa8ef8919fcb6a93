//! A streaming safetensors writer: the header is laid out from the planned
//! shapes, then each tensor's bytes are written in order, so a large model
//! never has to sit in memory at once.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use safetensors::Dtype;

use crate::{Error, Result};

/// A tensor to be written: key, dtype, shape (its byte length follows).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    /// Key.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
}

impl PlannedTensor {
    /// Bytes of data.
    pub fn nbytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.bitsize() / 8
    }
}

fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

/// Writes `path` atomically: header for `plan` (with `__metadata__`), then for
/// each tensor in order `fill(i, writer)` must write exactly its bytes.
pub fn write_safetensors<F>(
    path: &Path,
    plan: &[PlannedTensor],
    metadata: &BTreeMap<String, String>,
    mut fill: F,
) -> Result<()>
where
    F: FnMut(usize, &mut dyn Write) -> Result<()>,
{
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).unwrap_or_default(),
        );
    }
    let mut offset = 0usize;
    for t in plan {
        let end = offset + t.nbytes();
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dtype_name(t.dtype), "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        reason: format!("header: {e}"),
    })?;
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut inner: Option<Error> = None;
    let res = bioalign_io::atomic_write(path, |w| {
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(&json)?;
        for (i, t) in plan.iter().enumerate() {
            let mut counter = CountingWriter {
                inner: &mut *w,
                n: 0,
            };
            if let Err(e) = fill(i, &mut counter) {
                inner = Some(e);
                return Err(std::io::Error::other("tensor data"));
            }
            if counter.n != t.nbytes() {
                inner = Some(Error::shape(
                    format!("bytes written for {}", t.name),
                    t.nbytes(),
                    counter.n,
                ));
                return Err(std::io::Error::other("tensor size"));
            }
        }
        Ok(())
    });
    match (res, inner) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(e.into()),
        (Ok(()), None) => Ok(()),
    }
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    n: usize,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k;
        Ok(k)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
