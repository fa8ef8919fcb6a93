//! `Nf4Linear<B>`: a frozen NF4 projection as a burn module (QLoRA's base layer,
//! Dettmers et al. 2023; matches bitsandbytes' `Linear4bit` forward), through
//! burn's backend-extension pattern:
//!
//! - [`Nf4Backend`] is the extension trait: `nf4_matmul(x, W) = x · dequant(W)ᵀ`.
//!   Its default body (any backend) dequantizes and multiplies; burn-flex (the CPU
//!   backend) overrides it with the fused kernel of [`crate::kernels::matmul_nt`],
//!   which never materializes the f32 weight.
//! - `Autodiff<B>` implements it with a hand-written backward that recomputes
//!   `dX = dY · dequant(W)` from the packed weight; the weight is no graph node, so it
//!   gets no gradient and no f32 copy of it lives from forward to backward.

use std::sync::Arc;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};

use crate::kernels::{self, Isa, Nf4Weight, Product};
use crate::{Error, Quantized4bit, Result};

/// A validated 4-bit weight `[out, in]` with its scales expanded to f32 (one per
/// block, `numel / blocksize` values). Shared (`Arc`) between module clones and
/// the autodiff graph; never a parameter.
#[derive(Debug)]
pub struct Nf4Packed {
    q: Quantized4bit,
    absmax: Vec<f32>,
    rows: usize,
    cols: usize,
    /// Copies uploaded to CubeCL devices (feature `cubecl`).
    #[cfg(feature = "cubecl")]
    device: crate::cube::DeviceCache,
}

impl Nf4Packed {
    /// Checks `q` (2-D, consistent state) and expands its block scales.
    pub fn new(q: Quantized4bit) -> Result<Self> {
        if q.shape.len() != 2 {
            return Err(Error::shape(
                "NF4 linear weight rank",
                "2 ([out, in])",
                format!("{:?}", q.shape),
            ));
        }
        q.validate("Nf4Linear weight")?;
        let absmax = q.absmax_f32();
        let (rows, cols) = (q.shape[0], q.shape[1]);
        Nf4Weight::new(&q.packed, &absmax, rows, cols, q.blocksize, q.quant_type)?;
        Ok(Nf4Packed {
            q,
            absmax,
            rows,
            cols,
            #[cfg(feature = "cubecl")]
            device: Default::default(),
        })
    }

