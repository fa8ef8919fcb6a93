//! `finetune`: QLoRA supervised fine-tuning of a decoder on a CTD split (SPEC.md
//! section 2), the data side and the driver around bioalign-lora's trainer.
//!
//! 1. Rows come from `prepare_data`'s folder (`DIR/train.parquet`) or one split file;
//!    a seeded slice of `eval_rows` of them is held out (never trained on) for the
//!    periodic held-out loss. The test split is never read.
//! 2. Each row is rendered with a training template ([`Template`]: the reference's
//!    Alpaca text, the zero-shot prompt, a bare sentence form, or a user file with
//!    `{text}`, `{gene}`, `{disease}`, `{answer}`), cut at `{answer}` into a prompt
//!    and a response, and tokenized separately: prompt with the tokenizer's special
//!    tokens (BOS where it adds one), response = answer (and whatever follows it in
//!    the template) + EOS.
//! 3. The model is loaded on `Autodiff<Cpu>` (or `Autodiff<Cpu, BalancedCheckpointing>`
//!    with gradient checkpointing), its projections optionally quantized to NF4 while
//!    loading (`load_in_4bit`: QLoRA), adapters attached by [`CausalLm::apply_lora`],
//!    and [`bioalign_lora::train`] runs the loop: checkpoints, resume, `train_log.csv`,
//!    `loss.png`, and the PEFT adapter folder in `out`.
//! 4. `out/finetune_config.json` records the settings before training starts and
//!    `out/finetune_summary.json` the outcome (held-out loss before and after,
//!    throughput, wall time, peak resident memory), both written atomically.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use bioalign_ctd::{Fields, ZERO_SHOT_TEMPLATE};
use bioalign_lora::{LoraConfig, TrainConfig};
use bioalign_models::model::CausalLm;
use bioalign_models::tokenizer::TextTokenizer;
use bioalign_models::{Cpu, CpuDevice, DeviceChoice, LoadOptions, load_pretrained_with};

use crate::error::{Error, Result, file_err, invalid};
use crate::evaluate::read_split;
use crate::progress::{Progress, Stage};
use crate::provenance::peak_rss_bytes;
use crate::sample::sample_rows;

/// File names written into the output folder besides the trainer's.
pub mod files {
    /// The settings of the run ([`super::FinetuneConfig`]), written before training.
    pub const CONFIG: &str = "finetune_config.json";
    /// The outcome ([`super::FinetuneSummary`]), written after training.
    pub const SUMMARY: &str = "finetune_summary.json";
    /// The training split inside a `prepare_data` folder.
    pub const TRAIN_SPLIT: &str = "train.parquet";
    /// The trainer's log (bioalign-lora), with the held-out losses merged in.
    pub const TRAIN_LOG: &str = "train_log.csv";
    /// Held-out loss per step (`{"0": before training, "50": ..., ...}`), kept across
    /// `--resume`.
    pub const EVAL_LOG: &str = "held_out_loss.json";
    /// The loss curve (bioalign-lora).
    pub const LOSS_PNG: &str = "loss.png";
}

/// The seven projections the reference adapted (SPEC.md section 2).
pub const REFERENCE_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The training text of a row. Every template holds `{answer}` exactly once: the text
/// before it is the prompt, `{answer}` and what follows it (then EOS) the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Template {
    /// The reference's Alpaca text (SPEC.md section 2, [`bioalign_ctd::ALPACA_TEMPLATE`]).
    Alpaca,
    /// The zero-shot prompt `evaluate` asks ([`ZERO_SHOT_TEMPLATE`]) followed by
    /// `" {answer}"`: trains exactly the question the zero-shot rules score.
    ZeroShot,
    /// The bare statement and its answer: `"{text}: {answer}"`.
    Sentence,
    /// A UTF-8 file holding a template with `{text}`, `{gene}`, `{disease}` and
    /// `{answer}` (`{{` / `}}` for literal braces; one trailing newline is ignored).
    File(PathBuf),
}

