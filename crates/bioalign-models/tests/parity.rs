//! Decoder parity with transformers on tiny random Llama / Mistral / Phi-3 checkpoints
//! (fixtures from `scripts/fixtures/gen_tiny_models.py`, transformers 5.x eager attention,
//! float32): logits and every hidden state at the real (unpadded) positions within 1e-4.

mod common;

use bioalign_models::model::Logits;
use bioalign_models::{Cpu, CpuDevice, Result, load_pretrained};
use common::{case, masked_diff};

fn run(name: &str) -> Result<()> {
    common::parity_on::<Cpu>(name, &CpuDevice::default(), 1e-4)
}

#[test]
fn tiny_llama_with_llama3_rope_matches_transformers() -> Result<()> {
    run("llama")
}

#[test]
fn tiny_mistral_with_sliding_window_matches_transformers() -> Result<()> {
    run("mistral")
}

#[test]
fn tiny_phi3_fused_sharded_longrope_matches_transformers() -> Result<()> {
    run("phi3")
}

#[test]
fn sliding_window_changes_mistral_logits() -> Result<()> {
    // Guards the parity test above: without the window the 12-token batch must differ.
    let dir = common::fixtures().join("tiny/mistral");
    let device = CpuDevice::default();
    let mut model = load_pretrained::<Cpu>(&dir, &device)?.model;
    let c = case(&dir, "right", model.n_layers());
    model.config.sliding_window = None;
    let out = model.forward(&c.ids, Some(&c.mask), c.shape[0], None, Logits::All, false)?;
    let logits = out.logits.unwrap().into_data().to_vec::<f32>().unwrap();
    let d = masked_diff(&logits, &c.logits, &c.mask, model.config.vocab_size);
    assert!(d > 1e-2, "window made no difference ({d})");
    Ok(())
}

#[test]
fn missing_and_misshapen_tensors_name_tensor_and_file() {
    let src = common::fixtures().join("tiny/llama");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let device = CpuDevice::default();
    // A config with one more layer than the file holds.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["num_hidden_layers"] = serde_json::json!(3);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let e = load_pretrained::<Cpu>(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.2.") && e.contains("missing tensor"),
        "{e}"
    );
    // A config with a wider MLP than the file.
    cfg["num_hidden_layers"] = serde_json::json!(2);
    cfg["intermediate_size"] = serde_json::json!(81);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let e = load_pretrained::<Cpu>(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mlp.") && e.contains("model.safetensors") && e.contains("81"),
        "{e}"
    );
    // An unknown architecture.
    cfg["model_type"] = serde_json::json!("gpt_neox");
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let e = load_pretrained::<Cpu>(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("gpt_neox") && e.contains("config.json"), "{e}");
}

#[test]
fn kv_cache_steps_equal_one_full_pass() -> Result<()> {
    // Mistral: the sliding window (4) must also hold across cached steps.
    let dir = common::fixtures().join("tiny/mistral");
    let device = CpuDevice::default();
    let model = load_pretrained::<Cpu>(&dir, &device)?.model;
    let ids: Vec<u32> = vec![5, 17, 33, 8, 61, 42, 9, 70, 11, 3];
    let full = model.forward(&ids, None, 1, None, Logits::All, false)?;
    let full = full.logits.unwrap().into_data().to_vec::<f32>().unwrap();
    let vocab = model.config.vocab_size;
    let mut cache = bioalign_models::model::KvCache::new(model.n_layers(), 1);
    let first = model.forward(&ids[..6], None, 1, Some(&mut cache), Logits::Last, false)?;
    let mut steps = vec![first.logits.unwrap().into_data().to_vec::<f32>().unwrap()];
    for &t in &ids[6..] {
        let o = model.forward(&[t], None, 1, Some(&mut cache), Logits::Last, false)?;
        steps.push(o.logits.unwrap().into_data().to_vec::<f32>().unwrap());
    }
    assert_eq!(cache.len(), ids.len());
    for (k, got) in steps.iter().enumerate() {
        let pos = 5 + k;
        let d = common::max_abs_diff(got, &full[pos * vocab..(pos + 1) * vocab]);
        assert!(d <= 1e-5, "position {pos}: cached logits differ by {d}");
    }
    Ok(())
}

#[test]
fn pooling_ignores_padding_unless_asked() -> Result<()> {
    use bioalign_models::embed::{Layers, Pooling};
    use bioalign_models::tokenizer::{PaddingSide, pad_batch};
    let dir = common::fixtures().join("tiny/llama");
    let device = CpuDevice::default();
    let model = load_pretrained::<Cpu>(&dir, &device)?.model;
    let seqs = vec![vec![4u32, 9, 15, 16, 23, 42], vec![7u32, 8, 9]];
    let h = model.config.hidden_size;
    for side in [PaddingSide::Right, PaddingSide::Left] {
        let batch = pad_batch(&seqs, 0, side);
        let mean = model.embed(&batch, Pooling::Mean, Layers::All, true)?;
        let last = model.embed(&batch, Pooling::Last, Layers::Last, false)?;
        let padded = model.embed(&batch, Pooling::MeanPadded, Layers::Last, false)?;
        assert_eq!(mean.layers.len(), model.n_layers() + 1);
        let vocab = model.config.vocab_size;
        // The short sequence alone, unpadded.
        let alone = pad_batch(&seqs[1..], 0, side);
        let m1 = model.embed(&alone, Pooling::Mean, Layers::All, true)?;
        let l1 = model.embed(&alone, Pooling::Last, Layers::Last, false)?;
        let p1 = model.embed(&alone, Pooling::MeanPadded, Layers::Last, false)?;
        let tol = if side == PaddingSide::Right {
            1e-5
        } else {
            f32::INFINITY
        };
        // Right padding leaves the real positions' states untouched; left padding shifts
        // their (default, transformers-style) positions, so only check it runs.
        let d = common::max_abs_diff(
            &mean.layers.last().unwrap()[h..],
            &m1.layers.last().unwrap()[..],
        );
        assert!(
            d <= tol,
            "{side:?}: mean over real tokens changed by padding ({d})"
        );
        let d = common::max_abs_diff(&last.layers[0][h..], &l1.layers[0]);
        assert!(
            d <= tol,
            "{side:?}: last-token state changed by padding ({d})"
        );
        let ln = mean.next_token_logits.unwrap();
        let d = common::max_abs_diff(&ln[vocab..], &m1.next_token_logits.unwrap());
        assert!(
            d <= tol,
            "{side:?}: next-token logits changed by padding ({d})"
        );
        // The reference's padded mean does change with padding.
        let d = common::max_abs_diff(&padded.layers[0][h..], &p1.layers[0]);
        assert!(d > 1e-3, "{side:?}: padded mean ignored the padding ({d})");
    }
    Ok(())
}

