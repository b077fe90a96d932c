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

from selfvae_codec.metrics import psnr
from selfvae_codec.models.hierarchy import descend, quantize_as_sent, quantize_latents, rate_of_u, representation_names
from selfvae_codec.models.io import load_model
from selfvae_codec.models.levels import spatial_size


def to_image(y: torch.Tensor) -> np.ndarray:
    return y[0].permute(1, 2, 0).to(torch.float64).numpy()


class LevelScores:
    """A policy for the hierarchy's walk: rs2 as the decoder runs it, scoring each
    representation, and beside every level the same level given the true coarser one
    (its own z, its z at the prior mean, and bicubic)."""

    def __init__(self, model, ys: list[torch.Tensor], quality: int):
        self.model, self.ys = model, ys
        self.u_step, self.z_steps = model.latent_steps(quality)
        self.scores = {"walk": [], "given the truth": [], "z at prior mean": [], "bicubic": []}
        self.true_previous = None  # the latent above, on the path given the truth

    def top_latent(self, u_size):
        prior_u = self.model.prior_u
        base = prior_u.to_base(self.model.top.posterior(self.ys[0]).mean)
        self.true_previous = prior_u.from_base(rate_of_u(self.model, base, self.u_step, quantize_as_sent)[0])
        return self.true_previous

    def top_representation(self, top):
        y = top.likelihood.generate("mean")
        self.scores["walk"].append(psnr(to_image(y), to_image(self.ys[0])))
        return y

    def latent(self, at):
        posterior_mean = at.level.posterior(self.ys[at.index + 1], at.coarse).mean
        return quantize_latents(posterior_mean, at.prior.mean, self.z_steps[at.index], noisy=False)

    def representation(self, at, z):
        k, level, fine_size = at.index, at.level, at.fine_size
        fine, coarse = self.ys[k + 1], self.ys[k]
        truth = to_image(fine)
        y = level.generate(at.coarse, z, fine_size, "mean")
        self.scores["walk"].append(psnr(to_image(y), truth))
        prior = level.prior(coarse, self.true_previous, at.z_size)
        true_z = quantize_latents(level.posterior(fine, coarse).mean, prior.mean, self.z_steps[k], noisy=False)
        given = level.generate(coarse, true_z, fine_size, "mean")
        self.scores["given the truth"].append(psnr(to_image(given), truth))
        at_prior = level.generate(coarse, prior.mean, fine_size, "mean")
        self.scores["z at prior mean"].append(psnr(to_image(at_prior), truth))
        upscaled = F.interpolate(coarse.to(torch.float64), size=fine_size, mode="bicubic", align_corners=False)
        self.scores["bicubic"].append(psnr(to_image(upscaled.clamp(0, 255).round()), truth))
        self.true_previous = true_z
        return y


@torch.no_grad()
def level_scores(model, x: torch.Tensor, quality: int) -> dict[str, list[float]]:
    """PSNR per representation (y_1 .. y_L, x) for each way of producing it."""
    policy = LevelScores(model, model.representations(x), quality)
    descend(model, spatial_size(x), policy)
    return policy.scores


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
    names = representation_names(len(model.levels))
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
