"""Whether the lossy model's latent priors fit the latents rs2 sends (#47): the bits of
each latent (u, z_1 .. z_L) at every quality under the model's priors, and under the
same priors with their standard deviations scaled by the best single factor per latent
and quality. Walks the exact model's float twin as the coder does (rounded latents on
the quality's steps, relative to the prior means).

    python benchmarks/prior_scale_fit.py ../shared/data/val/classic --every 4 --crop 256
"""

from __future__ import annotations

import argparse

import torch
from common import list_images, load_rgb
from lossy_effort import centre_crop

from selfvae_codec.codec.api import Codec
from selfvae_codec.codec.latent_optimisation import RelaxedWalk
from selfvae_codec.models.exact import float_twin
from selfvae_codec.models.hierarchy import descend, latent_bits
from selfvae_codec.models.levels import decoding_quality

FACTORS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5)


class SentLatents(RelaxedWalk):
    """The hard walk of an rs2 file that keeps, per latent, what its bits depend on:
    (offset from the prior mean, step, prior standard deviation)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.sent: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def _send(self, encoders_value, center, step, std):
        value = super()._send(encoders_value, center, step, std)
        self.sent.append((value - center, step, std))
        return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    twin = float_twin(Codec("lossy").model)
    files = list_images(args.folder)[:: args.every]
    # bits[quality][latent][factor], summed over the images
    bits = [[dict.fromkeys(FACTORS, 0.0) for _ in range(1 + len(twin.levels))] for _ in range(twin.config.qualities)]
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
    print(f"{len(files)} images of {args.folder}, centre {args.crop}x{args.crop} crops; bpp of rs2's latents")
    for quality, latents in enumerate(bits):
        total = sum(latent[1.0] for latent in latents)
        best = sum(min(latent.values()) for latent in latents)
        parts = [
            f"{name} {latent[1.0] / pixels:.4f} (x{min(latent, key=latent.get)}: "
            f"{100 * (min(latent.values()) / latent[1.0] - 1):+.1f}%)"
            for name, latent in zip(["u"] + [f"z{k + 1}" for k in range(len(twin.levels))], latents, strict=True)
        ]
        change = 100 * (best / total - 1)
        print(f"q{quality + 1}: {total / pixels:.4f} bpp, best factors {change:+.1f}%: " + ", ".join(parts))


if __name__ == "__main__":
    main()
