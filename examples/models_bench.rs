//! Speed and memory of the burn decoder, printed for a side-by-side comparison with
//! transformers (`scripts/bench/models_transformers.py` measures the same things).
//!
//! ```text
//! cargo run --release -p bioalign-examples --example models_bench -- \
//!     --model data/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
//! ```
//!
//! Prints one JSON line: load seconds, prompt-forward tokens/s on a `batch x seq` batch of
//! random ids (full logits, as `model(input_ids)` returns them; the mean over the timed
//! passes, and the fastest pass, a figure less moved by other load on a shared machine), greedy generation tokens/s
//! (batch 1, EOS ignored; the second of two runs, the first printed too), and peak resident memory (`VmHWM`).
//!
//! `--device cuda` (build with `--features cuda`) times the same on burn-cuda; every
//! timed pass ends by reading a value back, so the device work is inside the time.
//! A model without a tokenizer (random weights, say) is timed on a fixed prompt of ids.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use bioalign_models::generate::{GenerateOptions, Sampling};
use bioalign_models::model::Logits;
use bioalign_models::{DeviceChoice, LoadOptions, load_pretrained_with};
use burn::tensor::backend::Backend;
use clap::Parser;
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
#[command(about = "Load time, prompt tokens/s, generation tokens/s and peak memory")]
struct Args {
    /// A Hugging Face model folder or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// Sequences per forward batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 32)]
    seq: usize,
    /// Timed forward passes (after one warm-up).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// New tokens for the generation figure.
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// Backend and device: cpu (default), cuda or cuda:N (`--features cuda`), wgpu.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Quantize the dense projections to NF4 while loading.
    #[arg(long)]
    load_in_4bit: bool,
    /// Expand an 8-bit (GGUF Q8_0) token embedding to f32 instead of keeping it 8-bit.
    #[arg(long)]
    dense_embeddings: bool,
    /// Precision of the projections and LM head: f32 (the reference), bf16 (weights
    /// rounded to bf16, f32 inputs and sums) or bf16-dot (inputs rounded too, AVX-512
    /// BF16 dot products).
    #[arg(long, value_enum, default_value_t = bioalign_examples::Dtype::F32)]
    dtype: bioalign_examples::Dtype,
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() -> Result<()> {
    bioalign_examples::tune_allocator();
    let args = Args::parse();
    bioalign_examples::on_device!(args.device, run(&args))
}

fn run<B: Backend>(args: &Args, device: &B::Device) -> Result<()> {
    let t0 = Instant::now();
    let opts = LoadOptions {
        dense_embeddings: args.dense_embeddings,
        ..args.dtype.load_options(args.load_in_4bit)
    };
    let p = load_pretrained_with::<B>(&args.model, device, opts)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let load_s = t0.elapsed().as_secs_f64();
    let tok = p.tokenizer;
    let model = p.model;
    let vocab = model.config.vocab_size as u32;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let ids: Vec<u32> = (0..args.batch * args.seq)
        .map(|_| rng.random_range(100..vocab))
        .collect();
    let run = || -> Result<()> {
        let out = model.forward(&ids, None, args.batch, None, Logits::All, false)?;
        let l = out.logits.context("no logits")?;
        // Force the computation to finish by reading one value back.
        let _ = l
            .narrow(0, 0, 1)
            .narrow(1, 0, 1)
            .narrow(2, 0, 1)
            .into_data();
        Ok(())
    };
    run()?;
    let t1 = Instant::now();
    let mut best_s = f64::INFINITY;
    for _ in 0..args.repeats {
        let t = Instant::now();
        run()?;
        best_s = best_s.min(t.elapsed().as_secs_f64());
    }
    let fwd_s = t1.elapsed().as_secs_f64() / args.repeats as f64;
    let (prompt, pad_id) = match &tok {
        Some(tok) => (tok.encode("The capital of France is", true)?, tok.pad_id()),
        None => ((1..7).map(|i| i * 101 % vocab).collect(), 0),
    };
    let opts = GenerateOptions {
        max_new_tokens: args.new_tokens,
        sampling: Sampling::Greedy,
        eos_ids: Vec::new(),
        pad_id,
    };
    // The first generation compiles and tunes a device's kernels for each cache length
    // (burn-cuda / wgpu); the figure is the second, with the first printed beside it.
    let t2 = Instant::now();
    let first = model.generate(std::slice::from_ref(&prompt), &opts)?;
    let first_s = t2.elapsed().as_secs_f64();
    let t3 = Instant::now();
    let new = model.generate(&[prompt], &opts)?;
    let gen_s = t3.elapsed().as_secs_f64();
    println!(
        "{{\"tool\": \"bioalign-models (burn 0.21.0)\", \"device\": \"{}\", \"load_s\": {load_s:.3}, \"forward_tokens_per_s\": {:.1}, \"forward_best_tokens_per_s\": {:.1}, \"forward_batch\": [{}, {}], \"generate_tokens_per_s\": {:.2}, \"generate_first_tokens_per_s\": {:.2}, \"peak_rss_mib\": {:.1}}}",
        args.device,
        (args.batch * args.seq) as f64 / fwd_s,
        (args.batch * args.seq) as f64 / best_s,
        args.batch,
        args.seq,
        new[0].len() as f64 / gen_s,
        first[0].len() as f64 / first_s,
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    Ok(())
}
