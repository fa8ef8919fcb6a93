//! CPU kernels: dequantization to f32 / bf16 and the fused product
//! `y = x · dequant(W)ᵀ`, which dequantizes small tiles of `W` on the fly and
//! never holds the whole f32 weight.
//!
//! Every entry point takes plain slices, so a burn backend extension (or any
//! other caller) can hand in its buffers. The SIMD path is picked at run time
//! ([`Isa::detect`]: AVX-512F, else AVX2+FMA, else scalar); the scalar path is
//! the reference the SIMD paths are tested against. On AArch64, NEON runs the
//! dequantization, the GEMVs and the blocked product's micro-kernel. Work is split over output
//! rows on rayon's pool (`dispatch`).

pub(crate) mod bf16_gemm;
pub(crate) mod blocked;
mod dispatch;
mod few;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod pool;
mod q8;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{abs_max_bits, abs_max_bits512, quantize_codes, quantize_codes512};

use half::bf16;

pub(crate) use dispatch::par_chunks_mut;
pub use q8::{Q8_BLOCK, Q8Weight};

use crate::blockwise::check_lengths;
use crate::codebook::{BlockSize, QuantType};
use crate::{Error, Result};

/// Instruction set a kernel runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, the reference.
    Scalar,
    /// x86_64 AVX2 with FMA.
    Avx2,
    /// x86_64 AVX-512F.
    Avx512,
    /// AArch64 Advanced SIMD (NEON).
    Neon,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        [Isa::Avx512, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Isa::Scalar)
    }

    /// Whether this CPU can run `self`.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every instruction set this CPU supports, scalar first.
    pub fn all_available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon]
            .into_iter()
            .filter(|i| i.available())
            .collect()
    }

    fn checked(self) -> Isa {
        if self.available() { self } else { Isa::Scalar }
    }
}

/// Values a thread streams in the products bound by reading their weight or output
/// (dequantization, GEMVs, few-row products): handing work to rayon's parked threads
/// costs a few µs, so even a SmolLM2 projection (3.3e5 values) splits over two.
pub(crate) const VALUES_PER_THREAD: usize = 1 << 17;

/// Threads to use: `requested`, or with 0 every thread of the rayon pool the caller
/// runs on (the global pool, one per core unless `RAYON_NUM_THREADS` says otherwise;
/// inside `ThreadPool::install`, that pool's), at most `work_items`. The helpers of
/// [`par_chunks_mut`] come from the same pool, so a caller that already keeps the
/// other cores busy, such as a trainer's micro-batch worker on a pool of its own
/// share of the cores, splits its products over that share only: split over every
/// core, each product handed half its work to a thread with no core to run on (3%
/// of a QLoRA step in thread hand-offs, session 14).
pub(crate) fn thread_count(requested: usize, work_items: usize) -> usize {
    let t = if requested == 0 {
        rayon::current_num_threads()
    } else {
        requested
    };
    t.clamp(1, work_items.max(1))
}

/// A 4-bit weight `[rows, cols]` (row-major, flattened blocks as bitsandbytes
/// stores it) with f32 block scales (expand nested scales first).
#[derive(Debug, Clone, Copy)]
pub struct Nf4Weight<'a> {
    packed: &'a [u8],
    absmax: &'a [f32],
    rows: usize,
    cols: usize,
    blocksize: BlockSize,
    quant_type: QuantType,
}

impl<'a> Nf4Weight<'a> {
    /// Checks the lengths of `packed` and `absmax` against `rows × cols`.
    pub fn new(
        packed: &'a [u8],
        absmax: &'a [f32],
        rows: usize,
        cols: usize,
        blocksize: BlockSize,
        quant_type: QuantType,
    ) -> Result<Self> {
        check_lengths(packed, absmax, rows * cols, blocksize)?;
        Ok(Nf4Weight {
            packed,
            absmax,
            rows,
            cols,
            blocksize,
            quant_type,
        })
    }

