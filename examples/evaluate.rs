//! Evaluates a model on a split the way the reference study did, and beyond it.
//!
//! ```text
//! cargo run --release -p bioalign-examples --example evaluate -- \
//!     --model PATH [--adapter DIR] [--load-in-4bit] --data FILE [--sample 500 --seed 42] --out DIR \
//!     [--pooling mean|last|mean-padded] [--layers last|all] [--batch-size 32] \
//!     [--device cpu|cuda[:N]|wgpu]
//! ```
//!
//! Writes `DIR/metrics.json`, `DIR/predictions.parquet`, `DIR/embeddings.safetensors`,
//! `DIR/projection.png`, `DIR/confusion_generated.png` and `DIR/confusion_logprob.png`
//! (formats in docs/formats.md), with a progress bar per stage, then prints the table.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bioalign_examples::Bars;
use bioalign_metrics::{BootstrapConfig, ConfidenceInterval};
use bioalign_models::DeviceChoice;
use bioalign_models::embed::{Layers, Pooling};
use bioalign_study::{EvaluateConfig, evaluate};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PoolingArg {
    /// Mean over the real tokens.
    Mean,
    /// The last real token.
    Last,
    /// Mean over all positions, padding included (the reference's flaw, only to compare).
    MeanPadded,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LayersArg {
    /// The last hidden state, after the final norm.
    Last,
    /// Every hidden state (per-layer profile in metrics.json; the suite runs on the last).
    All,
}

#[derive(Parser, Debug)]
#[command(
    about = "Zero-shot accuracy (two rules), embedding geometry and KG alignment of a model on a split"
)]
struct Args {
    /// A Hugging Face model folder or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// A PEFT adapter folder (adapter_config.json + adapter_model.safetensors) applied to the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Quantize the base projections to NF4 while loading (block 64, double
    /// quantization), e.g. to evaluate a QLoRA adapter on the base it was trained on.
    #[arg(long)]
    load_in_4bit: bool,
    /// The split: .parquet / .csv from prepare_data, or the reference's test_pairs.csv.
    #[arg(long)]
    data: PathBuf,
    /// Rows sampled as pandas' df.sample(n, random_state=seed) (all if fewer).
    #[arg(long, default_value_t = 500)]
    sample: usize,
    /// Evaluate every row, in file order (overrides --sample).
    #[arg(long)]
    all_rows: bool,
    /// Sampling seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// How token states are pooled.
    #[arg(long, value_enum, default_value_t = PoolingArg::Mean)]
    pooling: PoolingArg,
    /// Which hidden states to pool.
    #[arg(long, value_enum, default_value_t = LayersArg::Last)]
    layers: LayersArg,
    /// Prompts / sentences per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// New tokens generated per prompt.
    #[arg(long, default_value_t = 3)]
    max_new_tokens: usize,
    /// Bootstrap resamples for the intervals (0: none).
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Skip the PNG plots.
    #[arg(long)]
    no_plots: bool,
    /// Backend and device: cpu (default), cuda or cuda:N (build with `--features cuda`),
    /// wgpu (build with `--features wgpu`).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

fn ci(c: &Option<ConfidenceInterval>) -> String {
    ci_p(c, 3)
}

fn ci_p(c: &Option<ConfidenceInterval>, p: usize) -> String {
    c.map(|c| format!("[{:.p$}, {:.p$}]", c.lower, c.upper))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    bioalign_examples::tune_allocator();
    let args = Args::parse();
    let mut cfg = EvaluateConfig::new(&args.model, &args.data);
    cfg.adapter = args.adapter.clone();
    cfg.load_in_4bit = args.load_in_4bit;
    cfg.device = args.device;
    cfg.sample = (!args.all_rows).then_some(args.sample);
    cfg.seed = args.seed;
    cfg.batch_size = args.batch_size;
    cfg.max_new_tokens = args.max_new_tokens;
    cfg.pooling = match args.pooling {
        PoolingArg::Mean => Pooling::Mean,
        PoolingArg::Last => Pooling::Last,
        PoolingArg::MeanPadded => Pooling::MeanPadded,
    };
    cfg.layers = match args.layers {
        LayersArg::Last => Layers::Last,
        LayersArg::All => Layers::All,
    };
    let boot = (args.resamples > 0).then(|| BootstrapConfig {
        n_resamples: args.resamples,
        ..BootstrapConfig::default()
    });
    cfg.bootstrap = boot.clone();
    cfg.suite.bootstrap = boot;
    cfg.plots = !args.no_plots;
    let bars = Bars::new();
    let r = evaluate(&cfg, &args.out, &bars).with_context(|| {
        format!(
            "evaluating {} on {}",
            args.model.display(),
            args.data.display()
        )
    })?;
    let z = &r.zero_shot;
    let e = &r.embeddings;
    println!(
        "{} rows of {} ({} in the file), seed {}",
        r.n_rows, r.data, r.data_rows, r.seed
    );
    println!("| measure | value | 95% CI |");
    println!("| --- | --- | --- |");
    println!(
        "| zero-shot accuracy, generated answer contains \"true\" | {:.3} | {} |",
        z.generated.report.accuracy,
        ci(&z.generated.accuracy_ci)
    );
    println!(
        "| zero-shot accuracy, log p(\" true\") > log p(\" false\") | {:.3} | {} |",
        z.logprob.report.accuracy,
        ci(&z.logprob.accuracy_ci)
    );
    println!(
        "| zero-shot ROC-AUC of log p(\" true\") - log p(\" false\") | {:.3} | {} |",
        z.roc_auc,
        ci(&z.roc_auc_ci)
    );
    println!(
        "| agreement of the two rules | {:.3} | {} |",
        z.agreement,
        ci(&z.agreement_ci)
    );
    println!(
        "| KG separation | {:.4} | {} |",
        e.kg_separation.separation,
        ci_p(&e.kg_separation_ci, 4)
    );
    println!(
        "| probe accuracy (70/30) | {:.3} | {} |",
        e.probe.accuracy,
        ci(&e.probe_accuracy_ci)
    );
    println!(
        "| silhouette, t-SNE of first {} | {:.3} | {} |",
        e.projection_rows,
        e.silhouette_tsne,
        ci(&e.silhouette_tsne_ci)
    );
    println!(
        "| link prediction ROC-AUC (entity centroids) | {:.3} | |",
        r.kg_alignment.link_prediction.roc_auc
    );
    println!(
        "predicted true: generated {} / logprob {} of {}; answers with neither word: {}",
        z.generated.n_predicted_true, z.logprob.n_predicted_true, r.n_rows, z.n_answers_neither
    );
    let t = &r.timings;
    println!(
        "wall time {:.1} s (load {:.1}, zero-shot {:.1}, embeddings {:.1}, metrics {:.1}, write {:.1}) -> {}",
        t.total_s,
        t.load_s,
        t.zero_shot_s,
        t.embed_s,
        t.metrics_s,
        t.write_s,
        args.out.display()
    );
    Ok(())
}
