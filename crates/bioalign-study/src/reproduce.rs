//! `reproduce`: the whole study for one model in one call (issue 9), resumable.
//!
//! Stages, each recorded in `DIR/stages.json` when it finishes (outputs, wall time,
//! peak resident memory), so a rerun with the same flags skips every finished stage
//! and an interrupted fine-tuning continues from its last checkpoint:
//!
//! | stage | what | output |
//! | --- | --- | --- |
//! | `prepare` | bioalign-ctd's dataset builder on the CTD file (reference settings, `--seed`) | `data/` |
//! | `eval-base` | [`evaluate`] of the base model on `data/test.parquet` (`--sample` rows) | `eval-base/` |
//! | `finetune` | [`finetune`] on `data/train.parquet` (`--steps`) | `adapter/` |
//! | `eval-tuned` | [`evaluate`] with the adapter, same rows as `eval-base` | `eval-tuned/` |
//! | `finetune-entity-heldout` | a second fine-tune, same flags, on `data/train_entity_heldout.parquet` | `adapter-entity-heldout/` |
//! | `eval-base-entity-heldout` | the base model on `data/test_entity_heldout.parquet` | `eval-base-entity-heldout/` |
//! | `eval-tuned-entity-heldout` | the second adapter on the same rows | `eval-tuned-entity-heldout/` |
//! | `report` | [`write_report`] | `report.md`, `report.json`, PNGs |
//!
//! The entity-held-out side needs its own adapter: the pair split's `train.parquet`
//! contains the held-out genes and diseases, so an adapter trained on it has seen the
//! entities of `test_entity_heldout.parquet`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use bioalign_ctd::PrepareConfig;
use bioalign_metrics::{BootstrapConfig, SuiteConfig, TsneConfig};
use bioalign_models::DeviceChoice;

use crate::error::{Result, file_err, invalid};
use crate::evaluate::{EvaluateConfig, evaluate, read_split};
use crate::finetune::{FinetuneConfig, Template, finetune};
use crate::progress::{Progress, Stage};
use crate::provenance::{
    Provenance, StageRecord, host_description, model_files, peak_rss_bytes, reset_peak_rss,
};
use crate::report::{Comparison, ReportJson, write_report};
use crate::stats::CompareConfig;

/// File and folder names inside the run folder.
pub mod files {
    /// The stage ledger ([`super::StagesFile`]).
    pub const STAGES: &str = "stages.json";
    /// The prepared dataset.
    pub const DATA: &str = "data";
    /// Base model on the pair split's test rows.
    pub const EVAL_BASE: &str = "eval-base";
    /// The adapter trained on the pair split.
    pub const ADAPTER: &str = "adapter";
    /// Fine-tuned model on the pair split's test rows.
    pub const EVAL_TUNED: &str = "eval-tuned";
    /// The adapter trained on the entity-held-out split's training part.
    pub const ADAPTER_ENTITY: &str = "adapter-entity-heldout";
    /// Base model on the entity-held-out test rows.
    pub const EVAL_BASE_ENTITY: &str = "eval-base-entity-heldout";
    /// Second adapter on the entity-held-out test rows.
    pub const EVAL_TUNED_ENTITY: &str = "eval-tuned-entity-heldout";
}

/// What to reproduce and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ReproduceConfig {
    /// A `.gguf` file, a Hugging Face folder or a bnb-4bit checkpoint folder.
    pub model: PathBuf,
    /// The CTD gene-disease file (`prepare` stage).
    pub ctd: PathBuf,
    /// An existing `prepare_data` folder to use instead of preparing one (`--data-dir`).
    pub data_dir: Option<PathBuf>,
    /// The run folder.
    pub out: PathBuf,
    /// Optimizer steps of each fine-tuning.
    pub steps: usize,
    /// The training text. The default is the zero-shot prompt itself (`zero-shot`):
    /// the reference trained on its Alpaca text and evaluated with another prompt, a
    /// transfer that 7B models make and SmolLM2-135M does not (see docs/results.md);
    /// `alpaca` gives the reference's text.
    pub template: Template,
    /// Rows evaluated per split (capped at the split's size).
    pub sample: usize,
    /// Master seed: data preparation, sampling, training, statistics.
    pub seed: u64,
    /// QLoRA: NF4 base projections while fine-tuning, and for both models when evaluating.
    pub load_in_4bit: bool,
    /// Also run the entity-held-out side.
    pub entity_heldout: bool,
    /// Prompts per forward pass when evaluating.
    pub batch_size: usize,
    /// Bootstrap resamples of every interval.
    pub resamples: usize,
    /// Training rows held out for the held-out loss.
    pub eval_rows: usize,
    /// Permutation counts and other statistics settings (its `bootstrap`, `seed`,
    /// `tsne` and `projection_rows` are overwritten from the fields above).
    pub compare: CompareConfig,
    /// The backend and device of every model stage (`cpu` by default; `cuda[:N]` and
    /// `wgpu` with their features).
    pub device: DeviceChoice,
}

