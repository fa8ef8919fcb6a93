//! The whole `reproduce` pipeline on a tiny configuration (issue 9's CI test):
//! SmolLM2-135M-Instruct (`datasets/fetch.sh models`), 2 fine-tuning steps, 24 rows per
//! evaluation, on a CTD file of every 100th row of the mirror's curated file (about 340
//! associations). Checks that every artefact exists and parses (dataset, both
//! evaluations per split, both adapters, report.json / report.md / PNGs, stages.json),
//! that the entity-held-out side trained on its own split, and that a second run skips
//! every finished stage and reproduces the same report.

mod common;

use std::path::{Path, PathBuf};

use bioalign_study::MetricsJson;
use bioalign_study::NoProgress;
use bioalign_study::report::{ReportJson, files as report_files};
use bioalign_study::reproduce::{ReproduceConfig, StageEvent, StagesFile, files, reproduce};

/// The header lines and every 100th data row of the curated CTD file.
fn tiny_ctd(src: &Path, dst: &Path) {
    let text = std::fs::read_to_string(src).expect("CTD file");
    let mut out = String::new();
    let mut k = 0usize;
    for line in text.lines() {
        if line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
        } else {
            if k.is_multiple_of(100) {
                out.push_str(line);
                out.push('\n');
            }
            k += 1;
        }
    }
    std::fs::write(dst, out).expect("tiny CTD");
}

