//! LoraLinear, gradients, merging and PEFT I/O.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bioalign_lora::linear::tensor_vec;
use bioalign_lora::{
    AdapterSlot, CausalLm, Error, LinearBase, LoraConfig, LoraLinear, LoraModel, ModuleLora,
    Result, load_adapter, save_adapter,
};
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn x_input<B: Backend>(device: &B::Device) -> Tensor<B, 2> {
    let v: Vec<f32> = (0..3 * DIM)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3)
        .collect();
    Tensor::from_data(TensorData::new(v, [3, DIM]), device)
}

#[test]
fn zero_b_gives_exactly_the_base_output() {
    let d = Default::default();
    let m = Tiny::<Cpu>::new(&lora_cfg(), 1, &d);
    // A is random (Kaiming-uniform), B is zero.
    assert!(tensor_vec(m.q_proj.lora_a.val()).iter().any(|v| *v != 0.0));
    let x = x_input::<Cpu>(&d);
    let with = tensor_vec(m.q_proj.forward(x.clone()));
    // The base layer's own product (`LinearBase::forward_base`, bioalign-quant's kernel
    // on burn-flex), and burn's `Linear::forward` within rounding of it.
    let base = tensor_vec(m.q_proj.base.forward_base(x.clone()));
    let burn = tensor_vec(m.q_proj.base.forward(x));
    for (a, b) in base.iter().zip(&burn) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs burn's {b}");
    }
    assert_eq!(
        with.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        base.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn kaiming_bound_is_one_over_sqrt_fan_in() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let a = bioalign_lora::kaiming_uniform_a(16, 64, &mut rng);
    let bound = 1.0 / 8.0;
    assert!(a.iter().all(|v| v.abs() <= bound));
    assert!(a.iter().any(|v| v.abs() > 0.9 * bound));
}

fn set_random_b<B: Backend>(m: &mut Tiny<B>, d: &B::Device) {
    let mut k = 0u32;
    m.visit_adapters_mut(&mut |_, s| {
        let (i, o) = s.features();
        let r = s.lora().r;
        k += 1;
        let b: Vec<f32> = (0..r * o)
            .map(|j| ((j as u32 * 13 + k * 7) % 17) as f32 * 0.05 - 0.4)
            .collect();
        let a = s.lora_a().val();
        assert_eq!(a.dims(), [i, r]);
        s.set_lora(a, Tensor::from_data(TensorData::new(b, [r, o]), d));
    });
}

#[test]
fn merged_equals_unmerged() {
    let d = Default::default();
    let mut m = Tiny::<Cpu>::new(&lora_cfg(), 2, &d);
    set_random_b(&mut m, &d);
    let x = x_input::<Cpu>(&d);
    let unmerged = tensor_vec(m.q_proj.forward(x.clone()));
    let merged_w = m.q_proj.merged_weight_out_in(); // [out, in]
    let w = Tensor::<Cpu, 2>::from_data(TensorData::new(merged_w, [DIM, DIM]), &d).transpose();
    let dense = Linear {
        weight: Param::from_tensor(w),
        bias: None,
    };
    let merged = tensor_vec(dense.forward(x));
    let (drift, scale) = bioalign_lora::merge::drift(&merged, &unmerged);
    assert!(
        unmerged != tensor_vec(m.q_proj.base.forward(x_input::<Cpu>(&d))),
        "adapter must change the output"
    );
    assert!(drift <= 1e-5 * scale.max(1.0), "drift {drift}");
}

#[test]
fn only_lora_tensors_get_gradients() {
    let d = Default::default();
    let mut m = Tiny::<Ad>::new(&lora_cfg(), 3, &d);
    set_random_b(&mut m, &d);
    let ids = Tensor::<Ad, 2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4], [1, 4]), &d);
    let mask = Tensor::<Ad, 2, Bool>::from_data(TensorData::new(vec![true; 4], [1, 4]), &d);
    let h = m.hidden(ids, mask);
    let logits = m.lm_head(h.reshape([4, DIM]));
    let grads = logits.square().sum().backward();
    assert!(m.embed.weight.val().grad(&grads).is_none());
    assert!(m.head.weight.val().grad(&grads).is_none());
    assert!(m.q_proj.base.weight.val().grad(&grads).is_none());
    assert!(m.up_proj.base.weight.val().grad(&grads).is_none());
    for p in [
        &m.q_proj.lora_a,
        &m.q_proj.lora_b,
        &m.up_proj.lora_a,
        &m.up_proj.lora_b,
    ] {
        let g = p.val().grad(&grads).expect("lora tensor has a gradient");
        assert!(tensor_vec(g).iter().any(|v| *v != 0.0));
    }
}