impl Template {
    /// The template text (reading the file for [`Template::File`]).
    pub fn source(&self) -> Result<String> {
        Ok(match self {
            Template::Alpaca => bioalign_ctd::ALPACA_TEMPLATE.to_string(),
            Template::ZeroShot => format!("{ZERO_SHOT_TEMPLATE} {{answer}}"),
            Template::Sentence => "{text}: {answer}".to_string(),
            Template::File(path) => {
                let mut s = std::fs::read_to_string(path)
                    .map_err(|e| file_err(path, format!("cannot read the template: {e}")))?;
                if s.ends_with('\n') {
                    s.pop();
                    if s.ends_with('\r') {
                        s.pop();
                    }
                }
                s
            }
        })
    }

    /// Parses the template and cuts it at `{answer}`.
    pub fn compile(&self) -> Result<TrainingTemplate> {
        let source = self.source()?;
        let origin = match self {
            Template::File(p) => p.clone(),
            other => PathBuf::from(format!("--template {other}")),
        };
        TrainingTemplate::parse(&source).map_err(|reason| file_err(&origin, reason))
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Template::Alpaca => f.write_str("alpaca"),
            Template::ZeroShot => f.write_str("zero-shot"),
            Template::Sentence => f.write_str("sentence"),
            Template::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl FromStr for Template {
    type Err = Error;

    /// `alpaca`, `zero-shot`, `sentence`, or the path of an existing template file.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "alpaca" => Ok(Template::Alpaca),
            "zero-shot" | "zeroshot" => Ok(Template::ZeroShot),
            "sentence" => Ok(Template::Sentence),
            path if Path::new(path).is_file() => Ok(Template::File(PathBuf::from(path))),
            other => Err(invalid(
                "template",
                other,
                "alpaca, zero-shot, sentence, or the path of a template file",
            )),
        }
    }
}

impl Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "alpaca" => Template::Alpaca,
            "zero-shot" | "zeroshot" => Template::ZeroShot,
            "sentence" => Template::Sentence,
            path => Template::File(PathBuf::from(path)),
        })
    }
}

/// A training template cut at its `{answer}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingTemplate {
    prompt: bioalign_ctd::Template,
    response: bioalign_ctd::Template,
}

impl TrainingTemplate {
    /// Parses `source`; the error says what is wrong (unknown placeholder, unbalanced
    /// brace, no `{answer}` or more than one).
    pub fn parse(source: &str) -> std::result::Result<Self, String> {
        let whole = bioalign_ctd::Template::parse(source).map_err(|e| e.to_string())?;
        let answers = whole
            .placeholders()
            .filter(|p| *p == bioalign_ctd::template::Placeholder::Answer)
            .count();
        if answers != 1 {
            return Err(format!(
                "a training template needs exactly one {{answer}} placeholder (the response \
                 starts there), found {answers}"
            ));
        }
        let cut = answer_offset(source)
            .ok_or_else(|| "no {answer} placeholder outside escaped braces".to_string())?;
        let prompt = bioalign_ctd::Template::parse(&source[..cut]).map_err(|e| e.to_string())?;
        let response = bioalign_ctd::Template::parse(&source[cut..]).map_err(|e| e.to_string())?;
        Ok(Self { prompt, response })
    }

    /// The prompt and response texts of one row (`answer` is `true` / `false`).
    pub fn render(&self, row: &bioalign_ctd::Example) -> Result<(String, String)> {
        let fields = Fields {
            gene: Some(&row.gene_symbol),
            disease: Some(&row.disease_name),
            text: Some(&row.text),
            answer: Some(bioalign_ctd::template::answer_word(row.label)),
        };
        Ok((self.prompt.render(&fields)?, self.response.render(&fields)?))
    }
}

