//! `LoraLinear`: a frozen base projection plus a trainable low-rank update,
//! `y = base(x) + scaling * B(A(dropout(x)))` (Hu et al. 2021, "LoRA"; matches PEFT's
//! `lora.Linear`).

use crate::fused::Recompute;
use burn::module::{Module, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::ModuleLora;

/// A base projection `[.., in] -> [.., out]` that LoRA can wrap: burn's dense
/// `Linear` and bioalign-quant's `Nf4Linear` (both implemented here).
pub trait LinearBase<B: Backend>: Module<B> {
    /// `[.., in] -> [.., out]`.
    fn forward_base<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D>;
    /// `(in, out)` features.
    fn dims(&self) -> (usize, usize);
    /// The weight as Hugging Face stores it, `[out, in]` row-major, dequantized.
    fn dense_weight_out_in(&self) -> Vec<f32>;
}

/// `x · w` over the last dimension of `x`, as one 2-D product: `[.., k] · [k, n] -> [.., n]`.
///
/// burn's `linear` and a plain `matmul` against `w.unsqueeze()` broadcast `w` over the
/// batch; burn-flex then runs `b` small products of `s` rows, each packing all of `w`
/// again. Flattening the leading dimensions gives one product of `b · s` rows, which
/// on plain burn-flex runs through bioalign-quant's blocked kernel
/// ([`bioalign_quant::dense::try_flex_matmul`]) and elsewhere through burn's matmul.
pub fn matmul_last<B: Backend, const D: usize>(x: Tensor<B, D>, w: Tensor<B, 2>) -> Tensor<B, D> {
    use bioalign_quant::dense::{WeightLayout, try_flex_matmul};
    let dims = x.dims();
    let k = dims[D - 1];
    let n = w.dims()[1];
    let rows: usize = dims[..D - 1].iter().product();
    let mut out = dims;
    out[D - 1] = n;
    let y = match try_flex_matmul(x.reshape([rows, k]), &w, WeightLayout::InOut) {
        Ok(y) => y,
        Err(x2) => x2.matmul(w),
    };
    y.reshape(out)
}

impl<B: Backend> LinearBase<B> for Linear<B> {
    fn forward_base<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let y = matmul_last(x, self.weight.val());
        match &self.bias {
            Some(b) => y + b.val().unsqueeze(),
            None => y,
        }
    }
    fn dims(&self) -> (usize, usize) {
        let [i, o] = self.weight.val().dims();
        (i, o)
    }
    fn dense_weight_out_in(&self) -> Vec<f32> {
        let w = self.weight.val().transpose().into_data();
        w.convert::<f32>().into_vec::<f32>().unwrap_or_default()
    }
}

/// The NF4 base (QLoRA): the fused kernel forward and the hand-written backward of
/// bioalign-quant on burn-flex and `Autodiff<Flex>`; the weight has no parameter, so
/// it gets no gradient and no f32 copy of it is kept.
impl<B: Backend> LinearBase<B> for bioalign_quant::Nf4Linear<B> {
    fn forward_base<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.forward_any(x)
    }
    fn dims(&self) -> (usize, usize) {
        bioalign_quant::Nf4Linear::dims(self)
    }
    fn dense_weight_out_in(&self) -> Vec<f32> {
        bioalign_quant::Nf4Linear::dense_weight_out_in(self)
    }
}

/// The trainable part of a LoRA module, seen without its base type, so trainers and
/// savers can walk a model's adapters uniformly.
pub trait AdapterSlot<B: Backend> {
    /// LoRA A, stored `[in, r]` (burn layout; PEFT's `lora_A.weight` is its transpose).
    fn lora_a(&self) -> &Param<Tensor<B, 2>>;
    /// LoRA B, stored `[r, out]` (PEFT's `lora_B.weight` is its transpose).
    fn lora_b(&self) -> &Param<Tensor<B, 2>>;
    /// Replaces A `[in, r]` and B `[r, out]`, keeping parameter ids; both require grad.
    fn set_lora(&mut self, a: Tensor<B, 2>, b: Tensor<B, 2>);
    /// Rank, alpha and scaling.
    fn lora(&self) -> ModuleLora;
    /// `(in, out)` features.
    fn features(&self) -> (usize, usize);
    /// The merged dense weight `[out, in]` row-major (HF layout): `W + scaling * B A`.
    fn merged_weight(&self) -> Vec<f32>;
    /// Seeds the dropout mask of the next forward passes (`Some`, training) or turns
    /// dropout off (`None`, evaluation and inference; the default).
    fn set_dropout_seed(&mut self, seed: Option<u64>);
}

