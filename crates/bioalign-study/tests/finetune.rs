//! `finetune` end to end on SmolLM2-135M-Instruct (`datasets/fetch.sh models`) with an NF4
//! base and 16 rows of the reference's test split (`BIOALIGN_DATA_MIRROR`/seed-splits/
//! test_pairs.csv) written as a `prepare_data`-style `train.parquet`: an interrupted run
//! leaves a checkpoint and no adapter, `--resume` finishes it; the PEFT adapter folder,
//! `train_log.csv`, `loss.png` and the JSON records exist and parse; the adapter reloads
//! through `evaluate`'s `adapter` and changes the answers' log-probabilities exactly as
//! the adapter attached by hand does. Bad inputs give errors naming the file.

mod common;

use std::path::Path;

use bioalign_lora::LoraConfig;
use bioalign_metrics::{BootstrapConfig, SuiteConfig, TsneConfig};
use bioalign_models::embed::{Layers, Pooling};
use bioalign_models::{Cpu, CpuDevice, LoadOptions};
use bioalign_study::evaluate::files as eval_files;
use bioalign_study::finetune::{Template, files, load_with_adapter};
use bioalign_study::output::read_predictions;
use bioalign_study::zero_shot::{AnswerTokens, log_probs, prompt};
use bioalign_study::{
    Error, EvaluateConfig, FinetuneConfig, FinetuneSummary, MetricsJson, NoProgress, Result,
    evaluate, finetune,
};
use common::data_folder;

fn small_config(model: &Path, data: &Path, out: &Path) -> FinetuneConfig {
    let mut cfg = FinetuneConfig::new(model, data, out);
    cfg.load_in_4bit = true;
    cfg.eval_rows = 4;
    cfg.lora.r = 4;
    cfg.lora.lora_alpha = 8.0;
    let t = &mut cfg.train;
    t.batch_size = 2;
    t.grad_accum = 1;
    t.max_steps = 3;
    t.warmup = 1;
    t.lr = 1e-3;
    t.max_len = 96;
    t.eval_every = Some(2);
    t.checkpoint_every = Some(2);
    cfg
}

fn small_eval(model: &Path, data: &Path) -> EvaluateConfig {
    let mut cfg = EvaluateConfig::new(model, data);
    cfg.sample = Some(24);
    cfg.batch_size = 12;
    cfg.bootstrap = Some(BootstrapConfig {
        n_resamples: 20,
        ..BootstrapConfig::default()
    });
    cfg.suite = SuiteConfig {
        cross_validate: false,
        projection_rows: 24,
        tsne: TsneConfig {
            perplexity: 5.0,
            max_iter: 250,
            ..TsneConfig::default()
        },
        bootstrap: None,
        ..SuiteConfig::default()
    };
    cfg.plots = false;
    cfg
}

