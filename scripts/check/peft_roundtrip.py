"""An adapter trained by bioalign loads in PEFT and gives the same logits as bioalign.

1. Unless --adapter is given, trains one with the `finetune` example (release build) on the
   first --rows rows of a split: --max-steps 5 at a raised learning rate (2e-3, no warmup) so
   that B moves well away from zero and the adapter changes the logits visibly.
2. Runs the `logits` example on the GGUF with and without the adapter (all positions, full
   vocabulary).
3. Loads the same GGUF in transformers (float32, dequantized exactly as our loader does),
   applies the adapter with `PeftModel.from_pretrained`, and computes the logits of the same
   token ids (each prompt alone, no padding).
4. Prints the max |bioalign - PEFT| per prompt (threshold 1e-3) and how far the adapter moves
   the logits (PEFT with vs without it), and exits 1 if any prompt is over the threshold.

With --load-in-4bit, step 2 and 3 also run with NF4 bases: our --load-in-4bit against
transformers + bitsandbytes 4-bit (nf4, double quant, float32 compute) from a float32 copy
of the GGUF (transformers cannot quantize while reading a GGUF); reported, threshold 1e-3.

Run: /tmp/bioalign-ref/bin/python scripts/check/peft_roundtrip.py [--adapter DIR] [--load-in-4bit]
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import peft
import torch
import transformers
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[2]
GGUF = ROOT / "data/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
    "Determine if the following gene-disease association is true or false.\n\n### Input:\n"
    "TP53 is associated with Li-Fraumeni Syndrome\n\n### Response:\n",
    "Is this statement true or false? Answer with one word.\nBRCA1 is associated with Breast Neoplasms\nAnswer:",
    "The capital of France is",
]
TOL = 1e-3


def cargo_example(name, args):
    cmd = ["cargo", "run", "--quiet", "--release", "-p", "bioalign-examples", "--example", name, "--"] + args
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=ROOT, check=True)


def ours(model, adapter, out, load_in_4bit=False):
    args = ["--model", str(model), "--out", str(out)]
    if adapter:
        args += ["--adapter", str(adapter)]
    if load_in_4bit:
        args.append("--load-in-4bit")
    for p in PROMPTS:
        args += ["--prompt", p]
    cargo_example("logits", args)
    t = load_file(str(out))
    return [(t[f"prompt.{i}.ids"], t[f"prompt.{i}.logits"]) for i in range(len(PROMPTS))]


def reference_logits(model, ids_list):
    out = []
    with torch.no_grad():
        for ids in ids_list:
            out.append(model(input_ids=ids.unsqueeze(0)).logits[0].float())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(GGUF))
    ap.add_argument("--adapter", help="a PEFT folder written by bioalign (default: train one)")
    ap.add_argument("--data", default=str(ROOT / "out/ctd/train.csv"))
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--work", default="/tmp/bioalign-roundtrip")
    ap.add_argument("--load-in-4bit", action="store_true")
    ap.add_argument("--hf-dir", default="/tmp/bioalign-bench/smollm2-135m-instruct-f32",
                    help="float32 Hugging Face copy of the GGUF for the 4-bit check "
                         "(scripts/bench/train_peft.py makes it)")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)

    adapter = a.adapter
    if adapter is None:
        rows = work / "rows.csv"
        with open(a.data) as f, open(rows, "w") as g:
            for i, line in enumerate(f):
                if i > a.rows:
                    break
                g.write(line)
        adapter = work / "adapter"
        cargo_example("finetune", [
            "--model", a.model, "--data", str(rows), "--out", str(adapter),
            "--max-steps", "5", "--lr", "2e-3", "--warmup", "0",
            "--eval-rows", "0", "--eval-every", "0", "--checkpoint-every", "0",
        ])
    adapter = Path(adapter)

    tuned = ours(a.model, adapter, work / "ours_adapter.safetensors")
    plain = ours(a.model, None, work / "ours_base.safetensors")

    d, f = os.path.dirname(a.model), os.path.basename(a.model)
    base = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    ids_list = [ids for ids, _ in tuned]
    ref_base = reference_logits(base, ids_list)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    ref = reference_logits(model, ids_list)
    print(f"transformers {transformers.__version__}, peft {peft.__version__}, torch {torch.__version__}; "
          f"adapter {adapter}")
    worst = 0.0
    for i, ((ids, got), want, want_base, (_, got_base)) in enumerate(zip(tuned, ref, ref_base, plain)):
        d_lora = (got - want).abs().max().item()
        d_base = (got_base - want_base).abs().max().item()
        moved = (want - want_base).abs().max().item()
        worst = max(worst, d_lora)
        print(f"prompt {i}: {len(ids)} tokens x {got.shape[1]} ids: |bioalign - PEFT| max {d_lora:.3e} "
              f"(base models: {d_base:.3e}); the adapter moves PEFT's logits by up to {moved:.3f}")
    print(f"max abs diff, adapter trained here, bioalign vs transformers + PEFT: {worst:.3e} (threshold {TOL})")
    ok = worst <= TOL

    if a.load_in_4bit:
        from transformers import BitsAndBytesConfig

        if not os.path.isdir(a.hf_dir):
            subprocess.run([sys.executable, str(ROOT / "scripts/bench/train_peft.py"), "--convert-only",
                            "--model", a.model, "--hf-dir", a.hf_dir], check=True)
        tuned4 = ours(a.model, adapter, work / "ours_adapter_nf4.safetensors", load_in_4bit=True)
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
        base4 = AutoModelForCausalLM.from_pretrained(a.hf_dir, quantization_config=q, device_map="cpu",
                                                     dtype=torch.float32).eval()
        model4 = PeftModel.from_pretrained(base4, str(adapter))
        ids4 = [ids for ids, _ in tuned4]
        # In training mode bitsandbytes' Linear4bit multiplies by dequantize_4bit(W) in float32
        # (the QLoRA training path; no dropout anywhere here: LoRA dropout 0, SmolLM2 has
        # none). In eval mode on a CPU with AVX512-BF16 it first repacks the weight with its
        # absmax rounded to bfloat16 (_convert_weight_packed_for_cpu) -- lossy by design, so
        # reported but not held to the threshold.
        model4.train()
        ref4 = reference_logits(model4, ids4)
        model4.eval()
        ref4_eval = reference_logits(model4, ids4)
        worst4 = 0.0
        for i, ((ids, got), want, want_eval) in enumerate(zip(tuned4, ref4, ref4_eval)):
            d4 = (got - want).abs().max().item()
            worst4 = max(worst4, d4)
            print(f"NF4 prompt {i}: |bioalign --load-in-4bit - bitsandbytes 4-bit + PEFT| max {d4:.3e} "
                  f"(bitsandbytes' eval-mode CPU kernel, bf16 absmax: {(got - want_eval).abs().max().item():.3e})")
        print(f"max abs diff, NF4 bases: {worst4:.3e} (threshold {TOL})")
        ok = ok and worst4 <= TOL
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
