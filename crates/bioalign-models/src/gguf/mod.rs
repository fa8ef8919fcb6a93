//! A memory-mapped reader for GGUF files (versions 2 and 3, little-endian), the format of
//! llama.cpp; the layout follows `ggml/docs/gguf.md` and the Python `gguf` package.
//!
//! [`GgufFile::open`] parses the header, the metadata and the tensor infos, and checks
//! that every tensor of a known type lies inside the file; tensor data stays in the map
//! until [`GgufFile::dequantize`] turns one tensor into f32.

mod quant;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use quant::{GgmlType, dequantize};

use crate::error::{Error, Result, io_err};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum GgufValue {
    /// `uint8`
    U8(u8),
    /// `int8`
    I8(i8),
    /// `uint16`
    U16(u16),
    /// `int16`
    I16(i16),
    /// `uint32`
    U32(u32),
    /// `int32`
    I32(i32),
    /// `float32`
    F32(f32),
    /// `bool`
    Bool(bool),
    /// UTF-8 `string`
    String(String),
    /// `uint64`
    U64(u64),
    /// `int64`
    I64(i64),
    /// `float64`
    F64(f64),
    /// `array` of values of one type
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The GGUF type name of the value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "uint8",
            Self::I8(_) => "int8",
            Self::U16(_) => "uint16",
            Self::I16(_) => "int16",
            Self::U32(_) => "uint32",
            Self::I32(_) => "int32",
            Self::F32(_) => "float32",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::U64(_) => "uint64",
            Self::I64(_) => "int64",
            Self::F64(_) => "float64",
            Self::Array(_) => "array",
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as an f64, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Where one tensor is and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in GGML order: `dims[0]` is the contiguous one (a row's length).
    pub dims: Vec<u64>,
    /// The GGML type id.
    pub type_id: u32,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The shape in row-major (PyTorch / NumPy) order: `dims` reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The number of values.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The GGML type, if this crate supports it.
    pub fn ggml_type(&self) -> Option<GgmlType> {
        GgmlType::from_id(self.type_id)
    }
}

/// An open, memory-mapped GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    data_start: u64,
}

