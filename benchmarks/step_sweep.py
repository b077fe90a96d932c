"""Bits per subpixel of a mode against the latent quantisation step (real file sizes),
to choose the default step.

    python benchmarks/step_sweep.py ../shared/data/val/bsds500 --mode full --limit 5 --steps 0.25,0.5,1,2,4
"""

from __future__ import annotations

import argparse

import numpy as np
from common import add_common_arguments, load_codec_and_images, load_rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.set_defaults(limit=5)
    parser.add_argument("--mode", default="full")
    parser.add_argument("--steps", default="0.25,0.5,1,2,4")
    args = parser.parse_args()
    codec, files = load_codec_and_images(args)
    images = [load_rgb(path) for path in files]
    print(f"| step | bits/subpixel ({args.mode}, mean of {len(images)} images) | latent sections |")
    print("| --- | --- | --- |")
    for step in (float(s) for s in args.steps.split(",")):
        rates, latent = [], []
        for image in images:
            result = codec.encode(image, mode=args.mode, step=step)
            rates.append(len(result.data) * 8 / image.size)
            latent.append(sum(v for k, v in result.estimated_bits.items() if k[0] in "uz") / image.size)
        print(f"| {step:g} | {np.mean(rates):.4f} | {np.mean(latent):.4f} |")


if __name__ == "__main__":
    main()
