//! A PEFT 0.21 LoRA adapter made on SmolLM2-135M-Instruct (non-zero B; r 4 / alpha 8 on
//! q_proj, v_proj, down_proj of layers 0, 1, 14, 29, with a `rank_pattern` and an
//! `alpha_pattern` entry) loads here with `CausalLm::load_adapter` and gives the logits of
//! transformers + PEFT on the same GGUF in float32 within 1e-3, while moving them far from the
//! base model's. Fixture: `scripts/fixtures/gen_peft_smollm2.py` (versions in
//! `tests/fixtures/peft_smollm2/versions.json`).
//!
//! The GGUF comes from `bash datasets/fetch.sh` (CI runs it before the tests); without it this
//! test fails rather than skips.

mod common;

use std::path::PathBuf;

use bioalign_lora::LoraModel;
use bioalign_models::model::{CausalLm, Logits};
use bioalign_models::{Cpu, CpuDevice, Result, load_pretrained};
use safetensors::SafeTensors;

const PROMPTS: [&str; 3] = [
    "TP53 is associated with Li-Fraumeni Syndrome",
    "Is this statement true or false? Answer with one word.\nBRCA1 is associated with Breast Neoplasms\nAnswer:",
    "The capital of France is",
];
/// Vocabulary ids `0..HEAD` are stored at every position.
const HEAD: usize = 256;
const TOL: f32 = 1e-3;

fn gguf() -> PathBuf {
    let p = bioalign_models::smollm2_gguf_path();
    assert!(
        p.exists(),
        "{} is absent: run `bash datasets/fetch.sh` first (CI does)",
        p.display()
    );
    p
}

fn fixture_dir() -> PathBuf {
    common::fixtures().join("peft_smollm2")
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let v = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("fixture tensor {name}: {e}"));
    v.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn ids(st: &SafeTensors<'_>, name: &str) -> Vec<u32> {
    let v = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("fixture tensor {name}: {e}"));
    v.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect()
}

/// All-position logits `[s, vocab]` (row-major) for one unpadded prompt.
fn logits(model: &CausalLm<Cpu>, ids: &[u32]) -> Result<Vec<f32>> {
    let out = model.forward(ids, None, 1, None, Logits::All, false)?;
    Ok(out
        .logits
        .expect("asked for logits")
        .into_data()
        .to_vec::<f32>()
        .expect("f32 logits"))
}

/// Columns `0..HEAD` of each row of `[s, vocab]`.
fn head(all: &[f32], vocab: usize) -> Vec<f32> {
    all.chunks_exact(vocab)
        .flat_map(|row| row[..HEAD].iter().copied())
        .collect()
}

