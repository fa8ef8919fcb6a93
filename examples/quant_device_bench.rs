//! Times bioalign-quant's NF4 kernels on a CubeCL device beside the f32 product of the
//! same shape on the same device (the GPU side of `cargo bench --bench quant`):
//!
//! ```sh
//! cargo run --release --features cuda --example quant_device_bench -- --device cuda
//! ```
//!
//! For each layer shape of SmolLM2-135M and Llama-3-8B (`[out, in]`, NF4, blocks of 64,
//! double quantization), one line per figure, each the mean of `--repeats` calls after
//! three warm-up calls, the device synchronized before and after:
//!
//! - `dequantize`: the CubeCL dequantization to f32, with GB/s of bytes moved (packed
//!   codes and f32 block scales read, f32 written), beside `copy`: an f32 tensor of the
//!   same size copied on the device (read + written);
//! - `gemv_nf4_fused`: `x · dequant(W)ᵀ` for one row of `x`, the fused kernel that
//!   [`Nf4Backend::nf4_matmul`] runs for up to `FUSED_MAX_ROWS` rows (no f32 weight);
//! - `gemv_nf4_dequantized`: the same through dequantize-then-matmul (the path before
//!   the fused kernel, and the one of larger batches);
//! - `gemv_f32`: the backend's matmul against an f32 weight kept on the device;
//! - `gemm512_nf4` / `gemm512_f32`: the same two for 512 rows of `x`.
//!
//! `--device cpu` is refused: the CPU kernels have their criterion benchmarks
//! (`cargo bench -p bioalign-benches --bench quant`).

use anyhow::{Result, bail};
use bioalign_models::DeviceChoice;
use clap::Parser;

