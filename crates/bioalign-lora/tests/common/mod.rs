//! A tiny burn model for the tests: embedding, two LoRA-wrapped dense projections named
//! after Hugging Face modules, and a dense LM head. Per-token (no attention), which is
//! enough to learn "next token given this token".
#![allow(dead_code)]

use bioalign_lora::linear::tensor_vec;
use bioalign_lora::{AdapterSlot, CausalLm, LoraConfig, LoraLinear, LoraModel};
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub type Cpu = burn_flex::Flex;
pub type Ad = burn::backend::Autodiff<Cpu>;

pub const VOCAB: usize = 12;
pub const DIM: usize = 8;

#[derive(Module, Debug)]
pub struct Tiny<B: Backend> {
    pub embed: Embedding<B>,
    pub q_proj: LoraLinear<B, Linear<B>>,
    pub up_proj: LoraLinear<B, Linear<B>>,
    pub head: Linear<B>,
}

pub const NAMES: [&str; 2] = [
    "model.layers.0.self_attn.q_proj",
    "model.layers.1.mlp.up_proj",
];

fn dense<B: Backend>(
    inp: usize,
    out: usize,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> Linear<B> {
    use rand::Rng;
    let w: Vec<f32> = (0..inp * out)
        .map(|_| rng.random_range(-0.5..0.5))
        .collect();
    let mut l = LinearConfig::new(inp, out).with_bias(false).init(device);
    l.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [inp, out]), device));
    l
}

impl<B: Backend> Tiny<B> {
    /// A model with seeded base weights and fresh adapters from `cfg`.
    pub fn new(cfg: &LoraConfig, seed: u64, device: &B::Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut embed = EmbeddingConfig::new(VOCAB, DIM).init(device);
        {
            use rand::Rng;
            let w: Vec<f32> = (0..VOCAB * DIM)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            embed.weight =
                Param::from_tensor(Tensor::from_data(TensorData::new(w, [VOCAB, DIM]), device));
        }
        let q = dense(DIM, DIM, &mut rng, device);
        let up = dense(DIM, DIM, &mut rng, device);
        let head = dense(DIM, VOCAB, &mut rng, device);
        Self {
            embed: embed.no_grad(),
            q_proj: LoraLinear::new(
                q,
                cfg.module_lora(NAMES[0]),
                cfg.lora_dropout,
                &mut rng,
                device,
            ),
            up_proj: LoraLinear::new(
                up,
                cfg.module_lora(NAMES[1]),
                cfg.lora_dropout,
                &mut rng,
                device,
            ),
            head: head.no_grad(),
        }
    }
}

impl<B: Backend> LoraModel<B> for Tiny<B> {
    fn visit_adapters(&self, f: &mut dyn FnMut(&str, &dyn AdapterSlot<B>)) {
        f(NAMES[0], &self.q_proj);
        f(NAMES[1], &self.up_proj);
    }
    fn visit_adapters_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn AdapterSlot<B>)) {
        f(NAMES[0], &mut self.q_proj);
        f(NAMES[1], &mut self.up_proj);
    }
}

impl<B: Backend> CausalLm<B> for Tiny<B> {
    fn hidden(&self, ids: Tensor<B, 2, Int>, _mask: Tensor<B, 2, Bool>) -> Tensor<B, 3> {
        let e = self.embed.forward(ids);
        let h = e.clone() + self.q_proj.forward(e).tanh();
        h.clone() + self.up_proj.forward(h).tanh()
    }
    fn lm_head(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head.forward(hidden)
    }
}

pub fn lora_cfg() -> LoraConfig {
    LoraConfig::new(4, 8.0, &["q_proj", "up_proj"])
}

/// All adapter values, in visit order, as raw f32 bits.
pub fn adapter_bits<B: Backend, M: LoraModel<B>>(m: &M) -> Vec<Vec<u32>> {
    let mut v = Vec::new();
    m.visit_adapters(&mut |_, s| {
        v.push(
            tensor_vec(s.lora_a().val())
                .iter()
                .map(|x| x.to_bits())
                .collect(),
        );
        v.push(
            tensor_vec(s.lora_b().val())
                .iter()
                .map(|x| x.to_bits())
                .collect(),
        );
    });
    v
}
