"""Encode or decode time beside other busy processes, by thread setting: what a user's
machine, rarely idle, sees. Each run is a fresh `selfvae-codec` process; the busy
processes are pure-Python loops, one core each.

    python benchmarks/threads_under_load.py --image photo.png --busy 0 1 2 --repeats 3
    python benchmarks/threads_under_load.py --decode --busy 0 1 --repeats 3 \
        --out benchmarks/results/threads_under_load_decode.csv

Encode (a 256x256 crop, mostly start-up): 1 and 2 threads with OpenMP's threads
spinning while they wait (ACTIVE, what torch does unless told otherwise) and
sleeping (PASSIVE), and the default thread count (the cores free at start,
`api.free_cores`) with the codec's default wait. --decode: the decode of a 768x512
photo coded by the model in every tile, at the default thread count, waiting
actively, passively, as the codec does by default (30,000 spins, then sleep) and as
GNU OpenMP does when nothing is set (300,000 spins).
Writes a CSV of the median seconds per setting and load. Stop other work first: a
busy process of yours counts as load too.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared/data/val/bsds500/101085.jpg"
DECODE_PHOTO = Path(__file__).resolve().parents[2] / "shared/data/train/wikipedia/001.png"
ENCODE_SETTINGS = {  # name: (--threads, the OpenMP variables set)
    "1 thread, active wait": ("1", {"OMP_WAIT_POLICY": "ACTIVE"}),
    "2 threads, active wait": ("2", {"OMP_WAIT_POLICY": "ACTIVE"}),
    "1 thread, passive wait": ("1", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2 threads, passive wait": ("2", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "default (free cores, the codec's default wait)": (None, {}),
}
DECODE_SETTINGS = {
    "free cores, active wait": (None, {"OMP_WAIT_POLICY": "ACTIVE"}),
    "free cores, passive wait": (None, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "free cores, 30,000 spins then sleep (the codec's default)": (None, {}),
    "free cores, 300,000 spins then sleep (GNU OpenMP's own default)": (None, {"GOMP_SPINCOUNT": "300000"}),
}
BUSY_LOOP = "while True: pass"


def run_seconds(command: list[str], threads: str | None, openmp: dict[str, str]) -> float:
    """Seconds of one `python -m selfvae_codec` command, with no OpenMP variable set
    but `openmp`'s."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OMP_", "GOMP_"))}
    env.update(openmp)
    command = [sys.executable, "-m", "selfvae_codec", *command, "-f"]
    command += ["--quiet"] + (["--threads", threads] if threads else [])
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--decode", action="store_true", help="time decoding a model-coded 768x512 photo instead")
    parser.add_argument("--crop", type=int, default=256, help="encode the top-left crop of this side")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy processes beside it")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/threads_under_load.csv"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        if args.decode:
            from selfvae_codec import Codec

            coded = workdir / "photo.svc"
            photo = np.asarray(Image.open(DECODE_PHOTO).convert("RGB"))
            coded.write_bytes(Codec("default").compress(photo, "full", classical_tiles=False))
            command, settings = ["decode", str(coded), "-o", str(workdir / "out.png")], DECODE_SETTINGS
        else:
            image = workdir / "crop.png"
            Image.open(args.image).convert("RGB").crop((0, 0, args.crop, args.crop)).save(image)
            command, settings = ["encode", str(image), "-o", str(workdir / "out.svc")], ENCODE_SETTINGS
        for busy in args.busy:
            loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
            try:
                time.sleep(1.0)  # let the loops reach the run queue
                for name, (threads, openmp) in settings.items():
                    times = [run_seconds(command, threads, openmp) for _ in range(args.repeats)]
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
