//! AdamW and 8-bit AdamW against the reference implementations, on fixtures from
//! scripts/fixtures/gen_adamw8bit.py (bitsandbytes 0.50.2 `AdamW8bit` on CPU and
//! torch 2.x `torch.optim.AdamW`, the same parameters and gradients, 6 steps, lr 1e-2,
//! weight decay 0.01).

use std::collections::BTreeMap;
use std::path::Path;

use bioalign_lora::optim::{
    AdamW, AdamW8bit, AdamWConfig, Optimizer, OptimizerKind, TensorState, create_dynamic_map,
};

struct Fx(BTreeMap<String, Vec<u8>>);

impl Fx {
    fn load() -> Self {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adamw8bit.safetensors");
        let bytes = std::fs::read(p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        Self(
            st.tensors()
                .into_iter()
                .map(|(n, v)| (n, v.data().to_vec()))
                .collect(),
        )
    }
    fn f32(&self, k: &str) -> Vec<f32> {
        self.0[k]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
    fn u8(&self, k: &str) -> Vec<u8> {
        self.0[k].clone()
    }
}

const STEPS: usize = 6;
const LR: f64 = 1e-2;

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
        .fold(0f32, f32::max)
}

#[test]
fn dynamic_maps_equal_bitsandbytes() {
    let fx = Fx::load();
    assert_eq!(create_dynamic_map(true).to_vec(), fx.f32("qmap1"));
    assert_eq!(create_dynamic_map(false).to_vec(), fx.f32("qmap2"));
}

#[test]
fn adamw8bit_matches_bitsandbytes_state_and_update() {
    let fx = Fx::load();
    let mut params = vec![fx.f32("init.big"), fx.f32("init.small")];
    let mut opt = AdamW8bit::new(AdamWConfig::default(), &[params[0].len(), params[1].len()]);
    assert!(
        matches!(opt.state[0], TensorState::Q8(_)),
        "5,000 elements: 8-bit"
    );
    assert!(
        matches!(opt.state[1], TensorState::F32(_)),
        "1,000 < 4,096: f32"
    );
    for t in 0..STEPS {
        let grads = vec![
            fx.f32(&format!("grad.{t}.big")),
            fx.f32(&format!("grad.{t}.small")),
        ];
        opt.step(LR, &mut params, &grads);
        let TensorState::Q8(q) = &opt.state[0] else {
            unreachable!()
        };
        let s1 = fx.u8(&format!("bnb.{t}.big.state1"));
        let s2 = fx.u8(&format!("bnb.{t}.big.state2"));
        let codes_differ = q.state1.iter().zip(&s1).filter(|(a, b)| a != b).count()
            + q.state2.iter().zip(&s2).filter(|(a, b)| a != b).count();
        assert_eq!(
            codes_differ, 0,
            "step {t}: 8-bit codes differ from bitsandbytes"
        );
        assert!(
            max_rel(&q.absmax1, &fx.f32(&format!("bnb.{t}.big.absmax1"))) < 1e-6,
            "step {t} absmax1"
        );
        assert!(
            max_rel(&q.absmax2, &fx.f32(&format!("bnb.{t}.big.absmax2"))) < 1e-6,
            "step {t} absmax2"
        );
        assert!(
            max_rel(&params[0], &fx.f32(&format!("bnb.{t}.big.param"))) < 1e-5,
            "step {t} big param"
        );
        let TensorState::F32(s) = &opt.state[1] else {
            unreachable!()
        };
        assert!(
            max_rel(&s.m, &fx.f32(&format!("bnb.{t}.small.state1"))) < 1e-5,
            "step {t} small m"
        );
        assert!(
            max_rel(&s.v, &fx.f32(&format!("bnb.{t}.small.state2"))) < 1e-5,
            "step {t} small v"
        );
        assert!(
            max_rel(&params[1], &fx.f32(&format!("bnb.{t}.small.param"))) < 1e-5,
            "step {t} small param"
        );
    }
}

#[test]
fn adamw_matches_torch() {
    let fx = Fx::load();
    let mut params = vec![fx.f32("init.big"), fx.f32("init.small")];
    let mut opt = AdamW::new(AdamWConfig::default(), &[params[0].len(), params[1].len()]);
    for t in 0..STEPS {
        let grads = vec![
            fx.f32(&format!("grad.{t}.big")),
            fx.f32(&format!("grad.{t}.small")),
        ];
        opt.step(LR, &mut params, &grads);
        for (i, k) in ["big", "small"].iter().enumerate() {
            let want = fx.f32(&format!("torch.{t}.{k}.param"));
            let r = max_rel(&params[i], &want);
            assert!(r < 1e-5, "step {t} {k}: rel diff {r}");
        }
    }
}

#[test]
fn optimizer_state_round_trips_through_tensors() {
    let fx = Fx::load();
    for kind in [OptimizerKind::AdamW, OptimizerKind::AdamW8bit] {
        let sizes = [5000, 1000];
        let mut params = vec![fx.f32("init.big"), fx.f32("init.small")];
        let grads = vec![fx.f32("grad.0.big"), fx.f32("grad.0.small")];
        let mut a = Optimizer::new(kind, AdamWConfig::default(), &sizes);
        a.step(LR, &mut params, &grads);
        let saved: BTreeMap<String, Vec<u8>> = a
            .state_tensors()
            .into_iter()
            .map(|(n, _, _, b)| (n, b))
            .collect();
        let mut b = Optimizer::new(kind, AdamWConfig::default(), &sizes);
        b.load_state_tensors(a.steps(), &mut |n| saved.get(n).cloned())
            .expect("state loads");
        assert_eq!(a, b);
        let mut wrong = Optimizer::new(kind, AdamWConfig::default(), &[5000, 999]);
        assert!(
            wrong
                .load_state_tensors(1, &mut |n| saved.get(n).cloned())
                .is_none()
        );
    }
}
