//! The trainer end to end on the tiny model of tests/common: loss falls, runs are
//! deterministic, resume equals an uninterrupted run bit for bit, a NaN loss stops
//! with a clear error and keeps the last checkpoint.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bioalign_lora::optim::OptimizerKind;
use bioalign_lora::trainer::{eval_loss, latest_checkpoint};
use bioalign_lora::{
    AdapterSlot, CausalLm, Error, Example, LoraModel, LossMode, Result, TrainConfig, train,
};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};
use common::*;

/// Prompts `[BOS, filler.., x]`, responses `[f(x), EOS]`: learnable token by token.
fn examples(n: usize, offset: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let j = i + offset;
            let x = 2 + (j % 8) as u32;
            let mut prompt = vec![1];
            prompt.extend(std::iter::repeat_n(10, j % 3));
            prompt.push(x);
            Example {
                prompt,
                response: vec![2 + (x * 3 % 8), 11],
            }
        })
        .collect()
}

fn cfg() -> TrainConfig {
    TrainConfig {
        seed: 7,
        batch_size: 4,
        grad_accum: 2,
        max_steps: 8,
        lr: 3e-2,
        warmup: 2,
        optimizer: OptimizerKind::AdamW,
        max_len: 16,
        pad_id: 0,
        checkpoint_every: Some(3),
        eval_every: Some(4),
        ..TrainConfig::default()
    }
}

#[test]
fn loss_falls_and_outputs_are_written() -> Result<()> {
    let d = Default::default();
    let lora = lora_cfg();
    let mut m = Tiny::<Ad>::new(&lora, 11, &d);
    let (tr, ev) = (examples(40, 0), examples(12, 3));
    let mut c = cfg();
    c.max_steps = 40;
    c.checkpoint_every = None;
    c.eval_every = Some(10);
    let before = eval_loss(&m, &ev, &c, &d);
    let out = tempfile::tempdir().unwrap();
    let mut seen = 0;
    let s = train(
        &mut m,
        &lora,
        &tr,
        &ev,
        &c,
        out.path(),
        false,
        &d,
        &mut |_| seen += 1,
    )?;
    let after = eval_loss(&m, &ev, &c, &d);
    assert_eq!((s.steps, seen), (40, 40));
    assert!(after < 0.75 * before, "held-out loss {before} -> {after}");
    assert_eq!(
        s.log
            .last()
            .unwrap()
            .eval_loss
            .map(|e| (e - after).abs() < 1e-6),
        Some(true)
    );
    let first: f64 = s.log[..5].iter().map(|r| r.loss).sum();
    let last: f64 = s.log[35..].iter().map(|r| r.loss).sum();
    assert!(last < first, "train loss {first} -> {last}");
    let csv = std::fs::read_to_string(out.path().join("train_log.csv")).unwrap();
    assert_eq!(csv.lines().count(), 41);
    assert!(csv.starts_with("step,epoch,loss,lr,grad_norm,tokens,tokens_per_s,eval_loss"));
    let png = std::fs::read(out.path().join("loss.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    assert!(out.path().join("adapter_model.safetensors").exists());
    assert!(out.path().join("adapter_config.json").exists());
    Ok(())
}

#[test]
fn full_text_loss_supervises_more_tokens() {
    let d = Default::default();
    let m = Tiny::<Cpu>::new(&lora_cfg(), 1, &d);
    let ex = examples(8, 0);
    let mut c = cfg();
    let resp = eval_loss(&m, &ex, &c, &d);
    c.loss = LossMode::Full;
    let full = eval_loss(&m, &ex, &c, &d);
    assert!(resp.is_finite() && full.is_finite() && resp != full);
}

fn run(dir: &Path, c: &TrainConfig, resume: bool) -> Result<(Vec<Vec<u32>>, Vec<f64>)> {
    let d = Default::default();
    let mut lora = lora_cfg();
    lora.lora_dropout = 0.1;
    let mut m = Tiny::<Ad>::new(&lora, 21, &d);
    let s = train(
        &mut m,
        &lora,
        &examples(24, 0),
        &examples(6, 5),
        c,
        dir,
        resume,
        &d,
        &mut |_| {},
    )?;
    Ok((adapter_bits(&m), s.log.iter().map(|r| r.loss).collect()))
}

#[test]
fn resume_equals_uninterrupted_bit_for_bit() -> Result<()> {
    for kind in [OptimizerKind::AdamW, OptimizerKind::AdamW8bit] {
        let mut c = cfg();
        c.optimizer = kind;
        let a = tempfile::tempdir().unwrap();
        let (full, full_log) = run(a.path(), &c, false)?;
        // Same seed, data and flags: the same adapter.
        let again = tempfile::tempdir().unwrap();
        assert_eq!(
            run(again.path(), &c, false)?.0,
            full,
            "{kind:?}: determinism"
        );

        let b = tempfile::tempdir().unwrap();
        let mut stop = c.clone();
        stop.stop_after = Some(5); // checkpoint at 3, steps 4-5 lost
        let (part, _) = run(b.path(), &stop, false)?;
        assert_ne!(part, full);
        assert!(
            latest_checkpoint(b.path())?
                .unwrap()
                .ends_with("checkpoint-3")
        );
        let (resumed, resumed_log) = run(b.path(), &c, true)?;
        assert_eq!(resumed, full, "{kind:?}: resumed adapter differs");
        assert_eq!(resumed_log, full_log, "{kind:?}: resumed log differs");
        assert!(b.path().join("checkpoint-6").exists() && b.path().join("checkpoint-8").exists());
    }
    Ok(())
}

#[test]
fn parallel_micro_batches_give_the_same_adapter_bit_for_bit() -> Result<()> {
    // Micro-batches run side by side on model replicas; gradients are summed in
    // micro-batch order, so any worker count gives the sequential result exactly
    // (dropout 0.1 in `run`: masks follow the micro-batch, not the worker).
    let mut c = cfg();
    c.grad_accum = 3;
    c.checkpoint_every = None;
    let mut results = Vec::new();
    for workers in [1, 2, 3] {
        c.workers = workers;
        let dir = tempfile::tempdir().unwrap();
        results.push(run(dir.path(), &c, false)?);
    }
    assert_eq!(results[1], results[0], "2 workers vs 1");
    assert_eq!(results[2], results[0], "3 workers vs 1");
    let untrained = {
        let lora = lora_cfg();
        adapter_bits(&Tiny::<Ad>::new(&lora, 21, &Default::default()))
    };
    assert_ne!(results[0].0, untrained, "training changed nothing");
    Ok(())
}

/// Tiny, with an LM head that returns NaN from its `poison_at`-th call on, counting
/// the calls of the model and of every replica made from it together.
#[derive(Module, Debug)]
struct Poisoned<B: Backend> {
    inner: Tiny<B>,
    #[module(skip)]
    calls: Arc<AtomicUsize>,
    #[module(skip)]
    poison_at: usize,
}

impl<B: Backend> LoraModel<B> for Poisoned<B> {
    fn visit_adapters(&self, f: &mut dyn FnMut(&str, &dyn AdapterSlot<B>)) {
        self.inner.visit_adapters(f)
    }
    fn visit_adapters_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn AdapterSlot<B>)) {
        self.inner.visit_adapters_mut(f)
    }
}

