//! Turns a Hugging Face safetensors model (single file or sharded) into a
//! bnb-4bit NF4 checkpoint that transformers + bitsandbytes load directly.
//!
//! ```text
//! cargo run --release --example quantize -- --model DIR --out DIR2
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bioalign_quant::checkpoint::{QuantizeModelOptions, quantize_model};
use bioalign_quant::{BlockSize, QuantType, QuantizeOptions};
use clap::Parser;

/// Quantize the linear layers of a safetensors model to 4-bit (bitsandbytes layout).
#[derive(Parser, Debug)]
struct Args {
    /// Folder with config.json and model.safetensors (or a sharded index).
    #[arg(long)]
    model: PathBuf,
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Elements per block: a power of two from 32 to 4096.
    #[arg(long, default_value_t = 64)]
    blocksize: usize,
    /// nf4 or fp4.
    #[arg(long, default_value = "nf4")]
    quant_type: String,
    /// Keep the block scales in f32 instead of double-quantizing them.
    #[arg(long)]
    no_double_quant: bool,
    /// bnb_4bit_compute_dtype recorded in config.json.
    #[arg(long, default_value = "float32")]
    compute_dtype: String,
    /// Intra-op threads of the torch whose mean the offset should match bit for bit.
    #[arg(long, default_value_t = 1)]
    torch_threads: usize,
    /// Modules never quantized (besides lm_head and embeddings).
    #[arg(long)]
    skip: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let opts = QuantizeModelOptions {
        quant: QuantizeOptions {
            quant_type: QuantType::parse(&args.quant_type)?,
            blocksize: BlockSize::new(args.blocksize)?,
            double_quant: !args.no_double_quant,
        },
        compute_dtype: args.compute_dtype,
        skip_modules: args.skip,
        torch_threads: args.torch_threads,
    };
    let t = Instant::now();
    let r = quantize_model(&args.model, &args.out, &opts).with_context(|| {
        format!(
            "quantizing {} into {}",
            args.model.display(),
            args.out.display()
        )
    })?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "quantized {} weights ({:.1} M parameters), kept {} tensors; {:.1} MB -> {:.1} MB in {secs:.2} s",
        r.quantized,
        r.quantized_params as f64 / 1e6,
        r.kept,
        r.bytes_in as f64 / 1e6,
        r.bytes_out as f64 / 1e6,
    );
    for f in &r.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
