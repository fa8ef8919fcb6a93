//! bnb-4bit checkpoint layout against the one transformers + bitsandbytes write.
//!
//! `tests/fixtures/tiny_llama_bnb` is `save_pretrained` of transformers 5.24 +
//! bitsandbytes 0.50.2 (NF4, double quant) loading `tests/fixtures/tiny_llama`;
//! both made by `scripts/fixtures/gen_bnb_checkpoint.py`.

use std::path::PathBuf;

use bioalign_quant::checkpoint::{
    QuantizeModelOptions, is_bnb_4bit, quant_state_json, quantize_model, read_quantized, to_tensors,
};
use bioalign_quant::{Error, QuantizeOptions, Quantized4bit, SourceDtype};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn quantize_model_matches_transformers_byte_for_byte() -> TestResult {
    let out = tempfile::tempdir()?;
    let report = quantize_model(
        &fixture("tiny_llama"),
        out.path(),
        &QuantizeModelOptions::default(),
    )?;
    assert_eq!(report.quantized, 7, "q/k/v/o and gate/up/down");

    let ours = std::fs::read(out.path().join("model.safetensors"))?;
    let theirs = std::fs::read(fixture("tiny_llama_bnb/model.safetensors"))?;
    let a = SafeTensors::deserialize(&ours)?;
    let b = SafeTensors::deserialize(&theirs)?;
    let mut ka: Vec<String> = a.names().into_iter().map(String::from).collect();
    let mut kb: Vec<String> = b.names().into_iter().map(String::from).collect();
    ka.sort();
    kb.sort();
    assert_eq!(ka, kb, "same keys");
    for k in &ka {
        let (ta, tb) = (a.tensor(k)?, b.tensor(k)?);
        assert_eq!(ta.dtype(), tb.dtype(), "{k} dtype");
        assert_eq!(ta.shape(), tb.shape(), "{k} shape");
        assert!(ta.data() == tb.data(), "{k} bytes differ");
    }

    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json"))?)?;
    let want: Value = serde_json::from_str(&std::fs::read_to_string(fixture(
        "tiny_llama_bnb/config.json",
    ))?)?;
    assert_eq!(cfg["quantization_config"], want["quantization_config"]);
    for key in [
        "hidden_size",
        "num_hidden_layers",
        "vocab_size",
        "model_type",
        "dtype",
    ] {
        assert_eq!(cfg[key], want[key], "{key}");
    }
    Ok(())
}

#[test]
fn reads_transformers_checkpoint_and_round_trips() -> TestResult {
    let bytes = std::fs::read(fixture("tiny_llama_bnb/model.safetensors"))?;
    let st = SafeTensors::deserialize(&bytes)?;
    let key = "model.layers.0.mlp.down_proj.weight";
    assert!(is_bnb_4bit(&st, key));
    assert!(!is_bnb_4bit(&st, "lm_head.weight"));
    let q = read_quantized(&st, key)?;
    assert_eq!(q.shape, vec![64, 96]);
    assert_eq!(q.dtype, SourceDtype::Bf16);
    let state = st.tensor(&format!("{key}.quant_state.bitsandbytes__nf4"))?;
    assert_eq!(
        quant_state_json(&q).as_bytes(),
        state.data(),
        "JSON byte-identical"
    );
    for t in to_tensors(&q, key) {
        assert_eq!(st.tensor(&t.name)?.data(), &t.data[..], "{}", t.name);
    }
    // Dequantized weight close to the bf16 original.
    let orig = std::fs::read(fixture("tiny_llama/model.safetensors"))?;
    let so = SafeTensors::deserialize(&orig)?;
    let w: Vec<f32> = so
        .tensor(key)?
        .data()
        .chunks_exact(2)
        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    let back = q.dequantize_f32();
    let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (x, y) in w.iter().zip(&back) {
        assert!((x - y).abs() <= 0.15 * max, "{x} vs {y}");
    }
    Ok(())
}

/// Key, dtype, shape and bytes of one stored tensor.
type Raw = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);
/// A way to corrupt a checkpoint.
type Edit = Box<dyn Fn(&mut Vec<Raw>)>;

/// Serializes `q`'s tensors after `edit` tampers with them.
fn tampered(edit: impl Fn(&mut Vec<Raw>)) -> Vec<u8> {
    let data: Vec<f32> = (0..64 * 40)
        .map(|i| ((i * 13 % 29) as f32 - 14.0) / 20.0)
        .collect();
    let q = Quantized4bit::quantize(
        &data,
        &[64, 40],
        SourceDtype::F32,
        QuantizeOptions::default(),
    )
    .expect("quantize");
    let mut ts: Vec<_> = to_tensors(&q, "w.weight")
        .into_iter()
        .map(|t| (t.name, t.dtype, t.shape, t.data))
        .collect();
    edit(&mut ts);
    let views: Vec<(String, TensorView<'_>)> = ts
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("view")))
        .collect();
    safetensors::tensor::serialize(views, None).expect("serialize")
}

