//! The study's results table, base against fine-tuned, from two `evaluate` folders
//! (issue 9): `report.json` ([`ReportJson`], documented in `docs/formats.md`),
//! `report.md` (tables with 95% intervals and p-values, figures linked) and the PNGs:
//! the base and fine-tuned t-SNE side by side (the study's "chaotic cloud to clusters"
//! figure), the confusion matrices of both zero-shot rules for both models, and the
//! loss curve copied from the fine-tuning folder.
//!
//! One report holds one or more [`Comparison`]s: the pair split and, when given, the
//! entity-held-out split (the study's missing gold standard). Each must compare the
//! same rows: the base and tuned `predictions.parquet` must list the same source rows
//! with the same labels, else the report stops with an error naming both files.
//! The statistics are [`crate::stats`]'.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use bioalign_metrics::ConfidenceInterval;
use bioalign_metrics::plots::{Panel, confusion_heatmap, projection_scatter};

use crate::error::{Result, file_err, invalid};
use crate::evaluate::{MetricsJson, files as eval_files};
use crate::output::{Prediction, read_embedding, read_predictions};
use crate::provenance::Provenance;
use crate::stats::{
    Change, CompareConfig, TestMethod, accuracy_change, kg_separation_change,
    probe_accuracy_change, roc_auc_change, silhouette_tsne_change,
};

/// File names the report writes.
pub mod files {
    /// The machine-readable report ([`super::ReportJson`]).
    pub const JSON: &str = "report.json";
    /// The human-readable report.
    pub const MARKDOWN: &str = "report.md";
    /// Suffix of the side-by-side projection (`{prefix}projection_base_vs_tuned.png`).
    pub const PROJECTION_PNG: &str = "projection_base_vs_tuned.png";
    /// Suffix of the copied loss curve (`{prefix}loss.png`).
    pub const LOSS_PNG: &str = "loss.png";
    /// The training log inside a fine-tuning folder.
    pub const TRAIN_LOG: &str = "train_log.csv";
}

/// One comparison: a base and a fine-tuned `evaluate` folder on the same rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Short key (`pair`, `entity-heldout`); also the figures' file prefix (`pair_`...).
    pub key: String,
    /// Heading in `report.md`.
    pub title: String,
    /// `evaluate` folder of the base model.
    pub base: PathBuf,
    /// `evaluate` folder of the fine-tuned model.
    pub tuned: PathBuf,
    /// The fine-tuning folder (`train_log.csv`, `loss.png`), if any.
    pub training: Option<PathBuf>,
    /// The t-SNE settings `evaluate` used for both folders, when they differ from the
    /// [`CompareConfig`]'s (the silhouette permutations rerun t-SNE with them).
    pub tsne: Option<bioalign_metrics::TsneConfig>,
}

/// A measure's row of the results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// Stable key (`zero_shot_accuracy`, `kg_separation`, ...).
    pub key: String,
    /// Name in the table.
    pub name: String,
    /// The base model's own interval from its `metrics.json`.
    pub base_ci: Option<ConfidenceInterval>,
    /// The fine-tuned model's own interval from its `metrics.json`.
    pub tuned_ci: Option<ConfidenceInterval>,
    /// Values, difference, its paired interval and the p-value.
    pub change: Change,
}

/// What `train_log.csv` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// The fine-tuning folder.
    pub dir: String,
    /// Steps logged.
    pub steps: usize,
    /// Training loss at the first step.
    pub first_loss: f64,
    /// Training loss at the last step.
    pub last_loss: f64,
    /// First held-out loss logged.
    pub first_eval_loss: Option<f64>,
    /// Last held-out loss logged.
    pub last_eval_loss: Option<f64>,
}

/// A figure written next to the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// File name inside the report folder.
    pub file: String,
    /// What it shows.
    pub caption: String,
}

