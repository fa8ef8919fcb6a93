//! Rotary scaling stored in GGUF files. The tiny random Llama (llama3 rope) and Phi-3
//! (LongRoPE, fused projections) fixtures were written as GGUF the way llama.cpp's
//! convert_hf_to_gguf.py writes such models (`scripts/fixtures/gen_tiny_gguf.py`, gguf-py
//! 0.19): Llama 3.1's scaling as `rope_freqs.weight`, Phi-3's as
//! `rope_factors_long/short.weight` with `phi3.rope.scaling.*`. Loaded from the GGUF they
//! must give transformers' logits and hidden states for the same weights
//! (`tiny/*/expected.safetensors`, transformers 5.24).

mod common;

use bioalign_models::config::ModelConfig;
use bioalign_models::gguf::GgufFile;
use bioalign_models::model::{CausalLm, Logits};
use bioalign_models::weights::GgufWeights;
use bioalign_models::{Cpu, CpuDevice, Result};
use common::{case, fixtures, masked_diff};

fn load(file: &str) -> Result<CausalLm<Cpu>> {
    let f = GgufFile::open(fixtures().join("tiny").join(file))?;
    let config = ModelConfig::from_gguf(&f)?;
    CausalLm::from_source(
        &config,
        &GgufWeights::new(&f, &config),
        &CpuDevice::default(),
    )
}

fn right_logits(model: &CausalLm<Cpu>, c: &common::Case) -> Result<Vec<f32>> {
    let out = model.forward(&c.ids, Some(&c.mask), c.shape[0], None, Logits::All, false)?;
    Ok(out.logits.unwrap().into_data().to_vec::<f32>().unwrap())
}

#[test]
fn llama3_rope_freqs_in_gguf_match_transformers() -> Result<()> {
    let model = load("llama.gguf")?;
    common::parity_of("llama", &model)?;

    // Guard: the divisors carry the scaling; without them the logits move.
    let mut plain = model.clone();
    plain.config.rope_scaling = None;
    plain.rope = bioalign_models::model::Rope::new(&plain.config);
    let c = case(&fixtures().join("tiny/llama"), "right", model.n_layers());
    let d = masked_diff(&right_logits(&plain, &c)?, &c.logits, &c.mask, 96);
    assert!(d > 1e-2, "rope_freqs made no difference ({d})");
    Ok(())
}

#[test]
fn phi3_longrope_factors_and_fused_projections_in_gguf_match_transformers() -> Result<()> {
    let model = load("phi3.gguf")?;
    let rope = model.config.rope()?;
    assert!(
        matches!(
            rope,
            bioalign_models::config::RopeScaling::LongRope {
                original_max_position_embeddings: 8,
                ..
            }
        ),
        "{rope:?}"
    );
    common::parity_of("phi3", &model)
}

#[test]
fn linear_rope_scaling_in_gguf_matches_transformers() -> Result<()> {
    // transformers with rope_parameters {linear, factor 4} on the tiny Llama's weights
    // (gen_tiny_gguf.py, `llama_linear_expected.safetensors`).
    let model = load("llama_linear.gguf")?;
    assert_eq!(
        model.config.rope()?,
        bioalign_models::config::RopeScaling::Linear { factor: 4.0 }
    );
    let bytes = std::fs::read(fixtures().join("tiny/llama_linear_expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = |n: &str| -> Vec<u32> {
        st.tensor(n)
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect()
    };
    let want: Vec<f32> = st
        .tensor("right.logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (ids, mask) = (ints("right.input_ids"), ints("right.attention_mask"));
    let batch = st.tensor("right.input_ids").unwrap().shape()[0];
    let out = model.forward(&ids, Some(&mask), batch, None, Logits::All, false)?;
    let got = out.logits.unwrap().into_data().to_vec::<f32>().unwrap();
    let d = masked_diff(&got, &want, &mask, 96);
    println!("linear rope GGUF vs transformers: logits max diff {d:e}");
    assert!(d <= 1e-4, "logits differ by {d}");
    Ok(())
}

#[test]
fn unsupported_rope_scaling_in_gguf_is_an_error_naming_the_key() {
    let f = GgufFile::open(fixtures().join("tiny/llama_yarn.gguf")).unwrap();
    let e = ModelConfig::from_gguf(&f).unwrap_err().to_string();
    assert!(
        e.contains("llama.rope.scaling.type")
            && e.contains("yarn")
            && e.contains("llama_yarn.gguf"),
        "{e}"
    );
}
