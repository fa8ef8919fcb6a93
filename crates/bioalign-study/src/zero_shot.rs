//! Zero-shot answers with the reference's prompt (SPEC.md section 3), decided two ways:
//!
//! - the reference's rule: greedy generation of 3 new tokens; predicted true iff the
//!   lower-cased continuation contains `"true"` ([`contains_true`]);
//! - the next-token rule: `score = log p(" true") - log p(" false")` at the first new
//!   position, predicted true iff `score > 0` ([`logprob_says_true`]); the score also
//!   gives a ROC-AUC.
//!
//! Both come from one pass: the first step of greedy decoding computes exactly the
//! next-token distribution the second rule needs, so [`answer_batch`] keeps it. Decoding
//! follows `bioalign_models`' `generate` (left padding, positions counted from each
//! sequence's first real token, finished sequences fed the pad token); the tests check
//! that the tokens are the same as `CausalLm::generate`'s.

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use bioalign_models::model::{CausalLm, KvCache, Logits};
use bioalign_models::tokenizer::{PaddingSide, TextTokenizer, pad_batch};

use crate::error::{Error, Result, invalid};

/// The reference's zero-shot prompt for a statement.
pub fn prompt(text: &str) -> String {
    bioalign_ctd::template::zero_shot_prompt(text)
}

/// The reference's rule: the lower-cased continuation contains `"true"`.
///
/// ```
/// assert!(bioalign_study::contains_true(" True."));
/// assert!(!bioalign_study::contains_true(" False"));
/// assert!(bioalign_study::contains_true("untrue")); // the reference's rule, as it was
/// ```
pub fn contains_true(continuation: &str) -> bool {
    continuation.to_lowercase().contains("true")
}

/// The next-token rule: `log p(" true") > log p(" false")`.
pub fn logprob_says_true(score: f64) -> bool {
    score > 0.0
}

/// One answer word's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerToken {
    /// The text encoded (`" true"` or `" false"`).
    pub text: String,
    /// Its token ids (without special tokens).
    pub ids: Vec<u32>,
    /// The id scored: the only one, or the first when the text takes several tokens.
    pub scored_id: u32,
}

/// The tokens whose log-probabilities are compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerTokens {
    /// `" true"`.
    pub yes: AnswerToken,
    /// `" false"`.
    pub no: AnswerToken,
    /// Both texts are single tokens (else the first tokens are compared, which is only
    /// an approximation of the words' probabilities).
    pub single_token: bool,
}

impl AnswerTokens {
    /// Encodes `" true"` and `" false"` with `tok`.
    ///
    /// Errors: an empty encoding, or both words starting with the same token (the
    /// comparison would always be a tie).
    pub fn new(tok: &TextTokenizer) -> Result<Self> {
        let one = |text: &str| -> Result<AnswerToken> {
            let ids = tok.encode(text, false)?;
            let scored_id = *ids.first().ok_or_else(|| {
                invalid(
                    "answer token",
                    format!("{text:?} encodes to nothing"),
                    "at least one token",
                )
            })?;
            Ok(AnswerToken {
                text: text.to_string(),
                ids,
                scored_id,
            })
        };
        let yes = one(" true")?;
        let no = one(" false")?;
        if yes.scored_id == no.scored_id {
            return Err(invalid(
                "answer tokens",
                format!(
                    "\" true\" and \" false\" both start with token {}",
                    yes.scored_id
                ),
                "different first tokens",
            ));
        }
        let single_token = yes.ids.len() == 1 && no.ids.len() == 1;
        if !single_token {
            tracing::warn!(
                "\" true\" -> {:?}, \" false\" -> {:?}: comparing first tokens only",
                yes.ids,
                no.ids
            );
        }
        Ok(Self {
            yes,
            no,
            single_token,
        })
    }
}

/// Zero-shot answer to one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// New token ids (ending with EOS when one was produced).
    pub ids: Vec<u32>,
    /// The continuation, special tokens skipped.
    pub text: String,
    /// `log p(" true")` at the first new position (natural log, full-vocabulary softmax).
    pub logp_true: f64,
    /// `log p(" false")` at the first new position.
    pub logp_false: f64,
}

impl Answer {
    /// `logp_true - logp_false`.
    pub fn score(&self) -> f64 {
        self.logp_true - self.logp_false
    }

    /// The reference's decision ([`contains_true`]).
    pub fn generated_says_true(&self) -> bool {
        contains_true(&self.text)
    }

    /// The next-token decision ([`logprob_says_true`]).
    pub fn logprob_says_true(&self) -> bool {
        logprob_says_true(self.score())
    }
}

/// Decoding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerOptions {
    /// New tokens per prompt (reference: 3).
    pub max_new_tokens: usize,
    /// Ids that end a sequence.
    pub eos_ids: Vec<u32>,
    /// Pad id (left padding and finished sequences).
    pub pad_id: u32,
}

