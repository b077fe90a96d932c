"""How much the decoder uses the z latents: PSNR of the paper's reconstructions
(unquantised latents) with the inferred z's against the same with every z replaced
by its prior mean. Equal numbers mean the z's carry nothing the pixels use, so the
lossy modes cannot gain from sending them.

    python benchmarks/latent_use.py ../shared/data/val/bsds500 --limit 10
    python benchmarks/latent_use.py ../shared/data/val/bsds500 --model runs/lossy/latest.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import add_common_arguments, load_codec_and_images, load_rgb
from rate_distortion import psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.set_defaults(limit=10)
    args = parser.parse_args()
    codec, files = load_codec_and_images(args)
    model = codec.model
    scores = {(mode, from_prior): [] for mode in ("rs2", "conditional") for from_prior in (False, True)}
    for path in files:
        image = load_rgb(path)
        batch = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].to(torch.int64)
        for mode, from_prior in scores:
            reconstruction = model.reconstruct(batch, mode, z_from_prior=from_prior)
            scores[(mode, from_prior)].append(psnr(reconstruction[0].permute(1, 2, 0).numpy(), image))
    print(f"PSNR in dB, mean of {len(files)} images (rs1 is rs2 with the z's at their prior means)\n")
    print("| mode | inferred z's | z's at their prior means |")
    print("| --- | --- | --- |")
    for mode in ("rs2", "conditional"):
        print(f"| {mode} | {np.mean(scores[(mode, False)]):.2f} | {np.mean(scores[(mode, True)]):.2f} |")


if __name__ == "__main__":
    main()
