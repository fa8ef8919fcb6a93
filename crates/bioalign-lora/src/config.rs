//! `adapter_config.json` as PEFT writes it, and PEFT's rules for which modules are
//! adapted with which rank and alpha.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io_err};

/// `target_modules`: a list of module-name suffixes, or a regular expression string
/// (PEFT: a string is matched with `re.fullmatch`). Only the list form is supported
/// for matching; a string is kept for round-trips and rejected by [`LoraConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module names; a module is targeted when its full name equals one or ends with `.{name}`.
    List(Vec<String>),
    /// A regular expression (not supported for matching here).
    Regex(String),
}

/// `layers_to_transform`: one layer index or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayerSelection {
    /// A single layer.
    One(usize),
    /// Several layers.
    Many(Vec<usize>),
}

impl LayerSelection {
    fn contains(&self, layer: usize) -> bool {
        match self {
            Self::One(l) => *l == layer,
            Self::Many(ls) => ls.contains(&layer),
        }
    }
}

/// Every key PEFT's `LoraConfig` writes to `adapter_config.json` (PEFT 0.15-0.17).
/// Keys this crate does not use are kept as JSON values so a read-write round trip
/// loses nothing; unknown future keys land in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Per-module alpha overrides (key matched as PEFT does, see [`LoraConfig::alpha_for`]).
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// PEFT's `auto_mapping`.
    #[serde(default)]
    pub auto_mapping: serde_json::Value,
    /// The base model the adapter was made for.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// `"none"`, `"all"` or `"lora_only"`; only `"none"` is supported.
    #[serde(default = "default_bias")]
    pub bias: String,
    /// PEFT's CorDA config.
    #[serde(default)]
    pub corda_config: serde_json::Value,
    /// PEFT's EVA config.
    #[serde(default)]
    pub eva_config: serde_json::Value,
    /// Modules excluded from targeting.
    #[serde(default)]
    pub exclude_modules: Option<TargetModules>,
    /// Whether the base stores weights `[in, out]` (GPT-2 Conv1D); must be false.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Whether the adapter was saved for inference.
    #[serde(default)]
    pub inference_mode: bool,
    /// `true` (Kaiming A, zero B), `false`, or a method name.
    #[serde(default = "default_true_value")]
    pub init_lora_weights: serde_json::Value,
    /// PEFT's layer replication.
    #[serde(default)]
    pub layer_replication: serde_json::Value,
    /// Name of the layer list (`layers`, `h`, ...); `None` accepts any.
    #[serde(default)]
    pub layers_pattern: Option<TargetModules>,
    /// Only these layer indices are adapted.
    #[serde(default)]
    pub layers_to_transform: Option<LayerSelection>,
    /// LoftQ config.
    #[serde(default)]
    pub loftq_config: serde_json::Value,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// Whether LoRA B has a bias; must be false.
    #[serde(default)]
    pub lora_bias: bool,
    /// Dropout on the LoRA input.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Megatron config.
    #[serde(default)]
    pub megatron_config: serde_json::Value,
    /// Megatron core module.
    #[serde(default)]
    pub megatron_core: serde_json::Value,
    /// Extra modules trained and saved in full; unsupported (must be empty).
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Always `"LORA"`.
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    /// QALoRA group size.
    #[serde(default)]
    pub qalora_group_size: serde_json::Value,
    /// Rank.
    pub r: usize,
    /// Per-module rank overrides.
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Base model revision.
    #[serde(default)]
    pub revision: Option<String>,
    /// Which modules get adapters.
    pub target_modules: TargetModules,
    /// PEFT's target parameters.
    #[serde(default)]
    pub target_parameters: serde_json::Value,
    /// `"CAUSAL_LM"`.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Trainable token indices.
    #[serde(default)]
    pub trainable_token_indices: serde_json::Value,
    /// DoRA; must be false.
    #[serde(default)]
    pub use_dora: bool,
    /// QALoRA; must be false.
    #[serde(default)]
    pub use_qalora: bool,
    /// rsLoRA: scaling `alpha / sqrt(r)` instead of `alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Keys not listed above, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn default_bias() -> String {
    "none".into()
}
fn default_true_value() -> serde_json::Value {
    serde_json::Value::Bool(true)
}
fn default_peft_type() -> String {
    "LORA".into()
}

