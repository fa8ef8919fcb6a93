//! `evaluate`: a model on a split, end to end (issue 7). Reads the rows, samples them as
//! the reference did, answers the zero-shot prompt both ways, embeds the statements, runs
//! the metric suite and KG alignment, and writes `metrics.json`, `predictions.parquet`,
//! `embeddings.safetensors` and the plots into one folder, each file atomically.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::Backend;
use ndarray::{Array3, Axis};
use serde::{Deserialize, Serialize};

use bioalign_ctd::Example;
use bioalign_metrics::{
    BootstrapConfig, ClassificationReport, ConfidenceInterval, LayerMeasures, SuiteConfig,
    SuiteReport, accuracy, bootstrap_ci, classification_report, layer_profile, roc_auc,
};
use bioalign_models::embed::{Layers, Pooling};
use bioalign_models::{Cpu, CpuDevice, DeviceChoice, LoadOptions, load_pretrained_with};

use crate::embed::embed_texts;
use crate::error::{Result, file_err, invalid};
use crate::kg::{KgAlignment, kg_alignment};
use crate::output::{Prediction, write_embeddings, write_predictions};
use crate::progress::{Progress, Stage};
use crate::sample::sample_rows;
use crate::zero_shot::{AnswerOptions, AnswerTokens, answer_batch, prompt};

/// File names inside the output folder.
pub mod files {
    /// The report ([`super::MetricsJson`]).
    pub const METRICS: &str = "metrics.json";
    /// One row per evaluated statement.
    pub const PREDICTIONS: &str = "predictions.parquet";
    /// Pooled embeddings, labels and source rows.
    pub const EMBEDDINGS: &str = "embeddings.safetensors";
    /// t-SNE of the projected rows coloured by label.
    pub const PROJECTION_PNG: &str = "projection.png";
    /// Confusion matrix of the reference's generation rule.
    pub const CONFUSION_GENERATED_PNG: &str = "confusion_generated.png";
    /// Confusion matrix of the next-token rule.
    pub const CONFUSION_LOGPROB_PNG: &str = "confusion_logprob.png";
}

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct EvaluateConfig {
    /// A `.gguf` file or a Hugging Face folder.
    pub model: PathBuf,
    /// A PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`, ours
    /// or PEFT's) attached to the model before evaluating.
    pub adapter: Option<PathBuf>,
    /// Quantize the base projections to NF4 while loading (as a QLoRA adapter was
    /// trained); a bnb-4bit checkpoint loads in 4 bits either way.
    pub load_in_4bit: bool,
    /// The split: `.parquet` / `.csv` from `prepare_data`, or the reference's `test_pairs.csv`.
    pub data: PathBuf,
    /// Rows sampled as `df.sample(n, random_state=seed)` (`None`: every row, in file order).
    pub sample: Option<usize>,
    /// Sampling seed (reference: 42).
    pub seed: u64,
    /// Prompts / sentences per forward pass.
    pub batch_size: usize,
    /// New tokens generated per prompt (reference: 3).
    pub max_new_tokens: usize,
    /// Pooling of token states (default: mean over real tokens).
    pub pooling: Pooling,
    /// Last hidden state only, or every layer (the suite then runs on the last and a
    /// per-layer profile on all).
    pub layers: Layers,
    /// The metric suite's settings.
    pub suite: SuiteConfig,
    /// Bootstrap of the zero-shot measures (`None`: point estimates only).
    pub bootstrap: Option<BootstrapConfig>,
    /// Genes entering RSA at most.
    pub rsa_max_genes: usize,
    /// Draw the PNG plots.
    pub plots: bool,
    /// The backend and device (`cpu` by default; `cuda[:N]` and `wgpu` with their features).
    pub device: DeviceChoice,
}