fn read_err(bytes: &[u8]) -> Error {
    let st = SafeTensors::deserialize(bytes).expect("deserialize");
    read_quantized(&st, "w.weight").expect_err("corrupt state accepted")
}

#[test]
fn corrupt_or_inconsistent_state_is_a_clear_error() {
    let ok = tampered(|_| {});
    let st = SafeTensors::deserialize(&ok).expect("deserialize");
    assert!(read_quantized(&st, "w.weight").is_ok());

    let cases: Vec<(&str, Edit)> = vec![
        (
            "missing tensor w.weight.nested_absmax",
            Box::new(|ts| ts.retain(|t| !t.0.ends_with("nested_absmax"))),
        ),
        (
            "absmax",
            Box::new(|ts| {
                if let Some(t) = ts
                    .iter_mut()
                    .find(|t| t.0.ends_with(".absmax") && !t.0.contains("nested"))
                {
                    t.3.pop();
                    t.2 = vec![t.3.len()];
                }
            }),
        ),
        (
            "bad JSON",
            Box::new(|ts| {
                if let Some(t) = ts.iter_mut().find(|t| t.0.contains("quant_state")) {
                    t.3.truncate(10);
                    t.2 = vec![10];
                }
            }),
        ),
        (
            "code book",
            Box::new(|ts| {
                if let Some(t) = ts
                    .iter_mut()
                    .find(|t| t.0.ends_with(".quant_map") && !t.0.contains("nested"))
                {
                    t.3[0] ^= 1;
                }
            }),
        ),
        (
            "invalid block size 48",
            Box::new(|ts| {
                if let Some(t) = ts.iter_mut().find(|t| t.0.contains("quant_state")) {
                    let s = String::from_utf8(t.3.clone())
                        .expect("utf8")
                        .replace("\"blocksize\": 64", "\"blocksize\": 48");
                    t.3 = s.into_bytes();
                    t.2 = vec![t.3.len()];
                }
            }),
        ),
        (
            "holds",
            Box::new(|ts| {
                if let Some(t) = ts.iter_mut().find(|t| t.0 == "w.weight") {
                    t.3.truncate(100);
                    t.2 = vec![100, 1];
                }
            }),
        ),
    ];
    for (want, edit) in cases {
        let err = read_err(&tampered(edit)).to_string();
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }
}

/// A sharded input (two files + index) gives the same tensors as the single
/// file, one output shard per input shard, and a consistent index.
#[test]
fn sharded_model_round_trips() -> TestResult {
    use bioalign_quant::checkpoint::{PlannedTensor, write_safetensors};
    use std::collections::BTreeMap;

    let src = fixture("tiny_llama");
    let bytes = std::fs::read(src.join("model.safetensors"))?;
    let st = SafeTensors::deserialize(&bytes)?;
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let dir = tempfile::tempdir()?;
    let (a, b) = names.split_at(names.len() / 2);
    let mut weight_map = BTreeMap::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let plan: Vec<PlannedTensor> = part
            .iter()
            .map(|n| {
                let t = st.tensor(n).expect("tensor");
                PlannedTensor {
                    name: n.clone(),
                    dtype: t.dtype(),
                    shape: t.shape().to_vec(),
                }
            })
            .collect();
        write_safetensors(&dir.path().join(file), &plan, &BTreeMap::new(), |i, w| {
            w.write_all(st.tensor(&part[i]).expect("tensor").data())
                .map_err(|e| Error::Io {
                    op: "write",
                    path: file.into(),
                    source: e,
                })
        })?;
        for n in part {
            weight_map.insert(n.clone(), file.to_string());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )?;
    std::fs::copy(src.join("config.json"), dir.path().join("config.json"))?;

    let out = tempfile::tempdir()?;
    let report = quantize_model(dir.path(), out.path(), &QuantizeModelOptions::default())?;
    assert_eq!(report.files.len(), 2);
    let index: Value = serde_json::from_str(&std::fs::read_to_string(
        out.path().join("model.safetensors.index.json"),
    )?)?;
    let want_bytes = std::fs::read(fixture("tiny_llama_bnb/model.safetensors"))?;
    let want = SafeTensors::deserialize(&want_bytes)?;
    let map = index["weight_map"].as_object().ok_or("weight_map")?;
    assert_eq!(map.len(), want.names().len());
    for (key, file) in map {
        let shard = std::fs::read(out.path().join(file.as_str().ok_or("file")?))?;
        let got = SafeTensors::deserialize(&shard)?;
        assert_eq!(got.tensor(key)?.data(), want.tensor(key)?.data(), "{key}");
    }
    Ok(())
}

#[test]
fn refuses_already_quantized_and_missing_files() {
    let out = tempfile::tempdir().expect("tempdir");
    let err = quantize_model(
        &fixture("tiny_llama_bnb"),
        out.path(),
        &QuantizeModelOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("already quantized"), "{err}");
    let err = quantize_model(
        out.path(),
        &out.path().join("x"),
        &QuantizeModelOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
}