impl AnswerOptions {
    /// The reference's settings for `model` and `tok`: 3 tokens, the config's and the
    /// tokenizer's EOS ids, the tokenizer's pad id.
    pub fn reference<B: Backend>(model: &CausalLm<B>, tok: &TextTokenizer) -> Self {
        let mut eos_ids = model.config.eos_ids();
        eos_ids.extend(tok.eos_id());
        eos_ids.sort_unstable();
        eos_ids.dedup();
        Self {
            max_new_tokens: 3,
            eos_ids,
            pad_id: tok.pad_id(),
        }
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// `log softmax(row)[ids]` in f64.
pub fn log_probs(row: &[f32], ids: &[u32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + row
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    ids.iter().map(|&i| row[i as usize] as f64 - lse).collect()
}

fn read_logits<B: Backend>(t: burn::tensor::Tensor<B, 3>) -> Result<Vec<f32>> {
    t.into_data().to_vec::<f32>().map_err(|e| {
        Error::Models(bioalign_models::Error::Input {
            message: format!("reading logits: {e:?}"),
        })
    })
}

/// Answers a batch of tokenized prompts: greedy decoding with a KV cache, keeping the
/// first step's log-probabilities of the answer tokens.
pub fn answer_batch<B: Backend>(
    model: &CausalLm<B>,
    tok: &TextTokenizer,
    prompts: &[Vec<u32>],
    answer: &AnswerTokens,
    opts: &AnswerOptions,
) -> Result<Vec<Answer>> {
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(invalid(
            "prompt",
            format!("prompt {i} is empty"),
            "at least one token",
        ));
    }
    if opts.max_new_tokens == 0 {
        return Err(invalid("max_new_tokens", 0, "at least 1"));
    }
    let n = prompts.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let vocab = model.config.vocab_size;
    for id in [answer.yes.scored_id, answer.no.scored_id] {
        if id as usize >= vocab {
            return Err(invalid(
                "answer token",
                id,
                "an id inside the model's vocabulary",
            ));
        }
    }
    let batch = pad_batch(prompts, opts.pad_id, PaddingSide::Left);
    let s = batch.seq_len;
    // transformers: position_ids = cumsum(mask) - 1, padding set to 1.
    let mut positions = Vec::with_capacity(n * s);
    let mut next_pos = vec![0u32; n];
    for (b, next) in next_pos.iter_mut().enumerate() {
        let mut c = 0u32;
        for &m in &batch.attention_mask[b * s..(b + 1) * s] {
            c += m;
            positions.push(if m == 0 { 1 } else { c - 1 });
        }
        *next = c;
    }
    let mut cache = KvCache::new(model.n_layers(), n);
    let mut fed = model.forward_at(
        &batch.ids,
        Some(&batch.attention_mask),
        Some(&positions),
        n,
        Some(&mut cache),
        Logits::Last,
        false,
    )?;
    let mut ids = vec![Vec::new(); n];
    let mut logp = vec![(0.0, 0.0); n];
    let mut done = vec![false; n];
    for step in 0..opts.max_new_tokens {
        let logits = match fed.logits.take() {
            Some(l) => read_logits(l)?,
            None => Vec::new(),
        };
        if logits.len() != n * vocab {
            return Err(invalid("logits", logits.len(), "batch x vocabulary values"));
        }
        let mut next = Vec::with_capacity(n);
        for b in 0..n {
            let row = &logits[b * vocab..(b + 1) * vocab];
            if step == 0 {
                let lp = log_probs(row, &[answer.yes.scored_id, answer.no.scored_id]);
                logp[b] = (lp[0], lp[1]);
            }
            if done[b] {
                next.push(opts.pad_id);
                continue;
            }
            let t = argmax(row);
            ids[b].push(t);
            if opts.eos_ids.contains(&t) {
                done[b] = true;
            }
            next.push(t);
        }
        if done.iter().all(|&d| d) || step + 1 == opts.max_new_tokens {
            break;
        }
        let pos = next_pos.clone();
        next_pos.iter_mut().for_each(|p| *p += 1);
        let mask = vec![1u32; n];
        fed = model.forward_at(
            &next,
            Some(&mask),
            Some(&pos),
            n,
            Some(&mut cache),
            Logits::Last,
            false,
        )?;
    }
    ids.into_iter()
        .zip(logp)
        .map(|(ids, (logp_true, logp_false))| {
            Ok(Answer {
                text: tok.decode(&ids, true)?,
                ids,
                logp_true,
                logp_false,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_decide_as_documented() {
        assert!(contains_true(" TRUE"));
        assert!(contains_true(" true or false"));
        assert!(!contains_true(" False."));
        assert!(!contains_true(""));
        assert!(logprob_says_true(0.1));
        assert!(!logprob_says_true(0.0), "a tie is not true");
        assert!(!logprob_says_true(-2.0));
        let a = Answer {
            ids: vec![],
            text: " False".into(),
            logp_true: -1.0,
            logp_false: -3.0,
        };
        assert_eq!(a.score(), 2.0);
        assert!(a.logprob_says_true() && !a.generated_says_true());
    }

    #[test]
    fn log_probs_are_a_log_softmax() {
        let row = [1.0f32, 2.0, 3.0];
        let lp = log_probs(&row, &[0, 1, 2]);
        let total: f64 = lp.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert!((lp[2] - lp[1] - 1.0).abs() < 1e-12);
        // Large logits do not overflow.
        let lp = log_probs(&[1000.0, 0.0], &[0]);
        assert!(lp[0].abs() < 1e-12);
        assert_eq!(argmax(&[0.0, 2.0, 2.0]), 1);
    }
}