/// One comparison's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonReport {
    /// Short key (`pair`, `entity-heldout`).
    pub key: String,
    /// Heading.
    pub title: String,
    /// The base `evaluate` folder.
    pub base_dir: String,
    /// The fine-tuned `evaluate` folder.
    pub tuned_dir: String,
    /// The model as the base `metrics.json` names it.
    pub model: String,
    /// The adapter as the fine-tuned `metrics.json` names it.
    pub adapter: Option<String>,
    /// The split file.
    pub data: String,
    /// Rows compared.
    pub n_rows: usize,
    /// Rows labelled true among them.
    pub n_true: usize,
    /// The results table.
    pub measures: Vec<Measure>,
    /// The fine-tuning log, when given.
    pub training: Option<TrainingSummary>,
    /// Its figures.
    pub figures: Vec<Figure>,
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportJson {
    /// `bioalign-study <version>`.
    pub tool: String,
    /// Title.
    pub title: String,
    /// Statistics settings.
    pub compare: CompareConfig,
    /// One entry per comparison, in order.
    pub comparisons: Vec<ComparisonReport>,
    /// How the inputs were made, when known.
    pub provenance: Option<Provenance>,
}

fn read_metrics(dir: &Path) -> Result<MetricsJson> {
    let p = dir.join(eval_files::METRICS);
    let bytes = std::fs::read(&p).map_err(|e| file_err(&p, format!("cannot read: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| file_err(&p, format!("not a metrics.json: {e}")))
}

/// The last pooled layer in an `embeddings.safetensors` (`embeddings`, else the
/// highest `embeddings.layer_I`).
pub fn read_last_embeddings(path: &Path) -> Result<Array2<f32>> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| file_err(path, e))?;
    let names = st.names();
    let name = if names.contains(&"embeddings") {
        "embeddings".to_string()
    } else {
        names
            .iter()
            .filter_map(|n| n.strip_prefix("embeddings.layer_")?.parse::<usize>().ok())
            .max()
            .map(|i| format!("embeddings.layer_{i}"))
            .ok_or_else(|| file_err(path, "no `embeddings` tensor"))?
    };
    drop(st);
    read_embedding(path, &name)
}

/// Parses `train_log.csv` (bioalign-lora's columns; `step`, `loss` and `eval_loss` read).
pub fn read_train_log(path: &Path) -> Result<TrainingSummary> {
    let text =
        std::fs::read_to_string(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| file_err(path, "empty"))?
        .split(',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| file_err(path, format!("line 1: no `{name}` column")))
    };
    let (c_loss, c_eval) = (col("loss")?, col("eval_loss")?);
    col("step")?;
    let (mut steps, mut first, mut last) = (0usize, f64::NAN, f64::NAN);
    let (mut first_eval, mut last_eval) = (None, None);
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |c: usize, name: &str| -> Result<Option<f64>> {
            match f.get(c).map(|s| s.trim()) {
                None | Some("") => Ok(None),
                Some(s) => s.parse::<f64>().map(Some).map_err(|_| {
                    file_err(
                        path,
                        format!("line {}: {name} {s:?} is not a number", i + 2),
                    )
                }),
            }
        };
        let loss = num(c_loss, "loss")?
            .ok_or_else(|| file_err(path, format!("line {}: empty loss", i + 2)))?;
        if steps == 0 {
            first = loss;
        }
        last = loss;
        steps += 1;
        if let Some(e) = num(c_eval, "eval_loss")? {
            first_eval.get_or_insert(e);
            last_eval = Some(e);
        }
    }
    if steps == 0 {
        return Err(file_err(path, "no logged step"));
    }
    Ok(TrainingSummary {
        dir: path
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        steps,
        first_loss: first,
        last_loss: last,
        first_eval_loss: first_eval,
        last_eval_loss: last_eval,
    })
}

fn check_same_rows(base: &Path, tuned: &Path, pb: &[Prediction], pt: &[Prediction]) -> Result<()> {
    let what = || {
        format!(
            "{} vs {}",
            base.join(eval_files::PREDICTIONS).display(),
            tuned.join(eval_files::PREDICTIONS).display()
        )
    };
    if pb.len() != pt.len() {
        return Err(invalid(
            "report: predictions",
            format!("{}: {} vs {} rows", what(), pb.len(), pt.len()),
            "both models evaluated on the same rows (same --data, --sample, --seed)",
        ));
    }
    if let Some(i) = (0..pb.len()).find(|&i| pb[i].row != pt[i].row || pb[i].label != pt[i].label) {
        return Err(invalid(
            "report: predictions",
            format!(
                "{}: position {i} is row {} (label {}) vs row {} (label {})",
                what(),
                pb[i].row,
                pb[i].label,
                pt[i].row,
                pt[i].label
            ),
            "both models evaluated on the same rows (same --data, --sample, --seed)",
        ));
    }
    Ok(())
}