impl<B: Backend> CausalLm<B> for Poisoned<B> {
    fn hidden(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2, Bool>) -> Tensor<B, 3> {
        self.inner.hidden(ids, mask)
    }
    fn lm_head(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let l = self.inner.lm_head(hidden);
        if call >= self.poison_at {
            l.mul_scalar(f32::NAN)
        } else {
            l
        }
    }
}

#[test]
fn nan_loss_stops_and_keeps_the_last_checkpoint() {
    // The poison counts LM-head calls of the model and its replicas together;
    // grad_accum 2 and steps run one after the other, so calls 1-6 are steps 1-3 and
    // call 7 is one of step 4's two micro-batches, whichever worker runs it. With two
    // workers the error reaches the trainer through the in-order hand-over of results.
    for workers in [1, 2] {
        nan_loss_stops_at_step_4(workers, 7);
    }
}

fn nan_loss_stops_at_step_4(workers: usize, poison_at: usize) {
    let d = Default::default();
    let lora = lora_cfg();
    let mut m = Poisoned {
        inner: Tiny::<Ad>::new(&lora, 2, &d),
        calls: Arc::new(AtomicUsize::new(0)),
        poison_at,
    };
    let mut c = cfg();
    c.checkpoint_every = Some(2);
    c.eval_every = None;
    c.workers = workers;
    let out = tempfile::tempdir().unwrap();
    let e = train(
        &mut m,
        &lora,
        &examples(24, 0),
        &[],
        &c,
        out.path(),
        false,
        &d,
        &mut |_| {},
    )
    .unwrap_err();
    match &e {
        Error::NonFiniteLoss {
            step,
            loss,
            last_checkpoint,
        } => {
            assert_eq!(*step, 4, "{workers} workers");
            assert!(loss.is_nan());
            assert!(last_checkpoint.as_ref().unwrap().ends_with("checkpoint-2"));
        }
        other => panic!("expected NonFiniteLoss, got {other}"),
    }
    assert!(e.to_string().contains("step 4"), "{e}");
    assert!(
        out.path()
            .join("checkpoint-2/adapter_model.safetensors")
            .exists()
    );
    assert!(!out.path().join("checkpoint-4").exists());
}

#[test]
fn bad_flags_name_the_field() {
    let mut c = cfg();
    c.grad_accum = 0;
    assert!(c.validate().unwrap_err().to_string().contains("grad_accum"));
}

#[test]
fn dropout_is_on_in_training_and_off_afterwards() -> Result<()> {
    let d = Default::default();
    let mut c = cfg();
    c.max_steps = 3;
    c.checkpoint_every = None;
    c.eval_every = None;
    let train_with = |p: f64| -> Result<Tiny<Ad>> {
        let mut lora = lora_cfg();
        lora.lora_dropout = p;
        let mut m = Tiny::<Ad>::new(&lora, 21, &d);
        let out = tempfile::tempdir().unwrap();
        train(
            &mut m,
            &lora,
            &examples(24, 0),
            &[],
            &c,
            out.path(),
            false,
            &d,
            &mut |_| {},
        )?;
        Ok(m)
    };
    let (a, mut b) = (train_with(0.0)?, train_with(0.3)?);
    assert_ne!(
        adapter_bits(&a),
        adapter_bits(&b),
        "dropout changed nothing"
    );
    // After training the model is in eval mode: turning dropout off explicitly
    // changes nothing, while a dropout seed would.
    let ev = examples(6, 5);
    let after = eval_loss(&b, &ev, &c, &d);
    b.visit_adapters_mut(&mut |_, s| s.set_dropout_seed(None));
    assert_eq!(eval_loss(&b, &ev, &c, &d), after);
    b.visit_adapters_mut(&mut |_, s| s.set_dropout_seed(Some(1)));
    assert_ne!(eval_loss(&b, &ev, &c, &d), after);
    Ok(())
}
