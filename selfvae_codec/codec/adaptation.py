"""Per-image adaptation of the pixel heads (`--effort 3`, `full` files).

The encoder fits, on the tile itself, a gain and a bias for every output parameter of
every pixel head (models/heads.py: adapt_parameters), quantises them to integers,
sends them in the tile's `adapt` section and codes the pixels with the adapted heads;
the decoder applies them as they are (no gradient at decode).

The encoder knows every pixel, so each head's parameters are computed once (the
walk of a `full` file, every group given the true earlier ones) and only the
adaptation is fitted, by Adam on a random share of the positions per step, against
the bits of a float copy of the mixtures (for an exact model, its integer parameters
read as floats: the bits match the coder's to 0.01%). A tile keeps its adaptation
only where the fitted bits plus the adaptation's own are below the unadapted bits.
The fit runs on floats, so the adaptation an encoder picks may differ between
machines; the file carries it, so decoding is exact everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..models import fixed_point
from ..models.distributions import DiscretizedLogisticMixture
from ..models.exact_distributions import LATENT_SYMBOL_LIMIT
from ..models.heads import BIAS_BITS, GAIN_BITS, pixel_heads
from ..models.hierarchy import LevelState, TopState, descend
from ..models.levels import GroupState
from ..models.transforms import bin_of, error_bins
from .engine import (
    SCALE_OF_SCALES,
    Coding,
    adaptation_scales,
    latent_steps,
    near_lossless_bounds,
    representations,
    table_bits,
)
from .entropy import EncoderStream

ADAPTATION_EFFORT = 3  # the lowest effort that adapts
FIT_STEPS = 100
FIT_FRACTION = 0.1  # the share of each head's positions one step sees
BIAS_LEARNING_RATE = 0.01
GAIN_LEARNING_RATE = 0.003
# At most this many positions of one head call are kept (at random) for the fit: all
# of a 512x512 tile's, and a bounded memory (about 200 MB) for any larger tile.
RECORDED_POSITIONS = 1 << 16


@dataclass
class HeadSamples:
    """What the pixel heads code, position by position (N of them, all heads): the
    head (`heads`, [N]), its parameters ([N, P], floats on the mixture's scale), the
    value ([N, C]), the range it lies in ([N, C] each; 0..255 but in the last group
    of a 2x2 block) and the values it stands for (first..last, [N, C] each: the value
    itself, or in a near-lossless file its bin)."""

    heads: torch.Tensor
    params: torch.Tensor
    values: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    first: torch.Tensor
    last: torch.Tensor

    @classmethod
    def joined(cls, parts: list[HeadSamples]) -> HeadSamples:
        return cls(*(torch.cat(tensors) for tensors in zip(*(vars(p).values() for p in parts), strict=True)))

    def rows(self, keep: torch.Tensor) -> HeadSamples:
        return HeadSamples(*(t[keep] for t in vars(self).values()))


class Recording(Coding):
    """The walk of a `full` file (near-lossless with a `max_error`) that, instead of
    coding each pixel head's values, records them with the head's parameters (the
    latents are coded as in the file, so the heads see what the decoder's will)."""

    def __init__(self, model, stream, steps, truth: list[torch.Tensor], max_error: int = 0):
        super().__init__(model, stream, "full", steps, truth, max_error)
        self.firsts = error_bins(max_error) if max_error else None
        heads = pixel_heads(model)
        self.head_index = {id(head): i for i, head in enumerate(heads)}
        self.scale = fixed_point.ACT_ONE if model.config.exact else 1
        self.samples: list[HeadSamples] = []
        self.positions = 0  # every position coded, recorded or not
        self.generator = torch.Generator().manual_seed(0)

    def _record(self, head, distribution, values, mask, lo=None, hi=None) -> None:
        count = int(mask.sum())
        self.positions += count
        keep = torch.arange(count)
        if count > RECORDED_POSITIONS:
            keep = torch.randperm(count, generator=self.generator)[:RECORDED_POSITIONS].sort().values
        keep = keep.to(mask.device)

        def at_mask(t):
            return t[0].permute(1, 2, 0)[mask][keep]

        params = at_mask(distribution.params).to(torch.float32) / self.scale
        values = at_mask(values)
        bounded = lo is not None
        if not bounded:
            lo, hi = torch.zeros_like(values), torch.full_like(values, 255)
        else:
            lo, hi = at_mask(lo), at_mask(hi)
        first, last = values, values
        if self.max_error:  # bins: of the values, and the bounds (bins too) as values
            firsts = self.firsts.to(values.device)
            first, last = firsts[bin_of(values, self.max_error)], firsts[bin_of(values, self.max_error) + 1] - 1
            if bounded:
                lo, hi = firsts[lo], firsts[hi + 1] - 1
        heads = torch.full((values.shape[0],), self.head_index[id(head)], dtype=torch.int64, device=values.device)
        self.samples.append(HeadSamples(heads, params, values, lo, hi, first, last))

    def top_representation(self, top: TopState):
        truth = self.truth[0]
        everywhere = torch.ones(truth.shape[-2:], dtype=torch.bool, device=truth.device)
        self._record(self.model.top.likelihood_head, top.likelihood, truth, everywhere)
        return truth

    def representation(self, at: LevelState, z):
        level, truth = at.level, self.truth[at.index + 1]
        context = level.context(at.coarse, z)
        if not level.grouped:
            everywhere = torch.ones(truth.shape[-2:], dtype=torch.bool, device=truth.device)
            self._record(level.head, level.head(context), truth, everywhere)
            return truth
        groups = iter(level.group_heads)

        def record_group(group: GroupState) -> torch.Tensor:
            bounds = ()
            if group.last:
                bounds = near_lossless_bounds(group, self.max_error) if self.max_error else (group.lo, group.hi)
            self._record(next(groups), group.distribution, group.truth, group.mask, *bounds)
            return group.truth

        return level.walk_groups(at.coarse, context, at.fine_size, record_group, truth)


@torch.no_grad()
def record_heads(model, tile: torch.Tensor, step: float, version: int, max_error: int = 0) -> tuple[HeadSamples, int]:
    """The positions the pixel heads code in a `full` file of `tile` (int64 [1, C, h, w]),
    at most RECORDED_POSITIONS of each head call, and how many they code in all."""
    stream = EncoderStream(tile=0, version=version)
    truth = representations(model, tile, max_error)
    policy = Recording(model, stream, latent_steps(model, step, None), truth, max_error)
    descend(model, tile.shape[-2:], policy)
    return HeadSamples.joined(policy.samples), policy.positions


def adapted_bits(samples: HeadSamples, gains: torch.Tensor, biases: torch.Tensor, channels: int, mixtures: int):
    """The bits of the samples' values under their heads with parameters p * (1 + gain)
    + bias (gains, biases: [heads, P] floats), by the float mixtures."""
    params = samples.params * (1 + gains[samples.heads]) + biases[samples.heads]

    def grid(t):
        return t.t()[None, :, :, None]

    mixture = DiscretizedLogisticMixture(grid(params), channels, mixtures)
    bins = (grid(samples.first), grid(samples.last))
    log_p = mixture.log_prob(grid(samples.values), grid(samples.lo), grid(samples.hi), bins)
    return -log_p.sum().double() / math.log(2)


def adaptation_bits(adaptation: torch.Tensor) -> float:
    """The bits of an adaptation's `adapt` section (before the coder's rounding)."""
    scales = adaptation_scales(adaptation)
    rows = [adaptation[:, kind].reshape(-1).numpy() for kind in range(len(scales))]
    return table_bits(np.array(scales), SCALE_OF_SCALES) + sum(map(table_bits, rows, scales))


def fit_adaptation(
    model,
    tile: torch.Tensor,
    step: float,
    version: int,
    seed: int = 0,
    only_if_smaller: bool = True,
    max_error: int = 0,
) -> torch.Tensor | None:
    """The adaptation ([heads, 2, P] integers: gains, biases) that makes `tile`'s `full`
    file (near-lossless with a `max_error`) smallest by the fit, or
    (`only_if_smaller`) None where no adaptation pays for its own bits."""
    samples, coded_positions = record_heads(model, tile, step, version, max_error)
    heads = pixel_heads(model)
    channels, mixtures = heads[0].channels, heads[0].mixtures
    shape = (len(heads), samples.params.shape[1])
    device = samples.params.device
    gains = torch.zeros(shape, device=device, requires_grad=True)
    biases = torch.zeros(shape, device=device, requires_grad=True)
    optimizer = torch.optim.Adam(
        [{"params": [gains], "lr": GAIN_LEARNING_RATE}, {"params": [biases], "lr": BIAS_LEARNING_RATE}]
    )
    generator = torch.Generator().manual_seed(seed)
    positions = samples.values.shape[0]
    count = max(1, round(FIT_FRACTION * positions))
    with torch.enable_grad():
        for _ in range(FIT_STEPS):
            part = samples.rows(torch.randint(0, positions, (count,), generator=generator).to(device))
            optimizer.zero_grad()
            loss = adapted_bits(part, gains, biases, channels, mixtures) / part.values.numel()
            loss.backward()
            optimizer.step()
    quantised_gains = torch.round(gains.detach() * (1 << GAIN_BITS)).clamp(-LATENT_SYMBOL_LIMIT, LATENT_SYMBOL_LIMIT)
    quantised_biases = torch.round(biases.detach() * (1 << BIAS_BITS)).clamp(-LATENT_SYMBOL_LIMIT, LATENT_SYMBOL_LIMIT)
    adaptation = torch.stack([quantised_gains, quantised_biases], dim=1).to(torch.int64).cpu()
    with torch.no_grad():
        zero = torch.zeros(shape, device=device)
        unadapted = adapted_bits(samples, zero, zero, channels, mixtures)
        adapted = adapted_bits(
            samples, quantised_gains / (1 << GAIN_BITS), quantised_biases / (1 << BIAS_BITS), channels, mixtures
        )
    saving = float(unadapted - adapted) * coded_positions / samples.values.shape[0]  # over every position
    if only_if_smaller and saving <= adaptation_bits(adaptation):
        return None
    return adaptation
