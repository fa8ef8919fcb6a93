//! LoRA inside the real decoder, on the tiny random Llama / Mistral / Phi-3 checkpoints
//! of tests/fixtures/tiny (made by transformers, scripts/fixtures/gen_tiny_models.py):
//! B = 0 leaves the logits unchanged, only A and B get gradients, the NF4 base's
//! backward equals a dense base's on the dequantized weights, merging, the dense
//! checkpoint writer, adapter mismatches, and bioalign-lora's trainer driving the decoder
//! (loss falls, determinism, exact resume, gradient checkpointing).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bioalign_lora::optim::OptimizerKind;
use bioalign_lora::trainer::{Batch, batch_loss, make_batch};
use bioalign_lora::{Example, LoraConfig, LoraModel, LossMode, TrainConfig, tensor_vec, train};
use bioalign_models::config::ModelConfig;
use bioalign_models::model::{CausalLm, Logits};
use bioalign_models::weights::{SafetensorsDir, WeightSource};
use bioalign_models::{Cpu, CpuDevice, Error, LoadOptions, Result, load_pretrained_with};
use bioalign_quant::Quantized4bit;
use bioalign_quant::checkpoint::{QuantizeModelOptions, quantize_model};
use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Ad = Autodiff<Cpu>;
type AdCk = Autodiff<Cpu, BalancedCheckpointing>;

const SEVEN: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

fn tiny(arch: &str) -> PathBuf {
    common::fixtures().join("tiny").join(arch)
}

fn load<B: Backend>(dir: &Path, nf4: bool) -> Result<CausalLm<B>> {
    let opts = LoadOptions {
        load_in_4bit: nf4,
        ..Default::default()
    };
    Ok(load_pretrained_with::<B>(dir, &Default::default(), opts)?.model)
}

fn lora_all(r: usize) -> LoraConfig {
    LoraConfig::new(r, 2.0 * r as f64, &SEVEN)
}

fn logits<B: Backend>(m: &CausalLm<B>, ids: &[u32], batch: usize) -> Result<Vec<f32>> {
    let out = m.forward(ids, None, batch, None, Logits::All, false)?;
    Ok(tensor_vec(out.logits.unwrap()))
}

fn ids(vocab: usize, n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 5) % vocab as u32).collect()
}

/// Sets every adapter's B to seeded uniform values in `[-scale, scale)` (A keeps its
/// init), so the adapters change the output.
fn randomize_b<B: Backend, M: LoraModel<B>>(m: &mut M, seed: u64, scale: f32, d: &B::Device) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    m.visit_adapters_mut(&mut |_, slot| {
        let (_, out) = slot.features();
        let r = slot.lora().r;
        let b: Vec<f32> = (0..r * out)
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        let a = slot.lora_a().val();
        slot.set_lora(a, Tensor::from_data(TensorData::new(b, [r, out]), d));
    });
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    common::max_abs_diff(a, b)
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0f32, |m, x| m.max(x.abs()))
}

#[test]
fn zero_b_gives_exactly_the_base_logits() -> Result<()> {
    for arch in ["llama", "mistral", "phi3"] {
        for nf4 in [false, true] {
            let mut m = load::<Cpu>(&tiny(arch), nf4)?;
            let x = ids(m.config.vocab_size, 2 * 7);
            let base = logits(&m, &x, 2)?;
            let n = m.apply_lora(&lora_all(4), 3)?;
            assert_eq!(n, 7 * m.n_layers(), "{arch}: every projection adapted");
            assert_eq!(m.n_adapters(), n);
            let with = logits(&m, &x, 2)?;
            assert!(
                base.iter()
                    .zip(&with)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{arch} nf4={nf4}: B = 0 must leave the logits bit for bit"
            );
            // And a non-zero B changes them (the adapter is on the path).
            randomize_b(&mut m, 1, 0.05, &CpuDevice::default());
            assert!(max_diff(&logits(&m, &x, 2)?, &base) > 1e-4);
        }
    }
    Ok(())
}

