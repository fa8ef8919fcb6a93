//! SwiGLU's gate (`silu(g) · u`), RMSNorm, RoPE and grouped-query attention as
//! single ops on burn-flex, with hand-written backward passes under burn's autodiff.
//!
//! Written as burn ops, SwiGLU runs three passes forward (sigmoid, two products) and
//! its graph keeps four `[tokens, intermediate]` tensors (`g`, `sigmoid(g)`,
//! `silu(g)`, `u`); RMSNorm runs six and keeps five `[tokens, hidden]` ones. The fused
//! ops read their inputs once and keep only them (`g`, `u`; `x`, `weight`), which
//! is most of a training step's activation memory besides attention.
//!
//! The inputs are read in place ([`View`]: a contiguous tensor, a transposed view or
//! a broadcast one, without copying), and RoPE and attention write `[b, h, s, d]`
//! results stored as `[b, s, h, d]`, the layout the projections produce and consume,
//! so the head transposes around attention cost nothing. The arithmetic is in
//! [`super::kernels`]. Any other backend, or a tensor not on burn-flex, runs the burn
//! expressions unchanged.

use bioalign_lora::Recompute;
use std::any::Any;
use std::sync::Arc;

use bioalign_quant::Q8Packed;
use bioalign_quant::dense::{f32_contiguous as contiguous, f32_slice as slice};

use super::layers::PackedWeight;

use super::kernels::{self, AttentionDims, View};
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::{DType, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_flex::{Flex, FlexTensor, Layout};

/// `silu(g) · u` for `g`, `u` of the same shape.
pub(crate) fn swiglu<B: Backend, const D: usize>(g: Tensor<B, D>, u: Tensor<B, D>) -> Tensor<B, D> {
    macro_rules! fused {
        ($ad:ty) => {
            if let Some((g2, u2)) = both::<B, $ad, D>(&g, &u) {
                return same_type(swiglu_autodiff::<_, D>(g2, u2));
            }
        };
    }
    if let Some((g2, u2)) = both::<B, Flex, D>(&g, &u) {
        let y = swiglu_flex(&g2.into_primitive().tensor(), &u2.into_primitive().tensor());
        return same_type(Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(y)));
    }
    fused!(Autodiff<Flex, NoCheckpointing>);
    fused!(Autodiff<Flex, BalancedCheckpointing>);
    silu(g) * u
}

/// `weight · x / sqrt(mean(x²) + eps)` over the last dimension of `x`.
pub(crate) fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    macro_rules! fused {
        ($ad:ty) => {
            if let (Some(x2), Some(w2)) = (
                (&x as &dyn Any).downcast_ref::<Tensor<$ad, D>>(),
                (&weight as &dyn Any).downcast_ref::<Tensor<$ad, 1>>(),
            ) {
                return same_type(rms_norm_autodiff::<_, D>(
                    x2.clone(),
                    w2.clone(),
                    eps as f32,
                ));
            }
        };
    }
    if let (Some(x2), Some(w2)) = (
        (&x as &dyn Any).downcast_ref::<Tensor<Flex, D>>(),
        (&weight as &dyn Any).downcast_ref::<Tensor<Flex, 1>>(),
    ) {
        let y = rms_flex(
            &x2.clone().into_primitive().tensor(),
            &w2.clone().into_primitive().tensor(),
            eps as f32,
        );
        return same_type(Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(y)));
    }
    fused!(Autodiff<Flex, NoCheckpointing>);
    fused!(Autodiff<Flex, BalancedCheckpointing>);
    let var = x.clone().square().mean_dim(D - 1);
    let x = x * var.add_scalar(eps).sqrt().recip();
    x * weight.unsqueeze::<D>()
}

/// `x · Wᵀ` for a frozen packed `W` `[out, in]` over the last dimension of `x`:
/// `[.., in] -> [.., out]`. On burn-flex bioalign-quant's kernels for the packing;
/// anywhere else, autodiff included, a product with `W`'s values as f32 (so `x`
/// keeps its precision and gets its gradient).
pub(crate) fn packed_linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    w: &PackedWeight,
) -> Tensor<B, D> {
    let dims = x.dims();
    let (out, inp) = w.shape();
    let m = dims[..D - 1].iter().product::<usize>();
    let mut out_dims = dims;
    out_dims[D - 1] = out;
    if let Some(x2) = (&x as &dyn Any).downcast_ref::<Tensor<Flex, D>>() {
        let xt = contiguous(x2.clone().into_primitive().tensor());
        let y = w.matmul_nt(slice(&xt), m);
        let y = y.expect("the input features match the weight (checked when loading)");
        let y = FlexTensor::from_data(bioalign_quant::kernels::pool::f32_data(y, out_dims));
        return same_type(Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(y)));
    }
    let table = Tensor::<B, 2>::from_data(TensorData::new(w.to_f32(), [out, inp]), &x.device());
    x.reshape([m, inp])
        .matmul(table.transpose())
        .reshape(out_dims)
}

