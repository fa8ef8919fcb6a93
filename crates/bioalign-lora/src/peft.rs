//! PEFT's on-disk adapter format: a folder with `adapter_config.json` and
//! `adapter_model.safetensors`, tensors named
//! `base_model.model.{module}.lora_A.weight` `[r, in]` and `...lora_B.weight` `[out, r]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};

use crate::config::LoraConfig;
use crate::error::{Error, Result, io_err};
use crate::linear::{AdapterSlot, tensor_vec};

/// File name of the adapter config.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// File name of the adapter weights.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// A model whose LoRA modules can be enumerated by their Hugging Face module names
/// (`model.layers.0.self_attn.q_proj`), in a fixed order.
pub trait LoraModel<B: Backend> {
    /// Calls `f` on every adapter, in a fixed order.
    fn visit_adapters(&self, f: &mut dyn FnMut(&str, &dyn AdapterSlot<B>));
    /// Calls `f` on every adapter, mutably, in the same order.
    fn visit_adapters_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn AdapterSlot<B>));
}

/// PEFT's name of LoRA A of `module`.
pub fn lora_a_name(module: &str) -> String {
    format!("base_model.model.{module}.lora_A.weight")
}

/// PEFT's name of LoRA B of `module`.
pub fn lora_b_name(module: &str) -> String {
    format!("base_model.model.{module}.lora_B.weight")
}

/// The adapter tensors in PEFT layout: name -> (shape, f32 values).
pub fn adapter_tensors<B: Backend, M: LoraModel<B>>(
    model: &M,
) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut out = BTreeMap::new();
    model.visit_adapters(&mut |name, slot| {
        let (inp, o) = slot.features();
        let r = slot.lora().r;
        out.insert(
            lora_a_name(name),
            (vec![r, inp], tensor_vec(slot.lora_a().val().transpose())),
        );
        out.insert(
            lora_b_name(name),
            (vec![o, r], tensor_vec(slot.lora_b().val().transpose())),
        );
    });
    out
}

/// Serializes f32 tensors to safetensors bytes.
pub(crate) fn safetensors_bytes(
    tensors: &BTreeMap<String, (Vec<usize>, Vec<u8>, Dtype)>,
    path: &Path,
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(n, (shape, bytes, dtype))| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Safetensors {
                    path: path.to_path_buf(),
                    reason: format!("{n}: {e}"),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` atomically.
pub fn save_adapter<B: Backend, M: LoraModel<B>>(
    model: &M,
    config: &LoraConfig,
    dir: &Path,
) -> Result<()> {
    config.validate()?;
    std::fs::create_dir_all(dir).map_err(io_err("create folder", dir))?;
    let path = dir.join(WEIGHTS_FILE);
    let tensors = adapter_tensors(model)
        .into_iter()
        .map(|(n, (s, v))| (n, (s, f32_bytes(&v), Dtype::F32)))
        .collect();
    let bytes = safetensors_bytes(&tensors, &path)?;
    bioalign_io::atomic_write_bytes(&path, &bytes)?;
    config.save(&dir.join(CONFIG_FILE))
}

/// Reads a PEFT adapter folder into `model`'s adapters. Checks, with errors naming the
/// tensor: the base model name (when `expected_base` is given), every adapted module
/// has both tensors, shapes `[r, in]` / `[out, r]`, and no tensor is left over.
/// f32, f16 and bf16 tensors are accepted. The model's scaling is not changed: build
/// the model from the same [`LoraConfig`] (returned) so ranks and alphas agree.
pub fn load_adapter<B: Backend, M: LoraModel<B>>(
    model: &mut M,
    dir: &Path,
    expected_base: Option<&str>,
    device: &B::Device,
) -> Result<LoraConfig> {
    let config = LoraConfig::load(&dir.join(CONFIG_FILE))?;
    if let (Some(expected), Some(found)) =
        (expected_base, config.base_model_name_or_path.as_deref())
        && expected != found
    {
        return Err(Error::OtherBase {
            expected: expected.into(),
            found: found.into(),
        });
    }
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).map_err(io_err("read", &path))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut unused: BTreeSet<String> = st.names().into_iter().map(str::to_string).collect();
    let mut err: Option<Error> = None;
    model.visit_adapters_mut(&mut |name, slot| {
        if err.is_some() {
            return;
        }
        let (inp, out) = slot.features();
        let r = slot.lora().r;
        let mut read = |tname: String, shape: [usize; 2]| -> Result<Tensor<B, 2>> {
            let view = st.tensor(&tname).map_err(|_| Error::MissingTensor {
                path: path.clone(),
                module: name.to_string(),
                name: tname.clone(),
            })?;
            if view.shape() != shape {
                return Err(Error::Shape {
                    path: path.clone(),
                    name: tname,
                    expected: shape.to_vec(),
                    found: view.shape().to_vec(),
                });
            }
            let values = decode(&view, &path, &tname)?;
            unused.remove(&tname);
            Ok(Tensor::from_data(TensorData::new(values, shape), device))
        };
        let res = read(lora_a_name(name), [r, inp])
            .and_then(|a| read(lora_b_name(name), [out, r]).map(|b| (a, b)));
        match res {
            // Stored contiguously, as the optimizer leaves them: a transposed view would
            // send the products down other gemm paths (other rounding), and a resumed
            // run would drift from an uninterrupted one.
            Ok((a, b)) => {
                let a = Tensor::from_data(a.transpose().into_data(), device);
                let b = Tensor::from_data(b.transpose().into_data(), device);
                slot.set_lora(a, b)
            }
            Err(e) => err = Some(e),
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    if let Some(name) = unused.into_iter().next() {
        return Err(Error::UnexpectedTensor { path, name });
    }
    Ok(config)
}

fn decode(view: &TensorView<'_>, path: &Path, name: &str) -> Result<Vec<f32>> {
    let d = view.data();
    let v = match view.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        other => {
            return Err(Error::Dtype {
                path: path.to_path_buf(),
                name: name.into(),
                expected: "F32, F16 or BF16",
                found: format!("{other:?}"),
            });
        }
    };
    Ok(v)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as i32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // subnormal: value = man * 2^-24
            let v = man as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
    } else if exp == 31 {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | (((exp - 15 + 127) as u32) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}