#[test]
fn apply_lora_selects_modules_and_rejects_misuse() -> Result<()> {
    let mut m = load::<Cpu>(&tiny("llama"), false)?;
    let mut cfg = LoraConfig::new(4, 8.0, &["q_proj", "v_proj"]);
    cfg.layers_to_transform = Some(bioalign_lora::LayerSelection::One(1));
    cfg.rank_pattern.insert("v_proj".into(), 2);
    assert_eq!(m.apply_lora(&cfg, 0)?, 2);
    let mut seen = Vec::new();
    m.visit_adapters(&mut |name, slot| seen.push((name.to_string(), slot.lora().r)));
    assert_eq!(
        seen,
        vec![
            ("model.layers.1.self_attn.q_proj".to_string(), 4),
            ("model.layers.1.self_attn.v_proj".to_string(), 2),
        ]
    );
    // Twice is an error, the model keeps its adapters.
    let e = m.apply_lora(&cfg, 0).unwrap_err();
    assert!(e.to_string().contains("already has 2 LoRA adapters"), "{e}");
    assert_eq!(m.n_adapters(), 2);

    let mut fresh = load::<Cpu>(&tiny("llama"), false)?;
    let e = fresh
        .apply_lora(&LoraConfig::new(4, 8.0, &["c_attn"]), 0)
        .unwrap_err();
    assert!(e.to_string().contains("no module"), "{e}");
    let e = fresh
        .apply_lora(&LoraConfig::new(4, 8.0, &["qkv_proj"]), 0)
        .unwrap_err();
    assert!(e.to_string().contains("fused"), "{e}");
    let e = fresh
        .apply_lora(&LoraConfig::new(0, 8.0, &["q_proj"]), 0)
        .unwrap_err();
    assert!(e.to_string().contains("`r`"), "{e}");
    assert_eq!(fresh.n_adapters(), 0);
    Ok(())
}

/// Collects `(param id, has gradient)` for every float parameter of a module.
struct GradProbe<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    seen: Vec<(ParamId, bool, Vec<usize>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradProbe<'_, B> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        let g = p.val().grad(self.grads).is_some();
        self.seen.push((p.id, g, p.val().dims().to_vec()));
    }
}

fn examples(vocab: u32, n: usize, offset: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let j = (i + offset) as u32;
            let x = 3 + j % 10;
            let mut prompt = vec![1, 20 + j % 4];
            prompt.extend(std::iter::repeat_n(7, (j % 3) as usize));
            prompt.push(x);
            Example {
                prompt,
                response: vec![(x * 7 + 11) % vocab, 40 + x % 5, 2],
            }
        })
        .collect()
}

fn batch(vocab: u32) -> Batch {
    let ex = examples(vocab, 3, 0);
    let refs: Vec<&Example> = ex.iter().collect();
    make_batch(&refs, LossMode::Response, 64, 0)
}

#[test]
fn only_lora_a_and_b_receive_gradients() -> Result<()> {
    let d = Default::default();
    for nf4 in [false, true] {
        let mut m = load::<Ad>(&tiny("llama"), nf4)?;
        m.apply_lora(&lora_all(4), 5)?;
        randomize_b(&mut m, 2, 0.05, &d);
        let mut lora_ids = BTreeSet::new();
        m.visit_adapters(&mut |_, s| {
            lora_ids.insert(s.lora_a().id);
            lora_ids.insert(s.lora_b().id);
        });
        assert_eq!(lora_ids.len(), 2 * 7 * 2);
        let loss = batch_loss(&m, &batch(96), &d);
        let grads = loss.backward();
        let mut probe = GradProbe::<Ad> {
            grads: &grads,
            seen: Vec::new(),
        };
        m.visit(&mut probe);
        // Dense base: embeddings, 2 x 2 norms + final norm, lm_head, 14 projection
        // weights; NF4 base: the projections are no parameters.
        let frozen = probe
            .seen
            .iter()
            .filter(|(id, _, _)| !lora_ids.contains(id))
            .count();
        assert_eq!(frozen, if nf4 { 1 + 5 + 1 } else { 1 + 5 + 1 + 14 });
        for (id, has, dims) in &probe.seen {
            assert_eq!(
                *has,
                lora_ids.contains(id),
                "nf4={nf4}: parameter {dims:?} gradient presence"
            );
        }
    }
    Ok(())
}