#[test]
fn finetune_resumes_writes_a_peft_adapter_and_evaluate_reloads_it() -> Result<()> {
    let Some((model, csv)) = common::smollm2_and_test_pairs() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("ctd");
    std::fs::create_dir_all(&data).expect("mkdir");
    data_folder(&csv, 16, &data)?;
    let out = tmp.path().join("adapter");

    // Interrupted after 2 of 3 steps: a checkpoint, no final adapter yet.
    let mut cfg = small_config(&model, &data, &out);
    cfg.train.stop_after = Some(2);
    let first = finetune(&cfg, &NoProgress)?;
    assert_eq!(first.steps, 2);
    assert_eq!((first.train_rows, first.eval_rows), (12, 4));
    // SmolLM2-135M: 30 layers x 7 projections.
    assert_eq!(first.adapted_modules, 210);
    assert!(out.join("checkpoint-2/adapter_model.safetensors").is_file());
    assert!(!out.join("adapter_model.safetensors").exists());
    let before = first
        .first_eval_loss
        .expect("held-out loss before training");
    assert!(before.is_finite() && before > 0.0, "{before}");

    // --resume finishes the schedule.
    cfg.train.stop_after = None;
    cfg.resume = true;
    let s = finetune(&cfg, &NoProgress)?;
    assert_eq!(s.steps, 3);
    assert!(s.tokens_per_s > 0.0 && s.wall_s > 0.0);
    assert!(s.peak_rss_bytes.is_some_and(|b| b > 100 << 20));

    // The PEFT folder.
    let lora = LoraConfig::load(&out.join("adapter_config.json"))?;
    assert_eq!((lora.r, lora.lora_alpha), (4, 8.0));
    let bytes = std::fs::read(out.join("adapter_model.safetensors")).expect("adapter");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors parse");
    assert_eq!(st.len(), 420);
    let b = st
        .tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
        .expect("q_proj B");
    assert_eq!(b.shape(), &[576, 4]);
    assert!(
        b.data().chunks_exact(4).any(|c| c != [0u8; 4]),
        "B is still zero after training"
    );

    // train_log.csv: one row per step, held-out loss at steps 2 and 3.
    let log = std::fs::read_to_string(out.join(files::TRAIN_LOG)).expect("train_log.csv");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[0],
        "step,epoch,loss,lr,grad_norm,tokens,tokens_per_s,eval_loss"
    );
    assert_eq!(lines.len(), 4, "{log}");
    for (i, line) in lines[1..].iter().enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[0].parse::<usize>().expect("step"), i + 1);
        let loss: f64 = f[2].parse().expect("loss");
        assert!(loss.is_finite() && loss > 0.0, "{line}");
        assert_eq!(f[7].is_empty(), i == 0, "{line}");
        if !f[7].is_empty() {
            let e: f64 = f[7].parse().expect("eval loss");
            assert!(e.is_finite());
        }
    }
    let png = std::fs::read(out.join(files::LOSS_PNG)).expect("loss.png");
    assert!(png.starts_with(b"\x89PNG"));
    let summary: FinetuneSummary =
        serde_json::from_slice(&std::fs::read(out.join(files::SUMMARY)).expect("summary"))
            .expect("summary parses");
    assert_eq!(summary.steps, 3);
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(files::CONFIG)).expect("config"))
            .expect("config parses");
    assert_eq!(recorded["template"], "alpaca");
    assert_eq!(recorded["resume"], true);

    // evaluate with the adapter: metrics.json names it, and the answers' log-probabilities
    // are the adapted model's, not the base's.
    let eval_dir = tmp.path().join("eval");
    let mut ecfg = small_eval(&model, &csv);
    ecfg.adapter = Some(out.clone());
    let report = evaluate(&ecfg, &eval_dir, &NoProgress)?;
    assert_eq!(
        report.adapter.as_deref(),
        Some(out.display().to_string().as_str())
    );
    let parsed: MetricsJson = serde_json::from_slice(
        &std::fs::read(eval_dir.join(eval_files::METRICS)).expect("metrics.json"),
    )
    .expect("metrics.json parses");
    assert_eq!(parsed.adapter, report.adapter);
    let preds = read_predictions(&eval_dir.join(eval_files::PREDICTIONS))?;
    let device = CpuDevice::default();
    let logp = |adapter: Option<&Path>| -> Result<Vec<f64>> {
        let (m, tok, _) =
            load_with_adapter::<Cpu>(&model, adapter, LoadOptions::default(), &device)?;
        let at = AnswerTokens::new(&tok)?;
        let batch = tok.encode_batch(&[&prompt(&preds[0].text)])?;
        let e = m.embed(&batch, Pooling::Mean, Layers::Last, true)?;
        let logits = e.next_token_logits.expect("logits");
        Ok(log_probs(&logits, &[at.yes.scored_id, at.no.scored_id]))
    };
    let tuned = logp(Some(&out))?;
    let base = logp(None)?;
    assert!(
        (tuned[0] - preds[0].logp_true).abs() < 1e-3,
        "{tuned:?} vs {:?}",
        preds[0]
    );
    assert!((tuned[1] - preds[0].logp_false).abs() < 1e-3);
    assert!(
        (tuned[0] - base[0]).abs() > 1e-4 || (tuned[1] - base[1]).abs() > 1e-4,
        "the adapter changes nothing: {tuned:?} vs {base:?}"
    );
    Ok(())
}

