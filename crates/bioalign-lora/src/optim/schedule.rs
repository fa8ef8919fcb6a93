//! Learning-rate schedule and gradient clipping.

/// Linear warmup from 0 to `lr` over `warmup` steps, then linear decay to 0 at
/// `total` steps, as transformers' `get_linear_schedule_with_warmup`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearSchedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup steps.
    pub warmup: usize,
    /// Total optimizer steps.
    pub total: usize,
}

impl LinearSchedule {
    /// Learning rate for optimizer step `step` (0-based, the value used by that step).
    pub fn lr_at(&self, step: usize) -> f64 {
        let factor = if step < self.warmup {
            step as f64 / self.warmup.max(1) as f64
        } else {
            let rest = self.total.saturating_sub(step) as f64;
            let span = self.total.saturating_sub(self.warmup).max(1) as f64;
            (rest / span).max(0.0)
        };
        self.lr * factor
    }
}

/// The L2 norm over all gradients together, accumulated in f64.
pub fn global_norm(grads: &[Vec<f32>]) -> f64 {
    grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

/// Scales all gradients by `max_norm / (norm + 1e-6)` when their global norm exceeds
/// `max_norm` (as `torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c = coef as f32;
        grads
            .iter_mut()
            .flat_map(|g| g.iter_mut())
            .for_each(|x| *x *= c);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_linear_decay() {
        // Values of transformers' get_linear_schedule_with_warmup(warmup=10, total=100), lr 2e-4.
        let s = LinearSchedule {
            lr: 2e-4,
            warmup: 10,
            total: 100,
        };
        assert_eq!(s.lr_at(0), 0.0);
        assert!((s.lr_at(5) - 1e-4).abs() < 1e-12);
        assert!((s.lr_at(10) - 2e-4).abs() < 1e-12);
        assert!((s.lr_at(55) - 1e-4).abs() < 1e-12);
        assert_eq!(s.lr_at(100), 0.0);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut g = vec![vec![3.0f32, 0.0], vec![4.0]];
        let n = clip_grad_norm(&mut g, 1.0);
        assert!((n - 5.0).abs() < 1e-12);
        assert!((global_norm(&g) - 1.0).abs() < 1e-5);
        let mut small = vec![vec![0.1f32]];
        clip_grad_norm(&mut small, 1.0);
        assert_eq!(small[0][0], 0.1);
    }
}