/// The quantized checkpoint seen with every 4-bit weight dequantized to f32.
struct Dequantized(SafetensorsDir);

impl WeightSource for Dequantized {
    fn path(&self) -> &Path {
        self.0.path()
    }
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn load(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>, PathBuf)> {
        match self.0.load_quantized(name)? {
            Some((q, path)) => Ok((q.shape.clone(), q.dequantize_f32(), path)),
            None => self.0.load(name),
        }
    }
    fn load_quantized(&self, _: &str) -> Result<Option<(Quantized4bit, PathBuf)>> {
        Ok(None)
    }
}

/// LoRA gradients (A then B per module, visit order) of one response-only loss.
fn lora_grads<B: AutodiffBackend>(m: &CausalLm<B>, vocab: u32) -> Vec<Vec<f32>> {
    let grads = batch_loss(m, &batch(vocab), &Default::default()).backward();
    let mut out = Vec::new();
    m.visit_adapters(&mut |_, s| {
        for p in [s.lora_a(), s.lora_b()] {
            out.push(tensor_vec(p.val().grad(&grads).expect("LoRA gradient")));
        }
    });
    out
}

#[test]
fn nf4_base_backward_equals_dense_backward_on_dequantized_weights() -> Result<()> {
    let tmp = tempfile::tempdir().unwrap();
    let qdir = tmp.path().join("q");
    quantize_model(&tiny("llama"), &qdir, &QuantizeModelOptions::default()).unwrap();
    let d = Default::default();
    let mut nf4 = load::<Ad>(&qdir, false)?;
    assert!(nf4.projections().iter().all(|(_, p)| p.is_nf4()));
    let config = ModelConfig::from_json_file(qdir.join("config.json"))?;
    let mut dense =
        CausalLm::<Ad>::from_source(&config, &Dequantized(SafetensorsDir::open(&qdir)?), &d)?;
    for m in [&mut nf4, &mut dense] {
        m.apply_lora(&lora_all(4), 9)?;
        randomize_b(m, 4, 0.05, &d);
    }
    let a = lora_grads(&nf4, 96);
    let b = lora_grads(&dense, 96);
    assert_eq!(a.len(), 28);
    // Same math in another summation order (fused NF4 GEMM vs gemm on the f32 copy):
    // the gradients agree to f32 rounding, 1e-4 of each tensor's largest gradient.
    let mut worst = 0f32;
    for (k, (x, y)) in a.iter().zip(&b).enumerate() {
        let scale = max_abs(y).max(1e-6);
        assert!(max_abs(y) > 0.0, "tensor {k}: zero gradient");
        let rel = max_diff(x, y) / scale;
        worst = worst.max(rel);
        assert!(rel <= 1e-4, "tensor {k}: relative max diff {rel:e}");
    }
    println!("NF4 vs dense-on-dequantized LoRA gradients: worst relative max diff {worst:e}");
    Ok(())
}

