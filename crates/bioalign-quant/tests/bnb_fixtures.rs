//! Bit-exactness against bitsandbytes 0.50.2's CPU path.
//!
//! Golden values from `scripts/fixtures/gen_nf4_bnb.py` (bitsandbytes 0.50.2,
//! torch, AVX-512 CPU), committed under `tests/fixtures/`.

use bioalign_quant::blockwise::quantize_4bit;
use bioalign_quant::double_quant::{NestedScales, torch_mean_f32};
use bioalign_quant::dynamic_map::DYNAMIC_MAP;
use bioalign_quant::kernels::{self, Isa, Nf4Weight};
use bioalign_quant::{BlockSize, Error, QuantType};
use serde_json::Value;
use sha2::{Digest, Sha256};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn load(name: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn bytes(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(v[key].as_str().unwrap_or_else(|| panic!("missing {key}"))).expect("hex")
}

fn f32s(v: &Value, key: &str) -> Vec<f32> {
    bytes(v, key)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn u16s(v: &Value, key: &str) -> Vec<u16> {
    bytes(v, key)
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The generator's `formula` (exact in f64, rounded once to f32).
fn formula(n: usize, scale: f64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = (i.wrapping_mul(2_654_435_761)) % (1u64 << 32);
            ((h as f64 / (1u64 << 32) as f64 - 0.5) * scale) as f32
        })
        .collect()
}

/// Same value: identical bits, or both zero (bitsandbytes' generic path has
/// +0.0 where its C++ table has -0.0), or both NaN.
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0) || (a.is_nan() && b.is_nan())
}

fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            same(*g, *w),
            "{what}[{i}]: got {g:e} ({:#x}), bitsandbytes {w:e} ({:#x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

#[test]
fn codebooks_match_bitsandbytes() -> TestResult {
    let books = load("codebooks.json")?;
    assert_same(
        "nf4",
        &QuantType::Nf4.quant_map(),
        &f32s(&books, "nf4_quant_map"),
    );
    let fp4 = f32s(&books, "fp4_quant_map");
    let ours = QuantType::Fp4.quant_map();
    for (i, (a, b)) in ours.iter().zip(&fp4).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "fp4[{i}]");
    }
    let dynamic = f32s(&books, "dynamic_map");
    for (i, (a, b)) in DYNAMIC_MAP.iter().zip(&dynamic).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "dynamic[{i}]");
    }
    Ok(())
}

