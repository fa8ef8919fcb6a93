//! GGUF reader tests. Expected values come from the Python `gguf` package 0.19
//! (`gguf.quants.dequantize`) and transformers 5.x loading the SmolLM2 GGUF, written by
//! `scripts/fixtures/gen_gguf.py`.

mod common;

use bioalign_models::gguf::{GgufFile, GgufValue, reverse_qk_permutation};
use bioalign_models::{Error, Result};
use common::{fixtures, max_abs_diff};

fn quants_path() -> std::path::PathBuf {
    fixtures().join("quants.gguf")
}

#[test]
fn metadata_of_every_value_type() -> Result<()> {
    let f = GgufFile::open(quants_path())?;
    assert_eq!(f.version(), 3);
    assert_eq!(f.get_str("general.architecture")?, "llama");
    let m = f.metadata();
    assert_eq!(m["test.u8"], GgufValue::U8(7));
    assert_eq!(m["test.i8"], GgufValue::I8(-7));
    assert_eq!(m["test.u16"], GgufValue::U16(65000));
    assert_eq!(m["test.i16"], GgufValue::I16(-32000));
    assert_eq!(m["test.u32"], GgufValue::U32(4_000_000_000));
    assert_eq!(m["test.i32"], GgufValue::I32(-2_000_000_000));
    assert_eq!(m["test.f32"], GgufValue::F32(1.5));
    assert_eq!(m["test.bool"], GgufValue::Bool(true));
    assert_eq!(f.get_str("test.string")?, "gène-disease ✓");
    assert_eq!(f.get_u64("test.u64")?, (1u64 << 63) + 5);
    assert_eq!(m["test.i64"], GgufValue::I64(-(1i64 << 62)));
    assert_eq!(f.get_f64("test.f64")?, 2.25);
    assert_eq!(f.get_str_array("test.array_str")?, vec!["a", "bb", ""]);
    assert_eq!(
        f.get_array("test.array_i32")?,
        &[GgufValue::I32(1), GgufValue::I32(-2), GgufValue::I32(3)]
    );
    // Wrong type and missing key name the key.
    let e = f.get_str("test.u8").unwrap_err().to_string();
    assert!(e.contains("test.u8") && e.contains("uint8"), "{e}");
    let e = f.get_u64("no.such.key").unwrap_err().to_string();
    assert!(
        e.contains("no.such.key") && e.contains("quants.gguf"),
        "{e}"
    );
    Ok(())
}

#[test]
fn every_type_dequantizes_like_gguf_py() -> Result<()> {
    let f = GgufFile::open(quants_path())?;
    let names: Vec<String> = f
        .tensors()
        .iter()
        .filter(|t| t.name.starts_with("t."))
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names.len(), 8, "{names:?}");
    for name in names {
        let got = f.dequantize(&name)?;
        let want = f.dequantize(&format!("expected.{name}"))?;
        assert_eq!(
            f.tensor(&name)?.shape(),
            f.tensor(&format!("expected.{name}"))?.shape()
        );
        let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
        let d = max_abs_diff(&got, &want);
        assert!(
            d <= 1e-6 * scale.max(1.0),
            "{name}: max diff {d} (scale {scale})"
        );
        assert!(want.iter().any(|&x| x != 0.0), "{name}: all zero");
    }
    Ok(())
}

