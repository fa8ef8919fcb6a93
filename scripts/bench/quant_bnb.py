"""bitsandbytes' CPU quantize / dequantize and torch's f32 matmul on the
shapes of benches/quant.rs, for side-by-side figures (docs/benchmarks-quant.md).

    /tmp/bioalign-ref/bin/python scripts/bench/quant_bnb.py

Prints one line per measurement: name, shape, median seconds, throughput.
Dequantize throughput counts the same bytes as the Rust bench (packed codes +
f32 scales read, f32 written).
"""
import statistics
import time

import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F

SHAPES = [
    ("smollm2_q_576x576", 576, 576),
    ("smollm2_gate_1536x576", 1536, 576),
    ("llama3_q_4096x4096", 4096, 4096),
    ("llama3_gate_14336x4096", 14336, 4096),
]


def bench(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def decode_step():
    """The 210 batch-1 projections of one SmolLM2-135M decoding step, each on its
    own weight (benches/quant.rs `decode_step`): torch's f32 GEMV, and
    bitsandbytes' `matmul_4bit` on the NF4 weights."""
    hidden, kv, inter = 576, 192, 1536
    shapes = [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden),
              (inter, hidden), (inter, hidden), (hidden, inter)] * 30
    ws = [torch.randn(r, c) * 0.02 for r, c in shapes]
    x = torch.randn(1, inter)
    flops = sum(2 * r * c for r, c in shapes)

    def f32():
        for w in ws:
            x[:, : w.shape[1]] @ w.T

    t = bench(f32, 10)
    print(f"decode_step_f32_torch smollm2_135m {t:.6f} s {flops / t / 1e9:.2f} GFLOP/s")
    qs = [F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True) for w in ws]
    del ws

    def nf4():
        for (p, st) in qs:
            bnb.matmul_4bit(x[:, : st.shape[1]], p.t(), quant_state=st)

    t = bench(nf4, 10)
    print(f"decode_step_nf4_bnb smollm2_135m {t:.6f} s {flops / t / 1e9:.2f} GFLOP/s")


def main():
    print(f"# bitsandbytes {bnb.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}")
    torch.manual_seed(0)
    for label, rows, cols in SHAPES:
        n = rows * cols
        big = n > 20_000_000
        w = torch.randn(rows, cols) * 0.02
        reps = 3 if big else 10
        t = bench(lambda: F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True), reps)
        print(f"quantize_nf4_double {label} {t:.6f} s {n / t / 1e6:.1f} Melem/s")
        packed, st = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
        moved = packed.numel() + 4 * st.absmax.numel() + 4 * n
        t = bench(lambda: F.dequantize_4bit(packed, st), reps)
        print(f"dequantize_f32 {label} {t:.6f} s {moved / t / 1e9:.2f} GB/s")
        for m in (1, 512):
            if m == 512 and rows > 4096:
                continue
            x = torch.randn(m, cols)
            t = bench(lambda: x @ w.T, 3 if m == 512 and big else 20)
            name = "gemv" if m == 1 else "gemm512"
            print(f"{name}_f32_torch {label} {t:.6f} s {2 * m * n / t / 1e9:.2f} GFLOP/s")
    decode_step()
    src = torch.ones(64 << 20, dtype=torch.uint8)
    dst = torch.empty_like(src)
    t = bench(lambda: dst.copy_(src), 10)
    print(f"memcpy_torch_64MiB {t:.6f} s {2 * src.numel() / t / 1e9:.2f} GB/s")


if __name__ == "__main__":
    main()
