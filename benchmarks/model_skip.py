"""What deciding early costs and saves: `full` files of every image in a folder,
encoded with the exact model run on every tile (then the smallest of it, PNG and
WebP kept) and with the early decision (the exact model skipped where the float
twin's estimate of its bits exceeds the classical file's: codec/tile_encoding.py).

    python benchmarks/model_skip.py ../shared/data/val/classic --threads 2 \
        --out benchmarks/results/model_skip/classic.csv

Prints the bits per subpixel and encode seconds of both, and writes one row per image.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import list_images, load_rgb, write_csv

from selfvae_codec.bitstream import unpack
from selfvae_codec.codec import tile_encoding
from selfvae_codec.codec.api import Codec


def encode(codec: Codec, image: np.ndarray, skip: bool) -> tuple[bytes, float]:
    saved = tile_encoding.SKIP_MARGIN, tile_encoding.SKIP_MARGIN_ADAPTED
    if not skip:
        tile_encoding.SKIP_MARGIN = tile_encoding.SKIP_MARGIN_ADAPTED = float("inf")
    try:
        started = time.perf_counter()
        data = codec.compress(image, "full")
        return data, time.perf_counter() - started
    finally:
        tile_encoding.SKIP_MARGIN, tile_encoding.SKIP_MARGIN_ADAPTED = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default=None, help="CSV of the per-image results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = Codec(threads=args.threads)
    rows = []
    for path in list_images(args.folder, args.limit):
        image = load_rgb(path)
        subpixels = image.size
        row = {"image": path.name}
        for label, skip in (("every_tile", False), ("early", True)):
            data, seconds = encode(codec, image, skip)
            header = unpack(data)
            row[f"{label}_bpsp"] = 8 * len(data) / subpixels
            row[f"{label}_encode_s"] = seconds
            row[f"{label}_model_tiles"] = sum(1 for s in header.sections if s.kind == "u")
        rows.append(row)
        print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    for label in ("every_tile", "early"):
        bpsp = np.mean([r[f"{label}_bpsp"] for r in rows])
        seconds = np.sum([r[f"{label}_encode_s"] for r in rows])
        tiles = sum(r[f"{label}_model_tiles"] for r in rows)
        print(f"{label}: mean {bpsp:.4f} bits/subpixel, encode {seconds:.1f} s in all, {tiles} tiles by the model")
    if args.out:
        write_csv(Path(args.out), rows)


if __name__ == "__main__":
    main()
