//! 8-bit AdamW exactly as bitsandbytes' `AdamW8bit` (Dettmers et al. 2022, "8-bit
//! Optimizers via Block-wise Quantization"; matches bitsandbytes 0.50's CPU kernels
//! `_optimizer_update_8bit_blockwise_cpu` / `_optimizer_update_32bit_cpu` and
//! `quantize_cpu_impl` in `csrc/cpu_ops.cpp`):
//! - the first moment is stored in the signed dynamic map, the second in the unsigned
//!   one, each in blocks of 256 values with one f32 absmax per block;
//! - tensors with fewer than 4,096 elements keep f32 state and bitsandbytes' 32-bit
//!   update (whose epsilon is scaled by `sqrt(1 - beta2^t)`).

use rayon::prelude::*;
use safetensors::Dtype;

use super::{AdamWConfig, ParamState, f32_bytes, f32s};

/// Values per quantization block.
pub const BLOCK_SIZE: usize = 256;
/// Tensors with fewer elements keep f32 state (`min_8bit_size`).
pub const MIN_8BIT_SIZE: usize = 4096;
const LUT_SIZE: usize = 65536;

/// bitsandbytes' `create_dynamic_map(signed, max_exponent_bits = 7, total_bits = 8)`,
/// computed in f32 as torch does (`linspace`, midpoints, times `10^e`), sorted.
pub fn create_dynamic_map(signed: bool) -> [f32; 256] {
    let max_exp = 7i32;
    let non_sign_bits = 7i32;
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..max_exp {
        let items = if signed {
            (1usize << (i + non_sign_bits - max_exp)) + 1
        } else {
            (1usize << (i + non_sign_bits - max_exp + 1)) + 1
        };
        let b = linspace_f32(0.1, 1.0, items);
        let scale = 10f64.powi(-(max_exp - 1) + i) as f32;
        for w in b.windows(2) {
            let mean = (w[0] + w[1]) / 2.0;
            data.push(scale * mean);
        }
        if signed {
            for w in b.windows(2) {
                let mean = (w[0] + w[1]) / 2.0;
                data.push(-scale * mean);
            }
        }
    }
    data.push(0.0);
    data.push(1.0);
    while data.len() < 256 {
        data.push(0.0);
    }
    data.sort_by(f32::total_cmp);
    let mut out = [0f32; 256];
    out.copy_from_slice(&data[..256]);
    out
}

/// `torch.linspace(start, end, steps, dtype=float32)` on CPU: the first half counts up
/// from `start`, the second down from `end`, each value one fused multiply-add
/// (torch's vectorized kernel compiles to FMA; plain `start + step * i` differs in the
/// last bit for 12 of the 65 values of the largest group).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// The nearest-code lookup table bitsandbytes' CPU quantizer builds: 65,536 bins over
/// `[-1, 1]`, each mapped to the code whose midpoint interval contains it.
fn build_lut(code: &[f32; 256]) -> Vec<u8> {
    let mid: Vec<f32> = code.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
    let mut lut = vec![0u8; LUT_SIZE];
    let mut idx = 0usize;
    for (i, slot) in lut.iter_mut().enumerate() {
        let val = -1.0f32 + (2.0f32 * i as f32) / (LUT_SIZE - 1) as f32;
        while idx < 255 && mid[idx] < val {
            idx += 1;
        }
        *slot = idx as u8;
    }
    lut
}

#[inline]
fn lut_index(val: f32) -> usize {
    let v = val.clamp(-1.0, 1.0);
    ((v + 1.0) * 0.5 * (LUT_SIZE - 1) as f32 + 0.5) as u16 as usize
}

/// Blockwise quantization of `a` with `code`: one absmax per block of
/// [`BLOCK_SIZE`], each value mapped through bitsandbytes' lookup table.
pub fn quantize_blockwise(code: &[f32; 256], a: &[f32], out: &mut [u8], absmax: &mut [f32]) {
    quantize_with_lut(&build_lut(code), a, out, absmax);
}

