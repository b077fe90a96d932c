"""Fitting a lossy model's checkerboard context for u (config.u_context), everything
else frozen (`selfvae-codec fit-u-context`).

u is inferred from y_1 alone, so the u a file sends does not depend on the quality,
only its rounding does: the encoder's u of many training crops is computed once, and
the context (priors.CheckerboardContext) learns from it at random qualities, the
first half rounded as the coder sends it and the rate of the second half counted on
uniform noise (mixed quantisation: the rounded second half does not depend smoothly
on the predicted mean). With the encoder, the other priors and the decoder frozen,
the files' first halves and everything the decoder does with u stay as they were; the
second half is sent on a grid about the predicted mean instead of about zero.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from ..models.hierarchy import quantize_as_sent, quantize_mixed, rate_of_u
from ..models.selfvae import SelfVAE
from .data import RandomCropSampler

ENCODER_BATCH = 16


def with_u_context(model: SelfVAE, width: int) -> SelfVAE:
    """A float lossy model with `model`'s weights and a checkerboard context for u of
    `width` channels, which starts as N(0, 1) (so codes as `model` does)."""
    if not model.config.lossy:
        raise ValueError("a u context is fitted to a lossy model (such as the shipped `lossy`)")
    if model.config.exact:
        raise ValueError("a u context is fitted on a float model (an exact one's float twin)")
    if model.config.u_context:
        raise ValueError("the model has a u context already")
    fitted = SelfVAE(dataclasses.replace(model.config, u_context=width))
    missing, unexpected = fitted.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not name.startswith("u_context.") for name in missing):
        raise ValueError("the model's weights do not fit its own configuration")
    return fitted.eval()


def encoder_bases(model: SelfVAE, crops: torch.Tensor) -> torch.Tensor:
    """The encoder's u of each crop [N, 3, H, W] in its prior's base space, [N, C, h, w]."""
    bases = []
    with torch.no_grad():
        for start in range(0, len(crops), ENCODER_BATCH):
            ys = model.representations(crops[start : start + ENCODER_BATCH])
            bases.append(model.prior_u.to_base(model.top.posterior(ys[0]).mean))
    return torch.cat(bases)


def training_bases(model: SelfVAE, sampler: RandomCropSampler, count: int) -> torch.Tensor:
    """The encoder's u of `count` random training crops."""
    crops = [torch.from_numpy(sampler.batch(ENCODER_BATCH)).long() for _ in range(math.ceil(count / ENCODER_BATCH))]
    return encoder_bases(model, torch.cat(crops)[:count])


def u_bits(model: SelfVAE, bases: torch.Tensor, quality: int) -> float:
    """The bits of u that files of these bases send at `quality` (0-based), in all."""
    step = model.latent_steps(quality)[0]
    with torch.no_grad():
        _, rate = rate_of_u(model, bases, step, quantize_as_sent)
    return float(rate.sum())


def fit_u_context(
    model: SelfVAE,
    bases: torch.Tensor,
    seconds: float,
    learning_rate: float,
    batch: int,
    seed: int = 0,
    report: Callable[[int, float], None] | None = None,
    max_steps: int | None = None,
) -> int:
    """Adam on `model`'s u context alone for `seconds` (or max_steps), its learning
    rate falling linearly to zero over them: the bits of u per latent, on random
    batches of `bases` at random qualities. report(step, bits per latent of the
    batch). Returns the number of steps."""
    if seconds <= 0:
        raise ValueError("the fit needs some time")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    parameters = list(model.u_context.parameters())
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimiser = torch.optim.Adam(parameters, lr=learning_rate)
    generator = np.random.default_rng(seed)
    start, step = time.monotonic(), 0
    while (done := max((time.monotonic() - start) / seconds, step / (max_steps or math.inf))) < 1:
        for group in optimiser.param_groups:
            group["lr"] = learning_rate * (1 - done)
        picked = torch.from_numpy(generator.integers(0, len(bases), batch))
        qualities = torch.from_numpy(generator.integers(0, model.config.qualities, batch))
        u_step = model.trained_latent_steps(qualities)[0].detach()
        _, rate = rate_of_u(model, bases[picked], u_step, quantize_mixed)
        loss = rate.mean() / bases[0].numel()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if report is not None:
            report(step, float(loss))
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return step
