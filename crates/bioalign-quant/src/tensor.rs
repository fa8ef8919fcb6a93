//! A quantized weight with its full bitsandbytes state.

use half::bf16;

use crate::blockwise::{check_lengths, quantize_4bit};
use crate::codebook::{BlockSize, QuantType};
use crate::double_quant::{NESTED_BLOCKSIZE, NestedScales};
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

    /// Splits a 2-D weight into consecutive row ranges of `counts` rows each, without
    /// dequantizing: the split of a fused projection stored in 4 bits (Phi-3's `qkv_proj`
    /// and `gate_up_proj` in a bnb-4bit checkpoint). Every part dequantizes to exactly the
    /// rows it came from. Each boundary must fall on a quantization block boundary (it
    /// does whenever `rows × cols` of each part is a multiple of the block size); nested
    /// scales stay nested when a boundary also falls on a 256-block boundary and are
    /// expanded to their f32 values otherwise.
    pub fn split_rows(&self, counts: &[usize], name: &str) -> Result<Vec<Quantized4bit>> {
        let [rows, cols] = self.shape[..] else {
            return Err(Error::quant_state(
                name,
                format!("split_rows needs a 2-D weight, shape is {:?}", self.shape),
            ));
        };
        let total: usize = counts.iter().sum();
        if total != rows {
            return Err(Error::quant_state(
                name,
                format!("row counts {counts:?} add up to {total}, the weight has {rows} rows"),
            ));
        }
        let bs = self.blocksize.get();
        let n = self.numel();
        let blocks = self.blocksize.blocks(n);
        let mut parts = Vec::with_capacity(counts.len());
        let mut r0 = 0;
        for &c in counts {
            let (e0, e1) = (r0 * cols, (r0 + c) * cols);
            for (r, e) in [(r0, e0), (r0 + c, e1)] {
                if e % bs != 0 && e != n {
                    return Err(Error::quant_state(
                        name,
                        format!(
                            "cannot split at row {r}: element {e} is not on a block boundary \
                             (block size {bs})"
                        ),
                    ));
                }
            }
            let (b0, b1) = (e0 / bs, if e1 == n { blocks } else { e1 / bs });
            let packed = self.packed[e0 / 2..e1.div_ceil(2)].to_vec();
            let scales = match &self.scales {
                Scales::Plain(a) => Scales::Plain(a[b0..b1].to_vec()),
                Scales::Nested(ns)
                    if b0 % NESTED_BLOCKSIZE == 0
                        && (b1 % NESTED_BLOCKSIZE == 0 || b1 == blocks) =>
                {
                    Scales::Nested(NestedScales {
                        codes: ns.codes[b0..b1].to_vec(),
                        nested_absmax: ns.nested_absmax
                            [b0 / NESTED_BLOCKSIZE..b1.div_ceil(NESTED_BLOCKSIZE)]
                            .to_vec(),
                        offset: ns.offset,
                    })
                }
                Scales::Nested(ns) => Scales::Plain(ns.expand()[b0..b1].to_vec()),
            };
            let part = Quantized4bit {
                shape: vec![c, cols],
                dtype: self.dtype,
                quant_type: self.quant_type,
                blocksize: self.blocksize,
                packed,
                scales,
            };
            part.validate(name)?;
            parts.push(part);
            r0 += c;
        }
        Ok(parts)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(rows: usize, cols: usize) -> Quantized4bit {
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 13) as f32))
            .collect();
        Quantized4bit::quantize(
            &data,
            &[rows, cols],
            SourceDtype::Bf16,
            QuantizeOptions::default(),
        )
        .unwrap()
    }

    fn check_parts(w: &Quantized4bit, counts: &[usize]) -> Vec<Quantized4bit> {
        let full = w.dequantize_f32();
        let cols = w.shape[1];
        let parts = w.split_rows(counts, "w").unwrap();
        let mut r0 = 0;
        for (p, &c) in parts.iter().zip(counts) {
            assert_eq!(p.shape, vec![c, cols]);
            assert_eq!(p.dequantize_f32(), full[r0 * cols..(r0 + c) * cols]);
            r0 += c;
        }
        parts
    }

    #[test]
    fn split_rows_gives_the_rows_bit_for_bit() {
        // 10 blocks: boundaries inside a 256-block group expand the nested scales.
        let parts = check_parts(&weight(10, 64), &[3, 2, 5]);
        assert!(parts.iter().all(|p| matches!(p.scales, Scales::Plain(_))));
        // Boundaries on 256-block groups keep the 8-bit scales (and their offset).
        let w = weight(768 + 5, 64);
        let parts = check_parts(&w, &[256, 512, 5]);
        assert!(parts.iter().all(|p| matches!(p.scales, Scales::Nested(_))));
        // Odd element count: the last part ends on the padded byte.
        check_parts(&weight(65, 1), &[64, 1]);
    }

    #[test]
    fn split_rows_refuses_bad_counts_and_boundaries() {
        let w = weight(4, 48);
        let e = w.split_rows(&[1, 3], "qkv").unwrap_err().to_string();
        assert!(e.contains("qkv") && e.contains("block boundary"), "{e}");
        let e = weight(4, 64)
            .split_rows(&[1, 2], "qkv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("add up to 3"), "{e}");
    }
}
