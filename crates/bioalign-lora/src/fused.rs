//! The LoRA update `u = s · (h · A) · B` as one autodiff op on `Autodiff<Flex>`, its
//! six small products run by bioalign-quant's blocked kernel.
//!
//! Written with burn's ops, the update is two `matmul`s and a `mul_scalar`: three graph
//! nodes whose backward runs burn-flex's general matmul on transposed views (each
//! copied to a fresh, zeroed buffer first). In a QLoRA step of SmolLM2-135M those
//! were 11% of the time (`perf record`, session 14). Here the backward is written out:
//! with `t = s · h · A` (kept from the forward, `[m, r]`) and `dU` the gradient of `u`,
//!
//! - `dt = s · dU · Bᵀ` (`[m, r]`),
//! - `dB = tᵀ · dU` (`[r, out]`),
//! - `dA = hᵀ · dt`, computed as `(dtᵀ · h)ᵀ` so only `r`-row matrices are transposed,
//! - `dh = dt · Aᵀ`.

use std::any::Any;
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_flex::Flex;

use bioalign_quant::dense::{f32_contiguous, f32_slice};
use bioalign_quant::kernels::{self, Isa, Product};

/// `scaling · (h · A) · B`: `h` `[m, in]`, `A` `[in, r]`, `B` `[r, out]`. Under
/// `Autodiff<Flex>` (with or without gradient checkpointing) one fused op; elsewhere
/// burn's ops.
pub(crate) fn lora_delta<B: Backend>(
    h: Tensor<B, 2>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    scaling: f32,
    recompute: Option<Recompute>,
) -> Tensor<B, 2> {
    match fused_delta(&h, &a, &b, scaling, recompute) {
        Some(u) => u,
        None => crate::matmul_last(crate::matmul_last(h, a), b).mul_scalar(scaling),
    }
}

/// The fused op when `B` is `Autodiff<Flex>` (either checkpointing strategy).
fn fused_delta<B: Backend>(
    h: &Tensor<B, 2>,
    a: &Tensor<B, 2>,
    b: &Tensor<B, 2>,
    scaling: f32,
    recompute: Option<Recompute>,
) -> Option<Tensor<B, 2>> {
    macro_rules! fused {
        ($ad:ty) => {
            if let (Some(h2), Some(a2), Some(b2)) = (
                (h as &dyn Any).downcast_ref::<Tensor<$ad, 2>>(),
                (a as &dyn Any).downcast_ref::<Tensor<$ad, 2>>(),
                (b as &dyn Any).downcast_ref::<Tensor<$ad, 2>>(),
            ) {
                let u = lora_autodiff(h2.clone(), a2.clone(), b2.clone(), scaling, recompute);
                return (Box::new(u) as Box<dyn Any>)
                    .downcast::<Tensor<B, 2>>()
                    .ok()
                    .map(|u| *u);
            }
        };
    }
    fused!(Autodiff<Flex, NoCheckpointing>);
    fused!(Autodiff<Flex, BalancedCheckpointing>);
    None
}

/// `[rows, cols]` row-major to `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for (i, row) in v.chunks_exact(cols.max(1)).enumerate() {
        for (j, &x) in row.iter().enumerate() {
            out[j * rows + i] = x;
        }
    }
    out
}

fn product(x: &[f32], m: usize, p: Product<'_>) -> Vec<f32> {
    kernels::product(x, m, p, Isa::detect(), 0).expect("LoRA shapes checked by the caller")
}

/// `x · w`: `x` `[m, cols]`, `w` `[cols, n]`.
fn kn(x: &[f32], m: usize, w: &[f32], cols: usize, n: usize) -> Vec<f32> {
    product(x, m, Product::KnF32 { w, cols, n })
}

/// `x · wᵀ`: `x` `[m, cols]`, `w` `[rows, cols]`.
fn nt(x: &[f32], m: usize, w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    product(x, m, Product::NtF32 { w, rows, cols })
}

fn flex(v: Vec<f32>, shape: [usize; 2]) -> FloatTensor<Flex> {
    Flex::float_from_data(TensorData::new(v, shape), &Default::default())
}

fn dims2(t: &FloatTensor<Flex>) -> [usize; 2] {
    let s = t.shape();
    [s[0], s[1]]
}

/// Makes a LoRA input again in the backward, for an update that should not keep its
/// input alive from the forward to the backward: the `down_proj` input is the SwiGLU
/// of `gate_proj`'s and `up_proj`'s outputs, which the SwiGLU's own backward keeps
/// anyway, so recomputing it from them drops `[tokens, intermediate]` floats per
/// layer from the activations a step holds. The recipe must give exactly the values
/// the forward was given (the same kernel on the same inputs), so the gradients are
/// the same bit for bit.
#[derive(Clone)]
pub struct Recompute(Arc<dyn Fn() -> FloatTensor<Flex> + Send + Sync>);

impl Recompute {
    /// A recipe for the input (any shape with the input's elements, row-major).
    pub fn new(f: impl Fn() -> FloatTensor<Flex> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for Recompute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recompute")
    }
}

