//! Turning a Hugging Face safetensors model (single file or sharded) into a
//! bnb-4bit checkpoint, as transformers does with
//! `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
//! bnb_4bit_use_double_quant=True)` followed by `save_pretrained`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::{Value, json};

use super::writer::{PlannedTensor, write_safetensors};
use super::{TensorBytes, to_tensors};
use crate::double_quant::NestedScales;
use crate::tensor::{QuantizeOptions, Quantized4bit, Scales, SourceDtype};
use crate::{Error, Result};

/// Options of [`quantize_model`].
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeModelOptions {
    /// Data type, block size, double quantization (NF4 / 64 / true by default).
    pub quant: QuantizeOptions,
    /// `bnb_4bit_compute_dtype` recorded in `config.json` (transformers' default `"float32"`).
    pub compute_dtype: String,
    /// Module names never quantized (besides `lm_head` and embeddings).
    pub skip_modules: Vec<String>,
    /// Intra-op threads torch would use for the mean of the block scales; only
    /// changes the last bits of `nested_offset` for weights past 2M values.
    pub torch_threads: usize,
}

impl Default for QuantizeModelOptions {
    fn default() -> Self {
        QuantizeModelOptions {
            quant: QuantizeOptions::default(),
            compute_dtype: "float32".into(),
            skip_modules: Vec::new(),
            torch_threads: 1,
        }
    }
}

/// What [`quantize_model`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuantizeReport {
    /// Weights stored in 4 bits.
    pub quantized: usize,
    /// Tensors copied as they were.
    pub kept: usize,
    /// Parameters in the quantized weights.
    pub quantized_params: usize,
    /// Bytes of tensor data read.
    pub bytes_in: usize,
    /// Bytes of tensor data written.
    pub bytes_out: usize,
    /// Safetensors files written.
    pub files: Vec<PathBuf>,
}

/// Whether transformers would replace the module owning `name` by a
/// `Linear4bit`: a 2-D `*_proj.weight` outside `lm_head` and the embeddings.
pub fn is_quantized_linear(name: &str, shape: &[usize], skip: &[String]) -> bool {
    let Some(module) = name.strip_suffix(".weight") else {
        return false;
    };
    let last = module.rsplit('.').next().unwrap_or(module);
    shape.len() == 2
        && last.ends_with("_proj")
        && !module.contains("lm_head")
        && !module.contains("embed")
        && !skip
            .iter()
            .any(|s| module.split('.').any(|part| part == s) || module == s)
}

/// The `quantization_config` block transformers writes into `config.json`.
pub fn quantization_config(opts: &QuantizeModelOptions) -> Value {
    json!({
        "_load_in_4bit": true,
        "_load_in_8bit": false,
        "bnb_4bit_compute_dtype": opts.compute_dtype,
        "bnb_4bit_quant_storage": "uint8",
        "bnb_4bit_quant_type": opts.quant.quant_type.as_str(),
        "bnb_4bit_use_double_quant": opts.quant.double_quant,
        "llm_int8_enable_fp32_cpu_offload": false,
        "llm_int8_has_fp16_weight": false,
        "llm_int8_skip_modules": if opts.skip_modules.is_empty() { Value::Null } else { json!(opts.skip_modules) },
        "llm_int8_threshold": 6.0,
        "load_in_4bit": true,
        "load_in_8bit": false,
        "quant_method": "bitsandbytes"
    })
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn format_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The safetensors files of a model folder (index order if sharded).
fn input_shards(dir: &Path) -> Result<(Vec<String>, bool)> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(io_err("read", &index))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format_err(&index, e.to_string()))?;
        let map = v["weight_map"]
            .as_object()
            .ok_or_else(|| format_err(&index, "no weight_map object"))?;
        let files: BTreeSet<String> = map
            .values()
            .filter_map(|f| f.as_str().map(String::from))
            .collect();
        return Ok((files.into_iter().collect(), true));
    }
    if dir.join("model.safetensors").exists() {
        return Ok((vec!["model.safetensors".into()], false));
    }
    Err(format_err(
        dir,
        "no model.safetensors or model.safetensors.index.json",
    ))
}

fn to_f32(view: &safetensors::tensor::TensorView<'_>) -> Option<(Vec<f32>, SourceDtype)> {
    let d = view.data();
    match view.dtype() {
        Dtype::F32 => Some((
            d.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            SourceDtype::F32,
        )),
        Dtype::BF16 => Some((
            d.chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            SourceDtype::Bf16,
        )),
        Dtype::F16 => Some((
            d.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            SourceDtype::F16,
        )),
        _ => None,
    }
}

enum Entry {
    Keep(String),
    New(TensorBytes),
}