/// Computes one comparison and writes its figures into `out` (prefix `{key}_`).
pub fn compare(c: &Comparison, cfg: &CompareConfig, out: &Path) -> Result<ComparisonReport> {
    let (mb, mt) = (read_metrics(&c.base)?, read_metrics(&c.tuned)?);
    let pb = read_predictions(&c.base.join(eval_files::PREDICTIONS))?;
    let pt = read_predictions(&c.tuned.join(eval_files::PREDICTIONS))?;
    check_same_rows(&c.base, &c.tuned, &pb, &pt)?;
    let xb = read_last_embeddings(&c.base.join(eval_files::EMBEDDINGS))?;
    let xt = read_last_embeddings(&c.tuned.join(eval_files::EMBEDDINGS))?;
    for (x, dir) in [(&xb, &c.base), (&xt, &c.tuned)] {
        if x.nrows() != pb.len() {
            return Err(file_err(
                &dir.join(eval_files::EMBEDDINGS),
                format!(
                    "{} rows but predictions.parquet has {}",
                    x.nrows(),
                    pb.len()
                ),
            ));
        }
    }
    let labels: Vec<usize> = pb.iter().map(|p| p.label).collect();
    let m = mb.embeddings.projection_rows;
    if mt.embeddings.projection_rows != m {
        return Err(invalid(
            "report: projection rows",
            format!("{m} vs {}", mt.embeddings.projection_rows),
            "the same t-SNE rows for both models",
        ));
    }
    let cfg = CompareConfig {
        projection_rows: m,
        tsne: c.tsne.clone().unwrap_or_else(|| cfg.tsne.clone()),
        ..cfg.clone()
    };
    let boot = cfg.bootstrap.as_ref();
    fn col(p: &[Prediction], f: fn(&Prediction) -> usize) -> Vec<usize> {
        p.iter().map(f).collect()
    }
    fn scores(p: &[Prediction]) -> Vec<f64> {
        p.iter().map(|r| r.score).collect()
    }

    // The three embedding tests are independent: run them side by side.
    let (kg, probe, sil) = std::thread::scope(|s| {
        let kg = s.spawn(|| kg_separation_change(xb.view(), xt.view(), &labels, &cfg));
        let probe = s.spawn(|| probe_accuracy_change(xb.view(), xt.view(), &labels, &cfg));
        let sil = silhouette_tsne_change(
            xb.view(),
            xt.view(),
            &labels,
            Some((mb.embeddings.tsne.as_slice(), mt.embeddings.tsne.as_slice())),
            &cfg,
        );
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<Change>>| {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        };
        (join(kg), join(probe), sil)
    });
    let zb = &mb.zero_shot;
    let zt = &mt.zero_shot;
    let measures = vec![
        Measure {
            key: "zero_shot_accuracy".into(),
            name: "Zero-shot accuracy (reference rule: answer contains \"true\")".into(),
            base_ci: zb.generated.accuracy_ci,
            tuned_ci: zt.generated.accuracy_ci,
            change: accuracy_change(
                &labels,
                &col(&pb, |p| p.pred_generated),
                &col(&pt, |p| p.pred_generated),
                boot,
            )?,
        },
        Measure {
            key: "zero_shot_accuracy_logprob".into(),
            name: "Zero-shot accuracy (next token: log p(true) > log p(false))".into(),
            base_ci: zb.logprob.accuracy_ci,
            tuned_ci: zt.logprob.accuracy_ci,
            change: accuracy_change(
                &labels,
                &col(&pb, |p| p.pred_logprob),
                &col(&pt, |p| p.pred_logprob),
                boot,
            )?,
        },
        Measure {
            key: "zero_shot_roc_auc".into(),
            name: "Zero-shot ROC-AUC of log p(true) - log p(false)".into(),
            base_ci: zb.roc_auc_ci,
            tuned_ci: zt.roc_auc_ci,
            change: roc_auc_change(
                &labels,
                &scores(&pb),
                &scores(&pt),
                boot,
                cfg.permutations_roc_auc,
                cfg.seed,
            )?,
        },
        Measure {
            key: "kg_separation".into(),
            name: "KG separation".into(),
            base_ci: mb.embeddings.kg_separation_ci,
            tuned_ci: mt.embeddings.kg_separation_ci,
            change: kg?,
        },
        Measure {
            key: "probe_accuracy".into(),
            name: "Linear probe accuracy (70/30)".into(),
            base_ci: mb.embeddings.probe_accuracy_ci,
            tuned_ci: mt.embeddings.probe_accuracy_ci,
            change: probe?,
        },
        Measure {
            key: "silhouette_tsne".into(),
            name: format!("Silhouette (t-SNE of the first {m} rows)"),
            base_ci: mb.embeddings.silhouette_tsne_ci,
            tuned_ci: mt.embeddings.silhouette_tsne_ci,
            change: sil?,
        },
    ];

    // Figures.
    let prefix = format!("{}_", c.key);
    let mut figures = Vec::new();
    let proj = format!("{prefix}{}", files::PROJECTION_PNG);
    projection_scatter(
        &out.join(&proj),
        &format!(
            "t-SNE, first {m} rows: base (silhouette {:.3}) | fine-tuned ({:.3})",
            mb.embeddings.silhouette_tsne, mt.embeddings.silhouette_tsne
        ),
        &[
            Panel {
                name: "base",
                coords: &mb.embeddings.tsne,
                labels: &labels[..m],
            },
            Panel {
                name: "fine-tuned",
                coords: &mt.embeddings.tsne,
                labels: &labels[..m],
            },
        ],
    )?;
    figures.push(Figure {
        file: proj,
        caption: format!(
            "{}: t-SNE of the first {m} sentence embeddings, base (left) beside fine-tuned (right), coloured by label",
            c.title
        ),
    });
    for (model, mj) in [("base", &mb), ("tuned", &mt)] {
        for (rule, scores, desc) in [
            (
                "generated",
                &mj.zero_shot.generated,
                "answer contains \"true\"",
            ),
            (
                "logprob",
                &mj.zero_shot.logprob,
                "log p(\" true\") > log p(\" false\")",
            ),
        ] {
            let file = format!("{prefix}confusion_{model}_{rule}.png");
            let who = if model == "base" {
                "base"
            } else {
                "fine-tuned"
            };
            confusion_heatmap(
                &out.join(&file),
                &format!(
                    "{who}, zero-shot, {desc} (accuracy {:.3})",
                    scores.report.accuracy
                ),
                &scores.report.confusion,
            )?;
            figures.push(Figure {
                file,
                caption: format!(
                    "{}: confusion matrix of the {who} model, zero-shot rule {desc}",
                    c.title
                ),
            });
        }
    }
    let training = match &c.training {
        Some(dir) => {
            let t = read_train_log(&dir.join(files::TRAIN_LOG))?;
            let png = dir.join(files::LOSS_PNG);
            if png.exists() {
                let file = format!("{prefix}{}", files::LOSS_PNG);
                let bytes =
                    std::fs::read(&png).map_err(|e| file_err(&png, format!("cannot read: {e}")))?;
                bioalign_io::atomic_write_bytes(&out.join(&file), &bytes)?;
                figures.push(Figure {
                    file,
                    caption: format!(
                        "{}: training loss per step and held-out loss ({} steps)",
                        c.title, t.steps
                    ),
                });
            }
            Some(t)
        }
        None => None,
    };
    Ok(ComparisonReport {
        key: c.key.clone(),
        title: c.title.clone(),
        base_dir: c.base.display().to_string(),
        tuned_dir: c.tuned.display().to_string(),
        model: mb.model.clone(),
        adapter: mt.adapter.clone(),
        data: mb.data.clone(),
        n_rows: labels.len(),
        n_true: labels.iter().filter(|&&l| l == 1).count(),
        measures,
        training,
        figures,
    })
}