#[test]
fn unsupported_dtype_names_tensor_file_and_dtype() {
    // A checkpoint whose final norm is stored as int32: read through burn-store, refused
    // with the tensor, the file and the dtype.
    let src = common::fixtures().join("tiny/llama");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = vec![0u8; 64 * 4];
    let mut tensors = Vec::new();
    for name in st.names() {
        let v = st.tensor(name).unwrap();
        let v = if name == "model.norm.weight" {
            safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![64], &ints).unwrap()
        } else {
            v
        };
        tensors.push((name.to_string(), v));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        safetensors::serialize(tensors, None).unwrap(),
    )
    .unwrap();
    let e = load_pretrained::<Cpu>(dir.path(), &CpuDevice::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.norm.weight") && e.contains("model.safetensors") && e.contains("I32"),
        "{e}"
    );
}

/// A forward whose batch is split over the cores (each part through the layers on a
/// core of its own, `CausalLm::batch_parts`) gives the unsplit forward's logits and
/// hidden states bit for bit: a padded 8 × 24 batch through the tiny Mistral (sliding
/// window shorter than the sequence), on a 2-thread pool and on a 1-thread one.
#[test]
fn a_batch_split_over_the_cores_gives_the_unsplit_values() -> Result<()> {
    let dir = common::fixtures().join("tiny/mistral");
    let device = CpuDevice::default();
    let model = load_pretrained::<Cpu>(&dir, &device)?.model;
    let (batch, s) = (8, 24);
    let vocab = model.config.vocab_size as u32;
    let ids: Vec<u32> = (0..batch * s)
        .map(|i| (i as u32 * 7919 + 13) % vocab)
        .collect();
    let mask: Vec<u32> = (0..batch * s)
        .map(|i| u32::from(i % s < s - (i / s) % 5))
        .collect();
    let run = |threads: usize| -> Result<(usize, Vec<Vec<f32>>)> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let parts = model.batch_parts(batch, s);
            let out = model.forward(&ids, Some(&mask), batch, None, Logits::All, true)?;
            let mut all = vec![out.logits.unwrap().into_data().to_vec::<f32>().unwrap()];
            for h in out.hidden_states.unwrap() {
                all.push(h.into_data().to_vec::<f32>().unwrap());
            }
            Ok((parts, all))
        })
    };
    let (split_parts, split) = run(2)?;
    let (whole_parts, whole) = run(1)?;
    assert_eq!((split_parts, whole_parts), (2, 1));
    assert_eq!(split.len(), model.n_layers() + 2);
    for (i, (a, b)) in split.iter().zip(&whole).enumerate() {
        assert!(
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "output {i} differs"
        );
    }
    Ok(())
}

/// Projections packed once for inference (`LoadOptions::pack`, what `generate`,
/// `embed` and `models_bench` load) give the dense model's logits bit for bit over a
/// batch (both run the blocked kernel with the same sums), and a single-token step
/// (a GEMV, summed in another order for the dense weight) within 1e-5.
#[test]
fn packed_projections_give_the_dense_values() -> Result<()> {
    use bioalign_models::model::Projection;
    use bioalign_models::{LoadOptions, load_pretrained_with};
    let dir = common::fixtures().join("tiny/llama");
    let device = CpuDevice::default();
    let dense = load_pretrained::<Cpu>(&dir, &device)?.model;
    let opts = LoadOptions {
        pack: true,
        ..Default::default()
    };
    let packed = load_pretrained_with::<Cpu>(&dir, &device, opts)?.model;
    assert!(matches!(
        packed.model.layers[0].self_attn.q_proj,
        Projection::Packed(_)
    ));
    let c = case(&dir, "right", dense.n_layers());
    let logits = |m: &bioalign_models::model::CausalLm<Cpu>, ids: &[u32], batch: usize| {
        let out = m
            .forward(ids, None, batch, None, Logits::All, false)
            .unwrap();
        out.logits.unwrap().into_data().to_vec::<f32>().unwrap()
    };
    let (a, b) = (
        logits(&dense, &c.ids, c.shape[0]),
        logits(&packed, &c.ids, c.shape[0]),
    );
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    let (a, b) = (
        logits(&dense, &c.ids[..1], 1),
        logits(&packed, &c.ids[..1], 1),
    );
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(d <= 1e-5, "single-token logits differ by {d}");
    Ok(())
}
