"""Encode time beside other busy processes, by thread setting: what a user's machine,
rarely idle, sees. Each encode is a fresh `selfvae-codec encode` process; the busy
processes are pure-Python loops, one core each.

    python benchmarks/threads_under_load.py --image photo.png --busy 0 1 2 --repeats 3

Settings: 1 and 2 threads with OpenMP's threads spinning while they wait (ACTIVE,
what torch does unless told otherwise) and sleeping (PASSIVE, the codec's default
since it is set before torch loads), and the default thread count (the cores free at
start, `api.free_cores`). Writes a CSV of the median seconds per setting and load.
Stop other work first: a busy process of yours counts as load too.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared/data/val/bsds500/101085.jpg"
SETTINGS = {  # name: (--threads, OMP_WAIT_POLICY)
    "1 thread, active wait": ("1", "ACTIVE"),
    "2 threads, active wait": ("2", "ACTIVE"),
    "1 thread, passive wait": ("1", "PASSIVE"),
    "2 threads, passive wait": ("2", "PASSIVE"),
    "default (free cores, passive wait)": (None, None),
}
BUSY_LOOP = "while True: pass"


def encode_seconds(image: Path, threads: str | None, wait_policy: str | None, workdir: Path) -> float:
    import os

    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("OMP_NUM_THREADS", None)
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    command = [sys.executable, "-m", "selfvae_codec", "encode", str(image), "-o", str(workdir / "out.svc"), "-f"]
    command += ["--quiet"] + (["--threads", threads] if threads else [])
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--crop", type=int, default=256, help="encode the top-left crop of this side")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy processes beside it")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/threads_under_load.csv"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        image = workdir / "crop.png"
        Image.open(args.image).convert("RGB").crop((0, 0, args.crop, args.crop)).save(image)
        for busy in args.busy:
            loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
            try:
                time.sleep(1.0)  # let the loops reach the run queue
                for name, (threads, policy) in SETTINGS.items():
                    times = [encode_seconds(image, threads, policy, workdir) for _ in range(args.repeats)]
                    median = f"{statistics.median(times):.2f}"
                    rows.append({"busy_processes": busy, "setting": name, "median_s": median})
                    print(f"{busy} busy, {name}: {rows[-1]['median_s']} s ({', '.join(f'{t:.2f}' for t in times)})")
            finally:
                for loop in loops:
                    loop.kill()
                    loop.wait()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["busy_processes", "setting", "median_s"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
