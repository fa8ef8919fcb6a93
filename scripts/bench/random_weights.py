"""A Hugging Face model folder with random weights in the shape of another (its config.json and
tokenizer files copied): for speed figures where the real weights cannot travel, such as the GPU
machine. transformers' own initialisation (normal, std = initializer_range), seeded; float32.

Run: python3 scripts/bench/random_weights.py --like DIR --out DIR2 [--seed 0]
"""
import argparse
import os
import shutil

import torch
from transformers import AutoConfig, AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--like", required=True, help="folder with config.json (and tokenizer files)")
ap.add_argument("--out", required=True)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
torch.manual_seed(a.seed)
cfg = AutoConfig.from_pretrained(a.like)
model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
os.makedirs(a.out, exist_ok=True)
model.save_pretrained(a.out, safe_serialization=True)
for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
          "generation_config.json"):
    src = os.path.join(a.like, f)
    if os.path.exists(src):
        shutil.copy(src, os.path.join(a.out, f))
print(f"{a.out}: {sum(p.numel() for p in model.parameters())} parameters")
