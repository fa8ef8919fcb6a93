//! `evaluate` and `finetune` on a CubeCL device (`cuda` with feature `cuda`, else
//! `wgpu` with feature `wgpu`) against the same runs on the CPU: the generic code that
//! `--device cuda` runs on burn-cuda. In CI the device is Mesa's software Vulkan (lavapipe, installed by
//! `.ci/run`). SmolLM2-135M-Instruct with an NF4 base (bioalign-quant's CubeCL
//! dequantization kernel) and rows of the reference's test split.
#![cfg(any(feature = "cuda", feature = "wgpu"))]

mod common;

use std::path::Path;

use bioalign_metrics::{BootstrapConfig, SuiteConfig, TsneConfig};
use bioalign_models::DeviceChoice;
use bioalign_study::evaluate::files as eval_files;
use bioalign_study::finetune::files;
use bioalign_study::output::{Prediction, read_predictions};
use bioalign_study::{EvaluateConfig, FinetuneConfig, NoProgress, Result, evaluate, finetune};

#[cfg(feature = "cuda")]
const GPU: DeviceChoice = DeviceChoice::Cuda(0);
#[cfg(not(feature = "cuda"))]
const GPU: DeviceChoice = DeviceChoice::Wgpu;

fn losses(dir: &Path) -> Vec<f64> {
    let log = std::fs::read_to_string(dir.join(files::TRAIN_LOG)).expect("train_log.csv");
    log.lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).expect("loss").parse().expect("loss"))
        .collect()
}

#[test]
fn evaluate_and_finetune_on_the_device_match_the_cpu() -> Result<()> {
    let Some((model, csv)) = common::smollm2_and_test_pairs() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir().expect("temp dir");

    // evaluate: the same answers and next-token scores.
    let eval = |device: DeviceChoice, dir: &str| -> Result<Vec<Prediction>> {
        let mut cfg = EvaluateConfig::new(&model, &csv);
        cfg.load_in_4bit = true;
        // One batch: on Mesa's software Vulkan (CI) every launch counts.
        cfg.sample = Some(12);
        cfg.batch_size = 12;
        cfg.bootstrap = Some(BootstrapConfig {
            n_resamples: 10,
            ..BootstrapConfig::default()
        });
        cfg.suite = SuiteConfig {
            cross_validate: false,
            projection_rows: 12,
            tsne: TsneConfig {
                perplexity: 3.0,
                max_iter: 250,
                ..TsneConfig::default()
            },
            bootstrap: None,
            ..SuiteConfig::default()
        };
        cfg.plots = false;
        cfg.device = device;
        let out = tmp.path().join(dir);
        evaluate(&cfg, &out, &NoProgress)?;
        read_predictions(&out.join(eval_files::PREDICTIONS))
    };
    let cpu = eval(DeviceChoice::Cpu, "eval-cpu")?;
    let gpu = eval(GPU, "eval-device")?;
    assert_eq!(cpu.len(), 12);
    for (c, g) in cpu.iter().zip(&gpu) {
        assert_eq!((c.row, &c.answer), (g.row, &g.answer), "row {}", c.row);
        assert!(
            (c.score - g.score).abs() < 1e-3,
            "row {}: score {} on the CPU, {} on {GPU}",
            c.row,
            c.score,
            g.score
        );
    }

    // finetune: the same losses step by step (QLoRA, 2 steps of 2 rows).
    let data = tmp.path().join("ctd");
    std::fs::create_dir_all(&data).expect("mkdir");
    common::data_folder(&csv, 8, &data)?;
    let tune = |device: DeviceChoice, dir: &str| -> Result<(Vec<f64>, [f64; 2])> {
        let out = tmp.path().join(dir);
        let mut cfg = FinetuneConfig::new(&model, &data, &out);
        cfg.load_in_4bit = true;
        cfg.eval_rows = 2;
        cfg.lora.r = 4;
        cfg.lora.lora_alpha = 8.0;
        cfg.train.batch_size = 2;
        cfg.train.grad_accum = 1;
        cfg.train.max_steps = 2;
        cfg.train.warmup = 0;
        cfg.train.lr = 1e-3;
        cfg.train.max_len = 96;
        cfg.train.eval_every = Some(2);
        cfg.train.checkpoint_every = None;
        cfg.device = device;
        let s = finetune(&cfg, &NoProgress)?;
        assert_eq!(s.steps, 2);
        let held_out = [s.first_eval_loss, s.last_eval_loss].map(|l| l.expect("held-out loss"));
        Ok((losses(&out), held_out))
    };
    let (cpu_loss, cpu_eval) = tune(DeviceChoice::Cpu, "tune-cpu")?;
    let (gpu_loss, gpu_eval) = tune(GPU, "tune-device")?;
    println!("losses: CPU {cpu_loss:?} / {cpu_eval:?}, {GPU} {gpu_loss:?} / {gpu_eval:?}");
    assert_eq!(cpu_loss.len(), 2);
    for (c, g) in cpu_loss.iter().zip(&gpu_loss) {
        assert!((c - g).abs() < 1e-3 * c.abs().max(1.0), "{c} vs {g}");
    }
    // The second step's loss and the held-out loss after training depend on the
    // updates, so they check the backward too; the first held-out loss is before training.
    for (c, g) in cpu_eval.iter().zip(&gpu_eval) {
        assert!((c - g).abs() < 1e-3 * c.max(1.0), "held-out {c} vs {g}");
    }
    assert!(
        cpu_eval[1] != cpu_eval[0],
        "training changed the held-out loss"
    );
    Ok(())
}
