//! Optimizers over plain f32 slices, so their state does not depend on burn's
//! optimizer internals and can be checkpointed and compared with the references:
//! [`AdamW`] as `torch.optim.AdamW`, and [`AdamW8bit`] as bitsandbytes' `AdamW8bit`
//! (blockwise dynamic 8-bit state). Plus the linear warmup schedule and gradient
//! clipping by global norm.

mod adamw;
mod bnb8;
mod schedule;

pub use adamw::{AdamW, AdamWConfig, ParamState};
pub use bnb8::{
    AdamW8bit, BLOCK_SIZE, MIN_8BIT_SIZE, Q8State, TensorState, create_dynamic_map,
    dequantize_blockwise, quantize_blockwise,
};
pub use schedule::{LinearSchedule, clip_grad_norm, global_norm};

/// Which optimizer the trainer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OptimizerKind {
    /// f32 AdamW, as `torch.optim.AdamW`.
    AdamW,
    /// bitsandbytes' `AdamW8bit`.
    AdamW8bit,
}

/// One optimizer over a list of parameter tensors, addressed by index.
#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    /// f32 AdamW.
    AdamW(AdamW),
    /// 8-bit AdamW.
    AdamW8bit(Box<AdamW8bit>),
}

impl Optimizer {
    /// A fresh optimizer for tensors of the given sizes.
    pub fn new(kind: OptimizerKind, cfg: AdamWConfig, sizes: &[usize]) -> Self {
        match kind {
            OptimizerKind::AdamW => Self::AdamW(AdamW::new(cfg, sizes)),
            OptimizerKind::AdamW8bit => Self::AdamW8bit(Box::new(AdamW8bit::new(cfg, sizes))),
        }
    }

    /// One step at learning rate `lr` on every tensor: `params[i] -= update(grads[i])`.
    pub fn step(&mut self, lr: f64, params: &mut [Vec<f32>], grads: &[Vec<f32>]) {
        match self {
            Self::AdamW(o) => o.step(lr, params, grads),
            Self::AdamW8bit(o) => o.step(lr, params, grads),
        }
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        match self {
            Self::AdamW(o) => o.step,
            Self::AdamW8bit(o) => o.step,
        }
    }

    /// The state as named byte tensors, for checkpoints: `(name, shape, dtype, bytes)`.
    pub fn state_tensors(&self) -> Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> {
        match self {
            Self::AdamW(o) => o.state_tensors(),
            Self::AdamW8bit(o) => o.state_tensors(),
        }
    }

    /// Restores the state written by [`Optimizer::state_tensors`]; `get` returns the
    /// bytes of a named tensor (None when missing).
    pub fn load_state_tensors(
        &mut self,
        step: u64,
        get: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
    ) -> Option<()> {
        match self {
            Self::AdamW(o) => o.load_state_tensors(step, get),
            Self::AdamW8bit(o) => o.load_state_tensors(step, get),
        }
    }
}

pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