/// `x · Wᵀ` for a frozen 8-bit `W` `[rows, cols]` (a tied LM head kept in GGUF's
/// `Q8_0` form): `[m, cols] -> [m, rows]`. On burn-flex the blocked kernel widens
/// tiles of `W` while packing them; under autodiff the backward is `dY · W` from the
/// same codes, and `W` gets no gradient. Another backend multiplies by the expanded
/// table (the loader keeps tables 8-bit only on burn-flex).
pub(crate) fn q8_head<B: Backend>(x: Tensor<B, 2>, w: &Arc<Q8Packed>) -> Tensor<B, 2> {
    macro_rules! fused {
        ($ad:ty) => {
            if let Some(x2) = (&x as &dyn Any).downcast_ref::<Tensor<$ad, 2>>() {
                return same_type(q8_head_autodiff(x2.clone(), w));
            }
        };
    }
    if let Some(x2) = (&x as &dyn Any).downcast_ref::<Tensor<Flex, 2>>() {
        let y = q8_flex(x2.clone().into_primitive().tensor(), w, false);
        return same_type(Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(y)));
    }
    fused!(Autodiff<Flex, NoCheckpointing>);
    fused!(Autodiff<Flex, BalancedCheckpointing>);
    let table = Tensor::<B, 2>::from_data(
        TensorData::new(w.dequantize(), [w.rows(), w.cols()]),
        &x.device(),
    );
    x.matmul(table.transpose())
}

/// `x · Wᵀ` (or, for the input gradient, `x · W`) on burn-flex.
fn q8_flex(x: FloatTensor<Flex>, w: &Q8Packed, grad: bool) -> FloatTensor<Flex> {
    let x = contiguous(x);
    let m = x.shape().num_elements() / if grad { w.rows() } else { w.cols() };
    let (y, n) = if grad {
        (w.matmul_nn(slice(&x), m), w.cols())
    } else {
        (w.matmul_nt(slice(&x), m), w.rows())
    };
    let y = y.expect("the hidden size matches the table (checked when loading)");
    FlexTensor::from_data(bioalign_quant::kernels::pool::f32_data(y, [m, n]))
}

#[derive(Debug)]
struct Q8HeadBackward;

impl Backward<Flex, 1> for Q8HeadBackward {
    type State = Arc<Q8Packed>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let [px] = ops.parents;
        if let Some(n) = px {
            grads.register::<Flex>(n.id, q8_flex(dy, &ops.state, true));
        }
    }
}

fn q8_head_autodiff<C: CheckpointStrategy>(
    x: Tensor<Autodiff<Flex, C>, 2>,
    w: &Arc<Q8Packed>,
) -> Tensor<Autodiff<Flex, C>, 2> {
    let x = x.into_primitive().tensor();
    let y = q8_flex(x.primitive.clone(), w, false);
    let out = match Q8HeadBackward
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(Arc::clone(w), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// Both tensors as `Tensor<T, D>` when `B` is `T`.
fn both<B: Backend, T: Backend, const D: usize>(
    a: &Tensor<B, D>,
    b: &Tensor<B, D>,
) -> Option<(Tensor<T, D>, Tensor<T, D>)> {
    let a = (a as &dyn Any).downcast_ref::<Tensor<T, D>>()?;
    let b = (b as &dyn Any).downcast_ref::<Tensor<T, D>>()?;
    Some((a.clone(), b.clone()))
}

/// `t` as `Tensor<B, D>`; the callers checked that the types are equal.
fn same_type<T: Backend, B: Backend, const D: usize>(t: Tensor<T, D>) -> Tensor<B, D> {
    *(Box::new(t) as Box<dyn Any>)
        .downcast::<Tensor<B, D>>()
        .expect("checked: same backend type")
}

/// `t` as a tensor a [`View`] can read: itself when it is f32 with non-negative
/// strides (a transposed or broadcast view included), else a contiguous copy.
fn viewable(t: FloatTensor<Flex>) -> FloatTensor<Flex> {
    if t.dtype() == DType::F32 && t.shape().num_dims() == 4 && view(&t).is_some() {
        t
    } else {
        contiguous(t)
    }
}

/// The 4-D view of an f32 tensor, if its strides allow one.
fn view(t: &FloatTensor<Flex>) -> Option<View<'_>> {
    let l = t.layout();
    let dims: [usize; 4] = l.shape().to_vec().try_into().ok()?;
    let strides: [isize; 4] = l.strides().try_into().ok()?;
    View::new(t.storage::<f32>(), l.start_offset(), dims, strides)
}

/// The view of a tensor made by [`viewable`].
fn view4(t: &FloatTensor<Flex>) -> View<'_> {
    view(t).expect("a 4-D f32 tensor made viewable by `viewable`")
}

fn flex_tensor(v: Vec<f32>, like: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    FlexTensor::from_data(TensorData::new(v, like.shape()))
}

/// A `[b, h, s, d]` tensor whose values `v` are stored as `[b, s, h, d]` (the
/// layout of a projection's output): swapping dimensions 1 and 2 back is free.
fn flex_bshd(v: Vec<f32>, [b, h, s, d]: [usize; 4]) -> FloatTensor<Flex> {
    FlexTensor::from_data(TensorData::new(v, [b, s, h, d])).with_layout(Layout::new(
        Shape::from([b, h, s, d]),
        kernels::bshd_strides([b, h, s, d]).to_vec(),
        0,
    ))
}

