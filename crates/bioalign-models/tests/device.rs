//! The decoder on a CubeCL backend: burn-cuda with feature `cuda` (an NVIDIA GPU),
//! else burn-wgpu with feature `wgpu`. In CI the device is Mesa's software Vulkan
//! (lavapipe, installed by `.ci/run`), so these run without a GPU.
//!
//! Dense: the tiny random Llama / Mistral / Phi-3 fixtures against transformers'
//! logits and hidden states (`scripts/fixtures/gen_tiny_models.py`), as `parity.rs`
//! does on the CPU. NF4: `load_in_4bit` on the device against the CPU's NF4 model
//! (bioalign-quant's CubeCL dequantization kernel against its CPU kernel), then a
//! greedy continuation through the KV cache.
#![cfg(any(feature = "cuda", feature = "wgpu"))]

mod common;

use bioalign_models::generate::{GenerateOptions, Sampling};
use bioalign_models::model::Logits;
use bioalign_models::{Cpu, CpuDevice, LoadOptions, Result, load_pretrained_with};

#[cfg(feature = "cuda")]
use bioalign_models::{Cuda as Gpu, CudaDevice as GpuDevice};
#[cfg(not(feature = "cuda"))]
use bioalign_models::{Wgpu as Gpu, WgpuDevice as GpuDevice};

/// How far the device's logits and hidden states may be from transformers' (f32, CPU).
/// burn-cuda's tensor-core matmuls round f32 operands to TF32 (10-bit mantissa; cubek-matmul
/// 0.2 `adjust_dtypes`, with no switch), as PyTorch does under `allow_tf32`: measured on an
/// H200, the tiny models' logits moved by up to 2.2e-2 (Phi-3) where the CPU gives 1e-4.
/// A wrong mask, rotary table or head split moves them by far more (the tiny models'
/// logits span several units). wgpu multiplies in f32.
#[cfg(feature = "cuda")]
const TOL: f32 = 5e-2;
#[cfg(not(feature = "cuda"))]
const TOL: f32 = 1e-4;

fn parity_on_device(name: &str) -> Result<()> {
    common::parity_on::<Gpu>(name, &GpuDevice::default(), TOL)
}

#[test]
fn tiny_llama_on_device_matches_transformers() -> Result<()> {
    parity_on_device("llama")
}

#[test]
fn tiny_mistral_on_device_matches_transformers() -> Result<()> {
    parity_on_device("mistral")
}

#[test]
fn tiny_phi3_on_device_matches_transformers() -> Result<()> {
    parity_on_device("phi3")
}

#[test]
fn nf4_model_on_device_matches_the_cpu_nf4_model() -> Result<()> {
    let dir = common::fixtures().join("tiny/llama");
    let opts = LoadOptions {
        load_in_4bit: true,
        ..Default::default()
    };
    let cpu = load_pretrained_with::<Cpu>(&dir, &CpuDevice::default(), opts)?.model;
    let gpu = load_pretrained_with::<Gpu>(&dir, &GpuDevice::default(), opts)?.model;
    let layers = gpu.model.layers.len();
    let nf4 = gpu
        .model
        .layers
        .iter()
        .filter(|l| l.self_attn.q_proj.is_nf4() && l.mlp.down_proj.is_nf4())
        .count();
    assert_eq!(nf4, layers, "projections load as NF4 on the device");

    let vocab = cpu.config.vocab_size as u32;
    let ids: Vec<u32> = (0..2 * 9).map(|i| (i * 37 + 5) % vocab).collect();
    let a = cpu.forward(&ids, None, 2, None, Logits::All, false)?;
    let b = gpu.forward(&ids, None, 2, None, Logits::All, false)?;
    let a = a.logits.unwrap().into_data().to_vec::<f32>().unwrap();
    let b = b.logits.unwrap().into_data().to_vec::<f32>().unwrap();
    let d = common::max_abs_diff(&a, &b);
    println!("NF4 tiny llama, device vs CPU: logits max diff {d:e}");
    assert!(d <= TOL, "NF4 logits differ by {d}");

    // Greedy generation with the KV cache: the same tokens on both.
    let opts = GenerateOptions {
        max_new_tokens: 8,
        sampling: Sampling::Greedy,
        eos_ids: vec![],
        pad_id: 0,
    };
    let prompts = vec![vec![5u32, 17, 33, 8], vec![61, 42, 9]];
    assert_eq!(
        gpu.generate(&prompts, &opts)?,
        cpu.generate(&prompts, &opts)?
    );
    Ok(())
}
