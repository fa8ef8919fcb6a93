//! bnb-4bit checkpoint I/O: the tensors and JSON state that transformers +
//! bitsandbytes write for a `Linear4bit` weight, and the `quantization_config`
//! of `config.json`.
//!
//! For a weight `<name>.weight` of shape `[out, in]` the layout is (checked
//! against a checkpoint saved by transformers 5.24 + bitsandbytes 0.50.2 on CPU):
//!
//! | key | dtype | shape |
//! | --- | --- | --- |
//! | `<name>.weight` | U8 | `[ceil(n / 2), 1]` packed codes |
//! | `<name>.weight.absmax` | U8 (nested) or F32 | `[blocks]` |
//! | `<name>.weight.quant_map` | F32 | `[16]` |
//! | `<name>.weight.nested_absmax` | F32 | `[ceil(blocks / 256)]` (nested only) |
//! | `<name>.weight.nested_quant_map` | F32 | `[256]` (nested only) |
//! | `<name>.weight.quant_state.bitsandbytes__nf4` | U8 | JSON bytes |
//!
//! The JSON is Python's `json.dumps` of `QuantState.as_dict(packed=True)`'s
//! non-tensor items: `{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16",
//! "shape": [64, 160], "nested_blocksize": 256, "nested_dtype": "float32",
//! "nested_offset": 0.05199279636144638}`.

mod model;
mod writer;

pub use model::{
    QuantizeModelOptions, QuantizeReport, is_quantized_linear, quantization_config, quantize_model,
};
pub use writer::{PlannedTensor, write_safetensors};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::codebook::{BlockSize, QuantType};
use crate::double_quant::{NESTED_BLOCKSIZE, NestedScales};
use crate::dynamic_map::DYNAMIC_MAP;
use crate::tensor::{Quantized4bit, Scales, SourceDtype};
use crate::{Error, Result};

/// One tensor ready to be written: key, safetensors dtype, shape, bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorBytes {
    /// Full key.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian data.
    pub data: Vec<u8>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Formats an f64 as Python's `repr` does (shortest round trip, exponent
/// below 1e-4 or from 1e16, two-digit exponent).
pub(crate) fn python_float(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let a = x.abs();
    if (1e-4..1e16).contains(&a) {
        let s = format!("{x}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let s = format!("{x:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ("-", d),
            None => ("+", exp),
        };
        format!("{mant}e{sign}{digits:0>2}")
    }
}

/// The JSON quant state exactly as bitsandbytes serializes it.
pub fn quant_state_json(q: &Quantized4bit) -> String {
    let shape = q
        .shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!(
        "{{\"quant_type\": \"{}\", \"blocksize\": {}, \"dtype\": \"{}\", \"shape\": [{shape}]",
        q.quant_type,
        q.blocksize.get(),
        q.dtype.as_str()
    );
    if let Scales::Nested(ns) = &q.scales {
        s.push_str(&format!(
            ", \"nested_blocksize\": {NESTED_BLOCKSIZE}, \"nested_dtype\": \"float32\", \"nested_offset\": {}",
            python_float(f64::from(ns.offset))
        ));
    }
    s.push('}');
    s
}

/// The tensors bitsandbytes stores for `q` under `<weight_key>` (e.g.
/// `model.layers.0.mlp.down_proj.weight`).
pub fn to_tensors(q: &Quantized4bit, weight_key: &str) -> Vec<TensorBytes> {
    let t = |suffix: &str, dtype, shape: Vec<usize>, data| TensorBytes {
        name: format!("{weight_key}{suffix}"),
        dtype,
        shape,
        data,
    };
    let mut out = vec![t("", Dtype::U8, vec![q.packed.len(), 1], q.packed.clone())];
    match &q.scales {
        Scales::Plain(a) => out.push(t(".absmax", Dtype::F32, vec![a.len()], f32_bytes(a))),
        Scales::Nested(ns) => {
            out.push(t(
                ".absmax",
                Dtype::U8,
                vec![ns.codes.len()],
                ns.codes.clone(),
            ));
            out.push(t(
                ".nested_absmax",
                Dtype::F32,
                vec![ns.nested_absmax.len()],
                f32_bytes(&ns.nested_absmax),
            ));
            out.push(t(
                ".nested_quant_map",
                Dtype::F32,
                vec![256],
                f32_bytes(&DYNAMIC_MAP),
            ));
        }
    }
    out.push(t(
        ".quant_map",
        Dtype::F32,
        vec![16],
        f32_bytes(&q.quant_type.quant_map()),
    ));
    let json = quant_state_json(q).into_bytes();
    let key = format!(".quant_state.bitsandbytes__{}", q.quant_type);
    out.push(t(&key, Dtype::U8, vec![json.len()], json));
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateJson {
    quant_type: String,
    blocksize: usize,
    dtype: String,
    shape: Option<Vec<usize>>,
    nested_blocksize: Option<usize>,
    nested_dtype: Option<String>,
    nested_offset: Option<f64>,
}

/// Where the pieces of a bnb-4bit weight are looked up by name: one safetensors file, or
/// every shard of a sharded checkpoint (transformers cuts shards by size, so a weight's
/// `.absmax` or `.quant_state` may sit in the next shard).
pub trait TensorLookup {
    /// Tensor `key`, if present.
    fn view(&self, key: &str) -> Option<TensorView<'_>>;
}

impl TensorLookup for SafeTensors<'_> {
    fn view(&self, key: &str) -> Option<TensorView<'_>> {
        self.tensor(key).ok()
    }
}

