//! Generates a continuation of a prompt with a Llama / Mistral / Phi-3 model.
//!
//! ```text
//! cargo run --release -p bioalign-examples --example generate -- \
//!     --model PATH [--adapter DIR] --prompt TEXT [--max-new-tokens N] [--temperature T --seed S] \
//!     [--device cpu|cuda[:N]|wgpu]
//! ```
//!
//! `PATH` is a Hugging Face folder (config.json, safetensors, tokenizer.json) or a `.gguf`
//! file; model and tokenizer both come from it. Greedy unless `--temperature` is given.
//! Prints the continuation, then load time and tokens/s on stderr.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use bioalign_models::DeviceChoice;
use bioalign_models::generate::{GenerateOptions, Sampling};
use burn::tensor::backend::Backend;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Greedy or sampled generation with a KV cache, stopping on EOS")]
struct Args {
    /// A Hugging Face model folder or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// The prompt (tokenized with the model's tokenizer, special tokens included).
    #[arg(long)]
    prompt: String,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sample at this temperature instead of greedy decoding.
    #[arg(long)]
    temperature: Option<f32>,
    /// Nucleus sampling threshold (with --temperature).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the k most likely tokens when sampling (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Quantize the projection weights to NF4 while loading (block 64, double
    /// quantization); a bnb-4bit checkpoint loads in 4 bits either way.
    #[arg(long)]
    load_in_4bit: bool,
    /// Precision of the projections and LM head: f32 (the reference), bf16 (weights
    /// rounded to bf16: half their memory; f32 inputs and sums) or bf16-dot (inputs
    /// rounded too, AVX-512 BF16 dot products).
    #[arg(long, value_enum, default_value_t = bioalign_examples::Dtype::F32)]
    dtype: bioalign_examples::Dtype,
    /// A PEFT adapter folder (adapter_config.json + adapter_model.safetensors) applied to
    /// the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
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
    let t0 = Instant::now();
    let (model, tok) = bioalign_examples::load_model::<B>(
        &args.model,
        args.dtype.load_options(args.load_in_4bit),
        args.adapter.as_deref(),
        device,
    )?;
    let load_s = t0.elapsed().as_secs_f64();
    let prompt = tok.encode(&args.prompt, true)?;
    let sampling = match args.temperature {
        None => Sampling::Greedy,
        Some(temperature) => Sampling::Sample {
            temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
    };
    let mut eos_ids = model.config.eos_ids();
    eos_ids.extend(tok.eos_id());
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling,
        eos_ids,
        pad_id: tok.pad_id(),
    };
    let t1 = Instant::now();
    let new = model.generate(std::slice::from_ref(&prompt), &opts)?;
    let gen_s = t1.elapsed().as_secs_f64();
    println!("{}", tok.decode(&new[0], false)?);
    eprintln!(
        "load {load_s:.2} s; prompt {} tokens; {} new tokens in {gen_s:.2} s ({:.1} tokens/s)",
        prompt.len(),
        new[0].len(),
        new[0].len() as f64 / gen_s
    );
    Ok(())
}
