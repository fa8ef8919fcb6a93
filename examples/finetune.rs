//! QLoRA / LoRA fine-tuning of a Llama / Mistral / Phi-3 model on a CTD split, writing a
//! PEFT adapter folder.
//!
//! ```text
//! cargo run --release -p bioalign-examples --example finetune -- \
//!     --model PATH --data DIR --out DIR [--template alpaca|zero-shot|sentence|FILE] \
//!     [--loss response|full] [--r 16 --alpha 32 --dropout 0 --targets q_proj,k_proj,...] \
//!     [--lr 2e-4 --batch 2 --grad-accum 4 --max-steps 2000 --warmup 10 --optim adamw|adamw8bit] \
//!     [--load-in-4bit] [--seed 42] [--resume] [--device cpu|cuda[:N]|wgpu]
//! ```
//!
//! `--data` is `prepare_data`'s folder (its `train.parquet`; a seeded `--eval-rows` slice
//! of it is held out for the periodic held-out loss) or one split file. Writes into
//! `--out`: `adapter_config.json` + `adapter_model.safetensors` (PEFT), `train_log.csv`,
//! `loss.png`, `checkpoint-N/`, `finetune_config.json` and `finetune_summary.json`.
//! A NaN or infinite loss stops the run with the step and the last good checkpoint.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bioalign_examples::Bars;
use bioalign_lora::optim::OptimizerKind;
use bioalign_lora::{LossMode, TargetModules};
use bioalign_models::DeviceChoice;
use bioalign_study::finetune::{REFERENCE_TARGETS, Template};
use bioalign_study::{FinetuneConfig, finetune};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LossArg {
    /// Only the response (answer + EOS) tokens.
    Response,
    /// Every token after the first (the reference study's setting).
    Full,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OptimArg {
    /// f32 AdamW (torch.optim.AdamW).
    Adamw,
    /// bitsandbytes' 8-bit blockwise AdamW.
    Adamw8bit,
}

#[derive(Parser, Debug)]
#[command(about = "LoRA / QLoRA fine-tuning on a CTD split, writing a PEFT adapter folder")]
struct Args {
    /// A Hugging Face model folder or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// prepare_data's output folder (uses train.parquet) or one .parquet/.csv split file.
    #[arg(long)]
    data: PathBuf,
    /// Output folder (PEFT adapter, train_log.csv, loss.png, checkpoint-N/).
    #[arg(long)]
    out: PathBuf,
    /// Training text: alpaca (the reference's), zero-shot (evaluate's prompt + " {answer}"),
    /// sentence ("{text}: {answer}"), or a file with {text}/{gene}/{disease}/{answer}.
    #[arg(long, default_value = "alpaca")]
    template: String,
    /// Tokens the loss is taken over.
    #[arg(long, value_enum, default_value_t = LossArg::Response)]
    loss: LossArg,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    r: usize,
    /// LoRA alpha (scaling alpha / r).
    #[arg(long, default_value_t = 32.0)]
    alpha: f64,
    /// Dropout on the LoRA input.
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Adapted projections (comma-separated module names).
    #[arg(long, value_delimiter = ',', default_values_t = REFERENCE_TARGETS.map(String::from))]
    targets: Vec<String>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Rows per micro-batch.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 4)]
    grad_accum: usize,
    /// Optimizer steps (the schedule's length).
    #[arg(long, default_value_t = 2000)]
    max_steps: usize,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimArg::Adamw8bit)]
    optim: OptimArg,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Quantize the base projections to NF4 while loading (QLoRA).
    #[arg(long)]
    load_in_4bit: bool,
    /// Seed of the adapters' initialisation, the data order and the held-out slice.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Continue from the latest checkpoint-N/ in --out.
    #[arg(long)]
    resume: bool,
    /// Truncation length in tokens.
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// Training rows held out for the held-out loss (0: none).
    #[arg(long, default_value_t = 100)]
    eval_rows: usize,
    /// Held-out loss every N steps (0: never).
    #[arg(long, default_value_t = 50)]
    eval_every: usize,
    /// Checkpoint every N steps (0: only the final adapter).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    /// Stop after N steps as if interrupted (the schedule still spans --max-steps;
    /// continue later with --resume).
    #[arg(long)]
    stop_after: Option<usize>,
    /// Clip the gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Recompute activations in the backward pass (burn's BalancedCheckpointing).
    #[arg(long)]
    gradient_checkpointing: bool,
    /// The down_proj adapters recompute their input (the SwiGLU output) in the
    /// backward instead of keeping it: less memory (SmolLM2: about 10% of the peak),
    /// a few percent slower, the same adapter bit for bit.
    #[arg(long)]
    recompute_mlp_input: bool,
    /// Batch rows of similar length together (less padding).
    #[arg(long)]
    group_by_length: bool,
    /// Threads running a step's micro-batches side by side, each on its own model
    /// replica (0: one per core, at most --grad-accum). The adapter is the same bit
    /// for bit whatever the count.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Backend and device: cpu (default), cuda or cuda:N (build with `--features cuda`),
    /// wgpu (build with `--features wgpu`).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