struct Cursor<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let end = (self.pos as u64).saturating_add(n);
        if end > self.buf.len() as u64 {
            return Err(Error::Truncated {
                path: self.path.to_path_buf(),
                what: what(),
                offset: self.pos as u64,
                end,
                len: self.buf.len() as u64,
            });
        }
        let s = &self.buf[self.pos..end as usize];
        self.pos = end as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn format_err(&self, offset: usize, message: String) -> Error {
        Error::GgufFormat {
            path: self.path.to_path_buf(),
            offset: offset as u64,
            message,
        }
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let start = self.pos;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.format_err(start, format!("{}: invalid UTF-8: {e}", what())))
    }

    fn value(&mut self, type_id: u32, what: &dyn Fn() -> String, depth: u32) -> Result<GgufValue> {
        Ok(match type_id {
            0 => GgufValue::U8(self.array::<1>(what)?[0]),
            1 => GgufValue::I8(self.array::<1>(what)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(self.u32(what)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => {
                let at = self.pos;
                match self.array::<1>(what)?[0] {
                    0 => GgufValue::Bool(false),
                    1 => GgufValue::Bool(true),
                    b => return Err(self.format_err(at, format!("{}: bool byte {b}", what()))),
                }
            }
            8 => GgufValue::String(self.string(what)?),
            9 => {
                let at = self.pos;
                if depth > 4 {
                    return Err(self.format_err(at, format!("{}: arrays nested too deep", what())));
                }
                let item_type = self.u32(what)?;
                let n = self.u64(what)?;
                // Every item takes at least one byte: a count beyond the file is corrupt.
                if n > (self.buf.len() - self.pos) as u64 {
                    return Err(Error::Truncated {
                        path: self.path.to_path_buf(),
                        what: format!("{}: array of {n} items", what()),
                        offset: self.pos as u64,
                        end: self.pos as u64 + n,
                        len: self.buf.len() as u64,
                    });
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(item_type, what, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(self.format_err(
                    self.pos - 4,
                    format!("{}: unknown value type {other}", what()),
                ));
            }
        })
    }
}

impl GgufFile {
    /// Opens and maps `path`, parsing header, metadata and tensor infos.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(io_err("open", &path))?;
        // SAFETY: the map is read-only; like every reader of model files we assume no
        // other process truncates the file while it is open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io_err("map", &path))?;
        let (version, metadata, tensors, data_start) = Self::parse(&path, &mmap)?;
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            path,
            mmap,
            version,
            metadata,
            tensors,
            by_name,
            data_start,
        })
    }

    #[allow(clippy::type_complexity)]
    fn parse(
        path: &Path,
        buf: &[u8],
    ) -> Result<(u32, BTreeMap<String, GgufValue>, Vec<TensorInfo>, u64)> {
        let mut c = Cursor { path, buf, pos: 0 };
        let magic = c.array::<4>(&|| "magic".into())?;
        if &magic != MAGIC {
            return Err(c.format_err(0, format!("magic {magic:?} is not \"GGUF\"")));
        }
        let version = c.u32(&|| "version".into())?;
        if version != 2 && version != 3 {
            let hint = if version.swap_bytes() <= 3 {
                " (big-endian files are not supported)"
            } else {
                ""
            };
            return Err(c.format_err(4, format!("version {version} not supported (2 or 3){hint}")));
        }
        let n_tensors = c.u64(&|| "tensor count".into())?;
        let n_kv = c.u64(&|| "metadata count".into())?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&|| format!("metadata key #{i}"))?;
            let what = || format!("metadata {key}");
            let ty = c.u32(&what)?;
            let value = c.value(ty, &what, 0)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::new();
        for i in 0..n_tensors {
            let name = c.string(&|| format!("tensor info #{i}"))?;
            let what = || format!("tensor info {name}");
            let n_dims = c.u32(&what)?;
            if n_dims > 8 {
                return Err(Error::BadTensor {
                    path: path.to_path_buf(),
                    tensor: name,
                    message: format!("{n_dims} dimensions"),
                });
            }
            let dims = (0..n_dims)
                .map(|_| c.u64(&what))
                .collect::<Result<Vec<_>>>()?;
            let type_id = c.u32(&what)?;
            let offset = c.u64(&what)?;
            tensors.push(TensorInfo {
                name,
                dims,
                type_id,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(
                        c.format_err(0, format!("general.alignment {v:?} is not a power of two"))
                    );
                }
            },
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let len = buf.len() as u64;
        let mut seen = HashMap::new();
        for t in &tensors {
            let bad = |message: String| Error::BadTensor {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                message,
            };
            if seen.insert(t.name.as_str(), ()).is_some() {
                return Err(bad("duplicate tensor name".into()));
            }
            if t.offset % alignment != 0 {
                return Err(bad(format!(
                    "offset {} is not a multiple of the alignment {alignment}",
                    t.offset
                )));
            }
            let n = t
                .dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad(format!("dimensions {:?} overflow", t.dims)))?;
            let Some(ty) = t.ggml_type() else { continue };
            if t.dims
                .first()
                .is_some_and(|&d| d % ty.block_size() as u64 != 0)
            {
                return Err(bad(format!(
                    "row length {} is not a multiple of the {} block size {}",
                    t.dims[0],
                    ty.name(),
                    ty.block_size()
                )));
            }
            let size = ty
                .bytes_for(n)
                .ok_or_else(|| bad("size overflows".into()))?;
            let start = data_start.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(size));
            match (start, end) {
                (Some(_), Some(end)) if end <= len => {}
                (start, end) => {
                    return Err(Error::Truncated {
                        path: path.to_path_buf(),
                        what: format!("tensor {} ({}, {n} values)", t.name, ty.name()),
                        offset: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        len,
                    });
                }
            }
        }
        Ok((version, metadata, tensors, data_start))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// The metadata value of `key`, or a [`Error::MissingMetadata`].
    pub fn get(&self, key: &str) -> Result<&GgufValue> {
        self.metadata
            .get(key)
            .ok_or_else(|| Error::MissingMetadata {
                path: self.path.clone(),
                key: key.to_string(),
            })
    }

    fn type_err(&self, key: &str, expected: &'static str, v: &GgufValue) -> Error {
        Error::MetadataType {
            path: self.path.clone(),
            key: key.to_string(),
            expected,
            found: v.type_name().to_string(),
        }
    }

    /// An unsigned integer (of any width) at `key`.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key)?;
        v.as_u64()
            .ok_or_else(|| self.type_err(key, "unsigned integer", v))
    }

    /// A number at `key`, as f64.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key)?;
        v.as_f64().ok_or_else(|| self.type_err(key, "number", v))
    }

    /// A string at `key`.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.get(key)?;
        v.as_str().ok_or_else(|| self.type_err(key, "string", v))
    }

    /// An array at `key`.
    pub fn get_array(&self, key: &str) -> Result<&[GgufValue]> {
        match self.get(key)? {
            GgufValue::Array(a) => Ok(a),
            v => Err(self.type_err(key, "array", v)),
        }
    }

    /// An array of strings at `key`.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.get_array(key)?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.type_err(key, "array of string", v))
            })
            .collect()
    }

    /// The tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of tensor `name`, or a [`Error::MissingTensor`].
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.by_name
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| Error::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    /// The raw bytes of tensor `name` (checked to lie in the file at open).
    pub fn tensor_bytes(&self, name: &str) -> Result<(&TensorInfo, GgmlType, &[u8])> {
        let t = self.tensor(name)?;
        let ty = t.ggml_type().ok_or_else(|| Error::UnsupportedTensorType {
            path: self.path.clone(),
            tensor: t.name.clone(),
            type_id: t.type_id,
            type_name: GgmlType::name_of(t.type_id),
        })?;
        // In bounds and a whole number of blocks: checked in `parse`.
        let size = ty.bytes_for(t.n_elements()).unwrap_or(0) as usize;
        let start = (self.data_start + t.offset) as usize;
        Ok((t, ty, &self.mmap[start..start + size]))
    }

    /// Tensor `name` dequantized to f32, row-major in the order of [`TensorInfo::shape`].
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let (t, ty, bytes) = self.tensor_bytes(name)?;
        let mut out = vec![0f32; t.n_elements() as usize];
        dequantize(ty, bytes, &mut out);
        Ok(out)
    }
}

