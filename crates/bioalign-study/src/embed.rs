//! Sentence embeddings of many texts, batched, converted to `ndarray` (0.16, the
//! version bioalign-metrics and linfa use) at this edge.

use burn::tensor::backend::Backend;
use ndarray::Array2;

use bioalign_models::embed::{Layers, Pooling};
use bioalign_models::model::CausalLm;
use bioalign_models::tokenizer::TextTokenizer;

use crate::error::{Result, invalid};

/// Pooled embeddings of `texts`, one `[n, hidden]` matrix per selected layer (one for
/// [`Layers::Last`], `num_layers + 1` for [`Layers::All`]). `on_batch` is called with the
/// number of texts after each batch.
pub fn embed_texts<B: Backend>(
    model: &CausalLm<B>,
    tok: &TextTokenizer,
    texts: &[&str],
    pooling: Pooling,
    layers: Layers,
    batch_size: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<Vec<Array2<f32>>> {
    if batch_size == 0 {
        return Err(invalid("batch_size", 0, "at least 1"));
    }
    let n = texts.len();
    let hidden = model.config.hidden_size;
    let mut acc: Vec<Vec<f32>> = Vec::new();
    for chunk in texts.chunks(batch_size) {
        let batch = tok.encode_batch(chunk)?;
        let e = model.embed(&batch, pooling, layers, false)?;
        if acc.is_empty() {
            acc = e
                .layers
                .iter()
                .map(|_| Vec::with_capacity(n * hidden))
                .collect();
        }
        for (a, l) in acc.iter_mut().zip(e.layers) {
            a.extend(l);
        }
        on_batch(chunk.len());
    }
    acc.into_iter()
        .map(|v| {
            Array2::from_shape_vec((n, hidden), v)
                .map_err(|e| invalid("embeddings", e, "n x hidden values"))
        })
        .collect()
}