/// A recipe that makes `swiglu(g, u)` again from the SwiGLU's inputs, which its own
/// backward keeps anyway, so the `down_proj` adapter need not keep its input
/// (`[tokens, intermediate]` floats per layer) from the forward to the backward.
/// `None` off `Autodiff<Flex>`.
pub(crate) fn swiglu_recipe<B: Backend, const D: usize>(
    g: &Tensor<B, D>,
    u: &Tensor<B, D>,
) -> Option<Recompute> {
    macro_rules! ad {
        ($ad:ty) => {
            if let (Some(g2), Some(u2)) = (
                (g as &dyn Any).downcast_ref::<Tensor<$ad, D>>(),
                (u as &dyn Any).downcast_ref::<Tensor<$ad, D>>(),
            ) {
                let gp = g2.clone().into_primitive().tensor().primitive;
                let up = u2.clone().into_primitive().tensor().primitive;
                return Some(Recompute::new(move || swiglu_flex(&gp, &up)));
            }
        };
    }
    ad!(Autodiff<Flex, NoCheckpointing>);
    ad!(Autodiff<Flex, BalancedCheckpointing>);
    None
}

fn swiglu_flex(g: &FloatTensor<Flex>, u: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    let (g, u) = (contiguous(g.clone()), contiguous(u.clone()));
    flex_tensor(kernels::swiglu_forward(slice(&g), slice(&u)), &g)
}

fn rms_flex(x: &FloatTensor<Flex>, w: &FloatTensor<Flex>, eps: f32) -> FloatTensor<Flex> {
    let (x, w) = (contiguous(x.clone()), contiguous(w.clone()));
    flex_tensor(kernels::rms_forward(slice(&x), slice(&w), eps), &x)
}

#[derive(Debug)]
struct SwigluBackward;

impl Backward<Flex, 2> for SwigluBackward {
    type State = (FloatTensor<Flex>, FloatTensor<Flex>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (g, u) = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        let (dy, gc, uc) = (contiguous(dy), contiguous(g.clone()), contiguous(u.clone()));
        let n = slice(&gc).len();
        let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
        kernels::swiglu_backward(slice(&dy), slice(&gc), slice(&uc), &mut dg, &mut du);
        let [pg, pu] = ops.parents;
        if let Some(n) = pg {
            grads.register::<Flex>(n.id, flex_tensor(dg, &g));
        }
        if let Some(n) = pu {
            grads.register::<Flex>(n.id, flex_tensor(du, &u));
        }
    }
}

