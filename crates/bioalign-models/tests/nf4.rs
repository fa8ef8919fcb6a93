//! NF4 projections: a bnb-4bit checkpoint of the tiny random Llama (made by
//! bioalign-quant's `quantize_model`, byte-identical to bitsandbytes 0.50.2 per
//! bioalign-quant's fixture tests) loads straight into `Projection::Nf4`, and its logits
//! equal those of the dense decoder built from the dequantized weights; `load_in_4bit`
//! on the f32 checkpoint gives the same 4-bit model.

mod common;

use std::path::{Path, PathBuf};

use bioalign_models::config::ModelConfig;
use bioalign_models::model::{CausalLm, Logits};
use bioalign_models::weights::{SafetensorsDir, WeightSource};
use bioalign_models::{Cpu, CpuDevice, LoadOptions, Result, load_pretrained_with};
use bioalign_quant::Quantized4bit;
use bioalign_quant::checkpoint::{QuantizeModelOptions, quantize_model};

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

fn logits(model: &CausalLm<Cpu>, ids: &[u32], batch: usize) -> Result<Vec<f32>> {
    let out = model.forward(ids, None, batch, None, Logits::All, false)?;
    Ok(out.logits.unwrap().into_data().to_vec::<f32>().unwrap())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn n_nf4(model: &CausalLm<Cpu>) -> usize {
    model
        .model
        .layers
        .iter()
        .map(|l| {
            let a = &l.self_attn;
            let m = &l.mlp;
            [
                &a.q_proj,
                &a.k_proj,
                &a.v_proj,
                &a.o_proj,
                &m.gate_proj,
                &m.up_proj,
                &m.down_proj,
            ]
            .iter()
            .filter(|p| p.is_nf4())
            .count()
        })
        .sum()
}

#[test]
fn bnb_4bit_checkpoint_loads_in_4bit_and_matches_dequantized_dense() -> Result<()> {
    let src = common::fixtures().join("tiny/llama");
    let tmp = tempfile::tempdir().unwrap();
    let qdir = tmp.path().join("q");
    quantize_model(&src, &qdir, &QuantizeModelOptions::default()).unwrap();
    let device = CpuDevice::default();

    let nf4 = load_pretrained_with::<Cpu>(&qdir, &device, LoadOptions::default())?.model;
    let layers = nf4.model.layers.len();
    assert_eq!(n_nf4(&nf4), 7 * layers, "every projection loads in 4 bits");

    let config = ModelConfig::from_json_file(qdir.join("config.json"))?;
    let dense =
        CausalLm::<Cpu>::from_source(&config, &Dequantized(SafetensorsDir::open(&qdir)?), &device)?;
    assert_eq!(n_nf4(&dense), 0);

    let vocab = config.vocab_size as u32;
    let ids: Vec<u32> = (0..2 * 9).map(|i| (i * 37 + 5) % vocab).collect();
    let a = logits(&nf4, &ids, 2)?;
    let b = logits(&dense, &ids, 2)?;
    let d = max_diff(&a, &b);
    println!("bnb-4bit vs dequantized dense: logits max diff {d:e}");
    assert!(d <= 1e-5, "logits differ by {d}");

    // The f32 model differs from both (the quantization is not a no-op).
    let f32m = load_pretrained_with::<Cpu>(&src, &device, LoadOptions::default())?.model;
    assert!(max_diff(&logits(&f32m, &ids, 2)?, &a) > 1e-4);

    // load_in_4bit on the f32 checkpoint quantizes to the same bytes.
    let opts = LoadOptions {
        load_in_4bit: true,
        ..Default::default()
    };
    let l4 = load_pretrained_with::<Cpu>(&src, &device, opts)?.model;
    assert_eq!(n_nf4(&l4), 7 * layers);
    let d4 = max_diff(&logits(&l4, &ids, 2)?, &a);
    assert!(
        d4 <= 1e-6,
        "load_in_4bit differs from the bnb-4bit checkpoint by {d4}"
    );
    Ok(())
}

#[test]
fn corrupt_quant_state_is_an_error_naming_the_tensor() -> Result<()> {
    let src = common::fixtures().join("tiny/llama");
    let tmp = tempfile::tempdir().unwrap();
    let qdir = tmp.path().join("q");
    quantize_model(&src, &qdir, &QuantizeModelOptions::default()).unwrap();
    // Truncate the file's data: the header stays, so parsing fails with a clear error.
    let f = qdir.join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_pretrained_with::<Cpu>(&qdir, &CpuDevice::default(), LoadOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    Ok(())
}

#[test]
fn transformers_bitsandbytes_checkpoint_loads_in_4bit() -> Result<()> {
    // Made by transformers 5.24 + bitsandbytes 0.50.2 on CPU
    // (scripts/fixtures/gen_bnb_checkpoint.py, bioalign-quant's fixture).
    let quant = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bioalign-quant/tests/fixtures");
    let qdir = quant.join("tiny_llama_bnb");
    let device = CpuDevice::default();
    let nf4 = load_pretrained_with::<Cpu>(&qdir, &device, LoadOptions::default())?.model;
    assert_eq!(n_nf4(&nf4), 7 * nf4.model.layers.len());

    let config = ModelConfig::from_json_file(qdir.join("config.json"))?;
    let dense =
        CausalLm::<Cpu>::from_source(&config, &Dequantized(SafetensorsDir::open(&qdir)?), &device)?;
    let vocab = config.vocab_size as u32;
    let ids: Vec<u32> = (0..3 * 7).map(|i| (i * 11 + 3) % vocab).collect();
    let a = logits(&nf4, &ids, 3)?;
    let d = max_diff(&a, &logits(&dense, &ids, 3)?);
    assert!(d <= 1e-5, "logits differ by {d}");

    // Our load_in_4bit on the bf16 source makes the same 4-bit model as bitsandbytes.
    let opts = LoadOptions {
        load_in_4bit: true,
        ..Default::default()
    };
    let l4 = load_pretrained_with::<Cpu>(quant.join("tiny_llama"), &device, opts)?.model;
    let d4 = max_diff(&logits(&l4, &ids, 3)?, &a);
    println!("load_in_4bit vs bitsandbytes checkpoint: logits max diff {d4:e}");
    assert!(d4 <= 1e-6, "load_in_4bit differs from bitsandbytes by {d4}");
    Ok(())
}

#[test]
fn phi3_bnb_4bit_fused_projections_split_into_nf4_layers() -> Result<()> {
    // Phi-3 keeps q/k/v and gate/up fused; a bnb-4bit checkpoint stores the fused weights in
    // 4 bits. They must load split into NF4 projections (no f32 copy) that give the logits
    // of the dense decoder built from the dequantized fused weights.
    let src = common::fixtures().join("tiny/phi3");
    let tmp = tempfile::tempdir().unwrap();
    let qdir = tmp.path().join("q");
    quantize_model(&src, &qdir, &QuantizeModelOptions::default()).unwrap();
    let device = CpuDevice::default();
    let nf4 = load_pretrained_with::<Cpu>(&qdir, &device, LoadOptions::default())?.model;
    assert_eq!(n_nf4(&nf4), 7 * nf4.model.layers.len());

    let config = ModelConfig::from_json_file(qdir.join("config.json"))?;
    let dense =
        CausalLm::<Cpu>::from_source(&config, &Dequantized(SafetensorsDir::open(&qdir)?), &device)?;
    assert_eq!(n_nf4(&dense), 0);
    let vocab = config.vocab_size as u32;
    let ids: Vec<u32> = (0..2 * 11).map(|i| (i * 29 + 7) % vocab).collect();
    let a = logits(&nf4, &ids, 2)?;
    let d = max_diff(&a, &logits(&dense, &ids, 2)?);
    println!("Phi-3 bnb-4bit (fused, split in 4 bits) vs dequantized dense: {d:e}");
    assert!(d <= 1e-5, "logits differ by {d}");
    Ok(())
}

#[test]
fn quant_state_in_another_shard_is_assembled() -> Result<()> {
    // transformers cuts shards by size, so a weight's absmax or quant_state can land in the
    // next shard. Re-shard bitsandbytes' tiny checkpoint (scripts/fixtures/
    // gen_bnb_checkpoint.py) with every piece but the packed weights in a second file.
    let quant = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bioalign-quant/tests/fixtures");
    let one = quant.join("tiny_llama_bnb");
    let bytes = std::fs::read(one.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let two = tmp.path();
    std::fs::copy(one.join("config.json"), two.join("config.json")).unwrap();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut weight_map = serde_json::Map::new();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    for name in names {
        let piece = [".absmax", ".quant_map", ".nested_", ".quant_state."]
            .iter()
            .any(|s| name.contains(s));
        let file = if piece {
            "model-2.safetensors"
        } else {
            "model-1.safetensors"
        };
        weight_map.insert(name.clone(), serde_json::json!(file));
        let view = st.tensor(&name).unwrap();
        if piece { &mut second } else { &mut first }.push((name, view));
    }
    assert!(!second.is_empty());
    for (file, part) in [
        ("model-1.safetensors", first),
        ("model-2.safetensors", second),
    ] {
        std::fs::write(two.join(file), safetensors::serialize(part, None).unwrap()).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(two.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let device = CpuDevice::default();
    let a = load_pretrained_with::<Cpu>(&one, &device, LoadOptions::default())?.model;
    let b = load_pretrained_with::<Cpu>(two, &device, LoadOptions::default())?.model;
    assert_eq!(n_nf4(&b), 7 * b.model.layers.len());
    let ids: Vec<u32> = (0..2 * 5).map(|i| (i * 7 + 1) % 32).collect();
    assert_eq!(logits(&a, &ids, 2)?, logits(&b, &ids, 2)?);
    Ok(())
}