#[test]
fn bad_inputs_are_clear_errors() -> Result<()> {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("out");
    // A folder without train.parquet.
    let cfg = FinetuneConfig::new("model.gguf", tmp.path(), &out);
    let e = finetune(&cfg, &NoProgress).unwrap_err();
    assert!(
        matches!(&e, Error::File { path, reason } if path == tmp.path() && reason.contains("train.parquet")),
        "{e}"
    );
    // A template file with an unknown placeholder: the error names the file and the
    // placeholder, before any model is loaded.
    let tpl = tmp.path().join("template.txt");
    std::fs::write(&tpl, "Q: {gene} and {disease}?\nA: {anwser}\n").expect("write");
    let mut cfg = FinetuneConfig::new("model.gguf", tmp.path(), &out);
    cfg.template = tpl.to_str().expect("utf-8 path").parse::<Template>()?;
    let e = finetune(&cfg, &NoProgress).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("template.txt") && msg.contains("{anwser}"),
        "{msg}"
    );
    // A template without {answer}.
    std::fs::write(&tpl, "Q: {text}\n").expect("write");
    let e = finetune(&cfg, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("exactly one {answer}"), "{e}");
    // An unknown template name.
    assert!(matches!(
        "alpacca".parse::<Template>(),
        Err(Error::Invalid {
            field: "template",
            ..
        })
    ));
    // Bad hyper-parameters name their field.
    let mut cfg = FinetuneConfig::new("model.gguf", tmp.path(), &out);
    cfg.lora.r = 0;
    let e = finetune(&cfg, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("`r`"), "{e}");
    assert!(!out.exists(), "nothing is written on bad input");
    Ok(())
}

#[test]
fn a_missing_adapter_folder_is_a_clear_error() {
    let Some((model, csv)) = common::smollm2_and_test_pairs() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut cfg = small_eval(&model, &csv);
    let missing = tmp.path().join("no-adapter");
    cfg.adapter = Some(missing.clone());
    let out = tmp.path().join("eval");
    let e = evaluate(&cfg, &out, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("no-adapter"), "{e}");
    assert!(!out.join(eval_files::METRICS).exists());
}

/// An adapter made by PEFT 0.21.2 (`scripts/fixtures/gen_peft_smollm2.py`: r 4 with a
/// rank_pattern and alpha_pattern, layers 0/1/14/29, non-zero B) works in `evaluate`, and
/// the model it evaluates gives transformers + PEFT's logits (the fixture's
/// `prompt.0.last`, the whole vocabulary at the last position of prompt 0).
#[test]
fn a_peft_adapter_works_in_evaluate() -> Result<()> {
    let Some((model, csv)) = common::smollm2_and_test_pairs() else {
        return Ok(());
    };
    let peft = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../bioalign-models/tests/fixtures/peft_smollm2");
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut cfg = small_eval(&model, &csv);
    cfg.adapter = Some(peft.clone());
    let report = evaluate(&cfg, tmp.path(), &NoProgress)?;
    assert_eq!(report.adapter, Some(peft.display().to_string()));
    assert_eq!(report.n_rows, 24);

    let fixture = std::fs::read(peft.join("logits.safetensors")).expect("fixture");
    let st = safetensors::SafeTensors::deserialize(&fixture).expect("fixture parses");
    let f32s = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .expect(name)
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let ids: Vec<i64> = st
        .tensor("prompt.0.ids")
        .expect("ids")
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    let (m, tok, lora) = load_with_adapter::<Cpu>(
        &model,
        Some(&peft),
        LoadOptions::default(),
        &CpuDevice::default(),
    )?;
    assert_eq!(lora.map(|l| l.r), Some(4));
    let text = "TP53 is associated with Li-Fraumeni Syndrome";
    let ours: Vec<i64> = tok.encode(text, true)?.iter().map(|&t| t as i64).collect();
    assert_eq!(ours, ids, "tokenization differs from transformers'");
    let batch = tok.encode_batch(&[text])?;
    let e = m.embed(&batch, Pooling::Mean, Layers::Last, true)?;
    let logits = e.next_token_logits.expect("logits");
    let want = f32s("prompt.0.last");
    assert_eq!(logits.len(), want.len());
    let worst = logits
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-3, "max |ours - PEFT| = {worst}");
    Ok(())
}

/// A diverging run (learning rate 1e12) stops at the first non-finite loss with the
/// trainer's message, and writes no adapter.
#[test]
fn a_nan_loss_stops_with_a_clear_error() -> Result<()> {
    let Some((model, csv)) = common::smollm2_and_test_pairs() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("ctd");
    std::fs::create_dir_all(&data).expect("mkdir");
    data_folder(&csv, 8, &data)?;
    let out = tmp.path().join("adapter");
    let mut cfg = small_config(&model, &data, &out);
    cfg.eval_rows = 0;
    cfg.train.lr = 1e12;
    cfg.train.warmup = 0;
    let e = finetune(&cfg, &NoProgress).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Lora(bioalign_lora::Error::NonFiniteLoss { step, .. }) if *step >= 2
        ),
        "{e}"
    );
    assert!(e.to_string().contains("loss is"), "{e}");
    assert!(!out.join("adapter_model.safetensors").exists());
    Ok(())
}