impl ReproduceConfig {
    /// The defaults: SmolLM2-135M-Instruct from `datasets/fetch.sh`, the CTD file it
    /// places, 300 steps per fine-tuning on the zero-shot template (two of them, pair
    /// and entity-held-out: inside the CPU budget of an hour on 2 cores, see
    /// docs/results.md), 500 rows, seed 42, NF4, both splits, into `out/reproduce`.
    pub fn new() -> Self {
        Self {
            model: bioalign_models::smollm2_gguf_path(),
            ctd: bioalign_io::data_dir().join("ctd/CTD_curated_genes_diseases.csv"),
            data_dir: None,
            out: PathBuf::from("out/reproduce"),
            steps: 300,
            template: Template::ZeroShot,
            sample: 500,
            seed: 42,
            load_in_4bit: true,
            entity_heldout: true,
            batch_size: 32,
            resamples: 1000,
            eval_rows: 100,
            compare: CompareConfig::default(),
            device: DeviceChoice::Cpu,
        }
    }

    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("steps", self.steps),
            ("sample", self.sample),
            ("batch_size", self.batch_size),
        ] {
            if v == 0 {
                return Err(invalid(field, 0, "at least 1"));
            }
        }
        if self.sample < 8 {
            return Err(invalid("sample", self.sample, "at least 8 rows"));
        }
        if self.resamples < 2 {
            return Err(invalid("resamples", self.resamples, "at least 2"));
        }
        if !self.model.exists() {
            return Err(file_err(
                &self.model,
                "model not found (run `bash datasets/fetch.sh models` or pass --model)",
            ));
        }
        match &self.data_dir {
            Some(d) if !d.join("test.parquet").exists() => {
                Err(file_err(d, "not a prepare_data folder (no test.parquet)"))
            }
            None if !self.ctd.exists() => Err(file_err(
                &self.ctd,
                "CTD file not found (run `bash datasets/fetch.sh ctd` or pass --ctd)",
            )),
            _ => Ok(()),
        }
    }

    /// Every setting as a flag name and value (recorded in `stages.json` and the report;
    /// a rerun must match them to resume).
    pub fn flags(&self) -> BTreeMap<String, String> {
        let mut f = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            f.insert(k.to_string(), v);
        };
        put("model", self.model.display().to_string());
        put("ctd", self.ctd.display().to_string());
        put(
            "data-dir",
            self.data_dir
                .as_ref()
                .map_or("none".into(), |d| d.display().to_string()),
        );
        put("out", self.out.display().to_string());
        put("steps", self.steps.to_string());
        put("template", self.template.to_string());
        put("sample", self.sample.to_string());
        put("seed", self.seed.to_string());
        put("load-in-4bit", self.load_in_4bit.to_string());
        put("entity-heldout", self.entity_heldout.to_string());
        put("batch-size", self.batch_size.to_string());
        put("resamples", self.resamples.to_string());
        put("eval-rows", self.eval_rows.to_string());
        // Recorded only off the CPU, so ledgers written before the flag existed resume.
        if self.device != DeviceChoice::Cpu {
            put("device", self.device.to_string());
        }
        put(
            "permutations",
            format!(
                "roc-auc {}, kg {}, probe {}, silhouette {}",
                self.compare.permutations_roc_auc,
                self.compare.permutations_kg,
                self.compare.permutations_probe,
                self.compare.permutations_silhouette
            ),
        );
        f
    }
}

