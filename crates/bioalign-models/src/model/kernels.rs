//! Slice kernels behind the fused burn-flex ops of [`super::fused`]: an `exp` that
//! vectorizes, SwiGLU, RoPE and grouped-query attention (forward and backward) over
//! strided 4-D views, so that the projections' `[b, s, heads, d]` outputs are read
//! where they lie, with no transposed copy.
//!
//! Every loop is plain Rust, compiled twice: for the baseline target and, chosen at
//! run time, with AVX2 + FMA enabled (wider vectors). The elementwise kernels round
//! the same way in both builds (no fused multiply-adds); the attention products run
//! through bioalign-quant's blocked kernels, which use fused multiply-adds on AVX2 and
//! AVX-512, so, like the projections, their last bits depend on the CPU (results are
//! reproducible on one machine).

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task of the row-wise kernels (RMSNorm): below a few tens
/// of thousands, handing work to the pool costs more than it saves.
const GRAIN: usize = 1 << 15;

/// Elements per parallel task of SwiGLU: half of [`GRAIN`], so that a training
/// micro-batch (a few hundred thousand values) still splits evenly over the cores.
const SWIGLU_GRAIN: usize = 1 << 14;

/// Rows per parallel task at least: below this, handing work to the pool costs more
/// than it saves.
const MIN_ROWS: usize = 4;

/// Evaluates `$wide` compiled with AVX2 + FMA enabled when the CPU has them, else
/// `$base`.
macro_rules! simd {
    ($wide:expr, $base:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn wide<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if wide_simd() {
                // SAFETY: `wide_simd` found AVX2 and FMA on this CPU.
                unsafe { wide(|| $wide) }
            } else {
                $base
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $base
        }
    }};
}

/// Runs `$body` (an expression over the enclosing function's variables) in a copy
/// compiled with AVX2 + FMA when the CPU has them.
macro_rules! multiversion {
    ($body:expr) => {
        simd!($body, $body)
    };
}

/// Whether this CPU has AVX2 and FMA (detected once by the standard library).
#[cfg(target_arch = "x86_64")]
#[inline]
fn wide_simd() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// `e^x` to within 2 ulp over the normal range, branch-free so loops over it
/// vectorize: Cody-Waite reduction by `ln 2` and a degree-6 polynomial on
/// `[-ln2/2, ln2/2]` (the Cephes `expf` scheme). Arguments below -87.3 give 0 (so a
/// masked key's probability is exactly 0 and no subnormal numbers reach the
/// products, which are slow on some CPUs), above 88 give `e^88`; NaN stays NaN.
#[inline(always)]
pub(crate) fn expf(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer.
    let underflow = x < -87.3;
    let x = if underflow { -87.3 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let e = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let v = y * f32::from_bits((e.wrapping_add(127) as u32) << 23);
    if underflow { 0.0 } else { v }
}

#[inline(always)]
fn sigmoid(g: f32) -> f32 {
    1.0 / (1.0 + expf(-g))
}

/// `silu(g) · u`, written into a fresh vector without zeroing it first (every value
/// is written once; zeroing the forward's fresh outputs was 2.8% of a SmolLM2 forward,
/// on the calling thread alone).
pub(crate) fn swiglu_forward(g: &[f32], u: &[f32]) -> Vec<f32> {
    assert_eq!(g.len(), u.len(), "SwiGLU inputs");
    written(g.len(), |y| {
        par_rows(y, SWIGLU_GRAIN, |start, y| {
            let (g, u) = (&g[start..start + y.len()], &u[start..start + y.len()]);
            multiversion!({
                for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
                    y.write(g * sigmoid(g) * u);
                }
            })
        })
    })
}

