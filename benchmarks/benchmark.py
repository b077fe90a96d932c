"""The whole comparison in one command: on every image of a folder, selfvae-codec in
every mode (lossless `full`, and the lossy modes across the latent step) against PNG,
WebP lossless, JPEG XL lossless, and the JPEG, WebP, AVIF and JPEG XL quality sweeps.
Needs `pip install -e ".[bench]"`.

    python benchmarks/benchmark.py ../shared/data/val/bsds500 --threads 2
    python benchmarks/benchmark.py ../shared/data/val/bsds500 --threads 2 --limit 5   # a quick look

Writes, under --out (default benchmarks/results):
  lossless/  per_image.csv, summary.json, lossless.png  (every result checked exact)
  rd/        one CompressAI-schema JSON per codec, per_image.csv, summary.json
             (BD-rate against JPEG and WebP, the anchors' PSNR at each of our rates),
             rate_distortion.png (PSNR and MS-SSIM in dB against bpp)
bpp comes from real byte counts; times are per image with model loading excluded
(reported separately). `python benchmarks/report.py` then rewrites the README's
results section from these files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lossless
import rate_distortion
from common import add_common_arguments, load_codec_and_images, load_lossy_codec, load_rgb, lossless_codecs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--steps", default=rate_distortion.DEFAULT_STEPS, help="latent steps of the lossy modes")
    parser.add_argument("--modes", default=",".join(rate_distortion.MODES), help="lossy modes to sweep")
    parser.add_argument(
        "--lossy-model",
        default=None,
        help="lossy model for rs2 / rs1, swept over its qualities (default: the shipped one, if any; 'none': "
        "the lossless model across --steps)",
    )
    parser.add_argument(
        "--lossy-modes",
        default=",".join(rate_distortion.SHIPPED_LOSSY_MODES),
        help="the modes the lossy model codes (default: those it is shipped for; add conditional to measure a "
        "lossy model's conditional files)",
    )
    parser.add_argument("--only", choices=("lossless", "rd"), default=None, help="run one of the two parts")
    parser.add_argument(
        "--effort", type=int, default=2, choices=(1, 2, 3), help="selfvae-codec's encoder effort (full)"
    )
    parser.add_argument(
        "--reuse",
        default=None,
        help="an earlier rd/per_image.csv of the same folder: its rows of the classical codecs and of the "
        "selfvae modes not in --modes are kept instead of measured again (to re-measure a new lossy model)",
    )
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    codec, files = load_codec_and_images(args)
    lossy_codec = load_lossy_codec(args.lossy_model, args.threads) if args.only != "lossless" else None
    steps = [float(s) for s in args.steps.split(",")]
    modes = args.modes.split(",")
    lossy_modes = tuple(args.lossy_modes.split(","))
    if not set(lossy_modes) <= set(rate_distortion.MODES):
        parser.error(f"--lossy-modes: a lossy model codes {', '.join(rate_distortion.MODES)}")
    classical_lossless = lossless_codecs()
    sweeps = rate_distortion.classical_sweeps()
    from tqdm import tqdm

    reused, reused_modes = {}, []
    if args.reuse and args.only != "lossless":
        reused, reused_modes = rate_distortion.reused_rows(Path(args.reuse), modes, [path.name for path in files])
        sweeps = {}
    lossless_rows, rd_rows = [], []
    for path in tqdm(files, unit="image", file=sys.stderr):
        image = load_rgb(path)
        if args.only in (None, "lossless"):
            lossless_rows.append(lossless.measure(codec, image, path.name, classical_lossless, args.effort))
        if args.only in (None, "rd"):
            rd_rows += rate_distortion.measure(codec, image, path.name, modes, steps, sweeps, lossy_codec, lossy_modes)
            rd_rows += reused.get(path.name, [])
    out = Path(args.out)
    if lossless_rows:
        lossless.summarize(
            lossless_rows, codec, classical_lossless, args.folder, args.threads, args.effort, out / "lossless"
        )
    if rd_rows:
        all_modes = [mode for mode in rate_distortion.MODES if mode in modes or mode in reused_modes]
        rate_distortion.summarize(
            rd_rows,
            codec,
            all_modes,
            args.folder,
            args.threads,
            out / "rd",
            lossy_codec,
            rate_distortion.reuse_record(Path(args.reuse), modes) if args.reuse else None,
            lossy_modes,
        )


if __name__ == "__main__":
    main()