    /// Output features (rows of `W`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features (columns of `W`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Dequantizes flat elements `start..start + out.len()` into `out`.
    pub(crate) fn dequant_range(&self, isa: Isa, start: usize, out: &mut [f32]) {
        let mut done = 0;
        // Scalar head up to a 32-element boundary, SIMD over whole 32-element
        // chunks (never across a block: block sizes are multiples of 32), scalar tail.
        let head = ((32 - start % 32) % 32).min(out.len());
        self.scalar_range(start, &mut out[..head]);
        done += head;
        let chunks = (out.len() - done) / 32;
        if chunks > 0 {
            let body = &mut out[done..done + chunks * 32];
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 | Isa::Avx512 => {
                    x86::dequant_chunks(isa, self, start + done, body);
                    done += chunks * 32;
                }
                #[cfg(target_arch = "aarch64")]
                Isa::Neon => {
                    neon::dequant_chunks(self, start + done, body);
                    done += chunks * 32;
                }
                _ => {}
            }
        }
        self.scalar_range(start + done, &mut out[done..]);
    }

    fn scalar_range(&self, start: usize, out: &mut [f32]) {
        crate::blockwise::dequantize_4bit_scalar(
            self.packed,
            self.absmax,
            self.blocksize,
            self.quant_type,
            start,
            out,
        );
    }
}

/// Elements from which [`dequantize_f32`] uses non-temporal stores.
#[cfg(target_arch = "x86_64")]
const STREAM_MIN: usize = 1 << 20;

/// Dequantizes the whole weight into `out` (`rows × cols` f32).
pub fn dequantize_f32(w: &Nf4Weight<'_>, out: &mut [f32], isa: Isa, threads: usize) -> Result<()> {
    let n = w.rows * w.cols;
    if out.len() != n {
        return Err(Error::shape("dequantize output", n, out.len()));
    }
    let isa = isa.checked();
    let chunk = parallel_chunk(n, threads);
    par_chunks_mut(out, chunk, |i, o| {
        // Outputs past the caches: stream the stores (same values).
        #[cfg(target_arch = "x86_64")]
        if n >= STREAM_MIN {
            match isa {
                Isa::Avx512 => return x86::dequant_stream(w, i * chunk, o),
                Isa::Avx2 => return x86::dequant_stream_avx2(w, i * chunk, o),
                Isa::Scalar | Isa::Neon => {}
            }
        }
        w.dequant_range(isa, i * chunk, o)
    });
    Ok(())
}

/// Dequantizes the whole weight into `out` as bf16, rounding to nearest even
/// like bitsandbytes' `cvt_fp32_to_bf16`.
pub fn dequantize_bf16(
    w: &Nf4Weight<'_>,
    out: &mut [bf16],
    isa: Isa,
    threads: usize,
) -> Result<()> {
    let n = w.rows * w.cols;
    if out.len() != n {
        return Err(Error::shape("dequantize output", n, out.len()));
    }
    let isa = isa.checked();
    let chunk = parallel_chunk(n, threads);
    par_chunks_mut(out, chunk, |i, o| {
        let mut buf = [0f32; 2048];
        for (j, oc) in o.chunks_mut(buf.len()).enumerate() {
            let b = &mut buf[..oc.len()];
            w.dequant_range(isa, i * chunk + j * 2048, b);
            for (d, &v) in oc.iter_mut().zip(b.iter()) {
                *d = bf16::from_bits(f32_to_bf16_rne(v));
            }
        }
    });
    Ok(())
}

/// f32 to bf16 bits, round to nearest even, NaN kept quiet.
#[inline]
pub fn f32_to_bf16_rne(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        ((b >> 16) | 0x40) as u16
    } else {
        ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
    }
}

/// Chunk length splitting `n` elements over threads (one per 2^17 elements),
/// a multiple of 2048.
fn parallel_chunk(n: usize, threads: usize) -> usize {
    let t = thread_count(threads, n / VALUES_PER_THREAD + 1);
    n.div_ceil(t).div_ceil(2048).max(1) * 2048
}

