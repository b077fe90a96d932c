"""Where the time of one encode and decode goes (`full` by default): per section (the level being
coded, networks and probability tables and ANS together) and per kind of work
(cProfile: building probability tables, ANS coding, the convolutions' arithmetic, and
the rest of the networks and the code).
Every tile is coded by the model (no PNG / WebP tiles), at the given thread count.

    python benchmarks/speed_profile.py $DATA/train/wikipedia/001.png --threads 2
    python benchmarks/speed_profile.py $DATA/train/wikipedia/001.png --threads 2 --model default-float
    python benchmarks/speed_profile.py $DATA/train/wikipedia/001.png --threads 2 --mode rs2 --model lossy
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np
import torch
from common import load_rgb

from selfvae_codec.bitstream import unpack
from selfvae_codec.codec.api import Codec
from selfvae_codec.models import fixed_point

# the kind of work -> (substrings of) the cProfile function names doing it, outermost
KINDS = {
    "probability tables": (
        "channel_probabilities",
        "channel_table",
        "_check_table",
        "parameters_of",
        "bin_table",  # and value_in_bin_table
    ),
    "ANS coding": ("'encode_reverse' of 'builtins.AnsCoder'", "'decode' of 'builtins.AnsCoder'"),
    # the convolutions' arithmetic itself: an exact model's matrix products per tap, a
    # float model's conv2d
    "convolution arithmetic": ("'addmm_' of", "torch.conv2d", "torch.conv_transpose2d"),
}


def per_section(
    codec: Codec, image: np.ndarray, data: bytes, direction: str, coding: dict
) -> tuple[float, dict[str, float]]:
    stamps = [time.perf_counter()]

    def mark(done: int, total: int) -> None:
        stamps.append(time.perf_counter())

    if direction == "encode":
        codec.encode(image, progress=mark, **coding)
    else:
        codec.decompress(data, progress=mark)
    seconds: dict[str, float] = {}
    for section, start, stop in zip(unpack(data).sections, stamps[:-1], stamps[1:], strict=True):
        seconds[section.label] = seconds.get(section.label, 0.0) + stop - start
    return stamps[-1] - stamps[0], seconds


def per_kind(codec: Codec, image: np.ndarray, data: bytes, direction: str, coding: dict) -> dict[str, float]:
    profile = cProfile.Profile()
    profile.enable()
    if direction == "encode":
        codec.encode(image, **coding)
    else:
        codec.decompress(data)
    profile.disable()
    stats = pstats.Stats(profile).stats
    total = sum(entry[2] for entry in stats.values())  # internal times add up to the whole
    kinds = {}
    for kind, names in KINDS.items():
        kinds[kind] = sum(entry[3] for (_, _, name), entry in stats.items() if any(n in name for n in names))
    kinds["the rest"] = total - sum(kinds.values())
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="pretrained name or .safetensors path (default: default)")
    parser.add_argument("--mode", default="full")
    parser.add_argument("--quality", type=int, default=None, help="a lossy model's (default: its default)")
    parser.add_argument(
        "--torch-kernels",
        action="store_true",
        help="the exact models' arithmetic by torch alone, not the compiled kernels",
    )
    args = parser.parse_args()
    if args.torch_kernels:
        fixed_point.kernels = None  # as SELFVAE_CODEC_TORCH_KERNELS=1 does
    torch.set_num_threads(args.threads)
    codec = Codec(args.model, threads=args.threads)
    image = load_rgb(args.image)
    coding = {"mode": args.mode, "quality": codec.check_quality(args.mode, args.quality), "classical_tiles": False}
    data = codec.compress(image, **coding)
    quality = "" if coding["quality"] is None else f" at quality {coding['quality']}"
    kernels = "torch" if fixed_point.kernels is None else "the compiled kernels"
    print(
        f"{args.image}: {image.shape[1]}x{image.shape[0]}, {args.mode}{quality}, the model "
        f"({args.model or 'default'}) in every tile, {args.threads} threads, exact arithmetic by {kernels}"
    )
    for direction in ("encode", "decode"):
        total, sections = per_section(codec, image, data, direction, coding)
        kinds = per_kind(codec, image, data, direction, coding)
        print(f"  {direction} {total:.2f} s")
        print("    per section: " + ", ".join(f"{label} {seconds:.2f} s" for label, seconds in sections.items()))
        # A second run under cProfile, whose overhead makes its total larger.
        profiled = sum(kinds.values())
        print(
            f"    per kind (a run under cProfile, {profiled:.2f} s in all): "
            + ", ".join(f"{kind} {seconds:.2f} s" for kind, seconds in kinds.items())
        )


if __name__ == "__main__":
    main()
