"""Plot a training run's curve (bits per dimension against training hours) from its
log (a run folder, its log.jsonl, or a compact log benchmarks/results/runs/*.csv):
training total (window averages), validation total of the raw weights and of their
moving average where the run kept one, and the validation terms.

    python benchmarks/plot_training.py benchmarks/results/runs/extend.csv -o benchmarks/results/training_curve.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from common import read_run_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log")
    parser.add_argument("-o", "--output", default="training_curve.png")
    args = parser.parse_args()
    records = read_run_log(Path(args.log))
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    val_average = [r for r in records if r["kind"] == "val_ema"]
    seconds_at_step = {r["step"]: r["train_seconds"] for r in train}

    def hours(step: int) -> float:
        known = [s for s in seconds_at_step if s <= step]
        return seconds_at_step[max(known)] / 3600 if known else 0.0

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([r["train_seconds"] / 3600 for r in train], [r["total"] for r in train], lw=0.8, label="training batches")
    if val:
        left.plot([hours(r["step"]) for r in val], [r["total"] for r in val], "o-", label="validation")
    if val_average:
        label = "validation, moving average of the weights"
        left.plot([hours(r["step"]) for r in val_average], [r["total"] for r in val_average], "s-", label=label)
    left.set_xlabel("training hours as logged (2-core CPU)")
    left.set_ylabel("negative ELBO (bits per dimension)")
    left.set_ylim(top=min(8.0, max(r["total"] for r in train)))
    left.grid(alpha=0.3)
    left.legend()
    if val:
        for term in [k for k in val[0] if k.startswith(("re_", "kl_"))]:
            right.plot([hours(r["step"]) for r in val], [r[term] for r in val], "o-", ms=3, label=term)
        right.set_xlabel("training hours")
        right.set_ylabel("validation term (bits per dimension)")
        right.set_yscale("log")
        right.grid(alpha=0.3)
        right.legend(fontsize=8)
    fig.tight_layout()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
