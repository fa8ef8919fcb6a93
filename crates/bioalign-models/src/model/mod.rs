//! One config-driven decoder for Llama (Touvron et al. 2023), Mistral (Jiang et al. 2023,
//! sliding-window attention) and Phi-3 (Abdin et al. 2024, LongRoPE), matching transformers'
//! `LlamaForCausalLM`, `MistralForCausalLM` and `Phi3ForCausalLM` (eager attention).

mod fused;
mod kernels;
mod layers;
mod lora;
mod rope;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

pub use layers::{
    Attention, Bf16Linear, DecoderLayer, Mlp, Projection, Q8Embedding, RmsNorm, TokenEmbedding,
};
pub use rope::Rope;

use crate::config::ModelConfig;
use crate::error::{Error, Result};

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
        let device = self.device();
        let vocab = self.config.vocab_size;
        if batch == 0 || ids.is_empty() || !ids.len().is_multiple_of(batch) {
            return Err(Error::Input {
                message: format!("{} ids do not form {batch} non-empty sequences", ids.len()),
            });
        }
        let s = ids.len() / batch;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::Input {
                message: format!("token id {bad} is outside the vocabulary of {vocab}"),
            });
        }
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
        let mut cache = cache;
        let past = match cache.as_deref() {
            Some(c) if c.batch != batch => {
                return Err(Error::Input {
                    message: format!("cache holds {} sequences, batch has {batch}", c.batch),
                });
            }
            Some(c) => c.len,
            None => 0,
        };
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
        let bias = Tensor::<B, 4>::from_data(TensorData::new(bias, [batch, 1, s, t]), &device);
        let rd = self.rope.rotary_dim;
        let (cos, sin) = match positions {
            Some(p) if p.len() == ids.len() => {
                let (c, s_) = self.rope.cos_sin(p);
                let c = Tensor::<B, 4>::from_data(TensorData::new(c, [batch, 1, s, rd]), &device);
                let s_ = Tensor::<B, 4>::from_data(TensorData::new(s_, [batch, 1, s, rd]), &device);
                (c, s_)
            }
            Some(p) => {
                return Err(Error::Input {
                    message: format!("{} positions for {} ids", p.len(), ids.len()),
                });
            }
            None => {
                let p: Vec<u32> = (past..past + s).map(|x| x as u32).collect();
                let (c, s_) = self.rope.cos_sin(&p);
                let c = Tensor::<B, 4>::from_data(TensorData::new(c, [1, 1, s, rd]), &device);
                let s_ = Tensor::<B, 4>::from_data(TensorData::new(s_, [1, 1, s, rd]), &device);
                (c, s_)
            }
        };

        let mut x = self.model.embed_tokens.lookup(ids, batch, &device);
        let mut hidden = hidden_states.then(Vec::new);
        for (i, layer) in self.model.layers.iter().enumerate() {
            if let Some(h) = hidden.as_mut() {
                h.push(x.clone());
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
