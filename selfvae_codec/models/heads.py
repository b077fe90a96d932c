"""The networks' output heads and the residual block: features -> a diagonal Gaussian
(latents) or a discretized logistic mixture (pixels), float or exact by the dtype of
what the layers compute."""

from __future__ import annotations

import torch
from torch import nn

from .distributions import DiagonalGaussian, DiscretizedLogisticMixture
from .exact_distributions import ExactGaussian, ExactLogisticMixture
from .layers import WNConv2d, elu


class GaussianHead(nn.Module):
    """Features -> a diagonal Gaussian (mean and log-std maps)."""

    def __init__(self, width: int, channels: int):
        super().__init__()
        self.conv = WNConv2d(width, 2 * channels, 3, init_scale=0.1)

    def forward(self, features: torch.Tensor) -> DiagonalGaussian:
        params = self.conv(elu(features))
        return DiagonalGaussian.from_params(params) if params.is_floating_point() else ExactGaussian.from_params(params)


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

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.outer(elu(self.inner(elu(h))))


class MixtureHead(nn.Module):
    """Features -> discretized logistic mixture parameters."""

    def __init__(self, in_ch: int, width: int, channels: int, mixtures: int, blocks: int = 0):
        super().__init__()
        self.channels, self.mixtures = channels, mixtures
        self.hidden = WNConv2d(in_ch, width, 3)
        self.blocks = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)))
        self.out = WNConv2d(width, DiscretizedLogisticMixture.num_params(channels, mixtures), 1, init_scale=0.1)

    def forward(self, features: torch.Tensor) -> DiscretizedLogisticMixture:
        params = self.out(elu(self.blocks(self.hidden(elu(features)))))
        if not params.is_floating_point():
            return ExactLogisticMixture(params, self.channels, self.mixtures)
        return DiscretizedLogisticMixture(params, self.channels, self.mixtures)