#[test]
fn peft_adapter_on_smollm2_matches_transformers_peft() -> Result<()> {
    let path = gguf();
    let bytes = std::fs::read(fixture_dir().join("logits.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let device = CpuDevice::default();
    let p = load_pretrained::<Cpu>(&path, &device)?;
    let (mut model, tok) = (p.model, p.tokenizer.expect("the GGUF carries a tokenizer"));
    let vocab = model.config.vocab_size;

    // The base model first: it must agree with transformers before the adapter means anything.
    let mut base = Vec::new();
    for (i, text) in PROMPTS.iter().enumerate() {
        let want_ids = ids(&st, &format!("prompt.{i}.ids"));
        assert_eq!(
            tok.encode(text, true)?,
            want_ids,
            "prompt {i}: tokenization"
        );
        let all = logits(&model, &want_ids)?;
        let d = common::max_abs_diff(
            &head(&all, vocab),
            &f32s(&st, &format!("prompt.{i}.base_head")),
        );
        println!("prompt {i}: base logits vs transformers, max diff {d:e}");
        assert!(
            d <= TOL,
            "prompt {i}: base logits differ from transformers by {d}"
        );
        base.push(all);
    }

    let cfg = model.load_adapter(&fixture_dir())?;
    assert_eq!((cfg.r, cfg.lora_alpha), (4, 8.0));

    // PEFT's rules: 3 targets x 4 layers, layer 14's down_proj at rank 2, v_proj at alpha 16.
    let mut adapted = Vec::new();
    model.visit_adapters(&mut |name, slot| {
        adapted.push((name.to_string(), slot.lora().r, slot.lora().scaling));
    });
    let mut want = Vec::new();
    for i in [0, 1, 14, 29] {
        want.push((format!("model.layers.{i}.self_attn.q_proj"), 4, 2.0));
        want.push((format!("model.layers.{i}.self_attn.v_proj"), 4, 4.0));
        let r = if i == 14 { 2 } else { 4 };
        want.push((format!("model.layers.{i}.mlp.down_proj"), r, 8.0 / r as f64));
    }
    adapted.sort_by(|a, b| a.0.cmp(&b.0));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(adapted, want, "adapted modules (name, rank, scaling)");

    for (i, base_all) in base.iter().enumerate() {
        let ids_i = ids(&st, &format!("prompt.{i}.ids"));
        let all = logits(&model, &ids_i)?;
        let got = head(&all, vocab);
        let want = f32s(&st, &format!("prompt.{i}.head"));
        let d = common::max_abs_diff(&got, &want);
        // How far the adapter moved transformers' logits, and ours.
        let moved_ref = common::max_abs_diff(&want, &f32s(&st, &format!("prompt.{i}.base_head")));
        let moved_here = common::max_abs_diff(&all, base_all);
        println!(
            "prompt {i}: {} positions x {HEAD} ids: adapter logits vs PEFT max diff {d:e}; \
             the adapter moves them by {moved_ref:.3} (PEFT) / {moved_here:.3} (here, full vocabulary)",
            ids_i.len()
        );
        assert!(
            d <= TOL,
            "prompt {i}: logits with the adapter differ from PEFT's by {d}"
        );
        assert!(
            moved_ref > 1000.0 * TOL && moved_here > 1000.0 * TOL,
            "prompt {i}: the adapter barely moves the logits ({moved_ref}, {moved_here})"
        );
        if i == 0 {
            let last = &all[(ids_i.len() - 1) * vocab..];
            let d = common::max_abs_diff(last, &f32s(&st, "prompt.0.last"));
            let moved = common::max_abs_diff(
                &f32s(&st, "prompt.0.last"),
                &f32s(&st, "prompt.0.base_last"),
            );
            println!(
                "prompt 0: last position, all {vocab} ids: max diff {d:e} (adapter moves them by {moved:.3})"
            );
            assert!(
                d <= TOL,
                "prompt 0: last-position logits differ from PEFT's by {d}"
            );
            assert!(moved > 1000.0 * TOL);
        }
    }
    Ok(())
}

/// Number of adapted modules.
fn n_adapters(model: &CausalLm<Cpu>) -> usize {
    let mut n = 0;
    model.visit_adapters(&mut |_, _| n += 1);
    n
}

/// Copies the fixture adapter into a temporary folder with `edit` applied to its
/// `adapter_config.json`, and returns the error `load_adapter` gives.
fn load_error(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_dir().join("adapter_model.safetensors"),
        tmp.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    let text = std::fs::read_to_string(fixture_dir().join("adapter_config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut cfg);
    std::fs::write(
        tmp.path().join("adapter_config.json"),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
    .unwrap();
    let device = CpuDevice::default();
    let mut model = load_pretrained::<Cpu>(&gguf(), &device).unwrap().model;
    let e = model
        .load_adapter(tmp.path())
        .expect_err("a mismatched adapter must not load");
    assert_eq!(
        n_adapters(&model),
        0,
        "a failed load leaves the model without adapters"
    );
    e.to_string()
}

#[test]
fn mismatched_peft_adapter_names_the_tensor() {
    // The config asks for k_proj too, whose tensors the file lacks.
    let e = load_error(|cfg| {
        cfg["target_modules"]
            .as_array_mut()
            .unwrap()
            .push("k_proj".into());
    });
    println!("{e}");
    assert!(
        e.contains("model.layers.0.self_attn.k_proj.lora_A.weight"),
        "error does not name the missing tensor: {e}"
    );

    // A rank the tensors do not have.
    let e = load_error(|cfg| cfg["r"] = 8.into());
    println!("{e}");
    assert!(
        e.contains("model.layers.0.self_attn.q_proj.lora_A.weight")
            && e.contains("adapter_model.safetensors"),
        "error does not name the misshapen tensor and file: {e}"
    );
}
