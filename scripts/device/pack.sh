#!/usr/bin/env bash
# Builds what scripts/device/cuda_checks.sh runs on a GPU machine, here, with --features cuda,
# and packs it into .devbin (stripped, xz) and .devdata (git-ignored; name both in the
# device tool's `carry`). Needs the float32 SmolLM2 folder that scripts/bench/train_peft.py
# makes (HF_DIR; only its config and tokenizer files travel), out/ctd/train.csv
# (prepare_data) and ../shared/datasets.
set -euo pipefail
cd "$(dirname "$0")/../.."
HF_DIR=${HF_DIR:-/tmp/bioalign-bench/smollm2-135m-instruct-f32}
TARGET=${CARGO_TARGET_DIR:-target}
cargo test --no-run --features cuda -p bioalign-quant -p bioalign-models --test cube --test device \
  --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["package_id"].split("#")[0].rsplit("/", 1)[-1], m["target"]["name"], m["executable"])
' >/tmp/devbin.list
cargo build --release --features cuda -p bioalign-examples \
  --example models_bench --example finetune --example evaluate --example reproduce \
  --example quant_device_bench
rm -rf .devbin .devdata
mkdir -p .devbin .devdata/smollm2-config
pack() { strip -o "/tmp/$2" "$1" && xz -T0 -6 -c "/tmp/$2" >".devbin/$2.xz" && rm "/tmp/$2"; }
while read -r pkg name exe; do
  case "$pkg:$name" in
    *quant*:cube) pack "$exe" cube ;;
    *models*:device) pack "$exe" models_device ;;
  esac
done </tmp/devbin.list
for e in models_bench finetune evaluate reproduce quant_device_bench; do pack "$TARGET/release/examples/$e" "$e"; done
for f in config.json tokenizer.json tokenizer_config.json generation_config.json; do
  cp "$HF_DIR/$f" .devdata/smollm2-config/
done
cp ../shared/datasets/seed-splits/test_pairs.csv .devdata/
cp ../shared/datasets/ctd/CTD_curated_genes_diseases.csv .devdata/
head -n 161 out/ctd/train.csv >.devdata/rows.csv
du -sh .devbin/* .devdata
