"""Does an adapter answer in its training template, in the zero-shot prompt, or both?

Scores rows of a prepare_data folder with transformers + PEFT (an independent
implementation of the forward pass) under two prompts:
- alpaca: the reference's training text up to "### Response:\n", scored by
  log p("true") - log p("false") (the tokens the Alpaca response starts with);
- zero-shot: SPEC.md's evaluation prompt, scored by log p(" true") - log p(" false").
For the base model and base + adapter, on --rows rows of train.csv and of test.csv
(pandas sample, random_state 1), it prints ROC-AUC and accuracy (score > 0).

The base is the SmolLM2 GGUF dequantized to float32 (a converted folder, see
scripts/bench/train_peft.py --convert-only), optionally quantized to NF4 with
bitsandbytes (--nf4: block 64, double quantization, float32 compute), as QLoRA
trained it.

Run: /tmp/bioalign-ref/bin/python scripts/check/template_transfer.py \
        --data OUT/data --adapter OUT/adapter [--nf4] [--rows 150]
"""
import argparse

import numpy as np
import pandas as pd
import torch
from peft import PeftModel
from sklearn.metrics import roc_auc_score
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

ALPACA = ("Below is an instruction that describes a task, paired with an input that provides further "
          "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
          "Determine if the following gene-disease association is true or false.\n\n### Input:\n"
          "{text}\n\n### Response:\n")
ZERO_SHOT = "Is this statement true or false? Answer with one word.\n{text}\nAnswer:"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="prepare_data folder (train.csv, test.csv)")
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--hf-dir", default="/tmp/bioalign-bench/smollm2-135m-instruct-f32")
    ap.add_argument("--nf4", action="store_true")
    ap.add_argument("--rows", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.hf_dir)
    kw = {}
    if a.nf4:
        kw = dict(device_map="cpu", quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32))
    base = AutoModelForCausalLM.from_pretrained(a.hf_dir, dtype=torch.float32, **kw)
    # Training mode: bitsandbytes multiplies by the exactly dequantized weight there
    # (its CPU eval path repacks with bf16 scales); SmolLM2 and the adapters have no dropout.
    base.train()

    def first(s):
        return tok.encode(s, add_special_tokens=False)[0]

    prompts = {"alpaca": (ALPACA, first("true"), first("false")),
               "zero-shot": (ZERO_SHOT, first(" true"), first(" false"))}
    splits = {s: pd.read_csv(f"{a.data}/{s}.csv").sample(a.rows, random_state=1) for s in ("train", "test")}

    def scores(model, df, prompt):
        tmpl, t, f = prompt
        out = []
        with torch.no_grad():
            for text in df.text:
                ids = tok(tmpl.format(text=text), return_tensors="pt").input_ids
                lp = torch.log_softmax(model(ids).logits[0, -1].float(), -1)
                out.append((lp[t] - lp[f]).item())
        return np.array(out)

    print("model  split  prompt     ROC-AUC  accuracy  mean score")
    for name in ("base", "tuned"):
        model = base if name == "base" else PeftModel.from_pretrained(base, a.adapter)
        model.train()
        for split, df in splits.items():
            for pname, prompt in prompts.items():
                s = scores(model, df, prompt)
                print(f"{name:6} {split:6} {pname:10} {roc_auc_score(df.label, s):7.3f}  "
                      f"{((s > 0) == df.label).mean():8.3f}  {s.mean():+.2f}", flush=True)


if __name__ == "__main__":
    main()
