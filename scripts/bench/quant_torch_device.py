"""torch's f32 products and copy on a GPU, on the shapes of examples/quant_device_bench.rs,
for side-by-side figures (docs/gpu.md). No bitsandbytes is needed (none is installed on
the lent GPU machines).

    python3 scripts/bench/quant_torch_device.py [--repeats 50]

Each figure is the mean of `--repeats` calls after three warm-up calls, timed with CUDA
events around the whole loop, as the Rust example times its calls: `copy` (an f32
tensor of the weight's size cloned, bytes read + written), `gemv_f32` (`x @ W.T`, one row)
and `gemm512_f32` (512 rows). TF32 stays off (torch's default for matmul).
"""
import argparse
import time

import torch

SHAPES = [
    ("smollm2 q_proj", 576, 576),
    ("smollm2 gate_proj", 1536, 576),
    ("smollm2 down_proj", 576, 1536),
    ("llama3-8b q_proj", 4096, 4096),
    ("llama3-8b gate_proj", 14336, 4096),
]


def timed(fn, repeats):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / repeats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, "
          f"allow_tf32={torch.backends.cuda.matmul.allow_tf32}")
    # Idle GPUs clock down: a half-second of products first, as the Rust example does.
    a = torch.ones(2048, 2048, device=dev)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.5:
        a @ a
        torch.cuda.synchronize()
    gen = torch.Generator().manual_seed(0)
    for name, rows, cols in SHAPES:
        w = (torch.rand(rows, cols, generator=gen) * 2 - 1).to(dev)
        numel = rows * cols
        t = timed(lambda: w.clone(), args.repeats)
        print(f"{name:<20} {'copy (f32, same size)':<22} {t * 1e6:>10.2f} µs  "
              f"{numel * 8 / t / 1e9:.1f} GB/s")
        for m in (1, 512):
            x = (torch.rand(m, cols, generator=gen) * 2 - 1).to(dev)
            t = timed(lambda: x @ w.T, args.repeats)
            label = "gemv_f32" if m == 1 else "gemm512_f32"
            extra = (f"{numel * 4 / t / 1e9:.1f} GB/s" if m == 1
                     else f"{2 * m * numel / t / 1e12:.2f} TFLOP/s")
            print(f"{name:<20} {label:<22} {t * 1e6:>10.2f} µs  {extra}")


if __name__ == "__main__":
    main()