/// Byte offset of the `{answer}` placeholder in a template that parsed (skipping `{{`).
fn answer_offset(source: &str) -> Option<usize> {
    let b = source.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'{' {
            if b.get(i + 1) == Some(&b'{') {
                i += 2;
                continue;
            }
            if source[i..].starts_with("{answer}") {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

/// Tokenizes rows with a template: prompt with the tokenizer's special tokens (BOS where
/// it adds one), response without, then EOS. `source` names the file in errors.
pub fn tokenize_rows(
    rows: &[&bioalign_ctd::Example],
    template: &TrainingTemplate,
    tok: &TextTokenizer,
) -> Result<Vec<bioalign_lora::Example>> {
    let eos = tok
        .eos_id()
        .ok_or_else(|| invalid("tokenizer", "no EOS token", "a tokenizer with an EOS token"))?;
    rows.iter()
        .map(|row| {
            let (p, r) = template.render(row)?;
            let prompt = tok.encode(&p, true)?;
            let mut response = tok.encode(&r, false)?;
            response.push(eos);
            Ok(bioalign_lora::Example { prompt, response })
        })
        .collect()
}

/// Reads the training rows: `data/train.parquet` when `data` is a folder (the output of
/// `prepare_data`), else the split file itself (`.parquet` or `.csv`).
pub fn read_training_rows(data: &Path) -> Result<Vec<bioalign_ctd::Example>> {
    if data.is_dir() {
        let train = data.join(files::TRAIN_SPLIT);
        if !train.is_file() {
            return Err(file_err(
                data,
                format!(
                    "no {} in this folder (expected the folder prepare_data writes, or a \
                     .parquet/.csv split file)",
                    files::TRAIN_SPLIT
                ),
            ));
        }
        return read_split(&train);
    }
    if !data.exists() {
        return Err(file_err(data, "no such file or folder"));
    }
    read_split(data)
}

/// Splits `n` rows into training rows (file order) and `eval_rows` held-out rows
/// (a seeded draw, `sample_rows`' order). At least one row always stays for training.
pub fn hold_out(n: usize, eval_rows: usize, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if eval_rows >= n {
        return Err(invalid(
            "eval_rows",
            format!("{eval_rows} of {n} rows"),
            "fewer held-out rows than training rows",
        ));
    }
    let held = if eval_rows == 0 {
        Vec::new()
    } else {
        sample_rows(n, eval_rows, seed)?
    };
    let mut is_held = vec![false; n];
    for &i in &held {
        is_held[i] = true;
    }
    let train = (0..n).filter(|&i| !is_held[i]).collect();
    Ok((train, held))
}

/// What to fine-tune on what, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// A `.gguf` file or a Hugging Face folder.
    pub model: PathBuf,
    /// `prepare_data`'s folder (its `train.parquet` is used) or one split file.
    pub data: PathBuf,
    /// The output folder: PEFT adapter, `train_log.csv`, `loss.png`, `checkpoint-N/`.
    pub out: PathBuf,
    /// The training text.
    pub template: Template,
    /// The adapters (PEFT's `adapter_config.json`).
    pub lora: LoraConfig,
    /// The loop (optimizer, schedule, batches, loss, intervals).
    pub train: TrainConfig,
    /// Quantize the base projections to NF4 while loading (QLoRA).
    pub load_in_4bit: bool,
    /// Recompute activations in the backward pass (`BalancedCheckpointing`).
    pub gradient_checkpointing: bool,
    /// `down_proj` adapters recompute their input (the SwiGLU output) in the backward
    /// instead of keeping it: less activation memory, the same adapter bit for bit.
    pub recompute_mlp_input: bool,
    /// Continue from the latest `checkpoint-N/` in `out`.
    pub resume: bool,
    /// Training rows held out for the periodic held-out loss (0: none).
    pub eval_rows: usize,
    /// The backend and device (`cpu` by default; `cuda[:N]` and `wgpu` with their features).
    #[serde(default)]
    pub device: DeviceChoice,
}

impl FinetuneConfig {
    /// The reference study's settings (SPEC.md section 2): Alpaca template, r 16,
    /// alpha 32, dropout 0 on the seven projections, 8-bit AdamW at lr 2e-4 with 10
    /// warmup steps, batch 2 x 4, 2,000 steps, max length 128, seed 42, NF4 base; plus
    /// the response-only loss, a held-out loss on 100 training rows every 50 steps
    /// and a checkpoint every 100 steps.
    pub fn new(
        model: impl Into<PathBuf>,
        data: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
    ) -> Self {
        let train = TrainConfig {
            eval_every: Some(50),
            checkpoint_every: Some(100),
            ..TrainConfig::default()
        };
        Self {
            model: model.into(),
            data: data.into(),
            out: out.into(),
            template: Template::Alpaca,
            lora: LoraConfig::new(16, 32.0, &REFERENCE_TARGETS),
            train,
            load_in_4bit: true,
            gradient_checkpointing: false,
            recompute_mlp_input: false,
            resume: false,
            eval_rows: 100,
            device: DeviceChoice::Cpu,
        }
    }

    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<()> {
        self.lora.validate()?;
        self.train.validate()?;
        Ok(())
    }
}

/// What a run produced (also written to `out/finetune_summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneSummary {
    /// The PEFT adapter folder (`out`).
    pub adapter_dir: PathBuf,
    /// Optimizer steps taken in total (including those before a resume).
    pub steps: usize,
    /// Held-out loss before training (the base model: adapters start with B = 0);
    /// `None` without held-out rows.
    pub first_eval_loss: Option<f64>,
    /// Held-out loss at the last evaluation.
    pub last_eval_loss: Option<f64>,
    /// Training loss of the last step.
    pub last_train_loss: Option<f64>,
    /// Real tokens per second over this run's training loop (evaluations and
    /// checkpoints included).
    pub tokens_per_s: f64,
    /// Wall time of the whole run, loading included.
    pub wall_s: f64,
    /// Wall time of the training loop.
    pub train_s: f64,
    /// Loading the model and attaching the adapters.
    pub load_s: f64,
    /// Peak resident memory of the process (Linux `VmHWM`).
    pub peak_rss_bytes: Option<u64>,
    /// Rows trained on.
    pub train_rows: usize,
    /// Rows held out for the held-out loss.
    pub eval_rows: usize,
    /// Projections that got an adapter.
    pub adapted_modules: usize,
    /// Trainable (LoRA) parameters.
    pub trainable_params: usize,
}

/// Fine-tunes on `cfg.device`'s backend (see [`finetune_on`]): reads and tokenizes
/// the rows, loads the model, attaches adapters, trains, and writes everything into
/// `cfg.out`.
pub fn finetune(cfg: &FinetuneConfig, progress: &dyn Progress) -> Result<FinetuneSummary> {
    cfg.device.check_compiled()?;
    // Parallel micro-batches run on CPU replicas; one device runs one at a time.
    let mut one = cfg.clone();
    if cfg.device != DeviceChoice::Cpu && cfg.train.workers == 0 {
        one.train.workers = 1;
    }
    let cfg = &one;
    macro_rules! on {
        ($b:ty, $device:expr) => {
            if cfg.gradient_checkpointing {
                finetune_on::<Autodiff<$b, BalancedCheckpointing>>(cfg, &$device, progress)
            } else {
                finetune_on::<Autodiff<$b>>(cfg, &$device, progress)
            }
        };
    }
    match cfg.device {
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(i) => on!(bioalign_models::Cuda, bioalign_models::CudaDevice::new(i)),
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => on!(
            bioalign_models::Wgpu,
            bioalign_models::WgpuDevice::default()
        ),
        // `check_compiled` let only the CPU through otherwise.
        _ => on!(Cpu, CpuDevice::default()),
    }
}

#[derive(Serialize)]
struct ConfigRecord<'a> {
    tool: String,
    #[serde(flatten)]
    config: &'a FinetuneConfig,
}