/// Fused `y = x · dequant(W)ᵀ`: `x` is `[m, cols]`, `y` is `[m, rows]`, both
/// row-major. Only parts of `W` are ever dequantized (a row at a time for
/// small `m`, blocks packed into the blocked kernel's panels otherwise).
pub fn matmul_nt(
    x: &[f32],
    m: usize,
    w: &Nf4Weight<'_>,
    y: &mut [f32],
    isa: Isa,
    threads: usize,
) -> Result<()> {
    checked_product(x, m, Product::Nt(*w), y, isa, threads)
}

/// The same product with a plain f32 weight `[rows, cols]`: the baseline the
/// fused kernel is compared with, through the same tiling and micro-kernels.
#[allow(clippy::too_many_arguments)]
pub fn matmul_nt_f32(
    x: &[f32],
    m: usize,
    w: &[f32],
    rows: usize,
    cols: usize,
    y: &mut [f32],
    isa: Isa,
    threads: usize,
) -> Result<()> {
    checked_product(x, m, Product::NtF32 { w, rows, cols }, y, isa, threads)
}

/// Fused `y = x · dequant(W)`, the input gradient of `x · dequant(W)ᵀ`: `x` is
/// `[m, rows]`, `y` is `[m, cols]`, both row-major. The same tiling and
/// micro-kernels as [`matmul_nt`]; a tile of `W` is dequantized straight into the
/// packed layout (its rows are contiguous there), so nothing is transposed.
pub fn matmul_nn(
    x: &[f32],
    m: usize,
    w: &Nf4Weight<'_>,
    y: &mut [f32],
    isa: Isa,
    threads: usize,
) -> Result<()> {
    checked_product(x, m, Product::Nn(*w), y, isa, threads)
}

/// `y = x · W` for a plain f32 `W` `[cols, n]` (burn's `[in, out]` layout of a
/// dense linear layer): `x` `[m, cols]`, `y` `[m, n]`, row-major. Columns of `W`
/// are packed straight from its rows, so nothing is transposed.
#[allow(clippy::too_many_arguments)]
pub fn matmul_kn_f32(
    x: &[f32],
    m: usize,
    w: &[f32],
    cols: usize,
    n: usize,
    y: &mut [f32],
    isa: Isa,
    threads: usize,
) -> Result<()> {
    checked_product(x, m, Product::KnF32 { w, cols, n }, y, isa, threads)
}

/// `y = x · Wᵀ` for a [`Q8Weight`] `W` `[rows, cols]` (a tied LM head kept in
/// GGUF's 8-bit form): `x` `[m, cols]`, `y` `[m, rows]`. The blocked kernel widens
/// tiles of `W` to f32 while packing them, so it multiplies exactly the values of
/// the expanded table, the same way [`matmul_nt_f32`] does.
pub fn matmul_nt_q8(
    x: &[f32],
    m: usize,
    w: &Q8Weight<'_>,
    y: &mut [f32],
    isa: Isa,
    threads: usize,
) -> Result<()> {
    checked_product(x, m, Product::NtQ8(*w), y, isa, threads)
}

/// `y = x · W` for a [`Q8Weight`] `W` `[rows, cols]`, the input gradient of
/// [`matmul_nt_q8`]: `x` `[m, rows]`, `y` `[m, cols]`.
pub fn matmul_nn_q8(
    x: &[f32],
    m: usize,
    w: &Q8Weight<'_>,
    y: &mut [f32],
    isa: Isa,
    threads: usize,
) -> Result<()> {
    checked_product(x, m, Product::NnQ8(*w), y, isa, threads)
}

/// Rows `ids` of a [`Q8Weight`] as f32, one after another (`out` `[ids.len(), cols]`):
/// a token-embedding look-up. An id past the last row is an error.
pub fn gather_rows_q8(w: &Q8Weight<'_>, ids: &[usize], out: &mut [f32], isa: Isa) -> Result<()> {
    let cols = w.cols();
    if out.len() != ids.len() * cols {
        return Err(Error::shape("gathered rows", ids.len() * cols, out.len()));
    }
    let isa = isa.checked();
    for (&id, o) in ids.iter().zip(out.chunks_exact_mut(cols.max(1))) {
        if id >= w.rows() {
            return Err(Error::shape("row id", format!("below {}", w.rows()), id));
        }
        w.dequant_range(isa, id * cols, o);
    }
    Ok(())
}

