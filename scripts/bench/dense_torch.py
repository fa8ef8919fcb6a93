"""torch's f32 `F.linear` (MKL / oneDNN on CPU) on the shapes of the `dense1024_*`
criterion benchmarks in `benches/quant.rs`: SmolLM2-135M's projections and tied LM
head over a 32 x 32-token batch (1024 rows). Prints one JSON line per shape with the
median and the fastest time in ms (on a shared machine the fastest run is the
steadiest figure), to set beside `cargo bench -p bioalign-benches --bench quant --
dense1024_blocked` run on the same machine.

    python scripts/bench/dense_torch.py --threads 2
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = [
    ("smollm2_q_576x576", 576, 576),
    ("smollm2_kv_192x576", 192, 576),
    ("smollm2_gate_1536x576", 1536, 576),
    ("smollm2_down_576x1536", 576, 1536),
    ("smollm2_lm_head_49152x576", 49152, 576),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=3.0, help="time spent per shape")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    for label, out_f, in_f in SHAPES:
        x = torch.randn(args.rows, in_f, generator=g)
        w = torch.randn(out_f, in_f, generator=g)
        for _ in range(3):
            F.linear(x, w)
        times = []
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds or len(times) < 5:
            t = time.perf_counter()
            F.linear(x, w)
            times.append(time.perf_counter() - t)
        ms = statistics.median(times) * 1e3
        best = min(times) * 1e3
        gflops = 2 * args.rows * out_f * in_f / (best * 1e-3) / 1e9
        print(json.dumps({"tool": f"torch {torch.__version__} F.linear ({args.threads} threads)",
                          "shape": label, "rows": args.rows, "median_ms": round(ms, 3),
                          "min_ms": round(best, 3), "gflops_at_min": round(gflops, 1)}))


if __name__ == "__main__":
    main()
