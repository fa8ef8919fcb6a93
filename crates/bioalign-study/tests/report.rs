//! `write_report` on two small synthetic `evaluate` folders (written with the crate's
//! own writers): every artefact exists, report.json parses back into `ReportJson`,
//! report.md links every figure, the numbers are the ones put in, and mismatched rows
//! are refused with an error naming both prediction files.

use std::path::Path;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use bioalign_metrics::{
    BootstrapConfig, SuiteConfig, TsneConfig, ZeroDivision, classification_report, roc_auc,
};
use bioalign_study::evaluate::{MetricsJson, RuleScores, Timings, ZeroShotScores, files};
use bioalign_study::output::{Prediction, write_embeddings, write_predictions};
use bioalign_study::provenance::{FileHash, Provenance, StageRecord};
use bioalign_study::report::{
    Comparison, ReportJson, files as report_files, significance_summary, write_report,
};
use bioalign_study::stats::{CompareConfig, TestMethod};
use bioalign_study::zero_shot::{AnswerToken, AnswerTokens};

const N: usize = 40;

fn tsne_cfg() -> TsneConfig {
    TsneConfig {
        perplexity: 5.0,
        max_iter: 250,
        ..TsneConfig::default()
    }
}

fn boot() -> BootstrapConfig {
    BootstrapConfig {
        n_resamples: 100,
        ..BootstrapConfig::default()
    }
}

fn rule(labels: &[usize], pred: &[usize]) -> RuleScores {
    RuleScores {
        report: classification_report(labels, pred, ZeroDivision::Zero).unwrap(),
        accuracy_ci: None,
        n_predicted_true: pred.iter().filter(|&&p| p == 1).count(),
    }
}

/// An `evaluate` folder: class shift `shift` in the embeddings, the generated rule right
/// on the rows where `right(i)`, scores separating the classes by `margin`.
fn write_eval_folder(
    dir: &Path,
    shift: f32,
    right: impl Fn(usize) -> bool,
    margin: f64,
    seed: u64,
) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let labels: Vec<usize> = (0..N).map(|i| i % 2).collect();
    let x = Array2::from_shape_fn((N, 8), |(i, _)| {
        labels[i] as f32 * shift + rng.random::<f32>() + 0.5
    });
    let genes: Vec<String> = (0..N).map(|i| format!("G{}", i % 7)).collect();
    let diseases: Vec<String> = (0..N).map(|i| format!("D{}", i % 5)).collect();
    let rows: Vec<usize> = (0..N).map(|i| 3 * i + 1).collect();
    let mut preds = Vec::new();
    for i in 0..N {
        let l = labels[i];
        let pg = if right(i) { l } else { 1 - l };
        let score = (l as f64 - 0.5) * margin + rng.random::<f64>() - 0.5;
        preds.push(Prediction {
            row: rows[i],
            gene: genes[i].clone(),
            disease: diseases[i].clone(),
            text: format!("{} is associated with {}.", genes[i], diseases[i]),
            label: l,
            answer: if pg == 1 {
                " true".into()
            } else {
                " false".into()
            },
            score,
            logp_true: score - 1.0,
            logp_false: -1.0,
            pred_generated: pg,
            pred_logprob: usize::from(score > 0.0),
        });
    }
    write_predictions(&dir.join(files::PREDICTIONS), &preds).unwrap();
    write_embeddings(
        &dir.join(files::EMBEDDINGS),
        std::slice::from_ref(&x),
        &labels,
        &rows,
    )
    .unwrap();
    let pg: Vec<usize> = preds.iter().map(|p| p.pred_generated).collect();
    let pl: Vec<usize> = preds.iter().map(|p| p.pred_logprob).collect();
    let scores: Vec<f64> = preds.iter().map(|p| p.score).collect();
    let suite = SuiteConfig {
        cross_validate: false,
        tsne: tsne_cfg(),
        projection_rows: N,
        bootstrap: Some(boot()),
        ..SuiteConfig::default()
    };
    let g: Vec<&str> = genes.iter().map(String::as_str).collect();
    let d: Vec<&str> = diseases.iter().map(String::as_str).collect();
    let m = MetricsJson {
        tool: "test".into(),
        model: "synthetic-model".into(),
        adapter: (shift > 1.0).then(|| "synthetic-adapter".into()),
        load_in_4bit: false,
        data: "synthetic.parquet".into(),
        data_rows: 3 * N,
        sample: Some(N),
        seed: 42,
        n_rows: N,
        pooling: "mean".into(),
        layers: "last".into(),
        zero_shot: ZeroShotScores {
            prompt_template: bioalign_ctd::ZERO_SHOT_TEMPLATE.into(),
            max_new_tokens: 3,
            answer_tokens: AnswerTokens {
                yes: AnswerToken {
                    text: " true".into(),
                    ids: vec![1],
                    scored_id: 1,
                },
                no: AnswerToken {
                    text: " false".into(),
                    ids: vec![2],
                    scored_id: 2,
                },
                single_token: true,
            },
            generated: rule(&labels, &pg),
            logprob: rule(&labels, &pl),
            roc_auc: roc_auc(&labels, &scores).unwrap(),
            roc_auc_ci: None,
            agreement: pg.iter().zip(&pl).filter(|(a, b)| a == b).count() as f64 / N as f64,
            agreement_ci: None,
            n_answers_neither: 0,
        },
        embeddings: bioalign_metrics::evaluate(x.view(), &labels, &suite).unwrap(),
        layer_profile: None,
        kg_alignment: bioalign_study::kg::kg_alignment(x.view(), &g, &d, &labels, 100).unwrap(),
        timings: Timings::default(),
    };
    std::fs::write(
        dir.join(files::METRICS),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
}