/// The rank, alpha and scaling chosen for one module.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModuleLora {
    /// Rank.
    pub r: usize,
    /// Alpha.
    pub alpha: f64,
    /// `alpha / r`, or `alpha / sqrt(r)` under rsLoRA.
    pub scaling: f64,
}

impl LoraConfig {
    /// The reference study's config: r 16, alpha 32, dropout 0, the seven projections.
    pub fn new(r: usize, alpha: f64, targets: &[&str]) -> Self {
        Self {
            alpha_pattern: BTreeMap::new(),
            auto_mapping: serde_json::Value::Null,
            base_model_name_or_path: None,
            bias: default_bias(),
            corda_config: serde_json::Value::Null,
            eva_config: serde_json::Value::Null,
            exclude_modules: None,
            fan_in_fan_out: false,
            inference_mode: true,
            init_lora_weights: default_true_value(),
            layer_replication: serde_json::Value::Null,
            layers_pattern: None,
            layers_to_transform: None,
            loftq_config: serde_json::json!({}),
            lora_alpha: alpha,
            lora_bias: false,
            lora_dropout: 0.0,
            megatron_config: serde_json::Value::Null,
            megatron_core: serde_json::Value::String("megatron.core".into()),
            modules_to_save: None,
            peft_type: default_peft_type(),
            qalora_group_size: serde_json::json!(16),
            r,
            rank_pattern: BTreeMap::new(),
            revision: None,
            target_modules: TargetModules::List(targets.iter().map(|s| s.to_string()).collect()),
            target_parameters: serde_json::Value::Null,
            task_type: Some("CAUSAL_LM".into()),
            trainable_token_indices: serde_json::Value::Null,
            use_dora: false,
            use_qalora: false,
            use_rslora: false,
            extra: BTreeMap::new(),
        }
    }

    /// Reads and validates `adapter_config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err("read", path))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Writes `adapter_config.json` atomically (pretty JSON, sorted keys as PEFT does).
    pub fn save(&self, path: &Path) -> Result<()> {
        let value = serde_json::to_value(self).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let text = serde_json::to_string_pretty(&value).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        bioalign_io::atomic_write_bytes(path, text.as_bytes())?;
        Ok(())
    }

    /// Checks every field this crate relies on; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::Config { field, reason });
        if self.peft_type != "LORA" {
            return bad("peft_type", format!("{:?} is not LORA", self.peft_type));
        }
        if self.r == 0 {
            return bad("r", "rank must be > 0".into());
        }
        if !self.lora_alpha.is_finite() {
            return bad("lora_alpha", format!("{} is not finite", self.lora_alpha));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return bad(
                "lora_dropout",
                format!("{} not in [0, 1)", self.lora_dropout),
            );
        }
        if self.bias != "none" {
            return bad(
                "bias",
                format!("{:?} unsupported, only \"none\"", self.bias),
            );
        }
        if self.lora_bias || self.use_dora || self.use_qalora || self.fan_in_fan_out {
            return bad(
                "use_dora",
                "lora_bias, use_dora, use_qalora and fan_in_fan_out must be false".into(),
            );
        }
        if matches!(self.target_modules, TargetModules::Regex(_)) {
            return bad(
                "target_modules",
                "regular expressions are not supported".into(),
            );
        }
        if let Some(TargetModules::Regex(_)) = self.exclude_modules {
            return bad(
                "exclude_modules",
                "regular expressions are not supported".into(),
            );
        }
        if self.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return bad("modules_to_save", "not supported".into());
        }
        if let Some((k, _)) = self.rank_pattern.iter().find(|(_, r)| **r == 0) {
            return bad("rank_pattern", format!("rank of {k:?} must be > 0"));
        }
        if let Some((k, _)) = self.alpha_pattern.iter().find(|(_, a)| !a.is_finite()) {
            return bad("alpha_pattern", format!("alpha of {k:?} is not finite"));
        }
        Ok(())
    }

    /// Whether PEFT would adapt the module with full name `name`
    /// (e.g. `model.layers.3.self_attn.q_proj`).
    pub fn targets(&self, name: &str) -> bool {
        let suffix_match = |list: &[String]| {
            list.iter()
                .any(|t| name == t || name.ends_with(&format!(".{t}")))
        };
        let TargetModules::List(list) = &self.target_modules else {
            return false;
        };
        if !suffix_match(list) {
            return false;
        }
        if let Some(TargetModules::List(ex)) = &self.exclude_modules
            && suffix_match(ex)
        {
            return false;
        }
        if let Some(sel) = &self.layers_to_transform {
            match layer_index(name, self.layers_pattern.as_ref()) {
                Some(i) => return sel.contains(i),
                None => return false,
            }
        }
        true
    }

    /// Rank, alpha and scaling for module `name`, following PEFT's
    /// `get_pattern_key`: a pattern key matches when it equals the name or the name
    /// ends with `.{key}`; the first matching key wins (keys in sorted order, where
    /// PEFT uses the JSON file's order).
    pub fn module_lora(&self, name: &str) -> ModuleLora {
        let r = pattern_lookup(&self.rank_pattern, name)
            .copied()
            .unwrap_or(self.r);
        let alpha = pattern_lookup(&self.alpha_pattern, name)
            .copied()
            .unwrap_or(self.lora_alpha);
        let scaling = if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        };
        ModuleLora { r, alpha, scaling }
    }
}

