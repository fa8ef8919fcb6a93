//! Checkpoints: a folder `checkpoint-{step}` holding the adapter (PEFT format), the
//! optimizer state (`optimizer.safetensors`) and `trainer_state.json` (step, data
//! position, seed, log). The folder is written under a temporary name and renamed,
//! so a crash never leaves a half checkpoint and never destroys the previous one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::config::LoraConfig;
use crate::error::{Error, Result, io_err};
use crate::optim::Optimizer;
use crate::peft::{LoraModel, safetensors_bytes, save_adapter};
use crate::trainer::LogRow;

/// File name of the optimizer state.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// File name of the trainer state.
pub const STATE_FILE: &str = "trainer_state.json";

/// Where training stands: enough to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: usize,
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Next micro-batch within the epoch's order.
    pub batch_in_epoch: usize,
    /// The run's seed: the data order of epoch `e` and the dropout masks of step `s`,
    /// micro-batch `m`, module `k` are drawn from generators seeded by `(seed, e)` and
    /// `(seed, s, m, k)`, so this and the position above are the whole RNG state.
    pub seed: u64,
    /// Log rows so far.
    pub log: Vec<LogRow>,
}

/// Writes `out/checkpoint-{step}` atomically; returns its path.
pub fn save_checkpoint<B: Backend, M: LoraModel<B>>(
    out: &Path,
    model: &M,
    config: &LoraConfig,
    optimizer: &Optimizer,
    state: &TrainerState,
) -> Result<PathBuf> {
    let final_dir = out.join(format!("checkpoint-{}", state.step));
    let tmp = out.join(format!(".checkpoint-{}.tmp", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
    }
    save_adapter(model, config, &tmp)?;
    let opt_path = tmp.join(OPTIMIZER_FILE);
    let tensors: BTreeMap<_, _> = optimizer
        .state_tensors()
        .into_iter()
        .map(|(n, s, d, b)| (n, (s, b, d)))
        .collect();
    let bytes = safetensors_bytes(&tensors, &opt_path)?;
    bioalign_io::atomic_write_bytes(&opt_path, &bytes)?;
    let state_path = tmp.join(STATE_FILE);
    let json = serde_json::to_string_pretty(state).map_err(|source| Error::Json {
        path: state_path.clone(),
        source,
    })?;
    bioalign_io::atomic_write_bytes(&state_path, json.as_bytes())?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io_err("remove", &final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io_err("rename", &final_dir))?;
    Ok(final_dir)
}

/// The checkpoint folder with the highest step under `out`, if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>> {
    if !out.exists() {
        return Ok(None);
    }
    let mut best: Option<(usize, PathBuf)> = None;
    for entry in std::fs::read_dir(out).map_err(io_err("list", out))? {
        let entry = entry.map_err(io_err("list", out))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix("checkpoint-")
            .and_then(|s| s.parse::<usize>().ok())
            && entry.path().join(STATE_FILE).exists()
            && best.as_ref().is_none_or(|(b, _)| step > *b)
        {
            best = Some((step, entry.path()));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// Reads the trainer state and the optimizer state of a checkpoint into `optimizer`.
pub fn load_checkpoint_state(dir: &Path, optimizer: &mut Optimizer) -> Result<TrainerState> {
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(io_err("read", &state_path))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: state_path.clone(),
        source,
    })?;
    let opt_path = dir.join(OPTIMIZER_FILE);
    let bytes = std::fs::read(&opt_path).map_err(io_err("read", &opt_path))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
        path: opt_path.clone(),
        reason: e.to_string(),
    })?;
    let mut get = |name: &str| st.tensor(name).ok().map(|v| v.data().to_vec());
    optimizer
        .load_state_tensors(state.step as u64, &mut get)
        .ok_or_else(|| Error::Safetensors {
            path: opt_path.clone(),
            reason: "optimizer state does not match this model's adapters (missing tensor or other size)".into(),
        })?;
    Ok(state)
}