#[test]
fn merged_equals_unmerged_and_save_merged_round_trips() -> Result<()> {
    let d = CpuDevice::default();
    for arch in ["llama", "mistral", "phi3"] {
        for nf4 in [false, true] {
            let mut m = load::<Cpu>(&tiny(arch), nf4)?;
            m.apply_lora(&lora_all(4), 6)?;
            randomize_b(&mut m, 7, 0.05, &d);
            let x = ids(m.config.vocab_size, 2 * 9);
            let unmerged = logits(&m, &x, 2)?;
            let mut merged = m.clone();
            merged.merge_lora();
            assert_eq!(merged.n_adapters(), 0);
            assert!(merged.projections().iter().all(|(_, p)| !p.is_nf4()));
            let ml = logits(&merged, &x, 2)?;
            let rel = max_diff(&ml, &unmerged) / max_abs(&unmerged);
            assert!(
                rel <= 1e-5,
                "{arch} nf4={nf4}: merged vs unmerged relative diff {rel:e}"
            );

            let dir = tempfile::tempdir().unwrap();
            m.save_merged(dir.path())?;
            let names = SafetensorsDir::open(dir.path())?;
            assert_eq!(
                names.contains("lm_head.weight"),
                !m.config.tie_word_embeddings,
                "{arch}: lm_head.weight only when untied"
            );
            if arch == "phi3" {
                assert!(names.contains("model.layers.0.self_attn.qkv_proj.weight"));
                assert!(names.contains("model.layers.0.mlp.gate_up_proj.weight"));
            }
            let cfg: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                    .unwrap();
            assert_eq!(cfg["model_type"], m.config.model_type.as_str());
            assert!(
                cfg["architectures"][0]
                    .as_str()
                    .unwrap()
                    .ends_with("ForCausalLM")
            );
            let back = load::<Cpu>(dir.path(), false)?;
            assert_eq!(back.config.vocab_size, m.config.vocab_size);
            assert_eq!(back.rope, m.rope, "{arch}: same rotary tables");
            let bl = logits(&back, &x, 2)?;
            // The merged weights are written in f32 and read back unchanged.
            assert!(
                bl == ml,
                "{arch} nf4={nf4}: reloaded merged checkpoint differs"
            );
        }
    }
    Ok(())
}

#[test]
fn save_merged_of_a_tied_model_writes_no_lm_head() -> Result<()> {
    // The tiny Mistral ties its embeddings.
    let mut m = load::<Cpu>(&tiny("mistral"), true)?;
    assert!(m.config.tie_word_embeddings && m.lm_head.is_none());
    m.apply_lora(&lora_all(2), 1)?;
    let dir = tempfile::tempdir().unwrap();
    m.save_merged(dir.path())?;
    let src = SafetensorsDir::open(dir.path())?;
    assert!(!src.contains("lm_head.weight"));
    let back = load::<Cpu>(dir.path(), false)?;
    assert!(back.lm_head.is_none());
    Ok(())
}

fn rewrite_config(dir: &Path, f: impl FnOnce(&mut LoraConfig)) {
    let p = dir.join("adapter_config.json");
    let mut c = LoraConfig::load(&p).unwrap();
    f(&mut c);
    c.save(&p).unwrap();
}

#[test]
fn adapter_round_trip_and_mismatches_are_clear_errors() -> Result<()> {
    let d = CpuDevice::default();
    let cfg = LoraConfig::new(4, 8.0, &["q_proj", "v_proj"]);
    let mut m = load::<Cpu>(&tiny("llama"), true)?;
    m.apply_lora(&cfg, 2)?;
    randomize_b(&mut m, 3, 0.05, &d);
    let x = ids(96, 2 * 6);
    let want = logits(&m, &x, 2)?;
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    bioalign_lora::save_adapter(&m, &cfg, &good).unwrap();

    // Round trip into a fresh NF4 model: the same logits bit for bit.
    let mut fresh = load::<Cpu>(&tiny("llama"), true)?;
    let back = fresh.load_adapter(&good)?;
    assert_eq!(back.r, 4);
    assert_eq!(fresh.n_adapters(), 4);
    assert!(
        logits(&fresh, &x, 2)? == want,
        "reloaded adapter changes the logits"
    );

    let copy = |name: &str| -> PathBuf {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(good.join(f), dir.join(f)).unwrap();
        }
        dir
    };
    let check = |dir: &Path, needles: &[&str]| {
        let mut m = load::<Cpu>(&tiny("llama"), true).unwrap();
        let e = m.load_adapter(dir).unwrap_err();
        let msg = e.to_string();
        for n in needles {
            assert!(msg.contains(n), "{msg:?} lacks {n:?}");
        }
        assert!(matches!(e, Error::Lora(_)), "{e:?}");
        assert_eq!(
            m.n_adapters(),
            0,
            "a failed load leaves the model unchanged"
        );
    };
    // Other shapes: the config says r 8, the tensors are r 4.
    let other_rank = copy("rank");
    rewrite_config(&other_rank, |c| c.r = 8);
    check(
        &other_rank,
        &[
            "adapter_model.safetensors",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            "[4, 64]",
            "[8, 64]",
        ],
    );
    // A module the config targets has no tensors.
    let missing = copy("missing");
    rewrite_config(&missing, |c| {
        c.target_modules = bioalign_lora::TargetModules::List(vec![
            "q_proj".into(),
            "v_proj".into(),
            "k_proj".into(),
        ])
    });
    check(&missing, &["no tensor", "self_attn.k_proj.lora_A.weight"]);
    // The file holds tensors of a module the config does not target.
    let extra = copy("extra");
    rewrite_config(&extra, |c| {
        c.target_modules = bioalign_lora::TargetModules::List(vec!["q_proj".into()])
    });
    check(&extra, &["matches no adapted module", "v_proj.lora_"]);
    // A broken config names the field.
    let bad = copy("bad");
    rewrite_config(&bad, |c| c.lora_dropout = 1.5);
    check(&bad, &["lora_dropout"]);
    // No folder at all names the file.
    check(&tmp.path().join("absent"), &["adapter_config.json"]);
    Ok(())
}

