"""What the lossy encoder's effort buys (`encode --mode rs2 --effort N`): rs2 at every
quality and each effort, on whole images or their centre crops, against effort 2
(today's default encoder) and against WebP and AVIF, in BD-rate (PSNR, from the
mean bpp and mean PSNR over the images at each setting, as the RD benchmark
computes it). With --targets, each file is coded to a rate instead (`--target-bpp`).
Every file is decoded and checked against the encoder's prediction.

    python benchmarks/lossy_effort.py ../shared/data/val/classic --efforts 2,3,4 --threads 2
    python benchmarks/lossy_effort.py ../shared/data/val/bsds500 --every 12 --crop 256 \\
        --efforts 2,4 --threads 1 --out benchmarks/results/lossy_effort/bsds500
    python benchmarks/lossy_effort.py ../shared/data/val/classic --every 4 --crop 256 \
        --efforts 2,4 --targets 0.25,0.5,1 --threads 1 --out benchmarks/results/lossy_effort/classic_targets

Writes per_image.csv (one row per image, effort and quality or target: bpp, PSNR, encode and
decode seconds) and summary.json (each effort's mean curve, BD-rates and times) to
the --out folder; report.py makes its table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from common import (
    add_common_arguments,
    load_rgb,
    machine_description,
    selfvae_round_trip,
    write_csv,
    write_json,
)
from rate_distortion import bd_rate, classical_sweeps, measure

from selfvae_codec.metrics import psnr


def centre_crop(image: np.ndarray, side: int | None) -> np.ndarray:
    if side is None:
        return image
    top, left = max(0, (image.shape[0] - side) // 2), max(0, (image.shape[1] - side) // 2)
    return np.ascontiguousarray(image[top : top + side, left : left + side])


def mean_curve(rows: list[dict], key: str, value) -> list[tuple[float, float]]:
    """[(mean bpp, mean PSNR)] per setting of the rows whose `key` is `value`."""
    settings = sorted({row["setting"] for row in rows if row[key] == value})
    curve = []
    for setting in settings:
        chosen = [row for row in rows if row[key] == value and row["setting"] == setting]
        curve.append((float(np.mean([r["bpp"] for r in chosen])), float(np.mean([r["psnr_rgb"] for r in chosen]))))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--efforts", default="2,3,4", help="comma-separated efforts (1 to 9)")
    parser.add_argument("--crop", type=int, default=None, help="code the centre SIDE x SIDE crop of each image")
    parser.add_argument("--every", type=int, default=1, help="only every Nth image (a spread over the folder)")
    parser.add_argument(
        "--targets", default=None, help="comma-separated bits per pixel: code to these (--target-bpp), not at qualities"
    )
    parser.add_argument("--out", default="benchmarks/results/lossy_effort/run", help="the folder to write")
    args = parser.parse_args()
    if args.model is None:
        args.model = "lossy"
    from common import load_codec_and_images

    codec, files = load_codec_and_images(args)
    files = files[:: args.every]
    efforts = [int(e) for e in args.efforts.split(",")]
    targets = [float(t) for t in args.targets.split(",")] if args.targets else None
    anchors = {name: sweep for name, sweep in classical_sweeps().items() if name in ("WebP", "AVIF")}
    rows, anchor_rows = [], []
    for path in files:
        image = centre_crop(load_rgb(path), args.crop)
        pixels = image.shape[0] * image.shape[1]
        for effort in efforts:
            for setting in targets or range(1, codec.model.config.qualities + 1):
                label = f"{path.name} rs2 {'target ' if targets else 'q'}{setting} effort {effort}"
                chosen = dict(target_bpp=setting) if targets else dict(quality=setting)
                result, decoded, decode_seconds = selfvae_round_trip(
                    codec, image, label, mode="rs2", effort=effort, **chosen
                )
                row = dict(image=path.name, effort=effort, setting=setting, bpp=8 * len(result.data) / pixels)
                row.update(psnr_rgb=psnr(image, decoded), encode_s=result.seconds, decode_s=decode_seconds)
                rows.append(row)
                print(
                    f"{label}: {row['bpp']:.4f} bpp {row['psnr_rgb']:.3f} dB {row['encode_s']:.1f} s", file=sys.stderr
                )
        anchor_rows += measure(codec, image, path.name, modes=[], steps=[], sweeps=anchors)
    out = Path(args.out)
    write_csv(out / "per_image.csv", rows)
    summary = dict(
        folder=args.folder,
        images=len(files),
        crop=args.crop,
        every=args.every,
        targets=targets,
        machine=machine_description(args.threads),
        efforts=[effort_summary(rows, anchor_rows, effort, list(anchors)) for effort in efforts],
    )
    write_json(out / "summary.json", summary)
    for entry in summary["efforts"]:
        against = ", ".join(f"{name} {value:+.1f}%" for name, value in entry["bd_rate"].items() if value is not None)
        points = " ".join(f"{bpp:.3f}/{db:.2f}" for bpp, db in entry["curve"])
        print(
            f"effort {entry['effort']}: BD-rate (PSNR) against {against}; encode {entry['encode_s']:.1f} s, "
            f"decode {entry['decode_s']:.2f} s per image and quality; bpp/dB {points}"
        )


def effort_summary(rows: list[dict], anchor_rows: list[dict], effort: int, anchors: list[str]) -> dict:
    """One effort's mean curve, its BD-rate (PSNR) against effort 2 and the anchors,
    and its mean encode and decode seconds per image and quality."""
    curve = mean_curve(rows, "effort", effort)
    against = {"effort 2": mean_curve(rows, "effort", 2)} if any(r["effort"] == 2 for r in rows) else {}
    against |= {name: mean_curve(anchor_rows, "codec", name) for name in anchors}
    chosen = [r for r in rows if r["effort"] == effort]
    return dict(
        effort=effort,
        curve=curve,
        bd_rate={name: bd_rate(anchor, curve) for name, anchor in against.items()},
        encode_s=float(np.mean([r["encode_s"] for r in chosen])),
        decode_s=float(np.mean([r["decode_s"] for r in chosen])),
    )


if __name__ == "__main__":
    main()
