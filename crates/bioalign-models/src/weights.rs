//! Where weights come from: Hugging Face safetensors (single file or sharded, f32/f16/bf16,
//! memory-mapped, read tensor by tensor through burn-store; bnb-4bit pieces as raw bytes) or GGUF (dequantized, llama.cpp names mapped to Hugging
//! Face ones, Q/K rows un-permuted), and building a [`CausalLm`] from either.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::DType;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_store::{ModuleStore, SafetensorsStore};
use memmap2::Mmap;
use safetensors::SafeTensors;

use bioalign_quant::{Q8Packed, Quantized4bit};

use crate::config::{Architecture, ModelConfig};
use crate::error::{Error, Result, io_err};
use crate::gguf::{GgmlType, GgufFile, reverse_qk_permutation};
use crate::model::{
    Attention, CausalLm, DecoderLayer, DecoderModel, Mlp, PackedLinear, PackedWeight, Projection,
    RmsNorm, Rope, TokenEmbedding,
};

/// A source of f32 weights by Hugging Face name.
pub trait WeightSource {
    /// The file or folder, for errors.
    fn path(&self) -> &Path;
    /// Whether tensor `name` exists.
    fn contains(&self, name: &str) -> bool;
    /// Tensor `name` as (shape, row-major f32 values), with the file it came from.
    fn load(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>, PathBuf)>;
    /// Weight `name` with its bitsandbytes state when the checkpoint stores it in 4 bits
    /// (bnb-4bit layout), `None` when it is stored densely.
    fn load_quantized(&self, _name: &str) -> Result<Option<(Quantized4bit, PathBuf)>> {
        Ok(None)
    }
    /// Tensor `name` in GGUF's 8-bit `Q8_0` form when the file stores it so, `None`
    /// otherwise (only used for the token embedding, which needs no row permutation).
    fn load_q8(&self, _name: &str) -> Result<Option<(Q8Packed, PathBuf)>> {
        Ok(None)
    }
}

/// How [`CausalLm::from_source_with`] builds the projections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Quantize dense projection weights to NF4 while loading (block 64, double
    /// quantization, as transformers' `load_in_4bit=True` with QLoRA's settings).
    /// Embeddings, norms and `lm_head` are not quantized (an 8-bit GGUF embedding stays
    /// 8-bit, see `dense_embeddings`). Weights already stored in 4 bits are
    /// loaded in 4 bits whatever this says.
    pub load_in_4bit: bool,
    /// Expand a token embedding stored in 8 bits (GGUF `Q8_0`, as llama.cpp writes
    /// SmolLM2's) to f32. By default it stays 8-bit on the CPU backend (burn-flex,
    /// with or without autodiff): a quarter of the memory and the same values, looked
    /// up and multiplied (tied LM head) by bioalign-quant's kernels. Other backends
    /// always get the f32 table.
    pub dense_embeddings: bool,
    /// Pack the dense projections, and an LM head of its own, once for the CPU
    /// kernels, for inference ([`crate::model::PackedLinear`]): every product reads
    /// the weight where it lies instead of packing it again, with the same values
    /// and sums (bit for bit from 4 rows; fewer rows, a generation step's, run in
    /// another order). A tied LM head keeps multiplying by the embedding table (no
    /// copy). The weights get no gradient (a LoRA adapter put on a packed projection
    /// gets a dense base of the same values). Only on the CPU backend (burn-flex);
    /// elsewhere it is ignored.
    pub pack: bool,
    /// Pack as with `pack`, the weights rounded to bf16 (half their bytes; f32
    /// inputs and sums, see [`crate::model::PackedWeight::Bf16`]); a tied LM head gets
    /// a bf16 copy of the embedding table, which itself stays as loaded. NF4
    /// projections stay NF4.
    pub bf16: bool,
    /// With `bf16`, round each projection's input to bf16 too and multiply with
    /// AVX-512 BF16 dot products (`vdpbf16ps`): twice an f32 FMA's multiply-adds per
    /// instruction, faster on CPUs that run it at full rate, slower on others.
    pub bf16_dot: bool,
}

/// A Hugging Face checkpoint folder: `model.safetensors` or shards listed in
/// `model.safetensors.index.json`, each memory-mapped.
#[derive(Debug)]
pub struct SafetensorsDir {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name -> index into `files`.
    index: BTreeMap<String, usize>,
}

fn map_file(path: &Path) -> Result<Mmap> {
    let f = File::open(path).map_err(io_err("open", path))?;
    // SAFETY: read-only map of a checkpoint nobody modifies while we read it.
    unsafe { Mmap::map(&f) }.map_err(io_err("map", path))
}

