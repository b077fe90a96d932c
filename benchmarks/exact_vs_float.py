"""The exact (integer) model against the float model it was converted from, on every
image of a folder: `full` bits per subpixel with the model in every tile (no PNG /
WebP tiles), each lossy mode's bits per pixel and PSNR at its default step (and a
lossy model's default quality), and the encode / decode seconds of each, at the same
thread count. `--models` names the two models (default: the lossless pair).

    python benchmarks/exact_vs_float.py ../shared/data/val/bsds500 --threads 2
    python benchmarks/exact_vs_float.py ../shared/data/val/bsds500 --threads 2 --modes conditional,rs2,rs1
    python benchmarks/exact_vs_float.py ../shared/data/val/bsds500 --threads 2 --modes conditional,rs2,rs1 \\
        --limit 20 --models runs/rd2/latest.safetensors,lossy --out benchmarks/results/exact_lossy

Writes per_image.csv and summary.md under --out (default benchmarks/results/exact; the
tables docs/exact.md and the README cite). Every decode is checked against the
encoder's reconstruction.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from common import add_common_arguments, list_images, load_rgb, machine_description, selfvae_round_trip, write_csv

from selfvae_codec.metrics import psnr

MODES = ("full", "conditional", "rs2", "rs1")
DEFAULT_MODELS = "default-float,default"  # the float source, then its exact conversion
DEFAULT_OUT = "benchmarks/results/exact"


def measure(codec, image: np.ndarray, mode: str, name: str) -> dict:
    result, decoded, decode_seconds = selfvae_round_trip(
        codec, image, f"{mode}: {name}", mode=mode, classical_tiles=False
    )
    pixels = image.shape[0] * image.shape[1]
    return {
        "bpp": 8 * len(result.data) / pixels,
        "psnr": psnr(image, decoded) if mode != "full" else float("inf"),
        "encode_s": result.seconds,
        "decode_s": decode_seconds,
    }


def summary_table(rows: list[dict], modes: list[str], models: list[str]) -> list[str]:
    lines = [
        "| mode | model | bits per pixel | bits per subpixel | PSNR (dB) | encode (s) | decode (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode in modes:
        for model in models:
            chosen = [r for r in rows if r["mode"] == mode and r["model"] == model]
            mean = {key: float(np.mean([r[key] for r in chosen])) for key in ("bpp", "psnr", "encode_s", "decode_s")}
            quality = "lossless" if mode == "full" else f"{mean['psnr']:.2f}"
            lines.append(
                f"| {mode} | {model} | {mean['bpp']:.4f} | {mean['bpp'] / 3:.4f} | {quality} "
                f"| {mean['encode_s']:.2f} | {mean['decode_s']:.2f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--modes", default=",".join(MODES), help="modes to measure")
    parser.add_argument(
        "--models", default=DEFAULT_MODELS, help="FLOAT,EXACT: a float model (name or .safetensors), its conversion"
    )
    args = parser.parse_args()
    modes, models = args.modes.split(","), args.models.split(",")
    if len(models) != 2:
        parser.error("--models takes two models: FLOAT,EXACT")
    import torch
    from tqdm import tqdm

    from selfvae_codec.codec.api import Codec

    torch.set_num_threads(args.threads)
    codecs = {name: Codec(name, threads=args.threads) for name in models}
    files = list_images(args.folder, args.limit)
    rows = []
    for path in tqdm(files, unit="image", file=sys.stderr):
        image = load_rgb(path)
        for mode in modes:
            for name, codec in codecs.items():
                rows.append({"image": path.name, "mode": mode, "model": name, **measure(codec, image, mode, path.name)})
    out = Path(args.out)
    write_csv(out / "per_image.csv", rows)
    header = [
        f"Exact model against its float source on `{args.folder}` ({len(files)} images; "
        f"{machine_description(args.threads)}), the model in every tile, default steps and quality:",
        f"`python benchmarks/exact_vs_float.py {args.folder} --threads {args.threads} --modes {args.modes}"
        + ("" if args.limit is None else f" --limit {args.limit}")
        + ("" if args.models == DEFAULT_MODELS else f" --models {args.models}")
        + ("" if args.out == DEFAULT_OUT else f" --out {args.out}")
        + "`",
        "",
    ]
    text = "\n".join(header + summary_table(rows, modes, models)) + "\n"
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
