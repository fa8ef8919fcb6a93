//! Thin command-line binaries over the BioAlign crates; see the `[[example]]`
//! entries in this package's `Cargo.toml`. Logic lives in the `bioalign-*` crates;
//! the pieces shared here are [`load_model`] (the model, its tokenizer and an optional
//! PEFT adapter, as the `embed`, `generate` and `logits` examples load them) and
//! [`Bars`] (the progress bars of `evaluate`, `finetune` and `reproduce`).

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use bioalign_models::model::CausalLm;
use bioalign_models::tokenizer::TextTokenizer;
use bioalign_models::{LoadOptions, load_pretrained_with};
use bioalign_study::{Progress, Stage};
use burn::tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};

/// Tunes glibc's allocator for model work: blocks under 32 MiB come from the heap
/// and freed memory stays in the process for reuse (`M_MMAP_THRESHOLD` 32 MiB,
/// `M_TRIM_THRESHOLD` 1 GiB, `M_TOP_PAD` 64 MiB). A forward pass allocates and frees
/// megabytes of activations per projection; by default glibc maps each such block
/// afresh and unmaps it on free, so every layer page-faults its buffers in again.
/// On the 2-core EPYC, `models_bench` (32 × 32 SmolLM2 forward) went from 1.34 M to
/// 0.44 M page faults and from 38.1 to 30.0 CPU-seconds; training's peak resident
/// memory rose by 6 MiB. A no-op off glibc. Call it first thing in `main`.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; it is called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// Calls `f::<B>(args.., &device)` with the backend and device of a
/// [`bioalign_models::DeviceChoice`] (`--device cpu|cuda[:N]|wgpu`); a device whose
/// backend was not compiled in (features `cuda`, `wgpu` of this package) is an error
/// naming the feature.
#[macro_export]
macro_rules! on_device {
    ($choice:expr, $f:ident ( $($arg:expr),* )) => {{
        let choice: bioalign_models::DeviceChoice = $choice;
        choice.check_compiled()?;
        match choice {
            #[cfg(feature = "cuda")]
            bioalign_models::DeviceChoice::Cuda(i) => {
                $f::<bioalign_models::Cuda>($($arg,)* &bioalign_models::CudaDevice::new(i))
            }
            #[cfg(feature = "wgpu")]
            bioalign_models::DeviceChoice::Wgpu => {
                $f::<bioalign_models::Wgpu>($($arg,)* &bioalign_models::WgpuDevice::default())
            }
            // `check_compiled` let only the CPU through otherwise.
            _ => $f::<bioalign_models::Cpu>($($arg,)* &bioalign_models::CpuDevice::default()),
        }
    }};
}

/// Loads `model` (a `.gguf` file or a Hugging Face folder) on `device` with `opts`
/// (4-bit or bf16 projections on request), with its tokenizer, and applies the PEFT adapter in `adapter` if given
/// (printing its rank and alpha to stderr).
pub fn load_model<B: Backend>(
    model: &Path,
    opts: LoadOptions,
    adapter: Option<&Path>,
    device: &B::Device,
) -> Result<(CausalLm<B>, TextTokenizer)> {
    let p = load_pretrained_with::<B>(model, device, opts)
        .with_context(|| format!("loading {}", model.display()))?;
    let tok = p
        .tokenizer
        .context("the model has no tokenizer (tokenizer.json or GGUF metadata)")?;
    let mut model = p.model;
    if let Some(dir) = adapter {
        let lora = model
            .load_adapter(dir)
            .with_context(|| format!("loading the adapter {}", dir.display()))?;
        eprintln!(
            "adapter {} (r {}, alpha {})",
            dir.display(),
            lora.r,
            lora.lora_alpha
        );
    }
    Ok((model, tok))
}

/// The precision of the projections and LM head (`--dtype`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Dtype {
    /// f32 weights and sums, as loaded (the reference).
    #[default]
    F32,
    /// Weights rounded to bf16 (half the memory), f32 inputs and sums (CPU backend
    /// only; see `bioalign_models::LoadOptions::bf16`).
    Bf16,
    /// Weights and inputs rounded to bf16, AVX-512 BF16 dot products, f32 sums (CPU
    /// backend only; see `bioalign_models::LoadOptions::bf16_dot`).
    #[value(name = "bf16-dot")]
    Bf16Dot,
}

impl Dtype {
    /// Load options for inference in this precision: the dense projections packed
    /// once for the CPU kernels (`LoadOptions::pack`), quantized to NF4 instead when
    /// `load_in_4bit`.
    pub fn load_options(self, load_in_4bit: bool) -> LoadOptions {
        LoadOptions {
            load_in_4bit,
            pack: true,
            bf16: self != Dtype::F32,
            bf16_dot: self == Dtype::Bf16Dot,
            ..Default::default()
        }
    }
}

/// indicatif progress bars for bioalign-study's stages: one bar per stage (its name,
/// position, elapsed time and ETA), the training stage with its loss / lr / tokens/s
/// message after the bar, and an optional prefix (`reproduce`'s `[3/8] finetune`).
#[derive(Default)]
pub struct Bars {
    prefix: Mutex<String>,
    current: Mutex<Option<ProgressBar>>,
}

impl Bars {
    /// Bars without a prefix.
    pub fn new() -> Self {
        Self::default()
    }

    /// The text shown before every following bar.
    pub fn set_prefix(&self, prefix: impl Into<String>) {
        if let Ok(mut p) = self.prefix.lock() {
            *p = prefix.into();
        }
    }
}

impl Progress for Bars {
    fn start(&self, stage: Stage, total: u64) {
        let prefix = self.prefix.lock().map(|p| p.clone()).unwrap_or_default();
        let lead = if prefix.is_empty() {
            ""
        } else {
            "{prefix:>26} "
        };
        let body = if stage == Stage::Train {
            "train [{bar:30}] {pos}/{len} {msg} | {elapsed_precise} eta {eta}"
        } else {
            "{msg:>12} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}"
        };
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(&format!("{lead}{body}"))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(prefix);
        if stage != Stage::Train {
            bar.set_message(stage.name());
        }
        if let Ok(mut c) = self.current.lock() {
            *c = Some(bar);
        }
    }

    fn advance(&self, n: u64) {
        if let Ok(c) = self.current.lock()
            && let Some(b) = c.as_ref()
        {
            b.inc(n);
        }
    }

    fn message(&self, msg: &str) {
        if let Ok(c) = self.current.lock()
            && let Some(b) = c.as_ref()
        {
            b.set_message(msg.to_string());
        }
    }

    fn finish(&self, _: Stage) {
        if let Ok(mut c) = self.current.lock()
            && let Some(b) = c.take()
        {
            b.set_position(b.length().unwrap_or(0));
            b.finish();
        }
    }
}