fn swiglu_autodiff<C: CheckpointStrategy, const D: usize>(
    g: Tensor<Autodiff<Flex, C>, D>,
    u: Tensor<Autodiff<Flex, C>, D>,
) -> Tensor<Autodiff<Flex, C>, D> {
    let (g, u) = (g.into_primitive().tensor(), u.into_primitive().tensor());
    let y = swiglu_flex(&g.primitive, &u.primitive);
    let out = match SwigluBackward
        .prepare::<C>([g.node.clone(), u.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((g.primitive, u.primitive), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Flex, 2> for RmsNormBackward {
    type State = (FloatTensor<Flex>, FloatTensor<Flex>, f32);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, eps) = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        let [px, pw] = ops.parents;
        let (dy, xc, wc) = (contiguous(dy), contiguous(x.clone()), contiguous(w.clone()));
        let (dx, dw) = kernels::rms_backward(slice(&dy), slice(&xc), slice(&wc), eps, pw.is_some());
        if let Some(n) = px {
            grads.register::<Flex>(n.id, flex_tensor(dx, &x));
        }
        if let Some(n) = pw {
            grads.register::<Flex>(n.id, flex_tensor(dw, &w));
        }
    }
}

fn rms_norm_autodiff<C: CheckpointStrategy, const D: usize>(
    x: Tensor<Autodiff<Flex, C>, D>,
    w: Tensor<Autodiff<Flex, C>, 1>,
    eps: f32,
) -> Tensor<Autodiff<Flex, C>, D> {
    let (x, w) = (x.into_primitive().tensor(), w.into_primitive().tensor());
    let y = rms_flex(&x.primitive, &w.primitive, eps);
    let out = match RmsNormBackward
        .prepare::<C>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x.primitive, w.primitive, eps), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// `softmax(q·kᵀ/√d + bias)·v` for `q` `[b, h, s, d]` and keys and values
/// `[b, kv_heads, t, d]` shared by groups of `h / kv_heads` query heads
/// (grouped-query attention). On burn-flex, plain or under autodiff, the forward
/// and backward are [`kernels::attention_forward`] and
/// [`kernels::attention_backward`] (each key/value head read once for its group,
/// nothing expanded); the graph keeps `q`, the unexpanded `k` and `v` and the bias
/// view, and the backward recomputes the probabilities. burn's differentiable
/// fallback keeps the expanded keys and values and four or five `[b, h, s, t]`
/// tensors (scores, their exponentials, probabilities, ...). Other backends and
/// shapes the kernels do not take (no keys, a bias not `[b, h, s, t]`) run burn's
/// attention.
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Tensor<B, 4>,
) -> Tensor<B, 4> {
    macro_rules! fused {
        ($ad:ty) => {
            if let (Some((q2, k2)), Some((v2, b2))) =
                (both::<B, $ad, 4>(&q, &k), both::<B, $ad, 4>(&v, &bias))
                && attention_shapes(q.dims(), k.dims(), v.dims(), bias.dims()).is_some()
            {
                return same_type(attention_autodiff(q2, k2, v2, b2));
            }
        };
    }
    if let (Some((q2, k2)), Some((v2, b2))) =
        (both::<B, Flex, 4>(&q, &k), both::<B, Flex, 4>(&v, &bias))
    {
        let p = |t: Tensor<Flex, 4>| t.into_primitive().tensor();
        if let Some(out) = attention_flex(&p(q2), &p(k2), &p(v2), &p(b2)) {
            return same_type(flex4(out));
        }
    }
    fused!(Autodiff<Flex, NoCheckpointing>);
    fused!(Autodiff<Flex, BalancedCheckpointing>);
    let heads = q.dims()[1];
    burn::tensor::module::attention(
        q,
        expand_kv(k, heads),
        expand_kv(v, heads),
        None,
        Some(bias),
        AttentionModuleOptions::default(),
    )
}

/// `[b, kv_heads, t, d]` repeated to `[b, heads, t, d]`, each key/value head
/// serving `heads / kv_heads` consecutive query heads.
pub(crate) fn expand_kv<B: Backend>(kv: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    let [b, nkv, t, d] = kv.dims();
    if heads == nkv {
        return kv;
    }
    kv.unsqueeze_dim::<5>(2)
        .expand([b, nkv, heads / nkv, t, d])
        .reshape([b, heads, t, d])
}

/// The sizes when `q` `[b, h, s, d]`, `k` and `v` `[b, kv, t, d]` and the bias fit
/// the attention kernels, with at least one key and the bias already expanded to
/// `[b, h, s, t]` (its gradient is registered at that shape).
fn attention_shapes(
    q: [usize; 4],
    k: [usize; 4],
    v: [usize; 4],
    bias: [usize; 4],
) -> Option<AttentionDims> {
    AttentionDims::of(q, k, v, bias).filter(|a| a.t > 0 && bias == [a.b, a.h, a.s, a.t])
}

/// The attention's softmax scale, `1/√d`.
fn attention_scale(d: usize) -> f32 {
    (1.0 / (d as f64).sqrt()) as f32
}

fn dims4(t: &FloatTensor<Flex>) -> [usize; 4] {
    let d = t.shape().to_vec();
    d.try_into().unwrap_or([0, 0, 0, 0])
}

/// The attention kernel's forward on burn-flex tensors (any strides), or `None`
/// when the shapes do not fit it. The output `[b, h, s, d]` is stored as
/// `[b, s, h, d]`, ready for the output projection.
fn attention_flex(
    q: &FloatTensor<Flex>,
    k: &FloatTensor<Flex>,
    v: &FloatTensor<Flex>,
    bias: &FloatTensor<Flex>,
) -> Option<FloatTensor<Flex>> {
    let AttentionDims { b, h, s, d, .. } =
        attention_shapes(dims4(q), dims4(k), dims4(v), dims4(bias))?;
    let [q, k, v, bias] = [q, k, v, bias].map(|t| viewable(t.clone()));
    let out = kernels::attention_forward(
        view4(&q),
        view4(&k),
        view4(&v),
        view4(&bias),
        attention_scale(d),
    );
    Some(flex_bshd(out, [b, h, s, d]))
}

fn flex4(t: FloatTensor<Flex>) -> Tensor<Flex, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 4> for AttentionBackward {
    /// `q`, `k`, `v` and the bias.
    type State = [FloatTensor<Flex>; 4];

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [q, k, v, bias] = ops.state.map(viewable);
        let d_out = viewable(grads.consume::<Flex>(&ops.node));
        let AttentionDims { b, h, kv, s, t, d } =
            attention_shapes(dims4(&q), dims4(&k), dims4(&v), dims4(&bias))
                .expect("checked when the op was recorded");
        let [pq, pk, pv, pb] = ops.parents;
        let mut dq = vec![0f32; b * s * h * d];
        let mut dk = vec![0f32; b * kv * t * d];
        let mut dv = vec![0f32; b * kv * t * d];
        let mut dbias = pb.as_ref().map(|_| vec![0f32; b * h * s * t]);
        kernels::attention_backward(
            view4(&q),
            view4(&k),
            view4(&v),
            view4(&bias),
            view4(&d_out),
            attention_scale(d),
            &mut dq,
            &mut dk,
            &mut dv,
            dbias.as_deref_mut(),
        );
        if let Some(n) = pq {
            grads.register::<Flex>(n.id, flex_bshd(dq, [b, h, s, d]));
        }
        if let Some(n) = pk {
            grads.register::<Flex>(n.id, flex_tensor(dk, &k));
        }
        if let Some(n) = pv {
            grads.register::<Flex>(n.id, flex_tensor(dv, &v));
        }
        if let (Some(n), Some(db)) = (pb, dbias) {
            grads.register::<Flex>(n.id, flex_tensor(db, &bias));
        }
    }
}

