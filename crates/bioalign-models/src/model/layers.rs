//! The building blocks of the decoder, with fields named after Hugging Face's keys.

use bioalign_lora::{AdapterSlot, LinearBase, LoraLinear, ModuleLora};
use std::sync::Arc;

use bioalign_quant::dense::{WeightLayout, try_flex_matmul};
use bioalign_quant::{Bf16Packed, F32Packed, Nf4Linear, Q8Packed};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::module::embedding;
use burn::tensor::{Int, Tensor, TensorData};

/// A projection of a layer (`q_proj`, ..., `down_proj`). The seam where NF4 weights
/// (bioalign-quant) and LoRA adapters plug in as further variants.
// `Dense(Linear)` stays unboxed: callers construct and match it by value.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Projection<B: Backend> {
    /// A dense f32 weight, stored `[in, out]` as burn's `Linear`.
    Dense(Linear<B>),
    /// A frozen NF4 weight (bitsandbytes layout), multiplied by the fused kernel
    /// without expanding it to f32; it has no parameters.
    Nf4(Nf4Linear<B>),
    /// A frozen dense weight with a LoRA adapter.
    LoraDense(LoraLinear<B, Linear<B>>),
    /// A frozen NF4 weight with a LoRA adapter (QLoRA).
    LoraNf4(LoraLinear<B, Nf4Linear<B>>),
    /// A frozen weight packed once for the CPU kernels, in f32 or bf16 (inference:
    /// [`crate::LoadOptions::pack`], [`crate::LoadOptions::bf16`]).
    Packed(PackedLinear<B>),
}

/// A frozen weight packed once for bioalign-quant's CPU products.
#[derive(Debug)]
pub enum PackedWeight {
    /// f32, in the blocked kernel's panels, read in place by every product: the values
    /// and sums of the f32 product, without packing the weight again each time.
    F32(F32Packed),
    /// Rounded to bf16 (half the bytes of f32); f32 inputs and sums.
    Bf16(Bf16Packed),
    /// Rounded to bf16; the input rounded to bf16 too and multiplied by AVX-512 BF16
    /// dot products (f32 sums).
    Bf16Dot(Bf16Packed),
}

impl PackedWeight {
    /// Packs a Hugging Face `[out, in]` weight: f32, or bf16 (with `dot`, for the dot
    /// product).
    pub fn new(
        weight_out_in: &[f32],
        out: usize,
        inp: usize,
        bf16: bool,
        dot: bool,
    ) -> bioalign_quant::Result<Self> {
        Ok(match (bf16, dot) {
            (false, _) => Self::F32(F32Packed::from_f32(weight_out_in, out, inp)?),
            (true, false) => Self::Bf16(Bf16Packed::from_f32(weight_out_in, out, inp)?),
            (true, true) => Self::Bf16Dot(Bf16Packed::from_f32(weight_out_in, out, inp)?),
        })
    }

    /// `(out, in)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Self::F32(w) => (w.rows(), w.cols()),
            Self::Bf16(w) | Self::Bf16Dot(w) => (w.rows(), w.cols()),
        }
    }

    /// The weight's values, `[out, in]` row-major f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Self::F32(w) => w.to_f32(),
            Self::Bf16(w) | Self::Bf16Dot(w) => w.to_f32(),
        }
    }

    /// `x · Wᵀ`: `x` `[m, in]` to `[m, out]`.
    pub fn matmul_nt(&self, x: &[f32], m: usize) -> bioalign_quant::Result<Vec<f32>> {
        match self {
            Self::F32(w) => w.matmul_nt(x, m),
            Self::Bf16(w) => w.matmul_nt(x, m),
            Self::Bf16Dot(w) => w.matmul_nt_dot(x, m),
        }
    }
}

/// A frozen projection whose weight is packed once for bioalign-quant's CPU products
/// (inference); not a parameter, so it gets no gradient. On burn-flex without
/// autodiff the kernels run; elsewhere (other backends, autodiff) a product with the
/// weight's values expanded to f32.
#[derive(Module, Debug)]
pub struct PackedLinear<B: Backend> {
    /// The packed weight, `[out, in]`.
    #[module(skip)]
    pub weight: Arc<PackedWeight>,
    /// Ties the module to its backend.
    pub backend: core::marker::PhantomData<B>,
}

impl<B: Backend> PackedLinear<B> {
    /// Wraps a packed weight.
    pub fn new(weight: PackedWeight) -> Self {
        Self {
            weight: Arc::new(weight),
            backend: core::marker::PhantomData,
        }
    }

    /// `[.., in] -> [.., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        super::fused::packed_linear(x, &self.weight)
    }
}

