//! Speed and memory of the burn decoder, printed for a side-by-side comparison with
//! transformers (`scripts/bench/models_transformers.py` measures the same things).
//!
//! ```text
//! cargo run --release -p bioalign-examples --example models_bench -- \
//!     --model data/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
//! ```
//!
//! Prints one JSON line: load seconds, prompt-forward tokens/s on a `batch x seq` batch of
//! random ids (full logits, as `model(input_ids)` returns them), greedy generation tokens/s
//! (batch 1, EOS ignored), and peak resident memory (`VmHWM`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use bioalign_models::generate::{GenerateOptions, Sampling};
use bioalign_models::model::Logits;
use bioalign_models::{Cpu, CpuDevice, load_pretrained};
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
    let device = CpuDevice::default();
    let t0 = Instant::now();
    let p = load_pretrained::<Cpu>(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let load_s = t0.elapsed().as_secs_f64();
    let tok = p.tokenizer.context("no tokenizer")?;
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
    for _ in 0..args.repeats {
        run()?;
    }
    let fwd_s = t1.elapsed().as_secs_f64() / args.repeats as f64;
    let prompt = tok.encode("The capital of France is", true)?;
    let opts = GenerateOptions {
        max_new_tokens: args.new_tokens,
        sampling: Sampling::Greedy,
        eos_ids: Vec::new(),
        pad_id: tok.pad_id(),
    };
    let t2 = Instant::now();
    let new = model.generate(&[prompt], &opts)?;
    let gen_s = t2.elapsed().as_secs_f64();
    println!(
        "{{\"tool\": \"bioalign-models (burn 0.21.0, flex)\", \"load_s\": {load_s:.3}, \"forward_tokens_per_s\": {:.1}, \"forward_batch\": [{}, {}], \"generate_tokens_per_s\": {:.2}, \"peak_rss_mib\": {:.1}}}",
        (args.batch * args.seq) as f64 / fwd_s,
        args.batch,
        args.seq,
        new[0].len() as f64 / gen_s,
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    Ok(())
}