/// Equal up to the last bit serde_json's float parsing may change.
fn assert_same_report(a: &ReportJson, b: &ReportJson) {
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(1.0);
    assert_eq!(a.comparisons.len(), b.comparisons.len());
    for (ca, cb) in a.comparisons.iter().zip(&b.comparisons) {
        assert_eq!(ca.figures, cb.figures);
        assert_eq!((ca.n_rows, ca.n_true), (cb.n_rows, cb.n_true));
        for (ma, mb) in ca.measures.iter().zip(&cb.measures) {
            assert_eq!(ma.key, mb.key);
            let (x, y) = (&ma.change, &mb.change);
            assert!(close(x.base, y.base) && close(x.tuned, y.tuned) && close(x.diff, y.diff));
            assert_eq!(x.p_value.is_some(), y.p_value.is_some());
            assert!(close(x.p_value.unwrap_or(0.0), y.p_value.unwrap_or(0.0)));
            assert_eq!(x.method, y.method);
        }
    }
    assert_eq!(a.provenance.is_some(), b.provenance.is_some());
}

fn compare_cfg() -> CompareConfig {
    CompareConfig {
        bootstrap: Some(boot()),
        permutations_roc_auc: 99,
        permutations_kg: 99,
        permutations_probe: 19,
        permutations_silhouette: 4,
        tsne: tsne_cfg(),
        ..CompareConfig::default()
    }
}

fn provenance() -> Provenance {
    Provenance {
        tool: "bioalign-study test".into(),
        flags: [("steps".to_string(), "2".to_string())]
            .into_iter()
            .collect(),
        seed: 42,
        model_files: vec![FileHash {
            path: "model.gguf".into(),
            bytes: 3,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        }],
        dataset_card: Some(
            serde_json::json!({"rows": {"rows": 120, "positives": 60, "negatives": 60}}),
        ),
        stages: vec![StageRecord {
            name: "eval-base".into(),
            wall_s: 1.5,
            peak_rss_bytes: Some(100 << 20),
            peak_rss_is_per_stage: true,
            outputs: vec!["eval-base/metrics.json".into()],
            finished_unix_s: 1,
        }],
        total_wall_s: 1.5,
        host: "test".into(),
    }
}