#[test]
fn version_2_reads_and_version_1_is_refused() -> Result<()> {
    let bytes = std::fs::read(quants_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut v2 = bytes.clone();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    let p2 = dir.path().join("v2.gguf");
    std::fs::write(&p2, &v2).unwrap();
    let f = GgufFile::open(&p2)?;
    assert_eq!(f.version(), 2);
    let d = max_abs_diff(&f.dequantize("t.q4_k")?, &f.dequantize("expected.t.q4_k")?);
    assert!(d < 1e-5, "{d}");
    let mut v1 = bytes;
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    let p1 = dir.path().join("v1.gguf");
    std::fs::write(&p1, &v1).unwrap();
    let e = GgufFile::open(&p1).unwrap_err();
    assert!(matches!(e, Error::GgufFormat { .. }), "{e}");
    assert!(
        e.to_string().contains("version 1") && e.to_string().contains("v1.gguf"),
        "{e}"
    );
    Ok(())
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let bytes = std::fs::read(quants_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.gguf");
    let mut truncated_tensor = false;
    for len in (0..bytes.len()).step_by(37) {
        std::fs::write(&p, &bytes[..len]).unwrap();
        let e = GgufFile::open(&p).expect_err("truncated file opened");
        let msg = e.to_string();
        assert!(msg.contains("cut.gguf"), "{msg}");
        if msg.contains("tensor t.") || msg.contains("tensor expected.") {
            truncated_tensor = true;
        }
    }
    assert!(truncated_tensor, "no cut fell into tensor data");
}

/// Byte position of the `offset` field in the tensor info of `name`.
fn offset_field(bytes: &[u8], name: &str) -> usize {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .unwrap();
    let dims_at = at + key.len();
    let n_dims = u32::from_le_bytes(bytes[dims_at..dims_at + 4].try_into().unwrap()) as usize;
    dims_at + 4 + 8 * n_dims + 4
}

#[test]
fn bad_offsets_and_unknown_types_name_the_tensor() -> Result<()> {
    let bytes = std::fs::read(quants_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");

    let mut b = bytes.clone();
    let off = offset_field(&b, "t.q6_k");
    b[off..off + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    let e = GgufFile::open(&p).unwrap_err().to_string();
    assert!(e.contains("t.q6_k") && e.contains("bad.gguf"), "{e}");

    let mut b = bytes.clone();
    b[off..off + 8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    let e = GgufFile::open(&p).unwrap_err().to_string();
    assert!(e.contains("t.q6_k"), "{e}");

    let mut b = bytes;
    b[off - 4..off].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    let f = GgufFile::open(&p)?;
    let e = f.dequantize("t.q6_k").unwrap_err();
    assert!(
        matches!(e, Error::UnsupportedTensorType { type_id: 99, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("t.q6_k"), "{e}");
    let e = f.dequantize("t.nope").unwrap_err().to_string();
    assert!(e.contains("missing tensor t.nope"), "{e}");
    Ok(())
}

#[derive(serde::Deserialize)]
struct Expected {
    shape: Vec<usize>,
    first_row: Vec<f64>,
    row_sums: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct WeightsFixture {
    tensors: std::collections::BTreeMap<String, Expected>,
}

#[test]
fn smollm2_tensors_match_transformers() -> Result<()> {
    let Some(path) = common::smollm2() else {
        return Ok(());
    };
    let f = GgufFile::open(&path)?;
    assert_eq!(f.get_str("general.architecture")?, "llama");
    let fixture: WeightsFixture = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("smollm2_weights.json")).unwrap(),
    )
    .unwrap();
    // Config from the GGUF metadata (values as transformers' config for this file).
    let cfg = bioalign_models::config::ModelConfig::from_gguf(&f)?;
    assert_eq!(
        (
            cfg.vocab_size,
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_hidden_layers
        ),
        (49152, 576, 1536, 30)
    );
    assert_eq!(
        (cfg.num_attention_heads, cfg.n_kv_heads(), cfg.head_dim()),
        (9, 3, 64)
    );
    assert_eq!(cfg.rope_theta(), 100000.0);
    assert!((cfg.rms_norm_eps - 1e-5).abs() < 1e-12);
    assert!(cfg.tie_word_embeddings, "no output.weight: tied");
    assert_eq!(
        (cfg.bos_token_id, cfg.eos_ids(), cfg.pad_token_id),
        (Some(1), vec![2], Some(2))
    );
    let n_head = f.get_u64("llama.attention.head_count")? as usize;
    let n_kv = f.get_u64("llama.attention.head_count_kv")? as usize;
    for (name, want) in &fixture.tensors {
        let info = f.tensor(name)?;
        assert_eq!(&info.shape(), &want.shape, "{name}");
        let mut w = f.dequantize(name)?;
        let cols = *want.shape.last().unwrap();
        let rows = w.len() / cols;
        if name.ends_with("attn_q.weight") {
            w = reverse_qk_permutation(&w, rows, cols, n_head);
        } else if name.ends_with("attn_k.weight") {
            w = reverse_qk_permutation(&w, rows, cols, n_kv);
        }
        let first: Vec<f32> = want.first_row.iter().map(|&x| x as f32).collect();
        let d = max_abs_diff(&w[..cols], &first);
        assert!(d <= 1e-6, "{name}: first row differs by {d}");
        for (r, &s) in want.row_sums.iter().enumerate() {
            let got: f64 = w[r * cols..(r + 1) * cols]
                .iter()
                .map(|&x| f64::from(x))
                .sum();
            assert!((got - s).abs() <= 1e-4, "{name}: row {r} sum {got} vs {s}");
        }
    }
    Ok(())
}