fn get<'a, L: TensorLookup + ?Sized>(st: &'a L, key: &str, tensor: &str) -> Result<TensorView<'a>> {
    st.view(key)
        .ok_or_else(|| Error::quant_state(tensor, format!("missing tensor {key}")))
}

fn expect(
    view: &TensorView<'_>,
    dtype: Dtype,
    len: Option<usize>,
    key: &str,
    tensor: &str,
) -> Result<()> {
    if view.dtype() != dtype {
        return Err(Error::quant_state(
            tensor,
            format!("{key}: dtype {:?}, expected {dtype:?}", view.dtype()),
        ));
    }
    let n: usize = view.shape().iter().product();
    if let Some(len) = len
        && n != len
    {
        return Err(Error::quant_state(
            tensor,
            format!(
                "{key}: shape {:?} holds {n} values, expected {len}",
                view.shape()
            ),
        ));
    }
    Ok(())
}

fn read_f32(view: &TensorView<'_>) -> Vec<f32> {
    view.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Whether `<weight_key>` is stored as a bnb-4bit weight in `st`.
pub fn is_bnb_4bit<L: TensorLookup + ?Sized>(st: &L, weight_key: &str) -> bool {
    ["nf4", "fp4"].iter().any(|t| {
        st.view(&format!("{weight_key}.quant_state.bitsandbytes__{t}"))
            .is_some()
    })
}

/// The names of the tensors that make up bnb-4bit weight `weight_key` (the weight itself
/// first), for finding the shards that hold them.
pub fn bnb_4bit_keys(weight_key: &str) -> Vec<String> {
    let mut keys = vec![weight_key.to_string()];
    keys.extend(
        [
            "absmax",
            "quant_map",
            "nested_absmax",
            "nested_quant_map",
            "quant_state.bitsandbytes__nf4",
            "quant_state.bitsandbytes__fp4",
        ]
        .iter()
        .map(|s| format!("{weight_key}.{s}")),
    );
    keys
}

/// Reads the bnb-4bit weight `<weight_key>` and checks that its pieces agree:
/// dtypes, lengths against the shape, block size, code books.
pub fn read_quantized<L: TensorLookup + ?Sized>(st: &L, weight_key: &str) -> Result<Quantized4bit> {
    let tensor = weight_key;
    let (state_key, view) = ["nf4", "fp4"]
        .iter()
        .find_map(|t| {
            let k = format!("{weight_key}.quant_state.bitsandbytes__{t}");
            st.view(&k).map(|v| (k, v))
        })
        .ok_or_else(|| {
            Error::quant_state(tensor, "no quant_state.bitsandbytes__nf4 / __fp4 tensor")
        })?;
    expect(&view, Dtype::U8, None, &state_key, tensor)?;
    let state: StateJson = serde_json::from_slice(view.data())
        .map_err(|e| Error::quant_state(tensor, format!("{state_key}: bad JSON: {e}")))?;
    let quant_type = QuantType::parse(&state.quant_type)
        .map_err(|e| Error::quant_state(tensor, e.to_string()))?;
    if !state_key.ends_with(quant_type.as_str()) {
        return Err(Error::quant_state(
            tensor,
            format!("{state_key} says quant_type {quant_type}"),
        ));
    }
    let blocksize =
        BlockSize::new(state.blocksize).map_err(|e| Error::quant_state(tensor, e.to_string()))?;
    let dtype = SourceDtype::parse(&state.dtype).ok_or_else(|| {
        Error::quant_state(tensor, format!("unsupported dtype {:?}", state.dtype))
    })?;
    let shape = state
        .shape
        .ok_or_else(|| Error::quant_state(tensor, "shape is null"))?;
    let n: usize = shape.iter().product();
    let blocks = blocksize.blocks(n);

    let w = get(st, weight_key, tensor)?;
    expect(&w, Dtype::U8, Some(n.div_ceil(2)), weight_key, tensor)?;
    let qm_key = format!("{weight_key}.quant_map");
    let qm = get(st, &qm_key, tensor)?;
    expect(&qm, Dtype::F32, Some(16), &qm_key, tensor)?;
    let want = quant_type.quant_map();
    if read_f32(&qm).iter().zip(&want).any(|(a, b)| a != b) {
        return Err(Error::quant_state(
            tensor,
            format!("{qm_key} is not bitsandbytes' {quant_type} code book"),
        ));
    }
    let am_key = format!("{weight_key}.absmax");
    let am = get(st, &am_key, tensor)?;
    let nested = state.nested_offset.is_some() || state.nested_blocksize.is_some();
    let scales = if nested {
        let (Some(nbs), Some(ndt), Some(off)) = (
            state.nested_blocksize,
            &state.nested_dtype,
            state.nested_offset,
        ) else {
            return Err(Error::quant_state(
                tensor,
                "nested state needs nested_blocksize, nested_dtype and nested_offset",
            ));
        };
        if nbs != NESTED_BLOCKSIZE || ndt != "float32" {
            return Err(Error::quant_state(
                tensor,
                format!(
                    "nested_blocksize {nbs} / nested_dtype {ndt}: only 256 / float32 are supported"
                ),
            ));
        }
        expect(&am, Dtype::U8, Some(blocks), &am_key, tensor)?;
        let na_key = format!("{weight_key}.nested_absmax");
        let na = get(st, &na_key, tensor)?;
        expect(
            &na,
            Dtype::F32,
            Some(blocks.div_ceil(NESTED_BLOCKSIZE)),
            &na_key,
            tensor,
        )?;
        let nq_key = format!("{weight_key}.nested_quant_map");
        let nq = get(st, &nq_key, tensor)?;
        expect(&nq, Dtype::F32, Some(256), &nq_key, tensor)?;
        if read_f32(&nq).iter().zip(&DYNAMIC_MAP).any(|(a, b)| a != b) {
            return Err(Error::quant_state(
                tensor,
                format!("{nq_key} is not the signed dynamic map"),
            ));
        }
        let ns = NestedScales {
            codes: am.data().to_vec(),
            nested_absmax: read_f32(&na),
            offset: off as f32,
        };
        ns.validate(blocks, tensor)?;
        Scales::Nested(ns)
    } else {
        expect(&am, Dtype::F32, Some(blocks), &am_key, tensor)?;
        let a = read_f32(&am);
        if a.iter().any(|v| !v.is_finite()) {
            return Err(Error::quant_state(tensor, "non-finite absmax"));
        }
        Scales::Plain(a)
    };
    let q = Quantized4bit {
        shape,
        dtype,
        quant_type,
        blocksize,
        packed: w.data().to_vec(),
        scales,
    };
    q.validate(tensor)?;
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        assert_eq!(python_float(0.05199279636144638), "0.05199279636144638");
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(1.5e-5), "1.5e-05");
        assert_eq!(python_float(-2.5e-7), "-2.5e-07");
        assert_eq!(python_float(0.0001), "0.0001");
    }
}