/// Computes every comparison and writes `report.json`, `report.md` and the figures
/// into `out` (created if needed).
pub fn write_report(
    title: &str,
    comparisons: &[Comparison],
    provenance: Option<&Provenance>,
    cfg: &CompareConfig,
    out: &Path,
) -> Result<ReportJson> {
    cfg.validate()?;
    if comparisons.is_empty() {
        return Err(invalid("report: comparisons", 0, "at least one"));
    }
    std::fs::create_dir_all(out).map_err(|e| file_err(out, format!("cannot create: {e}")))?;
    let reports = comparisons
        .iter()
        .map(|c| compare(c, cfg, out))
        .collect::<Result<Vec<_>>>()?;
    let report = ReportJson {
        tool: format!("bioalign-study {}", env!("CARGO_PKG_VERSION")),
        title: title.to_string(),
        compare: cfg.clone(),
        comparisons: reports,
        provenance: provenance.cloned(),
    };
    let json_path = out.join(files::JSON);
    let json = serde_json::to_vec_pretty(&report).map_err(|e| file_err(&json_path, e))?;
    bioalign_io::atomic_write_bytes(&json_path, &json)?;
    bioalign_io::atomic_write_bytes(&out.join(files::MARKDOWN), markdown(&report).as_bytes())?;
    Ok(report)
}