impl Default for ReproduceConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// `stages.json`: the flags of the run and the stages finished so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagesFile {
    /// `bioalign-study <version>`.
    pub tool: String,
    /// The run's flags ([`ReproduceConfig::flags`]).
    pub flags: BTreeMap<String, String>,
    /// Finished stages, in order.
    pub stages: Vec<StageRecord>,
}

/// What happens to a stage (for a progress display).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StageEvent<'a> {
    /// Stage `index` (1-based) of `total` starts.
    Start {
        /// 1-based position.
        index: usize,
        /// Stages in this run.
        total: usize,
        /// Its name.
        name: &'a str,
    },
    /// Found finished in `stages.json` with its outputs present: skipped.
    Skipped {
        /// 1-based position.
        index: usize,
        /// Stages in this run.
        total: usize,
        /// Its name.
        name: &'a str,
    },
    /// Finished now.
    Done {
        /// 1-based position.
        index: usize,
        /// Stages in this run.
        total: usize,
        /// Its name.
        name: &'a str,
        /// Seconds it took.
        wall_s: f64,
    },
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReproduceSummary {
    /// The report.
    pub report: ReportJson,
    /// Stages run now.
    pub ran: Vec<String>,
    /// Stages skipped as already finished.
    pub skipped: Vec<String>,
}

fn read_stages(path: &Path) -> Result<Option<StagesFile>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| file_err(path, format!("not a stages.json: {e}")))
}

fn write_stages(path: &Path, s: &StagesFile) -> Result<()> {
    let json = serde_json::to_vec_pretty(s).map_err(|e| file_err(path, e))?;
    bioalign_io::atomic_write_bytes(path, &json)?;
    Ok(())
}

/// The suite and t-SNE settings for `rows` evaluated rows: the reference's 400
/// projected rows and perplexity 30 where there are enough rows, smaller otherwise
/// (t-SNE needs `rows - 1 >= 3 * perplexity`); cross-validation from 50 rows up.
fn suite_for(rows: usize, boot: &BootstrapConfig) -> (SuiteConfig, TsneConfig, usize) {
    let m = rows.min(400);
    let tsne = TsneConfig::default().for_rows(m);
    let suite = SuiteConfig {
        cross_validate: rows >= 50,
        tsne: tsne.clone(),
        projection_rows: m,
        bootstrap: Some(boot.clone()),
        ..SuiteConfig::default()
    };
    (suite, tsne, m)
}

