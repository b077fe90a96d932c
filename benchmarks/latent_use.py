"""How much the decoder uses the z latents.

A lossless model: PSNR of the paper's reconstructions (unquantised latents) with the
inferred z's against the same with every z replaced by its prior mean. Equal numbers
mean the z's carry nothing the pixels use, so the lossy modes cannot gain from
sending them.

A lossy model: its real files at every quality, rs2 (u and the z's) against rs1
(u alone, the z's at their prior means): the bits the z's cost and the dB they buy.

    python benchmarks/latent_use.py ../shared/data/val/bsds500 --limit 10
    python benchmarks/latent_use.py ../shared/data/val/bsds500 --model lossy
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import add_common_arguments, load_codec_and_images, load_rgb

from selfvae_codec.metrics import psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.set_defaults(limit=10)
    args = parser.parse_args()
    codec, files = load_codec_and_images(args)
    if codec.lossy:
        lossy_model_table(codec, files)
        return
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


def lossy_model_table(codec, files) -> None:
    qualities = range(1, codec.model.config.qualities + 1)
    rows = {(q, mode): [] for q in qualities for mode in ("rs2", "rs1")}
    for path in files:
        image = load_rgb(path)
        for quality, mode in rows:
            result = codec.encode(image, mode, quality=quality)
            bpp = len(result.data) * 8 / (image.shape[0] * image.shape[1])
            rows[(quality, mode)].append((bpp, psnr(result.reconstruction, image)))
    print(f"Real files, mean of {len(files)} images: rs2 sends u and the z's, rs1 u alone\n")
    print("| quality | rs2 bpp | rs2 PSNR (dB) | rs1 bpp | rs1 PSNR (dB) | the z's: bpp, dB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for quality in qualities:
        (rs2_bpp, rs2_psnr), (rs1_bpp, rs1_psnr) = (np.mean(rows[(quality, m)], axis=0) for m in ("rs2", "rs1"))
        print(
            f"| {quality} | {rs2_bpp:.3f} | {rs2_psnr:.2f} | {rs1_bpp:.3f} | {rs1_psnr:.2f} "
            f"| {rs2_bpp - rs1_bpp:.3f}, {rs2_psnr - rs1_psnr:+.2f} |"
        )


if __name__ == "__main__":
    main()
