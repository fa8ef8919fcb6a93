//! A quantized weight with its full bitsandbytes state.

use half::bf16;

use crate::blockwise::{check_lengths, quantize_4bit};
use crate::codebook::{BlockSize, QuantType};
use crate::double_quant::NestedScales;
use crate::kernels::{self, Isa, Nf4Weight};
use crate::{Error, Result};

/// Block scales: plain f32, or double-quantized.
#[derive(Debug, Clone, PartialEq)]
pub enum Scales {
    /// One f32 absmax per block.
    Plain(Vec<f32>),
    /// bitsandbytes' double quantization (`compress_statistics=True`).
    Nested(NestedScales),
}

/// Element type of the original (unquantized) weight, recorded in the state
/// as bitsandbytes does (`"dtype": "bfloat16"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceDtype {
    /// float32.
    F32,
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
}

impl SourceDtype {
    /// torch's name without the `torch.` prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceDtype::F32 => "float32",
            SourceDtype::Bf16 => "bfloat16",
            SourceDtype::F16 => "float16",
        }
    }

    /// Parses torch's name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "float32" => Some(SourceDtype::F32),
            "bfloat16" => Some(SourceDtype::Bf16),
            "float16" => Some(SourceDtype::F16),
            _ => None,
        }
    }
}

/// Options of [`Quantized4bit::quantize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizeOptions {
    /// NF4 (default) or FP4.
    pub quant_type: QuantType,
    /// Block size (default 64).
    pub blocksize: BlockSize,
    /// Double-quantize the block scales (default true, as QLoRA).
    pub double_quant: bool,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            quant_type: QuantType::Nf4,
            blocksize: BlockSize::DEFAULT,
            double_quant: true,
        }
    }
}

/// A 4-bit quantized tensor: packed codes, scales, shape and original dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized4bit {
    /// Shape of the original tensor (`[out_features, in_features]` for a linear weight).
    pub shape: Vec<usize>,
    /// Original element type.
    pub dtype: SourceDtype,
    /// NF4 or FP4.
    pub quant_type: QuantType,
    /// Elements per block.
    pub blocksize: BlockSize,
    /// Two codes per byte, first element in the high nibble.
    pub packed: Vec<u8>,
    /// Block scales.
    pub scales: Scales,
}

impl Quantized4bit {
    /// Quantizes `data` (row-major, `shape`) exactly as bitsandbytes'
    /// `quantize_4bit` on CPU.
    pub fn quantize(
        data: &[f32],
        shape: &[usize],
        dtype: SourceDtype,
        opts: QuantizeOptions,
    ) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape(
                "data for shape",
                format!("{shape:?} = {n} values"),
                data.len(),
            ));
        }
        let (packed, absmax) = quantize_4bit(data, opts.blocksize, opts.quant_type)?;
        let scales = if opts.double_quant {
            Scales::Nested(NestedScales::compress(&absmax))
        } else {
            Scales::Plain(absmax)
        };
        Ok(Quantized4bit {
            shape: shape.to_vec(),
            dtype,
            quant_type: opts.quant_type,
            blocksize: opts.blocksize,
            packed,
            scales,
        })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Checks that packed bytes and scales fit the shape.
    pub fn validate(&self, name: &str) -> Result<()> {
        let n = self.numel();
        let blocks = self.blocksize.blocks(n);
        match &self.scales {
            Scales::Plain(a) => check_lengths(&self.packed, a, n, self.blocksize)
                .map_err(|e| Error::quant_state(name, e.to_string()))?,
            Scales::Nested(ns) => {
                check_lengths(&self.packed, &vec![0.0; blocks], n, self.blocksize)
                    .map_err(|e| Error::quant_state(name, e.to_string()))?;
                ns.validate(blocks, name)?;
            }
        }
        Ok(())
    }

    /// f32 scale per block (nested scales expanded as bitsandbytes does).
    pub fn absmax_f32(&self) -> Vec<f32> {
        match &self.scales {
            Scales::Plain(a) => a.clone(),
            Scales::Nested(ns) => ns.expand(),
        }
    }

    /// `[rows, cols]` of a 2-D weight (a 1-D tensor is one row).
    pub fn matrix_dims(&self) -> (usize, usize) {
        match self.shape.as_slice() {
            [] => (1, 1),
            [c] => (1, *c),
            [lead @ .., c] => (lead.iter().product(), *c),
        }
    }

    /// Dequantizes to f32 with the fastest kernel.
    pub fn dequantize_f32(&self) -> Vec<f32> {
        let absmax = self.absmax_f32();
        let mut out = vec![0f32; self.numel()];
        let (r, c) = self.matrix_dims();
        if let Ok(w) = Nf4Weight::new(&self.packed, &absmax, r, c, self.blocksize, self.quant_type)
        {
            // Lengths were just checked, so this cannot fail.
            let _ = kernels::dequantize_f32(&w, &mut out, Isa::detect(), 0);
        }
        out
    }

    /// Dequantizes to bf16 with the fastest kernel.
    pub fn dequantize_bf16(&self) -> Vec<bf16> {
        let absmax = self.absmax_f32();
        let mut out = vec![bf16::ZERO; self.numel()];
        let (r, c) = self.matrix_dims();
        if let Ok(w) = Nf4Weight::new(&self.packed, &absmax, r, c, self.blocksize, self.quant_type)
        {
            let _ = kernels::dequantize_bf16(&w, &mut out, Isa::detect(), 0);
        }
        out
    }
}