fn train_cfg() -> TrainConfig {
    TrainConfig {
        seed: 5,
        batch_size: 2,
        grad_accum: 2,
        max_steps: 6,
        lr: 5e-3,
        warmup: 1,
        optimizer: OptimizerKind::AdamW8bit,
        max_len: 32,
        pad_id: 0,
        checkpoint_every: Some(2),
        eval_every: None,
        ..TrainConfig::default()
    }
}

/// Trains a fresh NF4 tiny Llama (r 4 on the seven projections, dropout 0.1) in
/// `dir`; returns the adapter bits and the log's losses.
fn run<B: AutodiffBackend>(
    dir: &Path,
    c: &TrainConfig,
    resume: bool,
) -> bioalign_lora::Result<(Vec<Vec<u32>>, Vec<f64>)> {
    let mut lora = lora_all(4);
    lora.lora_dropout = 0.1;
    let mut m = load::<B>(&tiny("llama"), true).unwrap();
    m.apply_lora(&lora, 8).unwrap();
    let s = train(
        &mut m,
        &lora,
        &examples(96, 16, 0),
        &examples(96, 4, 3),
        c,
        dir,
        resume,
        &Default::default(),
        &mut |_| {},
    )?;
    Ok((adapter_bits(&m), s.log.iter().map(|r| r.loss).collect()))
}

fn adapter_bits<B: Backend, M: LoraModel<B>>(m: &M) -> Vec<Vec<u32>> {
    let mut v = Vec::new();
    m.visit_adapters(&mut |_, s| {
        for p in [s.lora_a(), s.lora_b()] {
            v.push(tensor_vec(p.val()).iter().map(|x| x.to_bits()).collect());
        }
    });
    v
}

#[test]
fn trainer_on_the_decoder_loss_falls() -> bioalign_lora::Result<()> {
    let d = Default::default();
    let lora = lora_all(8);
    for nf4 in [false, true] {
        let mut m = load::<Ad>(&tiny("llama"), nf4).unwrap();
        m.apply_lora(&lora, 1).unwrap();
        let (tr, ev) = (examples(96, 24, 0), examples(96, 8, 0));
        let mut c = train_cfg();
        c.max_steps = 30;
        c.lr = 2e-2;
        c.optimizer = OptimizerKind::AdamW;
        c.checkpoint_every = None;
        c.eval_every = Some(30);
        let before = bioalign_lora::trainer::eval_loss(&m, &ev, &c, &d);
        let out = tempfile::tempdir().unwrap();
        let s = train(
            &mut m,
            &lora,
            &tr,
            &ev,
            &c,
            out.path(),
            false,
            &d,
            &mut |_| {},
        )?;
        let after = s.log.last().unwrap().eval_loss.unwrap();
        println!("nf4={nf4}: held-out loss {before:.4} -> {after:.4}");
        assert!(after < 0.7 * before, "nf4={nf4}: loss {before} -> {after}");
        // The adapter written at the end loads back into a fresh model.
        let mut fresh = load::<Cpu>(&tiny("llama"), nf4).unwrap();
        fresh.load_adapter(out.path()).unwrap();
        assert_eq!(fresh.n_adapters(), 14);
    }
    Ok(())
}

