"""Checks that a checkpoint written by `cargo run --example quantize` loads in
transformers + bitsandbytes and gives the same logits as the model bitsandbytes
quantizes itself from the same weights.

    /tmp/bioalign-ref/bin/python scripts/check_quantize_transformers.py [--work DIR]

Steps: save a small random Llama (bf16 safetensors); run the Rust example on it;
load the original with BitsAndBytesConfig(load_in_4bit, nf4, double quant) and
save it (bnb's checkpoint); compare every stored tensor of the two checkpoints;
load both pre-quantized checkpoints with transformers and compare logits on CPU;
also dequantize each of our stored weights with bitsandbytes' CPU dequantize_4bit
and compare with bitsandbytes' own quantized weight. Prints a summary and exits
non-zero on any mismatch.
"""
import argparse
import os
import shutil
import subprocess
import sys

import torch
import bitsandbytes.functional as F
from safetensors import safe_open
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/bioalign-quant-check")
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    src, ours, theirs = (os.path.join(args.work, d) for d in ("src", "rust_bnb", "py_bnb"))

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=704, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=128)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(src, safe_serialization=True)

    cmd = ["cargo", "run", "--release", "-q", "-p", "bioalign-examples", "--example", "quantize", "--",
           "--model", src, "--out", ours]
    subprocess.run(cmd, cwd=ROOT, check=True)

    qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    ref = AutoModelForCausalLM.from_pretrained(src, quantization_config=qcfg, device_map="cpu")
    ref.save_pretrained(theirs, safe_serialization=True)

    failures = []
    with safe_open(os.path.join(ours, "model.safetensors"), "pt") as a, \
            safe_open(os.path.join(theirs, "model.safetensors"), "pt") as b:
        ka, kb = sorted(a.keys()), sorted(b.keys())
        if ka != kb:
            failures.append(f"key sets differ: {set(ka) ^ set(kb)}")
        same = 0
        for k in sorted(set(ka) & set(kb)):
            ta, tb = a.get_tensor(k), b.get_tensor(k)
            if ta.dtype != tb.dtype or ta.shape != tb.shape or not torch.equal(ta.view(torch.uint8), tb.view(torch.uint8)):
                failures.append(f"tensor {k} differs")
            else:
                same += 1
        print(f"stored tensors identical: {same}/{len(kb)}")

        # bitsandbytes' CPU dequantize of our stored tensors == its own quantized weights
        deq_same = 0
        weights = [k[: -len(".quant_state.bitsandbytes__nf4")] for k in ka if k.endswith("bitsandbytes__nf4")]
        for w in weights:
            qs = {k[len(w) + 1:]: a.get_tensor(k) for k in ka if k.startswith(w + ".")}
            state = F.QuantState.from_dict(qs, device=torch.device("cpu"))
            mine = F.dequantize_4bit(a.get_tensor(w), state)
            mod = ref.get_submodule(w[: -len(".weight")])
            bnb = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state)
            if torch.equal(mine, bnb):
                deq_same += 1
            else:
                failures.append(f"dequantized {w} differs (max {float((mine.float() - bnb.float()).abs().max())})")
        print(f"bitsandbytes dequantize of our tensors equals its own: {deq_same}/{len(weights)}")

    loaded = AutoModelForCausalLM.from_pretrained(ours, device_map="cpu")
    kinds = {type(m).__name__ for m in loaded.modules()}
    print("transformers loaded our checkpoint; Linear4bit present:", "Linear4bit" in kinds)
    ids = torch.randint(0, cfg.vocab_size, (2, 16))
    try:
        with torch.no_grad():
            la = loaded(ids).logits.float()
            lb = ref(ids).logits.float()
        diff = float((la - lb).abs().max())
        print(f"logits max |ours - bitsandbytes| = {diff:.3g} over {tuple(la.shape)}")
        if diff != 0.0:
            failures.append(f"logits differ by {diff}")
    except Exception as e:  # noqa: BLE001 - report exactly what fails on CPU
        print(f"4-bit forward on CPU failed: {type(e).__name__}: {e}")
        failures.append("forward failed")

    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("OK: the Rust checkpoint loads in transformers and matches bitsandbytes exactly")


if __name__ == "__main__":
    main()