/// Equal up to the last bit serde_json's float parsing may change.
fn assert_close(a: &ReportJson, b: &ReportJson) {
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(1.0);
    assert_eq!(a.comparisons.len(), b.comparisons.len());
    for (ca, cb) in a.comparisons.iter().zip(&b.comparisons) {
        assert_eq!(ca.figures, cb.figures);
        for (ma, mb) in ca.measures.iter().zip(&cb.measures) {
            assert_eq!(ma.key, mb.key);
            let (x, y) = (&ma.change, &mb.change);
            assert!(
                close(x.base, y.base) && close(x.tuned, y.tuned),
                "{}",
                ma.key
            );
            assert!(
                close(x.p_value.unwrap_or(0.0), y.p_value.unwrap_or(0.0)),
                "{}",
                ma.key
            );
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(p: &Path) -> T {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn tiny_pipeline_writes_every_artefact_and_resumes() {
    let Some((model, ctd)) = common::smollm2_and("ctd/CTD_curated_genes_diseases.csv") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let tiny = tmp.path().join("ctd_tiny.csv");
    tiny_ctd(&ctd, &tiny);
    let mut cfg = ReproduceConfig::new();
    cfg.model = model;
    cfg.ctd = tiny;
    cfg.out = tmp.path().join("run");
    cfg.steps = 2;
    cfg.sample = 24;
    cfg.batch_size = 8;
    cfg.resamples = 50;
    cfg.eval_rows = 8;
    cfg.compare.permutations_roc_auc = 49;
    cfg.compare.permutations_kg = 49;
    cfg.compare.permutations_probe = 9;
    cfg.compare.permutations_silhouette = 2;

    let mut events = Vec::new();
    let first = reproduce(&cfg, &NoProgress, &mut |e| {
        if let StageEvent::Done { name, .. } = e {
            events.push(name.to_string());
        }
    })
    .expect("first run");
    let all = [
        "prepare",
        "eval-base",
        "finetune",
        "eval-tuned",
        "finetune-entity-heldout",
        "eval-base-entity-heldout",
        "eval-tuned-entity-heldout",
        "report",
    ];
    assert_eq!(first.ran, all);
    assert_eq!(events, all);
    assert!(first.skipped.is_empty());

    let out = &cfg.out;
    // Dataset.
    let card: serde_json::Value = parse(&out.join(files::DATA).join("dataset_card.json"));
    assert!(card["rows"]["rows"].as_u64().unwrap() > 300);
    for split in [
        "train",
        "test",
        "train_entity_heldout",
        "test_entity_heldout",
    ] {
        let rows =
            bioalign_study::read_split(&out.join(files::DATA).join(format!("{split}.parquet")))
                .expect("split parses");
        assert!(!rows.is_empty());
    }
    // Evaluations: the tuned ones used their own adapter, on the base's rows.
    for (dir, adapter) in [
        (files::EVAL_BASE, None),
        (files::EVAL_TUNED, Some(files::ADAPTER)),
        (files::EVAL_BASE_ENTITY, None),
        (files::EVAL_TUNED_ENTITY, Some(files::ADAPTER_ENTITY)),
    ] {
        let d = out.join(dir);
        let m: MetricsJson = parse(&d.join("metrics.json"));
        assert_eq!(m.n_rows, 24, "{dir}");
        assert_eq!(
            m.adapter.map(PathBuf::from),
            adapter.map(|a| out.join(a)),
            "{dir}"
        );
        let preds = bioalign_study::output::read_predictions(&d.join("predictions.parquet"))
            .expect("predictions parse");
        assert_eq!(preds.len(), 24);
        let x = bioalign_study::report::read_last_embeddings(&d.join("embeddings.safetensors"))
            .expect("embeddings parse");
        assert_eq!(x.dim(), (24, 576));
        for png in [
            "projection.png",
            "confusion_generated.png",
            "confusion_logprob.png",
        ] {
            assert!(
                std::fs::read(d.join(png)).unwrap().starts_with(b"\x89PNG"),
                "{dir}/{png}"
            );
        }
    }
    let base_entity: MetricsJson = parse(&out.join(files::EVAL_BASE_ENTITY).join("metrics.json"));
    assert!(base_entity.data.ends_with("test_entity_heldout.parquet"));
    // Adapters: PEFT folders with a training log of 2 steps.
    for a in [files::ADAPTER, files::ADAPTER_ENTITY] {
        let d = out.join(a);
        let _: serde_json::Value = parse(&d.join("adapter_config.json"));
        let st = std::fs::read(d.join("adapter_model.safetensors")).unwrap();
        assert!(
            !safetensors::SafeTensors::deserialize(&st)
                .unwrap()
                .is_empty()
        );
        let log = bioalign_study::report::read_train_log(&d.join("train_log.csv")).unwrap();
        assert_eq!(log.steps, 2, "{a}");
    }
    // Report.
    let r: ReportJson = parse(&out.join(report_files::JSON));
    assert_close(&r, &first.report);
    let keys: Vec<&str> = r.comparisons.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["pair", "entity-heldout"]);
    for c in &r.comparisons {
        assert_eq!(c.n_rows, 24);
        assert_eq!(c.measures.len(), 6);
        assert_eq!(c.training.as_ref().unwrap().steps, 2);
        for m in &c.measures {
            let p = m.change.p_value.expect("every measure tested");
            assert!(p > 0.0 && p <= 1.0, "{}: p {p}", m.key);
            assert!(m.change.base.is_finite() && m.change.tuned.is_finite());
        }
        for f in &c.figures {
            assert!(
                std::fs::read(out.join(&f.file))
                    .unwrap()
                    .starts_with(b"\x89PNG"),
                "{}",
                f.file
            );
        }
        assert!(
            c.figures
                .iter()
                .any(|f| f.file.ends_with("projection_base_vs_tuned.png"))
        );
        assert!(c.figures.iter().any(|f| f.file.ends_with("loss.png")));
    }
    let prov = r.provenance.as_ref().expect("provenance");
    assert_eq!(prov.model_files.len(), 1);
    assert_eq!(prov.model_files[0].sha256.len(), 64);
    assert_eq!(prov.flags["steps"], "2");
    // The default training text is the zero-shot prompt, and the fine-tuning used it.
    assert_eq!(prov.flags["template"], "zero-shot");
    let ft: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("adapter/finetune_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(ft["template"], "zero-shot", "{ft}");
    assert!(prov.dataset_card.is_some());
    let prov_stages: Vec<&str> = prov.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(prov_stages, &all[..7]);
    assert!(prov.stages.iter().all(|s| s.wall_s > 0.0));
    let md = std::fs::read_to_string(out.join(report_files::MARKDOWN)).unwrap();
    assert!(md.contains("## Entity-held-out split"));
    assert!(md.contains("| KG separation |"));
    let stages: StagesFile = parse(&out.join(files::STAGES));
    assert_eq!(stages.stages.len(), all.len());
    if cfg!(target_os = "linux") {
        assert!(
            stages
                .stages
                .iter()
                .all(|s| s.peak_rss_bytes.unwrap_or(0) > 0)
        );
    }

    // Second run: everything is skipped, the report is the same.
    let second = reproduce(&cfg, &NoProgress, &mut |_| {}).expect("second run");
    assert!(second.ran.is_empty(), "reran {:?}", second.ran);
    assert_eq!(second.skipped, all);
    assert_close(&second.report, &first.report);

    // An interrupted run: drop the last stages' records, and only they rerun.
    let mut s: StagesFile = parse(&out.join(files::STAGES));
    s.stages
        .retain(|st| st.name != "eval-tuned-entity-heldout" && st.name != "report");
    std::fs::write(out.join(files::STAGES), serde_json::to_vec(&s).unwrap()).unwrap();
    let third = reproduce(&cfg, &NoProgress, &mut |_| {}).expect("resumed run");
    assert_eq!(third.ran, ["eval-tuned-entity-heldout", "report"]);
    assert_eq!(third.report.comparisons, first.report.comparisons);

    // Other flags on the same folder are refused.
    let mut other = cfg.clone();
    other.steps = 3;
    let err = reproduce(&other, &NoProgress, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("--steps 2"), "{err}");
}
