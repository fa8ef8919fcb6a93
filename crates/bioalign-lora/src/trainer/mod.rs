//! The supervised fine-tuning loop over any model implementing [`CausalLm`]:
//! micro-batches, response-only or full-text loss, gradient accumulation, clipping,
//! AdamW / 8-bit AdamW on the LoRA tensors only, linear warmup schedule, periodic
//! evaluation, atomic checkpoints and exact resume, `train_log.csv` and a loss curve.

mod checkpoint;
mod data;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use checkpoint::{
    OPTIMIZER_FILE, STATE_FILE, TrainerState, latest_checkpoint, load_checkpoint_state,
    save_checkpoint,
};
pub use data::{Batch, Example, LossMode, epoch_order, make_batch};

use crate::config::LoraConfig;
use crate::error::{Error, Result};
use crate::linear::tensor_vec;
use crate::optim::{AdamWConfig, LinearSchedule, Optimizer, OptimizerKind, clip_grad_norm};
use crate::peft::{LoraModel, save_adapter};

/// A causal language model the trainer can drive. Implemented by bioalign-models'
/// decoder, and by the small test models here.
pub trait CausalLm<B: Backend>: LoraModel<B> {
    /// Final hidden states `[batch, seq, hidden]` (after the final norm) for token ids
    /// `[batch, seq]` and an attention mask `[batch, seq]` (`true` at real tokens).
    fn hidden(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2, Bool>) -> Tensor<B, 3>;
    /// The final hidden states at flat positions `rows` (`b · seq + t`) only, `[n,
    /// hidden]` in the order of `rows`: what a loss over supervised positions reads.
    /// The default selects them from [`Self::hidden`]; a decoder can skip work whose
    /// results nothing else reads (bioalign-models' runs its last layer's queries,
    /// attention output and MLP at these positions only).
    fn hidden_rows(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Bool>,
        rows: &[i64],
    ) -> Tensor<B, 2> {
        let device = ids.device();
        let hidden = self.hidden(ids, mask);
        let [b, s, h] = hidden.dims();
        let idx =
            Tensor::<B, 1, Int>::from_data(TensorData::new(rows.to_vec(), [rows.len()]), &device);
        hidden.reshape([b * s, h]).select(0, idx)
    }
    /// The LM head on selected hidden states: `[n, hidden] -> [n, vocab]` logits.
    fn lm_head(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2>;
    /// The vocabulary size, when known: [`train`] then rejects examples (and a padding
    /// id) outside it with an error naming the example, before any step.
    fn vocab_size(&self) -> Option<usize> {
        None
    }
}

/// Checks every token id of `examples` (named `what` in errors) and `pad_id`
/// against `vocab`.
fn check_vocab(examples: &[Example], what: &str, pad_id: u32, vocab: usize) -> Result<()> {
    if pad_id as usize >= vocab {
        return Err(Error::Config {
            field: "pad_id",
            reason: format!("{pad_id} is outside the model's vocabulary of {vocab}"),
        });
    }
    for (i, e) in examples.iter().enumerate() {
        if let Some(t) = e
            .prompt
            .iter()
            .chain(&e.response)
            .find(|&&t| t as usize >= vocab)
        {
            return Err(Error::Data(format!(
                "{what} example {i}: token id {t} is outside the model's vocabulary of {vocab}"
            )));
        }
    }
    Ok(())
}

/// Training flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Seed of the data order and dropout masks.
    pub seed: u64,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Optimizer steps (the schedule's length).
    pub max_steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup steps.
    pub warmup: usize,
    /// AdamW or 8-bit AdamW.
    pub optimizer: OptimizerKind,
    /// AdamW's betas, eps, weight decay.
    pub adamw: AdamWConfig,
    /// Clip the global gradient norm to this (transformers' default 1.0); `None` = off.
    pub max_grad_norm: Option<f64>,
    /// Loss over the response (default) or the full text.
    pub loss: LossMode,
    /// Truncation length in tokens.
    pub max_len: usize,
    /// Padding token id.
    pub pad_id: u32,
    /// Sort rows by length within mega-batches to cut padding.
    pub group_by_length: bool,
    /// Write a checkpoint every this many steps (and at the end); `None` = only the end adapter.
    pub checkpoint_every: Option<usize>,
    /// Evaluate the held-out loss every this many steps; `None` = never.
    pub eval_every: Option<usize>,
    /// Stop after this many steps as if interrupted (for time-boxed jobs and tests);
    /// the schedule still spans `max_steps`.
    pub stop_after: Option<usize>,
    /// Threads that run a step's micro-batches side by side, each on its own replica
    /// of the model (data parallelism on one device); 0 = one per core, at most
    /// `grad_accum`. The gradients are summed in micro-batch order, so the adapter is
    /// the same bit for bit whatever the count.
    #[serde(default)]
    pub workers: usize,
}

impl Default for TrainConfig {
    /// The reference study's hyper-parameters: batch 2 x 4, lr 2e-4, 10 warmup steps,
    /// 2,000 steps, 8-bit AdamW, max length 128, seed 42, response-only loss.
    fn default() -> Self {
        Self {
            seed: 42,
            batch_size: 2,
            grad_accum: 4,
            max_steps: 2000,
            lr: 2e-4,
            warmup: 10,
            optimizer: OptimizerKind::AdamW8bit,
            adamw: AdamWConfig::default(),
            max_grad_norm: Some(1.0),
            loss: LossMode::Response,
            max_len: 128,
            pad_id: 0,
            group_by_length: false,
            checkpoint_every: None,
            eval_every: None,
            stop_after: None,
            workers: 0,
        }
    }
}

impl TrainConfig {
    /// The worker count [`train`] uses: `workers`, or with 0 one per available core;
    /// never more than `grad_accum`.
    pub fn workers(&self) -> usize {
        let n = if self.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.workers
        };
        n.clamp(1, self.grad_accum.max(1))
    }

