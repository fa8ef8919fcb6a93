//! The CubeCL NF4 path (feature `cuda` or `wgpu`) against the CPU kernels.
//!
//! With `cuda` the device is the first NVIDIA GPU (burn-cuda); with `wgpu` alone it is
//! whichever Vulkan/Metal device wgpu finds: in CI, Mesa's software Vulkan device
//! (lavapipe), installed by `.ci/run`, which executes the same CubeCL kernels that
//! burn-cuda compiles for NVIDIA GPUs. The reference is this crate's
//! CPU kernel, itself checked byte for byte against bitsandbytes (`bnb_fixtures.rs`).
#![cfg(any(feature = "cuda", feature = "wgpu"))]

use std::sync::Arc;

use bioalign_quant::cube::dequantize_on_device;
use bioalign_quant::kernels::{self, Isa};
use bioalign_quant::{
    BlockSize, Nf4Backend, Nf4Linear, Nf4Packed, QuantType, QuantizeOptions, Quantized4bit,
    SourceDtype,
};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::{Flex, FlexDevice};

#[cfg(feature = "cuda")]
type Gpu = burn::backend::Cuda;
#[cfg(feature = "cuda")]
type Runtime = cubecl::cuda::CudaRuntime;
#[cfg(not(feature = "cuda"))]
type Gpu = burn::backend::Wgpu;
#[cfg(not(feature = "cuda"))]
type Runtime = burn::backend::wgpu::WgpuRuntime;

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

fn packed(w: &[f32], rows: usize, cols: usize, opts: QuantizeOptions) -> Arc<Nf4Packed> {
    let q = Quantized4bit::quantize(w, &[rows, cols], SourceDtype::F32, opts).unwrap();
    Arc::new(Nf4Packed::new(q).unwrap())
}

fn cpu_dequant(p: &Nf4Packed) -> Vec<f32> {
    let mut out = vec![0f32; p.rows() * p.cols()];
    kernels::dequantize_f32(&p.weight(), &mut out, Isa::detect(), 1).unwrap();
    out
}

/// The rounding allowed per unit of `Σ|a_k||b_k|` in a device product. burn-cuda's
/// tensor-core matmuls (cubek-matmul 0.2, `adjust_dtypes`) stage f32 operands as TF32
/// (10-bit mantissa, relative rounding 2^-11 per operand) and that choice has no switch,
/// so a product carries up to about 2^-10 of `Σ|a_k||b_k|`, as in PyTorch with
/// `allow_tf32`. wgpu's kernels multiply in f32: nothing beyond the relative 1e-5.
#[cfg(feature = "cuda")]
const OPERAND_ROUNDING: f32 = 1.0 / 1024.0;
#[cfg(not(feature = "cuda"))]
const OPERAND_ROUNDING: f32 = 0.0;

/// `|a| · |b|ᵀ` for row-major `a` `[m, k]` and `b` `[n, k]`: the scale of each product's
/// operand rounding.
fn abs_products(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|t| (a[i * k + t] * b[j * k + t]).abs()).sum();
        }
    }
    out
}

/// `got` within 1e-5 relative of `want`, plus the device's operand rounding times
/// `scale` (see [`OPERAND_ROUNDING`]).
fn assert_product_close(got: &[f32], want: &[f32], scale: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tol = 1e-5 * (1.0 + w.abs()) + OPERAND_ROUNDING * s;
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: {g} vs {w} (allowed {tol:e})"
        );
    }
}

fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols * rows)
        .map(|i| a[(i % rows) * cols + i / rows])
        .collect()
}

fn vec_of<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

#[test]
fn device_dequantize_is_bit_identical_to_the_cpu_kernel() {
    let device = Default::default();
    // Odd element counts (padded last byte and word), every block size class,
    // both code books, plain and double-quantized scales, an all-zero block.
    let cases: [(usize, usize, usize, QuantType, bool); 8] = [
        (1, 1, 64, QuantType::Nf4, true),
        (7, 9, 64, QuantType::Nf4, true),
        (3, 11, 32, QuantType::Fp4, false),
        (64, 576, 64, QuantType::Nf4, true),
        (33, 65, 128, QuantType::Nf4, false),
        (17, 257, 256, QuantType::Fp4, true),
        (5, 1000, 1024, QuantType::Nf4, true),
        (9, 4097, 4096, QuantType::Nf4, true),
    ];
    for (seed, &(rows, cols, bs, qt, dq)) in cases.iter().enumerate() {
        let mut w = random(rows * cols, seed as u64 + 1);
        if w.len() > 128 {
            w[..64].iter_mut().for_each(|v| *v = 0.0);
        }
        let opts = QuantizeOptions {
            quant_type: qt,
            blocksize: BlockSize::new(bs).unwrap(),
            double_quant: dq,
        };
        let p = packed(&w, rows, cols, opts);
        let t = dequantize_on_device::<Runtime>(&p, &device);
        let got = vec_of(Tensor::<Gpu, 2>::from_primitive(TensorPrimitive::Float(t)));
        let want = cpu_dequant(&p);
        let same = got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "{rows}x{cols} block {bs} {qt:?}: device values differ"
        );
    }
}

