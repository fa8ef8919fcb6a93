#!/usr/bin/env python3
"""Checks that the Parquet files written by `prepare_data` open in pandas
(pyarrow engine) and hold the same rows as the CSV files beside them.

    /tmp/bioalign-ref/bin/python scripts/check/ctd_parquet_pandas.py OUT_DIR

Exits non-zero on any mismatch; prints one line per split.
"""

import sys

import pandas as pd

COLUMNS = ["GeneSymbol", "GeneID", "DiseaseName", "DiseaseID", "text", "PubMedIDs", "label"]


def main(out):
    ok = True
    for name in ["train", "test", "train_entity_heldout", "test_entity_heldout"]:
        pq = pd.read_parquet(f"{out}/{name}.parquet", engine="pyarrow")
        csv = pd.read_csv(f"{out}/{name}.csv", dtype=str, keep_default_na=False)
        same_cols = list(pq.columns) == COLUMNS == list(csv.columns)
        pm = pq["PubMedIDs"].map(lambda ids: "|".join(str(int(i)) for i in ids))
        gid = pq["GeneID"].map(lambda v: "" if pd.isna(v) else str(int(v)))
        equal = (
            same_cols
            and len(pq) == len(csv)
            and (pq["GeneSymbol"] == csv["GeneSymbol"]).all()
            and (gid == csv["GeneID"]).all()
            and (pq["DiseaseName"] == csv["DiseaseName"]).all()
            and (pq["DiseaseID"].fillna("") == csv["DiseaseID"]).all()
            and (pq["text"] == csv["text"]).all()
            and (pm == csv["PubMedIDs"]).all()
            and (pq["label"].astype(str) == csv["label"]).all()
        )
        ok &= bool(equal)
        print(f"{name}: {len(pq)} rows, dtypes {dict(pq.dtypes.astype(str))}, parquet == csv: {bool(equal)}")
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