/// A base projection with a LoRA adapter. The base is frozen (its parameters do not
/// require gradients); only `lora_a` and `lora_b` are trained. `L` is bounded by
/// `Module<B>` only here (so burn's derive maps it to the inner backend); every
/// method needs `L: LinearBase<B>`.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend, L: Module<B>> {
    /// The frozen base projection.
    pub base: L,
    /// LoRA A, `[in, r]`.
    pub lora_a: Param<Tensor<B, 2>>,
    /// LoRA B, `[r, out]`.
    pub lora_b: Param<Tensor<B, 2>>,
    /// Rank.
    #[module(skip)]
    pub r: usize,
    /// Alpha.
    #[module(skip)]
    pub alpha: f64,
    /// `alpha / r` (or `alpha / sqrt(r)` under rsLoRA).
    #[module(skip)]
    pub scaling: f64,
    /// Dropout probability on the adapter's input (active only while a dropout seed is
    /// set, see [`AdapterSlot::set_dropout_seed`]).
    #[module(skip)]
    pub dropout: f64,
    /// Seed of the dropout mask: the trainer sets one per micro-batch and module, so
    /// masks are a function of (run seed, step, micro-batch, module) and never of
    /// process-wide RNG state. `None`: no dropout.
    #[module(skip)]
    pub dropout_seed: Option<u64>,
}

/// The inverted-dropout mask for `n` inputs, drawn on the host from
/// `ChaCha8Rng(seed)`: `1 / keep` with probability `keep`, else 0.
pub fn dropout_mask(n: usize, keep: f64, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // P(u32 < t) = t / 2^32 = keep.
    let t = (keep * 4_294_967_296.0).round() as u64;
    let scale = (1.0 / keep) as f32;
    (0..n)
        .map(|_| {
            if u64::from(rng.next_u32()) < t {
                scale
            } else {
                0.0
            }
        })
        .collect()
}

/// PEFT's initialisation of `lora_A.weight` `[r, in]`: `kaiming_uniform_(a = sqrt(5))`,
/// i.e. uniform on `[-1/sqrt(in), 1/sqrt(in)]`. Returned `[r, in]` row-major.
pub fn kaiming_uniform_a(r: usize, inp: usize, rng: &mut impl Rng) -> Vec<f32> {
    // gain = sqrt(2 / (1 + 5)), bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
    let bound = 1.0 / (inp as f64).sqrt();
    (0..r * inp)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect()
}

impl<B: Backend, L: LinearBase<B>> LoraLinear<B, L> {
    /// Wraps `base` with a fresh adapter: A Kaiming-uniform from `rng`, B zeros.
    pub fn new(
        base: L,
        lora: ModuleLora,
        dropout: f64,
        rng: &mut impl Rng,
        device: &B::Device,
    ) -> Self {
        let (inp, _) = base.dims();
        let a_peft = kaiming_uniform_a(lora.r, inp, rng);
        let (inp, out) = base.dims();
        let a =
            Tensor::<B, 2>::from_data(TensorData::new(a_peft, [lora.r, inp]), device).transpose();
        let b = Tensor::<B, 2>::zeros([lora.r, out], device);
        Self::from_parts(base, a, b, lora, dropout)
    }

    /// Wraps `base` with given A `[in, r]` and B `[r, out]`.
    pub fn from_parts(
        base: L,
        a: Tensor<B, 2>,
        b: Tensor<B, 2>,
        lora: ModuleLora,
        dropout: f64,
    ) -> Self {
        Self {
            base: base.no_grad(),
            lora_a: Param::initialized(ParamId::new(), a.require_grad()),
            lora_b: Param::initialized(ParamId::new(), b.require_grad()),
            r: lora.r,
            alpha: lora.alpha,
            scaling: lora.scaling,
            dropout,
            dropout_seed: None,
        }
    }

