//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

/// The committed fixtures folder.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The SmolLM2 GGUF, or `None` after a loud message when `datasets/fetch.sh models` has not
/// been run (CI runs it first, so there the tests run).
pub fn smollm2() -> Option<PathBuf> {
    let p = bioalign_models::smollm2_gguf_path();
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "\n!!!!! SKIPPING: {} is absent; run `bash datasets/fetch.sh models` !!!!!\n",
            p.display()
        );
        None
    }
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// One batch of a tiny-model fixture: inputs and transformers' outputs.
pub struct Case {
    pub ids: Vec<u32>,
    pub mask: Vec<u32>,
    pub shape: Vec<usize>,
    pub logits: Vec<f32>,
    pub hidden: Vec<Vec<f32>>,
}

fn floats(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let v = st.tensor(name).unwrap();
    v.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn ints(st: &SafeTensors<'_>, name: &str) -> (Vec<u32>, Vec<usize>) {
    let v = st.tensor(name).unwrap();
    let out = v
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    (out, v.shape().to_vec())
}

/// Batch `batch` (`right` or `left` padded) of `dir/expected.safetensors`.
pub fn case(dir: &Path, batch: &str, n_layers: usize) -> Case {
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (ids, shape) = ints(&st, &format!("{batch}.input_ids"));
    let (mask, _) = ints(&st, &format!("{batch}.attention_mask"));
    Case {
        ids,
        mask,
        shape,
        logits: floats(&st, &format!("{batch}.logits")),
        hidden: (0..=n_layers)
            .map(|i| floats(&st, &format!("{batch}.hidden.{i}")))
            .collect(),
    }
}

/// Largest |a - b| over the real positions of `[b, s, d]` tensors.
pub fn masked_diff(a: &[f32], b: &[f32], mask: &[u32], d: usize) -> f32 {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.len(), mask.len() * d);
    let mut m = 0f32;
    for (p, &real) in mask.iter().enumerate() {
        if real == 1 {
            for j in 0..d {
                m = m.max((a[p * d + j] - b[p * d + j]).abs());
            }
        }
    }
    m
}

/// Loads the tiny fixture `name` on backend `B` and checks logits and every hidden state
/// of both padded batches against transformers' (within `tol` at the real positions;
/// 1e-4 where the products are f32).
pub fn parity_on<B: burn::tensor::backend::Backend>(
    name: &str,
    device: &B::Device,
    tol: f32,
) -> bioalign_models::Result<()> {
    let dir = fixtures().join("tiny").join(name);
    let model = bioalign_models::load_pretrained::<B>(&dir, device)?.model;
    parity_within(name, &model, tol)
}

/// Checks `model` (loaded from any file holding the weights of tiny fixture `name`)
/// against transformers' logits and hidden states for that fixture (1e-4).
pub fn parity_of<B: burn::tensor::backend::Backend>(
    name: &str,
    model: &bioalign_models::model::CausalLm<B>,
) -> bioalign_models::Result<()> {
    parity_within(name, model, 1e-4)
}

/// [`parity_of`] within `tol`.
pub fn parity_within<B: burn::tensor::backend::Backend>(
    name: &str,
    model: &bioalign_models::model::CausalLm<B>,
    tol: f32,
) -> bioalign_models::Result<()> {
    let dir = fixtures().join("tiny").join(name);
    let n_layers = model.n_layers();
    let backend = std::any::type_name::<B>();
    for batch in ["right", "left"] {
        let c = case(&dir, batch, n_layers);
        let out = model.forward(
            &c.ids,
            Some(&c.mask),
            c.shape[0],
            None,
            bioalign_models::model::Logits::All,
            true,
        )?;
        let logits = out.logits.unwrap().into_data().to_vec::<f32>().unwrap();
        let d = masked_diff(&logits, &c.logits, &c.mask, model.config.vocab_size);
        println!("{name} {batch} on {backend}: logits max diff {d:e}");
        assert!(d <= tol, "{name} {batch}: logits differ by {d}");
        let hs = out.hidden_states.unwrap();
        assert_eq!(hs.len(), n_layers + 1);
        for (i, (h, want)) in hs.into_iter().zip(&c.hidden).enumerate() {
            let h = h.into_data().to_vec::<f32>().unwrap();
            let d = masked_diff(&h, want, &c.mask, model.config.hidden_size);
            println!("{name} {batch} on {backend}: hidden {i} max diff {d:e}");
            assert!(d <= tol, "{name} {batch}: hidden state {i} differs by {d}");
        }
        assert!(
            logits.iter().all(|x| x.is_finite()),
            "{name} {batch}: non-finite logits at padding"
        );
    }
    Ok(())
}
