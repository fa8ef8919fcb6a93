//! AdamW (Loshchilov & Hutter 2019) as `torch.optim.AdamW`'s single-tensor path.

use rayon::prelude::*;
use safetensors::Dtype;

use super::{f32_bytes, f32s};

/// AdamW's hyper-parameters (learning rate comes per step from the schedule).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// Betas 0.9 / 0.999, eps 1e-8, weight decay 0.01 (the reference's).
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// f32 first and second moments of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamState {
    /// First moment.
    pub m: Vec<f32>,
    /// Second moment.
    pub v: Vec<f32>,
}

/// AdamW with f32 state.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    /// Hyper-parameters.
    pub cfg: AdamWConfig,
    /// Steps taken.
    pub step: u64,
    /// One state per tensor.
    pub state: Vec<ParamState>,
}

impl AdamW {
    /// Zero state for tensors of the given sizes.
    pub fn new(cfg: AdamWConfig, sizes: &[usize]) -> Self {
        Self {
            cfg,
            step: 0,
            state: sizes
                .iter()
                .map(|&n| ParamState {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                })
                .collect(),
        }
    }

    /// One step, as torch: `p *= 1 - lr wd; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
    /// p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)`.
    pub fn step(&mut self, lr: f64, params: &mut [Vec<f32>], grads: &[Vec<f32>]) {
        self.step += 1;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - c.beta2.powi(self.step as i32)).sqrt();
        let decay = (1.0 - lr * c.weight_decay) as f32;
        let w1 = (1.0 - c.beta1) as f32;
        let b2 = c.beta2 as f32;
        let w2 = (1.0 - c.beta2) as f32;
        let step_size = (lr / bc1) as f32;
        let bc2s = bc2_sqrt as f32;
        let eps = c.eps as f32;
        // Tensor by tensor over the cores: every value's update is independent.
        let tensors = params.par_iter_mut().zip(grads).zip(&mut self.state);
        tensors.for_each(|((p, g), s)| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(&mut s.m).zip(&mut s.v) {
                *p *= decay;
                *m += w1 * (g - *m);
                *v = *v * b2 + w2 * g * g;
                let denom = v.sqrt() / bc2s + eps;
                *p += -step_size * (*m / denom);
            }
        });
    }

    pub(crate) fn state_tensors(&self) -> Vec<(String, Vec<usize>, Dtype, Vec<u8>)> {
        let mut out = Vec::new();
        for (i, s) in self.state.iter().enumerate() {
            out.push((
                format!("{i}.exp_avg"),
                vec![s.m.len()],
                Dtype::F32,
                f32_bytes(&s.m),
            ));
            out.push((
                format!("{i}.exp_avg_sq"),
                vec![s.v.len()],
                Dtype::F32,
                f32_bytes(&s.v),
            ));
        }
        out
    }

    pub(crate) fn load_state_tensors(
        &mut self,
        step: u64,
        get: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
    ) -> Option<()> {
        for (i, s) in self.state.iter_mut().enumerate() {
            let m = f32s(&get(&format!("{i}.exp_avg"))?);
            let v = f32s(&get(&format!("{i}.exp_avg_sq"))?);
            if m.len() != s.m.len() || v.len() != s.v.len() {
                return None;
            }
            s.m = m;
            s.v = v;
        }
        self.step = step;
        Some(())
    }
}