fn main() -> Result<()> {
    bioalign_examples::tune_allocator();
    let args = Args::parse();
    let mut cfg = FinetuneConfig::new(&args.model, &args.data, &args.out);
    cfg.template = args.template.parse::<Template>().context("--template")?;
    cfg.lora.r = args.r;
    cfg.lora.lora_alpha = args.alpha;
    cfg.lora.lora_dropout = args.dropout;
    cfg.lora.target_modules = TargetModules::List(args.targets.clone());
    let t = &mut cfg.train;
    t.seed = args.seed;
    t.batch_size = args.batch;
    t.grad_accum = args.grad_accum;
    t.max_steps = args.max_steps;
    t.lr = args.lr;
    t.warmup = args.warmup;
    t.optimizer = match args.optim {
        OptimArg::Adamw => OptimizerKind::AdamW,
        OptimArg::Adamw8bit => OptimizerKind::AdamW8bit,
    };
    t.adamw.weight_decay = args.weight_decay;
    t.max_grad_norm = (args.max_grad_norm > 0.0).then_some(args.max_grad_norm);
    t.loss = match args.loss {
        LossArg::Response => LossMode::Response,
        LossArg::Full => LossMode::Full,
    };
    t.max_len = args.max_len;
    t.group_by_length = args.group_by_length;
    t.eval_every = (args.eval_every > 0).then_some(args.eval_every);
    t.checkpoint_every = (args.checkpoint_every > 0).then_some(args.checkpoint_every);
    t.stop_after = args.stop_after;
    t.workers = args.workers;
    cfg.load_in_4bit = args.load_in_4bit;
    cfg.device = args.device;
    cfg.gradient_checkpointing = args.gradient_checkpointing;
    cfg.recompute_mlp_input = args.recompute_mlp_input;
    cfg.resume = args.resume;
    cfg.eval_rows = args.eval_rows;

    let bars = Bars::new();
    let s = finetune(&cfg, &bars).with_context(|| {
        format!(
            "fine-tuning {} on {}",
            args.model.display(),
            args.data.display()
        )
    })?;
    let fmt_loss = |l: Option<f64>| l.map(|l| format!("{l:.4}")).unwrap_or("-".into());
    println!(
        "{} steps on {} rows ({} held out); {} modules adapted, {} trainable parameters",
        s.steps, s.train_rows, s.eval_rows, s.adapted_modules, s.trainable_params
    );
    println!(
        "held-out loss {} (before) -> {} (last); last training loss {}",
        fmt_loss(s.first_eval_loss),
        fmt_loss(s.last_eval_loss),
        fmt_loss(s.last_train_loss)
    );
    println!(
        "{:.0} tokens/s; wall time {:.1} s (load {:.1}, training {:.1}); peak RSS {}",
        s.tokens_per_s,
        s.wall_s,
        s.load_s,
        s.train_s,
        s.peak_rss_bytes
            .map(|b| format!("{:.0} MiB", b as f64 / (1 << 20) as f64))
            .unwrap_or("unknown".into())
    );
    println!("adapter -> {}", s.adapter_dir.display());
    Ok(())
}