impl EvaluateConfig {
    /// The reference protocol on `model` and `data`: 500 rows, seed 42, 3 tokens, mean
    /// pooling of the last hidden state, the full suite with 1000 bootstrap resamples.
    pub fn new(model: impl Into<PathBuf>, data: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            adapter: None,
            load_in_4bit: false,
            data: data.into(),
            sample: Some(500),
            seed: 42,
            batch_size: 32,
            max_new_tokens: 3,
            pooling: Pooling::Mean,
            layers: Layers::Last,
            suite: SuiteConfig::default(),
            bootstrap: Some(BootstrapConfig::default()),
            rsa_max_genes: 2000,
            plots: true,
            device: DeviceChoice::Cpu,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(invalid("batch_size", 0, "at least 1"));
        }
        if self.max_new_tokens == 0 {
            return Err(invalid("max_new_tokens", 0, "at least 1"));
        }
        if self.sample == Some(0) {
            return Err(invalid("sample", 0, "at least 1 row"));
        }
        if let Some(b) = &self.bootstrap {
            b.validate()?;
        }
        self.suite.validate()?;
        Ok(())
    }
}

/// One decision rule's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleScores {
    /// Accuracy, precision / recall / F1 per class and averaged, confusion matrix.
    pub report: ClassificationReport,
    /// Accuracy with its bootstrap interval.
    pub accuracy_ci: Option<ConfidenceInterval>,
    /// Rows predicted true.
    pub n_predicted_true: usize,
}

/// Both zero-shot rules and how often they agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZeroShotScores {
    /// The prompt template (`{text}` is the statement).
    pub prompt_template: String,
    /// New tokens generated per prompt.
    pub max_new_tokens: usize,
    /// The answer tokens compared by the next-token rule.
    pub answer_tokens: AnswerTokens,
    /// The reference's rule: the continuation contains "true".
    pub generated: RuleScores,
    /// The next-token rule: `log p(" true") > log p(" false")`.
    pub logprob: RuleScores,
    /// ROC-AUC of `score = log p(" true") - log p(" false")`.
    pub roc_auc: f64,
    /// Its bootstrap interval.
    pub roc_auc_ci: Option<ConfidenceInterval>,
    /// Fraction of rows where both rules decide the same.
    pub agreement: f64,
    /// Its bootstrap interval.
    pub agreement_ci: Option<ConfidenceInterval>,
    /// Continuations containing neither "true" nor "false" (lower-cased).
    pub n_answers_neither: usize,
}

/// Seconds spent per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Reading and sampling the split.
    pub data_s: f64,
    /// Loading the model.
    pub load_s: f64,
    /// Zero-shot answers.
    pub zero_shot_s: f64,
    /// Sentence embeddings.
    pub embed_s: f64,
    /// Metric suite, layer profile, KG alignment.
    pub metrics_s: f64,
    /// Writing the files and plots.
    pub write_s: f64,
    /// Everything.
    pub total_s: f64,
}

/// `metrics.json` (documented in `docs/formats.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsJson {
    /// `bioalign-study` and its version.
    pub tool: String,
    /// The model path as given.
    pub model: String,
    /// The adapter folder, if any.
    pub adapter: Option<String>,
    /// Whether the base projections were quantized to NF4 while loading.
    #[serde(default)]
    pub load_in_4bit: bool,
    /// The split file as given.
    pub data: String,
    /// Rows in the split file.
    pub data_rows: usize,
    /// Rows asked for (`None`: all).
    pub sample: Option<usize>,
    /// Sampling seed.
    pub seed: u64,
    /// Rows evaluated.
    pub n_rows: usize,
    /// Pooling (`mean`, `last`, `mean-padded`).
    pub pooling: String,
    /// Layers (`last`, `all`).
    pub layers: String,
    /// Zero-shot accuracy both ways.
    pub zero_shot: ZeroShotScores,
    /// The metric suite on the last hidden state.
    pub embeddings: SuiteReport,
    /// KG separation, probe and silhouette per layer (`--layers all`).
    pub layer_profile: Option<Vec<LayerMeasures>>,
    /// Link prediction and RSA of entity centroids.
    pub kg_alignment: KgAlignment,
    /// Wall time per stage.
    pub timings: Timings,
}