/// PEFT's `get_pattern_key`: `re.match(rf"(.*\.)?({key})$", name)`; keys are taken
/// literally here (no regex metacharacters).
fn pattern_lookup<'a, V>(map: &'a BTreeMap<String, V>, name: &str) -> Option<&'a V> {
    map.iter()
        .find(|(k, _)| name == k.as_str() || name.ends_with(&format!(".{k}")))
        .map(|(_, v)| v)
}

/// The layer index in a module name: the number after `.{layers_pattern}.` (any of
/// `layers`, `h`, `blocks`, `layer` when no pattern is given), as PEFT does.
fn layer_index(name: &str, pattern: Option<&TargetModules>) -> Option<usize> {
    let pats: Vec<String> = match pattern {
        Some(TargetModules::List(l)) => l.clone(),
        Some(TargetModules::Regex(s)) => vec![s.clone()],
        None => vec!["layers".into(), "h".into(), "blocks".into(), "layer".into()],
    };
    let parts: Vec<&str> = name.split('.').collect();
    parts.windows(2).find_map(|w| {
        if pats.iter().any(|p| p == w[0]) {
            w[1].parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_rules() {
        let mut c = LoraConfig::new(8, 16.0, &["q_proj", "v_proj"]);
        assert!(c.targets("model.layers.0.self_attn.q_proj"));
        assert!(!c.targets("model.layers.0.self_attn.k_proj"));
        assert!(!c.targets("model.layers.0.self_attn.xq_proj"));
        c.layers_to_transform = Some(LayerSelection::Many(vec![1, 3]));
        assert!(!c.targets("model.layers.0.self_attn.q_proj"));
        assert!(c.targets("model.layers.3.self_attn.q_proj"));
        c.rank_pattern.insert("layers.3.self_attn.q_proj".into(), 4);
        c.alpha_pattern.insert("v_proj".into(), 4.0);
        let m = c.module_lora("model.layers.3.self_attn.q_proj");
        assert_eq!((m.r, m.alpha, m.scaling), (4, 16.0, 4.0));
        let m = c.module_lora("model.layers.1.self_attn.v_proj");
        assert_eq!((m.r, m.alpha, m.scaling), (8, 4.0, 0.5));
        c.use_rslora = true;
        let m = c.module_lora("model.layers.1.self_attn.q_proj");
        assert!((m.scaling - 16.0 / 8f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn validate_names_field() {
        let mut c = LoraConfig::new(0, 16.0, &["q_proj"]);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`r`"), "{e}");
        c.r = 4;
        c.lora_alpha = f64::NAN;
        assert!(c.validate().unwrap_err().to_string().contains("lora_alpha"));
    }
}