/// A vector of `n` values that `fill` writes, every one of them, into its spare
/// capacity (never zeroed first).
fn written(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: `fill` wrote all `n` values (the callers' loops cover every index).
    unsafe { v.set_len(n) };
    v
}

/// `dg = dy · u · s · (1 + g · (1 - s))`, `du = dy · g · s` with `s = sigmoid(g)`.
pub(crate) fn swiglu_backward(dy: &[f32], g: &[f32], u: &[f32], dg: &mut [f32], du: &mut [f32]) {
    let grain = SWIGLU_GRAIN;
    dg.par_chunks_mut(grain)
        .zip(du.par_chunks_mut(grain))
        .enumerate()
        .for_each(|(c, (dg, du))| {
            let r = c * grain..c * grain + dg.len();
            let (dy, g, u) = (&dy[r.clone()], &g[r.clone()], &u[r]);
            multiversion!({
                for i in 0..dg.len() {
                    let s = sigmoid(g[i]);
                    dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                    du[i] = dy[i] * g[i] * s;
                }
            })
        });
}

/// `out` in parallel chunks of `grain` values (`f(first index, chunk)`).
fn par_rows<T: Send>(out: &mut [T], grain: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if out.len() <= grain {
        f(0, out);
        return;
    }
    out.par_chunks_mut(grain)
        .enumerate()
        .for_each(|(c, o)| f(c * grain, o));
}

/// Rows of `x` (length `w.len()`) normalized and scaled.
pub(crate) fn rms_forward(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let h = w.len();
    assert!(h > 0 && x.len().is_multiple_of(h), "RMSNorm rows");
    let rows = (GRAIN / h).max(1) * h;
    // Not zeroed first: every value is written (see `swiglu_forward`).
    written(x.len(), |y| {
        y.par_chunks_mut(rows)
            .zip(x.par_chunks(rows))
            .for_each(|(y, x)| {
                multiversion!({
                    for (y, x) in y.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
                        let r = inv_rms(x, eps);
                        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                            y.write(x * r * w);
                        }
                    }
                })
            })
    })
}

#[inline(always)]
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ss = lane_sum(x, x, x, |a, b, _| a * b);
    1.0 / (ss / x.len() as f32 + eps).sqrt()
}