    /// `[.., in] -> [.., out]`: `base(x) + scaling * (dropout(x) A) B`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.forward_recomputing(x, None)
    }

    /// [`forward`](Self::forward), where the backward (on `Autodiff<Flex>`, without
    /// dropout) makes `x` again with `recompute` instead of keeping it: for an input
    /// cheap to recompute from tensors the graph keeps anyway (see [`Recompute`]).
    pub fn forward_recomputing<const D: usize>(
        &self,
        x: Tensor<B, D>,
        recompute: Option<Recompute>,
    ) -> Tensor<B, D> {
        let y = self.base.forward_base(x.clone());
        let mut recompute = recompute;
        let h = match self.dropout_seed {
            Some(seed) if self.dropout > 0.0 => {
                // The update's input is the masked `x`, not what the recipe makes.
                recompute = None;
                let shape = x.shape();
                let mask = dropout_mask(shape.num_elements(), 1.0 - self.dropout, seed);
                x.clone() * Tensor::<B, D>::from_data(TensorData::new(mask, shape), &x.device())
            }
            _ => x,
        };
        let dims = h.dims();
        let rows = dims[..D - 1].iter().product();
        let mut out = dims;
        out[D - 1] = self.lora_b.val().dims()[1];
        let u = crate::fused::lora_delta(
            h.reshape([rows, dims[D - 1]]),
            self.lora_a.val(),
            self.lora_b.val(),
            self.scaling as f32,
            recompute,
        );
        y + u.reshape(out)
    }

    /// The merged dense weight `[out, in]` row-major: `W + scaling * B A` (HF layout).
    pub fn merged_weight_out_in(&self) -> Vec<f32> {
        let (inp, out) = self.base.dims();
        let mut w = self.base.dense_weight_out_in();
        let a = tensor_vec(self.lora_a.val().transpose()); // [r, in]
        let b = tensor_vec(self.lora_b.val().transpose()); // [out, r]
        crate::merge::merge_into(&mut w, out, inp, &a, &b, self.r, self.scaling);
        w
    }
}

impl<B: Backend, L: LinearBase<B>> AdapterSlot<B> for LoraLinear<B, L> {
    fn lora_a(&self) -> &Param<Tensor<B, 2>> {
        &self.lora_a
    }
    fn lora_b(&self) -> &Param<Tensor<B, 2>> {
        &self.lora_b
    }
    fn set_lora(&mut self, a: Tensor<B, 2>, b: Tensor<B, 2>) {
        self.lora_a = Param::initialized(self.lora_a.id, a.require_grad());
        self.lora_b = Param::initialized(self.lora_b.id, b.require_grad());
    }
    fn lora(&self) -> ModuleLora {
        ModuleLora {
            r: self.r,
            alpha: self.alpha,
            scaling: self.scaling,
        }
    }
    fn features(&self) -> (usize, usize) {
        self.base.dims()
    }
    fn merged_weight(&self) -> Vec<f32> {
        self.merged_weight_out_in()
    }
    fn set_dropout_seed(&mut self, seed: Option<u64>) {
        self.dropout_seed = seed;
    }
}

/// The values of a float tensor as a row-major `Vec<f32>`.
pub fn tensor_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data after convert")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn_flex::Flex;

    #[test]
    fn dropout_mask_is_seeded_and_has_the_keep_rate() {
        let m = dropout_mask(100_000, 0.9, 7);
        assert_eq!(m, dropout_mask(100_000, 0.9, 7));
        assert_ne!(m, dropout_mask(100_000, 0.9, 8));
        let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / m.len() as f64;
        // Binomial sd = sqrt(0.09 / 1e5) ~ 0.00095.
        assert!((kept - 0.9).abs() < 0.005, "kept {kept}");
        assert!(m.iter().all(|&v| v == 0.0 || v == (1.0 / 0.9f64) as f32));
    }

    #[test]
    fn dropout_applies_only_with_a_seed_and_is_reproducible() {
        let d = Default::default();
        let base: Linear<Flex> = LinearConfig::new(6, 5).with_bias(false).init(&d);
        let lora = ModuleLora {
            r: 2,
            alpha: 4.0,
            scaling: 2.0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut l = LoraLinear::new(base, lora, 0.5, &mut rng, &d);
        let b: Vec<f32> = (0..10).map(|i| i as f32 * 0.1 - 0.4).collect();
        let a = l.lora_a.val();
        l.set_lora(a, Tensor::from_data(TensorData::new(b, [2, 5]), &d));
        let x = Tensor::<Flex, 2>::from_data(
            TensorData::new((0..24).map(|i| i as f32 * 0.05).collect::<Vec<_>>(), [4, 6]),
            &d,
        );
        let plain = tensor_vec(l.forward(x.clone()));
        let want = tensor_vec(
            l.base.forward(x.clone())
                + x.clone()
                    .matmul(l.lora_a.val())
                    .matmul(l.lora_b.val())
                    .mul_scalar(2.0),
        );
        let close = plain
            .iter()
            .zip(&want)
            .all(|(p, w)| (p - w).abs() <= 1e-6 * (1.0 + w.abs()));
        assert!(close, "no seed: no dropout ({plain:?} vs {want:?})");
        l.set_dropout_seed(Some(3));
        let s3 = tensor_vec(l.forward(x.clone()));
        assert_ne!(s3, plain);
        assert_eq!(s3, tensor_vec(l.forward(x.clone())), "same seed, same mask");
        l.set_dropout_seed(Some(4));
        assert_ne!(tensor_vec(l.forward(x)), s3);
    }
}
