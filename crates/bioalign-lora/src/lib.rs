//! LoRA adapters and the QLoRA trainer for BioAlign.
//!
//! - [`LoraLinear`] wraps any base projection implementing [`LinearBase`] (burn's
//!   dense `Linear` and bioalign-quant's `Nf4Linear`, the QLoRA base):
//!   `y = base(x) + scaling * B(A(dropout(x)))`, A Kaiming-uniform as PEFT, B zeros,
//!   the base frozen; dropout masks come from a per-module seed the trainer sets.
//! - [`LoraConfig`] is PEFT's `adapter_config.json` (every key), with PEFT's rules for
//!   `target_modules`, `layers_to_transform`, `rank_pattern` and `alpha_pattern`.
//! - [`peft`] reads and writes PEFT adapter folders; [`merge`] folds an adapter into
//!   its base weight.
//! - [`optim`] holds AdamW and bitsandbytes' 8-bit blockwise AdamW over plain f32
//!   slices, the linear warmup schedule and gradient clipping.
//! - [`trainer`] is the supervised fine-tuning loop over any [`CausalLm`].
//!
//! This crate sits below bioalign-models (and above bioalign-quant): the decoder
//! implements [`LoraModel`] and [`CausalLm`]; nothing here knows about it.

pub mod config;
pub mod error;
mod fused;
pub mod linear;
pub mod merge;
pub mod optim;
pub mod peft;
pub mod trainer;

pub use config::{LayerSelection, LoraConfig, ModuleLora, TargetModules};
pub use error::{Error, Result};
pub use fused::Recompute;
pub use linear::{AdapterSlot, LinearBase, LoraLinear, kaiming_uniform_a, matmul_last, tensor_vec};
pub use peft::{LoraModel, load_adapter, save_adapter};
pub use trainer::{CausalLm, Example, LossMode, TrainConfig, TrainSummary, train};