impl<B: Backend> Projection<B> {
    /// A dense projection from a Hugging Face `[out, in]` weight (row-major values), stored
    /// contiguously as `[in, out]`.
    pub fn dense(weight_out_in: &[f32], out: usize, inp: usize, device: &B::Device) -> Self {
        assert_eq!(weight_out_in.len(), out * inp, "weight size");
        let mut t = vec![0f32; out * inp];
        for (o, row) in weight_out_in.chunks_exact(inp).enumerate() {
            for (i, &w) in row.iter().enumerate() {
                t[i * out + o] = w;
            }
        }
        let w = Tensor::<B, 2>::from_data(burn::tensor::TensorData::new(t, [inp, out]), device);
        Self::Dense(Linear {
            weight: Param::from_tensor(w),
            bias: None,
        })
    }

    /// `[.., in] -> [.., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Dense(l) => l.forward_base(x),
            Self::Nf4(l) => l.forward_any(x),
            Self::LoraDense(l) => l.forward(x),
            Self::LoraNf4(l) => l.forward(x),
            Self::Packed(l) => l.forward(x),
        }
    }

    /// `(in, out)` features.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Self::Dense(l) => LinearBase::dims(l),
            Self::Nf4(l) => l.dims(),
            Self::LoraDense(l) => l.features(),
            Self::LoraNf4(l) => l.features(),
            Self::Packed(l) => {
                let (out, inp) = l.weight.shape();
                (inp, out)
            }
        }
    }

    /// The effective weight as Hugging Face stores it, `[out, in]` row-major f32:
    /// dequantized for NF4, with the adapter merged (`W + scaling * B A`) for LoRA.
    pub fn dense_weight_out_in(&self) -> Vec<f32> {
        match self {
            Self::Dense(l) => l.dense_weight_out_in(),
            Self::Nf4(l) => l.dense_weight_out_in(),
            Self::LoraDense(l) => l.merged_weight_out_in(),
            Self::LoraNf4(l) => l.merged_weight_out_in(),
            Self::Packed(l) => l.weight.to_f32(),
        }
    }

    /// Whether the projection carries a LoRA adapter.
    pub fn is_lora(&self) -> bool {
        matches!(self, Self::LoraDense(_) | Self::LoraNf4(_))
    }

    /// The adapter, for LoRA variants.
    pub fn adapter(&self) -> Option<&dyn AdapterSlot<B>> {
        match self {
            Self::LoraDense(l) => Some(l),
            Self::LoraNf4(l) => Some(l),
            Self::Dense(_) | Self::Nf4(_) | Self::Packed(_) => None,
        }
    }

    /// The adapter, mutably, for LoRA variants.
    pub fn adapter_mut(&mut self) -> Option<&mut dyn AdapterSlot<B>> {
        match self {
            Self::LoraDense(l) => Some(l),
            Self::LoraNf4(l) => Some(l),
            Self::Dense(_) | Self::Nf4(_) | Self::Packed(_) => None,
        }
    }

    /// Wraps a dense or NF4 projection with a fresh adapter (A Kaiming-uniform from
    /// `rng`, B zeros; the base frozen); a packed base becomes a dense one of the same
    /// values first. A projection that already has one is returned unchanged (the
    /// caller checks beforehand).
    pub fn with_lora(
        self,
        lora: ModuleLora,
        dropout: f64,
        rng: &mut impl rand::Rng,
        device: &B::Device,
    ) -> Self {
        match self {
            Self::Dense(l) => Self::LoraDense(LoraLinear::new(l, lora, dropout, rng, device)),
            Self::Nf4(l) => Self::LoraNf4(LoraLinear::new(l, lora, dropout, rng, device)),
            Self::Packed(l) => {
                let (out, inp) = l.weight.shape();
                Self::dense(&l.weight.to_f32(), out, inp, device)
                    .no_grad()
                    .with_lora(lora, dropout, rng, device)
            }
            p @ (Self::LoraDense(_) | Self::LoraNf4(_)) => p,
        }
    }

    /// Folds a LoRA adapter into a dense projection `W + scaling * B A` (an NF4 base
    /// is dequantized first); other projections are returned unchanged. The result
    /// is frozen (no gradient).
    pub fn merged(self, device: &B::Device) -> Self {
        if !self.is_lora() {
            return self;
        }
        let (inp, out) = self.dims();
        let w = self.dense_weight_out_in();
        Self::dense(&w, out, inp, device).no_grad()
    }

    /// An NF4 projection from a quantized Hugging Face `[out, in]` weight (no f32 copy).
    pub fn nf4(q: bioalign_quant::Quantized4bit) -> bioalign_quant::Result<Self> {
        Ok(Self::Nf4(Nf4Linear::new(q)?))
    }

    /// Whether the (base) weight is stored in 4 bits.
    pub fn is_nf4(&self) -> bool {
        matches!(self, Self::Nf4(_) | Self::LoraNf4(_))
    }
}