/// JSON with every number as f64 (PEFT writes `32`, serde writes `32.0` for an f64 field).
fn numbers_as_f64(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        other => other,
    }
}

#[test]
fn the_three_reference_configs_parse() -> Result<()> {
    let dir = bioalign_io::data_mirror().join("../reference/peft-adapter-configs");
    let mut n = 0;
    for name in [
        "llama-3-8b",
        "mistral-7b-instruct-v0.3",
        "phi-3-mini-4k-instruct",
    ] {
        let path = dir.join(format!("{name}.adapter_config.json"));
        let cfg = LoraConfig::load(&path)?;
        assert_eq!((cfg.r, cfg.lora_alpha, cfg.lora_dropout), (16, 32.0, 0.0));
        assert!(cfg.targets("model.layers.31.mlp.gate_proj"));
        assert!(!cfg.targets("lm_head"));
        assert_eq!(
            cfg.module_lora("model.layers.0.self_attn.o_proj").scaling,
            2.0
        );
        assert!(
            cfg.base_model_name_or_path
                .as_deref()
                .unwrap_or("")
                .contains("bnb-4bit")
        );
        // Round trip keeps every key and value.
        let original: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            numbers_as_f64(serde_json::to_value(&cfg).unwrap()),
            numbers_as_f64(original),
            "{name}"
        );
        n += 1;
    }
    assert_eq!(n, 3);
    Ok(())
}

/// A model with LoRA modules exactly where PEFT put them in tests/fixtures/peft_tiny
/// (made by scripts/fixtures/gen_peft_tiny.py with PEFT 0.21.2 on a tiny random Llama).
#[derive(burn::module::Module, Debug)]
struct PeftTiny<B: Backend> {
    mods: Vec<LoraLinear<B, Linear<B>>>,
    #[module(skip)]
    names: Vec<String>,
}

fn read_io() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixtures().join("peft_tiny_io.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let vals = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, (v.shape().to_vec(), vals))
        })
        .collect()
}

impl<B: Backend> PeftTiny<B> {
    fn new(cfg: &LoraConfig, io: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, d: &B::Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut mods = Vec::new();
        let mut names = Vec::new();
        for i in 0..2 {
            for m in ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"] {
                let name = format!("model.layers.{i}.{m}");
                assert!(cfg.targets(&name));
                let (shape, w) = &io[&format!("{name}.base")];
                let (out, inp) = (shape[0], shape[1]);
                let t = Tensor::<B, 2>::from_data(TensorData::new(w.clone(), [out, inp]), d)
                    .transpose();
                let base = Linear {
                    weight: Param::from_tensor(t),
                    bias: None,
                };
                mods.push(LoraLinear::new(
                    base,
                    cfg.module_lora(&name),
                    0.0,
                    &mut rng,
                    d,
                ));
                names.push(name);
            }
        }
        Self { mods, names }
    }
}

impl<B: Backend> LoraModel<B> for PeftTiny<B> {
    fn visit_adapters(&self, f: &mut dyn FnMut(&str, &dyn AdapterSlot<B>)) {
        for (n, m) in self.names.iter().zip(&self.mods) {
            f(n, m);
        }
    }
    fn visit_adapters_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn AdapterSlot<B>)) {
        for (n, m) in self.names.iter().zip(self.mods.iter_mut()) {
            f(n, m);
        }
    }
}

