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

/// `out[e] = code[q(e)] · absmax[e / blocksize]` for the 8 elements of packed word
/// `ABSOLUTE_POS` (bytes in memory order, the high nibble first within a byte).
#[cube(launch)]
fn dequant_nf4_kernel(
    packed: &Array<u32>,
    absmax: &Array<f32>,
    code: &Array<f32>,
    out: &mut Array<f32>,
    #[comptime] blocksize: usize,
) {
    let word = ABSOLUTE_POS;
    let n = out.len();
    let e0 = word * 8;
    if word >= packed.len() || e0 >= n {
        terminate!();
    }
    let bits = packed[word];
    let scale = absmax[e0 / blocksize];
    #[unroll]
    for b in 0..4u32 {
        // Little-endian word: byte b sits at bits 8b..8b + 8.
        let byte = (bits >> (8 * b)) & 0xFF;
        let e = e0 + 2 * b as usize;
        if e < n {
            out[e] = code[(byte >> 4) as usize] * scale;
        }
        if e + 1 < n {
            out[e + 1] = code[(byte & 0xF) as usize] * scale;
        }
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
    if dw.words > 0 && n > 0 {
        let cube_dim = CubeDim::new(client, dw.words);
        let count = cubecl::calculate_cube_count_elemwise(client, dw.words, cube_dim);
        // SAFETY: each handle was created with exactly the length passed here.
        unsafe {
            dequant_nf4_kernel::launch::<R>(
                client,
                count,
                cube_dim,
                ArrayArg::from_raw_parts(dw.packed.clone(), dw.words),
                ArrayArg::from_raw_parts(dw.absmax.clone(), w.absmax().len()),
                ArrayArg::from_raw_parts(dw.code.clone(), 16),
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
        let dense = dense_like::<R, F, I, BT>(w, &x);
        Self::float_matmul(x, Self::float_transpose(dense))
    }

    fn nf4_matmul_grad(dy: FloatTensor<Self>, w: &Arc<Nf4Packed>) -> FloatTensor<Self> {
        let dense = dense_like::<R, F, I, BT>(w, &dy);
        Self::float_matmul(dy, dense)
    }
}