fn attention_autodiff<C: CheckpointStrategy>(
    q: Tensor<Autodiff<Flex, C>, 4>,
    k: Tensor<Autodiff<Flex, C>, 4>,
    v: Tensor<Autodiff<Flex, C>, 4>,
    bias: Tensor<Autodiff<Flex, C>, 4>,
) -> Tensor<Autodiff<Flex, C>, 4> {
    let [q, k, v, bias] = [q, k, v, bias].map(|t| t.into_primitive().tensor());
    let out = attention_flex(&q.primitive, &k.primitive, &v.primitive, &bias.primitive)
        .expect("shapes checked by the caller");
    let nodes = [
        q.node.clone(),
        k.node.clone(),
        v.node.clone(),
        bias.node.clone(),
    ];
    let out = match AttentionBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = [q.primitive, k.primitive, v.primitive, bias.primitive];
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// Rotary embedding over whole heads, `x · cos + rotate_half(x) · sin`, for `x`
/// `[b, h, s, d]` and `cos`/`sin` `[1 or b, 1, s, d]`: one pass on burn-flex, and
/// under autodiff a backward that needs no saved activation (it rotates the
/// gradient back with the same tables). The tables are constants: they get no
/// gradient. Hands the tensors back for other backends or shapes.
#[allow(clippy::type_complexity)]
pub(crate) fn rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>)> {
    let [b, _, s, d] = x.dims();
    let [cb, one, cs, cd] = cos.dims();
    if !(cb == 1 || cb == b)
        || one != 1
        || cs != s
        || cd != d
        || sin.dims() != cos.dims()
        || d % 2 != 0
    {
        return Err((x, cos, sin));
    }
    macro_rules! fused {
        ($ad:ty) => {
            if let (Some((x2, c2)), Some(s2)) = (
                both::<B, $ad, 4>(&x, &cos),
                (&sin as &dyn Any).downcast_ref::<Tensor<$ad, 4>>(),
            ) {
                return Ok(same_type(rope_autodiff(x2, c2, s2.clone())));
            }
        };
    }
    if let (Some((x2, c2)), Some(s2)) = (
        both::<B, Flex, 4>(&x, &cos),
        (&sin as &dyn Any).downcast_ref::<Tensor<Flex, 4>>(),
    ) {
        let p = |t: Tensor<Flex, 4>| t.into_primitive().tensor();
        let y = rope_apply(&p(x2), &p(c2), &p(s2.clone()), false);
        return Ok(same_type(flex4(y)));
    }
    fused!(Autodiff<Flex, NoCheckpointing>);
    fused!(Autodiff<Flex, BalancedCheckpointing>);
    Err((x, cos, sin))
}

/// The rotation (`inverse = false`) or its transpose, the backward.
fn rope_apply(
    x: &FloatTensor<Flex>,
    cos: &FloatTensor<Flex>,
    sin: &FloatTensor<Flex>,
    inverse: bool,
) -> FloatTensor<Flex> {
    let dims = dims4(x);
    let [x, cos, sin] = [x, cos, sin].map(|t| viewable(t.clone()));
    let y = kernels::rope(view4(&x), view4(&cos), view4(&sin), inverse);
    flex_bshd(y, dims)
}

#[derive(Debug)]
struct RopeBackward;

impl Backward<Flex, 1> for RopeBackward {
    /// The `cos` and `sin` tables.
    type State = (FloatTensor<Flex>, FloatTensor<Flex>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (cos, sin) = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        let [px] = ops.parents;
        if let Some(n) = px {
            grads.register::<Flex>(n.id, rope_apply(&dy, &cos, &sin, true));
        }
    }
}

