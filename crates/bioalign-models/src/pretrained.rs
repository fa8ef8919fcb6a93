//! Loading a model and its tokenizer from what people have: a Hugging Face folder
//! (`config.json`, safetensors, `tokenizer.json`) or a `.gguf` file.

use std::path::Path;

use burn::tensor::backend::Backend;

use crate::config::ModelConfig;
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::model::CausalLm;
use crate::tokenizer::TextTokenizer;
use crate::weights::{GgufWeights, LoadOptions, SafetensorsDir};

/// A model with its tokenizer.
#[derive(Debug)]
pub struct Pretrained<B: Backend> {
    /// The decoder.
    pub model: CausalLm<B>,
    /// Its tokenizer (`None` for a Hugging Face folder without `tokenizer.json`).
    pub tokenizer: Option<TextTokenizer>,
}

/// Loads `path`: a `.gguf` file, or a Hugging Face folder.
pub fn load_pretrained<B: Backend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<Pretrained<B>> {
    load_pretrained_with(path, device, LoadOptions::default())
}

/// [`load_pretrained`] with options (`load_in_4bit`); a folder holding a bnb-4bit
/// checkpoint (e.g. `unsloth/*-bnb-4bit`) loads its projections in 4 bits either way.
pub fn load_pretrained_with<B: Backend>(
    path: impl AsRef<Path>,
    device: &B::Device,
    opts: LoadOptions,
) -> Result<Pretrained<B>> {
    let path = path.as_ref();
    if path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        let file = GgufFile::open(path)?;
        let config = ModelConfig::from_gguf(&file)?;
        let model =
            CausalLm::from_source_with(&config, &GgufWeights::new(&file, &config), device, opts)?;
        let tokenizer = TextTokenizer::from_gguf(&file)?;
        return Ok(Pretrained {
            model,
            tokenizer: Some(tokenizer),
        });
    }
    let config = ModelConfig::from_json_file(path.join("config.json"))?;
    let src = SafetensorsDir::open(path)?;
    let model = CausalLm::from_source_with(&config, &src, device, opts)?;
    let tokenizer = if path.join("tokenizer.json").exists() {
        Some(TextTokenizer::from_dir(path)?)
    } else {
        None
    };
    Ok(Pretrained { model, tokenizer })
}
