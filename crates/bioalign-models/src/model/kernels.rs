//! Slice kernels behind the fused burn-flex ops of [`super::fused`]: an `exp` that
//! vectorizes, SwiGLU, RoPE and grouped-query attention (forward and backward) over
//! strided 4-D views, so that the projections' `[b, s, heads, d]` outputs are read
//! where they lie, with no transposed copy.
//!
//! Every loop is plain Rust, compiled twice: for the baseline target and, chosen at
//! run time, with AVX2 + FMA enabled (wider vectors). Both builds round the same
//! way (no fused multiply-adds are written or contracted), so the result does not
//! depend on the machine.

use rayon::prelude::*;

/// Rows per parallel task at least: below this, handing work to the pool costs more
/// than it saves.
const MIN_ROWS: usize = 4;

/// Runs `$body` (an expression over the enclosing function's arguments) in a copy of
/// itself compiled with AVX2 + FMA when the CPU has them.
macro_rules! multiversion {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn wide<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if wide_simd() {
                // SAFETY: `wide_simd` found AVX2 and FMA on this CPU.
                unsafe { wide(|| $body) }
            } else {
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body
        }
    }};
}

/// Whether this CPU has AVX2 and FMA (detected once by the standard library).
#[cfg(target_arch = "x86_64")]
#[inline]
fn wide_simd() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// `e^x` to within 2 ulp over the normal range, branch-free so loops over it
/// vectorize: Cody-Waite reduction by `ln 2` and a degree-6 polynomial on
/// `[-ln2/2, ln2/2]` (the Cephes `expf` scheme). Arguments below -87.3 give the
/// smallest normal number's neighbourhood (about `1e-38`) instead of a subnormal or
/// zero, and above 88 give `e^88`; NaN stays NaN.
#[inline(always)]
pub(crate) fn expf(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer.
    let x = if x < -87.3 { -87.3 } else { x };
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
    y * f32::from_bits((e.wrapping_add(127) as u32) << 23)
}

#[inline(always)]
fn sigmoid(g: f32) -> f32 {
    1.0 / (1.0 + expf(-g))
}

/// `y = silu(g) · u`.
pub(crate) fn swiglu_forward(g: &[f32], u: &[f32], y: &mut [f32]) {
    par_rows(y, 1 << 14, |start, y| {
        let (g, u) = (&g[start..start + y.len()], &u[start..start + y.len()]);
        multiversion!({
            for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
                *y = g * sigmoid(g) * u;
            }
        })
    });
}