    /// Checks the flags; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(Error::Config {
                field,
                reason: reason.into(),
            })
        };
        if self.batch_size == 0 {
            return bad("batch_size", "must be > 0");
        }
        if self.grad_accum == 0 {
            return bad("grad_accum", "must be > 0");
        }
        if self.max_steps == 0 {
            return bad("max_steps", "must be > 0");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be finite and > 0");
        }
        if self.max_len < 2 {
            return bad("max_len", "must be >= 2");
        }
        if self.checkpoint_every == Some(0) || self.eval_every == Some(0) {
            return bad("checkpoint_every", "intervals must be > 0");
        }
        Ok(())
    }
}

/// One row of `train_log.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    /// Optimizer step (1-based).
    pub step: usize,
    /// Epoch (fractional: examples seen / dataset size).
    pub epoch: f64,
    /// Mean training loss over the step's micro-batches.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Real tokens processed in the step.
    pub tokens: usize,
    /// Tokens per second in the step.
    pub tokens_per_s: f64,
    /// Held-out loss, when evaluated at this step.
    pub eval_loss: Option<f64>,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Steps taken in total (including those before a resume).
    pub steps: usize,
    /// The log.
    pub log: Vec<LogRow>,
    /// The last checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
}

/// Mean cross-entropy over the batch's supervised positions, computing the LM head
/// only there. Returns a scalar `[1]` tensor.
pub fn batch_loss<B: Backend, M: CausalLm<B>>(
    model: &M,
    batch: &Batch,
    device: &B::Device,
) -> Tensor<B, 1> {
    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(batch.ids.clone(), [batch.batch, batch.seq]),
        device,
    );
    let mask = Tensor::<B, 2, Bool>::from_data(
        TensorData::new(batch.mask.clone(), [batch.batch, batch.seq]),
        device,
    );
    let n = batch.positions.len();
    let logits = model.lm_head(model.hidden_rows(ids, mask, &batch.positions));
    let targets =
        Tensor::<B, 2, Int>::from_data(TensorData::new(batch.targets.clone(), [n, 1]), device);
    let picked = log_softmax(logits, 1).gather(1, targets);
    picked.mean().neg()
}

/// Mean held-out loss over `examples` in batches of `batch_size` (each batch weighted
/// by its supervised tokens).
pub fn eval_loss<B: Backend, M: CausalLm<B>>(
    model: &M,
    examples: &[Example],
    cfg: &TrainConfig,
    device: &B::Device,
) -> f64 {
    let (mut sum, mut count) = (0f64, 0usize);
    for chunk in examples.chunks(cfg.batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let b = make_batch(&refs, cfg.loss, cfg.max_len, cfg.pad_id);
        if b.positions.is_empty() {
            continue;
        }
        let l = tensor_vec(batch_loss(model, &b, device))[0] as f64;
        sum += l * b.positions.len() as f64;
        count += b.positions.len();
    }
    if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    }
}

