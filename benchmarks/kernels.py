"""The compiled kernels against torch alone, in one process: decode (and with --encode
also encode) times of one image, the two ways interleaved, every tile by the model.

    python benchmarks/kernels.py $DATA/train/wikipedia/001.png --threads 2 --repeat 6
    python benchmarks/kernels.py $DATA/train/wikipedia/001.png --mode rs2
"""

from __future__ import annotations

import argparse
import time

import torch
from common import load_rgb

from selfvae_codec.codec.api import Codec
from selfvae_codec.models import fixed_point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", default="full")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--encode", action="store_true", help="time the encoder too")
    args = parser.parse_args()
    if fixed_point.kernels is None:
        parser.error("the compiled kernels are not built (pip install -e . with a C compiler)")
    torch.set_num_threads(args.threads)
    codec = Codec("default" if args.mode == "full" else "lossy", threads=args.threads)
    image = load_rgb(args.image)
    options = {"classical_tiles": False} if args.mode == "full" else {}
    data = codec.compress(image, args.mode, **options)
    kernels = fixed_point.kernels
    times: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for name, module in (("kernels", kernels), ("torch", None)):
            fixed_point.kernels = module
            if args.encode:
                started = time.perf_counter()
                if codec.compress(image, args.mode, **options) != data:
                    raise SystemExit("the two ways wrote different files")
                times.setdefault(f"{name} encode", []).append(time.perf_counter() - started)
            started = time.perf_counter()
            codec.decompress(data)
            times.setdefault(f"{name} decode", []).append(time.perf_counter() - started)
    fixed_point.kernels = kernels
    print(f"{args.image}: {args.mode}, every tile by the model, {args.threads} threads, {args.repeat} runs each")
    for label, values in times.items():
        values.sort()
        runs = " ".join(f"{v:.2f}" for v in values)
        print(f"  {label}: best {values[0]:.2f} s, median {values[len(values) // 2]:.2f} s ({runs})")


if __name__ == "__main__":
    main()
