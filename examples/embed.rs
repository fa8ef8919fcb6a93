//! Embeds sentences with a Llama / Mistral / Phi-3 model and writes them as safetensors.
//!
//! ```text
//! cargo run --release -p bioalign-examples --example embed -- \
//!     --model PATH [--adapter DIR] --input FILE(.csv|.parquet) --out FILE.safetensors \
//!     [--pooling mean|last|mean-padded] [--layers last|all] [--logits] [--batch-size 32] \
//!     [--device cpu|cuda[:N]|wgpu]
//! ```
//!
//! See `--help` for the tensor names written.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bioalign_models::DeviceChoice;
use bioalign_models::embed::{Layers, Pooling};
use burn::tensor::backend::Backend;
use clap::{Parser, ValueEnum};
use safetensors::{Dtype, tensor::TensorView};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PoolingArg {
    /// Mean over the real tokens.
    Mean,
    /// The last real token.
    Last,
    /// Mean over all positions of the padded batch, padding included (the reference study's
    /// flaw, only to compare).
    MeanPadded,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LayersArg {
    /// The last hidden state, after the final norm.
    Last,
    /// The embeddings and every layer's output (num_layers + 1 states).
    All,
}

#[derive(Parser, Debug)]
#[command(
    about = "Pooled sentence embeddings (and next-token logits) as f32 safetensors",
    after_help = "Tensors written (f32):\n  \
        embeddings          [n, hidden]  pooled last hidden state (--layers last)\n  \
        embeddings.layer_I  [n, hidden]  pooled hidden state I = 0..=num_layers (--layers all;\n                                     \
        0 = token embeddings, num_layers = after the final norm)\n  \
        logits              [n, vocab]   next-token logits after each input's last real token (--logits)\n\
        Row i is the i-th row of the input's `text` column. Inputs are tokenized with the model's\n\
        tokenizer (special tokens included) and batched with its padding side."
)]
struct Args {
    /// A Hugging Face model folder or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// Sentences: a .csv or .parquet file with a `text` column.
    #[arg(long)]
    input: PathBuf,
    /// Output .safetensors file (written atomically).
    #[arg(long)]
    out: PathBuf,
    /// How token states are pooled.
    #[arg(long, value_enum, default_value_t = PoolingArg::Mean)]
    pooling: PoolingArg,
    /// Which hidden states to pool.
    #[arg(long, value_enum, default_value_t = LayersArg::Last)]
    layers: LayersArg,
    /// Also write next-token logits.
    #[arg(long)]
    logits: bool,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Quantize the projection weights to NF4 while loading (block 64, double
    /// quantization); a bnb-4bit checkpoint loads in 4 bits either way.
    #[arg(long)]
    load_in_4bit: bool,
    /// Precision of the projections and LM head: f32 (the reference), bf16 (weights
    /// rounded to bf16: half their memory; f32 inputs and sums) or bf16-dot (inputs
    /// rounded too, AVX-512 BF16 dot products).
    #[arg(long, value_enum, default_value_t = bioalign_examples::Dtype::F32)]
    dtype: bioalign_examples::Dtype,
    /// A PEFT adapter folder (adapter_config.json + adapter_model.safetensors) applied to
    /// the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Backend and device: cpu (default), cuda or cuda:N (build with `--features cuda`),
    /// wgpu (build with `--features wgpu`).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

fn read_texts(path: &Path) -> Result<Vec<String>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "csv" => {
            let mut r = csv::Reader::from_path(path)
                .with_context(|| format!("opening {}", path.display()))?;
            let col = r
                .headers()?
                .iter()
                .position(|h| h == "text")
                .with_context(|| format!("{}: no column \"text\"", path.display()))?;
            let mut out = Vec::new();
            for (i, row) in r.records().enumerate() {
                let row = row.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
                out.push(
                    row.get(col)
                        .with_context(|| format!("{}: row {} has no text", path.display(), i + 2))?
                        .to_string(),
                );
            }
            Ok(out)
        }
        "parquet" => {
            use arrow::array::{Array, StringArray};
            use arrow::datatypes::DataType;
            use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .with_context(|| format!("reading {}", path.display()))?
                .build()?;
            let mut out = Vec::new();
            for batch in reader {
                let batch = batch?;
                let col = batch
                    .column_by_name("text")
                    .with_context(|| format!("{}: no column \"text\"", path.display()))?;
                let col = arrow::compute::cast(col, &DataType::Utf8)?;
                let s = col
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .context("text column is not a string column")?;
                for i in 0..s.len() {
                    if !s.is_valid(i) {
                        bail!("{}: row {} has a null text", path.display(), out.len());
                    }
                    out.push(s.value(i).to_string());
                }
            }
            Ok(out)
        }
        other => bail!(
            "{}: unsupported input format {other:?} (.csv or .parquet)",
            path.display()
        ),
    }
}