#[test]
fn peft_adapter_loads_and_matches_peft_outputs_and_merge() -> Result<()> {
    let d = Default::default();
    let dir = fixtures().join("peft_tiny");
    let cfg = LoraConfig::load(&dir.join("adapter_config.json"))?;
    // PEFT 0.21.2 writes keys newer than the reference configs; they survive a round trip.
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert!(cfg.extra.contains_key("peft_version"));
    assert_eq!(
        numbers_as_f64(serde_json::to_value(&cfg).unwrap()),
        numbers_as_f64(original)
    );
    // rank_pattern / alpha_pattern as PEFT applied them.
    assert_eq!(
        cfg.module_lora("model.layers.1.mlp.down_proj"),
        ModuleLora {
            r: 2,
            alpha: 8.0,
            scaling: 4.0
        }
    );
    assert_eq!(
        cfg.module_lora("model.layers.0.self_attn.v_proj"),
        ModuleLora {
            r: 4,
            alpha: 2.0,
            scaling: 0.5
        }
    );
    let io = read_io();
    let mut m = PeftTiny::<Cpu>::new(&cfg, &io, &d);
    load_adapter(&mut m, &dir, None, &d)?;
    for (name, module) in m.names.iter().zip(&m.mods) {
        let x = if name.contains("down_proj") {
            &io["x24"]
        } else {
            &io["x16"]
        };
        let xt = Tensor::<Cpu, 2>::from_data(TensorData::new(x.1.clone(), [x.0[0], x.0[1]]), &d);
        let ours = tensor_vec(module.forward(xt));
        let (_, theirs) = &io[&format!("{name}.out")];
        let (_, base) = &io[&format!("{name}.base")];
        let diff = ours
            .iter()
            .zip(theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{name}: output differs from PEFT by {diff}");
        let merged = module.merged_weight_out_in();
        let (_, peft_merged) = &io[&format!("{name}.merged")];
        let diff = merged
            .iter()
            .zip(peft_merged)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-6,
            "{name}: merged weight differs from PEFT's merge_and_unload by {diff}"
        );
        assert!(merged != *base, "{name}: adapter is non-zero");
    }
    Ok(())
}

#[test]
fn save_then_load_round_trips_with_peft_names() -> Result<()> {
    let d = Default::default();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = lora_cfg();
    cfg.base_model_name_or_path = Some("tiny-base".into());
    let mut m = Tiny::<Cpu>::new(&cfg, 4, &d);
    set_random_b(&mut m, &d);
    save_adapter(&m, &cfg, tmp.path())?;
    let bytes = std::fs::read(tmp.path().join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let a = st
        .tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
        .unwrap();
    assert_eq!(a.shape(), &[4, DIM]);
    let b = st
        .tensor("base_model.model.model.layers.1.mlp.up_proj.lora_B.weight")
        .unwrap();
    assert_eq!(b.shape(), &[DIM, 4]);
    assert_eq!(st.names().len(), 4);
    let mut fresh = Tiny::<Cpu>::new(&cfg, 5, &d);
    assert_ne!(adapter_bits(&fresh), adapter_bits(&m));
    let back = load_adapter(&mut fresh, tmp.path(), Some("tiny-base"), &d)?;
    assert_eq!(back, cfg);
    assert_eq!(adapter_bits(&fresh), adapter_bits(&m));
    Ok(())
}

#[test]
fn mismatched_adapters_are_clear_errors() -> Result<()> {
    let d = Default::default();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = lora_cfg();
    cfg.base_model_name_or_path = Some("tiny-base".into());
    let m = Tiny::<Cpu>::new(&cfg, 4, &d);
    save_adapter(&m, &cfg, tmp.path())?;
    // Other base.
    let mut fresh = Tiny::<Cpu>::new(&cfg, 5, &d);
    let e = load_adapter(&mut fresh, tmp.path(), Some("other-model"), &d).unwrap_err();
    assert!(matches!(e, Error::OtherBase { .. }), "{e}");
    // Other rank -> shape error naming the tensor.
    let mut r8 = Tiny::<Cpu>::new(&LoraConfig::new(8, 16.0, &["q_proj", "up_proj"]), 5, &d);
    let e = load_adapter(&mut r8, tmp.path(), None, &d).unwrap_err();
    assert!(
        e.to_string().contains("lora_A.weight") && matches!(e, Error::Shape { .. }),
        "{e}"
    );
    // Missing tensor: drop up_proj's lora_B from the file.
    let path = tmp.path().join("adapter_model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("up_proj.lora_B.weight"))
        .collect();
    std::fs::write(&path, safetensors::serialize(kept, None).unwrap()).unwrap();
    let e = load_adapter(&mut fresh, tmp.path(), None, &d).unwrap_err();
    assert!(
        matches!(e, Error::MissingTensor { .. }) && e.to_string().contains("up_proj"),
        "{e}"
    );
    // Other shapes: the PEFT fixture's q_proj is 16 wide.
    let e = load_adapter(&mut fresh, &fixtures().join("peft_tiny"), None, &d).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // Extra tensors: a model adapting fewer modules than the file.
    let io = read_io();
    let pcfg = LoraConfig::load(&fixtures().join("peft_tiny/adapter_config.json"))?;
    let mut few = PeftTiny::<Cpu>::new(&pcfg, &io, &d);
    few.mods.truncate(2);
    few.names.truncate(2);
    let e = load_adapter(&mut few, &fixtures().join("peft_tiny"), None, &d).unwrap_err();
    assert!(matches!(e, Error::UnexpectedTensor { .. }), "{e}");
    Ok(())
}