fn fmt_ci(v: f64, ci: Option<&ConfidenceInterval>) -> String {
    match ci {
        Some(c) => format!("{v:.3} [{:.3}, {:.3}]", c.lower, c.upper),
        None => format!("{v:.3}"),
    }
}

fn fmt_p(c: &Change) -> String {
    match (c.p_value, c.method, c.n_permutations) {
        (None, _, _) => "not tested".into(),
        (Some(p), TestMethod::ExactSignFlip, _) => format!("{} (exact)", fmt_pv(p)),
        (Some(p), TestMethod::PairedPermutation, Some(k)) => {
            format!("{} ({k} perm.)", fmt_pv(p))
        }
        (Some(p), _, None) => fmt_pv(p),
    }
}

fn fmt_pv(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

fn fmt_bytes(b: Option<u64>) -> String {
    b.map_or("n/a".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0))
}

/// The sentence under each table that says in words which changes are significant
/// at the 5% level (two-sided p < 0.05), the first measure (the study's zero-shot
/// rule) first.
pub fn significance_summary(c: &ComparisonReport) -> String {
    let verdict = |ch: &Change| match ch.p_value {
        Some(p) if p < 0.05 => "significant at the 5% level",
        Some(_) => "not significant at the 5% level",
        None => "not tested",
    };
    let mut out = String::new();
    if let Some(m) = c.measures.first() {
        let ch = &m.change;
        let direction = if ch.diff > 0.0 {
            "higher than"
        } else if ch.diff < 0.0 {
            "lower than"
        } else {
            "equal to"
        };
        let _ = write!(
            out,
            "**{}: the fine-tuned model is {direction} its base ({:.3} -> {:.3}, {:+.3}, p {}): {}.**",
            m.name,
            ch.base,
            ch.tuned,
            ch.diff,
            ch.p_value.map_or("n/a".into(), fmt_pv),
            verdict(ch)
        );
    }
    let (sig, not): (Vec<&Measure>, Vec<&Measure>) = c
        .measures
        .iter()
        .skip(1)
        .filter(|m| m.change.p_value.is_some())
        .partition(|m| m.change.p_value.is_some_and(|p| p < 0.05));
    let list = |ms: &[&Measure]| {
        ms.iter()
            .map(|m| format!("{} ({:+.3})", m.name, m.change.diff))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if !sig.is_empty() {
        let _ = write!(out, " Other measures significant at 5%: {}.", list(&sig));
    }
    if !not.is_empty() {
        let _ = write!(out, " Not significant at 5%: {}.", list(&not));
    }
    out
}

/// `report.md` for `r`.
pub fn markdown(r: &ReportJson) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", r.title);
    let _ = writeln!(
        s,
        "Written by {}. Each table compares the base model with the fine-tuned one on the \
         same rows: the model's value with its own 95% bootstrap interval, the change \
         `fine-tuned - base` with a paired 95% bootstrap interval, the relative change, \
         and the two-sided p-value of \"no change\" (exact sign-flip test for accuracies, \
         row-wise swap permutations otherwise; see docs/results.md).\n",
        r.tool
    );
    for c in &r.comparisons {
        let _ = writeln!(s, "## {}\n", c.title);
        let _ = writeln!(
            s,
            "Model `{}`, adapter `{}`, split `{}`: {} rows ({} true).\n",
            c.model,
            c.adapter.as_deref().unwrap_or("none"),
            c.data,
            c.n_rows,
            c.n_true
        );
        let _ = writeln!(
            s,
            "| measure | base [95% CI] | fine-tuned [95% CI] | change [95% CI] | change % | p-value |"
        );
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- |");
        for m in &c.measures {
            let ch = &m.change;
            let diff = match &ch.diff_ci {
                Some(ci) => format!("{:+.3} [{:+.3}, {:+.3}]", ch.diff, ci.lower, ci.upper),
                None => format!("{:+.3}", ch.diff),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                m.name,
                fmt_ci(ch.base, m.base_ci.as_ref()),
                fmt_ci(ch.tuned, m.tuned_ci.as_ref()),
                diff,
                ch.diff_pct.map_or("n/a".into(), |p| format!("{p:+.1}%")),
                fmt_p(ch)
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "{}\n", significance_summary(c));
        if let Some(t) = &c.training {
            let eval = match (t.first_eval_loss, t.last_eval_loss) {
                (Some(a), Some(b)) => format!("; held-out loss {a:.4} -> {b:.4}"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "Fine-tuning (`{}`): {} steps, training loss {:.4} -> {:.4}{eval}.\n",
                t.dir, t.steps, t.first_loss, t.last_loss
            );
        }
        for f in &c.figures {
            let _ = writeln!(s, "![{}]({})\n", f.caption, f.file);
        }
    }
    if let Some(p) = &r.provenance {
        let _ = writeln!(s, "## Provenance\n");
        let _ = writeln!(
            s,
            "{}, seed {}, host {}, total wall time {:.1} s.\n",
            p.tool, p.seed, p.host, p.total_wall_s
        );
        let _ = writeln!(s, "| stage | wall time | peak memory | outputs |");
        let _ = writeln!(s, "| --- | --- | --- | --- |");
        for st in &p.stages {
            let _ = writeln!(
                s,
                "| {} | {:.1} s | {}{} | {} |",
                st.name,
                st.wall_s,
                fmt_bytes(st.peak_rss_bytes),
                if st.peak_rss_is_per_stage {
                    ""
                } else {
                    " (process)"
                },
                st.outputs.join(", ")
            );
        }
        let _ = writeln!(s, "\nModel files:\n");
        for f in &p.model_files {
            let _ = writeln!(
                s,
                "- `{}` ({} bytes) sha256 `{}`",
                f.path, f.bytes, f.sha256
            );
        }
        let _ = writeln!(s, "\nFlags:\n");
        for (k, v) in &p.flags {
            let _ = writeln!(s, "- `--{k}` {v}");
        }
        if let Some(card) = &p.dataset_card {
            let get = |path: &[&str]| -> String {
                let mut v = card;
                for k in path {
                    match v.get(*k) {
                        Some(x) => v = x,
                        None => return "n/a".into(),
                    }
                }
                v.to_string()
            };
            let _ = writeln!(
                s,
                "\nData card: input `{}` (sha256 {}), {} rows ({} positives, {} negatives), \
                 {} genes, {} diseases; pair split {} / {} rows, entity-held-out split {} / {} \
                 rows; produced by {}.",
                get(&["provenance", "input"]).trim_matches('"'),
                get(&["provenance", "input_sha256"]),
                get(&["rows", "rows"]),
                get(&["rows", "positives"]),
                get(&["rows", "negatives"]),
                get(&["distinct_genes"]),
                get(&["distinct_diseases"]),
                get(&["pair_split", "train", "rows"]),
                get(&["pair_split", "test", "rows"]),
                get(&["entity_heldout_split", "train", "rows"]),
                get(&["entity_heldout_split", "test", "rows"]),
                get(&["provenance", "library"]).trim_matches('"'),
            );
        }
    }
    s
}
