//! Rotary position embeddings (RoFormer, Su et al. 2021) with the frequency variants of
//! transformers' `modeling_rope_utils.py`: default, linear, Llama 3 (`_compute_llama3_parameters`)
//! and Phi-3 LongRoPE (`_compute_longrope_parameters`, long factors once a sequence is longer
//! than `original_max_position_embeddings`).

use crate::config::{ModelConfig, RopeScaling};

/// Inverse frequencies and cos/sin scale for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// Number of leading head dimensions that rotate.
    pub rotary_dim: usize,
    /// Inverse frequencies for short sequences (all of them unless LongRoPE).
    pub inv_freq: Vec<f32>,
    /// LongRoPE: inverse frequencies and the length past which they apply.
    pub long: Option<(Vec<f32>, usize)>,
    /// Scale of cos and sin (LongRoPE's attention factor, else 1).
    pub scale: f32,
}

impl Rope {
    /// The tables for `cfg` (validated, so the rope scaling resolves).
    pub fn new(cfg: &ModelConfig) -> Self {
        let dim = cfg.rotary_dim();
        let base = cfg.rope_theta();
        let plain: Vec<f64> = (0..dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64))
            .collect();
        let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        match cfg.rope().unwrap_or(RopeScaling::Default) {
            RopeScaling::Default => Self {
                rotary_dim: dim,
                inv_freq: to32(plain),
                long: None,
                scale: 1.0,
            },
            RopeScaling::Linear { factor } => Self {
                rotary_dim: dim,
                inv_freq: to32(plain.iter().map(|f| f / factor).collect()),
                long: None,
                scale: 1.0,
            },
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                let inv = plain
                    .iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen > low_wavelen {
                            f / factor
                        } else if wavelen < high_wavelen {
                            f
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect();
                Self {
                    rotary_dim: dim,
                    inv_freq: to32(inv),
                    long: None,
                    scale: 1.0,
                }
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                attention_factor,
            } => {
                let with = |ext: &[f64]| -> Vec<f64> {
                    (0..dim / 2)
                        .map(|i| 1.0 / (ext[i] * base.powf((2 * i) as f64 / dim as f64)))
                        .collect()
                };
                Self {
                    rotary_dim: dim,
                    inv_freq: to32(with(&short_factor)),
                    long: Some((to32(with(&long_factor)), original_max_position_embeddings)),
                    scale: attention_factor as f32,
                }
            }
        }
    }

    /// cos and sin, each `[positions.len(), rotary_dim]` row-major (`cat(freqs, freqs)`
    /// layout, as transformers builds them). LongRoPE takes its long factors when the largest
    /// position + 1 passes `original_max_position_embeddings`.
    pub fn cos_sin(&self, positions: &[u32]) -> (Vec<f32>, Vec<f32>) {
        let seq_len = positions.iter().max().map_or(0, |&m| m as usize + 1);
        let inv = match &self.long {
            Some((long, original)) if seq_len > *original => long,
            _ => &self.inv_freq,
        };
        let half = self.rotary_dim / 2;
        let mut cos = Vec::with_capacity(positions.len() * self.rotary_dim);
        let mut sin = Vec::with_capacity(positions.len() * self.rotary_dim);
        for &p in positions {
            let row: Vec<f32> = inv.iter().map(|&f| p as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(row.iter().map(|a| a.cos() * self.scale));
                sin.extend(row.iter().map(|a| a.sin() * self.scale));
            }
            debug_assert_eq!(row.len(), half);
        }
        (cos, sin)
    }
}
