//! `LoraLinear`: a frozen base projection plus a trainable low-rank update,
//! `y = base(x) + scaling * B(A(dropout(x)))` (Hu et al. 2021, "LoRA"; matches PEFT's
//! `lora.Linear`).

use burn::module::{Module, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use rand::Rng;

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

impl<B: Backend> LinearBase<B> for Linear<B> {
    fn forward_base<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.forward(x)
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
    /// Dropout probability on the adapter's input (active only on autodiff backends).
    #[module(skip)]
    pub dropout: f64,
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
        }
    }

    /// `[.., in] -> [.., out]`: `base(x) + scaling * (dropout(x) A) B`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let y = self.base.forward_base(x.clone());
        let h = if self.dropout > 0.0 && B::ad_enabled(&x.device()) {
            let keep = 1.0 - self.dropout;
            let mask = x.random_like(Distribution::Bernoulli(keep));
            x * mask.div_scalar(keep)
        } else {
            x
        };
        let u = h
            .matmul(self.lora_a.val().unsqueeze())
            .matmul(self.lora_b.val().unsqueeze());
        y + u.mul_scalar(self.scaling)
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
}

/// The values of a float tensor as a row-major `Vec<f32>`.
pub fn tensor_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data after convert")
}