#[test]
fn trainer_rejects_tokens_outside_the_vocabulary() {
    let mut m = load::<Ad>(&tiny("llama"), true).unwrap();
    let lora = lora_all(2);
    m.apply_lora(&lora, 1).unwrap();
    let mut ex = examples(96, 4, 0);
    ex[2].response[0] = 500;
    let out = tempfile::tempdir().unwrap();
    let e = train(
        &mut m,
        &lora,
        &ex,
        &[],
        &train_cfg(),
        out.path(),
        false,
        &Default::default(),
        &mut |_| {},
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("training example 2") && msg.contains("500"),
        "{msg}"
    );
}

#[test]
fn trainer_on_the_decoder_is_deterministic_and_resumes_exactly() -> bioalign_lora::Result<()> {
    let c = train_cfg();
    let a = tempfile::tempdir().unwrap();
    let (full, full_log) = run::<Ad>(a.path(), &c, false)?;
    let again = tempfile::tempdir().unwrap();
    assert!(
        run::<Ad>(again.path(), &c, false)?.0 == full,
        "same seed twice"
    );

    let b = tempfile::tempdir().unwrap();
    let mut stop = c.clone();
    stop.stop_after = Some(3); // checkpoint at 2, step 3 lost
    let (part, _) = run::<Ad>(b.path(), &stop, false)?;
    assert!(part != full);
    let (resumed, resumed_log) = run::<Ad>(b.path(), &c, true)?;
    assert!(resumed == full, "resumed adapter differs");
    assert_eq!(resumed_log, full_log, "resumed log differs");
    Ok(())
}

#[test]
fn gradient_checkpointing_gives_the_same_gradients_and_training() -> bioalign_lora::Result<()> {
    let d = Default::default();
    let mut plain = load::<Ad>(&tiny("llama"), true).unwrap();
    let mut ck = load::<AdCk>(&tiny("llama"), true).unwrap();
    plain.apply_lora(&lora_all(4), 3).unwrap();
    ck.apply_lora(&lora_all(4), 3).unwrap();
    randomize_b(&mut plain, 9, 0.05, &d);
    randomize_b(&mut ck, 9, 0.05, &d);
    let a = lora_grads(&plain, 96);
    let b = lora_grads(&ck, 96);
    assert_eq!(a.len(), b.len());
    for (k, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(max_abs(x) > 0.0);
        assert!(x == y, "tensor {k}: checkpointed gradient differs");
    }
    // A short training run: the same adapters bit for bit.
    let mut c = train_cfg();
    c.checkpoint_every = None;
    c.max_steps = 3;
    let (p, _) = run::<Ad>(tempfile::tempdir().unwrap().path(), &c, false)?;
    let (q, _) = run::<AdCk>(tempfile::tempdir().unwrap().path(), &c, false)?;
    assert!(p == q, "training with gradient checkpointing differs");
    Ok(())
}