fn quantize_with_lut(lut: &[u8], a: &[f32], out: &mut [u8], absmax: &mut [f32]) {
    for ((blk, o), am) in a
        .chunks(BLOCK_SIZE)
        .zip(out.chunks_mut(BLOCK_SIZE))
        .zip(absmax.iter_mut())
    {
        let m = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        *am = m;
        if m == 0.0 {
            o.iter_mut().for_each(|x| *x = 0);
            continue;
        }
        let inv = 1.0 / m;
        for (x, q) in blk.iter().zip(o.iter_mut()) {
            *q = lut[lut_index(x * inv)];
        }
    }
}

/// `code[q] * absmax[block]`.
pub fn dequantize_blockwise(code: &[f32; 256], q: &[u8], absmax: &[f32], out: &mut [f32]) {
    for ((qb, ob), &am) in q
        .chunks(BLOCK_SIZE)
        .zip(out.chunks_mut(BLOCK_SIZE))
        .zip(absmax)
    {
        for (&x, o) in qb.iter().zip(ob.iter_mut()) {
            *o = code[x as usize] * am;
        }
    }
}

/// 8-bit state of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Q8State {
    /// First moment, codes in the signed map.
    pub state1: Vec<u8>,
    /// Second moment, codes in the unsigned map.
    pub state2: Vec<u8>,
    /// Block scales of `state1`.
    pub absmax1: Vec<f32>,
    /// Block scales of `state2`.
    pub absmax2: Vec<f32>,
}

/// State of one tensor: 8-bit, or f32 for small tensors.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorState {
    /// Blockwise 8-bit state.
    Q8(Q8State),
    /// f32 state (fewer than [`MIN_8BIT_SIZE`] elements).
    F32(ParamState),
}

/// bitsandbytes' `AdamW8bit`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW8bit {
    /// Hyper-parameters.
    pub cfg: AdamWConfig,
    /// Steps taken.
    pub step: u64,
    /// One state per tensor.
    pub state: Vec<TensorState>,
    qmap1: [f32; 256],
    qmap2: [f32; 256],
    lut1: Vec<u8>,
    lut2: Vec<u8>,
}

impl AdamW8bit {
    /// Zero state for tensors of the given sizes.
    pub fn new(cfg: AdamWConfig, sizes: &[usize]) -> Self {
        let qmap1 = create_dynamic_map(true);
        let qmap2 = create_dynamic_map(false);
        let state = sizes
            .iter()
            .map(|&n| {
                if n < MIN_8BIT_SIZE {
                    TensorState::F32(ParamState {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                    })
                } else {
                    let blocks = n.div_ceil(BLOCK_SIZE);
                    TensorState::Q8(Q8State {
                        state1: vec![0; n],
                        state2: vec![0; n],
                        absmax1: vec![0.0; blocks],
                        absmax2: vec![0.0; blocks],
                    })
                }
            })
            .collect();
        Self {
            cfg,
            step: 0,
            state,
            lut1: build_lut(&qmap1),
            lut2: build_lut(&qmap2),
            qmap1,
            qmap2,
        }
    }

    /// The signed (first-moment) and unsigned (second-moment) maps.
    pub fn qmaps(&self) -> (&[f32; 256], &[f32; 256]) {
        (&self.qmap1, &self.qmap2)
    }