/// [`finetune`] on any autodiff backend.
pub fn finetune_on<B: AutodiffBackend>(
    cfg: &FinetuneConfig,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<FinetuneSummary>
where
    CausalLm<B>: AutodiffModule<B, InnerModule = CausalLm<B::InnerBackend>>,
{
    let start = Instant::now();
    cfg.validate()?;
    let template = cfg.template.compile()?;

    // Data (the tokenizer comes with the model, so rows are read first and tokenized
    // once it is loaded).
    progress.start(Stage::Data, 1);
    let rows = read_training_rows(&cfg.data)?;
    let (train_idx, eval_idx) = hold_out(rows.len(), cfg.eval_rows, cfg.train.seed)?;
    progress.finish(Stage::Data);

    // Model.
    let t0 = Instant::now();
    progress.start(Stage::Load, 1);
    let opts = LoadOptions {
        load_in_4bit: cfg.load_in_4bit,
        ..Default::default()
    };
    let p = load_pretrained_with::<B>(&cfg.model, device, opts)?;
    let mut model: CausalLm<B> = p.model;
    let tok = p
        .tokenizer
        .ok_or_else(|| file_err(&cfg.model, "the model folder has no tokenizer.json"))?;
    let mut lora = cfg.lora.clone();
    if lora.base_model_name_or_path.is_none() {
        lora.base_model_name_or_path = Some(cfg.model.display().to_string());
    }
    let adapted_modules = model.apply_lora(&lora, cfg.train.seed)?;
    model.set_recompute_mlp_input(cfg.recompute_mlp_input);
    let mut trainable_params = 0;
    bioalign_lora::LoraModel::visit_adapters(&model, &mut |_, slot| {
        let (i, o) = slot.features();
        trainable_params += slot.lora().r * (i + o);
    });
    progress.finish(Stage::Load);
    let load_s = t0.elapsed().as_secs_f64();

    let pick =
        |idx: &[usize]| -> Vec<&bioalign_ctd::Example> { idx.iter().map(|&i| &rows[i]).collect() };
    let train = tokenize_rows(&pick(&train_idx), &template, &tok)?;
    let eval = tokenize_rows(&pick(&eval_idx), &template, &tok)?;
    let mut train_cfg = cfg.train.clone();
    train_cfg.pad_id = tok.pad_id();

    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| file_err(&cfg.out, format!("cannot create the folder: {e}")))?;
    let mut recorded = cfg.clone();
    recorded.lora = lora.clone();
    recorded.train = train_cfg.clone();
    write_json(
        &cfg.out.join(files::CONFIG),
        &ConfigRecord {
            tool: format!("bioalign-study {}", env!("CARGO_PKG_VERSION")),
            config: &recorded,
        },
    )?;

    // Held-out losses run on the inner backend (`model.valid()`): on the autodiff backend
    // every evaluated batch's graph stays alive (nothing calls backward on it), about
    // 270 MB per batch of SmolLM2-135M, so 100 rows took 14 GB and grew slower per batch.
    // bioalign-lora's trainer evaluates on the autodiff model, so it gets no held-out rows
    // here; training runs in chunks that end at each evaluation step (with a checkpoint
    // there, and an exact resume from it), and the losses are merged into the log.
    let eval_every = if eval.is_empty() {
        None
    } else {
        train_cfg.eval_every
    };
    let stop = train_cfg
        .stop_after
        .unwrap_or(train_cfg.max_steps)
        .min(train_cfg.max_steps);
    let mut chunk_cfg = train_cfg.clone();
    chunk_cfg.eval_every = None;
    if let Some(every) = eval_every {
        chunk_cfg.checkpoint_every = Some(match train_cfg.checkpoint_every {
            Some(c) => gcd(c, every),
            None => every,
        });
    }
    let done_before = if cfg.resume {
        bioalign_lora::trainer::latest_checkpoint(&cfg.out)?
            .and_then(|d| checkpoint_step(&d))
            .unwrap_or(0)
    } else {
        0
    };
    let eval_path = cfg.out.join(files::EVAL_LOG);
    let mut evals: BTreeMap<usize, f64> = if done_before > 0 {
        read_eval_log(&eval_path)?
            .into_iter()
            .filter(|(step, _)| *step <= done_before)
            .collect()
    } else {
        BTreeMap::new()
    };
    let held_out = |model: &CausalLm<B>| {
        bioalign_lora::trainer::eval_loss(&model.valid(), &eval, &train_cfg, device)
    };
    if !eval.is_empty() && done_before == 0 {
        let l = held_out(&model);
        tracing::info!(eval_loss = l, "held-out loss before training");
        evals.insert(0, l);
        write_json(&eval_path, &evals)?;
    }
    let mut ends: Vec<usize> = match eval_every {
        Some(every) => (1..).map(|k| k * every).take_while(|&e| e < stop).collect(),
        None => Vec::new(),
    };
    ends.push(stop);
    ends.retain(|&e| e > done_before);
    if ends.is_empty() {
        ends.push(stop);
    }

    // Training.
    let t0 = Instant::now();
    progress.start(Stage::Train, stop as u64);
    let last_eval = Cell::new(evals.values().last().copied());
    let first_row = Cell::new(true);
    let run_tokens = Cell::new(0usize);
    let mut on_step = |row: &bioalign_lora::trainer::LogRow| {
        run_tokens.set(run_tokens.get() + row.tokens);
        let eval = last_eval
            .get()
            .map(|e| format!(" held-out {e:.4}"))
            .unwrap_or_default();
        progress.message(&format!(
            "loss {:.4}{eval} lr {:.2e} {:.0} tok/s",
            row.loss, row.lr, row.tokens_per_s
        ));
        progress.advance(if first_row.get() { row.step as u64 } else { 1 });
        first_row.set(false);
    };
    let mut resume = cfg.resume;
    let mut summary = None;
    for &end in &ends {
        chunk_cfg.stop_after = Some(end);
        let s = bioalign_lora::train(
            &mut model,
            &lora,
            &train,
            &[],
            &chunk_cfg,
            &cfg.out,
            resume,
            device,
            &mut on_step,
        )?;
        resume = true;
        let due = eval_every.is_some_and(|every| {
            s.steps > done_before && (s.steps % every == 0 || s.steps == train_cfg.max_steps)
        });
        if due && !evals.contains_key(&s.steps) {
            let l = held_out(&model);
            tracing::info!(step = s.steps, eval_loss = l, "held-out loss");
            evals.insert(s.steps, l);
            last_eval.set(Some(l));
            write_json(&eval_path, &evals)?;
        }
        summary = Some(s);
    }
    progress.finish(Stage::Train);
    let train_s = t0.elapsed().as_secs_f64();
    let mut summary = summary.ok_or_else(|| invalid("max_steps", 0, "at least one step"))?;
    for row in &mut summary.log {
        row.eval_loss = evals.get(&row.step).copied();
    }
    if !summary.log.is_empty() {
        bioalign_lora::trainer::write_log_csv(&cfg.out.join(files::TRAIN_LOG), &summary.log)?;
        bioalign_lora::trainer::write_loss_png(&cfg.out.join(files::LOSS_PNG), &summary.log)?;
    }
    let run_tokens = run_tokens.get();

    let out = FinetuneSummary {
        adapter_dir: cfg.out.clone(),
        steps: summary.steps,
        first_eval_loss: evals.values().next().copied(),
        last_eval_loss: evals.values().last().copied(),
        last_train_loss: summary.log.last().map(|r| r.loss),
        tokens_per_s: run_tokens as f64 / train_s.max(1e-9),
        wall_s: start.elapsed().as_secs_f64(),
        train_s,
        load_s,
        peak_rss_bytes: peak_rss_bytes(),
        train_rows: train.len(),
        eval_rows: eval.len(),
        adapted_modules,
        trainable_params,
    };
    write_json(&cfg.out.join(files::SUMMARY), &out)?;
    Ok(out)
}

