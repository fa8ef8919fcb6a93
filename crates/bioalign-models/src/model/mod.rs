//! One config-driven decoder for Llama (Touvron et al. 2023), Mistral (Jiang et al. 2023,
//! sliding-window attention) and Phi-3 (Abdin et al. 2024, LongRoPE), matching transformers'
//! `LlamaForCausalLM`, `MistralForCausalLM` and `Phi3ForCausalLM` (eager attention).

mod fused;
mod kernels;
mod layers;
mod lora;
mod parts;
mod rope;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

pub use layers::{
    Attention, DecoderLayer, Mlp, PackedLinear, PackedWeight, Projection, Q8Embedding, RmsNorm,
    TokenEmbedding,
};
pub use rope::Rope;

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// Fewest tokens in each part of a batch split over the cores
/// ([`CausalLm::stack_in_parts`]): below it the products are too small to gain.
const PART_MIN_TOKENS: usize = 64;

/// Added to the attention scores of masked positions (finite, so that a fully masked row of a
/// padding query stays a number).
const MASKED: f32 = -1.0e9;

/// `model`: embeddings, layers and final norm.
#[derive(Module, Debug)]
pub struct DecoderModel<B: Backend> {
    /// `embed_tokens.weight`, `[vocab, hidden]`.
    pub embed_tokens: TokenEmbedding<B>,
    /// `layers`
    pub layers: Vec<DecoderLayer<B>>,
    /// `norm`
    pub norm: RmsNorm<B>,
}

/// A decoder with its LM head (`lm_head`; `None` when tied to `embed_tokens`).
#[derive(Module, Debug)]
pub struct CausalLm<B: Backend> {
    /// `model`
    pub model: DecoderModel<B>,
    /// `lm_head`, absent when `tie_word_embeddings`.
    pub lm_head: Option<Projection<B>>,
    /// The validated config.
    #[module(skip)]
    pub config: ModelConfig,
    /// Rotary tables.
    #[module(skip)]
    pub rope: Rope,
}

/// Which logits [`CausalLm::forward`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// `[b, s, vocab]`.
    All,
    /// `[b, 1, vocab]` at each sequence's last position (the last column of the batch).
    Last,
    /// None (embedding only).
    None,
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct ForwardOutput<B: Backend> {
    /// Logits as asked by [`Logits`].
    pub logits: Option<Tensor<B, 3>>,
    /// The final hidden state after the final norm, `[b, s, hidden]`.
    pub last_hidden: Tensor<B, 3>,
    /// On request, transformers' `hidden_states`: the embeddings, each layer's output but
    /// the last, and the final normed state (`num_layers + 1` tensors `[b, s, hidden]`).
    pub hidden_states: Option<Vec<Tensor<B, 3>>>,
}

