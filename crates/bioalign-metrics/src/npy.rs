//! A small reader for numpy `.npy` files (format versions 1-3): little- or
//! big-endian `f4`, `f8`, `i1`-`i8`, `u1`-`u8` and `b1`, C or Fortran order.
//! Enough to load embeddings and labels written by any Python tool.

use std::path::Path;

use ndarray::{Array2, Array3, ArrayD, IxDyn, ShapeBuilder};

use crate::error::{Error, Result};

/// The values of a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `f4` values.
    F32(Vec<f32>),
    /// `f8` values.
    F64(Vec<f64>),
    /// Signed integers, any width.
    I64(Vec<i64>),
    /// Unsigned integers, any width, and booleans.
    U64(Vec<u64>),
}

/// A `.npy` array: its shape and its values in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The shape.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: NpyData,
}

fn err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let k = format!("'{key}':");
    let start = header.find(&k)? + k.len();
    Some(header[start..].trim_start())
}

impl NpyArray {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes, path)
    }

    /// Parses the bytes of a `.npy` file (`path` only names it in errors).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
            return Err(err(path, "not a .npy file (bad magic)"));
        }
        let major = bytes[6];
        let (hlen, hstart) = match major {
            1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
            2 | 3 => {
                if bytes.len() < 12 {
                    return Err(err(path, "truncated header"));
                }
                (
                    u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                    12,
                )
            }
            v => return Err(err(path, format!("unsupported .npy version {v}"))),
        };
        let hend = hstart + hlen;
        if bytes.len() < hend {
            return Err(err(path, "truncated header"));
        }
        let header = std::str::from_utf8(&bytes[hstart..hend])
            .map_err(|_| err(path, "header is not text"))?;
        let descr = header_value(header, "descr")
            .and_then(|v| v.strip_prefix('\''))
            .and_then(|v| v.split('\'').next())
            .ok_or_else(|| err(path, format!("no descr in header {header:?}")))?;
        let fortran = header_value(header, "fortran_order")
            .map(|v| v.starts_with("True"))
            .ok_or_else(|| err(path, "no fortran_order in header"))?;
        let shape_txt = header_value(header, "shape")
            .and_then(|v| v.strip_prefix('('))
            .and_then(|v| v.split(')').next())
            .ok_or_else(|| err(path, "no shape in header"))?;
        let shape: Vec<usize> = shape_txt
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<usize>()
                    .map_err(|_| err(path, format!("bad shape entry {s:?}")))
            })
            .collect::<Result<_>>()?;
        let count: usize = shape.iter().product();
        let (endian, kind) = descr.split_at(1);
        let big = match endian {
            "<" | "|" | "=" => false,
            ">" => true,
            _ => return Err(err(path, format!("unsupported dtype {descr:?}"))),
        };
        let width: usize = kind[1..]
            .parse()
            .map_err(|_| err(path, format!("unsupported dtype {descr:?}")))?;
        let body = &bytes[hend..];
        if body.len() < count * width {
            return Err(err(
                path,
                format!(
                    "data truncated: {} bytes for {count} values of {width} bytes",
                    body.len()
                ),
            ));
        }
        let word = |i: usize| -> [u8; 8] {
            let mut b = [0u8; 8];
            let src = &body[i * width..(i + 1) * width];
            if big {
                for (k, v) in src.iter().rev().enumerate() {
                    b[k] = *v;
                }
            } else {
                b[..width].copy_from_slice(src);
            }
            b
        };
        let data = match (&kind[..1], width) {
            ("f", 4) => NpyData::F32(
                (0..count)
                    .map(|i| {
                        let w = word(i);
                        f32::from_le_bytes([w[0], w[1], w[2], w[3]])
                    })
                    .collect(),
            ),
            ("f", 8) => NpyData::F64((0..count).map(|i| f64::from_le_bytes(word(i))).collect()),
            ("i", 1 | 2 | 4 | 8) => NpyData::I64(
                (0..count)
                    .map(|i| {
                        let v = u64::from_le_bytes(word(i));
                        let shift = 64 - 8 * width as u32;
                        ((v << shift) as i64) >> shift
                    })
                    .collect(),
            ),
            ("u" | "b", 1 | 2 | 4 | 8) => {
                NpyData::U64((0..count).map(|i| u64::from_le_bytes(word(i))).collect())
            }
            _ => return Err(err(path, format!("unsupported dtype {descr:?}"))),
        };
        let mut arr = Self { shape, data };
        if fortran && arr.shape.len() > 1 {
            arr.make_c_order();
        }
        Ok(arr)
    }

    fn make_c_order(&mut self) {
        fn reorder<T: Clone>(v: &[T], shape: &[usize]) -> Vec<T> {
            let a = ArrayD::from_shape_vec(IxDyn(shape).f(), v.to_vec()).expect("shape checked");
            a.as_standard_layout().iter().cloned().collect()
        }
        let shape = self.shape.clone();
        self.data = match &self.data {
            NpyData::F32(v) => NpyData::F32(reorder(v, &shape)),
            NpyData::F64(v) => NpyData::F64(reorder(v, &shape)),
            NpyData::I64(v) => NpyData::I64(reorder(v, &shape)),
            NpyData::U64(v) => NpyData::U64(reorder(v, &shape)),
        };
    }

    /// The values as f32 (f64 is rounded; integers converted).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            NpyData::F32(v) => v.clone(),
            NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::U64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// A 2-D array `[n, d]` as f32; `path` names the file in errors.
    pub fn into_f32_2d(self, path: &Path) -> Result<Array2<f32>> {
        if self.shape.len() != 2 {
            return Err(err(
                path,
                format!("expected a 2-D array, found shape {:?}", self.shape),
            ));
        }
        let v = self.to_f32_vec();
        Array2::from_shape_vec((self.shape[0], self.shape[1]), v)
            .map_err(|e| err(path, e.to_string()))
    }

    /// A 3-D array `[L, n, d]` as f32; `path` names the file in errors.
    pub fn into_f32_3d(self, path: &Path) -> Result<Array3<f32>> {
        if self.shape.len() != 3 {
            return Err(err(
                path,
                format!("expected a 3-D array, found shape {:?}", self.shape),
            ));
        }
        let v = self.to_f32_vec();
        Array3::from_shape_vec((self.shape[0], self.shape[1], self.shape[2]), v)
            .map_err(|e| err(path, e.to_string()))
    }

    /// A 1-D array of class labels: non-negative integers, booleans, or floats
    /// holding whole numbers. Anything else is an error naming the first bad entry.
    pub fn into_labels(self, path: &Path) -> Result<Vec<usize>> {
        let n: usize = self.shape.iter().product();
        if self.shape.len() > 1 && self.shape.iter().filter(|&&s| s != 1).count() > 1 {
            return Err(err(
                path,
                format!("expected 1-D labels, found shape {:?}", self.shape),
            ));
        }
        let bad = |i: usize, v: String| err(path, format!("label {i} is {v}, not a class index"));
        let out: Result<Vec<usize>> = match self.data {
            NpyData::U64(v) => Ok(v.into_iter().map(|x| x as usize).collect()),
            NpyData::I64(v) => v
                .into_iter()
                .enumerate()
                .map(|(i, x)| usize::try_from(x).map_err(|_| bad(i, x.to_string())))
                .collect(),
            NpyData::F32(v) => v
                .into_iter()
                .enumerate()
                .map(|(i, x)| float_label(f64::from(x)).ok_or_else(|| bad(i, x.to_string())))
                .collect(),
            NpyData::F64(v) => v
                .into_iter()
                .enumerate()
                .map(|(i, x)| float_label(x).ok_or_else(|| bad(i, x.to_string())))
                .collect(),
        };
        let out = out?;
        debug_assert_eq!(out.len(), n);
        Ok(out)
    }
}

