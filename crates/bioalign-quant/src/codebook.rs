//! The 4-bit code books (NF4, FP4) and their quantization boundaries.
//!
//! Values are those of bitsandbytes 0.50.2: `functional.get_4bit_type` (the
//! `quant_map` stored in checkpoints) and the C++ CPU look-up tables
//! `nf4_lut` / `fp4_lut` used to dequantize (identical except that FP4 code 8
//! is `-0.0` in the C++ table and `0.0` in the stored `quant_map`).

use std::fmt;

use crate::{Error, Result};

/// Which 4-bit data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// 4-bit NormalFloat (QLoRA): 16 quantiles of N(0, 1), scaled to `[-1, 1]`.
    Nf4,
    /// bitsandbytes' 4-bit float: 1 sign, 2 exponent, 1 mantissa bit.
    Fp4,
}

/// NF4 values indexed by code (bitsandbytes `get_4bit_type("nf4")`).
#[allow(clippy::excessive_precision)]
pub const NF4: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// FP4 values indexed by code, as bitsandbytes' C++ CPU `fp4_lut` (code 8 is `-0.0`).
#[allow(clippy::excessive_precision)]
#[rustfmt::skip]
pub const FP4: [f32; 16] = [
    0.0, 0.005208333333, 0.66666667, 1.0, 0.33333333, 0.5, 0.16666667, 0.25,
    -0.0, -0.005208333333, -0.66666667, -1.0, -0.33333333, -0.5, -0.16666667, -0.25,
];

/// FP4 codes in ascending order of value, as bitsandbytes' default CPU
/// quantizer sorts them (`torch.argsort(code)`; ties 0 / -0 as it breaks them).
const FP4_ORDER: [u8; 16] = [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3];

impl QuantType {
    /// The 16 values indexed by code, as used for dequantization.
    pub fn code(self) -> &'static [f32; 16] {
        match self {
            QuantType::Nf4 => &NF4,
            QuantType::Fp4 => &FP4,
        }
    }

    /// The `quant_map` tensor that bitsandbytes stores with a checkpoint.
    pub fn quant_map(self) -> [f32; 16] {
        let mut m = *self.code();
        if self == QuantType::Fp4 {
            m[8] = 0.0;
        }
        m
    }

    /// Name used by bitsandbytes and transformers (`"nf4"`, `"fp4"`).
    pub fn as_str(self) -> &'static str {
        match self {
            QuantType::Nf4 => "nf4",
            QuantType::Fp4 => "fp4",
        }
    }

    /// Parses `"nf4"` / `"fp4"`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "nf4" => Ok(QuantType::Nf4),
            "fp4" => Ok(QuantType::Fp4),
            other => Err(Error::shape(
                "quant_type",
                "\"nf4\" or \"fp4\"",
                format!("{other:?}"),
            )),
        }
    }

    /// Code of the sorted position `i` (identity for NF4).
    pub(crate) fn order(self) -> [u8; 16] {
        match self {
            QuantType::Nf4 => core::array::from_fn(|i| i as u8),
            QuantType::Fp4 => FP4_ORDER,
        }
    }

    /// The 15 midpoints between consecutive sorted code values, computed as
    /// bitsandbytes does (`(c[i] + c[i+1]) / 2` in f32).
    pub fn bounds(self) -> [f32; 15] {
        let qm = self.quant_map();
        let order = self.order();
        core::array::from_fn(|i| (qm[order[i] as usize] + qm[order[i + 1] as usize]) / 2.0)
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated block size: a power of two from 32 to 4096 (bitsandbytes' set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockSize(usize);

impl BlockSize {
    /// bitsandbytes' default for 4-bit weights.
    pub const DEFAULT: BlockSize = BlockSize(64);
    /// Block size of the nested (double) quantization of the scales.
    pub const NESTED: BlockSize = BlockSize(256);

    /// Checks `n`.
    pub fn new(n: usize) -> Result<Self> {
        if (32..=4096).contains(&n) && n.is_power_of_two() {
            Ok(BlockSize(n))
        } else {
            Err(Error::BlockSize {
                found: n,
                context: String::new(),
            })
        }
    }

    /// The size in elements.
    pub fn get(self) -> usize {
        self.0
    }

    /// Number of blocks covering `n` elements.
    pub fn blocks(self, n: usize) -> usize {
        n.div_ceil(self.0)
    }
}

impl Default for BlockSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nf4_sorted_and_bounded() {
        assert!(NF4.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((NF4[0], NF4[7], NF4[15]), (-1.0, 0.0, 1.0));
    }

    #[test]
    fn fp4_order_sorts_values() {
        let qm = QuantType::Fp4.quant_map();
        let sorted: Vec<f32> = FP4_ORDER.iter().map(|&c| qm[c as usize]).collect();
        assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "{sorted:?}");
        let b = QuantType::Fp4.bounds();
        assert!(b.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn block_sizes() {
        for ok in [32, 64, 128, 256, 512, 1024, 2048, 4096] {
            assert_eq!(BlockSize::new(ok).unwrap().get(), ok);
        }
        for bad in [0, 16, 48, 96, 8192] {
            assert!(
                matches!(BlockSize::new(bad), Err(Error::BlockSize { found, .. }) if found == bad)
            );
        }
        assert_eq!(BlockSize::DEFAULT.blocks(65), 2);
    }
}