fn rope_autodiff<C: CheckpointStrategy>(
    x: Tensor<Autodiff<Flex, C>, 4>,
    cos: Tensor<Autodiff<Flex, C>, 4>,
    sin: Tensor<Autodiff<Flex, C>, 4>,
) -> Tensor<Autodiff<Flex, C>, 4> {
    let x = x.into_primitive().tensor();
    let (cos, sin) = (
        cos.inner().into_primitive().tensor(),
        sin.inner().into_primitive().tensor(),
    );
    let y = rope_apply(&x.primitive, &cos, &sin, false);
    let out = match RopeBackward
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((cos, sin), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn_flex::FlexDevice;

    type Ad = Autodiff<Flex>;

    fn close<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>, tol: f32, what: &str) {
        let a = a.into_data().convert::<f32>().into_vec::<f32>().unwrap();
        let b = b.into_data().convert::<f32>().into_vec::<f32>().unwrap();
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// The `down_proj` adapter that makes its input again in the backward (what
    /// `Mlp::forward` does in training) gives the same gradients, bit for bit, as the
    /// one that keeps it.
    #[test]
    fn recomputing_the_down_proj_input_changes_no_gradient() {
        use super::super::layers::{Mlp, Projection};
        use bioalign_lora::ModuleLora;
        use rand::SeedableRng;
        let (hidden, inter, tokens) = (24, 40, 7);
        let dev = FlexDevice;
        let w = |o: usize, i: usize| -> Projection<Ad> {
            let t = Tensor::<Flex, 2>::random([o, i], Distribution::Normal(0.0, 0.2), &dev);
            let v = t.into_data().into_vec::<f32>().unwrap();
            Projection::dense(&v, o, i, &dev)
        };
        let lora = ModuleLora {
            r: 4,
            alpha: 8.0,
            scaling: 2.0,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut down = w(hidden, inter).with_lora(lora, 0.0, &mut rng, &dev);
        let b = Tensor::<Ad, 2>::random([4, hidden], Distribution::Normal(0.0, 0.5), &dev);
        let a = down.adapter().unwrap().lora_a().val();
        down.adapter_mut().unwrap().set_lora(a, b);
        let mlp = Mlp {
            gate_proj: w(inter, hidden),
            up_proj: w(inter, hidden),
            down_proj: down,
            recompute_input: true,
        };
        let x = Tensor::<Ad, 3>::random([1, tokens, hidden], Distribution::Normal(0.0, 1.0), &dev)
            .require_grad();
        let dy = Tensor::<Ad, 3>::random([1, tokens, hidden], Distribution::Normal(0.0, 1.0), &dev);
        let grads = |y: Tensor<Ad, 3>| {
            let g = (y * dy.clone()).sum().backward();
            let slot = mlp.down_proj.adapter().unwrap();
            [
                x.grad(&g).unwrap().into_data(),
                slot.lora_a().val().grad(&g).unwrap().into_data(),
                slot.lora_b().val().grad(&g).unwrap().into_data(),
            ]
        };
        let again = grads(mlp.forward(x.clone()));
        let kept = grads({
            let gate = mlp.gate_proj.forward(x.clone());
            let up = mlp.up_proj.forward(x.clone());
            mlp.down_proj.forward(swiglu(gate, up))
        });
        for (name, (k, a)) in ["dx", "dA", "dB"].iter().zip(kept.iter().zip(&again)) {
            let (k, a) = (k.to_vec::<f32>().unwrap(), a.to_vec::<f32>().unwrap());
            assert!(k.iter().any(|v| *v != 0.0), "{name} is not trivially zero");
            let same =
                k.len() == a.len() && k.iter().zip(&a).all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same, "{name} differs");
        }
        assert!(swiglu_recipe(&x, &x).is_some());
        let plain = Tensor::<Flex, 2>::zeros([2, 2], &dev);
        assert!(swiglu_recipe(&plain, &plain).is_none());
    }

    /// The 8-bit LM head gives the expanded table's product and input gradient (on
    /// burn-flex, plain and under autodiff, with and without checkpointing; the
    /// batch-1 row products too).
    #[test]
    fn q8_head_matches_the_expanded_table() {
        let (rows, cols) = (300, 64);
        let qs: Vec<i8> = (0..rows * cols)
            .map(|i| ((i * 37 + 5) % 255) as i32 - 127)
            .map(|v| v as i8)
            .collect();
        let sc: Vec<f32> = (0..rows * cols / 32)
            .map(|b| 2e-3 * (1 + b % 5) as f32)
            .collect();
        let w = Arc::new(Q8Packed::new(qs, sc, rows, cols).unwrap());
        let dev = FlexDevice;
        let table = w.dequantize();
        for m in [1, 9] {
            let x = Tensor::<Flex, 2>::random([m, cols], Distribution::Normal(0.0, 1.0), &dev);
            let dense =
                Tensor::<Flex, 2>::from_data(TensorData::new(table.clone(), [rows, cols]), &dev);
            close(
                q8_head(x.clone(), &w),
                x.clone().matmul(dense.clone().transpose()),
                1e-5,
                "flex",
            );

            let dy = Tensor::<Flex, 2>::random([m, rows], Distribution::Normal(0.0, 1.0), &dev);
            let run = |fused: bool| {
                let xa = Tensor::<Ad, 2>::from_data(x.to_data(), &dev).require_grad();
                let wa = Tensor::<Ad, 2>::from_data(dense.to_data(), &dev);
                let y = if fused {
                    q8_head(xa.clone(), &w)
                } else {
                    xa.clone().matmul(wa.transpose())
                };
                let dya = Tensor::<Ad, 2>::from_data(dy.to_data(), &dev);
                let g = (y.clone() * dya).sum().backward();
                (y.inner(), xa.grad(&g).unwrap())
            };
            let ((yf, gf), (yd, gd)) = (run(true), run(false));
            close(yf, yd, 1e-5, "autodiff forward");
            close(gf, gd, 1e-5, "input gradient");

            type Ck = Autodiff<Flex, BalancedCheckpointing>;
            let xc = Tensor::<Ck, 2>::from_data(x.to_data(), &dev).require_grad();
            let dyc = Tensor::<Ck, 2>::from_data(dy.to_data(), &dev);
            let g = (q8_head(xc.clone(), &w) * dyc).sum().backward();
            close(
                xc.grad(&g).unwrap(),
                dy.clone().matmul(dense.clone()),
                1e-5,
                "checkpointed gradient",
            );
        }
    }

    /// The fused op and burn's expression give the same values and the same
    /// gradients for both inputs (a `[2, 70, 1536]` MLP activation: several
    /// parallel chunks and a ragged last one).
    #[test]
    fn swiglu_matches_burn_forward_and_backward() {
        let d = FlexDevice;
        let g0 = Tensor::<Flex, 3>::random([2, 70, 1536], Distribution::Normal(0.0, 3.0), &d);
        let u0 = Tensor::<Flex, 3>::random([2, 70, 1536], Distribution::Normal(0.0, 1.0), &d);
        let dy = Tensor::<Flex, 3>::random([2, 70, 1536], Distribution::Normal(0.0, 1.0), &d);
        close(
            swiglu(g0.clone(), u0.clone()),
            silu(g0.clone()) * u0.clone(),
            1e-6,
            "flex forward",
        );
        let run = |fused: bool| {
            let g = Tensor::<Ad, 3>::from_inner(g0.clone()).require_grad();
            let u = Tensor::<Ad, 3>::from_inner(u0.clone()).require_grad();
            let y = if fused {
                swiglu(g.clone(), u.clone())
            } else {
                silu(g.clone()) * u.clone()
            };
            let loss = (y.clone() * Tensor::from_inner(dy.clone())).sum();
            let grads = loss.backward();
            (y.inner(), g.grad(&grads).unwrap(), u.grad(&grads).unwrap())
        };
        let (y1, dg1, du1) = run(true);
        let (y2, dg2, du2) = run(false);
        close(y1, y2, 1e-6, "forward");
        close(dg1, dg2, 1e-5, "d gate");
        close(du1, du2, 1e-5, "d up");
    }

    /// Attention: burn-flex's kernel forward and the recomputing backward give
    /// burn's differentiable fallback's output and gradients for `q`, `k`, `v`
    /// (grouped: one key/value head for three query heads) and a trainable
    /// bias, which holds a padding-style mask (one key column masked for the
    /// second row) and causal masking.
    #[test]
    fn attention_matches_burn_forward_and_backward() {
        // (query heads, key/value heads, queries, keys, head size): one key/value head
        // for three query heads; two for four with fewer queries than keys (a cached
        // prefix) and a head size that is not a multiple of 8.
        for (h, kv, s, t, hd) in [(3, 1, 13, 13, 48), (4, 2, 5, 9, 20)] {
            attention_case(h, kv, s, t, hd);
        }
    }

    fn attention_case(h: usize, kv: usize, s: usize, t: usize, hd: usize) {
        let d = FlexDevice;
        let b = 2;
        let q0 = Tensor::<Flex, 4>::random([b, h, s, hd], Distribution::Normal(0.0, 1.0), &d);
        let k0 = Tensor::<Flex, 4>::random([b, kv, t, hd], Distribution::Normal(0.0, 1.0), &d);
        let v0 = Tensor::<Flex, 4>::random([b, kv, t, hd], Distribution::Normal(0.0, 1.0), &d);
        let dy = Tensor::<Flex, 4>::random([b, h, s, hd], Distribution::Normal(0.0, 1.0), &d);
        let past = t - s;
        let mut mask = vec![0f32; b * s * t];
        for bi in 0..b {
            for i in 0..s {
                for j in 0..t {
                    if j > i + past || (bi == 1 && j == 0) {
                        mask[(bi * s + i) * t + j] = -1e9;
                    }
                }
            }
        }
        let b0 = Tensor::<Flex, 4>::from_data(TensorData::new(mask, [b, 1, s, t]), &d)
            + Tensor::random([b, 1, s, t], Distribution::Normal(0.0, 0.5), &d);
        let run = |fused: bool| {
            let q = Tensor::<Ad, 4>::from_inner(q0.clone()).require_grad();
            let k = Tensor::<Ad, 4>::from_inner(k0.clone()).require_grad();
            let v = Tensor::<Ad, 4>::from_inner(v0.clone()).require_grad();
            let bias = Tensor::<Ad, 4>::from_inner(b0.clone()).require_grad();
            let be = bias.clone().expand([b, h, s, t]);
            let y = if fused {
                attention(q.clone(), k.clone(), v.clone(), be)
            } else {
                burn::tensor::module::attention_fallback(
                    q.clone(),
                    expand_kv(k.clone(), h),
                    expand_kv(v.clone(), h),
                    None,
                    Some(be),
                    AttentionModuleOptions::default(),
                )
            };
            let grads = (y.clone() * Tensor::from_inner(dy.clone()))
                .sum()
                .backward();
            let g = |t: &Tensor<Ad, 4>| t.grad(&grads).unwrap();
            (y.inner(), g(&q), g(&k), g(&v), g(&bias))
        };
        let (y1, dq1, dk1, dv1, db1) = run(true);
        let (y2, dq2, dk2, dv2, db2) = run(false);
        close(y1, y2, 1e-5, "forward");
        close(dq1, dq2, 1e-4, "d q");
        close(dk1, dk2, 1e-4, "d k");
        close(dv1, dv2, 1e-4, "d v");
        close(db1, db2, 1e-4, "d bias");
    }

    /// The plain burn-flex forward reads the query where the projection left it
    /// (`[b, s, h, d]` swapped to `[b, h, s, d]`) and gives burn's fallback's values.
    #[test]
    fn flex_attention_reads_strided_queries() {
        let d = FlexDevice;
        let (b, h, kv, s, hd) = (2, 6, 2, 9, 72);
        let q = Tensor::<Flex, 4>::random([b, s, h, hd], Distribution::Normal(0.0, 1.0), &d)
            .swap_dims(1, 2);
        let k = Tensor::<Flex, 4>::random([b, kv, s, hd], Distribution::Normal(0.0, 1.0), &d);
        let v = Tensor::<Flex, 4>::random([b, kv, s, hd], Distribution::Normal(0.0, 1.0), &d);
        let bias = Tensor::<Flex, 4>::random([b, 1, s, s], Distribution::Normal(0.0, 1.0), &d)
            .expand([b, h, s, s]);
        let want = burn::tensor::module::attention_fallback(
            q.clone(),
            expand_kv(k.clone(), h),
            expand_kv(v.clone(), h),
            None,
            Some(bias.clone()),
            AttentionModuleOptions::default(),
        );
        close(attention(q, k, v, bias), want, 1e-5, "flex forward");
    }

    /// Rotary embedding: the same bits as the burn expression forward (shared and
    /// per-row tables), the same gradient backward.
    #[test]
    fn rope_matches_burn_forward_and_backward() {
        let d = FlexDevice;
        let (b, h, s, hd) = (2, 3, 7, 8);
        let contiguous =
            Tensor::<Flex, 4>::random([b, h, s, hd], Distribution::Normal(0.0, 1.0), &d);
        // As a projection leaves it: `[b, s, h, d]` seen as `[b, h, s, d]`.
        let swapped = Tensor::<Flex, 4>::random([b, s, h, hd], Distribution::Normal(0.0, 1.0), &d)
            .swap_dims(1, 2);
        let dy = Tensor::<Flex, 4>::random([b, h, s, hd], Distribution::Normal(0.0, 1.0), &d);
        for (x0, cb) in [
            (&contiguous, 1),
            (&contiguous, b),
            (&swapped, 1),
            (&swapped, b),
        ] {
            let ang =
                Tensor::<Flex, 4>::random([cb, 1, s, hd], Distribution::Uniform(-3.0, 3.0), &d);
            let (cos0, sin0) = (ang.clone().cos(), ang.sin());
            let reference = |x: Tensor<Ad, 4>, cos: Tensor<Ad, 4>, sin: Tensor<Ad, 4>| {
                let half = hd / 2;
                let rot = Tensor::cat(
                    vec![
                        x.clone().narrow(3, half, half).neg(),
                        x.clone().narrow(3, 0, half),
                    ],
                    3,
                );
                x * cos + rot * sin
            };
            let flex =
                rope(x0.clone(), cos0.clone(), sin0.clone()).unwrap_or_else(|_| panic!("fused"));
            let x = Tensor::<Ad, 4>::from_inner(x0.clone());
            let want = reference(
                x,
                Tensor::from_inner(cos0.clone()),
                Tensor::from_inner(sin0.clone()),
            );
            close(flex, want.inner(), 0.0, "flex forward");
            let run = |fused: bool| {
                let x = Tensor::<Ad, 4>::from_inner(x0.clone()).require_grad();
                let (c, sn) = (
                    Tensor::from_inner(cos0.clone()),
                    Tensor::from_inner(sin0.clone()),
                );
                let y = if fused {
                    rope(x.clone(), c, sn).unwrap_or_else(|_| panic!("fused"))
                } else {
                    reference(x.clone(), c, sn)
                };
                let grads = (y.clone() * Tensor::from_inner(dy.clone()))
                    .sum()
                    .backward();
                (y.inner(), x.grad(&grads).unwrap())
            };
            let (y1, dx1) = run(true);
            let (y2, dx2) = run(false);
            close(y1, y2, 0.0, "forward");
            close(dx1, dx2, 1e-6, "d x");
        }
    }

    /// The same for RMSNorm, with a trainable weight (its gradient is summed over
    /// rows from several parallel chunks) and with a frozen one.
    #[test]
    fn rms_norm_matches_burn_forward_and_backward() {
        let d = FlexDevice;
        let x0 = Tensor::<Flex, 3>::random([3, 41, 576], Distribution::Normal(0.5, 2.0), &d);
        let w0 = Tensor::<Flex, 1>::random([576], Distribution::Normal(1.0, 0.3), &d);
        let dy = Tensor::<Flex, 3>::random([3, 41, 576], Distribution::Normal(0.0, 1.0), &d);
        let eps = 1e-5;
        let reference = |x: Tensor<Ad, 3>, w: Tensor<Ad, 1>| {
            let var = x.clone().square().mean_dim(2);
            x * var.add_scalar(eps).sqrt().recip() * w.unsqueeze::<3>()
        };
        let flex_ref = {
            let var = x0.clone().square().mean_dim(2);
            x0.clone() * var.add_scalar(eps).sqrt().recip() * w0.clone().unsqueeze::<3>()
        };
        close(
            rms_norm(x0.clone(), w0.clone(), eps),
            flex_ref,
            1e-5,
            "flex forward",
        );
        for train_w in [true, false] {
            let run = |fused: bool| {
                let x = Tensor::<Ad, 3>::from_inner(x0.clone()).require_grad();
                let mut w = Tensor::<Ad, 1>::from_inner(w0.clone());
                if train_w {
                    w = w.require_grad();
                }
                let y = if fused {
                    rms_norm(x.clone(), w.clone(), eps)
                } else {
                    reference(x.clone(), w.clone())
                };
                let grads = (y.clone() * Tensor::from_inner(dy.clone()))
                    .sum()
                    .backward();
                (y.inner(), x.grad(&grads).unwrap(), w.grad(&grads))
            };
            let (y1, dx1, dw1) = run(true);
            let (y2, dx2, dw2) = run(false);
            close(y1, y2, 1e-5, "forward");
            close(dx1, dx2, 1e-4, "d x");
            assert_eq!(dw1.is_some(), train_w);
            assert_eq!(dw2.is_some(), train_w);
            if let (Some(a), Some(b)) = (dw1, dw2) {
                close(a, b, 1e-4, "d weight");
            }
        }
    }
}