    /// The kernel view of the weight.
    pub fn weight(&self) -> Nf4Weight<'_> {
        // Lengths were checked in `new`.
        Nf4Weight::new(
            &self.q.packed,
            &self.absmax,
            self.rows,
            self.cols,
            self.q.blocksize,
            self.q.quant_type,
        )
        .expect("checked in Nf4Packed::new")
    }

    /// The quantized tensor with its bitsandbytes state (for saving).
    pub fn quantized(&self) -> &Quantized4bit {
        &self.q
    }

    /// The f32 block scales (nested scales expanded), one per block.
    pub fn absmax(&self) -> &[f32] {
        &self.absmax
    }

    #[cfg(feature = "cubecl")]
    pub(crate) fn device_cache(&self) -> &crate::cube::DeviceCache {
        &self.device
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `dequant(W)` `[out, in]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        kernels::dequantize_f32(&self.weight(), &mut out, Isa::detect(), 0)
            .expect("buffer sized from the weight");
        out
    }
}

/// The backend extension: `x` `[m, in]` times the transposed NF4 weight `[out, in]`.
pub trait Nf4Backend: Backend {
    /// `[m, in] -> [m, out]`: `x · dequant(W)ᵀ`. The default dequantizes `W` and
    /// uses the backend's matmul; backends with a fused kernel override it.
    fn nf4_matmul(x: FloatTensor<Self>, w: &Arc<Nf4Packed>) -> FloatTensor<Self> {
        let device = Self::float_device(&x);
        let dense = Self::float_from_data(
            TensorData::new(w.dequantize(), [w.rows(), w.cols()]),
            &device,
        );
        Self::float_matmul(x, Self::float_transpose(dense))
    }

    /// `[m, out] -> [m, in]`: `dy · dequant(W)`, the input gradient. The default
    /// dequantizes `W` for the duration of the call.
    fn nf4_matmul_grad(dy: FloatTensor<Self>, w: &Arc<Nf4Packed>) -> FloatTensor<Self> {
        let device = Self::float_device(&dy);
        let dense = Self::float_from_data(
            TensorData::new(w.dequantize(), [w.rows(), w.cols()]),
            &device,
        );
        Self::float_matmul(dy, dense)
    }
}

impl Nf4Backend for burn_flex::Flex {
    fn nf4_matmul(x: FloatTensor<Self>, w: &Arc<Nf4Packed>) -> FloatTensor<Self> {
        flex_product(x, w, false)
    }

    fn nf4_matmul_grad(dy: FloatTensor<Self>, w: &Arc<Nf4Packed>) -> FloatTensor<Self> {
        flex_product(dy, w, true)
    }
}

/// A fused kernel on burn-flex without an f32 weight: `x · dequant(W)ᵀ` (`x`
/// `[m, cols]` to `[m, rows]`), or with `grad` its input gradient `x · dequant(W)`
/// (`[m, rows]` to `[m, cols]`).
fn flex_product(
    x: FloatTensor<burn_flex::Flex>,
    w: &Nf4Packed,
    grad: bool,
) -> FloatTensor<burn_flex::Flex> {
    type F = burn_flex::Flex;
    let device = F::float_device(&x);
    let dims = x.shape();
    let (m, k) = (dims[0], dims[1]);
    let (product, k_in, n_out) = if grad {
        (Product::Nn(w.weight()), w.rows(), w.cols())
    } else {
        (Product::Nt(w.weight()), w.cols(), w.rows())
    };
    assert_eq!(k, k_in, "Nf4Linear: input features");
    let x = crate::dense::f32_contiguous(x);
    let xs = crate::dense::f32_slice(&x);
    let y = kernels::product(xs, m, product, Isa::detect(), 0).expect("shapes checked above");
    F::float_from_data(kernels::pool::f32_data(y, [m, n_out]), &device)
}

#[derive(Debug)]
struct Nf4MatmulBackward;

impl<B: Nf4Backend> Backward<B, 1> for Nf4MatmulBackward {
    type State = Arc<Nf4Packed>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let w = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dy| {
            B::nf4_matmul_grad(dy, &w)
        });
    }
}

impl<B: Nf4Backend, C: CheckpointStrategy> Nf4Backend for Autodiff<B, C> {
    fn nf4_matmul(x: FloatTensor<Self>, w: &Arc<Nf4Packed>) -> FloatTensor<Self> {
        match Nf4MatmulBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(Arc::clone(w), B::nf4_matmul(x.primitive, w)),
            OpsKind::UnTracked(prep) => prep.finish(B::nf4_matmul(x.primitive, w)),
        }
    }

    fn nf4_matmul_grad(dy: FloatTensor<Self>, w: &Arc<Nf4Packed>) -> FloatTensor<Self> {
        // Second-order use only; the inner product is not differentiated again.
        let device = Self::float_device(&dy);
        let dense = Self::float_from_data(
            TensorData::new(w.dequantize(), [w.rows(), w.cols()]),
            &device,
        );
        Self::float_matmul(dy, dense)
    }
}

/// A frozen NF4 linear layer without bias (`[.., in] -> [.., out]`). The packed weight
/// and its scales are not `Param`s: optimizers never see them and they get no gradient.
#[derive(Module, Debug)]
pub struct Nf4Linear<B: Backend> {
    /// The packed weight with its state.
    #[module(skip)]
    pub weight: Arc<Nf4Packed>,
    /// Ties the module to its backend.
    pub backend: core::marker::PhantomData<B>,
}

impl<B: Backend> Nf4Linear<B> {
    /// A layer from a quantized `[out, in]` weight (bnb-4bit state, e.g. from
    /// [`crate::checkpoint::read_quantized`]); no f32 copy is made.
    pub fn new(q: Quantized4bit) -> Result<Self> {
        Ok(Nf4Linear {
            weight: Arc::new(Nf4Packed::new(q)?),
            backend: core::marker::PhantomData,
        })
    }

    /// Quantizes a dense `[out, in]` row-major weight (NF4, block 64, double
    /// quantization: QLoRA's defaults as bitsandbytes does it).
    pub fn quantize(weight_out_in: &[f32], out: usize, inp: usize) -> Result<Self> {
        let q = Quantized4bit::quantize(
            weight_out_in,
            &[out, inp],
            crate::SourceDtype::F32,
            crate::QuantizeOptions::default(),
        )?;
        Self::new(q)
    }

    /// `(in, out)` features.
    pub fn dims(&self) -> (usize, usize) {
        (self.weight.cols(), self.weight.rows())
    }

    /// `dequant(W)` as Hugging Face stores it, `[out, in]` row-major.
    pub fn dense_weight_out_in(&self) -> Vec<f32> {
        self.weight.dequantize()
    }
}

impl<B: Backend> Nf4Linear<B> {
    /// `[.., in] -> [.., out]` for any backend, without an [`Nf4Backend`] bound (for
    /// models generic over `B: Backend`): burn-flex, and with features `wgpu` / `cuda`
    /// burn-wgpu / burn-cuda, each also under `Autodiff` (with or without gradient
    /// checkpointing), are recognized at run time and take their [`Nf4Backend`] kernel
    /// and the hand-written backward; any other
    /// backend dequantizes the weight and uses its own matmul (correct, and its
    /// autodiff then treats the dequantized weight as a constant: no gradient either).
    pub fn forward_any<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        use std::any::Any;
        let boxed: Box<dyn Any> = Box::new(x);
        // Runs the fused path when the input is a `Tensor<$b, D>` for a backend
        // with an `Nf4Backend` implementation, else hands the box on.
        macro_rules! try_backend {
            ($boxed:expr, $b:ty) => {
                match $boxed.downcast::<Tensor<$b, D>>() {
                    Ok(t) => {
                        let y = self.with_backend::<$b>().forward(*t);
                        return *(Box::new(y) as Box<dyn Any>)
                            .downcast::<Tensor<B, D>>()
                            .expect("same backend type");
                    }
                    Err(b) => b,
                }
            };
        }
        // Each backend plain, under autodiff, and under gradient checkpointing
        // (burn's balanced strategy: the op is compute-bound, so its output is kept).
        macro_rules! try_backends {
            ($boxed:expr, $b:ty) => {{
                let b = try_backend!($boxed, $b);
                let b = try_backend!(b, Autodiff<$b>);
                try_backend!(b, Autodiff<$b, BalancedCheckpointing>)
            }};
        }
        let boxed = try_backends!(boxed, burn_flex::Flex);
        #[cfg(feature = "wgpu")]
        let boxed = try_backends!(boxed, burn::backend::Wgpu);
        #[cfg(feature = "cuda")]
        let boxed = try_backends!(boxed, burn::backend::Cuda);
        let x = *boxed
            .downcast::<Tensor<B, D>>()
            .expect("the input's own type");
        let dims = x.dims();
        let k = dims[D - 1];
        let m = x.shape().num_elements() / k.max(1);
        let device = x.device();
        let w = Tensor::<B, 2>::from_data(
            TensorData::new(self.weight.dequantize(), [self.weight.rows(), k]),
            &device,
        );
        let y = x.reshape([m, k]).matmul(w.transpose());
        let mut out = dims;
        out[D - 1] = self.weight.rows();
        y.reshape(out)
    }

    fn with_backend<C: Backend>(&self) -> Nf4Linear<C> {
        Nf4Linear {
            weight: Arc::clone(&self.weight),
            backend: core::marker::PhantomData,
        }
    }
}

impl<B: Nf4Backend> Nf4Linear<B> {
    /// `[.., in] -> [.., out]`: `x · dequant(W)ᵀ`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let k = dims[D - 1];
        let m = x.shape().num_elements() / k.max(1);
        let x2 = x.reshape([m, k]);
        let y = B::nf4_matmul(x2.into_primitive().tensor(), &self.weight);
        let y = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(y));
        let mut out = dims;
        out[D - 1] = self.weight.rows();
        y.reshape(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn_flex::{Flex, FlexDevice};

    type Ad = Autodiff<Flex>;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        // SplitMix64, uniform in [-1, 1).
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn vec_of<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
    }

    /// Dense reference on the dequantized weight: `x · Wᵀ` with burn's matmul.
    fn dense<B: Backend>(w: &[f32], out: usize, inp: usize, d: &B::Device) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(w.to_vec(), [out, inp]), d)
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{i}: {x} vs {y}");
        }
    }

    #[test]
    fn forward_equals_dense_on_dequantized_weight() {
        let d = FlexDevice;
        // Odd shapes: 70 inputs (not a multiple of the block), 3-D input.
        for (out, inp, rows) in [(96, 64, 1), (33, 70, 5), (128, 256, 17)] {
            let lin = Nf4Linear::<Flex>::quantize(&random(out * inp, 1), out, inp).unwrap();
            let deq = lin.dense_weight_out_in();
            let x = random(rows * 2 * inp, 2);
            let x3 = Tensor::<Flex, 3>::from_data(TensorData::new(x.clone(), [2, rows, inp]), &d);
            let y = lin.forward(x3);
            assert_eq!(y.dims(), [2, rows, out]);
            let x2 = Tensor::<Flex, 2>::from_data(TensorData::new(x, [2 * rows, inp]), &d);
            let want = x2.matmul(dense::<Flex>(&deq, out, inp, &d).transpose());
            close(&vec_of(y), &vec_of(want), 1e-5);
        }
    }

    #[test]
    fn backward_equals_dense_backward_and_weight_gets_no_gradient() {
        let d = FlexDevice;
        let (out, inp, m) = (48, 96, 6);
        let lin = Nf4Linear::<Ad>::quantize(&random(out * inp, 5), out, inp).unwrap();
        let deq = lin.dense_weight_out_in();
        let xv = random(m * inp, 6);
        let gv = random(m * out, 7);

        // NF4 path: loss = sum(y * g) so dY = g.
        let x =
            Tensor::<Ad, 2>::from_data(TensorData::new(xv.clone(), [m, inp]), &d).require_grad();
        let g = Tensor::<Ad, 2>::from_data(TensorData::new(gv.clone(), [m, out]), &d);
        let y = lin.forward(x.clone());
        let grads = (y * g).sum().backward();
        let dx = vec_of(x.grad(&grads).unwrap());

        // Dense base on the dequantized weight, weight tracked too.
        let x2 = Tensor::<Ad, 2>::from_data(TensorData::new(xv, [m, inp]), &d).require_grad();
        let w2 = dense::<Ad>(&deq, out, inp, &d).require_grad();
        let g2 = Tensor::<Ad, 2>::from_data(TensorData::new(gv, [m, out]), &d);
        let grads2 = (x2.clone().matmul(w2.clone().transpose()) * g2)
            .sum()
            .backward();
        let dx2 = vec_of(x2.grad(&grads2).unwrap());
        close(&dx, &dx2, 1e-5);
        assert!(
            w2.grad(&grads2).is_some(),
            "the dense reference weight is tracked"
        );

        // The NF4 module has no parameters at all: nothing for an optimizer or grads.
        assert_eq!(lin.num_params(), 0);
        let mut ids = 0;
        struct Count<'a>(&'a mut usize);
        impl<B: Backend> burn::module::ModuleVisitor<B> for Count<'_> {
            fn visit_float<const D: usize>(&mut self, _: &burn::module::Param<Tensor<B, D>>) {
                *self.0 += 1;
            }
        }
        lin.visit(&mut Count(&mut ids));
        assert_eq!(ids, 0);
    }

    #[test]
    fn forward_any_matches_forward_on_both_backends() {
        let (out, inp, m) = (24, 64, 3);
        let w = random(out * inp, 10);
        let xv = random(m * inp, 11);
        let a = Nf4Linear::<Flex>::quantize(&w, out, inp).unwrap();
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(xv.clone(), [m, inp]), &FlexDevice);
        assert_eq!(vec_of(a.forward_any(x.clone())), vec_of(a.forward(x)));
        let b = Nf4Linear::<Ad>::quantize(&w, out, inp).unwrap();
        let x =
            Tensor::<Ad, 2>::from_data(TensorData::new(xv, [m, inp]), &FlexDevice).require_grad();
        let y = b.forward_any(x.clone());
        let grads = y.sum().backward();
        // d(sum(x Wᵀ))/dx = column sums of W broadcast over rows.
        let deq = b.dense_weight_out_in();
        let dx = vec_of(x.grad(&grads).unwrap());
        for r in 0..m {
            for c in 0..inp {
                let want: f32 = (0..out).map(|o| deq[o * inp + c]).sum();
                assert!((dx[r * inp + c] - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn forward_any_takes_the_fused_path_under_gradient_checkpointing() {
        type Ck = Autodiff<Flex, BalancedCheckpointing>;
        let (out, inp, m) = (40, 128, 5);
        let w = random(out * inp, 12);
        let xv = random(m * inp, 13);
        let gv = random(m * out, 14);
        let run = |any: bool| {
            let lin = Nf4Linear::<Ck>::quantize(&w, out, inp).unwrap();
            let x = Tensor::<Ck, 2>::from_data(TensorData::new(xv.clone(), [m, inp]), &FlexDevice)
                .require_grad();
            let g = Tensor::<Ck, 2>::from_data(TensorData::new(gv.clone(), [m, out]), &FlexDevice);
            let y = if any {
                lin.forward_any(x.clone())
            } else {
                lin.forward(x.clone())
            };
            let grads = (y.clone() * g).sum().backward();
            (vec_of(y), vec_of(x.grad(&grads).unwrap()))
        };
        // Bit-equal to the Nf4Backend path (fused kernel, hand-written backward).
        assert_eq!(run(true), run(false));
    }

    #[test]
    fn untracked_input_runs_without_graph() {
        let (out, inp) = (16, 64);
        let lin = Nf4Linear::<Ad>::quantize(&random(out * inp, 8), out, inp).unwrap();
        let x =
            Tensor::<Ad, 2>::from_data(TensorData::new(random(2 * inp, 9), [2, inp]), &FlexDevice);
        assert_eq!(lin.forward(x).dims(), [2, out]);
    }

    #[test]
    fn rejects_non_matrix_weight() {
        let q = Quantized4bit::quantize(
            &random(64, 1),
            &[4, 4, 4],
            crate::SourceDtype::F32,
            crate::QuantizeOptions::default(),
        )
        .unwrap();
        assert!(matches!(
            Nf4Linear::<Flex>::new(q),
            Err(Error::Shape { .. })
        ));
    }
}