/// A weight and the product taken with it, for [`product`]: `x` is `[m, in]` and
/// the result `[m, out]`, both row-major.
#[derive(Clone, Copy, Debug)]
pub enum Product<'a> {
    /// `x · dequant(W)ᵀ`, as [`matmul_nt`].
    Nt(Nf4Weight<'a>),
    /// `x · dequant(W)`, as [`matmul_nn`].
    Nn(Nf4Weight<'a>),
    /// `x · Wᵀ` for an f32 `W` `[rows, cols]`, as [`matmul_nt_f32`].
    NtF32 {
        /// The weight, row-major.
        w: &'a [f32],
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
    },
    /// `x · W` for an f32 `W` `[cols, n]`, as [`matmul_kn_f32`].
    KnF32 {
        /// The weight, row-major.
        w: &'a [f32],
        /// Input features.
        cols: usize,
        /// Output features.
        n: usize,
    },
    /// `x · Wᵀ` for an 8-bit `W`, as [`matmul_nt_q8`].
    NtQ8(Q8Weight<'a>),
    /// `x · W` for an 8-bit `W`, as [`matmul_nn_q8`].
    NnQ8(Q8Weight<'a>),
}

impl<'a> Product<'a> {
    /// The kernels' `V` of `y = x · Vᵀ` and its `[rows, cols]`, after checking an
    /// f32 weight's length.
    fn source(self) -> Result<(WeightSource<'a>, usize, usize)> {
        Ok(match self {
            Product::Nt(w) => (WeightSource::Nf4(w), w.rows, w.cols),
            // `V = Wᵀ` has `cols` rows of `rows` values.
            Product::Nn(w) => (WeightSource::Nf4T(w), w.cols, w.rows),
            Product::NtF32 { w, rows, cols } => {
                if w.len() != rows * cols {
                    return Err(Error::shape("f32 weight", rows * cols, w.len()));
                }
                (WeightSource::F32 { w, cols }, rows, cols)
            }
            Product::KnF32 { w, cols, n } => {
                if w.len() != cols * n {
                    return Err(Error::shape("f32 weight [cols, n]", cols * n, w.len()));
                }
                (WeightSource::F32Kn { w, n }, n, cols)
            }
            Product::NtQ8(w) => (WeightSource::Q8(w), w.rows(), w.cols()),
            Product::NnQ8(w) => (WeightSource::Q8T(w), w.cols(), w.rows()),
        })
    }
}

/// The product `p` of `x` (`[m, in]`) into a new `[m, out]` vector. When the blocked
/// kernel runs it (every product of more than a few rows) the vector is not zeroed
/// first: that kernel writes each element before it reads any. Zeroing fresh
/// outputs was 1.5% of a SmolLM2 forward.
pub fn product(x: &[f32], m: usize, p: Product<'_>, isa: Isa, threads: usize) -> Result<Vec<f32>> {
    let (src, rows, cols) = p.source()?;
    product_of(x, m, &src, rows, cols, isa, threads)
}

/// [`product`] for a weight source `V` `[rows, cols]`.
pub(crate) fn product_of(
    x: &[f32],
    m: usize,
    src: &WeightSource<'_>,
    rows: usize,
    cols: usize,
    isa: Isa,
    threads: usize,
) -> Result<Vec<f32>> {
    if x.len() != m * cols {
        return Err(Error::shape("input x [m, cols]", m * cols, x.len()));
    }
    let len = m * rows;
    if blocked::in_place_applies(isa.checked(), src, m) {
        let mut y = pool::take(len);
        let out = &mut y.spare_capacity_mut()[..len];
        blocked::gemm_in_place(src, x, m, (rows, cols), out, threads);
        // SAFETY: `gemm_in_place` wrote all `len` elements.
        unsafe { y.set_len(len) };
        return Ok(y);
    }
    if len == 0 || !tiles(m, src, isa.checked()) {
        let mut y = vec![0f32; len];
        run_matmul(x, m, src, rows, cols, &mut y, isa.checked(), threads);
        return Ok(y);
    }
    let mut y = pool::take(len);
    blocked::gemm(
        isa.checked(),
        src,
        x,
        m,
        rows,
        cols,
        &mut y.spare_capacity_mut()[..len],
        threads,
    );
    // SAFETY: `blocked::gemm` wrote all `len` elements.
    unsafe { y.set_len(len) };
    Ok(y)
}

/// `y = x · Vᵀ` for the product `p` after checking the lengths of `x`, `y` and an
/// f32 weight.
fn checked_product(
    x: &[f32],
    m: usize,
    p: Product<'_>,
    y: &mut [f32],
    isa: Isa,
    threads: usize,
) -> Result<()> {
    let (src, rows, cols) = p.source()?;
    check_mm(x, m, rows, cols, y)?;
    run_matmul(x, m, &src, rows, cols, y, isa.checked(), threads);
    Ok(())
}

fn check_mm(x: &[f32], m: usize, rows: usize, cols: usize, y: &[f32]) -> Result<()> {
    if x.len() != m * cols {
        return Err(Error::shape("input x [m, cols]", m * cols, x.len()));
    }
    if y.len() != m * rows {
        return Err(Error::shape("output y [m, rows]", m * rows, y.len()));
    }
    Ok(())
}

/// Where the weight tiles come from: the matrix `V` of `y = x · Vᵀ`.
pub(crate) enum WeightSource<'a> {
    /// `V = dequant(W)`.
    Nf4(Nf4Weight<'a>),
    /// `V = W`, plain f32 `[rows, cols]`.
    F32 { w: &'a [f32], cols: usize },
    /// `V = dequant(W)ᵀ` (the input gradient): row `r` of `V` is column `r` of `W`.
    Nf4T(Nf4Weight<'a>),
    /// `V = Wᵀ` for a plain f32 `W` `[cols, n]` (burn's `[in, out]` layout).
    F32Kn { w: &'a [f32], n: usize },
    /// `V = W`, 8-bit `[rows, cols]`.
    Q8(Q8Weight<'a>),
    /// `V = Wᵀ` for an 8-bit `W` (the input gradient of the `Q8` product).
    Q8T(Q8Weight<'a>),
    /// `V = W` held as bf16 panels ([`crate::Bf16Packed`]), widened to f32 as they are
    /// packed, so the f32 kernel multiplies the bf16 values exactly.
    Bf16(bf16_gemm::Panels<'a>),
    /// `V = W` already in the blocked kernel's f32 panels ([`crate::F32Packed`]), read
    /// in place.
    F32Panels(blocked::F32Panels<'a>),
}

impl WeightSource<'_> {
    /// Whether rows of `V` are contiguous in memory (the row dot products of a
    /// GEMV read them; the transposed sources always tile).
    fn rows_contiguous(&self) -> bool {
        matches!(
            self,
            WeightSource::Nf4(_) | WeightSource::F32 { .. } | WeightSource::Q8(_)
        )
    }

    /// Row `r` of `V`, columns `k0..k0 + out.len()`, as f32.
    #[inline]
    pub(crate) fn row_slice(&self, isa: Isa, r: usize, k0: usize, out: &mut [f32]) {
        match self {
            WeightSource::Nf4(w) => w.dequant_range(isa, r * w.cols + k0, out),
            WeightSource::F32 { w, cols } => {
                out.copy_from_slice(&w[r * cols + k0..r * cols + k0 + out.len()])
            }
            // Strided through `W`; only the scalar reference GEMV reads `V` by rows.
            WeightSource::Nf4T(w) => {
                for (k, o) in out.iter_mut().enumerate() {
                    w.scalar_range((k0 + k) * w.cols + r, std::slice::from_mut(o));
                }
            }
            WeightSource::F32Kn { w, n } => {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = w[(k0 + k) * n + r];
                }
            }
            WeightSource::Q8(w) => w.dequant_range(isa, r * w.cols() + k0, out),
            WeightSource::Q8T(w) => {
                for (k, o) in out.iter_mut().enumerate() {
                    w.dequant_range(isa, (k0 + k) * w.cols() + r, std::slice::from_mut(o));
                }
            }
            WeightSource::Bf16(p) => {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = p.value(r, k0 + k);
                }
            }
            WeightSource::F32Panels(p) => {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = p.value(r, k0 + k);
                }
            }
        }
    }

    /// Column `k` of `V`, rows `j0..j0 + out.len()` (contiguous in `W` for the
    /// transposed sources).
    #[inline]
    pub(crate) fn column_run(&self, isa: Isa, k: usize, j0: usize, out: &mut [f32]) {
        match self {
            WeightSource::Nf4T(w) => w.dequant_range(isa, k * w.cols + j0, out),
            WeightSource::F32Kn { w, n } => {
                out.copy_from_slice(&w[k * n + j0..k * n + j0 + out.len()])
            }
            WeightSource::Q8T(w) => w.dequant_range(isa, k * w.cols() + j0, out),
            WeightSource::Nf4(_)
            | WeightSource::F32 { .. }
            | WeightSource::Q8(_)
            | WeightSource::Bf16(_)
            | WeightSource::F32Panels(_) => {
                for (j, o) in out.iter_mut().enumerate() {
                    self.row_slice(isa, j0 + j, k, std::slice::from_mut(o));
                }
            }
        }
    }
}

/// Rows of `m` below which the product runs as row dot products.
const GEMV_MAX_M: usize = 4;
/// Depth of the scalar reference GEMV's dequantized row chunks.
pub(crate) const KC: usize = 256;

#[allow(clippy::too_many_arguments)]
fn run_matmul(
    x: &[f32],
    m: usize,
    src: &WeightSource<'_>,
    rows: usize,
    cols: usize,
    y: &mut [f32],
    isa: Isa,
    threads: usize,
) {
    if m == 0 || rows == 0 {
        return;
    }
    if tiles(m, src, isa) {
        // SAFETY: `f32` and `MaybeUninit<f32>` share a layout, and the kernel only
        // writes finished values.
        let y = unsafe { std::slice::from_raw_parts_mut(y.as_mut_ptr().cast(), y.len()) };
        return blocked::gemm(isa, src, x, m, rows, cols, y, threads);
    }
    if few::applies(m, src, isa) {
        return few::product(src, x, m, rows, cols, y, threads);
    }
    if let WeightSource::F32Kn { w, n } = src {
        // `y_i = Σ_k x_ik · W[k]`: each thread streams its columns of every row of `W`
        // (packing the whole weight for a handful of rows would cost more).
        let t = thread_count(threads, rows * cols / VALUES_PER_THREAD + 1);
        let per = n.div_ceil(t).next_multiple_of(16);
        for (xi, yi) in x.chunks(cols.max(1)).zip(y.chunks_mut(rows)) {
            par_chunks_mut(yi, per, |ti, yc| gemv_kn(isa, w, *n, xi, ti * per, yc));
        }
        return;
    }
    let t = thread_count(threads, rows * cols / VALUES_PER_THREAD + 1);
    let per = rows.div_ceil(t);
    for (xi, yi) in x.chunks(cols.max(1)).zip(y.chunks_mut(rows)) {
        par_chunks_mut(yi, per, |ti, yc| gemv_rows(isa, src, xi, ti * per, yc));
    }
}

/// Whether the blocked kernel runs `x · Vᵀ` for `m` rows of `x`: row dot products
/// (a GEMV) take fewer than [`GEMV_MAX_M`] rows where rows of `V` are contiguous,
/// and 8-bit weights on AVX-512 take [`few`]'s unpacked path below [`few::FEW_MAX`]
/// rows (one row of `Q8` stays a GEMV); `Nf4T` tiles from one row.
fn tiles(m: usize, src: &WeightSource<'_>, isa: Isa) -> bool {
    !few::applies(m, src, isa)
        && (m >= GEMV_MAX_M
            || !(src.rows_contiguous() || matches!(src, WeightSource::F32Kn { .. })))
}

/// `y[j] = Σ_k x[k] · w[k · n + c0 + j]` for `j < y.len()`: rows of `w` four at a
/// time, so `y` (in L1) is read and written once per four rows.
/// The same loop in every build; AVX-512 only widens its vectors (no fused
/// multiply-adds), so every ISA gives the same bits.
fn gemv_kn(isa: Isa, w: &[f32], n: usize, x: &[f32], c0: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: `isa` was checked against the CPU (`Isa::checked`).
        return unsafe { gemv_kn_avx512(w, n, x, c0, y) };
    }
    let _ = isa;
    gemv_kn_body(w, n, x, c0, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn gemv_kn_avx512(w: &[f32], n: usize, x: &[f32], c0: usize, y: &mut [f32]) {
    gemv_kn_body(w, n, x, c0, y)
}

#[inline(always)]
fn gemv_kn_body(w: &[f32], n: usize, x: &[f32], c0: usize, y: &mut [f32]) {
    let len = y.len();
    y.fill(0.0);
    let row = |k: usize| &w[k * n + c0..k * n + c0 + len];
    let mut k = 0;
    while k + 4 <= x.len() {
        let (r0, r1, r2, r3) = (row(k), row(k + 1), row(k + 2), row(k + 3));
        let (a0, a1, a2, a3) = (x[k], x[k + 1], x[k + 2], x[k + 3]);
        for j in 0..len {
            y[j] += (a0 * r0[j] + a1 * r1[j]) + (a2 * r2[j] + a3 * r3[j]);
        }
        k += 4;
    }
    for (k, &a) in x.iter().enumerate().skip(k) {
        for (o, &v) in y.iter_mut().zip(row(k)) {
            *o += a * v;
        }
    }
}

/// `y[j] = x · W[r0 + j]` for `j < y.len()`.
fn gemv_rows(isa: Isa, src: &WeightSource<'_>, x: &[f32], r0: usize, y: &mut [f32]) {
    match (isa, src) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2 | Isa::Avx512, WeightSource::Nf4(w)) => x86::gemv_nf4(isa, w, x, r0, y),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2 | Isa::Avx512, WeightSource::F32 { w, cols }) => {
            x86::gemv_f32(isa, w, *cols, x, r0, y)
        }
        #[cfg(target_arch = "aarch64")]
        (Isa::Neon, WeightSource::Nf4(w)) => neon::gemv_nf4(w, x, r0, y),
        #[cfg(target_arch = "aarch64")]
        (Isa::Neon, WeightSource::F32 { w, cols }) => neon::gemv_f32(w, *cols, x, r0, y),
        (_, WeightSource::Q8(w)) => {
            for (j, yj) in y.iter_mut().enumerate() {
                *yj = w.dot_row(isa, r0 + j, x);
            }
        }
        _ => scalar::gemv(src, x, r0, y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_architecture_detects_its_own_vector_unit() {
        let isa = Isa::detect();
        assert!(isa.available() && Isa::all_available().contains(&isa));
        #[cfg(target_arch = "aarch64")]
        assert_eq!(isa, Isa::Neon);
        #[cfg(target_arch = "x86_64")]
        assert!(!Isa::Neon.available() && Isa::Neon.checked() == Isa::Scalar);
    }

    #[test]
    fn products_asking_for_every_core_take_the_callers_pool() {
        let cores = rayon::current_num_threads();
        assert_eq!(thread_count(0, usize::MAX), cores);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(one.install(|| thread_count(0, 100)), 1);
        // An explicit request is kept; the work bounds either.
        assert_eq!(one.install(|| thread_count(3, 100)), 3);
        assert_eq!(thread_count(0, 1), 1);
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        assert_eq!(two.install(|| thread_count(0, 100)), 2);
        assert_eq!(thread_count(0, usize::MAX), cores);
    }
}