/// `x · dequant(W)ᵀ` through `Nf4Linear` on the device equals the fused CPU kernel
/// (burn-flex) on the same packed weight, for a row (GEMV) and a batch (GEMM).
#[test]
fn device_forward_matches_the_cpu_layer() {
    let (out, inp) = (96, 200);
    let w = random(out * inp, 7);
    let cpu = Nf4Linear::<Flex>::quantize(&w, out, inp).unwrap();
    let gpu = Nf4Linear::<Gpu> {
        weight: Arc::clone(&cpu.weight),
        backend: Default::default(),
    };
    let wd = cpu_dequant(&cpu.weight);
    for m in [1usize, 5, 33] {
        let xv = random(m * inp, 100 + m as u64);
        let scale = abs_products(&xv, &wd, m, out, inp);
        let xc = Tensor::<Flex, 2>::from_data(TensorData::new(xv.clone(), [m, inp]), &FlexDevice);
        let xg = Tensor::<Gpu, 2>::from_data(TensorData::new(xv, [m, inp]), &Default::default());
        let want = vec_of(cpu.forward(xc));
        let got = vec_of(gpu.forward(xg.clone()));
        assert_product_close(&got, &want, &scale, &format!("forward m={m}"));
        // The backend-generic entry point recognizes the CubeCL backend and takes the same path.
        let any = vec_of(gpu.forward_any(xg));
        assert_eq!(any, got, "forward_any m={m}");
    }
    // One upload, kept for every later call on the device.
    assert_eq!(
        format!("{:?}", cpu.weight)
            .matches("DeviceCache(1 devices)")
            .count(),
        1
    );
}

/// The autodiff backward on the device: `dX = dY · dequant(W)`, equal to the CPU
/// layer's, with the packed weight outside the graph.
#[test]
fn device_backward_matches_the_cpu_layer() {
    let (out, inp, m) = (48, 130, 6);
    let w = random(out * inp, 11);
    let q = Nf4Linear::<Autodiff<Flex>>::quantize(&w, out, inp).unwrap();
    let gpu = Nf4Linear::<Autodiff<Gpu>> {
        weight: Arc::clone(&q.weight),
        backend: Default::default(),
    };
    let xv = random(m * inp, 12);
    let gv = random(m * out, 13);
    let grad_of = |xs: Vec<f32>| -> Vec<f32> {
        let x = Tensor::<Autodiff<Flex>, 2>::from_data(TensorData::new(xs, [m, inp]), &FlexDevice)
            .require_grad();
        let g = Tensor::<Autodiff<Flex>, 2>::from_data(
            TensorData::new(gv.clone(), [m, out]),
            &FlexDevice,
        );
        let grads = (q.forward(x.clone()) * g).sum().backward();
        vec_of(x.grad(&grads).unwrap())
    };
    let want = grad_of(xv.clone());
    // dX = dY · W: products over the output features, against Wᵀ's rows.
    let wt = transpose(&cpu_dequant(&q.weight), out, inp);
    let scale = abs_products(&gv, &wt, m, inp, out);
    let d = Default::default();
    let x = Tensor::<Autodiff<Gpu>, 2>::from_data(TensorData::new(xv, [m, inp]), &d).require_grad();
    let g = Tensor::<Autodiff<Gpu>, 2>::from_data(TensorData::new(gv.clone(), [m, out]), &d);
    let grads = (gpu.forward_any(x.clone()) * g).sum().backward();
    let got = vec_of(x.grad(&grads).unwrap());
    assert_product_close(&got, &want, &scale, "input gradient");
    // The input gradient alone: the extension op called directly.
    let dy = Tensor::<Gpu, 2>::from_data(TensorData::new(gv, [m, out]), &d);
    let direct = <Gpu as Nf4Backend>::nf4_matmul_grad(dy.into_primitive().tensor(), &gpu.weight);
    let direct = vec_of(Tensor::<Gpu, 2>::from_primitive(TensorPrimitive::Float(
        direct,
    )));
    assert_product_close(&direct, &want, &scale, "nf4_matmul_grad");
}

