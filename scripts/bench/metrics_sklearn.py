#!/usr/bin/env python3
"""The reference study's metric code (scikit-learn), timed on the data that
benches/metrics.rs builds, for a side-by-side comparison with bioalign-metrics.

    /tmp/bioalign-ref/bin/python scripts/bench/metrics_sklearn.py [--repeats 5]

Timed, as the reference notebooks computed them:
- KG separation at n = 13,689, d = 4,096: cosine_similarity() of each class's
  embeddings (full matrix), .mean(), absolute difference.
- The per-model suite at n = 500, d = 4,096: that KG separation;
  LogisticRegression(max_iter=1000) on train_test_split(test_size=0.3,
  random_state=42), accuracy on the 30%; TSNE(n_components=2,
  random_state=42) of the first 400 rows and silhouette_score of the labels on it.
Prints the best and median of --repeats runs, and the values, so the Rust
figures can be checked against them.
"""

import argparse
import os
import statistics
import time

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.metrics import accuracy_score, silhouette_score
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.model_selection import train_test_split

M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(x):
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def synthetic(n, d):
    """Identical to benches/metrics.rs::synthetic."""
    y = (splitmix64(np.arange(n, dtype=np.uint64) + np.uint64(1_000_000_007)) >> np.uint64(63)).astype(np.int64)
    x = np.empty((n, d), dtype=np.float32)
    cols = np.arange(d, dtype=np.uint64)
    step = 512
    for s in range(0, n, step):
        rows = np.arange(s, min(n, s + step), dtype=np.uint64)
        idx = rows[:, None] * np.uint64(d) + cols[None, :]
        u = (splitmix64(idx) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        shift = np.where(cols[None, :] < 64, 0.05 * y[s : s + len(rows), None], 0.0)
        x[s : s + len(rows)] = (u - 0.5 + 0.1 + shift).astype(np.float32)
    return x, y


def kg_separation(x, y):
    t = cosine_similarity(x[y == 1]).mean()
    f = cosine_similarity(x[y == 0]).mean()
    return abs(float(t) - float(f))


def probe(x, y):
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=42)
    clf = LogisticRegression(max_iter=1000)
    clf.fit(xtr, ytr)
    return accuracy_score(yte, clf.predict(xte))


def tsne_silhouette(x, y):
    emb = TSNE(n_components=2, random_state=42).fit_transform(x[:400])
    return silhouette_score(emb, y[:400])


def timed(f, repeats):
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = f()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), value


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"scikit-learn {sklearn.__version__}, numpy {np.__version__}, cpus {os.cpu_count()}")

    x, y = synthetic(13_689, 4_096)
    best, med, v = timed(lambda: kg_separation(x, y), args.repeats)
    print(f"kg_separation 13689x4096: best {best*1e3:.1f} ms, median {med*1e3:.1f} ms, value {v:.9f}")
    del x

    x, y = synthetic(500, 4_096)
    for name, f in (
        ("  kg_separation 500x4096", lambda: kg_separation(x, y)),
        ("  probe 500x4096", lambda: probe(x, y)),
        ("  tsne+silhouette 400x4096", lambda: tsne_silhouette(x, y)),
    ):
        best, med, v = timed(f, args.repeats)
        print(f"{name}: best {best*1e3:.1f} ms, median {med*1e3:.1f} ms, value {v:.6f}")

    def suite():
        return kg_separation(x, y), probe(x, y), tsne_silhouette(x, y)

    best, med, v = timed(suite, args.repeats)
    print(f"suite_reference 500x4096: best {best*1e3:.1f} ms, median {med*1e3:.1f} ms, values {v}")


if __name__ == "__main__":
    main()