/// `down_proj` adapters that recompute their input in the backward (no dropout)
/// give the same gradients bit for bit, with or without burn's checkpointing.
#[test]
fn recomputing_the_mlp_input_gives_the_same_gradients() {
    fn grads<B: AutodiffBackend>(recompute: bool) -> Vec<Vec<f32>> {
        let d = Default::default();
        let mut m = load::<B>(&tiny("llama"), true).unwrap();
        m.apply_lora(&lora_all(4), 3).unwrap();
        randomize_b(&mut m, 9, 0.05, &d);
        m.set_recompute_mlp_input(recompute);
        assert!(
            m.model
                .layers
                .iter()
                .all(|l| l.mlp.recompute_input == recompute)
        );
        lora_grads(&m, 96)
    }
    let kept = grads::<Ad>(false);
    for (name, again) in [
        ("plain", grads::<Ad>(true)),
        ("checkpointed", grads::<AdCk>(true)),
    ] {
        assert_eq!(kept.len(), again.len());
        for (k, (x, y)) in kept.iter().zip(&again).enumerate() {
            assert!(max_abs(x) > 0.0);
            assert!(
                x == y,
                "{name}, tensor {k}: a recomputed input changes the gradient"
            );
        }
    }
}

/// The response-only loss reads the final hidden states at the supervised positions
/// only, and the decoder runs its last layer's queries, attention output and MLP there
/// alone (`last_hidden_rows`). Loss and LoRA gradients equal those through the whole
/// last hidden state (`hidden`, then the rows selected), on the three architectures
/// (Mistral's window of 4 is shorter than the sequences), dense and NF4 bases, with
/// right padding.
#[test]
fn loss_at_supervised_rows_equals_the_loss_over_the_whole_forward() -> Result<()> {
    use burn::tensor::{Bool, Int, TensorData, activation::log_softmax};
    let d = Default::default();
    for arch in ["llama", "mistral", "phi3"] {
        for nf4 in [false, true] {
            let mut m = load::<Ad>(&tiny(arch), nf4)?;
            m.apply_lora(&lora_all(4), 5)?;
            randomize_b(&mut m, 2, 0.05, &d);
            let b = batch(96);
            assert!(b.batch == 3 && b.mask.contains(&false), "padded batch");
            let ids = Tensor::<Ad, 2, Int>::from_data(
                TensorData::new(b.ids.clone(), [b.batch, b.seq]),
                &d,
            );
            let mask = Tensor::<Ad, 2, Bool>::from_data(
                TensorData::new(b.mask.clone(), [b.batch, b.seq]),
                &d,
            );
            let n = b.positions.len();
            let hidden = bioalign_lora::CausalLm::hidden(&m, ids, mask);
            let h = hidden.dims()[2];
            let pos =
                Tensor::<Ad, 1, Int>::from_data(TensorData::new(b.positions.clone(), [n]), &d);
            let picked = hidden.reshape([b.batch * b.seq, h]).select(0, pos);
            let targets =
                Tensor::<Ad, 2, Int>::from_data(TensorData::new(b.targets.clone(), [n, 1]), &d);
            let full = log_softmax(bioalign_lora::CausalLm::lm_head(&m, picked), 1)
                .gather(1, targets)
                .mean()
                .neg();
            let rows = batch_loss(&m, &b, &d);
            let (lf, lr) = (tensor_vec(full.clone())[0], tensor_vec(rows.clone())[0]);
            assert!(
                (lf - lr).abs() <= 1e-5 * lf.abs().max(1.0),
                "{arch} nf4={nf4}: loss {lr} vs {lf}"
            );
            let (gf, gr) = (full.backward(), rows.backward());
            let mut worst = 0f32;
            m.visit_adapters(&mut |name, s| {
                for p in [s.lora_a(), s.lora_b()] {
                    let a = tensor_vec(p.val().grad(&gf).expect("gradient"));
                    let c = tensor_vec(p.val().grad(&gr).expect("gradient"));
                    let scale = max_abs(&a).max(1e-6);
                    let diff = max_diff(&a, &c) / scale;
                    assert!(
                        diff <= 1e-4,
                        "{arch} nf4={nf4} {name}: gradient differs by {diff}"
                    );
                    worst = worst.max(diff);
                }
            });
            eprintln!(
                "{arch} nf4={nf4}: loss {lr} vs {lf}, worst relative gradient difference {worst:.2e}"
            );
        }
    }
    Ok(())
}
