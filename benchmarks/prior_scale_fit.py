"""Whether the lossy model's latent priors fit the latents rs2 sends (#47): the bits of
each latent (u, z_1 .. z_L) at every quality under the model's priors, and

- under the same priors with their standard deviations scaled by the best single
  factor per latent and quality (a refit of the widths);
- under the empirical distribution of the sent symbols given the prior's width (the
  ratio of its standard deviation to the step, in quarter octaves), per latent and
  quality: a bound on what any other shape of prior (a mixture of logistics, say)
  could save with the information the prior has now. It is fitted to the very
  symbols it counts, so it errs on the side of promising too much;
- the correlation of each latent's offsets from its prior mean (in prior standard
  deviations) with its right-hand and lower neighbours': what a spatial context
  could predict that the prior does not.

Walks the exact model's float twin (`lossy-v4`, the shipped lossy model before its
u context, unless --model says otherwise) as the coder does (rounded latents on the
quality's steps, relative to the prior means).

    python benchmarks/prior_scale_fit.py ../shared/data/val/classic --every 4 --crop 256
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from common import list_images, load_rgb
from lossy_effort import centre_crop

from selfvae_codec.codec.api import Codec
from selfvae_codec.codec.latent_optimisation import RelaxedWalk
from selfvae_codec.models.exact import float_twin
from selfvae_codec.models.hierarchy import descend, latent_bits
from selfvae_codec.models.levels import decoding_quality

FACTORS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5)
WIDTH_BUCKETS_PER_OCTAVE = 4


class SentLatents(RelaxedWalk):
    """The hard walk of an rs2 file that keeps, per latent, what its bits depend on:
    (offset from the prior mean, step, prior standard deviation)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.sent: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def _count(self, offset, step, std, positions=None):
        super()._count(offset, step, std, positions)
        self.sent.append((offset, step, std))


def empirical_bits(symbols: torch.Tensor, buckets: torch.Tensor) -> float:
    """The bits of `symbols` under their own frequencies within each bucket."""
    total = 0.0
    for bucket in buckets.unique():
        _, counts = symbols[buckets == bucket].unique(return_counts=True)
        total += float(-(counts.double() * torch.log2(counts.double() / counts.sum())).sum())
    return total


def neighbour_products(offset: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Sums and counts of the offsets in prior standard deviations times their right-hand
    neighbours', times their lower neighbours', and squared: [6] to add over images."""
    r = (offset / std.expand_as(offset)).double()
    right, below = r[..., :, 1:] * r[..., :, :-1], r[..., 1:, :] * r[..., :-1, :]
    return torch.tensor(
        [right.sum(), right.numel(), below.sum(), below.numel(), r.square().sum(), r.numel()], dtype=torch.float64
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="+")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="lossy-v4", help="a lossy model without a u context (the one measured)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    twin = float_twin(Codec(args.model).model)
    if twin.config.u_context:  # its u would count as two latents
        parser.error("this script measures a lossy model without a u context")
    files = [path for folder in args.folder for path in list_images(folder)[:: args.every]]
    names = ["u"] + [f"z{k + 1}" for k in range(len(twin.levels))]
    # bits[quality][latent][factor], summed over the images
    bits = [[dict.fromkeys(FACTORS, 0.0) for _ in names] for _ in range(twin.config.qualities)]
    symbols = defaultdict(list)  # (quality, latent) -> [(symbols, width buckets)]
    products = defaultdict(lambda: torch.zeros(6, dtype=torch.float64))  # (quality, latent) -> neighbour_products
    pixels = 0
    with torch.no_grad():
        for path in files:
            x = torch.from_numpy(centre_crop(load_rgb(path), args.crop)).permute(2, 0, 1)[None].to(torch.int64)
            ys = twin.representations(x)
            pixels += x.shape[-1] * x.shape[-2]
            for quality in range(twin.config.qualities):
                walk = SentLatents(twin, ys, twin.latent_steps(quality), True, [])
                with decoding_quality(twin, quality):
                    descend(twin, tuple(ys[-1].shape[-2:]), walk)
                for latent, (offset, step, std) in enumerate(walk.sent):
                    for factor in FACTORS:
                        bits[quality][latent][factor] += float(latent_bits(offset, step, std * factor).sum())
                    step, std = step.expand_as(offset), std.expand_as(offset)
                    width = torch.floor(torch.log2(std / step) * WIDTH_BUCKETS_PER_OCTAVE).to(torch.int64)
                    sent = torch.round(offset / step).to(torch.int64)
                    symbols[quality, latent].append((sent.flatten(), width.flatten()))
                    products[quality, latent] += neighbour_products(offset, std)
    print(
        f"{len(files)} images of {', '.join(args.folder)}, centre {args.crop}x{args.crop} crops; bpp of rs2's latents"
    )
    for quality, latents in enumerate(bits):
        total = sum(latent[1.0] for latent in latents)
        best = sum(min(latent.values()) for latent in latents)
        parts = [
            f"{name} {latent[1.0] / pixels:.4f} (x{min(latent, key=latent.get)}: "
            f"{100 * (min(latent.values()) / latent[1.0] - 1):+.1f}%)"
            for name, latent in zip(names, latents, strict=True)
        ]
        change = 100 * (best / total - 1)
        print(f"q{quality + 1}: {total / pixels:.4f} bpp, best factors {change:+.1f}%: " + ", ".join(parts))
        shapes = []
        for latent in range(len(names)):
            sent = torch.cat([s for s, _ in symbols[quality, latent]])
            width = torch.cat([w for _, w in symbols[quality, latent]])
            shapes.append(empirical_bits(sent, width))
        parts = [f"{name} {bound / pixels:.4f}" for name, bound in zip(names, shapes, strict=True)]
        saving = 100 * (sum(shapes) / total - 1)
        print(f"    empirical shape given width {sum(shapes) / pixels:.4f} bpp ({saving:+.1f}%): " + ", ".join(parts))
        parts = []
        for latent, name in enumerate(names):
            right, rights, below, belows, power, count = products[quality, latent].tolist()
            power = max(power / count, 1e-12)
            parts.append(f"{name} {right / rights / power:+.2f} / {below / belows / power:+.2f}")
        print("    neighbour correlation (right / below): " + ", ".join(parts))


if __name__ == "__main__":
    main()