/// The update's input as the backward gets it.
#[derive(Clone, Debug)]
enum Input {
    /// Kept from the forward (contiguous).
    Kept(FloatTensor<Flex>),
    /// Made again by the recipe.
    Again(Recompute),
}

/// What the backward needs: `h` (`[m, in]`), `A`, `B` (contiguous) and `t = s · h · A`.
#[derive(Clone, Debug)]
struct LoraState {
    h: Input,
    m: usize,
    a: FloatTensor<Flex>,
    b: FloatTensor<Flex>,
    t: Vec<f32>,
    scaling: f32,
}

#[derive(Debug)]
struct LoraBackward;

impl Backward<Flex, 3> for LoraBackward {
    type State = LoraState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let LoraState {
            h,
            m,
            a,
            b,
            t,
            scaling,
        } = ops.state;
        let du = f32_contiguous(grads.consume::<Flex>(&ops.node));
        let ([inp, r], [_, out]) = (dims2(&a), dims2(&b));
        let h = match h {
            Input::Kept(h) => h,
            Input::Again(f) => f32_contiguous(f.0()),
        };
        assert_eq!(
            h.shape().num_elements(),
            m * inp,
            "a recomputed LoRA input has the forward's size"
        );
        let du = f32_slice(&du);
        let (hs, as_, bs) = (f32_slice(&h), f32_slice(&a), f32_slice(&b));
        let [ph, pa, pb] = ops.parents;
        // dt = s · dU · Bᵀ
        let mut dt = nt(du, m, bs, r, out);
        dt.iter_mut().for_each(|v| *v *= scaling);
        if let Some(n) = pb {
            // dB = tᵀ · dU
            let db = kn(&transpose(&t, m, r), r, du, m, out);
            grads.register::<Flex>(n.id, flex(db, [r, out]));
        }
        if let Some(n) = pa {
            // dA = (dtᵀ · h)ᵀ
            let dat = kn(&transpose(&dt, m, r), r, hs, m, inp);
            grads.register::<Flex>(n.id, flex(transpose(&dat, r, inp), [inp, r]));
        }
        if let Some(n) = ph {
            // dh = dt · Aᵀ
            let dh = nt(&dt, m, as_, inp, r);
            grads.register::<Flex>(n.id, flex(dh, [m, inp]));
        }
    }
}