/// The fused few-row product (`cube::fused_matmul`, the GEMV of a generation step) reads
/// the packed codes without an f32 weight and equals `x · dequant(W)ᵀ` summed in f64 on
/// the host, to f32 summation rounding (it multiplies in f32: no TF32 staging), for
/// 1-4 rows, every block size class, both code books, feature counts that leave a cube
/// part-filled, rows shorter than the lanes that stride over them, and rows read one
/// packed word or four at a time.
#[test]
fn fused_few_row_product_matches_the_dequantized_product() {
    use bioalign_quant::cube::{CubeNf4, FUSED_MAX_ROWS, fusable, fused_matmul};
    let device = Default::default();
    // Rows of whole 32-value groups take 4 packed words per step, others one; 2600 and
    // 2112 columns: one whole chunk of `x` in shared memory and a partial one.
    let cases: [(usize, usize, usize, QuantType); 8] = [
        (1, 8, 32, QuantType::Nf4),
        (5, 2600, 64, QuantType::Nf4),
        (3, 2112, 32, QuantType::Nf4),
        (13, 200, 64, QuantType::Nf4),
        (96, 576, 64, QuantType::Nf4),
        (7, 1024, 256, QuantType::Fp4),
        (33, 4096, 4096, QuantType::Nf4),
        (1537, 64, 128, QuantType::Nf4),
    ];
    for (seed, &(rows, cols, bs, qt)) in cases.iter().enumerate() {
        let w = random(rows * cols, 40 + seed as u64);
        let opts = QuantizeOptions {
            quant_type: qt,
            blocksize: BlockSize::new(bs).unwrap(),
            double_quant: true,
        };
        let p = packed(&w, rows, cols, opts);
        let wd = cpu_dequant(&p);
        for m in 1..=FUSED_MAX_ROWS {
            let xv = random(m * cols, 90 + m as u64);
            let xg = Tensor::<Gpu, 2>::from_data(TensorData::new(xv.clone(), [m, cols]), &device);
            let prim = xg.into_primitive().tensor();
            assert!(fusable(&prim, &p), "{rows}x{cols} m={m}: not fused");
            let got = vec_of(Tensor::<Gpu, 2>::from_primitive(TensorPrimitive::Float(
                fused_matmul(prim.clone(), &p),
            )));
            let scale = abs_products(&xv, &wd, m, rows, cols);
            for i in 0..m {
                for j in 0..rows {
                    let want: f64 = (0..cols)
                        .map(|k| xv[i * cols + k] as f64 * wd[j * cols + k] as f64)
                        .sum();
                    let g = got[i * rows + j];
                    let tol = 1e-5 * scale[i * rows + j] + 1e-6;
                    assert!(
                        (g as f64 - want).abs() <= tol as f64,
                        "{rows}x{cols} block {bs} {qt:?} m={m} [{i}, {j}]: {g} vs {want}"
                    );
                }
            }
            // The dequantize-then-matmul path of larger batches agrees on the same rows.
            let unfused = vec_of(Tensor::<Gpu, 2>::from_primitive(TensorPrimitive::Float(
                <Gpu as CubeNf4>::nf4_matmul_dequantized(prim, &p),
            )));
            // Both sum in f32 (the matmul possibly with TF32 operands): each within
            // 1e-5 of `Σ|x||w|` of the exact value.
            for (i, ((u, g), s)) in unfused.iter().zip(&got).zip(&scale).enumerate() {
                let tol = (2e-5 + OPERAND_ROUNDING) * s + 1e-6;
                assert!(
                    (u - g).abs() <= tol,
                    "{rows}x{cols} m={m} dequantized_matmul[{i}]: {u} vs fused {g}"
                );
            }
        }
    }
    // Past the fused path: more rows, or rows that are not whole 8-value words.
    let p = packed(&random(24 * 64, 5), 24, 64, QuantizeOptions::default());
    let x = Tensor::<Gpu, 2>::zeros([FUSED_MAX_ROWS + 1, 64], &device);
    assert!(!fusable(&x.into_primitive().tensor(), &p));
    let p = packed(&random(3 * 60, 6), 3, 60, QuantizeOptions::default());
    let x = Tensor::<Gpu, 2>::zeros([1, 60], &device);
    assert!(!fusable(&x.into_primitive().tensor(), &p));
}