fn st_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl SafetensorsDir {
    /// Opens `dir`'s safetensors files and indexes their tensors.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(io_err("read", &index_path))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| Error::Json {
                    path: index_path.clone(),
                    source,
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| st_err(&index_path, "no weight_map object"))?;
            let mut files: Vec<String> = map
                .values()
                .map(|f| {
                    f.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| st_err(&index_path, "weight_map value is not a string"))
                })
                .collect::<Result<_>>()?;
            files.sort();
            files.dedup();
            files.into_iter().map(|f| dir.join(f)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for path in names {
            let mmap = map_file(&path)?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| st_err(&path, e))?;
            for name in st.names() {
                index.insert(name.to_string(), files.len());
            }
            files.push((path, mmap));
        }
        Ok(Self { dir, files, index })
    }
}

impl WeightSource for SafetensorsDir {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn load(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>, PathBuf)> {
        let &i = self.index.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.dir.clone(),
            tensor: name.to_string(),
        })?;
        let path = &self.files[i].0;
        // burn-store maps the file and reads only this tensor's bytes.
        let mut store = SafetensorsStore::from_file(path);
        let snapshot = store
            .get_snapshot(name)
            .map_err(|e| st_err(path, e))?
            .ok_or_else(|| Error::MissingTensor {
                path: path.clone(),
                tensor: name.to_string(),
            })?;
        if !matches!(snapshot.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::Dtype {
                path: path.clone(),
                tensor: name.to_string(),
                dtype: format!("{:?}", snapshot.dtype),
            });
        }
        let data = snapshot.to_data().map_err(|e| st_err(path, e))?;
        let shape = data.shape.to_vec();
        let values = data
            .convert_dtype(DType::F32)
            .into_vec::<f32>()
            .map_err(|e| st_err(path, format!("{name}: {e:?}")))?;
        Ok((shape, values, path.clone()))
    }

    fn load_quantized(&self, name: &str) -> Result<Option<(Quantized4bit, PathBuf)>> {
        let Some(&i) = self.index.get(name) else {
            return Ok(None);
        };
        let path = &self.files[i].0;
        // The pieces of a 4-bit weight may sit in several shards: parse each shard that
        // holds one of them.
        let mut shards: Vec<(usize, SafeTensors<'_>)> = Vec::new();
        for key in bioalign_quant::checkpoint::bnb_4bit_keys(name) {
            let Some(&j) = self.index.get(&key) else {
                continue;
            };
            if shards.iter().all(|(k, _)| *k != j) {
                let (p, mmap) = &self.files[j];
                shards.push((j, SafeTensors::deserialize(mmap).map_err(|e| st_err(p, e))?));
            }
        }
        let lookup = Shards {
            index: &self.index,
            shards: &shards,
        };
        if !bioalign_quant::checkpoint::is_bnb_4bit(&lookup, name) {
            return Ok(None);
        }
        let q = bioalign_quant::checkpoint::read_quantized(&lookup, name).map_err(|source| {
            Error::Quant {
                path: path.clone(),
                tensor: name.to_string(),
                source,
            }
        })?;
        Ok(Some((q, path.clone())))
    }
}

/// The parsed shards of a [`SafetensorsDir`] that hold the pieces of one 4-bit weight.
struct Shards<'a> {
    index: &'a BTreeMap<String, usize>,
    shards: &'a [(usize, SafeTensors<'a>)],
}

impl bioalign_quant::checkpoint::TensorLookup for Shards<'_> {
    fn view(&self, key: &str) -> Option<safetensors::tensor::TensorView<'_>> {
        let j = self.index.get(key)?;
        let (_, st) = self.shards.iter().find(|(k, _)| k == j)?;
        st.tensor(key).ok()
    }
}

/// A GGUF file seen through Hugging Face tensor names.
#[derive(Debug)]
pub struct GgufWeights<'a> {
    file: &'a GgufFile,
    n_heads: usize,
    n_kv_heads: usize,
}

impl<'a> GgufWeights<'a> {
    /// Wraps `file`; head counts are needed to undo the Q/K permutation.
    pub fn new(file: &'a GgufFile, config: &ModelConfig) -> Self {
        Self {
            file,
            n_heads: config.num_attention_heads,
            n_kv_heads: config.n_kv_heads(),
        }
    }

