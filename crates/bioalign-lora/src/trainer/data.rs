//! Tokenized examples, batching with padding, loss masks and the deterministic
//! data order (shuffled per epoch from the seed, optionally grouped by length).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// One supervised example, already tokenized with its template: the loss is taken
/// over `response` (response-only loss) or over everything after the first token
/// (full-text loss). `response` should end with the EOS token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Template and instruction tokens (with BOS).
    pub prompt: Vec<u32>,
    /// Answer tokens (with EOS).
    pub response: Vec<u32>,
}

impl Example {
    fn len(&self, max_len: usize) -> usize {
        (self.prompt.len() + self.response.len()).min(max_len)
    }
}

/// Which tokens the loss is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LossMode {
    /// Only the response tokens (the default); the LM head runs only there.
    Response,
    /// Every token after the first (the reference study's setting).
    Full,
}

/// A right-padded micro-batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Rows.
    pub batch: usize,
    /// Padded length.
    pub seq: usize,
    /// Token ids `[batch, seq]` row-major.
    pub ids: Vec<i64>,
    /// `true` at real tokens, `[batch, seq]`.
    pub mask: Vec<bool>,
    /// Flat positions `row * seq + t` whose next token is supervised.
    pub positions: Vec<i64>,
    /// The target (next token) at each of `positions`.
    pub targets: Vec<i64>,
    /// Real (non-pad) tokens in the batch.
    pub tokens: usize,
}

/// Pads `examples` to their longest (after truncation to `max_len`) and lists the
/// supervised positions under `mode`.
pub fn make_batch(examples: &[&Example], mode: LossMode, max_len: usize, pad_id: u32) -> Batch {
    let seq = examples
        .iter()
        .map(|e| e.len(max_len))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut b = Batch {
        batch: examples.len(),
        seq,
        ids: vec![pad_id as i64; examples.len() * seq],
        mask: vec![false; examples.len() * seq],
        positions: Vec::new(),
        targets: Vec::new(),
        tokens: 0,
    };
    for (row, e) in examples.iter().enumerate() {
        let toks: Vec<u32> = e
            .prompt
            .iter()
            .chain(&e.response)
            .copied()
            .take(max_len)
            .collect();
        b.tokens += toks.len();
        for (t, &tok) in toks.iter().enumerate() {
            b.ids[row * seq + t] = tok as i64;
            b.mask[row * seq + t] = true;
        }
        for t in 0..toks.len().saturating_sub(1) {
            let supervised = match mode {
                LossMode::Full => true,
                LossMode::Response => t + 1 >= e.prompt.len(),
            };
            if supervised {
                b.positions.push((row * seq + t) as i64);
                b.targets.push(toks[t + 1] as i64);
            }
        }
    }
    b
}

/// The micro-batches of one epoch as lists of example indices: a shuffle seeded by
/// `(seed, epoch)`; with `group_by_length`, mega-batches of 50 micro-batches are
/// sorted by length (longest first) before cutting, as transformers'
/// `LengthGroupedSampler`, so rows of a batch have similar lengths.
pub fn epoch_order(
    lens: &[usize],
    batch: usize,
    seed: u64,
    epoch: usize,
    group_by_length: bool,
) -> Vec<Vec<usize>> {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut idx: Vec<usize> = (0..lens.len()).collect();
    idx.shuffle(&mut rng);
    if group_by_length {
        for mega in idx.chunks_mut(batch * 50) {
            mega.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
        }
    }
    idx.chunks(batch).map(|c| c.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_positions_and_padding() {
        let a = Example {
            prompt: vec![1, 2, 3],
            response: vec![4, 5],
        };
        let b = Example {
            prompt: vec![1, 2],
            response: vec![6],
        };
        let bt = make_batch(&[&a, &b], LossMode::Response, 128, 0);
        assert_eq!(bt.seq, 5);
        assert_eq!(bt.ids, vec![1, 2, 3, 4, 5, 1, 2, 6, 0, 0]);
        // Row 0 predicts 4 at t=2 and 5 at t=3; row 1 predicts 6 at t=1.
        assert_eq!(bt.positions, vec![2, 3, 6]);
        assert_eq!(bt.targets, vec![4, 5, 6]);
        let full = make_batch(&[&a, &b], LossMode::Full, 128, 0);
        assert_eq!(full.positions, vec![0, 1, 2, 3, 5, 6]);
        let cut = make_batch(&[&a], LossMode::Response, 4, 0);
        assert_eq!((cut.seq, cut.targets.clone()), (4, vec![4]));
    }

    #[test]
    fn order_is_seeded_and_grouped() {
        let lens: Vec<usize> = (0..20).map(|i| (i * 7) % 13).collect();
        let a = epoch_order(&lens, 4, 42, 0, true);
        assert_eq!(a, epoch_order(&lens, 4, 42, 0, true));
        assert_ne!(a, epoch_order(&lens, 4, 42, 1, true));
        let flat: Vec<usize> = a.concat();
        assert!(flat.windows(2).all(|w| lens[w[0]] >= lens[w[1]]));
        let mut sorted = flat.clone();
        sorted.sort();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
    }
}