/// Runs (or resumes) every stage and writes the report into `cfg.out`.
/// `progress` receives the evaluation and training progress, `on_stage` the stage
/// boundaries.
pub fn reproduce(
    cfg: &ReproduceConfig,
    progress: &dyn Progress,
    on_stage: &mut dyn FnMut(StageEvent<'_>),
) -> Result<ReproduceSummary> {
    cfg.validate()?;
    let out = &cfg.out;
    std::fs::create_dir_all(out).map_err(|e| file_err(out, format!("cannot create: {e}")))?;
    let ledger_path = out.join(files::STAGES);
    let flags = cfg.flags();
    let mut ledger = match read_stages(&ledger_path)? {
        Some(l) => {
            if let Some((k, v)) = l.flags.iter().find(|(k, v)| flags.get(*k) != Some(*v)) {
                return Err(file_err(
                    &ledger_path,
                    format!(
                        "this run folder was started with --{k} {v} but now {} is given; rerun \
                         with the same flags to resume, or use another --out",
                        flags
                            .get(k)
                            .map_or("nothing".to_string(), |x| format!("--{k} {x}"))
                    ),
                ));
            }
            if let Some(k) = flags.keys().find(|k| !l.flags.contains_key(*k)) {
                return Err(file_err(
                    &ledger_path,
                    format!("written without --{k}: use another --out"),
                ));
            }
            l
        }
        None => StagesFile {
            tool: format!("bioalign-study {}", env!("CARGO_PKG_VERSION")),
            flags: flags.clone(),
            stages: Vec::new(),
        },
    };

    let data = cfg
        .data_dir
        .clone()
        .unwrap_or_else(|| out.join(files::DATA));
    let boot = BootstrapConfig {
        n_resamples: cfg.resamples,
        confidence: 0.95,
        seed: cfg.seed,
    };
    let mut names = vec!["prepare", "eval-base", "finetune", "eval-tuned"];
    if cfg.entity_heldout {
        names.extend([
            "finetune-entity-heldout",
            "eval-base-entity-heldout",
            "eval-tuned-entity-heldout",
        ]);
    }
    names.push("report");
    let total = names.len();
    let (mut ran, mut skipped) = (Vec::new(), Vec::new());
    let mut report = None;
    for (i, &name) in names.iter().enumerate() {
        let index = i + 1;
        if let Some(rec) = ledger.stages.iter().find(|s| s.name == name)
            && rec.outputs.iter().all(|o| out.join(o).exists())
        {
            on_stage(StageEvent::Skipped { index, total, name });
            skipped.push(name.to_string());
            continue;
        }
        on_stage(StageEvent::Start { index, total, name });
        let per_stage = reset_peak_rss();
        let t0 = Instant::now();
        let outputs: Vec<String> = match name {
            "prepare" => {
                if cfg.data_dir.is_none() {
                    progress.start(Stage::Data, 1);
                    let pc = PrepareConfig {
                        seed: cfg.seed,
                        ..PrepareConfig::default()
                    };
                    let built = bioalign_ctd::prepare(&cfg.ctd, &pc, |_, _| {})?;
                    bioalign_ctd::write_outputs(&built, &data)?;
                    progress.finish(Stage::Data);
                }
                vec![rel(out, &data.join("dataset_card.json"))]
            }
            "eval-base"
            | "eval-tuned"
            | "eval-base-entity-heldout"
            | "eval-tuned-entity-heldout" => {
                let (split, dir, adapter) = match name {
                    "eval-base" => ("test.parquet", files::EVAL_BASE, None),
                    "eval-tuned" => ("test.parquet", files::EVAL_TUNED, Some(files::ADAPTER)),
                    "eval-base-entity-heldout" => {
                        ("test_entity_heldout.parquet", files::EVAL_BASE_ENTITY, None)
                    }
                    _ => (
                        "test_entity_heldout.parquet",
                        files::EVAL_TUNED_ENTITY,
                        Some(files::ADAPTER_ENTITY),
                    ),
                };
                let split_path = data.join(split);
                let rows = read_split(&split_path)?.len().min(cfg.sample);
                let (suite, _, _) = suite_for(rows, &boot);
                let mut ec = EvaluateConfig::new(&cfg.model, &split_path);
                ec.adapter = adapter.map(|a| out.join(a));
                // Base and fine-tuned on the same base weights (NF4 with QLoRA), so the
                // adapter is the only difference.
                ec.load_in_4bit = cfg.load_in_4bit;
                ec.sample = Some(rows);
                ec.seed = cfg.seed;
                ec.batch_size = cfg.batch_size;
                ec.bootstrap = Some(boot.clone());
                ec.suite = suite;
                ec.device = cfg.device;
                let target = out.join(dir);
                std::fs::create_dir_all(&target)
                    .map_err(|e| file_err(&target, format!("cannot create: {e}")))?;
                evaluate(&ec, &target, progress)?;
                vec![format!("{dir}/{}", crate::evaluate::files::METRICS)]
            }
            "finetune" | "finetune-entity-heldout" => {
                let (train, dir) = if name == "finetune" {
                    (data.clone(), files::ADAPTER)
                } else {
                    (
                        data.join("train_entity_heldout.parquet"),
                        files::ADAPTER_ENTITY,
                    )
                };
                let mut fc = FinetuneConfig::new(&cfg.model, train, out.join(dir));
                fc.train.max_steps = cfg.steps;
                fc.template = cfg.template.clone();
                fc.train.seed = cfg.seed;
                fc.train.eval_every = Some((cfg.steps / 4).max(1));
                fc.train.checkpoint_every = Some((cfg.steps / 4).max(1));
                fc.load_in_4bit = cfg.load_in_4bit;
                fc.resume = true;
                fc.eval_rows = cfg.eval_rows;
                fc.device = cfg.device;
                finetune(&fc, progress)?;
                vec![
                    format!("{dir}/adapter_config.json"),
                    format!("{dir}/adapter_model.safetensors"),
                ]
            }
            _ => {
                // report
                let tsne_of = |split: &str| -> Result<TsneConfig> {
                    let rows = read_split(&data.join(split))?.len().min(cfg.sample);
                    Ok(suite_for(rows, &boot).1)
                };
                let mut comparisons = vec![Comparison {
                    key: "pair".into(),
                    title: "Pair split (test rows of the stratified split)".into(),
                    base: out.join(files::EVAL_BASE),
                    tuned: out.join(files::EVAL_TUNED),
                    training: Some(out.join(files::ADAPTER)),
                    tsne: Some(tsne_of("test.parquet")?),
                }];
                if cfg.entity_heldout {
                    comparisons.push(Comparison {
                        key: "entity-heldout".into(),
                        title: "Entity-held-out split (genes and diseases never seen in training)"
                            .into(),
                        base: out.join(files::EVAL_BASE_ENTITY),
                        tuned: out.join(files::EVAL_TUNED_ENTITY),
                        training: Some(out.join(files::ADAPTER_ENTITY)),
                        tsne: Some(tsne_of("test_entity_heldout.parquet")?),
                    });
                }
                let mut compare = cfg.compare.clone();
                compare.bootstrap = Some(boot.clone());
                compare.seed = cfg.seed;
                let prov = provenance(cfg, &ledger, &data)?;
                progress.start(Stage::Metrics, 1);
                let r = write_report(
                    &format!(
                        "BioAlign study: {}",
                        cfg.model
                            .file_name()
                            .map_or("model".into(), |f| f.to_string_lossy().to_string())
                    ),
                    &comparisons,
                    Some(&prov),
                    &compare,
                    out,
                )?;
                progress.finish(Stage::Metrics);
                report = Some(r);
                vec![
                    crate::report::files::JSON.to_string(),
                    crate::report::files::MARKDOWN.to_string(),
                ]
            }
        };
        let wall_s = t0.elapsed().as_secs_f64();
        let rec = StageRecord {
            name: name.to_string(),
            wall_s,
            peak_rss_bytes: peak_rss_bytes(),
            peak_rss_is_per_stage: per_stage,
            outputs,
            finished_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        ledger.stages.retain(|s| s.name != name);
        ledger.stages.push(rec);
        write_stages(&ledger_path, &ledger)?;
        on_stage(StageEvent::Done {
            index,
            total,
            name,
            wall_s,
        });
        ran.push(name.to_string());
    }
    let report = match report {
        Some(r) => r,
        None => {
            let p = out.join(crate::report::files::JSON);
            let bytes = std::fs::read(&p).map_err(|e| file_err(&p, format!("cannot read: {e}")))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| file_err(&p, format!("not a report.json: {e}")))?
        }
    };
    Ok(ReproduceSummary {
        report,
        ran,
        skipped,
    })
}

fn rel(out: &Path, p: &Path) -> String {
    p.strip_prefix(out)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// The provenance at the report stage: the stages finished before it (the report's
/// own wall time and memory are in `stages.json` only) and the model files' hashes.
fn provenance(cfg: &ReproduceConfig, ledger: &StagesFile, data: &Path) -> Result<Provenance> {
    let card_path = data.join("dataset_card.json");
    let dataset_card = match std::fs::read(&card_path) {
        Ok(b) => Some(
            serde_json::from_slice(&b)
                .map_err(|e| file_err(&card_path, format!("not JSON: {e}")))?,
        ),
        Err(_) => None,
    };
    let stages: Vec<StageRecord> = ledger
        .stages
        .iter()
        .filter(|s| s.name != "report")
        .cloned()
        .collect();
    Ok(Provenance {
        tool: format!("bioalign-study {}", env!("CARGO_PKG_VERSION")),
        flags: cfg.flags(),
        seed: cfg.seed,
        model_files: model_files(&cfg.model)?,
        dataset_card,
        total_wall_s: stages.iter().map(|s| s.wall_s).sum(),
        stages,
        host: host_description(),
    })
}
