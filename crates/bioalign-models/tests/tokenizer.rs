//! Tokenizer parity. Expected ids from `scripts/fixtures/gen_tokenizer.py`: transformers 5.x
//! `AutoTokenizer.from_pretrained(dir, gguf_file=...)` for SmolLM2, and the HF `tokenizers`
//! library (`Tokenizer.from_file`) for the Mistral and Phi-3 `tokenizer.json` in
//! `../shared/reference/tokenizers/`.

mod common;

use std::path::PathBuf;

use bioalign_models::Result;
use bioalign_models::gguf::GgufFile;
use bioalign_models::tokenizer::{PaddingSide, TextTokenizer};

#[derive(serde::Deserialize)]
struct Ids {
    ctd: Vec<Vec<u32>>,
    extra: Vec<Vec<u32>>,
}

#[derive(serde::Deserialize)]
struct Fixture {
    ctd_first: Vec<String>,
    ctd_last: String,
    extra_texts: Vec<String>,
    smollm2: Ids,
    mistral: Ids,
    phi3: Ids,
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(common::fixtures().join("tokenizer_ids.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The CTD sentences of the fixture rule: every 34th data row, names trimmed, rows missing
/// either name skipped, "{gene} is associated with {disease}", the first 1,000.
fn ctd_sentences() -> Vec<String> {
    let path = bioalign_io::data_mirror().join("ctd/CTD_curated_genes_diseases.csv");
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .comment(Some(b'#'))
        .flexible(true)
        .from_path(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.unwrap();
        if i % 34 != 0 {
            continue;
        }
        let (gene, disease) = (row[0].trim(), row[2].trim());
        if gene.is_empty() || disease.is_empty() {
            continue;
        }
        out.push(format!("{gene} is associated with {disease}"));
        if out.len() == 1000 {
            break;
        }
    }
    out
}

fn check(name: &str, tok: &TextTokenizer, texts: &[String], want: &[Vec<u32>]) -> Result<()> {
    assert_eq!(texts.len(), want.len());
    let mut bad = 0;
    for (t, w) in texts.iter().zip(want) {
        let got = tok.encode(t, true)?;
        if &got != w {
            bad += 1;
            if bad <= 3 {
                eprintln!("{name}: {t:?}\n  got  {got:?}\n  want {w:?}");
            }
        }
    }
    assert_eq!(bad, 0, "{name}: {bad} of {} sentences differ", texts.len());
    Ok(())
}

fn shared_tokenizer(folder: &str) -> PathBuf {
    bioalign_io::workspace_root()
        .join("../shared/reference/tokenizers")
        .join(folder)
}

#[test]
fn ctd_sentences_match_the_fixture_rule() {
    let s = ctd_sentences();
    let f = fixture();
    assert_eq!(s.len(), 1000);
    assert_eq!(&s[..3], &f.ctd_first[..]);
    assert_eq!(s[999], f.ctd_last);
}

#[test]
fn mistral_tokenizer_json_matches_hf_tokenizers() -> Result<()> {
    let f = fixture();
    let tok = TextTokenizer::from_dir(shared_tokenizer("mistral-7b-instruct-v0.3"))?;
    assert_eq!(tok.bos_token.as_deref(), Some("<s>"));
    assert_eq!(tok.eos_token.as_deref(), Some("</s>"));
    assert_eq!(tok.pad_token.as_deref(), Some("[control_768]"));
    assert_eq!(tok.padding_side, PaddingSide::Right);
    check("mistral ctd", &tok, &ctd_sentences(), &f.mistral.ctd)?;
    check("mistral extra", &tok, &f.extra_texts, &f.mistral.extra)
}

#[test]
fn phi3_tokenizer_json_matches_hf_tokenizers() -> Result<()> {
    let f = fixture();
    let tok = TextTokenizer::from_dir(shared_tokenizer("phi-3-mini-4k-instruct"))?;
    assert_eq!(tok.eos_token.as_deref(), Some("<|endoftext|>"));
    assert_eq!(tok.pad_token.as_deref(), Some("<|placeholder6|>"));
    assert_eq!(tok.pad_id(), tok.token_id("<|placeholder6|>").unwrap());
    check("phi3 ctd", &tok, &ctd_sentences(), &f.phi3.ctd)?;
    check("phi3 extra", &tok, &f.extra_texts, &f.phi3.extra)
}

#[test]
fn smollm2_gguf_tokenizer_matches_transformers() -> Result<()> {
    let Some(path) = common::smollm2() else {
        return Ok(());
    };
    let f = fixture();
    let gguf = GgufFile::open(&path)?;
    let tok = TextTokenizer::from_gguf(&gguf)?;
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_token.as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.eos_token.as_deref(), Some("<|im_end|>"));
    assert_eq!(tok.pad_id(), 2);
    check("smollm2 ctd", &tok, &ctd_sentences(), &f.smollm2.ctd)?;
    check("smollm2 extra", &tok, &f.extra_texts, &f.smollm2.extra)?;
    let ids = tok.encode("TP53 is associated with Li-Fraumeni Syndrome", true)?;
    assert_eq!(
        tok.decode(&ids, false)?,
        "TP53 is associated with Li-Fraumeni Syndrome"
    );
    Ok(())
}

#[test]
fn bad_tokenizer_config_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = shared_tokenizer("phi-3-mini-4k-instruct");
    std::fs::copy(
        src.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"padding_side": "middle"}"#,
    )
    .unwrap();
    let e = TextTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer_config.json") && e.contains("middle"),
        "{e}"
    );
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"pad_token": "<nope>"}"#,
    )
    .unwrap();
    let e = TextTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("pad_token") && e.contains("<nope>"), "{e}");
    let e = TextTokenizer::from_dir(dir.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}