fn lora_autodiff<C: CheckpointStrategy>(
    h: Tensor<Autodiff<Flex, C>, 2>,
    a: Tensor<Autodiff<Flex, C>, 2>,
    b: Tensor<Autodiff<Flex, C>, 2>,
    scaling: f32,
    recompute: Option<Recompute>,
) -> Tensor<Autodiff<Flex, C>, 2> {
    let (h, a, b) = (
        h.into_primitive().tensor(),
        a.into_primitive().tensor(),
        b.into_primitive().tensor(),
    );
    let (hp, ap, bp) = (
        f32_contiguous(h.primitive.clone()),
        f32_contiguous(a.primitive.clone()),
        f32_contiguous(b.primitive.clone()),
    );
    let ([m, inp], [inp_a, r], [r_b, out]) = (dims2(&hp), dims2(&ap), dims2(&bp));
    assert!(
        inp == inp_a && r == r_b,
        "LoRA shapes: h [{m}, {inp}], A [{inp_a}, {r}], B [{r_b}, {out}]"
    );
    let mut t = kn(f32_slice(&hp), m, f32_slice(&ap), inp, r);
    t.iter_mut().for_each(|v| *v *= scaling);
    let u = flex(kn(&t, m, f32_slice(&bp), r, out), [m, out]);
    let node = match LoraBackward
        .prepare::<C>([h.node.clone(), a.node.clone(), b.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            LoraState {
                h: match recompute {
                    Some(f) => Input::Again(f),
                    None => Input::Kept(hp),
                },
                m,
                a: ap,
                b: bp,
                t,
                scaling,
            },
            u,
        ),
        OpsKind::UnTracked(prep) => prep.finish(u),
    };
    Tensor::from_primitive(TensorPrimitive::Float(node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::FlexDevice;

    type Ad = Autodiff<Flex>;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn vec_of<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
    }

    /// The fused op against the same update written with burn's ops (whose backward
    /// is burn-autodiff's own): values and the gradients of `h`, `A` and `B`, over
    /// shapes with partial micro-panels and a rank below the kernel's panel width.
    #[test]
    fn fused_update_and_gradients_match_burn_ops() {
        for (m, inp, r, out) in [(7, 40, 4, 33), (150, 96, 16, 70), (3, 16, 1, 5)] {
            let (hv, av, bv, gv) = (
                random(m * inp, 1),
                random(inp * r, 2),
                random(r * out, 3),
                random(m * out, 4),
            );
            let run = |fused: bool| {
                let mk = |v: &Vec<f32>, s: [usize; 2]| {
                    Tensor::<Ad, 2>::from_data(TensorData::new(v.clone(), s), &FlexDevice)
                        .require_grad()
                };
                let (h, a, b) = (mk(&hv, [m, inp]), mk(&av, [inp, r]), mk(&bv, [r, out]));
                let g =
                    Tensor::<Ad, 2>::from_data(TensorData::new(gv.clone(), [m, out]), &FlexDevice);
                let u = if fused {
                    fused_delta(&h, &a, &b, 2.5, None).expect("Autodiff<Flex> takes the fused op")
                } else {
                    h.clone()
                        .matmul(a.clone())
                        .matmul(b.clone())
                        .mul_scalar(2.5)
                };
                let grads = (u.clone() * g).sum().backward();
                [
                    vec_of(u),
                    vec_of(h.grad(&grads).unwrap()),
                    vec_of(a.grad(&grads).unwrap()),
                    vec_of(b.grad(&grads).unwrap()),
                ]
            };
            let (want, got) = (run(false), run(true));
            for (name, (w, g)) in ["u", "dh", "dA", "dB"].iter().zip(want.iter().zip(&got)) {
                assert_eq!(w.len(), g.len(), "{name} length at {m}x{inp}x{r}x{out}");
                let scale = w.iter().fold(1f32, |s, v| s.max(v.abs()));
                for (x, y) in w.iter().zip(g) {
                    assert!(
                        (x - y).abs() <= 1e-5 * scale,
                        "{name} at {m}x{inp}x{r}x{out}: {x} vs {y}"
                    );
                }
            }
        }
    }

    /// With a recipe, the backward makes `h` again (once) rather than keeping it, and
    /// every gradient is the same bit for bit as when `h` is kept.
    #[test]
    fn a_recomputed_input_gives_the_same_gradients_bit_for_bit() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (m, inp, r, out) = (150, 96, 16, 70);
        let (hv, av, bv, gv) = (
            random(m * inp, 11),
            random(inp * r, 12),
            random(r * out, 13),
            random(m * out, 14),
        );
        let calls = Arc::new(AtomicUsize::new(0));
        let run = |recompute: bool| {
            let mk = |v: &Vec<f32>, s: [usize; 2]| {
                Tensor::<Ad, 2>::from_data(TensorData::new(v.clone(), s), &FlexDevice)
                    .require_grad()
            };
            let (h, a, b) = (mk(&hv, [m, inp]), mk(&av, [inp, r]), mk(&bv, [r, out]));
            let recipe = recompute.then(|| {
                let (hv, calls) = (hv.clone(), Arc::clone(&calls));
                Recompute::new(move || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    flex(hv.clone(), [m, inp])
                })
            });
            let u = fused_delta(&h, &a, &b, 2.0, recipe).expect("the fused op");
            let g = Tensor::<Ad, 2>::from_data(TensorData::new(gv.clone(), [m, out]), &FlexDevice);
            let grads = (u.clone() * g).sum().backward();
            [
                vec_of(u),
                vec_of(h.grad(&grads).unwrap()),
                vec_of(a.grad(&grads).unwrap()),
                vec_of(b.grad(&grads).unwrap()),
            ]
        };
        let kept = run(false);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let again = run(true);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the recipe runs once, in the backward"
        );
        for (name, (k, a)) in ["u", "dh", "dA", "dB"].iter().zip(kept.iter().zip(&again)) {
            let same = k.iter().zip(a).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same && k.len() == a.len(), "{name} differs");
        }
    }

    /// Only `Autodiff<Flex>` takes the fused op (plain burn-flex already runs the two
    /// products through the blocked kernel).
    #[test]
    fn fused_op_is_taken_under_autodiff_only() {
        let mk = |s: [usize; 2]| TensorData::new(random(s[0] * s[1], 8), s);
        let (h, a, b) = (mk([3, 8]), mk([8, 2]), mk([2, 4]));
        let t = |d: &TensorData| Tensor::<Flex, 2>::from_data(d.clone(), &FlexDevice);
        assert!(fused_delta(&t(&h), &t(&a), &t(&b), 1.0, None).is_none());
        type Ck = Autodiff<Flex, BalancedCheckpointing>;
        let t = |d: &TensorData| Tensor::<Ck, 2>::from_data(d.clone(), &FlexDevice);
        assert!(fused_delta(&t(&h), &t(&a), &t(&b), 1.0, None).is_some());
    }

    /// Without a tracked input the op builds no graph and gives the same values.
    #[test]
    fn untracked_inputs_give_the_same_update() {
        let (m, inp, r, out) = (5, 24, 8, 12);
        let mk = |v: Vec<f32>, s: [usize; 2]| {
            Tensor::<Ad, 2>::from_data(TensorData::new(v, s), &FlexDevice)
        };
        let (h, a, b) = (
            mk(random(m * inp, 5), [m, inp]),
            mk(random(inp * r, 6), [inp, r]),
            mk(random(r * out, 7), [r, out]),
        );
        let fused = vec_of(fused_delta(&h, &a, &b, 0.5, None).expect("the fused op"));
        let plain = vec_of(h.matmul(a).matmul(b).mul_scalar(0.5));
        for (x, y) in fused.iter().zip(&plain) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }
}
