//! Thin command-line binaries over the BioAlign crates; see the `[[example]]`
//! entries in this package's `Cargo.toml`. Logic lives in the `bioalign-*` crates;
//! the one piece shared here is [`load_model`]: the model, its tokenizer and an optional
//! PEFT adapter, as the `embed`, `generate` and `logits` examples load them.

use std::path::Path;

use anyhow::{Context, Result};
use bioalign_models::model::CausalLm;
use bioalign_models::tokenizer::TextTokenizer;
use bioalign_models::{Cpu, CpuDevice, LoadOptions, load_pretrained_with};

/// Loads `model` (a `.gguf` file or a Hugging Face folder) on the CPU, in 4 bits on
/// request, with its tokenizer, and applies the PEFT adapter in `adapter` if given
/// (printing its rank and alpha to stderr).
pub fn load_model(
    model: &Path,
    load_in_4bit: bool,
    adapter: Option<&Path>,
    device: &CpuDevice,
) -> Result<(CausalLm<Cpu>, TextTokenizer)> {
    let p = load_pretrained_with::<Cpu>(model, device, LoadOptions { load_in_4bit })
        .with_context(|| format!("loading {}", model.display()))?;
    let tok = p
        .tokenizer
        .context("the model has no tokenizer (tokenizer.json or GGUF metadata)")?;
    let mut model = p.model;
    if let Some(dir) = adapter {
        let lora = model
            .load_adapter(dir)
            .with_context(|| format!("loading the adapter {}", dir.display()))?;
        eprintln!(
            "adapter {} (r {}, alpha {})",
            dir.display(),
            lora.r,
            lora.lora_alpha
        );
    }
    Ok((model, tok))
}
