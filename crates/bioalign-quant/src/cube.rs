//! The NF4 layer on CubeCL backends (burn-cuda, burn-wgpu): feature `cubecl`.
//!
//! The packed 4-bit weight, its f32 block scales and the 16-entry code book are
//! uploaded once per device and kept there (cached in [`Nf4Packed`]). Each product
//! runs a CubeCL kernel that dequantizes the weight on the device into a transient
//! f32 matrix, multiplies with the backend's own matmul and drops the matrix, as
//! bitsandbytes does for batches larger than one. So a frozen layer costs half a
//! byte per weight on the device between calls, and no f32 copy of it lives from
//! forward to backward (the backward of [`crate::Nf4Linear`] dequantizes again).
//!
//! The kernel computes `code[q] · absmax[block]` in f32, the same single rounding
//! as the CPU kernels, so its output is bit-identical to
//! [`crate::kernels::dequantize_f32`]; the tests check that on whichever CubeCL
//! device is present (in CI, Mesa's software Vulkan device through burn-wgpu).

use std::any::Any;
use std::sync::{Arc, Mutex};

use burn::tensor::DType;
use burn::tensor::Shape;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn_cubecl::element::{BoolElement, FloatElement, IntElement};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeRuntime};
use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::nf4_linear::{Nf4Backend, Nf4Packed};

/// `out[e] = code[q(e)] · absmax[e / blocksize]` for the `N` consecutive elements of
/// output vector `ABSOLUTE_POS` (`N` = 4 when the element count allows it, else 1): a
/// warp's stores land on consecutive bytes, 16 per thread, and the threads sharing a
/// packed word read it as one broadcast load. Element `e` sits in byte `e / 2` of the
/// packed bytes (the high nibble first), i.e. byte `(e / 2) % 4` of little-endian word
/// `e / 8`.
#[cube(launch)]
fn dequant_nf4_kernel<N: Size>(
    packed: &Array<u32>,
    absmax: &Array<f32>,
    code: &Array<f32>,
    out: &mut Array<Vector<f32, N>>,
    #[comptime] blocksize: usize,
) {
    let v = ABSOLUTE_POS;
    if v >= out.len() {
        terminate!();
    }
    let mut values = Vector::<f32, N>::empty();
    #[unroll]
    for i in 0..N::value() {
        let e = v * N::value() + i;
        let bits = packed[e / 8];
        // Bit offset of the element's nibble: byte (e / 2) % 4, the high nibble for even e.
        let shift = 8 * ((e / 2) % 4) + 4 * (1 - e % 2);
        let q = (bits >> shift as u32) & 0xF;
        values[i] = code[q as usize] * absmax[e / blocksize];
    }
    out[v] = values;
}

/// Threads per output feature in [`gemv_nf4_kernel`] (one warp on NVIDIA GPUs).
const GEMV_LANES: u32 = 32;
/// Output features per cube in [`gemv_nf4_kernel`].
const GEMV_FEATURES: u32 = 16;
/// Rows of `x` up to which [`Nf4Backend::nf4_matmul`] runs the fused product (a
/// generation step, a few prompts at once); larger batches dequantize once and use the
/// backend's matmul, which then amortizes the f32 weight over many rows.
pub const FUSED_MAX_ROWS: usize = 4;

/// Columns of `x` that [`gemv_nf4_kernel`] stages in shared memory at a time.
const GEMV_X_CHUNK: usize = 2048;