#[test]
fn report_from_synthetic_folders_writes_every_artefact() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // base: right on half the rows, no geometry; tuned: right on 38 of 40, separated
    write_eval_folder(&root.join("base"), 0.0, |i| i % 4 < 2, 0.2, 1);
    write_eval_folder(&root.join("tuned"), 3.0, |i| i % 20 != 0, 6.0, 2);
    let train = root.join("adapter");
    std::fs::create_dir_all(&train).unwrap();
    std::fs::write(
        train.join("train_log.csv"),
        "step,epoch,loss,lr,grad_norm,tokens,tokens_per_s,eval_loss\n\
         1,0.01,2.5,0.0001,1.0,100,50.0,2.6\n2,0.02,2.0,0.0002,1.0,100,50.0,\n3,0.03,1.5,0.0002,1.0,100,50.0,1.7\n",
    )
    .unwrap();
    std::fs::write(train.join("loss.png"), b"\x89PNG fake").unwrap();
    let out = root.join("report");
    let c = Comparison {
        key: "pair".into(),
        title: "Pair split".into(),
        base: root.join("base"),
        tuned: root.join("tuned"),
        training: Some(train),
        tsne: None,
    };
    let r = write_report("Synthetic", &[c], Some(&provenance()), &compare_cfg(), &out).unwrap();

    let parsed: ReportJson =
        serde_json::from_slice(&std::fs::read(out.join(report_files::JSON)).unwrap()).unwrap();
    assert_same_report(&parsed, &r);
    let cmp = &parsed.comparisons[0];
    assert_eq!(cmp.n_rows, N);
    assert_eq!(cmp.adapter.as_deref(), Some("synthetic-adapter"));
    let keys: Vec<&str> = cmp.measures.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "zero_shot_accuracy",
            "zero_shot_accuracy_logprob",
            "zero_shot_roc_auc",
            "kg_separation",
            "probe_accuracy",
            "silhouette_tsne"
        ]
    );
    let zs = &cmp.measures[0].change;
    assert!((zs.base - 0.5).abs() < 1e-12 && (zs.tuned - 0.95).abs() < 1e-12);
    assert_eq!(zs.method, TestMethod::ExactSignFlip);
    assert!(zs.p_value.unwrap() < 0.01);
    let kg = &cmp.measures[3].change;
    assert!(kg.diff > 0.0 && kg.p_value.unwrap() <= 0.02, "{kg:?}");
    assert_eq!(kg.n_permutations, Some(99));
    for m in &cmp.measures {
        assert!(m.change.diff_ci.is_some(), "{} has no interval", m.key);
    }
    // the per-model intervals come from metrics.json
    assert!(cmp.measures[3].base_ci.is_some() && cmp.measures[3].tuned_ci.is_some());
    let t = cmp.training.as_ref().unwrap();
    assert_eq!((t.steps, t.first_loss, t.last_loss), (3, 2.5, 1.5));
    assert_eq!(
        (t.first_eval_loss, t.last_eval_loss),
        (Some(2.6), Some(1.7))
    );

    let md = std::fs::read_to_string(out.join(report_files::MARKDOWN)).unwrap();
    assert!(md.contains("| KG separation |"));
    assert!(md.contains("## Provenance"));
    assert!(md.contains("ba7816bf8f01cfea"));
    // The report says in words whether the headline change is significant.
    let verdict = format!(
        "**{}: the fine-tuned model is higher than its base (0.500 -> 0.950, +0.450, p ",
        cmp.measures[0].name
    );
    assert!(md.contains(&verdict), "{md}");
    assert!(md.contains("): significant at the 5% level.**"), "{md}");
    let mut weak = cmp.clone();
    weak.measures[0].change.p_value = Some(0.2);
    weak.measures[0].change.diff = -0.01;
    let line = significance_summary(&weak);
    assert!(line.contains("is lower than its base"), "{line}");
    assert!(
        line.contains("p 0.2000): not significant at the 5% level.**"),
        "{line}"
    );
    for f in &cmp.figures {
        let bytes = std::fs::read(out.join(&f.file)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{} is not a PNG", f.file);
        assert!(
            md.contains(&format!("]({})", f.file)),
            "{} not linked",
            f.file
        );
    }
    let names: Vec<&str> = cmp.figures.iter().map(|f| f.file.as_str()).collect();
    for want in [
        "pair_projection_base_vs_tuned.png",
        "pair_confusion_base_generated.png",
        "pair_confusion_tuned_logprob.png",
        "pair_loss.png",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[test]
fn report_refuses_folders_on_different_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_eval_folder(&root.join("base"), 0.0, |i| i % 2 == 0, 0.2, 1);
    write_eval_folder(&root.join("tuned"), 3.0, |_| true, 6.0, 2);
    // rewrite the tuned predictions with other source rows
    let p = root.join("tuned").join(files::PREDICTIONS);
    let mut preds = bioalign_study::output::read_predictions(&p).unwrap();
    preds[5].row += 1;
    write_predictions(&p, &preds).unwrap();
    let c = Comparison {
        key: "pair".into(),
        title: "Pair split".into(),
        base: root.join("base"),
        tuned: root.join("tuned"),
        training: None,
        tsne: None,
    };
    let err = write_report("x", &[c], None, &compare_cfg(), &root.join("r"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("position 5"), "{err}");
    assert!(err.contains("predictions.parquet"), "{err}");
    assert!(!root.join("r").join(report_files::JSON).exists());
}
