#!/usr/bin/env bash
# The CUDA checks, run on a GPU machine in one go (the binaries built elsewhere):
#   scripts/device/pack.sh            # here: builds with --features cuda, fills .devbin / .devdata
#   bash scripts/device/cuda_checks.sh   # there, from the repository root; writes $OUT/log
# 1. bioalign-quant's CubeCL tests (tests/cube.rs) and bioalign-models' device tests
#    (tests/device.rs: tiny Llama / Mistral / Phi-3 against transformers, NF4 against the CPU)
#    on burn-cuda;
# 2. quant_device_bench: NF4 dequantization and products on the GPU beside f32 ones
#    (ours and torch's, scripts/bench/quant_torch_device.py);
# 2b. models_bench on burn-cuda beside transformers on the same GPU, on SmolLM2-135M-shaped
#    random weights (the real file is larger than what travels to that machine);
# 3. evaluate on the CPU and on CUDA (same rows, same model), compared row by row;
# 4. finetune on CUDA (dense and NF4 base) beside PyTorch + PEFT on the same GPU;
# 5. reproduce end to end on CUDA (data preparation from the CTD file, base evaluation,
#    two QLoRA fine-tunings, fine-tuned evaluation, report) on a small configuration.
# Every step has its own time limit, so one hang does not eat the machine's time.
# STEPS="tests quant bench evaluate finetune reproduce" picks parts (default: all).
set -uo pipefail
OUT=${OUT:-/tmp/cuda-checks}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log") 2>&1
t0=$SECONDS
step() { echo; echo "== [$((SECONDS - t0)) s] $*"; }
lim() { local s=$1; shift; timeout --kill-after=5 "$s" "$@"; echo "-- rc $? ($*)" | cut -c1-200; }
want() { [ "${STEPS:-all}" = all ] || [[ " $STEPS " == *" $1 "* ]]; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nvcc --version 2>/dev/null | tail -1
nproc
# cudarc loads libcuda and libnvrtc at run time: put every folder holding them on the path.
libdirs=$(find /usr/local /usr/lib /opt -name 'libnvrtc.so*' -o -name 'libcuda.so*' 2>/dev/null \
  | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:-}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
# The test binaries name their fixtures by the absolute path they were built at.
if [ ! -e /work/main ]; then mkdir -p /work && ln -s "$PWD" /work/main; fi
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
export RUST_BACKTRACE=1
BIN=/tmp/devbin
mkdir -p $BIN
for f in .devbin/*.xz; do
  [ -e "$f" ] || continue
  xz -dc -T0 "$f" >"$BIN/$(basename "$f" .xz)"
done
chmod +x $BIN/*
ls -la $BIN

if want tests; then
step "bioalign-quant tests/cube.rs on burn-cuda"
lim 120 $BIN/cube --test-threads 1 --nocapture
step "bioalign-models tests/device.rs on burn-cuda"
lim 180 $BIN/models_device --test-threads 1 --nocapture
fi

if want quant; then
step "quant_device_bench on burn-cuda, then torch's f32 products on the same GPU"
lim 120 $BIN/quant_device_bench --device cuda --repeats 50
lim 60 python3 scripts/bench/quant_torch_device.py --repeats 50
fi

step "SmolLM2-135M-shaped random weights"
M=/tmp/smollm2-random
lim 60 python3 scripts/bench/random_weights.py --like .devdata/smollm2-config --out $M
ls -la $M

if want bench; then
step "models_bench, burn-cuda, dense f32"
lim 90 $BIN/models_bench --model $M --device cuda --repeats 10
step "transformers, CUDA, f32"
lim 60 python3 scripts/bench/models_transformers.py --model $M --device cuda --repeats 10
step "models_bench, burn-cuda, NF4 (--load-in-4bit)"
lim 90 $BIN/models_bench --model $M --device cuda --repeats 10 --load-in-4bit
fi

if want evaluate; then
step "evaluate: CPU and CUDA on the same 96 rows (NF4 base)"
for d in cpu cuda; do
  lim 120 $BIN/evaluate --model $M --load-in-4bit --data .devdata/test_pairs.csv --sample 96 \
    --batch-size 32 --resamples 0 --no-plots --device $d --out /tmp/eval-$d
done
lim 60 $BIN/evaluate --model $M --load-in-4bit --data .devdata/test_pairs.csv --sample 16 \
  --resamples 0 --no-plots --device cuda --out /tmp/eval-small
grep -o '"tsne_perplexity": [0-9.]*' /tmp/eval-small/metrics.json
python3 - <<'PY'
import pandas as pd
a = pd.read_parquet("/tmp/eval-cpu/predictions.parquet")
b = pd.read_parquet("/tmp/eval-cuda/predictions.parquet")
print(a.columns.tolist())
num = [c for c in a.columns if a[c].dtype.kind == "f"]
for c in num:
    print(f"{c}: max |cpu - cuda| = {(a[c] - b[c]).abs().max():.3e}")
for c in a.columns:
    if a[c].dtype.kind not in "f":
        print(f"{c}: equal on {(a[c] == b[c]).sum()}/{len(a)} rows")
PY
fi

if want finetune; then
step "finetune on burn-cuda: 20 steps, batch 2 x 4, r 16, dense f32 base, AdamW"
lim 150 $BIN/finetune --model $M --data .devdata/rows.csv --out /tmp/ft-dense --max-steps 20 \
  --optim adamw --eval-rows 0 --eval-every 0 --checkpoint-every 0 --device cuda
tail -3 /tmp/ft-dense/train_log.csv
step "PyTorch + PEFT on CUDA: the same (dense f32 base, torch AdamW)"
lim 90 python3 scripts/bench/train_peft.py --hf-dir $M --data .devdata/rows.csv --steps 20 \
  --base f32 --optim adamw --device cuda
step "finetune on burn-cuda: NF4 base (--load-in-4bit), 8-bit AdamW"
lim 150 $BIN/finetune --model $M --data .devdata/rows.csv --out /tmp/ft-nf4 --max-steps 20 \
  --load-in-4bit --eval-rows 0 --eval-every 0 --checkpoint-every 0 --device cuda
tail -3 /tmp/ft-nf4/train_log.csv
cp /tmp/ft-dense/train_log.csv "$OUT/train_log_dense.csv" 2>/dev/null
cp /tmp/ft-nf4/train_log.csv "$OUT/train_log_nf4.csv" 2>/dev/null
fi
if want reproduce; then
step "reproduce on burn-cuda: 20 steps per fine-tuning, 96 rows per evaluation"
lim 360 $BIN/reproduce --model $M --ctd .devdata/CTD_curated_genes_diseases.csv --steps 20 \
  --sample 96 --resamples 100 --silhouette-permutations 3 --eval-rows 16 --device cuda \
  --out /tmp/repro
ls -la /tmp/repro
for f in report.md report.json; do cp "/tmp/repro/$f" "$OUT/" 2>/dev/null; done
sed -n 1,60p /tmp/repro/report.md
fi
step "done"