fn main() -> Result<()> {
    bioalign_examples::tune_allocator();
    let args = Args::parse();
    bioalign_examples::on_device!(args.device, run(&args))
}

fn run<B: Backend>(args: &Args, device: &B::Device) -> Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be positive");
    let texts = read_texts(&args.input)?;
    anyhow::ensure!(!texts.is_empty(), "{}: no rows", args.input.display());
    let t0 = Instant::now();
    let (model, tok) = bioalign_examples::load_model::<B>(
        &args.model,
        args.dtype.load_options(args.load_in_4bit),
        args.adapter.as_deref(),
        device,
    )?;
    eprintln!(
        "loaded {} in {:.2} s",
        args.model.display(),
        t0.elapsed().as_secs_f64()
    );
    let pooling = match args.pooling {
        PoolingArg::Mean => Pooling::Mean,
        PoolingArg::Last => Pooling::Last,
        PoolingArg::MeanPadded => Pooling::MeanPadded,
    };
    let layers = match args.layers {
        LayersArg::Last => Layers::Last,
        LayersArg::All => Layers::All,
    };
    let mut pooled: Vec<Vec<f32>> = Vec::new();
    let mut logits: Vec<f32> = Vec::new();
    let (mut hidden, mut tokens) = (0, 0usize);
    let t1 = Instant::now();
    for chunk in texts.chunks(args.batch_size) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let batch = tok.encode_batch(&refs)?;
        tokens += batch
            .attention_mask
            .iter()
            .map(|&m| m as usize)
            .sum::<usize>();
        let e = model.embed(&batch, pooling, layers, args.logits)?;
        hidden = e.hidden;
        if pooled.is_empty() {
            pooled = vec![Vec::new(); e.layers.len()];
        }
        for (acc, l) in pooled.iter_mut().zip(e.layers) {
            acc.extend(l);
        }
        if let Some(l) = e.next_token_logits {
            logits.extend(l);
        }
    }
    let secs = t1.elapsed().as_secs_f64();
    let n = texts.len();
    let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    if pooled.len() == 1 {
        tensors.push(("embeddings".into(), bytes(&pooled[0]), vec![n, hidden]));
    } else {
        for (i, l) in pooled.iter().enumerate() {
            tensors.push((format!("embeddings.layer_{i}"), bytes(l), vec![n, hidden]));
        }
    }
    if args.logits {
        let vocab = logits.len() / n;
        tensors.push(("logits".into(), bytes(&logits), vec![n, vocab]));
    }
    let views = tensors
        .iter()
        .map(|(name, data, shape)| {
            Ok((
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), data)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let out = safetensors::serialize(views, None)?;
    bioalign_io::atomic_write_bytes(&args.out, &out)?;
    eprintln!(
        "{n} sentences, {tokens} tokens in {secs:.2} s ({:.0} tokens/s) -> {}",
        tokens as f64 / secs,
        args.out.display()
    );
    Ok(())
}
