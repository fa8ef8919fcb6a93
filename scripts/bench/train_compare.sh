#!/usr/bin/env bash
# Training throughput and peak memory: bioalign's `finetune` example against transformers +
# PEFT + bitsandbytes (scripts/bench/train_peft.py), one after the other on the same machine,
# same model (SmolLM2-135M-Instruct GGUF), same rows, template (Alpaca, response-only loss),
# batch 2 x grad-accum 4, r 16 / alpha 32 on the 7 projections, NF4 base, 8-bit AdamW,
# STEPS optimizer steps, THREADS threads (ours: THREADS micro-batch workers, rayon pool of
# THREADS).
#
#   bash scripts/bench/train_compare.sh            # STEPS=20 THREADS=2
#   STEPS=10 bash scripts/bench/train_compare.sh
#   SKIP_BUILD=1 bash scripts/bench/train_compare.sh   # use the finetune binary already built
#   OURS_FLAGS=--recompute-mlp-input bash scripts/bench/train_compare.sh   # extra finetune flags
#
# The rows: the first STEPS*8 rows of out/ctd/train.csv (prepare_data's output), so each side
# trains on each row exactly once (in its own seeded order). tokens/s = real tokens trained on
# / seconds in training steps (train_log.csv for ours, the same sum for PyTorch); peak RSS =
# the process's maximum resident set size measured by /usr/bin/time for both; the processes'
# CPU time (user + sys, loading included) is printed too, a figure less sensitive than wall
# time to other load on the machine, and the median of the per-step tokens/s. On a shared
# machine run it when nothing else is busy: with THREADS=2 torch's OpenMP threads slow down
# by 10-40x on any step where another process holds a core (seen here), so compare the
# per-step figures (stderr for PyTorch, train_log.csv for ours) before trusting the ratios.
# Needs: cargo, /tmp/bioalign-ref/bin/python (torch, transformers, peft, bitsandbytes).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${STEPS:-20}
THREADS=${THREADS:-2}
PY=${PY:-/tmp/bioalign-ref/bin/python}
MODEL=${MODEL:-data/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${DATA:-out/ctd/train.csv}
WORK=${WORK:-/tmp/bioalign-train-compare}
HF_DIR=${HF_DIR:-/tmp/bioalign-bench/smollm2-135m-instruct-f32}
mkdir -p "$WORK"
ROWS="$WORK/rows.csv"
head -n $((STEPS * 8 + 1)) "$DATA" >"$ROWS"

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "== build (release)" >&2
  nice cargo build --release -p bioalign-examples --example finetune >&2
fi
TARGET=${CARGO_TARGET_DIR:-target}
# The float32 Hugging Face copy PyTorch loads (made outside the measured process).
[ -d "$HF_DIR" ] || "$PY" scripts/bench/train_peft.py --convert-only --model "$MODEL" --hf-dir "$HF_DIR" >&2

echo "== bioalign finetune" >&2
rm -rf "$WORK/ours"
RAYON_NUM_THREADS=$THREADS /usr/bin/time -f "%M %U %S" -o "$WORK/ours.time" \
  "$TARGET/release/examples/finetune" --model "$MODEL" --data "$ROWS" --out "$WORK/ours" \
  --max-steps "$STEPS" --load-in-4bit --eval-rows 0 --eval-every 0 --checkpoint-every 0 \
  --workers "$THREADS" ${OURS_FLAGS:-} >&2

echo "== transformers + PEFT + bitsandbytes" >&2
OMP_NUM_THREADS=$THREADS /usr/bin/time -f "%M %U %S" -o "$WORK/torch.time" \
  "$PY" scripts/bench/train_peft.py --model "$MODEL" --hf-dir "$HF_DIR" --data "$ROWS" \
  --steps "$STEPS" --threads "$THREADS" >"$WORK/torch.json"

"$PY" - "$WORK" <<'EOF'
import csv, json, sys
w = sys.argv[1]
def timing(name):
    rss, user, sys_ = open(f"{w}/{name}.time").read().split()[-3:]
    return int(rss) * 1024, float(user) + float(sys_)
rows = list(csv.DictReader(open(f"{w}/ours/train_log.csv")))
tok = sum(float(r["tokens"]) for r in rows)
sec = sum(float(r["tokens"]) / float(r["tokens_per_s"]) for r in rows)
ours_tps = tok / sec
ours_rss, ours_cpu = timing("ours")
t = json.loads(open(f"{w}/torch.json").read().strip().splitlines()[-1])
torch_rss, torch_cpu = timing("torch")
mib = 1 << 20
med = lambda v: sorted(v)[len(v) // 2]
ours_med = med([float(r["tokens_per_s"]) for r in rows])
torch_med = med(t["step_tokens_per_s"])
print(f"steps {len(rows)} (ours) / {t['steps']} (PyTorch), threads {t['threads']}, loss {t['loss']}-only")
print(f"ours:    {ours_tps:8.1f} tokens/s ({tok:.0f} tokens in {sec:.1f} s), peak RSS {ours_rss / mib:7.1f} MiB, "
      f"process CPU time {ours_cpu:.1f} s")
print(f"PyTorch: {t['tokens_per_s']:8.1f} tokens/s ({t['tokens']} tokens in {t['train_s']:.1f} s), "
      f"peak RSS {torch_rss / mib:7.1f} MiB, process CPU time {torch_cpu:.1f} s  "
      f"[{t['stack']}; {t['base']}; {t['optimizer']}]")
print(f"ratios:  tokens/s ours/PyTorch = {ours_tps / t['tokens_per_s']:.2f}x (target >= 2); "
      f"peak RSS ours/PyTorch = {ours_rss / torch_rss:.2f} (target <= 0.25); "
      f"CPU seconds PyTorch/ours (whole process, load included) = {torch_cpu / ours_cpu:.2f}x")
print(f"median step tokens/s (robust to a few steps slowed by other load): ours {ours_med:.1f}, "
      f"PyTorch {torch_med:.1f}, ours/PyTorch = {ours_med / torch_med:.2f}x")
EOF
