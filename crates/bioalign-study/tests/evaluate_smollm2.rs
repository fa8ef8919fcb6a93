//! `evaluate` end to end on SmolLM2-135M-Instruct (`datasets/fetch.sh models`) and 24 rows
//! of the reference's test split (`BIOALIGN_DATA_MIRROR`/seed-splits/test_pairs.csv):
//! every artefact exists and parses, one prediction per row, and both decision rules
//! agree with a direct computation through bioalign-models' own `generate` and `embed`.

mod common;

use std::path::PathBuf;

use bioalign_metrics::{BootstrapConfig, SuiteConfig, TsneConfig};
use bioalign_models::embed::{Layers, Pooling};
use bioalign_models::generate::{GenerateOptions, Sampling};
use bioalign_models::{Cpu, CpuDevice, load_pretrained};
use bioalign_study::evaluate::files;
use bioalign_study::output::{read_embedding, read_predictions};
use bioalign_study::zero_shot::{AnswerTokens, log_probs, prompt};
use bioalign_study::{
    Error, EvaluateConfig, MetricsJson, NoProgress, Result, contains_true, evaluate,
};

fn small_config(model: PathBuf, data: PathBuf) -> EvaluateConfig {
    let boot = BootstrapConfig {
        n_resamples: 50,
        ..BootstrapConfig::default()
    };
    let mut cfg = EvaluateConfig::new(model, data);
    cfg.sample = Some(24);
    cfg.batch_size = 8;
    cfg.bootstrap = Some(boot.clone());
    cfg.suite = SuiteConfig {
        cross_validate: false,
        projection_rows: 24,
        // The default perplexity (30) is too large for 24 rows: the suite lowers it.
        tsne: TsneConfig {
            max_iter: 250,
            ..TsneConfig::default()
        },
        bootstrap: Some(boot),
        ..SuiteConfig::default()
    };
    cfg
}

#[test]
fn evaluate_writes_every_artefact_and_rules_match_direct_computation() -> Result<()> {
    let Some((model_path, data)) = common::smollm2_and_test_pairs() else {
        return Ok(());
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = small_config(model_path.clone(), data);
    let report = evaluate(&cfg, dir.path(), &NoProgress)?;
    assert_eq!(report.n_rows, 24);
    assert_eq!(report.data_rows, 13_689);

    // metrics.json parses back into the same struct.
    let bytes = std::fs::read(dir.path().join(files::METRICS)).expect("metrics.json");
    let parsed: MetricsJson = serde_json::from_slice(&bytes).expect("metrics.json parses");
    assert_eq!(parsed.n_rows, 24);
    assert_eq!(
        parsed.embeddings.tsne_perplexity,
        Some(7.0),
        "(24 - 1) / 3 rounded down"
    );
    assert_eq!(parsed.zero_shot, report.zero_shot);
    assert!(
        parsed.zero_shot.answer_tokens.single_token,
        "SmolLM2 encodes \" true\"/\" false\" as one token each"
    );

    // predictions.parquet: one row per sampled row, in sample order, consistent rules.
    let preds = read_predictions(&dir.path().join(files::PREDICTIONS))?;
    assert_eq!(preds.len(), 24);
    let rows = bioalign_study::sample_rows(13_689, 24, 42)?;
    assert_eq!(preds.iter().map(|p| p.row).collect::<Vec<_>>(), rows);
    for p in &preds {
        assert_eq!(
            p.pred_generated,
            usize::from(contains_true(&p.answer)),
            "{p:?}"
        );
        assert_eq!(p.pred_logprob, usize::from(p.score > 0.0), "{p:?}");
        assert!((p.score - (p.logp_true - p.logp_false)).abs() < 1e-12);
        assert!(p.logp_true < 0.0 && p.logp_false < 0.0);
    }
    let acc = preds.iter().filter(|p| p.pred_generated == p.label).count() as f64 / 24.0;
    assert_eq!(report.zero_shot.generated.report.accuracy, acc);
    let agree = preds
        .iter()
        .filter(|p| p.pred_generated == p.pred_logprob)
        .count() as f64
        / 24.0;
    assert_eq!(report.zero_shot.agreement, agree);

    // embeddings.safetensors: [24, 576], equal to what metrics were computed on.
    let emb = read_embedding(&dir.path().join(files::EMBEDDINGS), "embeddings")?;
    assert_eq!(emb.dim(), (24, 576));
    let again = bioalign_metrics::kg_separation(
        emb.view(),
        &preds.iter().map(|p| p.label).collect::<Vec<_>>(),
    )?;
    assert!((again.separation - report.embeddings.kg_separation.separation).abs() < 1e-12);

    for png in [
        files::PROJECTION_PNG,
        files::CONFUSION_GENERATED_PNG,
        files::CONFUSION_LOGPROB_PNG,
    ] {
        let b = std::fs::read(dir.path().join(png)).expect(png);
        assert!(b.starts_with(b"\x89PNG"), "{png} is not a PNG");
    }

    // Row 0, directly through bioalign-models: generate() and embed()'s next-token logits.
    let device = CpuDevice::default();
    let p = load_pretrained::<Cpu>(&model_path, &device)?;
    let (model, tok) = (p.model, p.tokenizer.expect("GGUF tokenizer"));
    let ids = tok.encode(&prompt(&preds[0].text), true)?;
    let mut eos_ids = model.config.eos_ids();
    eos_ids.extend(tok.eos_id());
    let opts = GenerateOptions {
        max_new_tokens: 3,
        sampling: Sampling::Greedy,
        eos_ids,
        pad_id: tok.pad_id(),
    };
    let new = model.generate(std::slice::from_ref(&ids), &opts)?;
    let text = tok.decode(&new[0], true)?;
    assert_eq!(text, preds[0].answer);
    assert_eq!(usize::from(contains_true(&text)), preds[0].pred_generated);
    let batch = tok.encode_batch(&[&prompt(&preds[0].text)])?;
    let e = model.embed(&batch, Pooling::Mean, Layers::Last, true)?;
    let logits = e.next_token_logits.expect("logits");
    let at = AnswerTokens::new(&tok)?;
    let lp = log_probs(&logits, &[at.yes.scored_id, at.no.scored_id]);
    assert!(
        (lp[0] - preds[0].logp_true).abs() < 1e-3,
        "{} vs {}",
        lp[0],
        preds[0].logp_true
    );
    assert!(
        (lp[1] - preds[0].logp_false).abs() < 1e-3,
        "{} vs {}",
        lp[1],
        preds[0].logp_false
    );
    Ok(())
}

#[test]
fn bad_inputs_are_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = EvaluateConfig::new("model.gguf", dir.path().join("split.txt"));
    std::fs::write(dir.path().join("split.txt"), "text,label\nx,1\n").expect("write");
    assert!(matches!(
        evaluate(&cfg, dir.path(), &NoProgress),
        Err(Error::File { .. })
    ));
    cfg.batch_size = 0;
    assert!(matches!(
        evaluate(&cfg, dir.path(), &NoProgress),
        Err(Error::Invalid {
            field: "batch_size",
            ..
        })
    ));
}