/// Keys and values of earlier positions, for incremental decoding.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    /// `[b, len]` row-major: 1 for a real token, 0 for padding, over all cached positions.
    key_mask: Vec<u32>,
    batch: usize,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `n_layers` layers and `batch` sequences.
    pub fn new(n_layers: usize, batch: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
            key_mask: Vec::new(),
            batch,
            len: 0,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The query positions of [`CausalLm::last_hidden_rows`], `c` per sequence: each
/// sequence's distinct positions in increasing order, padded to the most any sequence
/// has by repeating its last one (or position 0); the padding's results are dropped.
struct QueryRows {
    /// Positions per sequence.
    c: usize,
    /// `[batch · c]` positions `t`, sequence by sequence.
    t: Vec<usize>,
    /// For each requested row, its index in `[batch · c]`.
    out: Vec<usize>,
}

impl QueryRows {
    fn new(rows: &[usize], batch: usize, s: usize) -> Self {
        let mut per: Vec<Vec<usize>> = vec![Vec::new(); batch];
        for &r in rows {
            per[r / s].push(r % s);
        }
        for p in &mut per {
            p.sort_unstable();
            p.dedup();
        }
        let c = per.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut t = Vec::with_capacity(batch * c);
        for p in &per {
            let pad = p.last().copied().unwrap_or(0);
            t.extend(p.iter().copied().chain(std::iter::repeat(pad)).take(c));
        }
        let out = rows
            .iter()
            .map(|&r| {
                let b = r / s;
                b * c + per[b].binary_search(&(r % s)).expect("listed above")
            })
            .collect();
        QueryRows { c, t, out }
    }
}

/// The additive attention bias `[b, 1, s, t]` for `s` new queries after `past` cached
/// positions, from the key mask `[b, t]` (1 = real), causality and the sliding window.
pub fn attention_bias(
    key_mask: &[u32],
    batch: usize,
    past: usize,
    s: usize,
    window: Option<usize>,
) -> Vec<f32> {
    let t = past + s;
    assert_eq!(key_mask.len(), batch * t);
    let mut bias = vec![MASKED; batch * s * t];
    for b in 0..batch {
        for q in 0..s {
            let qa = past + q;
            let lo = window.map_or(0, |w| (qa + 1).saturating_sub(w));
            for k in lo..=qa {
                if key_mask[b * t + k] != 0 {
                    bias[(b * s + q) * t + k] = 0.0;
                }
            }
        }
    }
    bias
}

impl<B: Backend> CausalLm<B> {
    /// Number of layers.
    pub fn n_layers(&self) -> usize {
        self.model.layers.len()
    }

    /// The device the weights are on.
    pub fn device(&self) -> B::Device {
        self.model.norm.weight.val().device()
    }

    /// Forward pass over `ids` `[batch, s]` (row-major) with `attention_mask` `[batch, s]`
    /// (1 = real token, 0 = padding; `None` = all real). Positions count from the cache
    /// length (as transformers does without explicit `position_ids`). With a cache, the new
    /// keys/values are appended to it.
    pub fn forward(
        &self,
        ids: &[u32],
        attention_mask: Option<&[u32]>,
        batch: usize,
        cache: Option<&mut KvCache<B>>,
        logits: Logits,
        hidden_states: bool,
    ) -> Result<ForwardOutput<B>> {
        self.forward_at(
            ids,
            attention_mask,
            None,
            batch,
            cache,
            logits,
            hidden_states,
        )
    }

    /// [`CausalLm::forward`] with explicit `positions` `[batch, s]` (transformers'
    /// `position_ids`; generation with left padding counts them from each sequence's first
    /// real token).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_at(
        &self,
        ids: &[u32],
        attention_mask: Option<&[u32]>,
        positions: Option<&[u32]>,
        batch: usize,
        cache: Option<&mut KvCache<B>>,
        logits: Logits,
        hidden_states: bool,
    ) -> Result<ForwardOutput<B>> {
        let s = self.sequence_length(ids, batch)?;
        let ones;
        let mask = match attention_mask {
            Some(m) if m.len() == ids.len() => m,
            Some(m) => {
                return Err(Error::Input {
                    message: format!(
                        "attention mask has {} entries for {} ids",
                        m.len(),
                        ids.len()
                    ),
                });
            }
            None => {
                ones = vec![1u32; ids.len()];
                &ones
            }
        };
        if let Some(p) = positions
            && p.len() != ids.len()
        {
            return Err(Error::Input {
                message: format!("{} positions for {} ids", p.len(), ids.len()),
            });
        }
        if let Some(c) = cache.as_deref()
            && c.batch != batch
        {
            return Err(Error::Input {
                message: format!("cache holds {} sequences, batch has {batch}", c.batch),
            });
        }
        let parts = if cache.is_some() {
            1
        } else {
            self.batch_parts(batch, s)
        };
        let (x, hidden) = if parts > 1 {
            self.stack_in_parts(ids, mask, positions, batch, parts, hidden_states)
        } else {
            self.stack(ids, mask, positions, batch, cache, hidden_states, None)
        };
        let logits = match logits {
            Logits::None => None,
            Logits::All => Some(self.lm_head(x.clone())),
            Logits::Last => Some(self.lm_head(x.clone().narrow(1, s - 1, 1))),
        };
        Ok(ForwardOutput {
            logits,
            last_hidden: x,
            hidden_states: hidden,
        })
    }

    /// How many parts a forward of `batch` sequences of `s` tokens without a cache is
    /// split into, each run through the layers on a core of its own (see
    /// [`Self::stack_in_parts`]): one per thread of the caller's rayon pool, each of
    /// at least [`PART_MIN_TOKENS`] tokens; 1 (no split) off burn-flex without autodiff.
    pub fn batch_parts(&self, batch: usize, s: usize) -> usize {
        if std::any::TypeId::of::<B>() != std::any::TypeId::of::<burn_flex::Flex>() {
            return 1;
        }
        rayon::current_num_threads()
            .min(batch)
            .min(batch * s / PART_MIN_TOKENS)
            .max(1)
    }

    /// [`Self::stack`] over `parts` slices of the batch at once, each on a
    /// single-thread pool of its own, joined along the batch. Each part's products
    /// run on one core with no hand-off between threads, and the rest of a layer
    /// (norms, attention, the SwiGLU) runs on both cores instead of leaving one
    /// waiting; every value is computed as it would be unsplit (a row's sums do not
    /// depend on the other rows). The LM head then runs once over the whole batch.
    #[allow(clippy::type_complexity)]
    fn stack_in_parts(
        &self,
        ids: &[u32],
        mask: &[u32],
        positions: Option<&[u32]>,
        batch: usize,
        parts: usize,
        hidden_states: bool,
    ) -> (Tensor<B, 3>, Option<Vec<Tensor<B, 3>>>) {
        let s = ids.len() / batch;
        let per = batch.div_ceil(parts);
        let ranges: Vec<(usize, usize)> = (0..batch)
            .step_by(per)
            .map(|b0| (b0 * s, (b0 + per).min(batch) * s))
            .collect();
        let outs = parts::run(&ranges, |&(i0, i1)| {
            self.stack(
                &ids[i0..i1],
                &mask[i0..i1],
                positions.map(|p| &p[i0..i1]),
                (i1 - i0) / s,
                None,
                hidden_states,
                None,
            )
        });
        let (xs, hs): (Vec<_>, Vec<_>) = outs.into_iter().unzip();
        let hidden = hidden_states.then(|| {
            let mut hs: Vec<Vec<Tensor<B, 3>>> = hs.into_iter().flatten().collect();
            let n = hs.first().map_or(0, Vec::len);
            (0..n)
                .map(|l| Tensor::cat(hs.iter_mut().map(|h| h[l].clone()).collect(), 0))
                .collect()
        });
        (Tensor::cat(xs, 0), hidden)
    }

    /// Embeddings, layers and final norm over `ids` `[batch, s]` (inputs checked by
    /// [`Self::forward_at`]): the normed last hidden state and, on request, every
    /// hidden state.
    ///
    /// With `rows`, the last layer runs its queries, attention output and MLP at those
    /// positions only ([`DecoderLayer::forward_rows`]) and the result is `[b, c,
    /// hidden]` (no cache, no hidden states).
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn stack(
        &self,
        ids: &[u32],
        mask: &[u32],
        positions: Option<&[u32]>,
        batch: usize,
        cache: Option<&mut KvCache<B>>,
        hidden_states: bool,
        rows: Option<&QueryRows>,
    ) -> (Tensor<B, 3>, Option<Vec<Tensor<B, 3>>>) {
        let device = self.device();
        let s = ids.len() / batch;
        let mut cache = cache;
        let past = cache.as_deref().map_or(0, |c| c.len);
        // Key mask over cached + new positions.
        let t = past + s;
        let mut key_mask = Vec::with_capacity(batch * t);
        for b in 0..batch {
            if let Some(c) = cache.as_deref() {
                key_mask.extend_from_slice(&c.key_mask[b * past..(b + 1) * past]);
            }
            key_mask.extend_from_slice(&mask[b * s..(b + 1) * s]);
        }
        let bias = attention_bias(&key_mask, batch, past, s, self.config.sliding_window);
        let rd = self.rope.rotary_dim;
        let (cos_v, sin_v, per_sequence) = match positions {
            Some(p) => {
                let (c, s_) = self.rope.cos_sin(p);
                (c, s_, true)
            }
            None => {
                let p: Vec<u32> = (past..past + s).map(|x| x as u32).collect();
                let (c, s_) = self.rope.cos_sin(&p);
                (c, s_, false)
            }
        };
        // The last layer's queries at `rows` only: their bias rows and angles, gathered
        // from the full ones (the angles of a long-context rotary scaling depend on the
        // whole sequence's length).
        let last = rows.map(|q| {
            let c = q.c;
            let (mut bq, mut cq, mut sq) = (
                Vec::with_capacity(batch * c * t),
                Vec::with_capacity(batch * c * rd),
                Vec::with_capacity(batch * c * rd),
            );
            for (i, &tq) in q.t.iter().enumerate() {
                let b = i / c;
                bq.extend_from_slice(&bias[(b * s + tq) * t..(b * s + tq + 1) * t]);
                let at = if per_sequence { b * s + tq } else { tq };
                cq.extend_from_slice(&cos_v[at * rd..(at + 1) * rd]);
                sq.extend_from_slice(&sin_v[at * rd..(at + 1) * rd]);
            }
            let flat: Vec<i64> =
                q.t.iter()
                    .enumerate()
                    .map(|(i, &tq)| ((i / c) * s + tq) as i64)
                    .collect();
            let f4 = |v: Vec<f32>, shape: [usize; 4]| {
                Tensor::<B, 4>::from_data(TensorData::new(v, shape), &device)
            };
            (
                Tensor::<B, 1, Int>::from_data(TensorData::new(flat, [batch * c]), &device),
                (f4(cq, [batch, 1, c, rd]), f4(sq, [batch, 1, c, rd])),
                f4(bq, [batch, 1, c, t]),
            )
        });
        let bias = Tensor::<B, 4>::from_data(TensorData::new(bias, [batch, 1, s, t]), &device);
        let cb = if per_sequence { batch } else { 1 };
        let cos = Tensor::<B, 4>::from_data(TensorData::new(cos_v, [cb, 1, s, rd]), &device);
        let sin = Tensor::<B, 4>::from_data(TensorData::new(sin_v, [cb, 1, s, rd]), &device);

        let mut x = self.model.embed_tokens.lookup(ids, batch, &device);
        let mut hidden = hidden_states.then(Vec::new);
        let n_layers = self.model.layers.len();
        let mut last = last;
        for (i, layer) in self.model.layers.iter().enumerate() {
            if let Some(h) = hidden.as_mut() {
                h.push(x.clone());
            }
            if i + 1 == n_layers
                && let Some((rows, angles, bias)) = last.take()
            {
                x = layer.forward_rows(x, rows, (cos.clone(), sin.clone()), angles, bias);
                break;
            }
            let past_kv = cache.as_deref_mut().and_then(|c| c.layers[i].take());
            let (y, kv) = layer.forward(x, cos.clone(), sin.clone(), bias.clone(), past_kv);
            x = y;
            if let Some(c) = cache.as_deref_mut() {
                c.layers[i] = Some(kv);
            }
        }
        if let Some(c) = cache {
            c.key_mask = key_mask;
            c.len = t;
        }
        let x = self.model.norm.forward(x);
        if let Some(h) = hidden.as_mut() {
            h.push(x.clone());
        }
        (x, hidden)
    }

    /// The length of each of `batch` sequences in `ids`, after checking that they
    /// split evenly into non-empty sequences of tokens inside the vocabulary.
    fn sequence_length(&self, ids: &[u32], batch: usize) -> Result<usize> {
        let vocab = self.config.vocab_size;
        if batch == 0 || ids.is_empty() || !ids.len().is_multiple_of(batch) {
            return Err(Error::Input {
                message: format!("{} ids do not form {batch} non-empty sequences", ids.len()),
            });
        }
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::Input {
                message: format!("token id {bad} is outside the vocabulary of {vocab}"),
            });
        }
        Ok(ids.len() / batch)
    }

    /// The final hidden states (after the final norm) at flat positions `rows` (`b · s +
    /// t`) of right- or left-padded `ids` `[batch, s]`, as `[rows.len(), hidden]` in the
    /// order of `rows`. The same values as [`Self::forward`]'s `last_hidden` at those
    /// rows, computed without the last layer's queries, attention output and MLP at
    /// the other positions (only its keys and values need every position): a training
    /// loss over a few supervised positions per sequence reads nothing else.
    pub fn last_hidden_rows(
        &self,
        ids: &[u32],
        mask: &[u32],
        batch: usize,
        rows: &[usize],
    ) -> Result<Tensor<B, 2>> {
        let n = ids.len();
        let s = self.sequence_length(ids, batch)?;
        if mask.len() != n {
            return Err(Error::Input {
                message: format!("attention mask has {} entries for {n} ids", mask.len()),
            });
        }
        if let Some(bad) = rows.iter().find(|&&r| r >= n) {
            return Err(Error::Input {
                message: format!("row {bad} is outside the {batch} x {s} batch"),
            });
        }
        let h = self.config.hidden_size;
        let device = self.device();
        if rows.is_empty() || self.model.layers.is_empty() {
            let (x, _) = self.stack(ids, mask, None, batch, None, false, None);
            let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [rows.len()]), &device);
            return Ok(x.reshape([n, h]).select(0, idx));
        }
        let q = QueryRows::new(rows, batch, s);
        let (x, _) = self.stack(ids, mask, None, batch, None, false, Some(&q));
        let idx: Vec<i64> = q.out.iter().map(|&i| i as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [rows.len()]), &device);
        Ok(x.reshape([batch * q.c, h]).select(0, idx))
    }

    /// `[b, s, hidden] -> [b, s, vocab]`.
    pub fn lm_head(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(p) => p.forward(x),
            None => {
                let [b, s, h] = x.dims();
                let vocab = self.model.embed_tokens.dims()[0];
                let y = self.model.embed_tokens.head(x.reshape([b * s, h]));
                y.reshape([b, s, vocab])
            }
        }
    }
}
