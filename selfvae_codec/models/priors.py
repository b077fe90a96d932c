"""The priors p(u) of the top latent: standard normal, a mixture of Gaussians, and a
RealNVP flow. Each maps u to its base space, where the codec quantises and codes u
under N(0, 1) (to_base / from_base)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import fixed_point
from .distributions import LOG_2PI
from .layers import ELU, elu


def standard_normal_log_prob(value: torch.Tensor) -> torch.Tensor:
    return -0.5 * (value**2 + LOG_2PI)


class StandardNormalPrior(nn.Module):
    """p(u) = N(0, I). Its base space is u itself."""

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(u).flatten(1).sum(1)

    def sample(self, shape: tuple[int, ...], device=None) -> torch.Tensor:
        return torch.randn(shape, device=device)

    def to_base(self, u: torch.Tensor) -> torch.Tensor:
        return u

    def from_base(self, v: torch.Tensor) -> torch.Tensor:
        return v


class MixtureOfGaussiansPrior(nn.Module):
    """Each element of u is an independent mixture of Gaussians, learned per channel."""

    def __init__(self, channels: int, components: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(channels, components))
        self.means = nn.Parameter(torch.randn(channels, components) * 0.5)
        self.log_stds = nn.Parameter(torch.zeros(channels, components))

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        x = u.unsqueeze(2)  # [B, C, 1, H, W]
        means = self.means[None, :, :, None, None]
        log_stds = self.log_stds[None, :, :, None, None]
        log_w = F.log_softmax(self.logits, dim=1)[None, :, :, None, None]
        component = -0.5 * (((x - means) / torch.exp(log_stds)) ** 2 + LOG_2PI) - log_stds
        return torch.logsumexp(log_w + component, dim=2).flatten(1).sum(1)

    def sample(self, shape: tuple[int, ...], device=None) -> torch.Tensor:
        batch, channels, height, width = shape
        probs = F.softmax(self.logits, dim=1)
        pick = torch.multinomial(probs, batch * height * width, replacement=True)  # [C, N]
        means = torch.gather(self.means, 1, pick)
        stds = torch.exp(torch.gather(self.log_stds, 1, pick))
        sample = means + stds * torch.randn_like(means)
        return sample.reshape(channels, batch, height, width).permute(1, 0, 2, 3).contiguous()

    def to_base(self, u: torch.Tensor) -> torch.Tensor:
        return u

    def from_base(self, v: torch.Tensor) -> torch.Tensor:
        return v


class AffineCoupling(nn.Module):
    """RealNVP affine coupling over channels: half the channels set a scale and
    shift for the other half through a small conv net (zero-initialised last layer,
    so the flow starts as the identity)."""

    def __init__(self, channels: int, hidden: int, flip: bool):
        super().__init__()
        self.flip = flip
        self.keep = channels // 2
        self.net = nn.Sequential(
            nn.Conv2d(self.keep, hidden, 3, padding=1),
            ELU(),
            nn.Conv2d(hidden, hidden, 1),
            ELU(),
            nn.Conv2d(hidden, 2 * (channels - self.keep), 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _scale_shift(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_scale, shift = self.net(kept).chunk(2, dim=1)
        if raw_scale.is_floating_point():
            return torch.tanh(raw_scale), shift
        return fixed_point.tanh(raw_scale), shift

    @staticmethod
    def _times_exp(values: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """values * exp(log_scale), for floats or an exact model's activations."""
        if values.is_floating_point():
            return values * torch.exp(log_scale)
        return fixed_point.round_shift(values * fixed_point.exp(log_scale), 16)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Base -> data direction."""
        if self.flip:
            v = v.flip(1)
        kept, moved = v[:, : self.keep], v[:, self.keep :]
        log_scale, shift = self._scale_shift(kept)
        out = torch.cat([kept, self._times_exp(moved, log_scale) + shift], dim=1)
        return out.flip(1) if self.flip else out

    def inverse(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> base direction, with log|det d(inverse)/du| per example."""
        if self.flip:
            u = u.flip(1)
        kept, moved = u[:, : self.keep], u[:, self.keep :]
        log_scale, shift = self._scale_shift(kept)
        out = torch.cat([kept, self._times_exp(moved - shift, -log_scale)], dim=1)
        log_det = -log_scale.flatten(1).sum(1)
        return (out.flip(1) if self.flip else out), log_det


class RealNVPPrior(nn.Module):
    """p(u): u = f(v), v ~ N(0, I), f a stack of affine couplings."""

    def __init__(self, channels: int, layers: int, hidden: int):
        super().__init__()
        if channels < 2:
            raise ValueError("a RealNVP prior needs at least 2 latent channels")
        self.couplings = nn.ModuleList(AffineCoupling(channels, hidden, flip=i % 2 == 1) for i in range(layers))

    def from_base(self, v: torch.Tensor) -> torch.Tensor:
        for coupling in self.couplings:
            v = coupling(v)
        return v

    def inverse_with_log_det(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = torch.zeros(u.shape[0], device=u.device)
        for coupling in reversed(self.couplings):
            u, step = coupling.inverse(u)
            log_det = log_det + step
        return u, log_det

    def to_base(self, u: torch.Tensor) -> torch.Tensor:
        return self.inverse_with_log_det(u)[0]

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        v, log_det = self.inverse_with_log_det(u)
        return standard_normal_log_prob(v).flatten(1).sum(1) + log_det

    def sample(self, shape: tuple[int, ...], device=None) -> torch.Tensor:
        return self.from_base(torch.randn(shape, device=device))


def checkerboard(size: tuple[int, int], device=None) -> torch.Tensor:
    """[1, 1, H, W] booleans, True on the first half of a checkerboard ((i + j) even):
    the latents a u_context model sends first."""
    rows = torch.arange(size[0], device=device)[:, None]
    columns = torch.arange(size[1], device=device)[None, :]
    return ((rows + columns) % 2 == 0)[None, None]


class CheckerboardContext(nn.Module):
    """The Gaussian of u's second checkerboard half in its prior's base space, given
    the first half as sent (zeros elsewhere) and u's steps (one plane per channel):
    a 3x3 convolution, a 1x1 one and a 3x3 head, each after an ELU but the first.
    Its head starts at zero, that is at N(0, 1): where u was coded before."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.inner = nn.Conv2d(2 * channels, width, 3, padding=1)
        self.hidden = nn.Conv2d(width, width, 1)
        self.head = nn.Conv2d(width, 2 * channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, first_half: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """[B, 2C, H, W]: the means and log standard deviations (DiagonalGaussian /
        ExactGaussian.from_params), float or exact as the layers compute."""
        steps = step.to(first_half.dtype).expand(first_half.shape[0], -1, *first_half.shape[-2:])
        features = self.inner(torch.cat([first_half, steps], dim=1))
        return self.head(elu(self.hidden(elu(features))))
