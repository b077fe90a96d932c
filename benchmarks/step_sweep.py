"""Bits per subpixel of a mode against the latent quantisation step (real file sizes),
to choose the default step.

    python benchmarks/step_sweep.py ../shared/data/val/bsds500 --mode full --limit 5 --steps 0.25,0.5,1,2,4

`--u-scales` scales u's step alone (the z's keep the first of --steps), by replacing
the step the encoder uses for u: the sizes of files whose header would need u's step
too (they are not decoded). `--model-only`: every `full` tile coded by the model.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import numpy as np
from common import add_common_arguments, load_codec_and_images, load_rgb

from selfvae_codec.codec import engine


@contextlib.contextmanager
def u_step_scaled(factor: float) -> Iterator[None]:
    """Meanwhile, the encoder codes u at `factor` times its step (a lossless exact
    model's step: whole units of 2^-12)."""
    original = engine.latent_steps

    def scaled(model, step, quality):
        u_step, z_steps = original(model, step, quality)
        return (max(1, round(u_step * factor)) if isinstance(u_step, int) else u_step * factor), z_steps

    engine.latent_steps = scaled
    try:
        yield
    finally:
        engine.latent_steps = original


def section_bits(result, kind: str) -> float:
    """The estimated bits of an encode's sections of one kind (labels "u", "z1", "y2", ...:
    "z" counts every level's)."""
    return sum(bits for label, bits in result.estimated_bits.items() if label.startswith(kind))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.set_defaults(limit=5)
    parser.add_argument("--mode", default="full")
    parser.add_argument("--steps", default="0.25,0.5,1,2,4")
    parser.add_argument("--u-scales", default="", help="u's step times each of these, e.g. 1,2,4,8")
    parser.add_argument("--model-only", action="store_true", help="full: no tile stored as PNG or WebP")
    args = parser.parse_args()
    codec, files = load_codec_and_images(args)
    images = [load_rgb(path) for path in files]
    options = {"classical_tiles": False} if args.model_only else {}
    steps = [float(s) for s in args.steps.split(",")]
    settings = [(step, 1.0) for step in steps]
    if args.u_scales:
        settings = [(steps[0], float(scale)) for scale in args.u_scales.split(",")]
    print(f"| step | u's step x | bits/subpixel ({args.mode}, mean of {len(images)} images) | u | z's |")
    print("| --- | --- | --- | --- | --- |")
    for step, u_scale in settings:
        rates, u_bits, z_bits = [], [], []
        with u_step_scaled(u_scale):
            for image in images:
                result = codec.encode(image, mode=args.mode, step=step, **options)
                rates.append(len(result.data) * 8 / image.size)
                u_bits.append(section_bits(result, "u") / image.size)
                z_bits.append(section_bits(result, "z") / image.size)
        print(f"| {step:g} | {u_scale:g} | {np.mean(rates):.4f} | {np.mean(u_bits):.4f} | {np.mean(z_bits):.4f} |")


if __name__ == "__main__":
    main()
