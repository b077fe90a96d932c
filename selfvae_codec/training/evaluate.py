"""Evaluation: negative ELBO and importance-weighted bits per dimension per image.

Both come from the same S posterior samples of one image: the ELBO estimate is the
mean of the log importance weights log p(x, latents) - log q(latents | x), the
importance-weighted bound their log-mean-exp (over the samples of that image, never
over a batch of different images); the terms are single-sample (Monte Carlo)
estimates averaged over the samples. Large images are cut into
tiles that are evaluated independently, as the codec codes them; an image's bound is
the sum over its tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..codec.tiles import tile_boxes
from ..models.selfvae import SelfVAE


@dataclass
class ImageScore:
    name: str
    width: int
    height: int
    elbo_bpd: float  # negative ELBO: minus the mean of the S log importance weights
    iw_bpd: float  # negative importance-weighted bound with S samples
    terms_bpd: dict[str, float]


@torch.no_grad()
def evaluate_image(
    model: SelfVAE, image: np.ndarray, samples: int, tile: int = 512, batch: int = 4, name: str = ""
) -> ImageScore:
    """Score one RGB uint8 image [H, W, 3]."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].to(torch.int64)
    device = model.device
    height, width = image.shape[:2]
    dims = 3 * height * width
    elbo_nats = 0.0
    iw_nats = 0.0
    terms: dict[str, float] = {}
    for top, bottom, left, right in tile_boxes(height, width, tile):
        part = x[..., top:bottom, left:right].to(device)
        log_weights = []
        for start in range(0, samples, batch):
            count = min(batch, samples - start)
            sampled = model.elbo_terms(part.expand(count, -1, -1, -1), analytic_kl=False)
            for key, value in sampled.items():
                if not key.startswith("_"):
                    terms[key] = terms.get(key, 0.0) + float(value.sum()) / samples
            log_weights.append(-sum(v for k, v in sampled.items() if not k.startswith("_")))
        log_weights = torch.cat(log_weights)
        elbo_nats += float(-log_weights.mean())
        iw_nats += float(-(torch.logsumexp(log_weights, 0) - math.log(samples)))
    scale = 1.0 / (dims * math.log(2))
    return ImageScore(name, width, height, elbo_nats * scale, iw_nats * scale, {k: v * scale for k, v in terms.items()})


def write_scores_csv(path, scores: list[ImageScore]) -> None:
    """One row per image: size, both bounds and every term, in bits per dimension."""
    import csv

    term_names = list(scores[0].terms_bpd)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "width", "height", "elbo_bpd", "iw_bpd", *term_names])
        for s in scores:
            terms = (f"{s.terms_bpd[t]:.5f}" for t in term_names)
            writer.writerow([s.name, s.width, s.height, f"{s.elbo_bpd:.5f}", f"{s.iw_bpd:.5f}", *terms])