    /// The llama.cpp name of Hugging Face tensor `name`.
    pub fn gguf_name(name: &str) -> Option<String> {
        match name {
            "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
            "model.norm.weight" => return Some("output_norm.weight".into()),
            "lm_head.weight" => return Some("output.weight".into()),
            _ => {}
        }
        let rest = name.strip_prefix("model.layers.")?;
        let (i, key) = rest.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let g = match key {
            "self_attn.q_proj.weight" => "attn_q",
            "self_attn.k_proj.weight" => "attn_k",
            "self_attn.v_proj.weight" => "attn_v",
            "self_attn.o_proj.weight" => "attn_output",
            "self_attn.qkv_proj.weight" => "attn_qkv",
            "mlp.gate_proj.weight" => "ffn_gate",
            "mlp.up_proj.weight" => "ffn_up",
            "mlp.down_proj.weight" => "ffn_down",
            "mlp.gate_up_proj.weight" => "ffn_up",
            "input_layernorm.weight" => "attn_norm",
            "post_attention_layernorm.weight" => "ffn_norm",
            _ => return None,
        };
        Some(format!("blk.{i}.{g}.weight"))
    }
}

impl WeightSource for GgufWeights<'_> {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn contains(&self, name: &str) -> bool {
        // Phi-3 GGUFs keep gate and up fused in `ffn_up`; only the fused name maps then.
        if name.ends_with("mlp.up_proj.weight")
            && self.file.tensor("blk.0.ffn_gate.weight").is_err()
        {
            return false;
        }
        Self::gguf_name(name).is_some_and(|g| self.file.tensor(&g).is_ok())
    }

    fn load(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>, PathBuf)> {
        let missing = || Error::MissingTensor {
            path: self.file.path().to_path_buf(),
            tensor: name.to_string(),
        };
        if !self.contains(name) {
            return Err(missing());
        }
        let g = Self::gguf_name(name).ok_or_else(missing)?;
        let info = self.file.tensor(&g)?;
        let shape = info.shape();
        let mut values = self.file.dequantize(&g)?;
        let cols = shape.last().copied().unwrap_or(1);
        let rows = values.len() / cols.max(1);
        let heads = if name.ends_with("q_proj.weight") {
            Some(self.n_heads)
        } else if name.ends_with("k_proj.weight") {
            Some(self.n_kv_heads)
        } else {
            None
        };
        if let Some(h) = heads {
            if h == 0 || rows % (2 * h) != 0 {
                return Err(Error::BadTensor {
                    path: self.file.path().to_path_buf(),
                    tensor: g,
                    message: format!("{rows} rows cannot be {h} heads of rotary pairs"),
                });
            }
            values = reverse_qk_permutation(&values, rows, cols, h);
        }
        Ok((shape, values, self.file.path().to_path_buf()))
    }

    fn load_q8(&self, name: &str) -> Result<Option<(Q8Packed, PathBuf)>> {
        // Q/K rows are permuted in GGUF files; those are never kept 8-bit.
        if !self.contains(name)
            || name.ends_with("q_proj.weight")
            || name.ends_with("k_proj.weight")
        {
            return Ok(None);
        }
        let Some(g) = Self::gguf_name(name) else {
            return Ok(None);
        };
        let (info, ty, bytes) = self.file.tensor_bytes(&g)?;
        let shape = info.shape();
        if ty != GgmlType::Q8_0 || shape.len() != 2 {
            return Ok(None);
        }
        let path = self.file.path().to_path_buf();
        let t =
            Q8Packed::from_ggml_q8_0(bytes, shape[0], shape[1]).map_err(|source| Error::Quant {
                path: path.clone(),
                tensor: g.clone(),
                source,
            })?;
        Ok(Some((t, path)))
    }
}

fn fetch(src: &dyn WeightSource, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
    let (shape, values, path) = src.load(name)?;
    if shape != expected {
        return Err(Error::Shape {
            path,
            tensor: name.to_string(),
            expected: expected.to_vec(),
            found: shape,
        });
    }
    Ok(values)
}

/// Rows `start..start + n` of a row-major `[_, cols]` matrix.
fn rows(values: &[f32], cols: usize, start: usize, n: usize) -> Vec<f32> {
    values[start * cols..(start + n) * cols].to_vec()
}