/// `out[r, j] = Σ_k x[r, k] · code[q(j, k)] · absmax[(j · cols + k) / blocksize]`,
/// the fused product of a few rows without an f32 weight: the weight is read as
/// packed codes (half a byte per value) and expanded in registers.
///
/// A cube holds [`GEMV_FEATURES`] output features of one row `r` (`CUBE_POS_Y`), each
/// feature worked by [`GEMV_LANES`] threads (`UNIT_POS_X`) that stride over its packed
/// words `N` at a time (`N` = 4 when rows are whole 32-value groups: one 16-byte load
/// per thread and step, else 1). A step's `8N` values share one block scale (`blocksize`
/// is at least 32, and the step starts on a multiple of `8N` in the flattened weight):
/// their products are summed before the scale multiplies them, and a shared-memory
/// sum over the lanes ends each feature. `cols % (8N) == 0`.
///
/// `x` is staged in shared memory [`GEMV_X_CHUNK`] columns at a time, one float of
/// padding after every 32 (column `k` at `k + k / 32`): lane `l` reads columns
/// `8Nl + j`, which the padding spreads over 32 distinct banks. Read from global memory
/// at that stride, each of a warp's loads of `x` touched 8 cache lines or more.
#[cube(launch)]
fn gemv_nf4_kernel<N: Size>(
    x: &Array<f32>,
    packed: &Array<Vector<u32, N>>,
    absmax: &Array<f32>,
    code: &Array<f32>,
    out: &mut Array<f32>,
    rows: usize,
    cols: usize,
    #[comptime] blocksize: usize,
) {
    let lanes = comptime!(GEMV_LANES as usize);
    let features = comptime!(GEMV_FEATURES as usize);
    let threads = comptime!(lanes * features);
    let chunk = comptime!(GEMV_X_CHUNK);
    let mut lut = SharedMemory::<f32>::new(16usize);
    let mut xs = SharedMemory::<f32>::new(comptime!(chunk + chunk / 32));
    let mut partial = SharedMemory::<f32>::new(threads);
    let unit = UNIT_POS as usize;
    if unit < 16 {
        lut[unit] = code[unit];
    }

    let lane = UNIT_POS_X as usize;
    let feature = CUBE_POS_X as usize * features + UNIT_POS_Y as usize;
    let xrow = CUBE_POS_Y as usize * cols;
    let row_word = feature * (cols / 8);
    let mut acc = 0.0f32;
    let mut start = 0usize;
    while start < cols {
        let mut len = cols - start;
        if len > chunk {
            len = chunk;
        }
        // The previous chunk is consumed (and, the first time, the code book written).
        sync_cube();
        let mut t = unit;
        while t < len {
            xs[t + t / 32] = x[xrow + start + t];
            t += threads;
        }
        sync_cube();
        if feature < rows {
            let step = 8 * N::value();
            let first = (row_word + start / 8) / N::value();
            let mut v = lane;
            while v < len / step {
                let words = packed[first + v];
                let k0 = v * step;
                let scale = absmax[(feature * cols + start + k0) / blocksize];
                let mut s = 0.0f32;
                #[unroll]
                for j in 0..N::value() {
                    let bits = words[j];
                    // A word's 8 columns share one padding offset (k is a multiple of 8).
                    let k = k0 + 8 * j;
                    let p = k + k / 32;
                    #[unroll]
                    for b in 0..4u32 {
                        // Little-endian word: byte b sits at bits 8b..8b + 8, its high
                        // nibble first.
                        let byte = (bits >> (8 * b)) & 0xFF;
                        let i = p + 2 * b as usize;
                        s += lut[(byte >> 4) as usize] * xs[i];
                        s += lut[(byte & 0xF) as usize] * xs[i + 1];
                    }
                }
                acc += s * scale;
                v += lanes;
            }
        }
        start += chunk;
    }
    partial[unit] = acc;
    sync_cube();
    if lane == 0 && feature < rows {
        let base = UNIT_POS_Y as usize * lanes;
        let mut sum = 0.0f32;
        #[unroll]
        for i in 0..lanes {
            sum += partial[base + i];
        }
        out[CUBE_POS_Y as usize * rows + feature] = sum;
    }
}

/// A weight's buffers on one device.
struct DeviceWeight<R: CubeRuntime> {
    device: R::Device,
    packed: Handle,
    words: usize,
    absmax: Handle,
    code: Handle,
}

/// Per-device copies of a packed weight (one entry per device it has run on).
#[derive(Default)]
pub(crate) struct DeviceCache {
    entries: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for DeviceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        write!(f, "DeviceCache({n} devices)")
    }
}

