//! Dense f32 products on burn-flex through the blocked kernels of
//! [`crate::kernels`]: the frozen projections of an inference forward.
//!
//! burn-flex hands `x · W` to the `gemm` crate. Criterion `dense1024_*` on a 2-core
//! AVX2 EPYC, `[1024, in]` rows, GFLOP/s blocked vs gemm: SmolLM2 q 113 vs 103, k/v 92
//! vs 100, gate 125 vs 131, down 108 vs 141, tied LM head 144 vs 82. In a 32 × 32
//! forward the LM head is a fifth of the work, so the forward gains overall; the
//! projections are about even. Only plain
//! [`burn_flex::Flex`] tensors take this path: under autodiff, or on another
//! backend, the caller's burn product runs.

use std::any::Any;

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};

use crate::kernels::{self, Isa, Product};

/// How a dense weight is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[in, out]`: burn's `Linear` (`y = x · W`).
    InOut,
    /// `[out, in]`: Hugging Face's and a tied embedding's (`y = x · Wᵀ`).
    OutIn,
}

/// Rows of `x` below which the caller's product runs: none but an empty `x` (a
/// product of a few rows streams the weight once through the kernels' row-dot or
/// column-streaming paths; burn-flex's gemm ran SmolLM2's batch-1 projections at
/// about a third of the memory bandwidth).
const MIN_ROWS: usize = 1;

/// `x` `[m, in]` times the weight `w` (stored as `layout` says) on burn-flex with
/// the blocked kernel. Returns `Err(x)` untouched when the path does not apply:
/// another backend (autodiff included), an empty `x`, a weight that is
/// not f32, or mismatched features (the caller's product then reports it).
pub fn try_flex_matmul<B: Backend>(
    x: Tensor<B, 2>,
    w: &Tensor<B, 2>,
    layout: WeightLayout,
) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    let [m, k] = x.dims();
    let [w0, w1] = w.dims();
    let (k_w, n) = match layout {
        WeightLayout::InOut => (w0, w1),
        WeightLayout::OutIn => (w1, w0),
    };
    if m < MIN_ROWS || k != k_w {
        return Err(x);
    }
    let Some(wf) = (w as &dyn Any).downcast_ref::<Tensor<Flex, 2>>() else {
        return Err(x);
    };
    let wt = wf.clone().into_primitive().tensor();
    if wt.dtype() != burn::tensor::DType::F32 {
        return Err(x);
    }
    // A strided view (a transposed adapter matrix, say) is copied rather than handed
    // back: the same values then always take the same kernel and round the same way.
    let wt = f32_contiguous(wt);
    let ws = f32_slice(&wt);
    let xf: Tensor<Flex, 2> = same_type(x);
    let device = xf.device();
    let xt = f32_contiguous(xf.into_primitive().tensor());
    let xs = f32_slice(&xt);
    let product = match layout {
        WeightLayout::InOut => Product::KnF32 { w: ws, cols: k, n },
        WeightLayout::OutIn => Product::NtF32 {
            w: ws,
            rows: n,
            cols: k,
        },
    };
    let y = kernels::product(xs, m, product, Isa::detect(), 0).expect("shapes checked above");
    let out = Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(Flex::float_from_data(
        kernels::pool::f32_data(y, [m, n]),
        &device,
    )));
    Ok(same_type(out))
}

/// `t` as a contiguous f32 tensor whose values [`f32_slice`] borrows: `t` itself when
/// it already is one (read in place: `into_data` would copy a buffer the autodiff graph
/// shares, then copy it again to align it), else a copy.
pub fn f32_contiguous(t: FlexTensor) -> FlexTensor {
    if t.dtype() != DType::F32 {
        let shape = t.shape();
        let v = t.into_data().convert::<f32>().into_vec::<f32>();
        return FlexTensor::from_data(TensorData::new(v.expect("f32 after convert"), shape));
    }
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

/// The values of a tensor made by [`f32_contiguous`].
pub fn f32_slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("an f32 tensor made contiguous by `f32_contiguous`")
}

/// Whether `B` is burn-flex, plain or under autodiff (with or without gradient
/// checkpointing): the backends whose tensors this crate's CPU kernels read.
pub fn is_cpu_backend<B: Backend>() -> bool {
    use burn::backend::Autodiff;
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    use std::any::TypeId;
    let b = TypeId::of::<B>();
    b == TypeId::of::<Flex>()
        || b == TypeId::of::<Autodiff<Flex>>()
        || b == TypeId::of::<Autodiff<Flex, BalancedCheckpointing>>()
}