/// Undoes llama.cpp's permutation of the rows of `q_proj` / `k_proj` weights.
///
/// `convert_hf_to_gguf.py` reorders each head's rows from the Hugging Face layout (first
/// half of the rotary pairs, then the second half) to interleaved pairs; this maps a
/// `[n_head * head_dim, cols]` row-major matrix back (transformers' `reverse_permute_weights`).
/// Use `n_head = num_key_value_heads` for `k_proj`.
///
/// # Panics
/// If `data.len() != rows * cols` or `rows` is not a multiple of `2 * n_head`.
pub fn reverse_qk_permutation(data: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    assert_eq!(data.len(), rows * cols);
    assert!(
        n_head > 0 && rows.is_multiple_of(2 * n_head),
        "{rows} rows, {n_head} heads"
    );
    let half = rows / n_head / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                // GGUF row (h, i, j) holds Hugging Face row (h, j, i).
                let src = h * 2 * half + i * 2 + j;
                let dst = h * 2 * half + j * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_permutation_inverts_llama_cpp_permute() {
        // convert_hf_to_gguf.py: w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2)
        let (n_head, head_dim, cols) = (3, 4, 2);
        let rows = n_head * head_dim;
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let half = head_dim / 2;
        let mut gguf = vec![0f32; hf.len()];
        for h in 0..n_head {
            for two in 0..2 {
                for i in 0..half {
                    let src = h * head_dim + two * half + i;
                    let dst = h * head_dim + i * 2 + two;
                    gguf[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_ne!(gguf, hf);
        assert_eq!(reverse_qk_permutation(&gguf, rows, cols, n_head), hf);
    }
}