/// `dg = dy · u · s · (1 + g · (1 - s))`, `du = dy · g · s` with `s = sigmoid(g)`.
pub(crate) fn swiglu_backward(dy: &[f32], g: &[f32], u: &[f32], dg: &mut [f32], du: &mut [f32]) {
    let grain = 1 << 14;
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
fn par_rows(out: &mut [f32], grain: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if out.len() <= grain {
        f(0, out);
        return;
    }
    out.par_chunks_mut(grain)
        .enumerate()
        .for_each(|(c, o)| f(c * grain, o));
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
/// `[1 or b, 1, s, d]` (`inverse`: the transposed rotation, the backward). `out`
/// holds `[b, s, h, d]`.
pub(crate) fn rope(x: View<'_>, cos: View<'_>, sin: View<'_>, inverse: bool, out: &mut [f32]) {
    let [b, h, s, d] = x.dims;
    let half = d / 2;
    debug_assert_eq!(out.len(), b * s * h * d);
    if out.is_empty() {
        return;
    }
    out.par_chunks_mut(h * d)
        .with_min_len(MIN_ROWS)
        .enumerate()
        .for_each(|(row, o)| {
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
                            o1[k] = x1[k] * c1[k] + x2[k] * s2[k];
                            o2[k] = x2[k] * c2[k] - x1[k] * s1[k];
                        }
                    } else {
                        for k in 0..half {
                            o1[k] = x1[k] * c1[k] + x2[k] * -s1[k];
                            o2[k] = x2[k] * c2[k] + x1[k] * s2[k];
                        }
                    }
                }
            })
        });
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Scores `q · k_j · scale + bias_j` of one query row turned into softmax
/// probabilities in `p` (length `t`). A row whose every score is `-inf` gets all
/// zeros; a NaN score makes the whole row NaN.
#[inline(always)]
fn softmax_row(
    q: &[f32],
    k: &View<'_>,
    bi: usize,
    kvh: usize,
    bias: &[f32],
    scale: f32,
    p: &mut [f32],
) {
    let mut m = f32::NEG_INFINITY;
    for (j, pj) in p.iter_mut().enumerate() {
        let v = dot(q, k.row(bi, kvh, j)) * scale + bias[j];
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
    let mut sum = 0f32;
    for pj in p.iter_mut() {
        *pj = expf(*pj - m);
        sum += *pj;
    }
    let inv = 1.0 / sum;
    for pj in p.iter_mut() {
        *pj *= inv;
    }
}

/// Grouped-query attention `softmax(q·kᵀ·scale + bias)·v` for `q` `[b, h, s, d]`,
/// `k`, `v` `[b, kv, t, d]` (query head `hh` reads key/value head
/// `hh / (h / kv)`) and `bias` `[b or 1, h or 1, s, t]`. `out` holds `[b, s, h, d]`.
pub(crate) fn attention_forward(
    q: View<'_>,
    k: View<'_>,
    v: View<'_>,
    bias: View<'_>,
    scale: f32,
    out: &mut [f32],
) {
    let [b, h, s, d] = q.dims;
    let (kv, t) = (k.dims[1], k.dims[2]);
    let group = h / kv;
    debug_assert_eq!(out.len(), b * s * h * d);
    if out.is_empty() {
        return;
    }
    out.par_chunks_mut(h * d)
        .with_min_len(MIN_ROWS)
        .enumerate()
        .for_each_init(
            || vec![0f32; t],
            |p, (row, o)| {
                let (bi, i) = (row / s, row % s);
                multiversion!({
                    for (hh, o) in o.chunks_exact_mut(d).enumerate() {
                        let kvh = hh / group;
                        softmax_row(q.row(bi, hh, i), &k, bi, kvh, bias.row(bi, hh, i), scale, p);
                        o.fill(0.0);
                        for (j, &pj) in p.iter().enumerate() {
                            axpy(o, pj, v.row(bi, kvh, j));
                        }
                    }
                })
            },
        );
}

/// The gradients of [`attention_forward`] for the output gradient `dout`
/// `[b, h, s, d]`, recomputing the probabilities: `dq` `[b, s, h, d]`, `dk` and
/// `dv` `[b, kv, t, d]`, and, when given, `dbias` `[b, h, s, t]` (the gradient of
/// the broadcast bias, before any reduction over broadcast dimensions).
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
    let [b, h, s, d] = q.dims;
    let (kv, t) = (k.dims[1], k.dims[2]);
    let group = h / kv;
    if b * h * s * d == 0 {
        return;
    }
    // One task per (batch, key/value head): it owns that head's `dk`, `dv` and its
    // query heads' `dq` and `dbias` rows, gathered here and scattered below.
    struct Part {
        dq: Vec<f32>,
        dbias: Vec<f32>,
    }
    let want_bias = dbias.is_some();
    let parts: Vec<Part> = dk
        .par_chunks_mut(t * d)
        .zip(dv.par_chunks_mut(t * d))
        .enumerate()
        .map(|(task, (dk, dv))| {
            let (bi, kvh) = (task / kv, task % kv);
            dk.fill(0.0);
            dv.fill(0.0);
            let mut part = Part {
                dq: vec![0f32; group * s * d],
                dbias: vec![0f32; if want_bias { group * s * t } else { 0 }],
            };
            let mut p = vec![0f32; t];
            let mut dp = vec![0f32; t];
            multiversion!({
                for g in 0..group {
                    let hh = kvh * group + g;
                    for i in 0..s {
                        let (qi, doi) = (q.row(bi, hh, i), dout.row(bi, hh, i));
                        softmax_row(qi, &k, bi, kvh, bias.row(bi, hh, i), scale, &mut p);
                        // dP_j = dO_i · v_j; Δ = Σ_j P_j dP_j (= dO_i · O_i).
                        let mut delta = 0f32;
                        for j in 0..t {
                            dp[j] = dot(doi, v.row(bi, kvh, j));
                            delta += p[j] * dp[j];
                        }
                        let dqi = &mut part.dq[(g * s + i) * d..(g * s + i + 1) * d];
                        for j in 0..t {
                            let ds = p[j] * (dp[j] - delta);
                            dp[j] = ds;
                            axpy(dqi, ds * scale, k.row(bi, kvh, j));
                            axpy(&mut dk[j * d..(j + 1) * d], ds * scale, qi);
                            axpy(&mut dv[j * d..(j + 1) * d], p[j], doi);
                        }
                        if want_bias {
                            part.dbias[(g * s + i) * t..(g * s + i + 1) * t].copy_from_slice(&dp);
                        }
                    }
                }
            });
            part
        })
        .collect();
    for (task, part) in parts.into_iter().enumerate() {
        let (bi, kvh) = (task / kv, task % kv);
        for g in 0..group {
            let hh = kvh * group + g;
            for i in 0..s {
                let src = &part.dq[(g * s + i) * d..(g * s + i + 1) * d];
                let o = ((bi * s + i) * h + hh) * d;
                dq[o..o + d].copy_from_slice(src);
                if let Some(db) = dbias.as_deref_mut() {
                    let o = ((bi * h + hh) * s + i) * t;
                    db[o..o + t].copy_from_slice(&part.dbias[(g * s + i) * t..(g * s + i + 1) * t]);
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
        assert!(expf(-1.0e9) > 0.0 && expf(-1.0e9) < 1.0e-37);
        assert!(expf(1.0e9).is_finite());
    }

    /// Naive attention for one `(b, h)` with explicit softmax, against the kernel
    /// on a strided `[b, s, h, d]` query and a broadcast bias.
    #[test]
    fn attention_forward_matches_a_naive_softmax() {
        let (b, h, kv, s, d) = (2, 4, 2, 5, 12);
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
        let mut out = vec![0f32; b * s * h * d];
        attention_forward(q, k, v, bias, 0.3, &mut out);
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
        let mut out = vec![0f32; s * d];
        attention_forward(q, k, k, bias, 1.0, &mut out);
        assert!(out[..d].iter().all(|v| (v - 0.25).abs() < 1e-6));
        assert!(out[d..2 * d].iter().all(|v| v.is_nan()));
        assert!(out[2 * d..].iter().all(|&v| v == 0.0));
    }
}