fn upload<R: CubeRuntime>(
    w: &Nf4Packed,
    client: &ComputeClient<R>,
    device: &R::Device,
) -> Arc<DeviceWeight<R>> {
    let cache = &w.device_cache().entries;
    let mut entries = cache.lock().unwrap_or_else(|e| e.into_inner());
    for e in entries.iter() {
        if let Some(dw) = e.clone().downcast::<DeviceWeight<R>>().ok()
            && dw.device == *device
        {
            return dw;
        }
    }
    let packed = w.quantized().packed.as_slice();
    // Whole u32 words; the padding bytes decode past `n` and are never written.
    let words = packed.len().div_ceil(4);
    let mut bytes = packed.to_vec();
    bytes.resize(words * 4, 0);
    let code = w.quantized().quant_type.code();
    let dw = Arc::new(DeviceWeight::<R> {
        device: device.clone(),
        packed: client.create_from_slice(&bytes),
        words,
        absmax: client.create_from_slice(f32::as_bytes(w.absmax())),
        code: client.create_from_slice(f32::as_bytes(code)),
    });
    entries.push(dw.clone());
    dw
}

/// `dequant(W)` `[rows, cols]` as an f32 tensor on `device`, computed there (the
/// packed weight is uploaded on first use and kept).
pub fn dequantize_on_device<R: CubeRuntime>(w: &Nf4Packed, device: &R::Device) -> CubeTensor<R> {
    dequantize_with::<R>(w, &R::client(device), device)
}

fn dequantize_with<R: CubeRuntime>(
    w: &Nf4Packed,
    client: &ComputeClient<R>,
    device: &R::Device,
) -> CubeTensor<R> {
    let dw = upload::<R>(w, client, device);
    let n = w.rows() * w.cols();
    let out = client.empty(n * std::mem::size_of::<f32>());
    if n > 0 {
        // Four elements (16 bytes) per thread where the count allows.
        let width = if n.is_multiple_of(4) { 4 } else { 1 };
        let vectors = n / width;
        let cube_dim = CubeDim::new(client, vectors);
        let count = cubecl::calculate_cube_count_elemwise(client, vectors, cube_dim);
        // SAFETY: each handle was created with exactly the length passed here.
        unsafe {
            dequant_nf4_kernel::launch::<R>(
                client,
                count,
                cube_dim,
                width,
                ArrayArg::from_raw_parts(dw.packed.clone(), dw.words),
                ArrayArg::from_raw_parts(dw.absmax.clone(), w.absmax().len()),
                ArrayArg::from_raw_parts(dw.code.clone(), 16),
                // An array's length counts scalars; the kernel sees `n / width` vectors.
                ArrayArg::from_raw_parts(out.clone(), n),
                w.quantized().blocksize.get(),
            );
        }
    }
    CubeTensor::new_contiguous(
        client.clone(),
        device.clone(),
        Shape::new([w.rows(), w.cols()]),
        out,
        DType::F32,
    )
}

/// Whether [`fused_matmul`] takes `x`: f32 `[m, cols]` with `m` at most
/// [`FUSED_MAX_ROWS`], and rows of whole 8-value words (`cols % 8 == 0`).
pub fn fusable<R: CubeRuntime>(x: &CubeTensor<R>, w: &Nf4Packed) -> bool {
    let dims = x.meta.shape();
    dims.num_dims() == 2
        && dims[0] <= FUSED_MAX_ROWS
        && dims[1] == w.cols()
        && x.dtype == DType::F32
        && w.cols().is_multiple_of(8)
}

/// `x · dequant(W)ᵀ` for a few rows of `x` by [`gemv_nf4_kernel`], without an f32
/// weight. Panics unless [`fusable`]`(&x, w)`.
pub fn fused_matmul<R: CubeRuntime>(x: CubeTensor<R>, w: &Nf4Packed) -> CubeTensor<R> {
    assert!(
        fusable(&x, w),
        "fused NF4 product: x {:?} {:?} against a [{}, {}] weight",
        x.meta.shape(),
        x.dtype,
        w.rows(),
        w.cols()
    );
    launch_fused(x, w)
}

