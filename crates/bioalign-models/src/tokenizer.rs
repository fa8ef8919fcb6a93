//! Tokenizers as the `tokenizers` crate runs them: from `tokenizer.json` (+
//! `tokenizer_config.json` for special tokens and padding side), or rebuilt from a GGUF
//! file's gpt2-style BPE metadata the way transformers does (`integrations/gguf/
//! gguf_tokenizer_mapping.py`: byte-level BPE, control tokens as special added tokens,
//! user-defined ones as plain added tokens, llama.cpp's pre-tokenizer split where known).

use std::path::Path;

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// Which side padding goes on in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingSide {
    /// Pad after the text (Hugging Face's default).
    Right,
    /// Pad before the text (what generation wants).
    Left,
}

/// A padded batch of token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// `[batch, seq_len]` row-major ids, padded with the pad id.
    pub ids: Vec<u32>,
    /// `[batch, seq_len]` row-major: 1 for a real token, 0 for padding.
    pub attention_mask: Vec<u32>,
    /// Number of sequences.
    pub batch: usize,
    /// Padded length.
    pub seq_len: usize,
}

/// A tokenizer with its special tokens and padding side.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    source_name: String,
    /// Beginning-of-sequence token.
    pub bos_token: Option<String>,
    /// End-of-sequence token.
    pub eos_token: Option<String>,
    /// Padding token.
    pub pad_token: Option<String>,
    /// Unknown token.
    pub unk_token: Option<String>,
    /// Where [`TextTokenizer::encode_batch`] pads.
    pub padding_side: PaddingSide,
}

/// llama.cpp pre-tokenizer names whose split regex transformers applies (the llama-3 one).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_PRE: &[&str] = &[
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "dbrx",
    "smaug-bpe",
];

/// GPT-2's reversible byte -> printable character table (`bytes_to_unicode`).
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable =
            (b'!'..=b'~').contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('?')
        };
    }
    table
}

fn tok_err(source_name: &str, message: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        source_name: source_name.to_string(),
        message: message.to_string(),
    }
}