/// Quantizes the linear weights of the model in `input` into `output`
/// (created), copying every other tensor and file; one output shard per
/// input shard. Reads tensor by tensor from memory maps; holds the 4-bit
/// results of one shard (about 0.56 bytes per parameter) until it is written.
pub fn quantize_model(
    input: &Path,
    output: &Path,
    opts: &QuantizeModelOptions,
) -> Result<QuantizeReport> {
    let config_path = input.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(io_err("read", &config_path))?;
    let mut config: Value =
        serde_json::from_str(&text).map_err(|e| format_err(&config_path, e.to_string()))?;
    let obj = config
        .as_object_mut()
        .ok_or_else(|| format_err(&config_path, "not a JSON object"))?;
    if obj.contains_key("quantization_config") {
        return Err(format_err(
            &config_path,
            "model is already quantized (quantization_config present)",
        ));
    }
    obj.insert("quantization_config".into(), quantization_config(opts));
    std::fs::create_dir_all(output).map_err(io_err("create folder", output))?;

    let (shards, sharded) = input_shards(input)?;
    let mut report = QuantizeReport::default();
    let mut weight_map = BTreeMap::new();
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    for shard in &shards {
        let path = input.join(shard);
        let file = File::open(&path).map_err(io_err("open", &path))?;
        // SAFETY: the file is opened read-only and not modified while mapped.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io_err("map", &path))?;
        let st = SafeTensors::deserialize(&mmap).map_err(|e| format_err(&path, e.to_string()))?;
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        let mut entries: Vec<(PlannedTensor, Entry)> = Vec::new();
        for name in names {
            let view = st
                .tensor(&name)
                .map_err(|e| format_err(&path, e.to_string()))?;
            report.bytes_in += view.data().len();
            let floats = if is_quantized_linear(&name, view.shape(), &opts.skip_modules) {
                to_f32(&view)
            } else {
                None
            };
            match floats {
                Some((data, dtype)) => {
                    let q = quantize_weight(&data, view.shape(), dtype, opts)
                        .map_err(|e| with_context(e, &name))?;
                    report.quantized += 1;
                    report.quantized_params += data.len();
                    for t in to_tensors(&q, &name) {
                        let plan = PlannedTensor {
                            name: t.name.clone(),
                            dtype: t.dtype,
                            shape: t.shape.clone(),
                        };
                        entries.push((plan, Entry::New(t)));
                    }
                }
                None => {
                    report.kept += 1;
                    let plan = PlannedTensor {
                        name: name.clone(),
                        dtype: view.dtype(),
                        shape: view.shape().to_vec(),
                    };
                    entries.push((plan, Entry::Keep(name)));
                }
            }
        }
        entries.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let plan: Vec<PlannedTensor> = entries.iter().map(|e| e.0.clone()).collect();
        let out_path = output.join(shard);
        write_safetensors(&out_path, &plan, &metadata, |i, w| {
            let bytes: &[u8] = match &entries[i].1 {
                Entry::New(t) => &t.data,
                Entry::Keep(name) => st
                    .tensor(name)
                    .map_err(|e| format_err(&path, e.to_string()))?
                    .data(),
            };
            w.write_all(bytes).map_err(io_err("write", &out_path))
        })?;
        for p in &plan {
            report.bytes_out += p.nbytes();
            weight_map.insert(p.name.clone(), shard.clone());
        }
        report.files.push(out_path);
    }
    if sharded {
        let index = json!({"metadata": {"total_size": report.bytes_out}, "weight_map": weight_map});
        let text = serde_json::to_string_pretty(&index).unwrap_or_default() + "\n";
        bioalign_io::atomic_write_bytes(
            &output.join("model.safetensors.index.json"),
            text.as_bytes(),
        )?;
    }
    let text = serde_json::to_string_pretty(&config).unwrap_or_default() + "\n";
    bioalign_io::atomic_write_bytes(&output.join("config.json"), text.as_bytes())?;
    copy_side_files(input, output, &shards)?;
    tracing::info!(
        quantized = report.quantized,
        kept = report.kept,
        "bnb-4bit checkpoint written"
    );
    Ok(report)
}

fn quantize_weight(
    data: &[f32],
    shape: &[usize],
    dtype: SourceDtype,
    opts: &QuantizeModelOptions,
) -> Result<Quantized4bit> {
    let mut q = Quantized4bit::quantize(
        data,
        shape,
        dtype,
        QuantizeOptions {
            double_quant: false,
            ..opts.quant
        },
    )?;
    if opts.quant.double_quant
        && let Scales::Plain(a) = &q.scales
    {
        q.scales = Scales::Nested(NestedScales::compress_with(
            a,
            crate::double_quant::TORCH_LANES,
            opts.torch_threads,
        ));
    }
    Ok(q)
}

fn with_context(e: Error, name: &str) -> Error {
    match e {
        Error::NonFinite {
            index,
            block,
            value,
            ..
        } => Error::NonFinite {
            index,
            block,
            value,
            context: format!(" in {name}"),
        },
        other => Error::quant_state(name, other.to_string()),
    }
}

/// Copies tokenizer and generation files (everything but weights, index and config).
fn copy_side_files(input: &Path, output: &Path, shards: &[String]) -> Result<()> {
    for entry in std::fs::read_dir(input).map_err(io_err("list", input))? {
        let entry = entry.map_err(io_err("list", input))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let skip = shards.contains(&name)
            || name.ends_with(".safetensors")
            || name == "config.json"
            || name == "model.safetensors.index.json";
        if skip || !entry.path().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).map_err(io_err("read", &entry.path()))?;
        bioalign_io::atomic_write_bytes(&output.join(&name), &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_linear_projections() {
        let s = [64, 64];
        assert!(is_quantized_linear(
            "model.layers.0.self_attn.q_proj.weight",
            &s,
            &[]
        ));
        assert!(is_quantized_linear(
            "model.layers.3.mlp.gate_up_proj.weight",
            &s,
            &[]
        ));
        assert!(!is_quantized_linear("lm_head.weight", &s, &[]));
        assert!(!is_quantized_linear("model.embed_tokens.weight", &s, &[]));
        assert!(!is_quantized_linear(
            "model.layers.0.input_layernorm.weight",
            &[64],
            &[]
        ));
        assert!(!is_quantized_linear(
            "model.layers.0.self_attn.q_proj.bias",
            &[64],
            &[]
        ));
        assert!(!is_quantized_linear(
            "model.layers.0.mlp.down_proj.weight",
            &s,
            &["down_proj".into()]
        ));
    }
}