/// The name of a pooling in `metrics.json`.
pub fn pooling_name(p: Pooling) -> &'static str {
    match p {
        Pooling::Mean => "mean",
        Pooling::Last => "last",
        Pooling::MeanPadded => "mean-padded",
    }
}

/// The name of a layer selection in `metrics.json`.
pub fn layers_name(l: Layers) -> &'static str {
    match l {
        Layers::Last => "last",
        Layers::All => "all",
    }
}

/// Reads a split: `.parquet` (prepare_data) or `.csv` (prepare_data or the reference's).
pub fn read_split(path: &Path) -> Result<Vec<Example>> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let rows = match ext.as_str() {
        "parquet" => bioalign_ctd::read_parquet(path)?,
        "csv" => bioalign_ctd::read_csv(path)?,
        other => {
            return Err(file_err(
                path,
                format!("unsupported split format {other:?} (.parquet or .csv)"),
            ));
        }
    };
    if rows.is_empty() {
        return Err(file_err(path, "no rows"));
    }
    Ok(rows)
}

fn rule_scores(
    labels: &[usize],
    pred: &[usize],
    boot: Option<&BootstrapConfig>,
) -> Result<RuleScores> {
    let report = classification_report(labels, pred, Default::default())?;
    let accuracy_ci = boot
        .map(|b| {
            bootstrap_ci(labels.len(), b, |rows| {
                let t: Vec<usize> = rows.iter().map(|&r| labels[r]).collect();
                let q: Vec<usize> = rows.iter().map(|&r| pred[r]).collect();
                accuracy(&t, &q)
            })
        })
        .transpose()?;
    Ok(RuleScores {
        report,
        accuracy_ci,
        n_predicted_true: pred.iter().filter(|&&p| p == 1).count(),
    })
}

/// Runs the evaluation on `cfg.device`'s backend (see [`evaluate_on`]).
pub fn evaluate(cfg: &EvaluateConfig, out: &Path, progress: &dyn Progress) -> Result<MetricsJson> {
    cfg.device.check_compiled()?;
    match cfg.device {
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(i) => evaluate_on::<bioalign_models::Cuda>(
            cfg,
            out,
            &bioalign_models::CudaDevice::new(i),
            progress,
        ),
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => evaluate_on::<bioalign_models::Wgpu>(
            cfg,
            out,
            &bioalign_models::WgpuDevice::default(),
            progress,
        ),
        // `check_compiled` let only the CPU through otherwise.
        _ => evaluate_on::<Cpu>(cfg, out, &CpuDevice::default(), progress),
    }
}