impl TextTokenizer {
    /// Builds the tokenizer a GGUF file describes (`tokenizer.ggml.model` = `gpt2`).
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let source_name = f.path().display().to_string();
        let model = f.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(tok_err(
                &source_name,
                format!("tokenizer.ggml.model {model} not supported (gpt2 byte-level BPE)"),
            ));
        }
        let tokens = f.get_str_array("tokenizer.ggml.tokens")?;
        let merges = f.get_str_array("tokenizer.ggml.merges")?;
        let types: Vec<u64> = match f.metadata().get("tokenizer.ggml.token_type") {
            None => Vec::new(),
            Some(_) => f
                .get_array("tokenizer.ggml.token_type")?
                .iter()
                .map(|v| v.as_u64().unwrap_or(1))
                .collect(),
        };
        let spelling = bytes_to_unicode();
        let alphabet: std::collections::HashSet<char> = spelling.iter().copied().collect();
        let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let spelled = if in_alphabet(t) {
                    t.to_string()
                } else {
                    t.bytes().map(|b| spelling[b as usize]).collect()
                };
                (spelled, i as u32)
            })
            .collect();
        let merges = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| tok_err(&source_name, format!("merge #{i} {m:?} has no space")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| tok_err(&source_name, e))?;
        let mut tk = Tokenizer::new(bpe);
        let pre = f.get_str("tokenizer.ggml.pre").unwrap_or("default");
        if LLAMA3_PRE.contains(&pre) {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_SPLIT.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| tok_err(&source_name, e))?;
            tk.with_pre_tokenizer(Some(Sequence::new(vec![
                PreTokenizerWrapper::Split(split),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
            ])));
        } else {
            tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        }
        tk.with_decoder(Some(ByteLevel::default()));

        let token_of = |key: &str| -> Result<Option<(String, u32)>> {
            match f.metadata().get(key) {
                None => Ok(None),
                Some(_) => {
                    let id = f.get_u64(key)? as usize;
                    let t = tokens.get(id).ok_or_else(|| {
                        tok_err(
                            &source_name,
                            format!("{key} = {id} is past the {} tokens", tokens.len()),
                        )
                    })?;
                    Ok(Some((t.to_string(), id as u32)))
                }
            }
        };
        let bos = token_of("tokenizer.ggml.bos_token_id")?;
        let eos = token_of("tokenizer.ggml.eos_token_id")?;
        let flag = |key: &str| {
            matches!(
                f.metadata().get(key),
                Some(crate::gguf::GgufValue::Bool(true))
            )
        };
        let mut single = String::new();
        let mut specials = Vec::new();
        if let (true, Some((t, id))) = (flag("tokenizer.ggml.add_bos_token"), &bos) {
            single.push_str(&format!("{t} "));
            specials.push((t.clone(), *id));
        }
        single.push_str("$A");
        if let (true, Some((t, id))) = (flag("tokenizer.ggml.add_eos_token"), &eos) {
            single.push_str(&format!(" {t}"));
            specials.push((t.clone(), *id));
        }
        let post = TemplateProcessing::builder()
            .try_single(single.as_str())
            .map_err(|e| tok_err(&source_name, e))?
            .special_tokens(specials)
            .build()
            .map_err(|e| tok_err(&source_name, e))?;
        tk.with_post_processor(Some(post));

        // 3 = CONTROL (special, and only when spelled in the byte alphabet), 4 = USER_DEFINED.
        let control: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|&(t, &ty)| ty == 3 && in_alphabet(t))
            .map(|(t, _)| AddedToken::from(t.to_string(), true).normalized(false))
            .collect();
        tk.add_special_tokens(&control);
        let user: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|&(t, &ty)| ty == 4 && in_alphabet(t))
            .map(|(t, _)| AddedToken::from(t.to_string(), false).normalized(false))
            .collect();
        tk.add_tokens(&user);

        Ok(Self {
            inner: tk,
            bos_token: bos.map(|b| b.0),
            eos_token: eos.map(|e| e.0),
            pad_token: token_of("tokenizer.ggml.padding_token_id")?.map(|p| p.0),
            unk_token: token_of("tokenizer.ggml.unknown_token_id")?.map(|u| u.0),
            padding_side: PaddingSide::Right,
            source_name,
        })
    }

    /// Loads `dir/tokenizer.json` and, if present, `dir/tokenizer_config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config = dir.join("tokenizer_config.json");
        Self::from_files(
            dir.join("tokenizer.json"),
            config.exists().then_some(config.as_path()),
        )
    }

    /// Loads a `tokenizer.json`, with special tokens and padding side from a
    /// `tokenizer_config.json` when given. The post-processor in `tokenizer.json` decides
    /// whether BOS/EOS are added (as the `tokenizers` library does).
    pub fn from_files(tokenizer_json: impl AsRef<Path>, config: Option<&Path>) -> Result<Self> {
        let path = tokenizer_json.as_ref();
        let source_name = path.display().to_string();
        if !path.exists() {
            return Err(Error::Io {
                op: "open",
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let inner = Tokenizer::from_file(path).map_err(|e| tok_err(&source_name, e))?;
        let mut t = Self {
            inner,
            source_name,
            bos_token: None,
            eos_token: None,
            pad_token: None,
            unk_token: None,
            padding_side: PaddingSide::Right,
        };
        if let Some(cfg) = config {
            let text = std::fs::read_to_string(cfg).map_err(crate::error::io_err("read", cfg))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| Error::Json {
                    path: cfg.to_path_buf(),
                    source,
                })?;
            let token = |key: &str| -> Result<Option<String>> {
                match v.get(key) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                    Some(o) => match o.get("content").and_then(|c| c.as_str()) {
                        Some(s) => Ok(Some(s.to_string())),
                        None => Err(tok_err(
                            &cfg.display().to_string(),
                            format!("{key} is neither a string nor {{\"content\": ...}}"),
                        )),
                    },
                }
            };
            t.bos_token = token("bos_token")?;
            t.eos_token = token("eos_token")?;
            t.pad_token = token("pad_token")?;
            t.unk_token = token("unk_token")?;
            t.padding_side = match v.get("padding_side").and_then(|s| s.as_str()) {
                None | Some("right") => PaddingSide::Right,
                Some("left") => PaddingSide::Left,
                Some(other) => {
                    return Err(tok_err(
                        &cfg.display().to_string(),
                        format!("padding_side {other:?} is neither left nor right"),
                    ));
                }
            };
            for (name, tok) in [
                ("bos_token", &t.bos_token),
                ("eos_token", &t.eos_token),
                ("pad_token", &t.pad_token),
            ] {
                if let Some(tok) = tok
                    && t.inner.token_to_id(tok).is_none()
                {
                    return Err(tok_err(
                        &cfg.display().to_string(),
                        format!(
                            "{name} {tok:?} is not in the vocabulary of {}",
                            t.source_name
                        ),
                    ));
                }
            }
        }
        Ok(t)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `token`, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The BOS id.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_token.as_deref().and_then(|t| self.token_id(t))
    }

    /// The EOS id.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_id(t))
    }

    /// The padding id: the pad token, else EOS, else 0 (padded positions are masked anyway).
    pub fn pad_id(&self) -> u32 {
        self.pad_token
            .as_deref()
            .and_then(|t| self.token_id(t))
            .or(self.eos_id())
            .unwrap_or(0)
    }

    /// Token ids of `text`, with the special tokens the post-processor adds when
    /// `add_special_tokens`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| tok_err(&self.source_name, e))
    }

    /// Encodes `texts` (with special tokens), pads them to the longest on
    /// [`TextTokenizer::padding_side`] and returns ids and attention mask.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<EncodedBatch> {
        let seqs = texts
            .iter()
            .map(|t| self.encode(t, true))
            .collect::<Result<Vec<_>>>()?;
        Ok(pad_batch(&seqs, self.pad_id(), self.padding_side))
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| tok_err(&self.source_name, e))
    }
}

