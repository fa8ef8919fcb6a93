//! Greedy and sampled generation with a KV cache, stopping on EOS, following transformers'
//! `generate` (left padding, position ids counted from each sequence's first real token,
//! finished sequences fed the pad token).

use burn::tensor::backend::Backend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::model::{CausalLm, KvCache, Logits};
use crate::tokenizer::{PaddingSide, pad_batch};

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// The most likely token (ties: the lowest id, as `torch.argmax`).
    Greedy,
    /// Sampled from `softmax(logits / temperature)`, restricted to the `top_k` most likely
    /// (0 = all) and the smallest set with probability >= `top_p`.
    Sample {
        /// Softmax temperature (> 0).
        temperature: f32,
        /// Keep this many candidates (0 = no limit).
        top_k: usize,
        /// Nucleus probability (1 = no limit).
        top_p: f32,
        /// Seed of the ChaCha8 generator.
        seed: u64,
    },
}

/// Generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// At most this many new tokens per sequence.
    pub max_new_tokens: usize,
    /// Greedy or sampled.
    pub sampling: Sampling,
    /// Stop a sequence after any of these ids (defaults to the config's `eos_token_id`).
    pub eos_ids: Vec<u32>,
    /// Fed to finished sequences and used for left padding.
    pub pad_id: u32,
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

fn sample(row: &[f32], temperature: f32, top_k: usize, top_p: f32, rng: &mut ChaCha8Rng) -> u32 {
    let mut cand: Vec<(u32, f32)> = row
        .iter()
        .enumerate()
        .map(|(i, &x)| (i as u32, x / temperature))
        .collect();
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if top_k > 0 {
        cand.truncate(top_k);
    }
    let max = cand[0].1;
    let mut probs: Vec<f32> = cand.iter().map(|c| (c.1 - max).exp()).collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    let mut keep = probs.len();
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if acc >= top_p {
            keep = i + 1;
            break;
        }
    }
    let total: f32 = probs[..keep].iter().sum();
    let mut u = rng.random::<f32>() * total;
    for (i, p) in probs[..keep].iter().enumerate() {
        if u < *p {
            return cand[i].0;
        }
        u -= p;
    }
    cand[keep - 1].0
}

impl<B: Backend> CausalLm<B> {
    /// Continues each of `prompts` (token ids, at least one each); returns the new ids of
    /// each, ending with the EOS id when one was produced.
    pub fn generate(&self, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Result<Vec<Vec<u32>>> {
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(Error::Input {
                message: format!("prompt {i} is empty"),
            });
        }
        if let Sampling::Sample {
            temperature, top_p, ..
        } = opts.sampling
            && !(temperature > 0.0 && top_p > 0.0)
        {
            return Err(Error::Input {
                message: format!("temperature {temperature} and top_p {top_p} must be positive"),
            });
        }
        let n = prompts.len();
        let mut out = vec![Vec::new(); n];
        if n == 0 || opts.max_new_tokens == 0 {
            return Ok(out);
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
        let mut cache = KvCache::new(self.n_layers(), n);
        let mut rng = match opts.sampling {
            Sampling::Sample { seed, .. } => ChaCha8Rng::seed_from_u64(seed),
            Sampling::Greedy => ChaCha8Rng::seed_from_u64(0),
        };
        let mut fed = self.forward_at(
            &batch.ids,
            Some(&batch.attention_mask),
            Some(&positions),
            n,
            Some(&mut cache),
            Logits::Last,
            false,
        )?;
        let mut done = vec![false; n];
        let vocab = self.config.vocab_size;
        for step in 0..opts.max_new_tokens {
            let logits = fed
                .logits
                .take()
                .map(|l| l.into_data().to_vec::<f32>())
                .transpose()
                .map_err(|e| Error::Input {
                    message: format!("reading logits: {e:?}"),
                })?
                .unwrap_or_default();
            let mut next = Vec::with_capacity(n);
            for b in 0..n {
                let row = &logits[b * vocab..(b + 1) * vocab];
                let tok = if done[b] {
                    opts.pad_id
                } else {
                    let t = match &opts.sampling {
                        Sampling::Greedy => argmax(row),
                        Sampling::Sample {
                            temperature,
                            top_k,
                            top_p,
                            ..
                        } => sample(row, *temperature, *top_k, *top_p, &mut rng),
                    };
                    out[b].push(t);
                    if opts.eos_ids.contains(&t) {
                        done[b] = true;
                    }
                    t
                };
                next.push(tok);
            }
            if done.iter().all(|&d| d) || step + 1 == opts.max_new_tokens {
                break;
            }
            let pos: Vec<u32> = next_pos.clone();
            next_pos.iter_mut().for_each(|p| *p += 1);
            let mask = vec![1u32; n];
            fed = self.forward_at(
                &next,
                Some(&mask),
                Some(&pos),
                n,
                Some(&mut cache),
                Logits::Last,
                false,
            )?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, -1.0]), 1);
    }

    #[test]
    fn sampling_respects_top_k_and_seed() {
        let row = [0.0, 5.0, 4.9, -3.0, 1.0];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let draws: Vec<u32> = (0..200)
            .map(|_| sample(&row, 1.0, 2, 1.0, &mut rng))
            .collect();
        assert!(draws.iter().all(|&t| t == 1 || t == 2));
        assert!(draws.contains(&1) && draws.contains(&2));
        let mut a = ChaCha8Rng::seed_from_u64(3);
        let mut b = ChaCha8Rng::seed_from_u64(3);
        let x: Vec<u32> = (0..20).map(|_| sample(&row, 0.7, 0, 0.9, &mut a)).collect();
        let y: Vec<u32> = (0..20).map(|_| sample(&row, 0.7, 0, 0.9, &mut b)).collect();
        assert_eq!(x, y);
        // A tiny top_p keeps only the best token.
        assert!((0..50).all(|_| sample(&row, 1.0, 0, 1e-6, &mut a) == 1));
    }
}
