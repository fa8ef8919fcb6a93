"""transformers' side of examples/models_bench.rs: the same figures for the same model.

Load seconds (AutoModelForCausalLM.from_pretrained(dir, gguf_file=...), float32), prompt-forward
tokens/s on a batch x seq batch of random ids (full logits), greedy generation tokens/s (batch 1,
min_new_tokens so EOS does not stop it), and peak resident memory (ru_maxrss).

Run: /tmp/bioalign-ref/bin/python scripts/bench/models_transformers.py --model FILE.gguf
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
a = ap.parse_args()
torch.set_num_threads(a.threads)
d, f = os.path.dirname(a.model), os.path.basename(a.model)
t0 = time.perf_counter()
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
model.eval()
load_s = time.perf_counter() - t0
g = torch.Generator().manual_seed(0)
ids = torch.randint(100, model.config.vocab_size, (a.batch, a.seq), generator=g)
with torch.inference_mode():
    model(input_ids=ids)
    t1 = time.perf_counter()
    for _ in range(a.repeats):
        model(input_ids=ids).logits
    fwd_s = (time.perf_counter() - t1) / a.repeats
    e = tok("The capital of France is", return_tensors="pt")
    t2 = time.perf_counter()
    out = model.generate(**e, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False)
    gen_s = time.perf_counter() - t2
n_new = out.shape[1] - e.input_ids.shape[1]
print(json.dumps({
    "tool": f"transformers {transformers.__version__} torch {torch.__version__} ({torch.get_num_threads()} threads)",
    "load_s": round(load_s, 3),
    "forward_tokens_per_s": round(a.batch * a.seq / fwd_s, 1),
    "forward_batch": [a.batch, a.seq],
    "generate_tokens_per_s": round(n_new / gen_s, 2),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
}))
