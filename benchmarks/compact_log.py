"""Turn a training run's log.jsonl into a compact CSV that can be kept in the
repository after the run folder is gone (benchmarks/results/runs/NAME.csv):
training rows keep step, loss, time, rate and speed; validation rows (`val`, `val_ema`
for the moving average of the weights, `val_NAME` for a second set) keep every term.

    python benchmarks/compact_log.py runs/clean -o benchmarks/results/runs/clean.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from common import read_run_log

TRAIN_COLUMNS = ["step", "total", "train_seconds", "lr", "patches_per_s"]
# Validation terms: the lossless ELBO terms, and a lossy model's rate and PSNR per quality.
TERM_PREFIXES = ("re_", "kl_", "bpp_q", "psnr_q")


def compact_rows(records: list[dict]) -> tuple[list[str], list[dict]]:
    kept = [r for r in records if r["kind"] == "train" or r["kind"].startswith("val")]
    terms = sorted({k for r in kept if r["kind"] != "train" for k in r if k.startswith(TERM_PREFIXES)})
    columns = ["kind", *TRAIN_COLUMNS, *terms]
    rows = []
    for record in kept:
        names = TRAIN_COLUMNS if record["kind"] == "train" else ["step", "total", *terms]
        row = {"kind": record["kind"]}
        for name in names:
            value = record.get(name)
            row[name] = "" if value is None else (value if isinstance(value, int) else f"{value:.8g}")
        rows.append(row)
    return columns, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder or its log.jsonl")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    columns, rows = compact_rows(read_run_log(Path(args.run)))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.output}: {len(rows)} rows")


if __name__ == "__main__":
    main()