/// Pads `seqs` to the longest with `pad_id` on `side`.
pub fn pad_batch(seqs: &[Vec<u32>], pad_id: u32, side: PaddingSide) -> EncodedBatch {
    let seq_len = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(seqs.len() * seq_len);
    let mut attention_mask = Vec::with_capacity(seqs.len() * seq_len);
    for s in seqs {
        let pad = seq_len - s.len();
        if side == PaddingSide::Left {
            ids.extend(std::iter::repeat_n(pad_id, pad));
            attention_mask.extend(std::iter::repeat_n(0, pad));
        }
        ids.extend_from_slice(s);
        attention_mask.extend(std::iter::repeat_n(1, s.len()));
        if side == PaddingSide::Right {
            ids.extend(std::iter::repeat_n(pad_id, pad));
            attention_mask.extend(std::iter::repeat_n(0, pad));
        }
    }
    EncodedBatch {
        ids,
        attention_mask,
        batch: seqs.len(),
        seq_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        let t = bytes_to_unicode();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'A' as usize], 'A');
        let distinct: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn padding_sides() {
        let b = pad_batch(&[vec![5, 6, 7], vec![8]], 0, PaddingSide::Left);
        assert_eq!(b.ids, vec![5, 6, 7, 0, 0, 8]);
        assert_eq!(b.attention_mask, vec![1, 1, 1, 0, 0, 1]);
        let b = pad_batch(&[vec![5, 6, 7], vec![8]], 9, PaddingSide::Right);
        assert_eq!(b.ids, vec![5, 6, 7, 8, 9, 9]);
        assert_eq!(b.attention_mask, vec![1, 1, 1, 1, 0, 0]);
    }
}
