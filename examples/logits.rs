//! Dumps a model's logits at every position of each prompt, optionally with a PEFT adapter,
//! for comparing with other stacks (`scripts/check/peft_roundtrip.py` compares them with
//! transformers + PEFT).
//!
//! ```text
//! cargo run --release -p bioalign-examples --example logits -- \
//!     --model PATH [--adapter DIR] [--load-in-4bit] --prompt TEXT [--prompt TEXT ...] \
//!     --out FILE.safetensors [--device cpu|cuda[:N]|wgpu]
//! ```
//!
//! Each prompt is tokenized with the model's tokenizer (special tokens included) and run
//! alone (batch of one, no padding). The safetensors file holds, for prompt `i`:
//! `prompt.{i}.ids` (i64 `[s]`) and `prompt.{i}.logits` (f32 `[s, vocab]`); its metadata
//! names the model, the adapter and the prompt texts (`prompt.{i}.text`).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bioalign_models::DeviceChoice;
use bioalign_models::model::Logits;
use burn::tensor::backend::Backend;
use clap::Parser;
use safetensors::tensor::{Dtype, TensorView};

#[derive(Parser, Debug)]
#[command(
    about = "All-position logits of each prompt, with an optional PEFT adapter, to safetensors"
)]
struct Args {
    /// A Hugging Face model folder or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// A PEFT adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Quantize the projection weights to NF4 while loading.
    #[arg(long)]
    load_in_4bit: bool,
    /// Precision of the projections and LM head: f32 (the reference), bf16 (weights
    /// rounded to bf16: half their memory; f32 inputs and sums) or bf16-dot (inputs
    /// rounded too, AVX-512 BF16 dot products).
    #[arg(long, value_enum, default_value_t = bioalign_examples::Dtype::F32)]
    dtype: bioalign_examples::Dtype,
    /// A prompt; repeat for several (each runs alone).
    #[arg(long, required = true, num_args = 1..)]
    prompt: Vec<String>,
    /// Output .safetensors file (written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Backend and device: cpu (default), cuda or cuda:N (build with `--features cuda`),
    /// wgpu (build with `--features wgpu`).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

fn main() -> Result<()> {
    bioalign_examples::tune_allocator();
    let args = Args::parse();
    bioalign_examples::on_device!(args.device, run(&args))
}

fn run<B: Backend>(args: &Args, device: &B::Device) -> Result<()> {
    let (model, tok) = bioalign_examples::load_model::<B>(
        &args.model,
        args.dtype.load_options(args.load_in_4bit),
        args.adapter.as_deref(),
        device,
    )?;
    let vocab = model.config.vocab_size;
    // name -> (shape, little-endian bytes, dtype)
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = Vec::new();
    let mut meta: HashMap<String, String> = HashMap::new();
    meta.insert("model".into(), args.model.display().to_string());
    if let Some(dir) = &args.adapter {
        meta.insert("adapter".into(), dir.display().to_string());
    }
    meta.insert("load_in_4bit".into(), args.load_in_4bit.to_string());
    for (i, text) in args.prompt.iter().enumerate() {
        let ids = tok.encode(text, true)?;
        if ids.is_empty() {
            bail!("prompt {i} ({text:?}) has no tokens");
        }
        let out = model.forward(&ids, None, 1, None, Logits::All, false)?;
        let logits = out
            .logits
            .context("the forward pass returned no logits")?
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("logits are not f32: {e:?}"))?;
        let s = ids.len();
        if logits.len() != s * vocab {
            bail!(
                "got {} logits for {s} positions x {vocab} ids",
                logits.len()
            );
        }
        eprintln!("prompt {i}: {s} tokens");
        tensors.push((
            format!("prompt.{i}.ids"),
            vec![s],
            ids.iter()
                .flat_map(|&x| i64::from(x).to_le_bytes())
                .collect(),
            Dtype::I64,
        ));
        tensors.push((
            format!("prompt.{i}.logits"),
            vec![s, vocab],
            logits.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::F32,
        ));
        meta.insert(format!("prompt.{i}.text"), text.clone());
    }
    let views = tensors
        .iter()
        .map(|(n, shape, bytes, dtype)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| anyhow::anyhow!("{n}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(meta))?;
    bioalign_io::atomic_write_bytes(&args.out, &bytes)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({} prompts)",
        args.out.display(),
        args.prompt.len()
    );
    Ok(())
}
