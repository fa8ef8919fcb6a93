"""Side-by-side timing of one optimizer step over the LoRA tensors of SmolLM2-135M
(r 16 on q,k,v,o,gate,up,down of 30 layers: 210 A/B pairs, 4.88M parameters):
torch.optim.AdamW (CPU, single-tensor and foreach) and bitsandbytes.optim.AdamW8bit
(CPU kernels). Compare with `cargo bench -p bioalign-benches --bench lora_optim`.

Run: /tmp/bioalign-ref/bin/python scripts/bench/lora_optim_bnb.py
"""

import time

import bitsandbytes as bnb
import torch

torch.manual_seed(0)
H, I, KV, R, L = 576, 1536, 192, 16, 30
shapes = []
for _ in range(L):
    for (i, o) in ((H, H), (H, KV), (H, KV), (H, H), (H, I), (H, I), (I, H)):
        shapes += [(R, i), (o, R)]
n = sum(a * b for a, b in shapes)
print(f"{len(shapes)} tensors, {n} parameters, torch threads {torch.get_num_threads()}")


def bench(name, make):
    ps = [torch.nn.Parameter(torch.randn(s) * 0.01) for s in shapes]
    for p in ps:
        p.grad = torch.randn_like(p) * 0.01
    opt = make(ps)
    for _ in range(3):
        opt.step()
    times = []
    for _ in range(10):
        t = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2]
    print(f"{name}: median {med * 1e3:.2f} ms/step, {n / med / 1e6:.1f} M params/s")


bench("torch AdamW (foreach=False)", lambda ps: torch.optim.AdamW(ps, lr=2e-4, weight_decay=0.01, foreach=False))
bench("torch AdamW (foreach=True)", lambda ps: torch.optim.AdamW(ps, lr=2e-4, weight_decay=0.01, foreach=True))
bench("bnb AdamW8bit", lambda ps: bnb.optim.AdamW8bit(ps, lr=2e-4, weight_decay=0.01))