/// `embed_tokens`: the token embedding `[vocab, hidden]`, which a tied LM head also
/// multiplies by.
#[derive(Module, Debug)]
pub enum TokenEmbedding<B: Backend> {
    /// An f32 table.
    Dense(Param<Tensor<B, 2>>),
    /// A frozen 8-bit table in GGUF's `Q8_0` form (a quarter of the f32 bytes, the
    /// same values), looked up and multiplied without expanding it.
    Q8(Q8Embedding<B>),
}

/// A frozen 8-bit embedding table; not a parameter, so it gets no gradient.
#[derive(Module, Debug)]
pub struct Q8Embedding<B: Backend> {
    /// Codes and scales.
    #[module(skip)]
    pub table: Arc<Q8Packed>,
    /// Ties the module to its backend.
    pub backend: core::marker::PhantomData<B>,
}

impl<B: Backend> TokenEmbedding<B> {
    /// An 8-bit table.
    pub fn q8(table: Q8Packed) -> Self {
        Self::Q8(Q8Embedding {
            table: Arc::new(table),
            backend: core::marker::PhantomData,
        })
    }

    /// `[vocab, hidden]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Self::Dense(w) => w.val().dims(),
            Self::Q8(e) => [e.table.rows(), e.table.cols()],
        }
    }

    /// Whether the table is kept in 8 bits.
    pub fn is_q8(&self) -> bool {
        matches!(self, Self::Q8(_))
    }

    /// The rows of `ids` `[batch, s]` (row-major, each below the vocabulary size,
    /// which the caller checks) as `[batch, s, hidden]`.
    pub fn lookup(&self, ids: &[u32], batch: usize, device: &B::Device) -> Tensor<B, 3> {
        let s = ids.len() / batch.max(1);
        match self {
            Self::Dense(w) => {
                let idx: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
                let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(idx, [batch, s]), device);
                embedding(w.val(), idx)
            }
            Self::Q8(e) => {
                let rows: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
                let v = e
                    .table
                    .gather(&rows)
                    .expect("ids checked against the vocabulary by the caller");
                Tensor::from_data(TensorData::new(v, [batch, s, e.table.cols()]), device)
            }
        }
    }

    /// `x · Wᵀ`, `[m, hidden] -> [m, vocab]`: the tied LM head.
    pub fn head(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Self::Dense(w) => {
                // A 2-D product against the transposed view: burn's `linear` would reshape
                // the view and copy the whole table on every call.
                let w = w.val();
                match try_flex_matmul(x, &w, WeightLayout::OutIn) {
                    Ok(y) => y,
                    Err(x) => x.matmul(w.transpose()),
                }
            }
            Self::Q8(e) => super::fused::q8_head(x, &e.table),
        }
    }

    /// The table as f32 `[vocab, hidden]` row-major.
    pub fn values(&self) -> Vec<f32> {
        match self {
            Self::Dense(w) => bioalign_lora::tensor_vec(w.val()),
            Self::Q8(e) => e.table.dequantize(),
        }
    }
}

/// Root-mean-square layer norm (Zhang & Sennrich 2019), as `LlamaRMSNorm`.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `weight`, `[hidden]`.
    pub weight: Param<Tensor<B, 1>>,
    /// `rms_norm_eps`.
    #[module(skip)]
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// `[b, s, h] -> [b, s, h]`: `weight * x / sqrt(mean(x^2) + eps)`.
    /// One fused pass on burn-flex (and a hand-written backward under autodiff),
    /// burn's expression elsewhere: [`super::fused::rms_norm`].
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        super::fused::rms_norm(x, self.weight.val(), self.eps)
    }
}

/// Grouped-query self-attention (`self_attn`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `q_proj`: hidden -> heads * head_dim.
    pub q_proj: Projection<B>,
    /// `k_proj`: hidden -> kv_heads * head_dim.
    pub k_proj: Projection<B>,
    /// `v_proj`: hidden -> kv_heads * head_dim.
    pub v_proj: Projection<B>,
    /// `o_proj`: heads * head_dim -> hidden.
    pub o_proj: Projection<B>,
    /// Number of query heads.
    #[module(skip)]
    pub n_heads: usize,
    /// Number of key/value heads.
    #[module(skip)]
    pub n_kv_heads: usize,
    /// Size of a head.
    #[module(skip)]
    pub head_dim: usize,
}