fn adapter_sizes<B: Backend, M: LoraModel<B>>(model: &M) -> Vec<usize> {
    let mut sizes = Vec::new();
    model.visit_adapters(&mut |_, slot| {
        let (i, o) = slot.features();
        let r = slot.lora().r;
        sizes.push(i * r);
        sizes.push(r * o);
    });
    sizes
}

fn adapter_values<B: Backend, M: LoraModel<B>>(model: &M) -> Vec<Vec<f32>> {
    let mut v = Vec::new();
    model.visit_adapters(&mut |_, slot| {
        v.push(tensor_vec(slot.lora_a().val()));
        v.push(tensor_vec(slot.lora_b().val()));
    });
    v
}

fn set_adapter_values<B: Backend, M: LoraModel<B>>(
    model: &mut M,
    values: &[Vec<f32>],
    device: &B::Device,
) {
    let mut k = 0;
    model.visit_adapters_mut(&mut |_, slot| {
        let (i, o) = slot.features();
        let r = slot.lora().r;
        let a = Tensor::from_data(TensorData::new(values[k].clone(), [i, r]), device);
        let b = Tensor::from_data(TensorData::new(values[k + 1].clone(), [r, o]), device);
        slot.set_lora(a, b);
        k += 2;
    });
}

/// SplitMix64's finalizer: a well-mixed 64-bit function of its input.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The dropout seed of adapter `module` (visit order) in micro-batch `micro` of
/// optimizer step `step` of a run seeded `seed`.
pub fn dropout_seed(seed: u64, step: usize, micro: usize, module: usize) -> u64 {
    mix64(
        mix64(mix64(seed ^ 0xD809_0000_0000_0000) ^ step as u64)
            ^ ((micro as u64) << 32 | module as u64),
    )
}

/// Sets every adapter's dropout seed for micro-batch `(seed, step, micro)`, or turns
/// dropout off (`None`). The masks depend on nothing else, so runs are reproducible
/// and independent of other work in the process.
fn set_dropout_seeds<B: Backend, M: LoraModel<B>>(model: &mut M, at: Option<(u64, usize, usize)>) {
    let mut k = 0;
    model.visit_adapters_mut(&mut |_, slot| {
        slot.set_dropout_seed(at.map(|(seed, step, micro)| dropout_seed(seed, step, micro, k)));
        k += 1;
    });
}

/// Writes `train_log.csv` atomically.
pub fn write_log_csv(path: &Path, log: &[LogRow]) -> Result<()> {
    let mut s = String::from("step,epoch,loss,lr,grad_norm,tokens,tokens_per_s,eval_loss\n");
    for r in log {
        let eval = r.eval_loss.map(|e| format!("{e}")).unwrap_or_default();
        s.push_str(&format!(
            "{},{:.6},{},{},{},{},{:.1},{}\n",
            r.step, r.epoch, r.loss, r.lr, r.grad_norm, r.tokens, r.tokens_per_s, eval
        ));
    }
    bioalign_io::atomic_write_bytes(path, s.as_bytes())?;
    Ok(())
}

/// Draws the loss curve (training loss per step, held-out loss where evaluated) to a PNG.
pub fn write_loss_png(path: &Path, log: &[LogRow]) -> Result<()> {
    use bioalign_plot::{ChartStyle, LineChart, Series};
    let mut series = vec![Series {
        name: "train loss".into(),
        points: log.iter().map(|r| (r.step as f64, r.loss)).collect(),
    }];
    let eval: Vec<(f64, f64)> = log
        .iter()
        .filter_map(|r| r.eval_loss.map(|e| (r.step as f64, e)))
        .collect();
    if !eval.is_empty() {
        series.push(Series {
            name: "held-out loss".into(),
            points: eval,
        });
    }
    let chart = LineChart {
        style: ChartStyle::new("LoRA fine-tuning loss", "optimizer step", "cross-entropy"),
        series,
    };
    chart.save(path)?;
    Ok(())
}

/// One micro-batch of an optimizer step.
struct MicroJob {
    micro: usize,
    batch: Batch,
}