#[derive(Parser, Debug)]
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
#[command(about = "NF4 kernels on a CubeCL device (feature cuda or wgpu) beside f32 products")]
struct Args {
    /// `cuda[:N]` (feature `cuda`) or `wgpu` (feature `wgpu`).
    #[arg(long, default_value = "cuda")]
    device: DeviceChoice,
    /// Timed calls per figure (after three warm-up calls).
    #[arg(long, default_value_t = 50)]
    repeats: usize,
    /// Only the SmolLM2-135M shapes (for slow devices such as a software Vulkan one).
    #[arg(long)]
    small: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    args.device.check_compiled()?;
    #[cfg(feature = "cuda")]
    if let DeviceChoice::Cuda(i) = args.device {
        return bench::run::<bioalign_models::Cuda>(&bioalign_models::CudaDevice::new(i), &args);
    }
    #[cfg(feature = "wgpu")]
    if args.device == DeviceChoice::Wgpu {
        return bench::run::<bioalign_models::Wgpu>(&bioalign_models::WgpuDevice::default(), &args);
    }
    bail!(
        "quant_device_bench times the CubeCL kernels; `--device {}` has none \
         (the CPU kernels are in `cargo bench -p bioalign-benches --bench quant`)",
        args.device
    )
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod bench {
    use std::time::Instant;

    use super::{Args, Result};
    use bioalign_quant::cube::CubeNf4;
    use bioalign_quant::{Nf4Packed, QuantizeOptions, Quantized4bit, SourceDtype};
    use burn::tensor::{ElementConversion, Tensor, TensorData, TensorPrimitive};
    use rand::{Rng, SeedableRng};

    /// `(name, out, in)` of the benchmarked layers.
    const SHAPES: [(&str, usize, usize); 5] = [
        ("smollm2 q_proj", 576, 576),
        ("smollm2 gate_proj", 1536, 576),
        ("smollm2 down_proj", 576, 1536),
        ("llama3-8b q_proj", 4096, 4096),
        ("llama3-8b gate_proj", 14336, 4096),
    ];

    /// The mean seconds of one `f()` over `repeats` calls, after three warm-up calls, with
    /// the device synchronized around the timed calls.
    fn time<B: burn::tensor::backend::Backend>(
        device: &B::Device,
        repeats: usize,
        mut f: impl FnMut(),
    ) -> Result<f64> {
        for _ in 0..3 {
            f();
        }
        B::sync(device).map_err(|e| anyhow::anyhow!("device sync: {e:?}"))?;
        let t = Instant::now();
        for _ in 0..repeats {
            f();
        }
        B::sync(device).map_err(|e| anyhow::anyhow!("device sync: {e:?}"))?;
        Ok(t.elapsed().as_secs_f64() / repeats.max(1) as f64)
    }

    /// Uniform values in [-1, 1) from a seeded ChaCha8 stream.
    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn line(shape: &str, figure: &str, secs: f64, extra: &str) {
        println!("{shape:<20} {figure:<22} {:>10.2} µs  {extra}", secs * 1e6);
    }

    pub fn run<B: CubeNf4>(device: &B::Device, args: &Args) -> Result<()> {
        let n = args.repeats;
        println!("device {:?}, {n} calls per figure (mean)", device);
        // Idle GPUs clock down: a half-second of products first, so the first figures
        // are taken at working clocks.
        let a = Tensor::<B, 2>::ones([2048, 2048], device);
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < 0.5 {
            drop(a.clone().matmul(a.clone()));
            B::sync(device).map_err(|e| anyhow::anyhow!("device sync: {e:?}"))?;
        }
        let shapes = if args.small {
            &SHAPES[..3]
        } else {
            &SHAPES[..]
        };
        for &(name, rows, cols) in shapes {
            let w = random(rows * cols, rows as u64 ^ cols as u64);
            let q = Quantized4bit::quantize(
                &w,
                &[rows, cols],
                SourceDtype::F32,
                QuantizeOptions::default(),
            )?;
            let p = Nf4Packed::new(q)?;
            let numel = (rows * cols) as f64;
            // The bytes on the device: packed codes and f32 block scales.
            let stored = (p.quantized().packed.len() + 4 * p.absmax().len()) as f64;
            // Dequantization reads them and writes the f32 values.
            let moved = stored + numel * 4.0;
            let t = time::<B>(device, n, || {
                drop(B::nf4_dequantize(&p, device));
            })?;
            let gbs = |secs: f64, bytes: f64| format!("{:.1} GB/s", bytes / secs / 1e9);
            line(name, "dequantize", t, &gbs(t, moved));
            let wd =
                Tensor::<B, 2>::from_data(TensorData::new(p.dequantize(), [rows, cols]), device);
            let t = time::<B>(device, n, || {
                drop(wd.clone().add_scalar(0.0));
            })?;
            line(name, "copy (f32, same size)", t, &gbs(t, numel * 8.0));
            let wt = wd.clone().transpose();
            for m in [1usize, 512] {
                let x = Tensor::<B, 2>::from_data(
                    TensorData::new(random(m * cols, 7), [m, cols]),
                    device,
                );
                let prim = || x.clone().into_primitive().tensor();
                let flops = 2.0 * m as f64 * numel;
                let rate = |secs: f64| format!("{:.2} TFLOP/s", flops / secs / 1e12);
                let f32_t = time::<B>(device, n, || {
                    drop(x.clone().matmul(wt.clone()));
                })?;
                let deq_t = time::<B>(device, n, || {
                    drop(B::nf4_matmul_dequantized(prim(), &p));
                })?;
                if m == 1 {
                    let fused_t = time::<B>(device, n, || {
                        drop(B::nf4_matmul_fused(prim(), &p));
                    })?;
                    line(
                        name,
                        "gemv_nf4_fused",
                        fused_t,
                        &format!(
                            "{}, {:.2}x gemv_f32, {:.2}x gemv_nf4_dequantized",
                            gbs(fused_t, stored), // codes and scales, read once
                            f32_t / fused_t,
                            deq_t / fused_t
                        ),
                    );
                    line(name, "gemv_nf4_dequantized", deq_t, "");
                    line(name, "gemv_f32", f32_t, &gbs(f32_t, numel * 4.0));
                    // The values agree (the fused kernel is the GEMV's path).
                    let a = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(
                        B::nf4_matmul_fused(prim(), &p).expect("fusable shape"),
                    ));
                    let b = x.clone().matmul(wt.clone());
                    let diff: f32 = (a - b).abs().max().into_scalar().elem();
                    println!(
                        "{name:<20} {:<22} max |fused - f32 product| = {diff:.3e}",
                        ""
                    );
                } else {
                    line(name, "gemm512_nf4", deq_t, &rate(deq_t));
                    line(name, "gemm512_f32", f32_t, &rate(f32_t));
                }
            }
        }
        Ok(())
    }
}
