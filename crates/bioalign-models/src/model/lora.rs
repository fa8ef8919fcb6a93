//! LoRA inside the decoder: adapters on the seven projections of each layer (PEFT
//! names `model.layers.{i}.self_attn.q_proj`, ..., `model.layers.{i}.mlp.down_proj`),
//! the frozen base, PEFT adapter folders in, merging, a dense Hugging Face
//! checkpoint out, and the traits through which bioalign-lora's trainer drives it.

use std::collections::BTreeMap;
use std::path::Path;

use bioalign_lora::{AdapterSlot, LoraConfig, LoraModel, TargetModules};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::{CausalLm, Logits, Projection};
use crate::config::Architecture;
use crate::error::{Error, Result, io_err};

/// The projections of a layer, in the fixed order adapters are visited, with their
/// module names relative to `model.layers.{i}`.
const PROJECTIONS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

fn lora_err(e: bioalign_lora::Error) -> Error {
    Error::Lora(e)
}

impl<B: Backend> CausalLm<B> {
    /// Every layer projection with its PEFT module name
    /// (`model.layers.{i}.self_attn.q_proj`), layer by layer in [`PROJECTIONS`] order.
    pub fn projections(&self) -> Vec<(String, &Projection<B>)> {
        let mut out = Vec::with_capacity(7 * self.model.layers.len());
        for (i, l) in self.model.layers.iter().enumerate() {
            let ps = [
                &l.self_attn.q_proj,
                &l.self_attn.k_proj,
                &l.self_attn.v_proj,
                &l.self_attn.o_proj,
                &l.mlp.gate_proj,
                &l.mlp.up_proj,
                &l.mlp.down_proj,
            ];
            for (name, p) in PROJECTIONS.iter().zip(ps) {
                out.push((format!("model.layers.{i}.{name}"), p));
            }
        }
        out
    }