    /// One step at learning rate `lr`.
    pub fn step(&mut self, lr: f64, params: &mut [Vec<f32>], grads: &[Vec<f32>]) {
        self.step += 1;
        let c = self.cfg;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = (1.0 - c.beta2.powi(t)).sqrt();
        let (b1, w1) = (c.beta1 as f32, (1.0 - c.beta1) as f32);
        let (b2, w2) = (c.beta2 as f32, (1.0 - c.beta2) as f32);
        let decay = (1.0 - lr * c.weight_decay) as f32;
        let wd_on = c.weight_decay > 0.0;
        let (qmap1, qmap2, lut1, lut2) = (&self.qmap1, &self.qmap2, &self.lut1, &self.lut2);
        // Tensor by tensor over the cores: every tensor's update is independent.
        let tensors = params.par_iter_mut().zip(grads).zip(&mut self.state);
        tensors.for_each(|((p, g), s)| {
            match s {
                TensorState::F32(s) => {
                    // _optimizer_update_32bit_cpu, "adam".
                    let step_size = (-lr * bc2 / bc1) as f32;
                    let eps = (c.eps * bc2) as f32;
                    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(&mut s.m).zip(&mut s.v) {
                        // torch's `mul_(b1).add_(g, alpha = 1 - b1)`: the add is a fused multiply-add.
                        *m = g.mul_add(w1, *m * b1);
                        *v = *v * b2 + w2 * g * g;
                        if wd_on {
                            *p *= decay;
                        }
                        let update = *m / (v.sqrt() + eps);
                        *p += step_size * update;
                    }
                }
                TensorState::Q8(q) => {
                    // _optimizer_update_8bit_blockwise_cpu, "adam".
                    let n = p.len();
                    let mut m = vec![0f32; n];
                    let mut v = vec![0f32; n];
                    dequantize_blockwise(qmap1, &q.state1, &q.absmax1, &mut m);
                    dequantize_blockwise(qmap2, &q.state2, &q.absmax2, &mut v);
                    let step_size = (-lr / bc1) as f32;
                    let bc2f = bc2 as f32;
                    let eps = c.eps as f32;
                    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(&mut m).zip(&mut v) {
                        *m = g.mul_add(w1, *m * b1);
                        *v = *v * b2 + w2 * g * g;
                        let denom = v.sqrt() / bc2f + eps;
                        if wd_on {
                            *p *= decay;
                        }
                        *p += step_size * (*m / denom);
                    }
                    quantize_with_lut(lut1, &m, &mut q.state1, &mut q.absmax1);
                    quantize_with_lut(lut2, &v, &mut q.state2, &mut q.absmax2);
                }
            }
        });
    }

    pub(crate) fn state_tensors(&self) -> Vec<(String, Vec<usize>, Dtype, Vec<u8>)> {
        let mut out = Vec::new();
        for (i, s) in self.state.iter().enumerate() {
            match s {
                TensorState::F32(s) => {
                    out.push((
                        format!("{i}.state1"),
                        vec![s.m.len()],
                        Dtype::F32,
                        f32_bytes(&s.m),
                    ));
                    out.push((
                        format!("{i}.state2"),
                        vec![s.v.len()],
                        Dtype::F32,
                        f32_bytes(&s.v),
                    ));
                }
                TensorState::Q8(q) => {
                    out.push((
                        format!("{i}.state1"),
                        vec![q.state1.len()],
                        Dtype::U8,
                        q.state1.clone(),
                    ));
                    out.push((
                        format!("{i}.state2"),
                        vec![q.state2.len()],
                        Dtype::U8,
                        q.state2.clone(),
                    ));
                    out.push((
                        format!("{i}.absmax1"),
                        vec![q.absmax1.len()],
                        Dtype::F32,
                        f32_bytes(&q.absmax1),
                    ));
                    out.push((
                        format!("{i}.absmax2"),
                        vec![q.absmax2.len()],
                        Dtype::F32,
                        f32_bytes(&q.absmax2),
                    ));
                }
            }
        }
        out
    }

    pub(crate) fn load_state_tensors(
        &mut self,
        step: u64,
        get: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
    ) -> Option<()> {
        for (i, s) in self.state.iter_mut().enumerate() {
            match s {
                TensorState::F32(s) => {
                    let m = f32s(&get(&format!("{i}.state1"))?);
                    let v = f32s(&get(&format!("{i}.state2"))?);
                    if m.len() != s.m.len() || v.len() != s.v.len() {
                        return None;
                    }
                    (s.m, s.v) = (m, v);
                }
                TensorState::Q8(q) => {
                    let s1 = get(&format!("{i}.state1"))?;
                    let s2 = get(&format!("{i}.state2"))?;
                    let a1 = f32s(&get(&format!("{i}.absmax1"))?);
                    let a2 = f32s(&get(&format!("{i}.absmax2"))?);
                    if s1.len() != q.state1.len()
                        || s2.len() != q.state2.len()
                        || a1.len() != q.absmax1.len()
                        || a2.len() != q.absmax2.len()
                    {
                        return None;
                    }
                    *q = Q8State {
                        state1: s1,
                        state2: s2,
                        absmax1: a1,
                        absmax2: a2,
                    };
                }
            }
        }
        self.step = step;
        Some(())
    }
}
