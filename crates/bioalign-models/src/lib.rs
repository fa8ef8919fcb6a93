//! Llama, Mistral and Phi-3 decoders for BioAlign, loaded exactly from real checkpoints.
//!
//! - [`gguf`]: a memory-mapped GGUF reader with dequantization of F32, F16, BF16, Q8_0,
//!   Q4_0, Q4_1, Q4_K and Q6_K tensors.

pub mod config;
pub mod device;
pub mod embed;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod pretrained;
pub mod tokenizer;
pub mod weights;

pub use device::DeviceChoice;
pub use error::{Error, Result};
pub use pretrained::{Pretrained, load_pretrained, load_pretrained_with};
pub use weights::LoadOptions;

/// The CPU backend (burn-flex: gemm matmuls, SIMD, rayon).
pub type Cpu = burn_flex::Flex;

/// The CPU device.
pub type CpuDevice = burn_flex::FlexDevice;

/// burn-cuda (feature `cuda`): the same decoder on an NVIDIA GPU, NF4 layers through
/// bioalign-quant's CubeCL kernels.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// A CUDA device (`CudaDevice::new(index)`).
#[cfg(feature = "cuda")]
pub type CudaDevice = burn::backend::cuda::CudaDevice;

/// burn-wgpu (feature `wgpu`): the same decoder on a Vulkan / Metal / DX12 device.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;

/// A wgpu device (`WgpuDevice::DefaultDevice` picks the best adapter).
#[cfg(feature = "wgpu")]
pub type WgpuDevice = burn::backend::wgpu::WgpuDevice;

/// Where `datasets/fetch.sh models` puts SmolLM2-135M-Instruct, relative to
/// [`bioalign_io::data_dir`].
pub const SMOLLM2_GGUF: &str = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The path of the SmolLM2-135M-Instruct GGUF under [`bioalign_io::data_dir`] (it may be absent).
pub fn smollm2_gguf_path() -> std::path::PathBuf {
    bioalign_io::data_dir().join(SMOLLM2_GGUF)
}
