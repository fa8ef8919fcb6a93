//! Model configuration with Hugging Face `config.json` field names (Llama, Mistral, Phi-3),
//! validated once, up front; also built from GGUF metadata.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// The decoder families this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Architecture {
    /// Llama 2 / 3 (and SmolLM2).
    Llama,
    /// Mistral (sliding-window attention).
    Mistral,
    /// Phi-3 (fused `qkv_proj` / `gate_up_proj`, long-context RoPE).
    Phi3,
}

impl Architecture {
    /// From a Hugging Face `model_type` or GGUF `general.architecture`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "llama" => Some(Self::Llama),
            "mistral" => Some(Self::Mistral),
            "phi3" => Some(Self::Phi3),
            _ => None,
        }
    }
}

/// A token id or a list of them (`eos_token_id` may be either in `config.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// One id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(i) => vec![*i],
            Self::Many(v) => v.clone(),
        }
    }
}

/// `rope_scaling` / `rope_parameters` as Hugging Face writes them (all fields optional;
/// which are needed depends on the type).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RopeScalingJson {
    /// `rope_type` (newer files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<String>,
    /// `type` (older files; Phi-3 writes `longrope` or `su`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// `rope_theta` (inside `rope_parameters`, transformers 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// `factor` (linear, llama3, longrope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// llama3 `low_freq_factor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    /// llama3 `high_freq_factor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
    /// llama3 / longrope `original_max_position_embeddings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
    /// longrope `long_factor` (one per rotary frequency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_factor: Option<Vec<f64>>,
    /// longrope `short_factor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_factor: Option<Vec<f64>>,
    /// longrope `attention_factor` (derived from `factor` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_factor: Option<f64>,
    /// `partial_rotary_factor` (Phi-3, inside `rope_parameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_rotary_factor: Option<f64>,
}

/// The rotary-embedding variant, resolved from the config.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Positions divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1 frequency-dependent scaling.
    Llama3 {
        /// `factor`
        factor: f64,
        /// `low_freq_factor`
        low_freq_factor: f64,
        /// `high_freq_factor`
        high_freq_factor: f64,
        /// `original_max_position_embeddings`
        original_max_position_embeddings: usize,
    },
    /// Phi-3 LongRoPE: per-frequency factors, long ones once a sequence passes
    /// `original_max_position_embeddings`, and a cos/sin scale `attention_factor`.
    LongRope {
        /// `short_factor`
        short_factor: Vec<f64>,
        /// `long_factor`
        long_factor: Vec<f64>,
        /// `original_max_position_embeddings`
        original_max_position_embeddings: usize,
        /// Scale of cos and sin.
        attention_factor: f64,
    },
}

