"""How deep per-image adaptation should reach (#42): the bits of a `full` file of each
image's centre crop by a float lossless model, before and after Adam fits the model's
biases to the crop itself, at three depths: the pixel heads' output layers, the heads
whole, and every bias on the decoding side (priors, contexts, trunks, heads). The
whole model runs at every step, so this measures what depth buys, not a fast fit.

    python benchmarks/adaptation_depth.py ../shared/data/val/classic/sipi-4.2.06.png \\
        ../shared/data/val/classic/waterloo-tulips.png --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import load_rgb
from lossy_effort import centre_crop

from selfvae_codec.codec.api import DEFAULT_STEP, Codec

DEPTHS = {
    "head outputs": lambda name: name.endswith("out.bias") or "likelihood" in name,
    "heads": lambda name: "head" in name or "likelihood" in name,
    "decoding side": lambda name: True,
}


def adapted_bits(model_name: str, x: torch.Tensor, depth: str, steps: int, learning_rate: float):
    """(biases adapted, bits per subpixel before, after) of x's `full` file."""
    model = Codec(model_name).model
    model.requires_grad_(False)
    chosen = [
        parameter
        for name, parameter in model.named_parameters()
        if name.endswith("bias") and "posterior" not in name and DEPTHS[depth](name)
    ]
    for parameter in chosen:
        parameter.requires_grad_(True)
    optimiser = torch.optim.Adam(chosen, lr=learning_rate)

    def bits() -> torch.Tensor:
        return model.full_file_bits(x, DEFAULT_STEP["full"]).sum() / x.numel()

    with torch.no_grad():
        before = float(bits())
    for _ in range(steps):
        optimiser.zero_grad()
        bits().backward()
        optimiser.step()
    with torch.no_grad():
        after = float(bits())
    return sum(p.numel() for p in chosen), before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--model", default="default-float", help="a float lossless model")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--learning-rate", type=float, default=0.003)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for path in args.images:
        x = torch.from_numpy(centre_crop(load_rgb(path), args.crop)).permute(2, 0, 1)[None].to(torch.int64)
        for depth in DEPTHS:
            started = time.perf_counter()
            count, before, after = adapted_bits(args.model, x, depth, args.steps, args.learning_rate)
            print(
                f"{path.name} {depth} ({count} biases): {before:.4f} -> {after:.4f} bits/subpixel "
                f"({100 * (after / before - 1):+.2f}%), {time.perf_counter() - started:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
