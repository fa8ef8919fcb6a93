//! The whole study for one model in one command: prepare the CTD dataset, evaluate the
//! base model, fine-tune (QLoRA), evaluate the fine-tuned model, do both again on the
//! entity-held-out split, and write the report.
//!
//! ```text
//! cargo run --release -p bioalign-examples --example reproduce -- \
//!     [--model PATH] [--steps 300] [--sample 500] [--out out/reproduce] \
//!     [--template zero-shot|alpaca|sentence|FILE] \
//!     [--ctd FILE | --data-dir DIR] [--seed 42] [--load-in-4bit true|false] \
//!     [--skip-entity-heldout] [--batch-size 32] [--resamples 1000] \
//!     [--device cpu|cuda[:N]|wgpu]
//! ```
//!
//! Writes `DIR/report.md`, `DIR/report.json` and the PNG figures (formats in
//! docs/formats.md), with every intermediate folder beside them and `DIR/stages.json`;
//! a progress bar per stage. Rerun the same command after an interruption: finished
//! stages are skipped and the fine-tuning resumes from its last checkpoint.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bioalign_examples::Bars;
use bioalign_models::DeviceChoice;
use bioalign_study::reproduce::{ReproduceConfig, StageEvent, reproduce};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    about = "Prepare, evaluate, fine-tune, evaluate again (pair and entity-held-out splits), report"
)]
struct Args {
    /// A .gguf file, a Hugging Face Llama / Mistral / Phi-3 folder or a bnb-4bit
    /// checkpoint (default: SmolLM2-135M-Instruct from datasets/fetch.sh).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Optimizer steps of each fine-tuning.
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// Training text: zero-shot (evaluate's prompt + " {answer}": the question the
    /// zero-shot rules score), alpaca (the reference's text, which SmolLM2-135M does not
    /// transfer to the zero-shot prompt), sentence, or a file with {text}/{answer}.
    #[arg(long, default_value = "zero-shot")]
    template: String,
    /// Rows evaluated per split.
    #[arg(long, default_value_t = 500)]
    sample: usize,
    /// The run folder.
    #[arg(long, default_value = "out/reproduce")]
    out: PathBuf,
    /// CTD gene-disease file (default: data/ctd/CTD_curated_genes_diseases.csv).
    #[arg(long)]
    ctd: Option<PathBuf>,
    /// Use this prepare_data folder instead of preparing one.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Master seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Quantize the base projections to NF4 while fine-tuning (QLoRA).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    load_in_4bit: bool,
    /// Only the pair split.
    #[arg(long)]
    skip_entity_heldout: bool,
    /// Prompts per forward pass when evaluating.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Bootstrap resamples of every interval.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Training rows held out for the held-out loss.
    #[arg(long, default_value_t = 100)]
    eval_rows: usize,
    /// Permutations of the t-SNE silhouette test (two t-SNEs each).
    #[arg(long, default_value_t = 19)]
    silhouette_permutations: usize,
    /// Backend and device: cpu (default), cuda or cuda:N (build with `--features cuda`),
    /// wgpu (build with `--features wgpu`).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

fn main() -> Result<()> {
    bioalign_examples::tune_allocator();
    let args = Args::parse();
    let mut cfg = ReproduceConfig::new();
    if let Some(m) = args.model {
        cfg.model = m;
    }
    if let Some(c) = args.ctd {
        cfg.ctd = c;
    }
    cfg.data_dir = args.data_dir;
    cfg.out = args.out;
    cfg.steps = args.steps;
    cfg.template = args.template.parse().context("--template")?;
    cfg.sample = args.sample;
    cfg.seed = args.seed;
    cfg.load_in_4bit = args.load_in_4bit;
    cfg.device = args.device;
    cfg.entity_heldout = !args.skip_entity_heldout;
    cfg.batch_size = args.batch_size;
    cfg.resamples = args.resamples;
    cfg.eval_rows = args.eval_rows;
    cfg.compare.permutations_silhouette = args.silhouette_permutations;
    let bars = Bars::new();
    let mut on_stage = |e: StageEvent<'_>| match e {
        StageEvent::Start { index, total, name } => {
            bars.set_prefix(format!("[{index}/{total}] {name}"));
            // Stages without their own progress (prepare, report) get a spinner line.
            eprintln!("[{index}/{total}] {name} ...");
        }
        StageEvent::Skipped { index, total, name } => {
            eprintln!("[{index}/{total}] {name}: finished in an earlier run, skipped");
        }
        StageEvent::Done {
            index,
            total,
            name,
            wall_s,
        } => eprintln!("[{index}/{total}] {name}: done in {wall_s:.1} s"),
    };
    let s = reproduce(&cfg, &bars, &mut on_stage)
        .with_context(|| format!("reproducing into {}", cfg.out.display()))?;
    for c in &s.report.comparisons {
        println!("{} ({} rows)", c.title, c.n_rows);
        for m in &c.measures {
            let ch = &m.change;
            println!(
                "  {:<62} base {:.3}  tuned {:.3}  change {:+.3} ({})  p {}",
                m.name,
                ch.base,
                ch.tuned,
                ch.diff,
                ch.diff_pct.map_or("n/a".into(), |p| format!("{p:+.1}%")),
                ch.p_value.map_or("n/a".into(), |p| format!("{p:.4}"))
            );
        }
    }
    println!(
        "ran {:?}, skipped {:?}; report: {}",
        s.ran,
        s.skipped,
        cfg.out.join("report.md").display()
    );
    Ok(())
}