#[test]
fn quantize_dequantize_bit_exact_for_every_case() -> TestResult {
    let meta = load("bnb_cases.json")?;
    let threads = meta["torch_threads"].as_u64().ok_or("torch_threads")? as usize;
    let lanes = meta["torch_lanes"].as_u64().ok_or("torch_lanes")? as usize;
    let cases = meta["cases"].as_array().ok_or("cases")?;
    assert!(cases.len() >= 10);
    let mut checked = 0;
    for c in cases {
        let name = c["name"].as_str().ok_or("name")?;
        let shape: Vec<usize> = c["shape"]
            .as_array()
            .ok_or("shape")?
            .iter()
            .map(|d| d.as_u64().unwrap_or(0) as usize)
            .collect();
        let n: usize = shape.iter().product();
        let bs = BlockSize::new(c["blocksize"].as_u64().ok_or("blocksize")? as usize)?;
        let qt = QuantType::parse(c["quant_type"].as_str().ok_or("quant_type")?)?;
        let input = match c.get("input") {
            Some(_) => f32s(c, "input"),
            None => formula(n, c["formula_scale"].as_f64().ok_or("formula_scale")?),
        };
        assert_eq!(input.len(), n, "{name}");

        if !c["finite"].as_bool().unwrap_or(true) {
            // Policy: reject. bitsandbytes stores a non-finite absmax (inf or NaN)
            // for the block, and its dequantized block is all NaN / inf.
            let err = quantize_4bit(&input, bs, qt).unwrap_err();
            assert!(matches!(err, Error::NonFinite { .. }), "{name}: {err}");
            assert!(
                f32s(c, "absmax").iter().any(|a| !a.is_finite()),
                "{name}: bnb's scale"
            );
            continue;
        }

        let (packed, absmax) = quantize_4bit(&input, bs, qt)?;
        let nested = NestedScales::compress_with(&absmax, lanes, threads);
        let expanded = nested.expand();
        if c.get("packed").is_some() {
            assert_eq!(
                hex::encode(&packed),
                c["packed"].as_str().ok_or("packed")?,
                "{name}: packed"
            );
            assert_same(&format!("{name}: absmax"), &absmax, &f32s(c, "absmax"));
            assert_eq!(
                nested.codes,
                bytes(c, "nested_codes"),
                "{name}: nested codes"
            );
            assert_same(
                &format!("{name}: expanded absmax"),
                &expanded,
                &f32s(c, "expanded_absmax"),
            );
        } else {
            assert_eq!(
                sha(&packed),
                c["packed_sha256"].as_str().ok_or("sha")?,
                "{name}: packed"
            );
            assert_eq!(
                sha(&f32_bytes(&absmax)),
                c["absmax_sha256"].as_str().ok_or("sha")?,
                "{name}: absmax"
            );
            assert_eq!(
                sha(&nested.codes),
                c["nested_codes_sha256"].as_str().ok_or("sha")?,
                "{name}: nested codes"
            );
            let e = sha(&f32_bytes(&expanded));
            assert_eq!(
                e,
                c["expanded_absmax_sha256"].as_str().ok_or("sha")?,
                "{name}: expanded"
            );
        }
        assert_same(
            &format!("{name}: nested_absmax"),
            &nested.nested_absmax,
            &f32s(c, "nested_absmax"),
        );
        assert_same(
            &format!("{name}: offset"),
            &[nested.offset],
            &f32s(c, "nested_offset"),
        );
        assert_eq!(
            nested.offset.to_bits(),
            torch_mean_f32(&absmax, lanes, threads).to_bits()
        );

        let (rows, cols) = match shape.as_slice() {
            [c] => (1, *c),
            [r, c] => (*r, *c),
            _ => return Err(format!("{name}: rank").into()),
        };
        for (label, scales) in [("plain", &absmax), ("nested", &expanded)] {
            let w = Nf4Weight::new(&packed, scales, rows, cols, bs, qt)?;
            for isa in Isa::all_available() {
                let mut out = vec![0f32; n];
                kernels::dequantize_f32(&w, &mut out, isa, 2)?;
                let mut out16 = vec![half::bf16::ZERO; n];
                kernels::dequantize_bf16(&w, &mut out16, isa, 2)?;
                let what = format!("{name}: dequant {label} {isa:?}");
                if c.get("input").is_none() {
                    if label == "plain" {
                        let key = format!("dequant_{label}_f32_sha256");
                        assert_eq!(
                            sha(&f32_bytes(&out)),
                            c[key.as_str()].as_str().ok_or("sha")?,
                            "{what}"
                        );
                    }
                    continue;
                }
                // Where bitsandbytes' C++ AVX-512 kernel is wrong (rows not a
                // multiple of the block; subnormal scales), compare with its
                // generic torch path, which is what the format means.
                let generic = format!("dequant_{label}_f32_generic");
                let key = if c.get(generic.as_str()).is_some() {
                    generic
                } else {
                    format!("dequant_{label}_f32")
                };
                assert_same(&what, &out, &f32s(c, &key));
                let key16 = key.replace("f32", "bf16");
                let want16 = u16s(c, &key16);
                for (i, (g, w)) in out16.iter().zip(&want16).enumerate() {
                    let (gf, wf) = (g.to_f32(), half::bf16::from_bits(*w).to_f32());
                    assert!(same(gf, wf), "{what} bf16[{i}]: {gf} vs {wf}");
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} finite cases");
    Ok(())
}
