"""Upscaling with the model against Pillow's nearest, bicubic and Lanczos.

Each photo is downscaled 2, 4 and 8 times with the model's own transform (rounded
2x2 means, repeated), then brought back to its original size by each method; PSNR
and MS-SSIM are measured against the original (RGB, 8 bits). Writes a markdown
table, per-image rows and one picture (a crop of the original, bicubic and ours).

    python benchmarks/upscale.py $DATA/val/bsds500 --threads 2 --out benchmarks/results/upscale
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import add_common_arguments, load_codec_and_images, load_rgb, machine_description, write_csv
from PIL import Image
from rate_distortion import ms_ssim

from selfvae_codec.metrics import psnr
from selfvae_codec.models.transforms import downscale

FACTORS = (2, 4, 8)
PILLOW = {"nearest": Image.Resampling.NEAREST, "bicubic": Image.Resampling.BICUBIC, "Lanczos": Image.Resampling.LANCZOS}


def model_downscale(image: np.ndarray, factor: int) -> np.ndarray:
    small = torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.int64)
    for _ in range(factor.bit_length() - 1):
        small = downscale(small)
    return small[0].permute(1, 2, 0).numpy().astype(np.uint8)


def upscaled(codec, small: np.ndarray, factor: int, size: tuple[int, int]) -> tuple[dict[str, np.ndarray], float]:
    """Every method's attempt at the original from `small` (size is (width, height)),
    and the seconds selfvae-codec took.
    Pillow's filters scale by exactly `factor` (then crop), so that odd sizes keep
    their pixel grid aligned, as the model's downscale pads them."""
    width, height = size
    exact = (small.shape[1] * factor, small.shape[0] * factor)
    out = {name: np.asarray(Image.fromarray(small).resize(exact, flt))[:height, :width] for name, flt in PILLOW.items()}
    started = time.perf_counter()
    out["selfvae-codec"] = codec.upscale(small, factor, "mean", size=size)
    return out, time.perf_counter() - started


def side_by_side(original: np.ndarray, results: dict[str, np.ndarray], factor: int, out: Path) -> None:
    """A 160x160 crop from the middle: original | bicubic | ours, 2x enlarged."""
    height, width = original.shape[:2]
    top, left = max(0, height // 2 - 80), max(0, width // 2 - 80)
    crops = [a[top : top + 160, left : left + 160] for a in (original, results["bicubic"], results["selfvae-codec"])]
    strip = np.concatenate([np.pad(c, ((4, 4), (4, 4), (0, 0)), constant_values=255) for c in crops], axis=1)
    Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.Resampling.NEAREST).save(out)
    print(f"wrote {out} (original | bicubic | selfvae-codec, {factor}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--out", default="benchmarks/results/upscale")
    parser.add_argument("--picture-factor", type=int, default=4)
    args = parser.parse_args()
    codec, files = load_codec_and_images(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, seconds = [], {f: 0.0 for f in FACTORS}
    for index, path in enumerate(files):
        image = load_rgb(path)
        size = (image.shape[1], image.shape[0])
        for factor in FACTORS:
            small = model_downscale(image, factor)
            results, spent = upscaled(codec, small, factor, size)
            seconds[factor] += spent
            for method, result in results.items():
                rows.append(
                    dict(
                        image=path.name,
                        factor=factor,
                        method=method,
                        psnr=psnr(image, result),
                        ms_ssim=ms_ssim(image, result),
                    )
                )
            if index == 0 and factor == args.picture_factor:
                side_by_side(image, results, factor, out / "upscale_crop.png")
    write_csv(out / "per_image.csv", rows)
    methods = ["nearest", "bicubic", "Lanczos", "selfvae-codec"]
    summary = {
        "images": len(files),
        "folder": args.folder,
        "machine": machine_description(args.threads),
        "model_fingerprint": codec.fingerprint,
        "mean": {
            f"{factor}x {method}": {
                key: float(np.mean([r[key] for r in rows if r["factor"] == factor and r["method"] == method]))
                for key in ("psnr", "ms_ssim")
            }
            for factor in FACTORS
            for method in methods
        },
        "selfvae_seconds_per_image": {f"{f}x": seconds[f] / len(files) for f in FACTORS},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["| factor | " + " | ".join(methods) + " |", "| --- | " + " | ".join("---" for _ in methods) + " |"]
    for factor in FACTORS:
        cells = [summary["mean"][f"{factor}x {m}"] for m in methods]
        lines.append(f"| {factor}x | " + " | ".join(f"{c['psnr']:.2f} dB, {c['ms_ssim']:.4f}" for c in cells) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