/// Runs the evaluation on backend `B` and writes every artefact into `out`.
pub fn evaluate_on<B: Backend>(
    cfg: &EvaluateConfig,
    out: &Path,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<MetricsJson> {
    cfg.validate()?;
    let start = Instant::now();
    let mut t = Timings::default();

    // Data.
    progress.start(Stage::Data, 1);
    let all = read_split(&cfg.data)?;
    let picked: Vec<usize> = match cfg.sample {
        Some(k) => sample_rows(all.len(), k, cfg.seed)?,
        None => (0..all.len()).collect(),
    };
    let rows: Vec<&Example> = picked.iter().map(|&i| &all[i]).collect();
    let labels: Vec<usize> = rows.iter().map(|e| usize::from(e.label)).collect();
    let n = rows.len();
    progress.finish(Stage::Data);
    t.data_s = start.elapsed().as_secs_f64();

    // Model.
    let t0 = Instant::now();
    progress.start(Stage::Load, 1);
    // Inference only: dense projections packed once for the CPU kernels, unless an
    // adapter will wrap them (it needs a dense base).
    let opts = LoadOptions {
        load_in_4bit: cfg.load_in_4bit,
        pack: cfg.adapter.is_none(),
        ..Default::default()
    };
    let p = load_pretrained_with::<B>(&cfg.model, device, opts)?;
    let mut model = p.model;
    if let Some(dir) = &cfg.adapter {
        model.load_adapter(dir)?;
    }
    let tok = p
        .tokenizer
        .ok_or_else(|| file_err(&cfg.model, "the model folder has no tokenizer.json"))?;
    progress.finish(Stage::Load);
    t.load_s = t0.elapsed().as_secs_f64();

    // Zero-shot answers.
    let t0 = Instant::now();
    let answer_tokens = AnswerTokens::new(&tok)?;
    let mut opts = AnswerOptions::reference(&model, &tok);
    opts.max_new_tokens = cfg.max_new_tokens;
    progress.start(Stage::ZeroShot, n as u64);
    let mut answers = Vec::with_capacity(n);
    for chunk in rows.chunks(cfg.batch_size) {
        let prompts = chunk
            .iter()
            .map(|e| tok.encode(&prompt(&e.text), true))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        answers.extend(answer_batch(&model, &tok, &prompts, &answer_tokens, &opts)?);
        progress.advance(chunk.len() as u64);
    }
    progress.finish(Stage::ZeroShot);
    t.zero_shot_s = t0.elapsed().as_secs_f64();

    // Embeddings.
    let t0 = Instant::now();
    progress.start(Stage::Embed, n as u64);
    let texts: Vec<&str> = rows.iter().map(|e| e.text.as_str()).collect();
    let layers = embed_texts(
        &model,
        &tok,
        &texts,
        cfg.pooling,
        cfg.layers,
        cfg.batch_size,
        |k| progress.advance(k as u64),
    )?;
    progress.finish(Stage::Embed);
    t.embed_s = t0.elapsed().as_secs_f64();
    drop(model);

    // Measures.
    let t0 = Instant::now();
    progress.start(Stage::Metrics, 1);
    let pred_generated: Vec<usize> = answers
        .iter()
        .map(|a| usize::from(a.generated_says_true()))
        .collect();
    let pred_logprob: Vec<usize> = answers
        .iter()
        .map(|a| usize::from(a.logprob_says_true()))
        .collect();
    let scores: Vec<f64> = answers.iter().map(|a| a.score()).collect();
    let boot = cfg.bootstrap.as_ref();
    let agree = |rows: &[usize]| -> bioalign_metrics::Result<f64> {
        Ok(rows
            .iter()
            .filter(|&&r| pred_generated[r] == pred_logprob[r])
            .count() as f64
            / rows.len() as f64)
    };
    let all_rows: Vec<usize> = (0..n).collect();
    let zero_shot = ZeroShotScores {
        prompt_template: bioalign_ctd::ZERO_SHOT_TEMPLATE.to_string(),
        max_new_tokens: cfg.max_new_tokens,
        answer_tokens,
        generated: rule_scores(&labels, &pred_generated, boot)?,
        logprob: rule_scores(&labels, &pred_logprob, boot)?,
        roc_auc: roc_auc(&labels, &scores)?,
        roc_auc_ci: boot
            .map(|b| {
                bootstrap_ci(n, b, |rows| {
                    let t: Vec<usize> = rows.iter().map(|&r| labels[r]).collect();
                    let q: Vec<f64> = rows.iter().map(|&r| scores[r]).collect();
                    roc_auc(&t, &q)
                })
            })
            .transpose()?,
        agreement: agree(&all_rows)?,
        agreement_ci: boot.map(|b| bootstrap_ci(n, b, agree)).transpose()?,
        n_answers_neither: answers
            .iter()
            .filter(|a| {
                let l = a.text.to_lowercase();
                !l.contains("true") && !l.contains("false")
            })
            .count(),
    };
    let last = layers
        .last()
        .ok_or_else(|| invalid("embeddings", "no layer", "at least one layer"))?;
    let suite = bioalign_metrics::evaluate(last.view(), &labels, &cfg.suite)?;
    let layer_profile = if layers.len() > 1 {
        let views: Vec<_> = layers.iter().map(|l| l.view()).collect();
        let stacked: Array3<f32> =
            ndarray::stack(Axis(0), &views).map_err(|e| invalid("layers", e, "equal shapes"))?;
        Some(layer_profile(stacked.view(), &labels, &cfg.suite.probe)?)
    } else {
        None
    };
    let genes: Vec<&str> = rows.iter().map(|e| e.gene_symbol.as_str()).collect();
    let diseases: Vec<&str> = rows.iter().map(|e| e.disease_name.as_str()).collect();
    let kg = kg_alignment(last.view(), &genes, &diseases, &labels, cfg.rsa_max_genes)?;
    progress.finish(Stage::Metrics);
    t.metrics_s = t0.elapsed().as_secs_f64();

    // Files.
    let t0 = Instant::now();
    progress.start(Stage::Write, 1);
    let preds: Vec<Prediction> = rows
        .iter()
        .zip(&picked)
        .zip(&answers)
        .enumerate()
        .map(|(i, ((e, &row), a))| Prediction {
            row,
            gene: e.gene_symbol.clone(),
            disease: e.disease_name.clone(),
            text: e.text.clone(),
            label: labels[i],
            answer: a.text.clone(),
            score: a.score(),
            logp_true: a.logp_true,
            logp_false: a.logp_false,
            pred_generated: pred_generated[i],
            pred_logprob: pred_logprob[i],
        })
        .collect();
    write_predictions(&out.join(files::PREDICTIONS), &preds)?;
    write_embeddings(&out.join(files::EMBEDDINGS), &layers, &labels, &picked)?;
    if cfg.plots {
        write_plots(out, &suite, &labels, &zero_shot)?;
    }
    t.write_s = t0.elapsed().as_secs_f64();
    t.total_s = start.elapsed().as_secs_f64();
    let report = MetricsJson {
        tool: format!("bioalign-study {}", env!("CARGO_PKG_VERSION")),
        model: cfg.model.display().to_string(),
        adapter: cfg.adapter.as_ref().map(|a| a.display().to_string()),
        load_in_4bit: cfg.load_in_4bit,
        data: cfg.data.display().to_string(),
        data_rows: all.len(),
        sample: cfg.sample,
        seed: cfg.seed,
        n_rows: n,
        pooling: pooling_name(cfg.pooling).to_string(),
        layers: layers_name(cfg.layers).to_string(),
        zero_shot,
        embeddings: suite,
        layer_profile,
        kg_alignment: kg,
        timings: t,
    };
    let json =
        serde_json::to_vec_pretty(&report).map_err(|e| file_err(&out.join(files::METRICS), e))?;
    bioalign_io::atomic_write_bytes(&out.join(files::METRICS), &json)?;
    progress.finish(Stage::Write);
    Ok(report)
}

fn write_plots(
    out: &Path,
    suite: &SuiteReport,
    labels: &[usize],
    zs: &ZeroShotScores,
) -> Result<()> {
    use bioalign_metrics::plots::{Panel, confusion_heatmap, projection_scatter};
    let m = suite.projection_rows;
    projection_scatter(
        &out.join(files::PROJECTION_PNG),
        &format!(
            "t-SNE of the first {m} sentence embeddings (silhouette {:.3})",
            suite.silhouette_tsne
        ),
        &[Panel {
            name: "model",
            coords: &suite.tsne,
            labels: &labels[..m],
        }],
    )?;
    confusion_heatmap(
        &out.join(files::CONFUSION_GENERATED_PNG),
        &format!(
            "Zero-shot, generated answer contains \"true\" (accuracy {:.3})",
            zs.generated.report.accuracy
        ),
        &zs.generated.report.confusion,
    )?;
    confusion_heatmap(
        &out.join(files::CONFUSION_LOGPROB_PNG),
        &format!(
            "Zero-shot, log p(\" true\") > log p(\" false\") (accuracy {:.3})",
            zs.logprob.report.accuracy
        ),
        &zs.logprob.report.confusion,
    )?;
    Ok(())
}
