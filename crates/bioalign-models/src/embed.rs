//! Sentence embeddings: pooled hidden states of a padded batch (SPEC.md section 3).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::model::{CausalLm, Logits};
use crate::tokenizer::EncodedBatch;

/// How token states become one vector per sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the real tokens (default).
    Mean,
    /// The last real token.
    Last,
    /// The reference study's mean over all positions, padding included (only to compare).
    MeanPadded,
}

/// Which layers to pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layers {
    /// The last hidden state (after the final norm), as the reference.
    Last,
    /// All `num_layers + 1` hidden states (transformers' `hidden_states`).
    All,
}

/// Pooled embeddings of one batch.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// Per selected layer, `[batch, hidden]` row-major.
    pub layers: Vec<Vec<f32>>,
    /// Next-token logits after each input's last real token, `[batch, vocab]`, if asked.
    pub next_token_logits: Option<Vec<f32>>,
    /// Hidden size.
    pub hidden: usize,
}

fn read(t: Tensor<impl Backend, 2>) -> Result<Vec<f32>> {
    t.into_data().to_vec::<f32>().map_err(|e| Error::Input {
        message: format!("reading a tensor: {e:?}"),
    })
}

impl<B: Backend> CausalLm<B> {
    /// Embeds a padded batch (either padding side).
    pub fn embed(
        &self,
        batch: &EncodedBatch,
        pooling: Pooling,
        layers: Layers,
        logits: bool,
    ) -> Result<Embeddings> {
        let (n, s) = (batch.batch, batch.seq_len);
        let out = self.forward(
            &batch.ids,
            Some(&batch.attention_mask),
            n,
            None,
            Logits::None,
            layers == Layers::All,
        )?;
        let device = self.device();
        let states = match out.hidden_states {
            Some(h) => h,
            None => vec![out.last_hidden.clone()],
        };
        let weights: Vec<f32> = match pooling {
            Pooling::Mean => {
                let mut w = Vec::with_capacity(n * s);
                for b in 0..n {
                    let row = &batch.attention_mask[b * s..(b + 1) * s];
                    let c = row.iter().sum::<u32>().max(1) as f32;
                    w.extend(row.iter().map(|&m| m as f32 / c));
                }
                w
            }
            Pooling::MeanPadded => vec![1.0 / s as f32; n * s],
            Pooling::Last => {
                let mut w = vec![0f32; n * s];
                for b in 0..n {
                    let row = &batch.attention_mask[b * s..(b + 1) * s];
                    if let Some(j) = row.iter().rposition(|&m| m != 0) {
                        w[b * s + j] = 1.0;
                    }
                }
                w
            }
        };
        let w = Tensor::<B, 3>::from_data(TensorData::new(weights, [n, s, 1]), &device);
        let hidden = self.config.hidden_size;
        let pooled = states
            .into_iter()
            .map(|h| read((h * w.clone()).sum_dim(1).reshape([n, hidden])))
            .collect::<Result<Vec<_>>>()?;
        let next_token_logits = if logits {
            let rows: Vec<Tensor<B, 3>> = (0..n)
                .map(|b| {
                    let row = &batch.attention_mask[b * s..(b + 1) * s];
                    let j = row.iter().rposition(|&m| m != 0).unwrap_or(s - 1);
                    out.last_hidden.clone().narrow(0, b, 1).narrow(1, j, 1)
                })
                .collect();
            let l = self.lm_head(Tensor::cat(rows, 0));
            let vocab = l.dims()[2];
            Some(read(l.reshape([n, vocab]))?)
        } else {
            None
        };
        Ok(Embeddings {
            layers: pooled,
            next_token_logits,
            hidden,
        })
    }
}
