//! 4-bit NormalFloat (NF4) and FP4 quantization, bit-compatible with
//! bitsandbytes, for QLoRA's frozen base weights.
//!
//! - [`codebook`]: the NF4 / FP4 code books and the validated [`BlockSize`].
//! - [`blockwise`]: blockwise quantization (absmax per block, two codes per
//!   byte, first element in the high nibble) producing the same bytes as
//!   bitsandbytes 0.50.2 on CPU.
//! - [`double_quant`]: double quantization of the block scales (mean offset,
//!   blocks of 256, signed 8-bit dynamic map).
//! - [`Quantized4bit`]: a weight with its full state; [`checkpoint`] reads and
//!   writes it in the bnb-4bit safetensors layout of Hugging Face checkpoints.
//! - [`kernels`]: dequantization to f32 / bf16 and the fused product
//!   `y = x · dequant(W)ᵀ` (AVX-512 / AVX2 chosen at run time, NEON on AArch64,
//!   scalar reference, multi-threaded).
//! - `nf4_linear` (feature `burn`): `Nf4Linear<B>`, the frozen NF4 projection as a
//!   burn module, fused on burn-flex, with an autodiff backward that gives the
//!   weight no gradient.
//! - `dense` (feature `burn`): plain f32 products of frozen weights on burn-flex
//!   through the same blocked kernel.
//! - [`packed`]: [`F32Packed`] and [`Bf16Packed`], frozen weights laid out once in
//!   the blocked kernel's panels for inference: f32 products read them in place;
//!   bf16 halves the bytes (f32 sums, or AVX-512 BF16 dot products).
//! - [`q8`]: [`Q8Packed`], an 8-bit matrix in GGUF's `Q8_0` form (a token
//!   embedding and its tied LM head), multiplied by the same kernels.
//! - [`cube`] (feature `cubecl`, turned on by `cuda` and `wgpu`): the same layer on
//!   CubeCL backends, with the weight kept packed on the device and a CubeCL
//!   dequantization kernel.
//!
//! Non-finite input is an error ([`Error::NonFinite`]); bitsandbytes would
//! silently turn the whole block into NaN.

pub mod blockwise;
pub mod checkpoint;
pub mod codebook;
#[cfg(feature = "cubecl")]
pub mod cube;
#[cfg(feature = "burn")]
pub mod dense;
pub mod double_quant;
pub mod dynamic_map;
mod error;
pub mod kernels;
#[cfg(feature = "burn")]
pub mod nf4_linear;
pub mod packed;
pub mod q8;
mod tensor;

pub use codebook::{BlockSize, QuantType};
pub use double_quant::NestedScales;
pub use error::{Error, Result};
pub use kernels::{Isa, Nf4Weight, Q8Weight};
#[cfg(feature = "burn")]
pub use nf4_linear::{Nf4Backend, Nf4Linear, Nf4Packed};
pub use packed::{Bf16Packed, F32Packed};
pub use q8::Q8Packed;
pub use tensor::{QuantizeOptions, Quantized4bit, Scales, SourceDtype};
