#!/usr/bin/env python3
"""The reference's CTD preparation steps in pandas, timed, for side-by-side
comparison with the Rust builder (docs/benchmarks-ctd.md).

Run with the reference venv (pandas, numpy, scikit-learn, pyarrow):

    /tmp/bioalign-ref/bin/python scripts/bench/ctd_pandas.py build  --ctd CTD_curated_genes_diseases.csv --out /tmp/ctd_pd
    /tmp/bioalign-ref/bin/python scripts/bench/ctd_pandas.py stream --ctd /tmp/ctd_full_5m.csv [--chunksize 1000000]

`build` follows SPEC.md section 1 (seed 42, numpy default_rng): trim, drop
missing names, evidence filter, distinct positives, uniform negatives rejected
against the positives' texts, concatenate, shuffle, 80/20 stratified split
(scikit-learn), 10% entity hold-out; then writes the four splits as CSV and
Parquet. `stream` reads a CTD file with pandas' C parser (whole file, or in
chunks for bounded memory) and reports MB/s and peak RSS.
"""

import argparse
import os
import resource
import sys
import time

import numpy as np
import pandas as pd


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fields(path):
    """Column names from the comment line after '# Fields:'."""
    opener = open
    if path.endswith(".gz"):
        import gzip

        opener = gzip.open
    with opener(path, "rt", encoding="utf-8") as f:
        after = False
        for line in f:
            if not line.startswith("#"):
                break
            body = line[1:].strip()
            if after and body:
                return [c.strip() for c in body.split(",")]
            if body.startswith("Fields:"):
                after = True
                rest = body[len("Fields:"):].strip()
                if rest:
                    return [c.strip() for c in rest.split(",")]
    sys.exit(f"{path}: no '# Fields:' header")


def read(path, chunksize=None):
    return pd.read_csv(
        path,
        comment="#",
        header=None,
        names=fields(path),
        dtype=str,
        keep_default_na=False,
        chunksize=chunksize,
    )


def build(args):
    t0 = time.perf_counter()
    df = read(args.ctd)
    t_read = time.perf_counter()

    df["GeneSymbol"] = df["GeneSymbol"].str.strip()
    df["DiseaseName"] = df["DiseaseName"].str.strip()
    df = df[(df["GeneSymbol"] != "") & (df["DiseaseName"] != "")]
    ev = df["DirectEvidence"].str.contains("marker/mechanism|therapeutic", case=False, regex=True)
    pos = df[ev].copy()
    pos["text"] = pos["GeneSymbol"] + " is associated with " + pos["DiseaseName"]
    pos = pos.drop_duplicates(subset="text")
    pos["label"] = 1

    rng = np.random.default_rng(args.seed)
    genes = pos["GeneSymbol"].unique()
    diseases = pos["DiseaseName"].unique()
    positive_texts = set(pos["text"])
    neg_texts, neg_genes, neg_dis = [], [], []
    seen = set()
    n = len(pos)
    while len(neg_texts) < n:
        need = n - len(neg_texts)
        gi = rng.integers(0, len(genes), size=need * 2)
        di = rng.integers(0, len(diseases), size=need * 2)
        for g, d in zip(genes[gi], diseases[di]):
            t = f"{g} is associated with {d}"
            if t in positive_texts or t in seen:
                continue
            seen.add(t)
            neg_texts.append(t)
            neg_genes.append(g)
            neg_dis.append(d)
            if len(neg_texts) == n:
                break
    neg = pd.DataFrame({"GeneSymbol": neg_genes, "DiseaseName": neg_dis, "text": neg_texts, "PubMedIDs": "", "label": 0})
    data = pd.concat([pos[["GeneSymbol", "GeneID", "DiseaseName", "DiseaseID", "text", "PubMedIDs", "label"]], neg])
    data = data.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)

    from sklearn.model_selection import train_test_split

    train, test = train_test_split(data, test_size=0.2, stratify=data["label"], random_state=args.seed)
    hg = set(rng.choice(genes, size=int(0.1 * len(genes)), replace=False))
    hd = set(rng.choice(diseases, size=int(0.1 * len(diseases)), replace=False))
    touch = data["GeneSymbol"].isin(hg) | data["DiseaseName"].isin(hd)
    train_e, test_e = data[~touch], data[touch]
    t_build = time.perf_counter()

    os.makedirs(args.out, exist_ok=True)
    for name, part in [("train", train), ("test", test), ("train_entity_heldout", train_e), ("test_entity_heldout", test_e)]:
        part.to_csv(os.path.join(args.out, f"{name}.csv"), index=False)
        part.to_parquet(os.path.join(args.out, f"{name}.parquet"), index=False)
    t_write = time.perf_counter()

    size = os.path.getsize(args.ctd)
    print(
        f"pandas build: read {t_read - t0:.3f} s, steps {t_build - t_read:.3f} s, write {t_write - t_build:.3f} s, "
        f"total {t_write - t0:.3f} s ({size / 1e6 / (t_write - t0):.1f} MB/s); "
        f"{len(pos)} positives, {len(neg)} negatives, split {len(train)}/{len(test)}, entity {len(train_e)}/{len(test_e)}; "
        f"peak RSS {peak_rss_mib():.1f} MiB"
    )


def stream(args):
    t0 = time.perf_counter()
    rows = 0
    if args.chunksize:
        for chunk in read(args.ctd, chunksize=args.chunksize):
            rows += len(chunk)
    else:
        rows = len(read(args.ctd))
    dt = time.perf_counter() - t0
    size = os.path.getsize(args.ctd)
    mode = f"chunks of {args.chunksize}" if args.chunksize else "whole file"
    print(
        f"pandas read ({mode}): {size / 1e6:.1f} MB in {dt:.3f} s = {size / 1e6 / dt:.0f} MB/s; "
        f"{rows} rows; peak RSS {peak_rss_mib():.1f} MiB"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--ctd", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--seed", type=int, default=42)
    s = sub.add_parser("stream")
    s.add_argument("--ctd", required=True)
    s.add_argument("--chunksize", type=int, default=None)
    args = ap.parse_args()
    build(args) if args.cmd == "build" else stream(args)


if __name__ == "__main__":
    main()
