"""Where a lossy model loses quality, level by level (a float lossy model, such as a
training run's latest.safetensors).

For each quality, the PSNR of every representation y_1 .. y_L, x against the true one:
- walk: rs2 as the decoder runs it (each level generated from the one it generated
  before, z's quantised at the quality's steps);
- given the truth: each level generated from the true coarser level, with its own
  z (inferred from the true finer level and that coarser one, quantised), and with
  its z at the prior mean: what the level's decoder makes of the bits it gets;
- bicubic: the true coarser level upscaled bicubically (no bits at all).
A level whose "given the truth" PSNR is little above bicubic turns its z bits into
little detail: that is where capacity is missing.

    python benchmarks/level_quality.py ../shared/data/val/bsds500 --limit 4 \
        --model runs/rd/latest.safetensors --qualities 1,6
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from common import list_images, load_rgb
from rate_distortion import psnr

from selfvae_codec.models.io import load_model
from selfvae_codec.models.selfvae import quantize_latents, spatial_size


def to_image(y: torch.Tensor) -> np.ndarray:
    return y[0].permute(1, 2, 0).to(torch.float64).numpy()


@torch.no_grad()
def level_scores(model, x: torch.Tensor, quality: int) -> dict[str, list[float]]:
    """PSNR per representation (y_1 .. y_L, x) for each way of producing it."""
    ys = model.representations(x)
    size = spatial_size(x)
    u_step, z_steps = model.latent_steps(quality)
    base = model.prior_u.to_base(model.top.posterior(ys[0]).mean)
    u = model.prior_u.from_base(quantize_latents(base, torch.zeros_like(base), u_step, noisy=False))
    y = model.top.likelihood(u, model.y_size(0, size)).generate("mean")
    scores = {"walk": [psnr(to_image(y), to_image(ys[0]))], "given the truth": [], "z at prior mean": [], "bicubic": []}
    prev_walk = prev_true = u
    for k, level in enumerate(model.levels):
        fine_size = model.y_size(k + 1, size)
        z_size = model.z_size(k, size)
        truth = to_image(ys[k + 1])
        steps = []
        for coarse, prev in ((y, prev_walk), (ys[k], prev_true)):
            prior = level.prior(coarse, prev, z_size)
            z = quantize_latents(level.posterior(ys[k + 1], coarse).mean, prior.mean, z_steps[k], noisy=False)
            steps.append((coarse, prior, z))
        (walk_coarse, _, walk_z), (true_coarse, true_prior, true_z) = steps
        y = level.generate(walk_coarse, walk_z, fine_size, "mean")
        scores["walk"].append(psnr(to_image(y), truth))
        scores["given the truth"].append(psnr(to_image(level.generate(true_coarse, true_z, fine_size, "mean")), truth))
        at_prior = level.generate(true_coarse, true_prior.mean, fine_size, "mean")
        scores["z at prior mean"].append(psnr(to_image(at_prior), truth))
        upscaled = F.interpolate(true_coarse.to(torch.float64), size=fine_size, mode="bicubic", align_corners=False)
        scores["bicubic"].append(psnr(to_image(upscaled.clamp(0, 255).round()), truth))
        prev_walk, prev_true = walk_z, true_z
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--model", required=True, help="a float lossy model (.safetensors)")
    parser.add_argument("--qualities", default=None, help="comma-separated, 1-based (default: all)")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    if not model.config.lossy or model.config.exact:
        parser.error("needs a float lossy model (the output of a rate-distortion training run)")
    qualities = range(1, model.config.qualities + 1)
    if args.qualities:
        qualities = [int(q) for q in args.qualities.split(",")]
    files = list_images(args.folder, args.limit)
    names = [f"y{k + 1}" for k in range(len(model.levels))] + ["x"]
    print(f"PSNR (dB) per representation, mean of {len(files)} images ({args.folder})\n")
    print("| quality | how | " + " | ".join(names) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
    for quality in qualities:
        totals: dict[str, list[list[float]]] = {}
        for path in files:
            x = torch.from_numpy(load_rgb(path).copy()).permute(2, 0, 1)[None].to(torch.int64)
            for how, values in level_scores(model, x, quality - 1).items():
                totals.setdefault(how, []).append(values)
        for how, rows in totals.items():
            cells = list(np.mean(rows, axis=0))
            if how != "walk":  # these start at y_2: y_1 comes from u alone
                cells = [float("nan")] + cells
            print(f"| {quality} | {how} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")


if __name__ == "__main__":
    main()
