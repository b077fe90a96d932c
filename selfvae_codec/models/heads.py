"""The networks' output heads and the residual block: features -> a diagonal Gaussian
(latents) or a discretized logistic mixture (pixels), float or exact by the dtype of
what the layers compute; and the per-image adaptation of the pixel heads."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from . import fixed_point
from .distributions import DiagonalGaussian, DiscretizedLogisticMixture
from .exact_distributions import ExactGaussian, ExactLogisticMixture
from .layers import WNConv2d, elu

# A pixel head's adaptation: per output parameter an integer gain g and bias b, so
# that each parameter p (on the float scale) becomes p * (1 + g / 2^GAIN_BITS) + b / 2^BIAS_BITS.
GAIN_BITS = 6
BIAS_BITS = 8


def gaussian_from_params(params: torch.Tensor) -> DiagonalGaussian | ExactGaussian:
    """Means and log-stds [B, 2C, ...] as a diagonal Gaussian: float, or exact for an
    exact model's integers."""
    return DiagonalGaussian.from_params(params) if params.is_floating_point() else ExactGaussian.from_params(params)


class GaussianHead(nn.Module):
    """Features -> a diagonal Gaussian (mean and log-std maps)."""

    def __init__(self, width: int, channels: int):
        super().__init__()
        self.conv = WNConv2d(width, 2 * channels, 3, init_scale=0.1)

    def forward(self, features: torch.Tensor) -> DiagonalGaussian:
        return gaussian_from_params(self.conv(elu(features)))


class ResidualBlock(nn.Module):
    """h + conv(elu(conv(elu(h)))), whose second conv starts at exactly zero: adding
    one to a trained network leaves the network's output unchanged, so a model can grow.
    `hidden` (default `width`) is the width between the two convs.

    The second conv is a plain one with zero weights, not a weight-norm one with a
    zero gain: at gain 0 the gradient of a weight-norm direction is 0, so the block
    could only learn through its per-channel gains. Zero weights get the full
    gradient from the first step."""

    def __init__(self, width: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or width
        self.inner = WNConv2d(width, hidden, 3)
        self.outer = nn.Conv2d(hidden, width, 3, padding=1)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, h: torch.Tensor, between: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """`between`, if given, acts on the inner conv's output (a quality's gains and biases)."""
        inner = self.inner(elu(h))
        return h + self.outer(elu(inner if between is None else between(inner)))


class MixtureHead(nn.Module):
    """Features -> discretized logistic mixture parameters."""

    def __init__(self, in_ch: int, width: int, channels: int, mixtures: int, blocks: int = 0):
        super().__init__()
        self.channels, self.mixtures = channels, mixtures
        self.hidden = WNConv2d(in_ch, width, 3)
        self.blocks = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)))
        self.out = WNConv2d(width, DiscretizedLogisticMixture.num_params(channels, mixtures), 1, init_scale=0.1)

        self.adaptation: torch.Tensor | None = None  # [2, P] integer gains and biases (adapted_heads)

    def forward(self, features: torch.Tensor) -> DiscretizedLogisticMixture:
        params = self.out(elu(self.blocks(self.hidden(elu(features)))))
        if self.adaptation is not None:
            params = adapt_parameters(params, self.adaptation.to(params.device))
        if not params.is_floating_point():
            return ExactLogisticMixture(params, self.channels, self.mixtures)
        return DiscretizedLogisticMixture(params, self.channels, self.mixtures)


def adapt_parameters(params: torch.Tensor, adaptation: torch.Tensor) -> torch.Tensor:
    """Mixture parameters [B, P, H, W] with an adaptation [2, P] (integer gains and
    biases) applied: in integers for an exact model's activations (* 2^12), whose
    result every machine computes alike; on floats otherwise."""
    gain, bias = (row.view(1, -1, 1, 1) for row in adaptation)
    if params.is_floating_point():
        return params * (1 + gain.to(params.dtype) / (1 << GAIN_BITS)) + bias.to(params.dtype) / (1 << BIAS_BITS)
    bias_shift = fixed_point.ACT_BITS - BIAS_BITS
    return params + fixed_point.round_shift(params * gain, GAIN_BITS) + (bias << bias_shift)


def pixel_heads(model: nn.Module) -> list[MixtureHead]:
    """A model's pixel heads in a fixed order (p(y_1 | u)'s, then each level's)."""
    return [module for module in model.modules() if isinstance(module, MixtureHead)]


@contextlib.contextmanager
def adapted_heads(model: nn.Module, adaptation: torch.Tensor | None) -> Iterator[None]:
    """Meanwhile, the model's pixel heads carry `adaptation` ([heads, 2, P] integers;
    None: none)."""
    heads = pixel_heads(model)
    if adaptation is not None:
        for head, rows in zip(heads, adaptation, strict=True):
            head.adaptation = rows
    try:
        yield
    finally:
        for head in heads:
            head.adaptation = None