/// A decoder's configuration with Hugging Face field names.
///
/// Deserialize from `config.json` with [`ModelConfig::from_json_file`] (which validates), or
/// build from GGUF metadata with [`ModelConfig::from_gguf`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `model_type`: `llama`, `mistral` or `phi3`.
    pub model_type: String,
    /// `vocab_size`
    pub vocab_size: usize,
    /// `hidden_size`
    pub hidden_size: usize,
    /// `intermediate_size`
    pub intermediate_size: usize,
    /// `num_hidden_layers`
    pub num_hidden_layers: usize,
    /// `num_attention_heads`
    pub num_attention_heads: usize,
    /// `num_key_value_heads` (defaults to `num_attention_heads`).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// `head_dim` (defaults to `hidden_size / num_attention_heads`).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// `hidden_act` (only `silu` is supported).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// `max_position_embeddings`
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// `original_max_position_embeddings` (Phi-3, top level).
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
    /// `rms_norm_eps`
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// `rope_theta` (older files; newer ones put it in `rope_parameters`).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// `rope_scaling` (older files).
    #[serde(default)]
    pub rope_scaling: Option<RopeScalingJson>,
    /// `rope_parameters` (transformers 5).
    #[serde(default)]
    pub rope_parameters: Option<RopeScalingJson>,
    /// `partial_rotary_factor` (Phi-3, top level in older files).
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    /// `tie_word_embeddings`
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// `attention_bias`
    #[serde(default)]
    pub attention_bias: bool,
    /// `mlp_bias`
    #[serde(default)]
    pub mlp_bias: bool,
    /// `sliding_window` (Mistral, Phi-3; `null` means full attention).
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// `bos_token_id`
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` (one or several).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// `pad_token_id`
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn default_act() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    2048
}
fn default_eps() -> f64 {
    1e-6
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(crate::error::io_err("read", path))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    /// Parses and validates a `config.json` text; `source_name` names it in errors.
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| Error::Config {
            source_name: source_name.to_string(),
            field: "(json)".into(),
            message: e.to_string(),
        })?;
        cfg.validate(source_name)?;
        Ok(cfg)
    }

    /// Builds the config from GGUF metadata (`{arch}.block_count`, ...) and validates it.
    /// Embeddings are tied when the file has no `output.weight`.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch = f.get_str("general.architecture")?.to_string();
        let source_name = format!("GGUF metadata of {}", f.path().display());
        if Architecture::from_name(&arch).is_none() {
            return Err(Error::UnknownArchitecture {
                source_name,
                architecture: arch,
            });
        }
        let key = |k: &str| format!("{arch}.{k}");
        let usize_key = |k: &str| -> Result<usize> { Ok(f.get_u64(&key(k))? as usize) };
        let opt_usize = |k: &str| -> Result<Option<usize>> {
            match f.metadata().get(&key(k)) {
                None => Ok(None),
                Some(_) => usize_key(k).map(Some),
            }
        };
        let opt_u32 = |k: &str| -> Result<Option<u32>> {
            match f.metadata().get(k) {
                None => Ok(None),
                Some(_) => Ok(Some(f.get_u64(k)? as u32)),
            }
        };
        let num_attention_heads = usize_key("attention.head_count")?;
        let hidden_size = usize_key("embedding_length")?;
        let vocab_size = match opt_usize("vocab_size")? {
            Some(v) => v,
            None => f.get_array("tokenizer.ggml.tokens")?.len(),
        };
        let head_dim = match opt_usize("attention.key_length")? {
            Some(d) => Some(d),
            None => opt_usize("rope.dimension_count")?
                .filter(|&d| d != hidden_size / num_attention_heads.max(1)),
        };
        let rope_theta = match f.metadata().get(&key("rope.freq_base")) {
            Some(_) => Some(f.get_f64(&key("rope.freq_base"))?),
            None => None,
        };
        let cfg = Self {
            model_type: arch.clone(),
            vocab_size,
            hidden_size,
            intermediate_size: usize_key("feed_forward_length")?,
            num_hidden_layers: usize_key("block_count")?,
            num_attention_heads,
            num_key_value_heads: opt_usize("attention.head_count_kv")?,
            head_dim,
            hidden_act: default_act(),
            max_position_embeddings: opt_usize("context_length")?.unwrap_or_else(default_max_pos),
            original_max_position_embeddings: None,
            rms_norm_eps: f.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta,
            rope_scaling: gguf_rope_scaling(f, &arch, &source_name)?,
            rope_parameters: None,
            partial_rotary_factor: None,
            tie_word_embeddings: f.tensor("output.weight").is_err(),
            attention_bias: false,
            mlp_bias: false,
            sliding_window: opt_usize("attention.sliding_window")?,
            bos_token_id: opt_u32("tokenizer.ggml.bos_token_id")?,
            eos_token_id: opt_u32("tokenizer.ggml.eos_token_id")?.map(TokenIds::One),
            pad_token_id: opt_u32("tokenizer.ggml.padding_token_id")?,
        };
        cfg.validate(&source_name)?;
        Ok(cfg)
    }

    /// The architecture (validated to be known).
    pub fn architecture(&self) -> Architecture {
        Architecture::from_name(&self.model_type).unwrap_or(Architecture::Llama)
    }

    /// `num_key_value_heads`, defaulted.
    pub fn n_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// `head_dim`, defaulted.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The RoPE base frequency (`rope_theta`, top level or in `rope_parameters`).
    pub fn rope_theta(&self) -> f64 {
        self.rope_theta
            .or(self.rope_parameters.as_ref().and_then(|r| r.rope_theta))
            .or(self.rope_scaling.as_ref().and_then(|r| r.rope_theta))
            .unwrap_or(10_000.0)
    }

    /// The number of leading head dimensions that rotate (`head_dim * partial_rotary_factor`).
    pub fn rotary_dim(&self) -> usize {
        let f = self
            .partial_rotary_factor
            .or(self
                .rope_parameters
                .as_ref()
                .and_then(|r| r.partial_rotary_factor))
            .unwrap_or(1.0);
        (self.head_dim() as f64 * f) as usize
    }

    /// End-of-sequence ids.
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    fn rope_json(&self) -> Option<&RopeScalingJson> {
        // `rope_scaling` wins when it names a type; transformers 5 files keep everything
        // in `rope_parameters`.
        match (&self.rope_scaling, &self.rope_parameters) {
            (Some(s), _) => Some(s),
            (None, Some(p)) => Some(p),
            (None, None) => None,
        }
    }

    /// The resolved rotary scaling; errors name the missing or bad field.
    pub fn rope(&self) -> Result<RopeScaling> {
        self.rope_with_source("config")
    }

    fn rope_with_source(&self, source_name: &str) -> Result<RopeScaling> {
        let err = |field: &str, message: String| Error::Config {
            source_name: source_name.to_string(),
            field: field.to_string(),
            message,
        };
        let Some(r) = self.rope_json() else {
            return Ok(RopeScaling::Default);
        };
        let ty = r
            .rope_type
            .as_deref()
            .or(r.type_.as_deref())
            .unwrap_or("default");
        let need = |v: Option<f64>, name: &str| -> Result<f64> {
            match v {
                Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                Some(x) => Err(err(
                    &format!("rope_scaling.{name}"),
                    format!("{x} is not a positive number"),
                )),
                None => Err(err(
                    &format!("rope_scaling.{name}"),
                    format!("required by rope type {ty}"),
                )),
            }
        };
        Ok(match ty {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear {
                factor: need(r.factor, "factor")?,
            },
            "llama3" => {
                let low = need(r.low_freq_factor, "low_freq_factor")?;
                let high = need(r.high_freq_factor, "high_freq_factor")?;
                if high <= low {
                    return Err(err(
                        "rope_scaling.high_freq_factor",
                        format!("{high} must exceed low_freq_factor {low}"),
                    ));
                }
                RopeScaling::Llama3 {
                    factor: need(r.factor, "factor")?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: r
                        .original_max_position_embeddings
                        .ok_or_else(|| {
                            err(
                                "rope_scaling.original_max_position_embeddings",
                                "required by llama3".into(),
                            )
                        })?,
                }
            }
            "longrope" | "su" => {
                let n = self.rotary_dim() / 2;
                let factors = |v: &Option<Vec<f64>>, name: &str| -> Result<Vec<f64>> {
                    let v = v.clone().ok_or_else(|| {
                        err(
                            &format!("rope_scaling.{name}"),
                            "required by longrope".into(),
                        )
                    })?;
                    if v.len() != n {
                        return Err(err(
                            &format!("rope_scaling.{name}"),
                            format!("has {} values, expected rotary_dim / 2 = {n}", v.len()),
                        ));
                    }
                    if let Some(x) = v.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                        return Err(err(
                            &format!("rope_scaling.{name}"),
                            format!("value {x} is not positive"),
                        ));
                    }
                    Ok(v)
                };
                let original = r
                    .original_max_position_embeddings
                    .or(self.original_max_position_embeddings)
                    .ok_or_else(|| {
                        err(
                            "original_max_position_embeddings",
                            "required by longrope".into(),
                        )
                    })?;
                let factor = r
                    .factor
                    .unwrap_or(self.max_position_embeddings as f64 / original as f64);
                let attention_factor = match r.attention_factor {
                    Some(a) => a,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
                };
                RopeScaling::LongRope {
                    short_factor: factors(&r.short_factor, "short_factor")?,
                    long_factor: factors(&r.long_factor, "long_factor")?,
                    original_max_position_embeddings: original,
                    attention_factor,
                }
            }
            other => {
                return Err(err(
                    "rope_scaling.rope_type",
                    format!("{other} not supported (default, linear, llama3, longrope)"),
                ));
            }
        })
    }

    /// Checks every constraint the decoder relies on; the error names the field.
    pub fn validate(&self, source_name: &str) -> Result<()> {
        let err = |field: &str, message: String| Error::Config {
            source_name: source_name.to_string(),
            field: field.to_string(),
            message,
        };
        if Architecture::from_name(&self.model_type).is_none() {
            return Err(Error::UnknownArchitecture {
                source_name: source_name.to_string(),
                architecture: self.model_type.clone(),
            });
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.n_kv_heads()),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(err(name, "must be positive".into()));
            }
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(err(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if self.head_dim() == 0 || !self.head_dim().is_multiple_of(2) {
            return Err(err(
                "head_dim",
                format!("{} must be positive and even", self.head_dim()),
            ));
        }
        if !self.num_attention_heads.is_multiple_of(self.n_kv_heads()) {
            return Err(err(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.n_kv_heads(),
                    self.num_attention_heads
                ),
            ));
        }
        let rd = self.rotary_dim();
        if rd == 0 || !rd.is_multiple_of(2) || rd > self.head_dim() {
            return Err(err(
                "partial_rotary_factor",
                format!(
                    "rotary dimension {rd} must be even and in 2..=head_dim {}",
                    self.head_dim()
                ),
            ));
        }
        if self.hidden_act != "silu" {
            return Err(err(
                "hidden_act",
                format!("{} not supported (silu)", self.hidden_act),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(err(
                "rms_norm_eps",
                format!("{} must be positive", self.rms_norm_eps),
            ));
        }
        let theta = self.rope_theta();
        if !(theta.is_finite() && theta > 1.0) {
            return Err(err("rope_theta", format!("{theta} must be above 1")));
        }
        if self.sliding_window == Some(0) {
            return Err(err("sliding_window", "must be positive or null".into()));
        }
        if self.attention_bias || self.mlp_bias {
            return Err(err(
                if self.attention_bias {
                    "attention_bias"
                } else {
                    "mlp_bias"
                },
                "biases are not supported by these architectures' checkpoints".into(),
            ));
        }
        self.rope_with_source(source_name)?;
        Ok(())
    }
}

/// The rotary scaling a GGUF file stores, as the Hugging Face `rope_scaling` it stands for:
/// - Phi-3's `rope_factors_short.weight` / `rope_factors_long.weight` tensors, with
///   `{arch}.rope.scaling.original_context_length` and `{arch}.rope.scaling.attn_factor`
///   (llama.cpp's convert_hf_to_gguf writes them from a `longrope` config): `longrope`.
/// - llama.cpp's per-frequency divisors `rope_freqs.weight`, which convert_hf_to_gguf
///   computes from a Llama 3.1 `llama3` config (frequency `i` turns at
///   `base^(-2i/d) / rope_freqs[i]`): a `longrope` whose short and long factors are both
///   those divisors and whose cos/sin scale is 1, which is the same rotation at every
///   length. A `linear` `{arch}.rope.scaling.factor` multiplies them, as in llama.cpp.
/// - `{arch}.rope.scaling.type` `linear` with `{arch}.rope.scaling.factor`: `linear`.
///
/// Anything else (`yarn`, an unknown type) is an error naming the key: a model loaded
/// with the wrong rotation would still run, with quietly wrong outputs.
fn gguf_rope_scaling(
    f: &GgufFile,
    arch: &str,
    source_name: &str,
) -> Result<Option<RopeScalingJson>> {
    let key = |k: &str| format!("{arch}.{k}");
    let err = |field: String, message: String| Error::Config {
        source_name: source_name.to_string(),
        field,
        message,
    };
    let opt_f64 = |k: &str| -> Result<Option<f64>> {
        match f.metadata().get(&key(k)) {
            None => Ok(None),
            Some(_) => f.get_f64(&key(k)).map(Some),
        }
    };
    let opt_usize = |k: &str| -> Result<Option<usize>> {
        match f.metadata().get(&key(k)) {
            None => Ok(None),
            Some(_) => f.get_u64(&key(k)).map(|v| Some(v as usize)),
        }
    };
    let factors = |name: &str| -> Result<Vec<f64>> {
        Ok(f.dequantize(name)?.into_iter().map(f64::from).collect())
    };
    let ty = match f.metadata().get(&key("rope.scaling.type")) {
        None => None,
        Some(_) => Some(f.get_str(&key("rope.scaling.type"))?.to_string()),
    };
    let linear = match ty.as_deref() {
        None | Some("none") => None,
        Some("linear") => {
            let factor = opt_f64("rope.scaling.factor")?.ok_or_else(|| {
                err(
                    key("rope.scaling.factor"),
                    "required by rope scaling type linear".into(),
                )
            })?;
            if !(factor.is_finite() && factor > 0.0) {
                return Err(err(
                    key("rope.scaling.factor"),
                    format!("{factor} is not a positive number"),
                ));
            }
            Some(factor)
        }
        // Phi-3 files may name the type; its factors come from the tensors below.
        Some("longrope" | "su") => None,
        Some(other) => {
            return Err(err(
                key("rope.scaling.type"),
                format!("{other} not supported (none, linear, longrope; llama3 as rope_freqs)"),
            ));
        }
    };
    let has = |name: &str| f.tensor(name).is_ok();
    if has("rope_factors_long.weight") || has("rope_factors_short.weight") {
        let original = opt_usize("rope.scaling.original_context_length")?.ok_or_else(|| {
            err(
                key("rope.scaling.original_context_length"),
                "required with rope_factors_long / rope_factors_short".into(),
            )
        })?;
        return Ok(Some(RopeScalingJson {
            rope_type: Some("longrope".into()),
            short_factor: Some(factors("rope_factors_short.weight")?),
            long_factor: Some(factors("rope_factors_long.weight")?),
            original_max_position_embeddings: Some(original),
            attention_factor: opt_f64("rope.scaling.attn_factor")?,
            ..RopeScalingJson::default()
        }));
    }
    if has("rope_freqs.weight") {
        let scale = linear.unwrap_or(1.0);
        let divisors: Vec<f64> = factors("rope_freqs.weight")?
            .into_iter()
            .map(|d| d * scale)
            .collect();
        let length = opt_usize("context_length")?.unwrap_or_else(default_max_pos);
        return Ok(Some(RopeScalingJson {
            rope_type: Some("longrope".into()),
            short_factor: Some(divisors.clone()),
            long_factor: Some(divisors),
            original_max_position_embeddings: Some(length),
            attention_factor: Some(1.0),
            ..RopeScalingJson::default()
        }));
    }
    Ok(linear.map(|factor| RopeScalingJson {
        rope_type: Some("linear".into()),
        factor: Some(factor),
        ..RopeScalingJson::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_json() -> serde_json::Value {
        serde_json::json!({
            "model_type": "llama", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "eos_token_id": [1, 2],
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        })
    }

    fn parse(v: &serde_json::Value) -> Result<ModelConfig> {
        ModelConfig::from_json_str(&v.to_string(), "test.json")
    }

    #[test]
    fn llama3_config_resolves() {
        let c = parse(&llama_json()).unwrap();
        assert_eq!(c.head_dim(), 8);
        assert_eq!(c.n_kv_heads(), 2);
        assert_eq!(c.eos_ids(), vec![1, 2]);
        assert_eq!(c.rope_theta(), 500000.0);
        assert!(matches!(c.rope().unwrap(), RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&str, serde_json::Value, &str); 6] = [
            (
                "num_attention_heads",
                serde_json::json!(7),
                "num_attention_heads",
            ),
            (
                "num_key_value_heads",
                serde_json::json!(3),
                "num_key_value_heads",
            ),
            ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
            ("rms_norm_eps", serde_json::json!(0.0), "rms_norm_eps"),
            ("sliding_window", serde_json::json!(0), "sliding_window"),
            ("vocab_size", serde_json::json!(0), "vocab_size"),
        ];
        for (field, value, named) in cases {
            let mut j = llama_json();
            j[field] = value;
            let e = parse(&j).unwrap_err().to_string();
            assert!(e.contains(named) && e.contains("test.json"), "{field}: {e}");
        }
        let mut j = llama_json();
        j["rope_scaling"]["low_freq_factor"] = serde_json::json!(null);
        let e = parse(&j).unwrap_err().to_string();
        assert!(e.contains("rope_scaling.low_freq_factor"), "{e}");
        let mut j = llama_json();
        j["model_type"] = serde_json::json!("gpt2");
        assert!(matches!(parse(&j), Err(Error::UnknownArchitecture { .. })));
    }

    #[test]
    fn phi3_longrope_checks_factor_count() {
        let mut j = llama_json();
        j["model_type"] = serde_json::json!("phi3");
        j["num_key_value_heads"] = serde_json::json!(8);
        j["original_max_position_embeddings"] = serde_json::json!(4096);
        j["max_position_embeddings"] = serde_json::json!(131072);
        j["rope_scaling"] = serde_json::json!({"type": "longrope",
            "long_factor": [1.0, 2.0, 3.0, 4.0], "short_factor": [1.0, 1.0, 1.0, 1.0]});
        let c = parse(&j).unwrap();
        match c.rope().unwrap() {
            RopeScaling::LongRope {
                attention_factor, ..
            } => {
                let want = (1.0 + (32.0f64).ln() / (4096f64).ln()).sqrt();
                assert!((attention_factor - want).abs() < 1e-12);
            }
            r => panic!("{r:?}"),
        }
        j["rope_scaling"]["long_factor"] = serde_json::json!([1.0, 2.0]);
        let e = parse(&j).unwrap_err().to_string();
        assert!(
            e.contains("rope_scaling.long_factor") && e.contains("expected rotary_dim / 2 = 4"),
            "{e}"
        );
    }

    #[test]
    fn transformers5_rope_parameters() {
        let mut j = llama_json();
        j.as_object_mut().unwrap().remove("rope_theta");
        j.as_object_mut().unwrap().remove("rope_scaling");
        j["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 1234.0});
        let c = parse(&j).unwrap();
        assert_eq!(c.rope_theta(), 1234.0);
        assert_eq!(c.rope().unwrap(), RopeScaling::Default);
    }
}
