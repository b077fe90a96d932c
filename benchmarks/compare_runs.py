"""Compare training runs by their validation bpd at the same optimiser steps (same
batches, crops and schedule, so the step is the fair axis). Speed is not read from
the logs, whose thread counts and compile settings differ: measure it with
benchmarks/train_throughput.py.

    python benchmarks/compare_runs.py K=3:benchmarks/results/runs/k3.csv K=2:runs/k2 \\
        --title "K=3 against K=2" -o benchmarks/results/compare_levels.md

Each argument is LABEL:LOG, where LOG is a run folder (its log.jsonl) or a compact
log (benchmarks/results/runs/*.csv), or LABEL:LOG:KIND for other validation lines:
`ema` for the run's moving average of the weights (`val_ema` lines), or any kind the
log holds, such as `val_classic` for a second validation set (--extra-val-dir). Prints a markdown
table; -o also writes it, with its title and command, to a file that
benchmarks/report.py copies into the README (every benchmarks/results/compare_*.md).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from common import read_run_log


def validation_by_step(log: Path, kind: str = "val") -> dict[int, dict]:
    return {r["step"]: r for r in read_run_log(log) if r["kind"] == kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL:LOG or LABEL:LOG:KIND (ema, val_classic, ...)")
    parser.add_argument("-o", "--output", default=None, help="also write the table here, under --title")
    parser.add_argument("--title", default="Validation bpd at matched steps")
    parser.add_argument("--since", type=int, default=0, help="only steps from this one on (after a branch point)")
    parser.add_argument("--until", type=int, default=None, help="only steps up to this one")
    args = parser.parse_args()
    runs = {}
    for item in args.runs:
        label, _, folder = item.partition(":")
        folder, _, weights = folder.partition(":")
        if not folder:
            raise SystemExit(f"expected LABEL:LOG or LABEL:LOG:KIND, got {item!r}")
        kind = {"": "val", "ema": "val_ema"}.get(weights, weights)
        runs[label] = validation_by_step(Path(folder), kind)
    steps = sorted(
        step
        for step in set.intersection(*(set(val) for val in runs.values()))
        if args.since <= step <= (args.until or step)
    )
    if not steps:
        raise SystemExit("the runs share no validated step")
    lines = [
        "| step | " + " | ".join(runs) + " |",
        "| --- | " + " | ".join("---" for _ in runs) + " |",
    ]
    for step in steps:
        lines.append(f"| {step} | " + " | ".join(f"{val[step]['total']:.4f}" for val in runs.values()) + " |")
    table = "\n".join(lines)
    print(table)
    if args.output:
        command = "python benchmarks/compare_runs.py " + " ".join(shlex.quote(run) for run in args.runs)
        if args.since:
            command += f" --since {args.since}"
        if args.until:
            command += f" --until {args.until}"
        Path(args.output).write_text(f"#### {args.title}\n\n`{command}`:\n\n{table}\n")


if __name__ == "__main__":
    main()