/// What a micro-batch gave: its loss and, when the loss is finite, the gradient of
/// every adapter tensor (visit order, A then B; `None` where it got none).
struct MicroDone {
    loss: f32,
    grads: Vec<Option<Vec<f32>>>,
}

/// The step a micro-batch belongs to (for its dropout masks and loss scale).
#[derive(Clone, Copy)]
struct StepContext {
    seed: u64,
    step: usize,
    grad_accum: usize,
}

/// Forward and backward of one micro-batch on `model`.
fn micro_step<B: AutodiffBackend, M: CausalLm<B>>(
    model: &mut M,
    job: &MicroJob,
    ctx: StepContext,
    device: &B::Device,
) -> MicroDone {
    set_dropout_seeds(model, Some((ctx.seed, ctx.step, job.micro)));
    let loss = batch_loss(model, &job.batch, device);
    let value = tensor_vec(loss.clone())[0];
    if !value.is_finite() {
        return MicroDone {
            loss: value,
            grads: Vec::new(),
        };
    }
    let grads = loss.div_scalar(ctx.grad_accum as f64).backward();
    let mut out = Vec::new();
    model.visit_adapters(&mut |_, slot| {
        for p in [slot.lora_a(), slot.lora_b()] {
            out.push(p.val().grad(&grads).map(tensor_vec));
        }
    });
    MicroDone {
        loss: value,
        grads: out,
    }
}

/// The micro-batch workers of a run: how many, and each one's thread pool (made once
/// per run).
struct Workers {
    count: usize,
    pools: Vec<rayon::ThreadPool>,
}