/// Applies RoPE to the first `cos.dims()[3]` dimensions of `x` `[b, h, s, d]`.
pub(crate) fn apply_rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [b, h, s, d] = x.dims();
    let rd = cos.dims()[3];
    let half = rd / 2;
    if rd == d {
        return rope_full(x, cos, sin);
    }
    let (rot, pass) = if rd == d {
        (x, None)
    } else {
        (x.clone().narrow(3, 0, rd), Some(x.narrow(3, rd, d - rd)))
    };
    let x1 = rot.clone().narrow(3, 0, half);
    let x2 = rot.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    let out = rot * cos + rotated * sin;
    let out = match pass {
        Some(p) => Tensor::cat(vec![out, p], 3),
        None => out,
    };
    debug_assert_eq!(out.dims(), [b, h, s, d]);
    out
}

/// [`apply_rope`] over the whole head: `x · cos + swap_halves(x) · sin'` with
/// `sin' = [-sin₁, sin₂]` (the same products as `rotate_half`, so the same values).
/// Each head's `s · d` values form one row that `cos` and `sin'` share across batch
/// and heads (when the positions are shared), the broadcast burn-flex runs with SIMD;
/// the `[1, 1, s, d]` broadcast over `[b, h, s, d]` took its scalar strided path (8%
/// of a forward).
fn rope_full<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 4>, sin: Tensor<B, 4>) -> Tensor<B, 4> {
    // One pass on burn-flex, with a backward that keeps no activation.
    let (x, cos, sin) = match super::fused::rope(x, cos, sin) {
        Ok(y) => return y,
        Err(t) => t,
    };
    let [b, h, s, d] = x.dims();
    // `cos`/`sin` are `[1, 1, s, d]`, or `[b, 1, s, d]` when rows have their own positions.
    let cb = cos.dims()[0];
    let half = d / 2;
    let flat = x.reshape([b, h, s * d]);
    let x4 = flat.clone().reshape([b, h, s, d]);
    let swapped = Tensor::cat(
        vec![x4.clone().narrow(3, half, half), x4.narrow(3, 0, half)],
        3,
    )
    .reshape([b, h, s * d]);
    let sin_signed = Tensor::cat(
        vec![
            sin.clone().narrow(3, 0, half).neg(),
            sin.narrow(3, half, half),
        ],
        3,
    )
    .reshape([cb, 1, s * d]);
    let cos = cos.reshape([cb, 1, s * d]);
    (flat * cos + swapped * sin_signed).reshape([b, h, s, d])
}

impl<B: Backend> Attention<B> {
    /// `x` `[b, s, hidden]` at positions given by `cos`/`sin` `[1, 1, s, rotary_dim]`;
    /// `bias` `[b, 1, s, t]` is added to the scores (0 or a large negative number);
    /// `past` holds this layer's cached keys/values `[b, kv_heads, t - s, head_dim]`.
    /// Returns the output `[b, s, hidden]` and the keys/values to cache `[b, kv_heads, t, head_dim]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: Tensor<B, 4>,
        sin: Tensor<B, 4>,
        bias: Tensor<B, 4>,
        past: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    ) -> (Tensor<B, 3>, (Tensor<B, 4>, Tensor<B, 4>)) {
        let (k, v) = self.keys_values(x.clone(), cos.clone(), sin.clone());
        let (k, v) = match past {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        (
            self.attend(x, cos, sin, (k.clone(), v.clone()), bias),
            (k, v),
        )
    }

    /// Rotated keys and the values `[b, kv_heads, s, head_dim]` of `x` `[b, s, hidden]`.
    pub fn keys_values(
        &self,
        x: Tensor<B, 3>,
        cos: Tensor<B, 4>,
        sin: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, s, _] = x.dims();
        let (nkv, hd) = (self.n_kv_heads, self.head_dim);
        let k = self
            .k_proj
            .forward(x.clone())
            .reshape([b, s, nkv, hd])
            .swap_dims(1, 2);
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, s, nkv, hd])
            .swap_dims(1, 2);
        (apply_rope(k, cos, sin), v)
    }

    /// The output `[b, c, hidden]` for queries from `x` `[b, c, hidden]` at positions
    /// `cos`/`sin` `[1 or b, 1, c, rotary_dim]`, over keys/values `[b, kv_heads, t,
    /// head_dim]` with `bias` `[b, 1, c, t]`.
    pub fn attend(
        &self,
        x: Tensor<B, 3>,
        cos: Tensor<B, 4>,
        sin: Tensor<B, 4>,
        (k, v): (Tensor<B, 4>, Tensor<B, 4>),
        bias: Tensor<B, 4>,
    ) -> Tensor<B, 3> {
        let [b, c, _] = x.dims();
        let (nh, hd) = (self.n_heads, self.head_dim);
        let q = self
            .q_proj
            .forward(x)
            .reshape([b, c, nh, hd])
            .swap_dims(1, 2);
        let q = apply_rope(q, cos, sin);
        let t = k.dims()[2];
        let bias = bias.expand([b, nh, c, t]);
        let out = super::fused::attention(q, k, v, bias);
        let out = out.swap_dims(1, 2).reshape([b, c, nh * hd]);
        self.o_proj.forward(out)
    }
}