    /// [`CausalLm::projections`], mutably.
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Projection<B>)> {
        let mut out = Vec::with_capacity(7 * self.model.layers.len());
        for (i, l) in self.model.layers.iter_mut().enumerate() {
            let ps = [
                &mut l.self_attn.q_proj,
                &mut l.self_attn.k_proj,
                &mut l.self_attn.v_proj,
                &mut l.self_attn.o_proj,
                &mut l.mlp.gate_proj,
                &mut l.mlp.up_proj,
                &mut l.mlp.down_proj,
            ];
            for (name, p) in PROJECTIONS.iter().zip(ps) {
                out.push((format!("model.layers.{i}.{name}"), p));
            }
        }
        out
    }

    /// Number of projections carrying a LoRA adapter.
    pub fn n_adapters(&self) -> usize {
        self.projections()
            .iter()
            .filter(|(_, p)| p.is_lora())
            .count()
    }

    /// Sets [`Mlp::recompute_input`](super::layers::Mlp::recompute_input) in every
    /// layer: `down_proj` adapters recompute their input in the backward rather than
    /// keep it (less memory in training, the same gradients).
    pub fn set_recompute_mlp_input(&mut self, on: bool) {
        for layer in &mut self.model.layers {
            layer.mlp.recompute_input = on;
        }
    }

    /// Freezes the whole model (no parameter but LoRA A/B requires a gradient, so
    /// autodiff tracks only the adapter path) and wraps every projection that
    /// `cfg.targets(name)` selects with a fresh adapter: A Kaiming-uniform drawn
    /// from `ChaCha8Rng(seed)` module by module in visit order, B zeros, rank and
    /// alpha from `cfg.module_lora(name)`, dropout `cfg.lora_dropout`. Returns the
    /// number of adapted modules. Errors: an invalid config, a model that already
    /// has adapters, Phi-3's fused `qkv_proj` / `gate_up_proj` as targets (this
    /// decoder splits them), or no module matched.
    pub fn apply_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<usize> {
        cfg.validate().map_err(lora_err)?;
        let n = self.n_adapters();
        if n > 0 {
            return Err(Error::Adapter {
                message: format!(
                    "the model already has {n} LoRA adapters; merge them first or load a fresh model"
                ),
            });
        }
        if let TargetModules::List(targets) = &cfg.target_modules
            && let Some(t) = targets
                .iter()
                .find(|t| t.ends_with("qkv_proj") || t.ends_with("gate_up_proj"))
        {
            return Err(Error::Adapter {
                message: format!(
                    "target module {t:?}: fused projections are not supported (the decoder splits \
                     Phi-3's qkv_proj / gate_up_proj; target q_proj, k_proj, v_proj, gate_proj, up_proj)"
                ),
            });
        }
        let device = self.device();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut model = self.clone().no_grad();
        let mut count = 0;
        for (name, p) in model.projections_mut() {
            if !cfg.targets(&name) {
                continue;
            }
            let lora = cfg.module_lora(&name);
            *p = p
                .clone()
                .with_lora(lora, cfg.lora_dropout, &mut rng, &device);
            count += 1;
        }
        if count == 0 {
            return Err(Error::Adapter {
                message: format!(
                    "no module of this {} model matches target_modules {:?} (modules are named \
                     model.layers.N.self_attn.{{q,k,v,o}}_proj and model.layers.N.mlp.{{gate,up,down}}_proj)",
                    self.config.model_type, cfg.target_modules
                ),
            });
        }
        *self = model;
        Ok(count)
    }

    /// Reads a PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`)
    /// and applies it: [`CausalLm::apply_lora`] with its config, then the tensors.
    /// Errors (the model is left unchanged): a bad config, a tensor of another shape,
    /// a missing or an extra tensor, each naming the file and tensor.
    pub fn load_adapter(&mut self, dir: &Path) -> Result<LoraConfig> {
        let cfg =
            LoraConfig::load(&dir.join(bioalign_lora::peft::CONFIG_FILE)).map_err(lora_err)?;
        let mut model = self.clone();
        model.apply_lora(&cfg, 0)?;
        let device = self.device();
        bioalign_lora::load_adapter(&mut model, dir, None, &device).map_err(lora_err)?;
        *self = model;
        Ok(cfg)
    }

    /// Folds every adapter into a dense projection: `W + scaling * B A` (an NF4 base
    /// is dequantized first). Afterwards the model has no adapters.
    pub fn merge_lora(&mut self) {
        let device = self.device();
        for (_, p) in self.projections_mut() {
            if p.is_lora() {
                *p = p.clone().merged(&device);
            }
        }
    }

    /// The checkpoint tensors under their Hugging Face names as `(shape, f32 values)`:
    /// embeddings, norms, every projection's effective weight (NF4 dequantized,
    /// adapters merged), `lm_head.weight` unless tied. Phi-3's projections are fused
    /// back into `qkv_proj` and `gate_up_proj` as transformers stores them.
    pub fn hf_tensors(&self) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
        let mut out = BTreeMap::new();
        let h = self.config.hidden_size;
        let vec1 = |t: Tensor<B, 1>| bioalign_lora::tensor_vec(t);
        out.insert(
            "model.embed_tokens.weight".to_string(),
            (
                vec![self.config.vocab_size, h],
                self.model.embed_tokens.values(),
            ),
        );
        out.insert(
            "model.norm.weight".to_string(),
            (vec![h], vec1(self.model.norm.weight.val())),
        );
        let fused = self.config.architecture() == Architecture::Phi3;
        for (i, l) in self.model.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let mut put = |name: &str, ps: &[&Projection<B>]| {
                let inp = ps[0].dims().0;
                let mut rows = 0;
                let mut w = Vec::new();
                for q in ps {
                    rows += q.dims().1;
                    w.extend(q.dense_weight_out_in());
                }
                out.insert(format!("{p}.{name}.weight"), (vec![rows, inp], w));
            };
            let a = &l.self_attn;
            let m = &l.mlp;
            if fused {
                put("self_attn.qkv_proj", &[&a.q_proj, &a.k_proj, &a.v_proj]);
                put("mlp.gate_up_proj", &[&m.gate_proj, &m.up_proj]);
            } else {
                put("self_attn.q_proj", &[&a.q_proj]);
                put("self_attn.k_proj", &[&a.k_proj]);
                put("self_attn.v_proj", &[&a.v_proj]);
                put("mlp.gate_proj", &[&m.gate_proj]);
                put("mlp.up_proj", &[&m.up_proj]);
            }
            put("self_attn.o_proj", &[&a.o_proj]);
            put("mlp.down_proj", &[&m.down_proj]);
            out.insert(
                format!("{p}.input_layernorm.weight"),
                (vec![h], vec1(l.input_layernorm.weight.val())),
            );
            out.insert(
                format!("{p}.post_attention_layernorm.weight"),
                (vec![h], vec1(l.post_attention_layernorm.weight.val())),
            );
        }
        if let Some(head) = &self.lm_head {
            let (inp, o) = head.dims();
            out.insert(
                "lm_head.weight".to_string(),
                (vec![o, inp], head.dense_weight_out_in()),
            );
        }
        out
    }

    /// `config.json` in Hugging Face form: the model's config with `architectures`,
    /// `torch_dtype` and the resolved `rope_theta` filled in, null fields left out.
    pub fn hf_config_json(&self) -> Result<String> {
        let mut v = serde_json::to_value(&self.config).map_err(|e| Error::Adapter {
            message: format!("serializing the model config: {e}"),
        })?;
        let obj = v.as_object_mut().ok_or_else(|| Error::Adapter {
            message: "the model config does not serialize to a JSON object".into(),
        })?;
        obj.retain(|_, x| !x.is_null());
        let arch = match self.config.architecture() {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Phi3 => "Phi3ForCausalLM",
        };
        obj.insert("architectures".into(), serde_json::json!([arch]));
        obj.insert("torch_dtype".into(), serde_json::json!("float32"));
        if !obj.contains_key("rope_theta") && !obj.contains_key("rope_parameters") {
            obj.insert(
                "rope_theta".into(),
                serde_json::json!(self.config.rope_theta()),
            );
        }
        serde_json::to_string_pretty(&v).map_err(|e| Error::Adapter {
            message: format!("serializing the model config: {e}"),
        })
    }

    /// Writes a dense Hugging Face checkpoint folder that transformers and
    /// [`crate::load_pretrained`] load: `config.json` ([`CausalLm::hf_config_json`])
    /// and `model.safetensors` (f32, [`CausalLm::hf_tensors`]: adapters merged, NF4
    /// dequantized, no `lm_head.weight` when tied), each written atomically. The
    /// tokenizer is not written (copy `tokenizer.json` beside it if needed).
    pub fn save_merged(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err("create folder", dir))?;
        let path = dir.join("model.safetensors");
        let tensors = self.hf_tensors();
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .into_iter()
            .map(|(n, (shape, v))| {
                let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                (n, shape, b)
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, shape, b)| {
                TensorView::new(Dtype::F32, shape.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::Safetensors {
                        path: path.clone(),
                        message: format!("{n}: {e}"),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let data = safetensors::serialize(views, Some(meta)).map_err(|e| Error::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
        drop(bytes);
        bioalign_io::atomic_write_bytes(&path, &data)?;
        let config = self.hf_config_json()?;
        bioalign_io::atomic_write_bytes(&dir.join("config.json"), config.as_bytes())?;
        Ok(())
    }
}

impl<B: Backend> LoraModel<B> for CausalLm<B> {
    fn visit_adapters(&self, f: &mut dyn FnMut(&str, &dyn AdapterSlot<B>)) {
        for (name, p) in self.projections() {
            if let Some(a) = p.adapter() {
                f(&name, a);
            }
        }
    }

    fn visit_adapters_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn AdapterSlot<B>)) {
        for (name, p) in self.projections_mut() {
            if let Some(a) = p.adapter_mut() {
                f(&name, a);
            }
        }
    }
}

/// Host copy of an integer tensor.
fn int_vec<B: Backend>(t: Tensor<B, 2, Int>) -> Vec<u32> {
    t.into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("i64 data after convert")
        .into_iter()
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
        .collect()
}

impl<B: Backend> bioalign_lora::CausalLm<B> for CausalLm<B> {
    /// The forward pass without logits over right-padded `ids` / `mask` (pulled to
    /// the host: the decoder builds its attention bias there).
    ///
    /// Panics on ids outside the vocabulary; `bioalign_lora::train` checks every
    /// example against [`bioalign_lora::CausalLm::vocab_size`] before the first step.
    fn hidden(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2, Bool>) -> Tensor<B, 3> {
        let [batch, _] = ids.dims();
        let ids = int_vec(ids);
        let mask = int_vec(mask.int());
        match self.forward(&ids, Some(&mask), batch, None, Logits::None, false) {
            Ok(out) => out.last_hidden,
            Err(e) => panic!("decoder forward in training: {e}"),
        }
    }

    /// The last layer runs its queries, attention output and MLP at `rows` only
    /// ([`CausalLm::last_hidden_rows`]).
    fn hidden_rows(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Bool>,
        rows: &[i64],
    ) -> Tensor<B, 2> {
        let [batch, _] = ids.dims();
        let ids = int_vec(ids);
        let mask = int_vec(mask.int());
        let rows: Vec<usize> = rows
            .iter()
            .map(|&r| usize::try_from(r).unwrap_or(usize::MAX))
            .collect();
        match self.last_hidden_rows(&ids, &mask, batch, &rows) {
            Ok(h) => h,
            Err(e) => panic!("decoder forward in training: {e}"),
        }
    }

    fn lm_head(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.lm_head {
            Some(p) => p.forward(hidden),
            None => self.model.embed_tokens.head(hidden),
        }
    }

    fn vocab_size(&self) -> Option<usize> {
        Some(self.config.vocab_size)
    }
}