/// A fused projection stored in 4 bits (`qkv_proj` / `gate_up_proj` of a Phi-3 bnb-4bit
/// checkpoint), split by rows into NF4 projections without an f32 copy; `None` when it is
/// stored densely.
fn split_quantized<B: Backend>(
    src: &dyn WeightSource,
    name: &str,
    counts: &[usize],
    cols: usize,
) -> Result<Option<Vec<Projection<B>>>> {
    let Some((q, path)) = src.load_quantized(name)? else {
        return Ok(None);
    };
    let rows: usize = counts.iter().sum();
    if q.shape != [rows, cols] {
        return Err(Error::Shape {
            path,
            tensor: name.to_string(),
            expected: vec![rows, cols],
            found: q.shape,
        });
    }
    let quant_err = |source| Error::Quant {
        path: path.clone(),
        tensor: name.to_string(),
        source,
    };
    q.split_rows(counts, name)
        .map_err(quant_err)?
        .into_iter()
        .map(|part| Projection::nf4(part).map_err(quant_err))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

impl<B: Backend> CausalLm<B> {
    /// Builds the decoder of `config` from `src` on `device`. Phi-3's fused `qkv_proj` and
    /// `gate_up_proj` are split into `q/k/v_proj` and `gate/up_proj`. Every missing tensor or
    /// wrong shape is an error naming tensor and file.
    pub fn from_source(
        config: &ModelConfig,
        src: &dyn WeightSource,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_source_with(config, src, device, LoadOptions::default())
    }

    /// [`Self::from_source`] with options: projections stored in 4 bits (bnb-4bit) become
    /// [`Projection::Nf4`] without an f32 copy; with `load_in_4bit` dense projection weights
    /// are quantized to NF4 as they are read.
    pub fn from_source_with(
        config: &ModelConfig,
        src: &dyn WeightSource,
        device: &B::Device,
        opts: LoadOptions,
    ) -> Result<Self> {
        config.validate(&src.path().display().to_string())?;
        let h = config.hidden_size;
        let (nh, nkv, hd) = (
            config.num_attention_heads,
            config.n_kv_heads(),
            config.head_dim(),
        );
        let inter = config.intermediate_size;
        let t2 = |v: Vec<f32>, shape: [usize; 2]| {
            Tensor::<B, 2>::from_data(TensorData::new(v, shape), device)
        };
        let t1 = |v: Vec<f32>| {
            let n = v.len();
            Tensor::<B, 1>::from_data(TensorData::new(v, [n]), device)
        };
        let dense = |name: &str, out: usize, inp: usize| -> Result<Projection<B>> {
            Ok(Projection::dense(
                &fetch(src, name, &[out, inp])?,
                out,
                inp,
                device,
            ))
        };
        let cpu = bioalign_quant::dense::is_cpu_backend::<B>();
        let bf16 = opts.bf16 && cpu;
        let pack = (opts.pack || opts.bf16) && cpu;
        let packed = |name: &str, w: &[f32], out: usize, inp: usize| -> Result<Projection<B>> {
            let w = PackedWeight::new(w, out, inp, bf16, opts.bf16_dot).map_err(|source| {
                Error::Quant {
                    path: src.path().to_path_buf(),
                    tensor: name.to_string(),
                    source,
                }
            })?;
            Ok(Projection::Packed(PackedLinear::new(w)))
        };
        let from_values =
            |name: &str, w: &[f32], out: usize, inp: usize| -> Result<Projection<B>> {
                if pack && !opts.load_in_4bit {
                    packed(name, w, out, inp)
                } else if opts.load_in_4bit {
                    let l = bioalign_quant::Nf4Linear::quantize(w, out, inp).map_err(|source| {
                        Error::Quant {
                            path: src.path().to_path_buf(),
                            tensor: name.to_string(),
                            source,
                        }
                    })?;
                    Ok(Projection::Nf4(l))
                } else {
                    Ok(Projection::dense(w, out, inp, device))
                }
            };
        let proj = |name: &str, out: usize, inp: usize| -> Result<Projection<B>> {
            if let Some((q, path)) = src.load_quantized(name)? {
                if q.shape != [out, inp] {
                    return Err(Error::Shape {
                        path,
                        tensor: name.to_string(),
                        expected: vec![out, inp],
                        found: q.shape,
                    });
                }
                return Projection::nf4(q).map_err(|source| Error::Quant {
                    path,
                    tensor: name.to_string(),
                    source,
                });
            }
            from_values(name, &fetch(src, name, &[out, inp])?, out, inp)
        };
        let norm = |name: &str| -> Result<RmsNorm<B>> {
            Ok(RmsNorm {
                weight: Param::from_tensor(t1(fetch(src, name, &[h])?)),
                eps: config.rms_norm_eps,
            })
        };
        let fused = config.architecture() == Architecture::Phi3;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let qkv_name = format!("{p}.self_attn.qkv_proj.weight");
            let (q_proj, k_proj, v_proj) =
                if fused && !src.contains(&format!("{p}.self_attn.q_proj.weight")) {
                    let n = (nh + 2 * nkv) * hd;
                    if let Some(parts) =
                        split_quantized(src, &qkv_name, &[nh * hd, nkv * hd, nkv * hd], h)?
                    {
                        let [q, k, v]: [Projection<B>; 3] =
                            parts.try_into().map_err(|_| Error::BadTensor {
                                path: src.path().to_path_buf(),
                                tensor: qkv_name.clone(),
                                message: "split into a wrong number of parts".into(),
                            })?;
                        (q, k, v)
                    } else {
                        let w = fetch(src, &qkv_name, &[n, h])?;
                        (
                            from_values(&qkv_name, &rows(&w, h, 0, nh * hd), nh * hd, h)?,
                            from_values(&qkv_name, &rows(&w, h, nh * hd, nkv * hd), nkv * hd, h)?,
                            from_values(
                                &qkv_name,
                                &rows(&w, h, (nh + nkv) * hd, nkv * hd),
                                nkv * hd,
                                h,
                            )?,
                        )
                    }
                } else {
                    (
                        proj(&format!("{p}.self_attn.q_proj.weight"), nh * hd, h)?,
                        proj(&format!("{p}.self_attn.k_proj.weight"), nkv * hd, h)?,
                        proj(&format!("{p}.self_attn.v_proj.weight"), nkv * hd, h)?,
                    )
                };
            let (gate_proj, up_proj) =
                if fused && !src.contains(&format!("{p}.mlp.gate_proj.weight")) {
                    let gu = format!("{p}.mlp.gate_up_proj.weight");
                    if let Some(parts) = split_quantized(src, &gu, &[inter, inter], h)? {
                        let [g, u]: [Projection<B>; 2] =
                            parts.try_into().map_err(|_| Error::BadTensor {
                                path: src.path().to_path_buf(),
                                tensor: gu.clone(),
                                message: "split into a wrong number of parts".into(),
                            })?;
                        (g, u)
                    } else {
                        let w = fetch(
                            src,
                            &format!("{p}.mlp.gate_up_proj.weight"),
                            &[2 * inter, h],
                        )?;
                        let gu = format!("{p}.mlp.gate_up_proj.weight");
                        (
                            from_values(&gu, &rows(&w, h, 0, inter), inter, h)?,
                            from_values(&gu, &rows(&w, h, inter, inter), inter, h)?,
                        )
                    }
                } else {
                    (
                        proj(&format!("{p}.mlp.gate_proj.weight"), inter, h)?,
                        proj(&format!("{p}.mlp.up_proj.weight"), inter, h)?,
                    )
                };
            layers.push(DecoderLayer {
                self_attn: Attention {
                    q_proj,
                    k_proj,
                    v_proj,
                    o_proj: proj(&format!("{p}.self_attn.o_proj.weight"), h, nh * hd)?,
                    n_heads: nh,
                    n_kv_heads: nkv,
                    head_dim: hd,
                },
                mlp: Mlp {
                    gate_proj,
                    up_proj,
                    down_proj: proj(&format!("{p}.mlp.down_proj.weight"), h, inter)?,
                    recompute_input: false,
                },
                input_layernorm: norm(&format!("{p}.input_layernorm.weight"))?,
                post_attention_layernorm: norm(&format!("{p}.post_attention_layernorm.weight"))?,
            });
        }
        let vocab = config.vocab_size;
        let embed_name = "model.embed_tokens.weight";
        let q8 = if !opts.dense_embeddings && bioalign_quant::dense::is_cpu_backend::<B>() {
            src.load_q8(embed_name)?
        } else {
            None
        };
        let embed_tokens = match q8 {
            Some((t, path)) => {
                if [t.rows(), t.cols()] != [vocab, h] {
                    return Err(Error::Shape {
                        path,
                        tensor: embed_name.to_string(),
                        expected: vec![vocab, h],
                        found: vec![t.rows(), t.cols()],
                    });
                }
                TokenEmbedding::q8(t)
            }
            None => TokenEmbedding::Dense(Param::from_tensor(t2(
                fetch(src, embed_name, &[vocab, h])?,
                [vocab, h],
            ))),
        };
        let lm_head = if bf16 && config.tie_word_embeddings {
            Some(packed(embed_name, &embed_tokens.values(), vocab, h)?)
        } else if pack && !config.tie_word_embeddings {
            let w = fetch(src, "lm_head.weight", &[vocab, h])?;
            Some(packed("lm_head.weight", &w, vocab, h)?)
        } else if config.tie_word_embeddings {
            None
        } else {
            Some(dense("lm_head.weight", vocab, h)?)
        };
        Ok(Self {
            model: DecoderModel {
                embed_tokens,
                layers,
                norm: norm("model.norm.weight")?,
            },
            lm_head,
            rope: Rope::new(config),
            config: config.clone(),
        })
    }
}