/// SwiGLU feed-forward (`mlp`): `down_proj(silu(gate_proj(x)) * up_proj(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `gate_proj`: hidden -> intermediate.
    pub gate_proj: Projection<B>,
    /// `up_proj`: hidden -> intermediate.
    pub up_proj: Projection<B>,
    /// `down_proj`: intermediate -> hidden.
    pub down_proj: Projection<B>,
    /// Training on burn-flex: a `down_proj` adapter makes its input (the SwiGLU output,
    /// `[tokens, intermediate]`) again in the backward from the SwiGLU's own saved
    /// inputs instead of keeping it. Less activation memory (SmolLM2, 2 workers: 10
    /// steps peak 571 -> 511 MiB), a few percent more time; the same gradients bit
    /// for bit. Off by default.
    pub recompute_input: bool,
}

impl<B: Backend> Mlp<B> {
    /// `[b, s, hidden] -> [b, s, hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let g = self.gate_proj.forward(x.clone());
        let u = self.up_proj.forward(x);
        let gated = super::fused::swiglu(g.clone(), u.clone());
        match &self.down_proj {
            Projection::LoraDense(l) if self.recompute_input => {
                l.forward_recomputing(gated, super::fused::swiglu_recipe(&g, &u))
            }
            Projection::LoraNf4(l) if self.recompute_input => {
                l.forward_recomputing(gated, super::fused::swiglu_recipe(&g, &u))
            }
            p => p.forward(gated),
        }
    }
}

/// One pre-norm decoder layer (`model.layers.{i}`).
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// `self_attn`
    pub self_attn: Attention<B>,
    /// `mlp`
    pub mlp: Mlp<B>,
    /// `input_layernorm`
    pub input_layernorm: RmsNorm<B>,
    /// `post_attention_layernorm`
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// `x + attn(norm(x))`, then `+ mlp(norm(.))`; shapes as [`Attention::forward`].
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: Tensor<B, 4>,
        sin: Tensor<B, 4>,
        bias: Tensor<B, 4>,
        past: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    ) -> (Tensor<B, 3>, (Tensor<B, 4>, Tensor<B, 4>)) {
        let (a, kv) = self.self_attn.forward(
            self.input_layernorm.forward(x.clone()),
            cos,
            sin,
            bias,
            past,
        );
        let x = x + a;
        let m = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        (x + m, kv)
    }

    /// The layer's output at `c` query positions per sequence only: `x` `[b, s,
    /// hidden]`, `rows` the flat rows `b · s + t` of those positions (`[b · c]`, each
    /// sequence's `c` in turn), `cos`/`sin` `[1 or b, 1, s, rotary_dim]` for the keys and
    /// `cos_q`/`sin_q` `[b, 1, c, rotary_dim]` for the queries, `bias` `[b, 1, c, s]`.
    /// Keys and values still come from every position; the queries, attention output
    /// and MLP run at the `c` positions only. Returns `[b, c, hidden]`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_rows(
        &self,
        x: Tensor<B, 3>,
        rows: Tensor<B, 1, Int>,
        (cos, sin): (Tensor<B, 4>, Tensor<B, 4>),
        (cos_q, sin_q): (Tensor<B, 4>, Tensor<B, 4>),
        bias: Tensor<B, 4>,
    ) -> Tensor<B, 3> {
        let [b, s, h] = x.dims();
        let c = rows.dims()[0] / b.max(1);
        let pick = |t: Tensor<B, 3>| {
            t.reshape([b * s, h])
                .select(0, rows.clone())
                .reshape([b, c, h])
        };
        let xn = self.input_layernorm.forward(x.clone());
        let kv = self.self_attn.keys_values(xn.clone(), cos, sin);
        let a = self.self_attn.attend(pick(xn), cos_q, sin_q, kv, bias);
        let x = pick(x) + a;
        let m = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + m
    }
}
