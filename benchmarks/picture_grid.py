"""One photo in every mode and quality, beside JPEG at the same rate: a picture grid.

Row 1: the original crop and `full` (lossless). Then one row per lossy mode (rs2,
rs1, conditional) with a column per quality setting of the lossy model, and a row of
JPEG at the largest quality that does not exceed each rs2 file's rate. Every panel is
labelled with its real bpp and PSNR; every selfvae file is decoded and checked against
the encoder's reconstruction.

    python benchmarks/picture_grid.py ../shared/data/val/classic/waterloo-tulips.png --crop 256 \\
        --out benchmarks/results/rd/picture_grid.webp
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from common import load_lossy_codec, load_rgb, selfvae_round_trip
from conditional_ceiling import jpeg_at_rate
from PIL import Image

from selfvae_codec.codec.api import Codec
from selfvae_codec.metrics import psnr


def center_crop(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return image[top : top + side, left : left + side]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image")
    parser.add_argument("--crop", type=int, default=256, help="side of the centre crop shown")
    parser.add_argument("--model", default=None, help="lossless model (full)")
    parser.add_argument(
        "--lossy-model", default=None, help="lossy model (rs2, rs1, conditional); default: the shipped one"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/rd/picture_grid.webp", help="a .webp (lossless) or .png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = center_crop(load_rgb(Path(args.image)), args.crop)
    pixels = image.shape[0] * image.shape[1]
    lossless = Codec(args.model, threads=args.threads)
    lossy = load_lossy_codec(args.lossy_model, args.threads)
    if lossy is None:
        raise SystemExit("no lossy model: pass --lossy-model")

    rs2_rates = []

    def panel(codec, mode: str, **options) -> tuple[np.ndarray, str]:
        result, decoded, _ = selfvae_round_trip(codec, image, f"{mode} {options}", mode=mode, **options)
        bpp = len(result.data) * 8 / pixels
        if mode == "rs2":
            rs2_rates.append(bpp)
        quality = f" q{options['quality']}" if "quality" in options else ""
        detail = "lossless" if mode == "full" else f"{psnr(decoded, image):.2f} dB"
        return decoded, f"{mode}{quality}\n{bpp:.3f} bpp, {detail}"

    def jpeg_panel(rate: float) -> tuple[np.ndarray, str]:
        try:
            jpeg_rate, jpeg_psnr, decoded = jpeg_at_rate(image, rate)
        except SystemExit:  # even quality 1 needs more bits
            return np.full_like(image, 255), f"JPEG\ncannot go down to {rate:.3f} bpp"
        return decoded, f"JPEG\n{jpeg_rate:.3f} bpp, {jpeg_psnr:.2f} dB"

    qualities = range(1, lossy.model.config.qualities + 1)
    rows = [[(image, "original"), panel(lossless, "full")]]
    for mode in ("rs2", "rs1", "conditional"):
        rows.append([panel(lossy, mode, quality=q) for q in qualities])
    rows.append([jpeg_panel(rate) for rate in rs2_rates])
    draw(rows, Path(args.out))
    print(f"wrote {args.out}")


def draw(rows: list[list[tuple[np.ndarray, str]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.6 * columns, 2.9 * len(rows)), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for r, row in enumerate(rows):
        for c, (picture, label) in enumerate(row):
            axes[r][c].imshow(picture)
            axes[r][c].set_title(label, fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100)
    # Without matplotlib's alpha channel, which the panels do not use; lossless WebP is
    # a quarter smaller than PNG.
    save_options = {"lossless": True, "method": 6} if out.suffix == ".webp" else {"optimize": True}
    Image.open(buffer).convert("RGB").save(out, **save_options)


if __name__ == "__main__":
    main()