fn float_label(x: f64) -> Option<usize> {
    (x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x < 1e15).then_some(x as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: bool, shape: &str, body: &[u8]) -> Vec<u8> {
        let mut header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn reads_fortran_order_and_big_endian() {
        let body: Vec<u8> = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = NpyArray::parse(&npy("<f4", true, "(2, 3)", &body), Path::new("x.npy")).unwrap();
        let a = a.into_f32_2d(Path::new("x.npy")).unwrap();
        assert_eq!(a.row(0).to_vec(), vec![1.0, 2.0, 3.0]);
        let body: Vec<u8> = [1i16, -2].iter().flat_map(|v| v.to_be_bytes()).collect();
        let l = NpyArray::parse(&npy(">i2", false, "(2,)", &body), Path::new("l.npy")).unwrap();
        assert_eq!(l.data, NpyData::I64(vec![1, -2]));
        assert!(l.into_labels(Path::new("l.npy")).is_err());
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let body = [0u8; 7];
        assert!(NpyArray::parse(&npy("<f4", false, "(2,)", &body), Path::new("t.npy")).is_err());
        assert!(NpyArray::parse(b"PK\x03\x04 not npy", Path::new("z.npy")).is_err());
        assert!(NpyArray::parse(&npy("<c8", false, "(1,)", &[0; 8]), Path::new("c.npy")).is_err());
    }
}