/// `t` as `U`, which the caller established is `T` (`B` is `Flex`: the weight downcast
/// succeeded).
fn same_type<T: 'static, U: 'static>(t: T) -> U {
    *(Box::new(t) as Box<dyn Any>)
        .downcast::<U>()
        .expect("B is Flex: the weight downcast succeeded")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn_flex::FlexDevice;

    fn t<B: Backend>(v: &[f32], shape: [usize; 2]) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
    }

    fn vals<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
    }

    fn data(n: usize, s: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * s % 97) as f32 - 48.0) / 40.0)
            .collect()
    }

    #[test]
    fn both_layouts_match_burn_matmul() {
        let (m, k, n) = (37, 70, 45);
        let x = t::<Flex>(&data(m * k, 13), [m, k]);
        let w_kn = t::<Flex>(&data(k * n, 7), [k, n]);
        let want = vals(x.clone().matmul(w_kn.clone()));
        let got = vals(try_flex_matmul(x.clone(), &w_kn, WeightLayout::InOut).unwrap());
        let w_nk = w_kn.clone().transpose().into_data();
        let w_nk = Tensor::<Flex, 2>::from_data(w_nk, &FlexDevice);
        let got_t = vals(try_flex_matmul(x.clone(), &w_nk, WeightLayout::OutIn).unwrap());
        // A transposed (non-contiguous) input is copied first.
        let xt = t::<Flex>(&vals(x.clone().transpose()), [k, m]).transpose();
        let got_x = vals(try_flex_matmul(xt, &w_kn, WeightLayout::InOut).unwrap());
        for (i, w) in want.iter().enumerate() {
            for g in [got[i], got_t[i], got_x[i]] {
                assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{i}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn cpu_backends_are_recognized() {
        use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
        assert!(is_cpu_backend::<Flex>());
        assert!(is_cpu_backend::<Autodiff<Flex>>());
        assert!(is_cpu_backend::<Autodiff<Flex, BalancedCheckpointing>>());
        // Autodiff over autodiff is not a backend these kernels read.
        assert!(!is_cpu_backend::<Autodiff<Autodiff<Flex>>>());
    }

    #[test]
    fn other_cases_hand_the_input_back() {
        let w = t::<Flex>(&data(8 * 5, 5), [8, 5]);
        // No rows: the caller's product.
        let x0 = t::<Flex>(&[], [0, 8]);
        assert!(try_flex_matmul(x0, &w, WeightLayout::InOut).is_err());
        // Three rows: the kernels' column-streaming product, within rounding of burn's.
        let x3 = t::<Flex>(&data(3 * 8, 3), [3, 8]);
        let ours = vals(try_flex_matmul(x3.clone(), &w, WeightLayout::InOut).unwrap());
        for (g, b) in ours.iter().zip(vals(x3.matmul(w.clone()))) {
            assert!((g - b).abs() <= 1e-5 * (1.0 + b.abs()), "{g} vs burn's {b}");
        }
        let x = t::<Flex>(&data(6 * 8, 3), [6, 8]);
        // Features mismatch (8 vs 5 under `OutIn`).
        let back = try_flex_matmul(x.clone(), &w, WeightLayout::OutIn).unwrap_err();
        assert_eq!(vals(back), vals(x));
        // A transposed weight view is copied and gives the same bits as its contiguous copy.
        let wv = t::<Flex>(&data(5 * 8, 5), [5, 8]).transpose();
        let wc = t::<Flex>(&vals(wv.clone()), [8, 5]);
        let x6 = t::<Flex>(&data(48, 3), [6, 8]);
        let a = vals(try_flex_matmul(x6.clone(), &wv, WeightLayout::InOut).unwrap());
        let b = vals(try_flex_matmul(x6, &wc, WeightLayout::InOut).unwrap());
        assert_eq!(a, b);
        // Autodiff keeps burn's product (and its graph).
        type Ad = Autodiff<Flex>;
        let xa = t::<Ad>(&data(48, 3), [6, 8]);
        let wa = t::<Ad>(&data(40, 5), [8, 5]);
        assert!(try_flex_matmul(xa, &wa, WeightLayout::InOut).is_err());
    }
}