/// `Σ_i f(a_i, b_i, c_i)` kept in 16 running sums, added up at the end. One running
/// sum waits an add's latency per term and does not vectorize (float addition is
/// not reassociated); RMSNorm's sums over 576 features were 4% of a QLoRA step.
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ca, cb, cc) = (a.chunks_exact(L), b.chunks_exact(L), c.chunks_exact(L));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder())
        .map(|((&a, &b), &c)| f(a, b, c))
        .sum();
    for ((a, b), c) in ca.zip(cb).zip(cc) {
        for l in 0..L {
            acc[l] += f(a[l], b[l], c[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `dx = r · (dy·w) - x · r³ · mean(dy·w·x)` per row, and (when asked)
/// `dw = Σ_rows dy · x · r`.
pub(crate) fn rms_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    eps: f32,
    want_dw: bool,
) -> (Vec<f32>, Vec<f32>) {
    let h = w.len();
    let mut dx = vec![0f32; x.len()];
    let rows = (GRAIN / h.max(1)).max(1) * h;
    let partial: Vec<Vec<f32>> = dx
        .par_chunks_mut(rows)
        .zip(x.par_chunks(rows).zip(dy.par_chunks(rows)))
        .map(|(dx, (x, dy))| {
            let mut dw = if want_dw { vec![0f32; h] } else { vec![] };
            multiversion!({
                for ((dx, x), dy) in dx
                    .chunks_exact_mut(h)
                    .zip(x.chunks_exact(h))
                    .zip(dy.chunks_exact(h))
                {
                    let r = inv_rms(x, eps);
                    let dot = lane_sum(dy, w, x, |d, w, x| d * w * x);
                    let c = r * r * r * dot / h as f32;
                    for i in 0..h {
                        dx[i] = r * dy[i] * w[i] - x[i] * c;
                    }
                    for (acc, (d, x)) in dw.iter_mut().zip(dy.iter().zip(x)) {
                        *acc += d * x * r;
                    }
                }
            });
            dw
        })
        .collect();
    let mut dw = vec![0f32; if want_dw { h } else { 0 }];
    for p in partial {
        for (a, b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
    (dx, dw)
}

/// A 4-D f32 view `[d0, d1, d2, d3]` with non-negative strides and a contiguous
/// last dimension (broadcast dimensions have stride 0).
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub dims: [usize; 4],
    pub strides: [usize; 4],
}

impl<'a> View<'a> {
    /// The view, or `None` when a stride is negative, the last dimension is not
    /// contiguous, or the view reaches outside `data`.
    pub fn new(
        data: &'a [f32],
        offset: usize,
        dims: [usize; 4],
        strides: [isize; 4],
    ) -> Option<Self> {
        if strides.iter().any(|&s| s < 0) || (dims[3] > 1 && strides[3] != 1) {
            return None;
        }
        let strides = strides.map(|s| s as usize);
        if dims.contains(&0) {
            return Some(Self {
                data,
                offset,
                dims,
                strides,
            });
        }
        let last = offset + (0..4).map(|i| (dims[i] - 1) * strides[i]).sum::<usize>();
        (last < data.len()).then_some(Self {
            data,
            offset,
            dims,
            strides,
        })
    }

    /// The innermost row at `[i0, i1, i2, ..]`; an index into a dimension of size 1
    /// reads its only entry (broadcasting).
    #[inline(always)]
    pub fn row(&self, i0: usize, i1: usize, i2: usize) -> &'a [f32] {
        let idx = |i: usize, d: usize| if self.dims[d] == 1 { 0 } else { i };
        let o = self.offset
            + idx(i0, 0) * self.strides[0]
            + idx(i1, 1) * self.strides[1]
            + idx(i2, 2) * self.strides[2];
        &self.data[o..o + self.dims[3]]
    }
}

/// The strides of a `[b, h, s, d]` tensor stored as `[b, s, h, d]`.
pub(crate) fn bshd_strides([_, h, s, d]: [usize; 4]) -> [isize; 4] {
    [(s * h * d) as isize, d as isize, (h * d) as isize, 1]
}

/// The rotary embedding of `x` `[b, h, s, d]` with tables `cos`, `sin`
/// `[1 or b, 1, s, d]` (`inverse`: the transposed rotation, the backward), returned
/// `[b, s, h, d]`. `d` is even (the config checks the head and rotary sizes).
pub(crate) fn rope(x: View<'_>, cos: View<'_>, sin: View<'_>, inverse: bool) -> Vec<f32> {
    let [b, h, s, d] = x.dims;
    let half = d / 2;
    assert!(d.is_multiple_of(2), "RoPE over an odd head size {d}");
    // Not zeroed first: every value is written (see `swiglu_forward`).
    written(b * s * h * d, |out| {
        rope_into(x, cos, sin, inverse, half, out)
    })
}

fn rope_into(
    x: View<'_>,
    cos: View<'_>,
    sin: View<'_>,
    inverse: bool,
    half: usize,
    out: &mut [MaybeUninit<f32>],
) {
    let [_, h, s, d] = x.dims;
    par_out_rows(
        out,
        h * d,
        || (),
        |_, row, o| {
            let (bi, i) = (row / s, row % s);
            let (c, sn) = (cos.row(bi, 0, i), sin.row(bi, 0, i));
            multiversion!({
                for (hh, o) in o.chunks_exact_mut(d).enumerate() {
                    let x = x.row(bi, hh, i);
                    let (o1, o2) = o.split_at_mut(half);
                    let (x1, x2) = x.split_at(half);
                    let (c1, c2) = c.split_at(half);
                    let (s1, s2) = sn.split_at(half);
                    if inverse {
                        for k in 0..half {
                            o1[k].write(x1[k] * c1[k] + x2[k] * s2[k]);
                            o2[k].write(x2[k] * c2[k] - x1[k] * s1[k]);
                        }
                    } else {
                        for k in 0..half {
                            o1[k].write(x1[k] * c1[k] + x2[k] * -s1[k]);
                            o2[k].write(x2[k] * c2[k] + x1[k] * s2[k]);
                        }
                    }
                }
            })
        },
    );
}

/// One query row's probabilities `softmax(p_j · scale + bias_j)` in place, `p`
/// holding the row's dot products `q · k_j` on entry. A row whose every score is
/// `-inf` gets all zeros; a NaN score makes the whole row NaN.
#[inline(always)]
fn softmax_scores(p: &mut [f32], bias: &[f32], scale: f32) {
    let mut m = f32::NEG_INFINITY;
    for (pj, &b) in p.iter_mut().zip(bias) {
        let v = *pj * scale + b;
        *pj = v;
        // A NaN is taken too (it is not `<= m`), and then spreads through the row.
        if v > m || v.is_nan() {
            m = v;
        }
    }
    if m == f32::NEG_INFINITY {
        p.fill(0.0);
        return;
    }
    if m.is_nan() {
        p.fill(f32::NAN);
        return;
    }
    // Scores more than 88 below the maximum (masked keys: a causal row's future,
    // padding) have probability exactly 0 (`expf` gives 0 below -87.3), so the `exp`
    // stops at the last key above that.
    let live = p.iter().rposition(|&v| v - m >= -88.0).map_or(0, |l| l + 1);
    let (head, tail) = p.split_at_mut(live);
    tail.fill(0.0);
    // The `exp`s first, then the sum in running lanes: one loop with a single running
    // sum did not vectorize, `exp` included.
    for pj in head.iter_mut() {
        *pj = expf(*pj - m);
    }
    let sum = lane_sum(head, head, head, |a, _, _| a);
    let inv = 1.0 / sum;
    for pj in head.iter_mut() {
        *pj *= inv;
    }
}

/// `f(scratch, row, out_row)` over the rows of `out` (`width` values each), in
/// parallel; each task gets a `scratch` from `init`.
fn par_out_rows<S, T: Send>(
    out: &mut [T],
    width: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) {
    if out.is_empty() {
        return;
    }
    out.par_chunks_mut(width)
        .with_min_len(MIN_ROWS)
        .enumerate()
        .for_each_init(init, |sc, (row, o)| f(sc, row, o));
}

/// The sizes of an attention problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AttentionDims {
    pub b: usize,
    pub h: usize,
    pub kv: usize,
    pub s: usize,
    pub t: usize,
    pub d: usize,
}

impl AttentionDims {
    /// The sizes when `k` and `v` are `[b, kv, t, d]` with `kv` dividing `q`'s `h`
    /// and `bias` is `[b, h, s, t]` or broadcast from size-1 dimensions (the shapes
    /// the kernels index by; the AVX2 dot products read `d` values from every row).
    pub fn of(q: [usize; 4], k: [usize; 4], v: [usize; 4], bias: [usize; 4]) -> Option<Self> {
        let [b, h, s, d] = q;
        let [kb, kv, t, kd] = k;
        let [bb, bh, bs, bt] = bias;
        (kb == b
            && kd == d
            && v == k
            && kv > 0
            && h % kv == 0
            && (bb == b || bb == 1)
            && (bh == h || bh == 1)
            && bs == s
            && bt == t)
            .then_some(Self { b, h, kv, s, t, d })
    }

    /// [`Self::of`] the views, or a panic naming the shapes.
    fn check(q: &View<'_>, k: &View<'_>, v: &View<'_>, bias: &View<'_>) -> Self {
        Self::of(q.dims, k.dims, v.dims, bias.dims).unwrap_or_else(|| {
            panic!(
                "attention shapes: q {:?}, k {:?}, v {:?}, bias {:?}",
                q.dims, k.dims, v.dims, bias.dims
            )
        })
    }
}

/// One (batch row, key/value head) task of the attention kernels: where its rows lie
/// and how its scores are scaled and biased. Its rows are gathered contiguous
/// ([`Group::gather`]) so that bioalign-quant's blocked products can run on them.
struct Group<'v, 'a> {
    bi: usize,
    kvh: usize,
    /// Query heads per key/value head.
    group: usize,
    s: usize,
    t: usize,
    d: usize,
    scale: f32,
    bias: &'v View<'a>,
}

impl<'v, 'a> Group<'v, 'a> {
    /// Task `task` (= batch row · `kv` + key/value head) of a problem with `kv`
    /// key/value heads of `group` query heads each.
    fn new(
        task: usize,
        (kv, group): (usize, usize),
        (s, t, d): (usize, usize, usize),
        scale: f32,
        bias: &'v View<'a>,
    ) -> Self {
        Self {
            bi: task / kv,
            kvh: task % kv,
            group,
            s,
            t,
            d,
            scale,
            bias,
        }
    }

    /// Rows `0..n` of each head in `heads` (of batch row `bi`) of `v`, head after
    /// head, as one contiguous `[heads.len() · n, d]` matrix.
    fn gather(&self, v: &View<'_>, heads: std::ops::Range<usize>, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(heads.len() * n * self.d);
        for hh in heads {
            for i in 0..n {
                out.extend_from_slice(v.row(self.bi, hh, i));
            }
        }
        out
    }

    /// The query heads of this key/value head.
    fn heads(&self) -> std::ops::Range<usize> {
        self.kvh * self.group..(self.kvh + 1) * self.group
    }

    /// The probabilities `P` `[group · s, t]` of the group's queries `qg` against
    /// the keys `k` `[t, d]`: one blocked product `qg · kᵀ`, then a softmax per row.
    fn probabilities(&self, qg: &[f32], k: &[f32]) -> Vec<f32> {
        let (gs, t) = (self.group * self.s, self.t);
        let mut p = vec![0f32; gs * t];
        product_nt(qg, gs, k, t, self.d, &mut p);
        for (r, pr) in p.chunks_exact_mut(t).enumerate() {
            let hh = self.kvh * self.group + r / self.s;
            let bias = self.bias.row(self.bi, hh, r % self.s);
            multiversion!(softmax_scores(pr, bias, self.scale));
        }
        p
    }
}

/// `y = x · wᵀ` (`x` `[m, k]`, `w` `[n, k]`, `y` `[m, n]`) on the calling thread,
/// through bioalign-quant's blocked kernel.
fn product_nt(x: &[f32], m: usize, w: &[f32], n: usize, k: usize, y: &mut [f32]) {
    use bioalign_quant::kernels::{Isa, matmul_nt_f32};
    matmul_nt_f32(x, m, w, n, k, y, Isa::detect(), 1).expect("attention product shapes");
}

/// `y = x · w` (`x` `[m, k]`, `w` `[k, n]`, `y` `[m, n]`) on the calling thread.
fn product_kn(x: &[f32], m: usize, w: &[f32], k: usize, n: usize, y: &mut [f32]) {
    use bioalign_quant::kernels::{Isa, matmul_kn_f32};
    matmul_kn_f32(x, m, w, k, n, y, Isa::detect(), 1).expect("attention product shapes");
}

/// `a` `[rows, cols]` transposed.
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    for (r, ar) in a.chunks_exact(cols).enumerate() {
        for (c, &v) in ar.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

/// Grouped-query attention `softmax(q·kᵀ·scale + bias)·v` for `q` `[b, h, s, d]`,
/// `k`, `v` `[b, kv, t, d]` (query head `hh` reads key/value head
/// `hh / (h / kv)`) and `bias` `[b or 1, h or 1, s, t]`, returned `[b, s, h, d]`.
///
/// One task per (batch row, key/value head) stacks its query heads' rows and runs
/// the two products `S = Q·Kᵀ` and `O = P·V` through bioalign-quant's blocked
/// kernel (the per-row dot products that did this before ran at a tenth of its
/// speed).
pub(crate) fn attention_forward(
    q: View<'_>,
    k: View<'_>,
    v: View<'_>,
    bias: View<'_>,
    scale: f32,
) -> Vec<f32> {
    let AttentionDims { b, h, kv, s, t, d } = AttentionDims::check(&q, &k, &v, &bias);
    let n = b * s * h * d;
    if n == 0 || t == 0 {
        return vec![0f32; n];
    }
    let group = h / kv;
    // Each task writes its own output rows straight into `out`, in parallel (gathering
    // them afterwards was a serial copy on the calling thread). Every row `(bi, i, hh)`
    // belongs to exactly one task, so `out` is not zeroed first.
    written(n, |out| {
        let out = SharedOut(out.as_mut_ptr().cast::<f32>());
        (0..b * kv).into_par_iter().for_each(|task| {
            let g = Group::new(task, (kv, group), (s, t, d), scale, &bias);
            let qg = g.gather(&q, g.heads(), s);
            let kk = g.gather(&k, g.kvh..g.kvh + 1, t);
            let vv = g.gather(&v, g.kvh..g.kvh + 1, t);
            let p = g.probabilities(&qg, &kk);
            let mut o = qg;
            product_kn(&p, group * s, &vv, t, d, &mut o);
            let (bi, kvh) = (task / kv, task % kv);
            for (r, orow) in o.chunks_exact(d).enumerate() {
                let (hh, i) = (kvh * group + r / s, r % s);
                let at = ((bi * s + i) * h + hh) * d;
                // SAFETY: `at + d <= n` (`bi < b`, `i < s`, `hh < h`), and no other
                // task writes row `(bi, i, hh)`.
                unsafe { std::ptr::copy_nonoverlapping(orow.as_ptr(), out.get().add(at), d) };
            }
        });
    })
}

/// The output buffer shared by tasks that write disjoint rows of it.
struct SharedOut(*mut f32);
// SAFETY: the tasks write disjoint elements, and the parallel loop ends before the
// buffer is used again.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// The gradients of [`attention_forward`] for the output gradient `dout`
/// `[b, h, s, d]`, recomputing the probabilities: `dq` `[b, s, h, d]`, `dk` and
/// `dv` `[b, kv, t, d]`, and, when given, `dbias` `[b, h, s, t]` (the gradient of
/// the broadcast bias, before any reduction over broadcast dimensions). Keys with
/// probability exactly 0 (masked) get `dS = 0`, whatever `dO · v` is.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    q: View<'_>,
    k: View<'_>,
    v: View<'_>,
    bias: View<'_>,
    dout: View<'_>,
    scale: f32,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    mut dbias: Option<&mut [f32]>,
) {
    let AttentionDims { b, h, kv, s, t, d } = AttentionDims::check(&q, &k, &v, &bias);
    assert_eq!(dout.dims, q.dims, "attention output gradient shape");
    assert!(
        dq.len() == b * s * h * d && dk.len() == b * kv * t * d && dv.len() == dk.len(),
        "attention gradient lengths"
    );
    assert!(
        dbias.as_ref().is_none_or(|db| db.len() == b * h * s * t),
        "bias gradient length"
    );
    let group = h / kv;
    if b * h * s * d * t == 0 {
        dq.fill(0.0);
        dk.fill(0.0);
        dv.fill(0.0);
        if let Some(db) = dbias {
            db.fill(0.0);
        }
        return;
    }
    let want_bias = dbias.is_some();
    // One task per (batch, key/value head): it owns that head's `dk` and `dv`, and
    // its query heads' `dq` and `dS` (the bias gradient) rows, scattered below.
    let parts: Vec<(Vec<f32>, Vec<f32>)> = dk
        .par_chunks_mut(t * d)
        .zip(dv.par_chunks_mut(t * d))
        .enumerate()
        .map(|(task, (dk, dv))| {
            let g = Group::new(task, (kv, group), (s, t, d), scale, &bias);
            let gs = group * s;
            let qg = g.gather(&q, g.heads(), s);
            let dog = g.gather(&dout, g.heads(), s);
            let kk = g.gather(&k, g.kvh..g.kvh + 1, t);
            let vv = g.gather(&v, g.kvh..g.kvh + 1, t);
            let p = g.probabilities(&qg, &kk);
            // dP = dO · vᵀ; Δ_i = Σ_j P_ij dP_ij; dS_ij = P_ij (dP_ij − Δ_i).
            let mut ds = vec![0f32; gs * t];
            product_nt(&dog, gs, &vv, t, d, &mut ds);
            for (dsr, pr) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                let delta: f32 = pr
                    .iter()
                    .zip(dsr.iter())
                    .filter(|&(&pj, _)| pj != 0.0)
                    .map(|(pj, dp)| pj * dp)
                    .sum();
                for (x, &pj) in dsr.iter_mut().zip(pr) {
                    *x = if pj == 0.0 { 0.0 } else { pj * (*x - delta) };
                }
            }
            // dq = scale · dS · k; dk = scale · dSᵀ · q; dv = Pᵀ · dO.
            let mut dqg = vec![0f32; gs * d];
            product_kn(&ds, gs, &kk, t, d, &mut dqg);
            dqg.iter_mut().for_each(|x| *x *= scale);
            product_kn(&transpose(&ds, gs, t), t, &qg, gs, d, dk);
            dk.iter_mut().for_each(|x| *x *= scale);
            product_kn(&transpose(&p, gs, t), t, &dog, gs, d, dv);
            (dqg, if want_bias { ds } else { Vec::new() })
        })
        .collect();
    for (task, (pdq, pds)) in parts.into_iter().enumerate() {
        let (bi, kvh) = (task / kv, task % kv);
        for g in 0..group {
            let hh = kvh * group + g;
            for i in 0..s {
                let r = g * s + i;
                let o = ((bi * s + i) * h + hh) * d;
                dq[o..o + d].copy_from_slice(&pdq[r * d..(r + 1) * d]);
                if let Some(db) = dbias.as_deref_mut() {
                    let o = ((bi * h + hh) * s + i) * t;
                    db[o..o + t].copy_from_slice(&pds[r * t..(r + 1) * t]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expf` against the standard library's `exp` over the range the model uses
    /// (softmax arguments down to -87, the gate's `-g` both ways).
    #[test]
    fn expf_is_within_two_ulp_of_std() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, e) = (expf(x), x.exp());
            worst = worst.max(((a - e) / e).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5 * f32::EPSILON, "worst relative error {worst}");
        assert_eq!(expf(0.0), 1.0);
        assert!(expf(f32::NAN).is_nan());
        assert_eq!(expf(-1.0e9), 0.0);
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
        assert!(expf(1.0e9).is_finite());
    }

    /// Naive attention for one `(b, h)` with explicit softmax, against the kernel
    /// on a strided `[b, s, h, d]` query and a broadcast bias.
    #[test]
    fn attention_forward_matches_a_naive_softmax() {
        let (b, h, kv, s, d) = (2, 4, 2, 5, 44);
        let val = |i: usize| ((i * 7919 % 101) as f32 - 50.0) / 40.0;
        let qd: Vec<f32> = (0..b * s * h * d).map(val).collect();
        let kd: Vec<f32> = (0..b * kv * s * d).map(|i| val(i + 3)).collect();
        let vd: Vec<f32> = (0..b * kv * s * d).map(|i| val(i + 11)).collect();
        let bd: Vec<f32> = (0..b * s * s)
            .map(|i| {
                if i % s > (i / s) % s {
                    -1.0e9
                } else {
                    val(i) / 4.0
                }
            })
            .collect();
        let q = View::new(&qd, 0, [b, h, s, d], bshd_strides([b, h, s, d])).unwrap();
        let k = View::new(
            &kd,
            0,
            [b, kv, s, d],
            [(kv * s * d) as isize, (s * d) as isize, d as isize, 1],
        )
        .unwrap();
        let v = View::new(
            &vd,
            0,
            [b, kv, s, d],
            [(kv * s * d) as isize, (s * d) as isize, d as isize, 1],
        )
        .unwrap();
        let bias = View::new(&bd, 0, [b, h, s, s], [(s * s) as isize, 0, s as isize, 1]).unwrap();
        let out = attention_forward(q, k, v, bias, 0.3);
        for bi in 0..b {
            for hh in 0..h {
                for i in 0..s {
                    let kvh = hh / (h / kv);
                    let sc: Vec<f64> = (0..s)
                        .map(|j| {
                            let qk: f64 = (0..d)
                                .map(|c| {
                                    qd[((bi * s + i) * h + hh) * d + c] as f64
                                        * kd[((bi * kv + kvh) * s + j) * d + c] as f64
                                })
                                .sum();
                            qk * 0.3 + bd[(bi * s + i) * s + j] as f64
                        })
                        .collect();
                    let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..d {
                        let want: f64 = (0..s)
                            .map(|j| e[j] / z * vd[((bi * kv + kvh) * s + j) * d + c] as f64)
                            .sum();
                        let got = out[((bi * s + i) * h + hh) * d + c] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "[{bi},{hh},{i},{c}] {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// Stopping the `exp` at the last live key changes no bit: the masked tail's
    /// `expf` is exactly 0 and the sum sees the same terms in the same order.
    #[test]
    fn softmax_skips_the_masked_tail_exactly() {
        let t = 40;
        let dots: Vec<f32> = (0..t)
            .map(|j| ((j * 37 % 23) as f32 - 11.0) / 3.0)
            .collect();
        let bias: Vec<f32> = (0..t).map(|j| if j > 17 { -1.0e9 } else { 0.0 }).collect();
        let mut p = dots.clone();
        softmax_scores(&mut p, &bias, 0.7);
        let full: Vec<f32> = dots.iter().zip(&bias).map(|(x, b)| x * 0.7 + b).collect();
        let m = full.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = full.iter().map(|v| expf(v - m)).collect();
        let inv = 1.0 / e.iter().sum::<f32>();
        for (j, (got, want)) in p.iter().zip(e.iter().map(|v| v * inv)).enumerate() {
            assert_eq!(got.to_bits(), want.to_bits(), "p[{j}] {got} vs {want}");
        }
        assert!(p[18..].iter().all(|&v| v == 0.0) && p[17] > 0.0);
        // A NaN score still makes the whole row NaN, tail included.
        let mut p = dots.clone();
        p[3] = f32::NAN;
        softmax_scores(&mut p, &bias, 0.7);
        assert!(p.iter().all(|v| v.is_nan()));
    }

    /// A NaN query row gives a NaN output row (a diverging run is not hidden); a
    /// row whose every key is masked with `-inf` gives zeros, as burn-flex does.
    #[test]
    fn nan_spreads_and_fully_masked_rows_are_zero() {
        let (s, d) = (3, 8);
        let mut qd = vec![0.5f32; s * d];
        qd[d] = f32::NAN; // row 1
        let kd = vec![0.25f32; s * d];
        let mut bd = vec![0f32; s * s];
        bd[2 * s..].fill(f32::NEG_INFINITY); // row 2
        let contiguous = [(s * d) as isize, (s * d) as isize, d as isize, 1];
        let q = View::new(&qd, 0, [1, 1, s, d], contiguous).unwrap();
        let k = View::new(&kd, 0, [1, 1, s, d], contiguous).unwrap();
        let bias = View::new(&bd, 0, [1, 1, s, s], [(s * s) as isize, 0, s as isize, 1]).unwrap();
        let out = attention_forward(q, k, k, bias, 1.0);
        assert!(out[..d].iter().all(|v| (v - 0.25).abs() < 1e-6));
        assert!(out[d..2 * d].iter().all(|v| v.is_nan()));
        assert!(out[2 * d..].iter().all(|&v| v == 0.0));
    }
}