/// [`fused_matmul`] once [`fusable`] has been checked.
fn launch_fused<R: CubeRuntime>(x: CubeTensor<R>, w: &Nf4Packed) -> CubeTensor<R> {
    let m = x.meta.shape()[0];
    let (rows, cols) = (w.rows(), w.cols());
    let x = burn_cubecl::kernel::into_contiguous(x);
    let (client, device) = (x.client.clone(), x.device.clone());
    let dw = upload::<R>(w, &client, &device);
    let out = client.empty(m * rows * std::mem::size_of::<f32>());
    if m > 0 && rows > 0 {
        let cubes = (rows as u32).div_ceil(GEMV_FEATURES);
        // Four packed words (32 values, 16 bytes) per thread and step where every row
        // holds whole groups of 32 (each row's words then start on a multiple of 4).
        let width = if cols.is_multiple_of(32) { 4 } else { 1 };
        // SAFETY: each handle was created with exactly the length passed here; `x` is
        // contiguous `[m, cols]`.
        unsafe {
            gemv_nf4_kernel::launch::<R>(
                &client,
                CubeCount::Static(cubes, m as u32, 1),
                CubeDim::new_2d(GEMV_LANES, GEMV_FEATURES),
                width,
                ArrayArg::from_raw_parts(x.handle.clone(), m * cols),
                ArrayArg::from_raw_parts(dw.packed.clone(), dw.words),
                ArrayArg::from_raw_parts(dw.absmax.clone(), w.absmax().len()),
                ArrayArg::from_raw_parts(dw.code.clone(), 16),
                ArrayArg::from_raw_parts(out.clone(), m * rows),
                rows,
                cols,
                w.quantized().blocksize.get(),
            );
        }
    }
    CubeTensor::new_contiguous(client, device, Shape::new([m, rows]), out, DType::F32)
}

/// `x · dequant(W)ᵀ` by dequantizing `W` on the device (transient f32 matrix) and the
/// backend's matmul: the path for batches, where the f32 weight serves many rows.
pub fn dequantized_matmul<R, F, I, BT>(x: CubeTensor<R>, w: &Nf4Packed) -> CubeTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let dense = dense_like::<R, F, I, BT>(w, &x);
    CubeBackend::<R, F, I, BT>::float_matmul(x, CubeBackend::<R, F, I, BT>::float_transpose(dense))
}

/// The dequantized weight in the dtype of `like` (the kernel writes f32).
fn dense_like<R, F, I, BT>(w: &Nf4Packed, like: &CubeTensor<R>) -> CubeTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let dense = dequantize_with::<R>(w, &like.client, &like.device);
    if like.dtype == DType::F32 {
        dense
    } else {
        CubeBackend::<R, F, I, BT>::float_cast(dense, like.dtype.into())
    }
}

impl<R, F, I, BT> Nf4Backend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn nf4_matmul(x: FloatTensor<Self>, w: &Arc<Nf4Packed>) -> FloatTensor<Self> {
        if fusable(&x, w) {
            launch_fused(x, w)
        } else {
            dequantized_matmul::<R, F, I, BT>(x, w)
        }
    }

    fn nf4_matmul_grad(dy: FloatTensor<Self>, w: &Arc<Nf4Packed>) -> FloatTensor<Self> {
        let dense = dense_like::<R, F, I, BT>(w, &dy);
        Self::float_matmul(dy, dense)
    }
}

/// The NF4 entry points of a CubeCL backend, named through the backend type (for code
/// generic over `burn::backend::Cuda` / `Wgpu`, such as benchmarks): dequantization on
/// the device and each of the two product paths that [`Nf4Backend::nf4_matmul`]
/// chooses between.
pub trait CubeNf4: Nf4Backend {
    /// `dequant(W)` `[rows, cols]` f32 on `device` ([`dequantize_on_device`]).
    fn nf4_dequantize(w: &Nf4Packed, device: &Self::Device) -> FloatTensor<Self>;
    /// The fused few-row product ([`fused_matmul`]); `None` unless [`fusable`].
    fn nf4_matmul_fused(x: FloatTensor<Self>, w: &Nf4Packed) -> Option<FloatTensor<Self>>;
    /// Dequantize, then the backend's matmul ([`dequantized_matmul`]).
    fn nf4_matmul_dequantized(x: FloatTensor<Self>, w: &Nf4Packed) -> FloatTensor<Self>;
}

impl<R, F, I, BT> CubeNf4 for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn nf4_dequantize(w: &Nf4Packed, device: &Self::Device) -> FloatTensor<Self> {
        dequantize_on_device::<R>(w, device)
    }

    fn nf4_matmul_fused(x: FloatTensor<Self>, w: &Nf4Packed) -> Option<FloatTensor<Self>> {
        fusable(&x, w).then(|| launch_fused(x, w))
    }

    fn nf4_matmul_dequantized(x: FloatTensor<Self>, w: &Nf4Packed) -> FloatTensor<Self> {
        dequantized_matmul::<R, F, I, BT>(x, w)
    }
}
