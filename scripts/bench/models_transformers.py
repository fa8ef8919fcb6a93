"""transformers' side of examples/models_bench.rs: the same figures for the same model.

Load seconds (AutoModelForCausalLM.from_pretrained(dir, gguf_file=...), float32 or --dtype), prompt-forward
tokens/s on a batch x seq batch of random ids (full logits), greedy generation tokens/s (batch 1,
min_new_tokens so EOS does not stop it; the second of two runs, the first printed too), and peak resident memory (ru_maxrss).

Run: /tmp/bioalign-ref/bin/python scripts/bench/models_transformers.py --model FILE.gguf
`--model` may also be a Hugging Face folder (a model without a tokenizer is timed on a fixed
prompt of ids, as models_bench does). `--device cuda` times the same on a GPU, synchronising
before every clock read, and adds the peak GPU memory torch allocated.
"""
import argparse
import json
import os
import resource
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--seq", type=int, default=32)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--new-tokens", type=int, default=32)
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--device", default="cpu")
ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                help="torch dtype of the whole model (models_bench's --dtype bf16 rounds only the weights)")
a = ap.parse_args()
torch.set_num_threads(a.threads)
dev = torch.device(a.device)


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


if os.path.isdir(a.model):
    d, kw = a.model, {}
else:
    d, kw = os.path.dirname(a.model), {"gguf_file": os.path.basename(a.model)}
t0 = time.perf_counter()
try:
    tok = AutoTokenizer.from_pretrained(d, **kw)
except Exception:  # a folder of random weights without tokenizer files
    tok = None
model = AutoModelForCausalLM.from_pretrained(d, dtype=getattr(torch, a.dtype), **kw).to(dev)
model.eval()
sync()
load_s = time.perf_counter() - t0
g = torch.Generator().manual_seed(0)
ids = torch.randint(100, model.config.vocab_size, (a.batch, a.seq), generator=g).to(dev)
with torch.inference_mode():
    model(input_ids=ids)
    sync()
    t1 = time.perf_counter()
    best_s = float("inf")
    for _ in range(a.repeats):
        t = time.perf_counter()
        model(input_ids=ids).logits
        sync()
        best_s = min(best_s, time.perf_counter() - t)
    fwd_s = (time.perf_counter() - t1) / a.repeats
    if tok is not None:
        e = dict(tok("The capital of France is", return_tensors="pt"))
    else:
        p = torch.tensor([[i * 101 % model.config.vocab_size for i in range(1, 7)]])
        e = {"input_ids": p, "attention_mask": torch.ones_like(p)}
    e = {k: v.to(dev) for k, v in e.items()}
    gen = lambda: model.generate(**e, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                                 do_sample=False)
    # Two generations, the second timed (as models_bench does), the first printed too.
    sync()
    t2 = time.perf_counter()
    gen()
    sync()
    first_s = time.perf_counter() - t2
    t2 = time.perf_counter()
    out = gen()
    sync()
    gen_s = time.perf_counter() - t2
n_new = out.shape[1] - e["input_ids"].shape[1]
print(json.dumps({
    "tool": f"transformers {transformers.__version__} torch {torch.__version__} ({torch.get_num_threads()} threads)",
    "device": a.device,
    "dtype": a.dtype,
    "peak_gpu_mib": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None,
    "load_s": round(load_s, 3),
    "forward_tokens_per_s": round(a.batch * a.seq / fwd_s, 1),
    "forward_best_tokens_per_s": round(a.batch * a.seq / best_s, 1),
    "forward_batch": [a.batch, a.seq],
    "generate_tokens_per_s": round(n_new / gen_s, 2),
    "generate_first_tokens_per_s": round(n_new / first_s, 2),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
}))