impl Workers {
    /// `count` workers. Each keeps a core busy, so each runs on a pool of its share of
    /// the cores: its products and parallel loops split over that share (handing half
    /// of each to the global pool, whose threads had no free core, cost more than it
    /// gained).
    fn new(count: usize) -> Result<Self> {
        let count = count.max(1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let share = (cores / count).max(1);
        let pools = if count == 1 {
            Vec::new()
        } else {
            (0..count)
                .map(|_| rayon::ThreadPoolBuilder::new().num_threads(share).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Config {
                    field: "workers",
                    reason: format!("could not start a worker's thread pool: {e}"),
                })?
        };
        Ok(Self { count, pools })
    }
}

/// Runs a step's micro-batches, `workers` at a time, each worker claiming the next
/// job when it is free: worker 0 on `model`, the others on replicas made from its
/// current values (`from_inner(valid())`: the same parameters as fresh autodiff
/// leaves, so each backward walks its own graph).
/// `sink` sees the results in micro-batch order, each as soon as those before it
/// are in (a result that finishes early waits for them), so a worker's finished
/// micro-batch is not held while it runs its next one: a SmolLM2 micro-batch's
/// gradients are 20 MB. With one worker it sees each as soon as it is done, and an
/// error from `sink` stops the step there; with more, the other micro-batches still
/// run, but `sink` sees none after the error.
fn run_micro_batches<B, M>(
    model: &mut M,
    jobs: &[MicroJob],
    workers: &Workers,
    ctx: StepContext,
    device: &B::Device,
    mut sink: impl FnMut(MicroDone) -> Result<()> + Send,
) -> Result<()>
where
    B: AutodiffBackend,
    M: CausalLm<B> + AutodiffModule<B>,
{
    let n = workers.count.min(jobs.len().max(1));
    if n == 1 {
        for j in jobs {
            sink(micro_step(model, j, ctx, device))?;
        }
        return Ok(());
    }
    let replicas: Vec<M> = (1..n).map(|_| M::from_inner(model.valid())).collect();
    let ordered = std::sync::Mutex::new(Ordered {
        next: 0,
        pending: std::collections::BTreeMap::new(),
        sink: &mut sink,
        error: None,
    });
    // Runs job `i` on worker `w` and hands its result on in order.
    let run = |w: usize, m: &mut M, i: usize| {
        let done = workers.pools[w].install(|| micro_step(m, &jobs[i], ctx, device));
        let mut guard = ordered.lock().unwrap_or_else(|e| e.into_inner());
        let o = &mut *guard;
        o.pending.insert(i, done);
        while let Some(d) = o.pending.remove(&o.next) {
            o.next += 1;
            if o.error.is_none()
                && let Err(e) = (o.sink)(d)
            {
                o.error = Some(e);
            }
        }
    };
    // Each worker claims the next job when it is free.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let claim = || {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (i < jobs.len()).then_some(i)
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = replicas
            .into_iter()
            .enumerate()
            .map(|(w, mut replica)| {
                let (run, claim) = (&run, &claim);
                s.spawn(move || {
                    while let Some(i) = claim() {
                        run(w + 1, &mut replica, i);
                    }
                })
            })
            .collect();
        while let Some(i) = claim() {
            run(0, model, i);
        }
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    let o = ordered.into_inner().unwrap_or_else(|e| e.into_inner());
    debug_assert!(o.pending.is_empty() && o.next == jobs.len());
    o.error.map_or(Ok(()), Err)
}

/// The results of a step's micro-batches on their way to the sink, in order.
struct Ordered<S> {
    /// Index (in the step's jobs) of the next result the sink takes.
    next: usize,
    /// Results that finished before an earlier one.
    pending: std::collections::BTreeMap<usize, MicroDone>,
    sink: S,
    /// The sink's first error; later results are dropped.
    error: Option<Error>,
}

/// Trains `model`'s adapters on `train` (evaluating on `eval`), writing checkpoints,
/// `train_log.csv`, `loss.png` and the final PEFT adapter under `out`. With `resume`,
/// continues from the latest checkpoint in `out`, to the same result as an
/// uninterrupted run. `on_step` sees every log row (for a progress bar).
#[allow(clippy::too_many_arguments)]
pub fn train<B, M>(
    model: &mut M,
    lora: &LoraConfig,
    train: &[Example],
    eval: &[Example],
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    device: &B::Device,
    on_step: &mut dyn FnMut(&LogRow),
) -> Result<TrainSummary>
where
    B: AutodiffBackend,
    M: CausalLm<B> + AutodiffModule<B>,
    M::InnerModule: CausalLm<B::InnerBackend>,
{
    cfg.validate()?;
    lora.validate()?;
    if train.is_empty() {
        return Err(Error::Data("no training examples".into()));
    }
    if let Some(vocab) = model.vocab_size() {
        check_vocab(train, "training", cfg.pad_id, vocab)?;
        check_vocab(eval, "evaluation", cfg.pad_id, vocab)?;
    }
    let sizes = adapter_sizes(model);
    if sizes.is_empty() {
        return Err(Error::Data("the model has no LoRA modules".into()));
    }
    let mut optimizer = Optimizer::new(cfg.optimizer, cfg.adamw, &sizes);
    let mut state = TrainerState {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        seed: cfg.seed,
        log: Vec::new(),
    };
    let mut last_checkpoint = None;
    if resume && let Some(dir) = latest_checkpoint(out)? {
        crate::peft::load_adapter(model, &dir, None, device)?;
        state = load_checkpoint_state(&dir, &mut optimizer)?;
        if state.seed != cfg.seed {
            return Err(Error::Config {
                field: "seed",
                reason: format!(
                    "checkpoint {} was made with seed {}, not {}",
                    dir.display(),
                    state.seed,
                    cfg.seed
                ),
            });
        }
        tracing::info!(checkpoint = %dir.display(), step = state.step, "resuming");
        last_checkpoint = Some(dir);
    }
    let mut params = adapter_values(model);
    let lens: Vec<usize> = train
        .iter()
        .map(|e| (e.prompt.len() + e.response.len()).min(cfg.max_len))
        .collect();
    let mut order = epoch_order(
        &lens,
        cfg.batch_size,
        cfg.seed,
        state.epoch,
        cfg.group_by_length,
    );
    let schedule = LinearSchedule {
        lr: cfg.lr,
        warmup: cfg.warmup,
        total: cfg.max_steps,
    };
    let stop = cfg.stop_after.unwrap_or(cfg.max_steps).min(cfg.max_steps);
    let mut seen = state.step * cfg.batch_size * cfg.grad_accum;
    let workers = Workers::new(cfg.workers().min(cfg.grad_accum))?;

    while state.step < stop {
        let t0 = Instant::now();
        let mut acc: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0f32; n]).collect();
        let (mut loss_sum, mut tokens) = (0f64, 0usize);
        let mut jobs = Vec::with_capacity(cfg.grad_accum);
        for micro in 0..cfg.grad_accum {
            if state.batch_in_epoch >= order.len() {
                state.epoch += 1;
                state.batch_in_epoch = 0;
                order = epoch_order(
                    &lens,
                    cfg.batch_size,
                    cfg.seed,
                    state.epoch,
                    cfg.group_by_length,
                );
            }
            let rows: Vec<&Example> = order[state.batch_in_epoch]
                .iter()
                .map(|&i| &train[i])
                .collect();
            state.batch_in_epoch += 1;
            seen += rows.len();
            let batch = make_batch(&rows, cfg.loss, cfg.max_len, cfg.pad_id);
            tokens += batch.tokens;
            if !batch.positions.is_empty() {
                jobs.push(MicroJob { micro, batch });
            }
        }
        // Largest micro-batches first (padded tokens; ties keep their order), each
        // taken by the first free worker (`run_micro_batches`): a round robin over
        // micro-batches of different lengths left a core idle at the end of a step.
        // The order is a function of the data alone, so the gradients' sum order, and
        // the adapter, stay the same for any worker count.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.batch.batch * j.batch.seq));
        let ctx = StepContext {
            seed: cfg.seed,
            step: state.step,
            grad_accum: cfg.grad_accum,
        };
        run_micro_batches(model, &jobs, &workers, ctx, device, |done| {
            if !done.loss.is_finite() {
                return Err(Error::NonFiniteLoss {
                    step: state.step + 1,
                    loss: done.loss,
                    last_checkpoint: last_checkpoint.clone(),
                });
            }
            loss_sum += done.loss as f64;
            // Tensor by tensor over the cores (each sum keeps its micro-batch order).
            acc.par_iter_mut().zip(done.grads).for_each(|(a, g)| {
                if let Some(g) = g {
                    for (a, g) in a.iter_mut().zip(g) {
                        *a += g;
                    }
                }
            });
            Ok(())
        })?;
        let grad_norm = match cfg.max_grad_norm {
            Some(m) => clip_grad_norm(&mut acc, m),
            None => crate::optim::global_norm(&acc),
        };
        if !grad_norm.is_finite() {
            return Err(Error::NonFiniteLoss {
                step: state.step + 1,
                loss: grad_norm as f32,
                last_checkpoint,
            });
        }
        let lr = schedule.lr_at(state.step);
        optimizer.step(lr, &mut params, &acc);
        set_adapter_values(model, &params, device);
        state.step += 1;
        let eval_loss = match cfg.eval_every {
            Some(n)
                if !eval.is_empty()
                    && (state.step.is_multiple_of(n) || state.step == cfg.max_steps) =>
            {
                // Evaluation runs without dropout (PEFT's eval mode), on the inner
                // backend: on the autodiff model every evaluated batch would record a
                // graph that nothing consumes (about 270 MB per SmolLM2 batch, kept alive).
                set_dropout_seeds(model, None);
                Some(eval_loss(&model.valid(), eval, cfg, device))
            }
            _ => None,
        };
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        let row = LogRow {
            step: state.step,
            epoch: seen as f64 / train.len() as f64,
            loss: loss_sum / cfg.grad_accum as f64,
            lr,
            grad_norm,
            tokens,
            tokens_per_s: tokens as f64 / secs,
            eval_loss,
        };
        tracing::info!(
            step = row.step,
            loss = row.loss,
            lr = row.lr,
            tokens_per_s = row.tokens_per_s,
            "train step"
        );
        on_step(&row);
        state.log.push(row);
        let due = cfg
            .checkpoint_every
            .is_some_and(|n| state.step.is_multiple_of(n));
        if due || (cfg.checkpoint_every.is_some() && state.step == cfg.max_steps) {
            last_checkpoint = Some(save_checkpoint(out, model, lora, &optimizer, &state)?);
        }
    }
    // The trained model leaves in eval mode (no dropout).
    set_dropout_seeds(model, None);
    if state.step >= cfg.max_steps {
        save_adapter(model, lora, out)?;
    }
    write_log_csv(&out.join("train_log.csv"), &state.log)?;
    if !state.log.is_empty() {
        write_loss_png(&out.join("loss.png"), &state.log)?;
    }
    Ok(TrainSummary {
        steps: state.step,
        log: state.log,
        last_checkpoint,
    })
}