/// Greatest common divisor.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The step of a `checkpoint-N` folder.
fn checkpoint_step(dir: &Path) -> Option<usize> {
    dir.file_name()?
        .to_str()?
        .strip_prefix("checkpoint-")?
        .parse()
        .ok()
}

/// Reads `held_out_loss.json` (step -> loss); absent = empty.
fn read_eval_log(path: &Path) -> Result<BTreeMap<usize, f64>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| file_err(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(file_err(path, e)),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| file_err(path, e))?;
    bioalign_io::atomic_write_bytes(path, &json)?;
    Ok(())
}

/// Loads a model on backend `B` and, when given, attaches a PEFT adapter folder to it
/// (through [`CausalLm::load_adapter`]); returns the model, its tokenizer, and the
/// adapter's config.
pub fn load_with_adapter<B: Backend>(
    model: &Path,
    adapter: Option<&Path>,
    opts: LoadOptions,
    device: &B::Device,
) -> Result<(CausalLm<B>, TextTokenizer, Option<LoraConfig>)> {
    let p = load_pretrained_with::<B>(model, device, opts)?;
    let mut m = p.model;
    let tok = p
        .tokenizer
        .ok_or_else(|| file_err(model, "the model folder has no tokenizer.json"))?;
    let lora = match adapter {
        Some(dir) => Some(m.load_adapter(dir)?),
        None => None,
    };
    Ok((m, tok, lora))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: u8) -> bioalign_ctd::Example {
        bioalign_ctd::Example {
            gene_symbol: "WNK1".into(),
            gene_id: None,
            disease_name: "Hypertension".into(),
            disease_id: None,
            text: "WNK1 is associated with Hypertension".into(),
            pubmed_ids: vec![],
            label,
        }
    }

    #[test]
    fn alpaca_cut_reproduces_the_reference_text() {
        let t = Template::Alpaca.compile().unwrap();
        let (p, r) = t.render(&row(1)).unwrap();
        assert_eq!(
            format!("{p}{r}</s>"),
            bioalign_ctd::template::alpaca_training_text(
                "WNK1 is associated with Hypertension",
                1,
                "</s>"
            )
        );
        assert!(p.ends_with("### Response:\n"));
        assert_eq!(r, "true");
        let (_, r) = t.render(&row(0)).unwrap();
        assert_eq!(r, "false");
    }

    #[test]
    fn other_templates_and_errors() {
        let (p, r) = Template::ZeroShot
            .compile()
            .unwrap()
            .render(&row(0))
            .unwrap();
        assert_eq!(
            p,
            "Is this statement true or false? Answer with one word.\nWNK1 is associated with Hypertension\nAnswer: "
        );
        assert_eq!(r, "false");
        let (p, r) = Template::Sentence
            .compile()
            .unwrap()
            .render(&row(1))
            .unwrap();
        assert_eq!(
            (p.as_str(), r.as_str()),
            ("WNK1 is associated with Hypertension: ", "true")
        );
        let t = TrainingTemplate::parse("{{answer}} {gene}/{disease}? {answer}.").unwrap();
        let (p, r) = t.render(&row(1)).unwrap();
        assert_eq!(
            (p.as_str(), r.as_str()),
            ("{answer} WNK1/Hypertension? ", "true.")
        );
        let e = TrainingTemplate::parse("{gene} {answr}").unwrap_err();
        assert!(e.contains("unknown placeholder {answr}"), "{e}");
        let e = TrainingTemplate::parse("{gene} is").unwrap_err();
        assert!(e.contains("exactly one {answer}"), "{e}");
        let e = TrainingTemplate::parse("{answer} {answer}").unwrap_err();
        assert!(e.contains("found 2"), "{e}");
        assert!("alpacca".parse::<Template>().is_err());
        assert_eq!("zero-shot".parse::<Template>().unwrap(), Template::ZeroShot);
    }

    #[test]
    fn hold_out_is_seeded_and_disjoint() {
        let (train, held) = hold_out(50, 10, 42).unwrap();
        assert_eq!((train.len(), held.len()), (40, 10));
        assert_eq!(held, sample_rows(50, 10, 42).unwrap());
        assert!(train.iter().all(|i| !held.contains(i)));
        assert!(train.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(hold_out(50, 10, 42).unwrap(), (train, held));
        assert!(hold_out(5, 5, 42).is_err());
        assert_eq!(hold_out(5, 0, 42).unwrap().1, Vec::<usize>::new());
    }
}
