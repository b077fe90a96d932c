"""The selfVAE family (Gatopoulos & Tomczak 2020) as one hierarchical model.

Representations ys = [y_1, ..., y_L, x] with L = number of levels:
  - selfvae-downscale: y_k = downscale^(K+1-k)(x), each level halves the size;
  - selfvae-sketch: y_1 = sketch(x), same size as x;
  - vae: no representation, y_1 = x.
Latents: u (top, q(u | y_1), prior p(u)) and z_k for every level k
(q(z_k | y_{k+1}), conditional prior p(z_k | y_k, z_{k-1}) with z_0 = u).
Likelihoods: p(y_1 | u), then p(y_{k+1} | y_k, z_k) for every level.

Sizes: a tensor living at stride s of an image of size (H, W) has size
ceil(H/s) x ceil(W/s). Each network pads its input by replication and crops its
output, so every size works and no padded pixel is ever counted or coded.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from . import fixed_point
from .config import ModelConfig
from .distributions import (
    DiagonalGaussian,
    DiscretizedLogisticMixture,
    MixtureOfGaussiansPrior,
    RealNVPPrior,
    StandardNormalPrior,
    logistic_bin_log_prob,
    normalize_pixels,
)
from .exact_distributions import ExactGaussian, ExactLogisticMixture
from .exact_layers import make_exact_layers
from .families import FAMILIES
from .layers import DenseBlock, Downsample, Upsample, WNConv2d, data_dependent_init, elu
from .transforms import block_sum_bounds, downscale_pyramid, pad_to_even, size_at_stride

INITIAL_LOG2_STEP_SPAN = 1.5  # a lossy model's steps start at 2^1.5 (coarsest) .. 2^-1.5 (finest)
GROUPS = 4  # the pixels of a 2x2 block: top-left, top-right, bottom-left, bottom-right
GROUP_OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))
LAST_GROUP_VALUES = 4  # the last pixel of a block has at most 4 values given the others


def spatial_size(t: torch.Tensor) -> tuple[int, int]:
    return int(t.shape[-2]), int(t.shape[-1])


def split_blocks(fine_even: torch.Tensor) -> list[torch.Tensor]:
    """The four pixels of every 2x2 block of an even-sized image, as 4 block grids."""
    return [fine_even[..., dy::2, dx::2] for dy, dx in GROUP_OFFSETS]


def real_group_masks(fine_size: tuple[int, int], device=None) -> list[torch.Tensor]:
    """Which block positions of each group hold real (not padding) pixels: [h', w'] bools."""
    height, width = fine_size
    rows = torch.arange(-(-height // 2), device=device)
    cols = torch.arange(-(-width // 2), device=device)
    masks = []
    for dy, dx in GROUP_OFFSETS:
        row_ok = (2 * rows + dy) < height
        col_ok = (2 * cols + dx) < width
        masks.append(row_ok[:, None] & col_ok[None, :])
    return masks


def network_input(values: torch.Tensor, exact: bool) -> torch.Tensor:
    """Pixel values (integers 0..255) on the networks' [-1, 1] input scale: floats, or
    an exact model's integer activations."""
    return fixed_point.pixels_to_activations(2 * values) if exact else normalize_pixels(values)


def refill_padding(fine_even: torch.Tensor, fine_size: tuple[int, int]) -> torch.Tensor:
    """Make the padding row / column of an even-sized image copies of the last real
    ones (replicate padding), after some groups were filled in."""
    height, width = fine_size
    out = fine_even
    if out.shape[-1] > width:
        out = out.clone()
        out[..., width:] = out[..., width - 1 : width]
    if out.shape[-2] > height:
        out = out.clone()
        out[..., height:, :] = out[..., height - 1 : height, :]
    return out


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


class TopLatent(nn.Module):
    """q(u | y_1) and p(y_1 | u)."""

    def __init__(self, cfg: ModelConfig, y_channels: int):
        super().__init__()
        width = cfg.top_width
        self.exact = cfg.exact
        self.encoder = Downsample(y_channels, width, cfg.u_stride, cfg.growth, cfg.dense_layers)
        self.posterior_head = GaussianHead(width, cfg.u_channels)
        self.decoder = Upsample(cfg.u_channels, width, cfg.u_stride)
        self.decoder_block = DenseBlock(width, cfg.growth, cfg.dense_layers)
        self.likelihood_head = MixtureHead(width, width, y_channels, cfg.mixtures)

    def posterior(self, y_top: torch.Tensor) -> DiagonalGaussian:
        return self.posterior_head(self.encoder(network_input(y_top, self.exact)))

    def likelihood(self, u: torch.Tensor, size: tuple[int, int]) -> DiscretizedLogisticMixture:
        return self.likelihood_head(self.decoder_block(self.decoder(u, size)))


class Level(nn.Module):
    """One level k: q(z_k | y_{k+1}), p(z_k | y_k, z_{k-1}) and p(y_{k+1} | y_k, z_k).

    `coarse_stride`: how many times smaller y_k is than y_{k+1} (2 downscale, 1 sketch).
    `prev_ratio`: how many times coarser z_{k-1} (or u) is than z_k.
    `z_stride`: how many times smaller z_k is than y_{k+1}.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        width: int,
        coarse_channels: int,
        fine_channels: int,
        coarse_stride: int,
        prev_channels: int,
        prev_ratio: int,
        z_stride: int,
        head_blocks: int = 0,
        trunk_blocks: int = 0,
    ):
        super().__init__()
        self.fine_channels = fine_channels
        self.exact = cfg.exact
        self.grouped = coarse_stride == 2  # code y_{k+1} in 2x2-block groups given its block means
        self.coarse_stride = coarse_stride
        # A lossy model's posterior also sees the decoder's y_k (closed loop), and its
        # generation does not hold y_k's block means.
        self.lossy = cfg.lossy
        growth, layers = cfg.growth, cfg.dense_layers
        posterior_inputs = fine_channels + (coarse_channels if cfg.lossy else 0)
        self.posterior_net = Downsample(posterior_inputs, width, z_stride, growth, layers)
        self.posterior_head = GaussianHead(width, cfg.z_channels)
        self.prior_from_coarse = Downsample(coarse_channels, width, z_stride // coarse_stride, growth, layers)
        self.prior_from_prev = Upsample(prev_channels, width, prev_ratio)
        self.prior_block = DenseBlock(width, growth, layers)
        self.prior_head = GaussianHead(width, cfg.z_channels)
        # Likelihood trunk at y_k's resolution (the block grid when grouped).
        self.context_from_coarse = WNConv2d(coarse_channels, width, 3)
        self.context_from_z = Upsample(cfg.z_channels, width, z_stride // coarse_stride)
        self.context_block = DenseBlock(width, growth, layers)
        # Wide residual blocks after the trunk (twice its width inside): they deepen
        # and widen what every group head sees, and start as the identity.
        self.trunk_blocks = nn.Sequential(*(ResidualBlock(width, 2 * width) for _ in range(trunk_blocks)))
        if self.grouped:
            # Group g sees the trunk, the g earlier pixels of its block, and (last group)
            # the block-sum remainder 4 y - (a + b + c) that pins it to 4 values.
            self.group_heads = nn.ModuleList(
                MixtureHead(
                    width + fine_channels * (g + (1 if g == GROUPS - 1 else 0)),
                    width,
                    fine_channels,
                    cfg.mixtures,
                    head_blocks,
                )
                for g in range(GROUPS)
            )
        else:
            self.head = MixtureHead(width, width, fine_channels, cfg.mixtures, head_blocks)

    # -- latents -------------------------------------------------------------------
    def posterior(self, fine: torch.Tensor, coarse: torch.Tensor | None = None) -> DiagonalGaussian:
        """q(z_k | y_{k+1}); a lossy model's also sees `coarse`, the decoder's y_k."""
        inputs = fine
        if self.lossy:
            stride = self.coarse_stride
            beside = coarse.repeat_interleave(stride, dim=-2).repeat_interleave(stride, dim=-1)
            dtype = torch.promote_types(fine.dtype, coarse.dtype)
            beside = beside[..., : fine.shape[-2], : fine.shape[-1]]
            inputs = torch.cat([fine.to(dtype), beside.to(dtype)], dim=1)
        return self.posterior_head(self.posterior_net(network_input(inputs, self.exact)))

    def prior(self, coarse: torch.Tensor, prev_latent: torch.Tensor, z_size: tuple[int, int]) -> DiagonalGaussian:
        from_coarse = self.prior_from_coarse(network_input(coarse, self.exact))[..., : z_size[0], : z_size[1]]
        features = from_coarse + self.prior_from_prev(prev_latent, z_size)
        return self.prior_head(self.prior_block(features))

    # -- likelihood ----------------------------------------------------------------
    def context(self, coarse: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Trunk features at y_k's resolution, shared by the group heads."""
        size = spatial_size(coarse)
        features = self.context_from_coarse(network_input(coarse, self.exact)) + self.context_from_z(z, size)
        return self.trunk_blocks(self.context_block(features))

    def group_distribution(self, g: int, context: torch.Tensor, earlier: list[torch.Tensor], coarse: torch.Tensor):
        """The distribution of group g's pixels (a block grid) given the earlier groups.

        Returns (distribution, lo, hi): the inclusive range of values for which the
        block can still be completed so that it downscales to `coarse`. True images
        always lie in it; the likelihood restricts the last group to it (at most 4
        values) and generation restricts every group, so generated blocks keep their
        means.
        """
        inputs = [context] + [network_input(group, self.exact) for group in earlier]
        low_sum, high_sum = block_sum_bounds(coarse)
        known = sum(earlier) if earlier else torch.zeros_like(coarse)
        after = GROUPS - 1 - g
        lo = (low_sum - known - 255 * after).clamp(0, 255)
        hi = (high_sum - known).clamp(0, 255)
        if g == GROUPS - 1:
            twice_remainder = low_sum + high_sum - 2 * known  # twice the centre of the feasible range
            if self.exact:
                inputs.append(fixed_point.pixels_to_activations(twice_remainder))
            else:
                inputs.append(twice_remainder.to(torch.float32) / 255.0 - 1.0)
        return self.group_heads[g](torch.cat(inputs, dim=1)), lo, hi

    def log_prob(self, fine: torch.Tensor, coarse: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(y_{k+1} | y_k, z_k) per example (nats), counting real pixels only."""
        context = self.context(coarse, z)
        if not self.grouped:
            return self.head(context).log_prob(fine).flatten(1).sum(1)
        groups = split_blocks(pad_to_even(fine))
        masks = real_group_masks(spatial_size(fine), device=fine.device)
        total = torch.zeros(fine.shape[0], device=fine.device)
        for g in range(GROUPS):
            dist, lo, hi = self.group_distribution(g, context, groups[:g], coarse)
            if g == GROUPS - 1:
                log_p = dist.log_prob(groups[g], lo, hi)
            else:  # the range binds only at extreme block means: not worth its cost here
                log_p = dist.log_prob(groups[g])
            total = total + (log_p * masks[g]).flatten(1).sum(1)
        return total

    def generate(self, coarse: torch.Tensor, z: torch.Tensor, fine_size: tuple[int, int], method: str) -> torch.Tensor:
        """y_{k+1} from p(y_{k+1} | y_k, z_k) by 'mean', 'mode' or 'sample'."""
        context = self.context(coarse, z)
        if not self.grouped:
            return self.head(context).generate(method)
        if self.lossy:
            return self.walk_groups(coarse, context, fine_size, lambda step: step.distribution.generate(method))
        return self.walk_groups(
            coarse, context, fine_size, lambda step: step.distribution.generate(method, step.lo, step.hi, step.count)
        )

    def expected(self, coarse: torch.Tensor, z: torch.Tensor, fine_size: tuple[int, int]) -> torch.Tensor:
        """A lossy model's y_{k+1} for training: what `generate(..., 'mean')` gives, as
        floats that carry gradients (rounding passes them straight through)."""
        context = self.context(coarse, z)
        if not self.grouped:
            return self.head(context).expected_values()
        return self.walk_groups(coarse, context, fine_size, lambda step: step.distribution.expected_values())

    def walk_groups(
        self,
        coarse: torch.Tensor,
        context: torch.Tensor,
        fine_size: tuple[int, int],
        choose: Callable[[GroupStep], torch.Tensor],
        truth: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The one loop over the four pixel groups of the 2x2 blocks, in order: group
        g's distribution given the groups before it, then `choose(step)` returns its
        values (generated, coded or decoded). Returns y_{k+1}, [B, C, *fine_size]."""
        block_h, block_w = spatial_size(coarse)
        fine_even = coarse.new_zeros(coarse.shape[0], self.fine_channels, 2 * block_h, 2 * block_w)
        true_groups = split_blocks(pad_to_even(truth)) if truth is not None else [None] * GROUPS
        masks = real_group_masks(fine_size, device=coarse.device)
        for g in range(GROUPS):
            distribution, lo, hi = self.group_distribution(g, context, split_blocks(fine_even)[:g], coarse)
            last = g == GROUPS - 1
            count = LAST_GROUP_VALUES if last else 256
            dy, dx = GROUP_OFFSETS[g]
            fine_even[..., dy::2, dx::2] = choose(
                GroupStep(distribution, lo, hi, last, count, masks[g], true_groups[g])
            )
            fine_even = refill_padding(fine_even, fine_size)
        return fine_even[..., : fine_size[0], : fine_size[1]]


def quantize_latents(values: torch.Tensor, center: torch.Tensor, step: torch.Tensor, noisy: bool) -> torch.Tensor:
    """center + step * round((values - center) / step), as the coder sends them; with
    `noisy`, values + uniform noise of one step's width (its training stand-in)."""
    if noisy:
        return values + step * (torch.rand_like(values) - 0.5)
    return center + step * torch.round((values - center) / step)


def latent_bits(offset: torch.Tensor, step: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Bits per example of latents `offset` from their prior means, each the mass of
    its step-wide bin under a logistic with standard deviation `std`."""
    return -logistic_bin_log_prob(offset, step, std).flatten(1).sum(1) / math.log(2)


@dataclass
class GroupStep:
    """One group of the 2x2-block walk: its distribution, the values each block can
    still take (lo..hi), and, for coding, which positions are real and their truth."""

    distribution: DiscretizedLogisticMixture
    lo: torch.Tensor
    hi: torch.Tensor
    last: bool  # the last group: at most `count` values are left per block
    count: int
    mask: torch.Tensor  # [h', w'] bools: real pixels (not padding)
    truth: torch.Tensor | None  # the true values (encoder only)


@dataclass
class Inference:
    """Everything the encoder infers from an image (posterior means / samples)."""

    ys: list[torch.Tensor]
    u: torch.Tensor
    zs: list[torch.Tensor | None]  # None where the mode sends no z


class SelfVAE(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.family = FAMILIES[config.family]
        self.y_strides = self.family.y_strides(config)
        self.y_channels = y_channels = self.family.y_channels(config)
        self.u_stride = self.y_strides[0] * config.u_stride
        self.z_strides = [z * y for z, y in zip(config.level_z_strides, self.y_strides[1:], strict=True)]
        self.top = TopLatent(config, y_channels[0])
        prior = {
            "realnvp": lambda: RealNVPPrior(config.u_channels, config.flow_layers, config.flow_hidden),
            "standard": StandardNormalPrior,
            "mog": lambda: MixtureOfGaussiansPrior(config.u_channels, config.mog_components),
        }[config.prior]
        self.prior_u = prior()
        levels = []
        for k in range(config.num_levels):
            prev_stride = self.u_stride if k == 0 else self.z_strides[k - 1]
            prev_channels = config.u_channels if k == 0 else config.z_channels
            levels.append(
                Level(
                    config,
                    config.level_widths[k],
                    y_channels[k],
                    y_channels[k + 1],
                    coarse_stride=self.y_strides[k] // self.y_strides[k + 1],
                    prev_channels=prev_channels,
                    prev_ratio=prev_stride // self.z_strides[k],
                    z_stride=config.level_z_strides[k],
                    head_blocks=config.level_head_blocks[k],
                    trunk_blocks=config.level_trunk_blocks[k],
                )
            )
        self.levels = nn.ModuleList(levels)
        if config.lossy and config.exact:
            # The steps as multiples of 2^-12 (set by `to_exact`).
            self.register_buffer("u_steps_q12", torch.ones(config.qualities, config.u_channels, dtype=torch.int64))
            z_shape = (config.qualities, config.num_levels, config.z_channels)
            self.register_buffer("z_steps_q12", torch.ones(z_shape, dtype=torch.int64))
        elif config.lossy:
            # Each quality's latent steps, per channel, in log space: u's (in the prior's
            # base space) and every z_k's. Quality 0 is the coarsest.
            qualities = torch.arange(config.qualities, dtype=torch.float32)
            start = (INITIAL_LOG2_STEP_SPAN * (1 - 2 * qualities / max(1, config.qualities - 1))) * math.log(2)
            self.u_log_steps = nn.Parameter(start[:, None].repeat(1, config.u_channels))
            self.z_log_steps = nn.Parameter(start[:, None, None].repeat(1, config.num_levels, config.z_channels))
        if config.exact:
            make_exact_layers(self)

    # -- geometry ------------------------------------------------------------------
    @property
    def stride(self) -> int:
        """The largest stride of any tensor relative to x."""
        return max([self.u_stride] + self.z_strides)

    def representations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[y_1, ..., y_L, x] as int64 tensors."""
        return self.family.representations(x.to(torch.int64), self.config)

    def u_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        return size_at_stride(image_size, self.u_stride)

    def z_size(self, k: int, image_size: tuple[int, int]) -> tuple[int, int]:
        return size_at_stride(image_size, self.z_strides[k])

    def y_size(self, k: int, image_size: tuple[int, int]) -> tuple[int, int]:
        return size_at_stride(image_size, self.y_strides[k])

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.config.image_channels:
            raise ValueError(f"expected images [B, {self.config.image_channels}, H, W], got {tuple(x.shape)}")

    # -- objective -----------------------------------------------------------------
    def elbo_terms(self, x: torch.Tensor, analytic_kl: bool = True) -> dict[str, torch.Tensor]:
        """Per-example terms of the negative ELBO in nats, one sample of the posterior.

        Keys: re_y1 .. re_y{L}, re_x (reconstruction, -log p), kl_u, kl_z1 .. kl_z{L};
        '_kl_z_maps' holds the elementwise KL maps (for free bits in training). With
        analytic_kl=False every KL term is the single-sample log q - log p, so minus
        the total is an importance weight log p(x, latents) - log q(latents | x).
        """
        self._check_input(x)
        ys = self.representations(x)
        image_size = spatial_size(x)
        names = [f"y{k + 1}" for k in range(len(ys) - 1)] + ["x"]
        q_u = self.top.posterior(ys[0])
        u = q_u.rsample()
        terms: dict[str, torch.Tensor] = {}
        terms["kl_u"] = q_u.log_prob(u).flatten(1).sum(1) - self.prior_u.log_prob(u)
        terms[f"re_{names[0]}"] = -self.top.likelihood(u, spatial_size(ys[0])).log_prob(ys[0]).flatten(1).sum(1)
        kl_maps = []
        prev = u
        for k, level in enumerate(self.levels):
            q_z = level.posterior(ys[k + 1], ys[k])
            z = q_z.rsample()
            p_z = level.prior(ys[k], prev, self.z_size(k, image_size))
            kl_map = q_z.kl(p_z) if analytic_kl else q_z.log_prob(z) - p_z.log_prob(z)
            kl_maps.append(kl_map)
            terms[f"kl_z{k + 1}"] = kl_map.flatten(1).sum(1)
            terms[f"re_{names[k + 1]}"] = -level.log_prob(ys[k + 1], ys[k], z)
            prev = z
        terms["_kl_z_maps"] = kl_maps
        return terms

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ELBO terms (what training and DistributedDataParallel call)."""
        return self.elbo_terms(x)

    def dimensions(self, x: torch.Tensor) -> int:
        """Number of subpixels of x: the denominator of bits per dimension."""
        return int(x.shape[1] * x.shape[2] * x.shape[3])

    def elbo_bpd(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Negative ELBO and its terms in bits per dimension, averaged over the batch.
        'total' is the sum of the other terms."""
        terms = self.elbo_terms(x)
        scale = 1.0 / (self.dimensions(x) * math.log(2))
        out = {name: value.mean() * scale for name, value in terms.items() if not name.startswith("_")}
        out["total"] = sum(out.values())
        return out

    def latent_steps(self, quality: int, scale: float = 1.0) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A lossy model's latent steps at `quality` (0-based) times `scale`: u's and
        each z_k's, [1, C, 1, 1] per channel. Floats, or for an exact model integers in
        units of 2^-12 (at least 1), computed from its integer steps."""
        if not 0 <= quality < self.config.qualities:
            raise ValueError(f"quality index must be from 0 to {self.config.qualities - 1}")
        if self.config.exact:

            def steps(q12: torch.Tensor) -> torch.Tensor:
                values = [max(1, round(int(v) * scale)) for v in q12.tolist()]
                return torch.tensor(values, dtype=torch.int64, device=q12.device).view(1, -1, 1, 1)

            return steps(self.u_steps_q12[quality]), [steps(row) for row in self.z_steps_q12[quality]]
        u_step, z_steps = self._float_latent_steps(torch.tensor([quality], device=self.u_log_steps.device))
        return u_step * scale, [step * scale for step in z_steps]

    def _float_latent_steps(self, quality: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A float lossy model's latent steps for each example's quality (0-based, [B]):
        u's and each z_k's, [B, C, 1, 1]."""
        u_step = torch.exp(self.u_log_steps[quality])[:, :, None, None]
        z_steps = torch.exp(self.z_log_steps[quality])[:, :, :, None, None]  # [B, L, C, 1, 1]
        return u_step, list(z_steps.unbind(1))

    def rate_distortion_terms(
        self, x: torch.Tensor, quality: torch.Tensor, noisy: bool, conditional: bool = False
    ) -> dict[str, torch.Tensor]:
        """What a lossy model trains on, per example: the bits of u and every z_k
        (rate_u, rate_z1 ..) and the squared error of the rs2 reconstruction summed
        over subpixels (squared_error). `quality` [B] picks each example's latent steps.

        The walk is the decoder's: y_1 from u, then each level's prior from the
        reconstructed y_k, z_k from the posterior given the true y_{k+1} and that y_k,
        y_{k+1} generated from y_k and z_k. Latents are quantised on their steps as the
        coder does (relative to the prior mean), or, with `noisy`, get uniform noise of
        the same width instead (training). The rates are those of the discretized
        logistics that code them. coarse_mse: the mean over the coarser levels of
        each reconstructed y_k's MSE per subpixel against the true one.

        With `conditional`, the walk is that of a conditional file instead: every y_k
        is the true one, coded losslessly (rate_y1 .. rate_yL, bits), and the z's are
        inferred and coded given it; there is no distortion term."""
        self._check_input(x)
        if not self.config.lossy:
            raise ValueError("rate_distortion_terms needs a lossy model (config.qualities > 0)")
        ys = self.representations(x)
        image_size = spatial_size(x)
        u_step, z_steps = self._float_latent_steps(quality)
        base = self.prior_u.to_base(self.top.posterior(ys[0]).mean)
        base = quantize_latents(base, torch.zeros_like(base), u_step, noisy)
        terms = {"rate_u": latent_bits(base, u_step, torch.ones_like(base))}
        u = self.prior_u.from_base(base)
        top = self.top.likelihood(u, self.y_size(0, image_size))
        if conditional:
            terms["rate_y1"] = -top.log_prob(ys[0]).flatten(1).sum(1) / math.log(2)
            y = ys[0]
        else:
            y = top.expected_values()
        prev = u
        coarse_errors = []
        for k, level in enumerate(self.levels):
            if not conditional:
                coarse_errors.append((y - ys[k].to(y.dtype)).square().flatten(1).mean(1))
            prior = level.prior(y, prev, self.z_size(k, image_size))
            z = quantize_latents(level.posterior(ys[k + 1], y).mean, prior.mean, z_steps[k], noisy)
            terms[f"rate_z{k + 1}"] = latent_bits(z - prior.mean, z_steps[k], prior.std)
            if not conditional:
                y = level.expected(y, z, self.y_size(k + 1, image_size))
            elif k + 1 < len(self.levels):  # x itself is not coded
                terms[f"rate_y{k + 2}"] = -level.log_prob(ys[k + 1], y, z) / math.log(2)
                y = ys[k + 1]
            prev = z
        if conditional:
            return terms
        terms["squared_error"] = (y - ys[-1].to(y.dtype)).square().flatten(1).sum(1)
        terms["coarse_mse"] = torch.stack(coarse_errors).mean(0)
        return terms

    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation of the weight-normalised layers from a batch."""
        with data_dependent_init(self):
            self.elbo_terms(x)

    # -- inference and generative paths -------------------------------------------
    def infer(self, x: torch.Tensor, with_z: bool = True) -> Inference:
        """Posterior means of u and every z_k (what an encoder sends); without `with_z`
        the z's are left out (None), for modes that do not send them."""
        self._check_input(x)
        ys = self.representations(x)
        u = self.top.posterior(ys[0]).mean
        zs = [level.posterior(ys[k + 1], ys[k]).mean if with_z else None for k, level in enumerate(self.levels)]
        return Inference(ys, u, zs)

    def _generate_from(
        self,
        u: torch.Tensor,
        image_size: tuple[int, int],
        zs: list[torch.Tensor | None],
        ys: list[torch.Tensor | None],
        method: str,
        latent_method: str,
    ) -> torch.Tensor:
        """Walk down the hierarchy. zs[k] / ys[k] given (not None) are used as they are;
        the others are generated: y's by `method`, z's by `latent_method`
        ('mean' = the prior mean, 'sample' = a prior sample)."""
        y = ys[0]
        if y is None:
            y = self.top.likelihood(u, self.y_size(0, image_size)).generate(method)
        prev = u
        for k, level in enumerate(self.levels):
            z = zs[k]
            if z is None:
                p_z = level.prior(y, prev, self.z_size(k, image_size))
                z = p_z.mean if latent_method == "mean" else p_z.rsample()
            given = ys[k + 1]
            y = given if given is not None else level.generate(y, z, self.y_size(k + 1, image_size), method)
            prev = z
        return y.to(torch.uint8)

    @torch.no_grad()
    def sample(self, count: int, image_size: tuple[int, int], method: str = "sample") -> torch.Tensor:
        """Unconditional generation: u ~ p(u), then every level."""
        shape = (count, self.config.u_channels, *self.u_size(image_size))
        if self.config.exact:  # the base sample as activations
            base = torch.round(torch.randn(shape, device=self.device) * fixed_point.ACT_ONE).to(torch.int64)
            u = self.prior_u.from_base(base)
        else:
            u = self.prior_u.sample(shape, device=self.device)
        empty = [None] * len(self.levels)
        return self._generate_from(u, image_size, empty, [None] * (len(self.levels) + 1), method, "sample")

    @torch.no_grad()
    def generate_from_representation(
        self, y_top: torch.Tensor, image_size: tuple[int, int], method: str = "sample"
    ) -> torch.Tensor:
        """Conditional generation from y_1 (e.g. a tiny image): z's sampled from their
        priors, finer y's generated. u is inferred from y_1 (only the z-priors use it)."""
        u = self.top.posterior(y_top).mean
        ys = [y_top.to(torch.int64)] + [None] * len(self.levels)
        return self._generate_from(u, image_size, [None] * len(self.levels), ys, method, "sample")

    def max_upscale(self) -> int:
        """The largest factor `upscale` takes: 2 per downscale level (1: none)."""
        return 2 ** len(self.levels) if self.family.downscales else 1

    @torch.no_grad()
    def upscale(
        self, small: torch.Tensor, factor: int, image_size: tuple[int, int], method: str = "mean"
    ) -> torch.Tensor:
        """An image of `image_size` whose factor-times downscale (factor = 2^k) is
        `small` ([B, C, h, w] integers): `small` is taken as the representation k
        levels above x. What lies below it (its own downscales and their z's) is
        inferred; the k levels above it are generated, their z's at the prior means
        ('mean', 'mode') or sampled ('sample')."""
        if factor < 2 or factor & (factor - 1) or factor > self.max_upscale():
            raise ValueError(f"the factor must be a power of two from 2 to {self.max_upscale()}, got {factor}")
        steps = factor.bit_length() - 1
        known = len(self.levels) + 1 - steps  # ys[0 .. known-1] are given or inferred
        expected = self.y_size(known - 1, image_size)
        if spatial_size(small) != expected:
            raise ValueError(
                f"a {image_size} image downscales to {expected} at factor {factor}, not {spatial_size(small)}"
            )
        ys = downscale_pyramid(small, known - 1)
        u = self.top.posterior(ys[0]).mean
        zs = [level.posterior(ys[k + 1], ys[k]).mean if k + 1 < known else None for k, level in enumerate(self.levels)]
        latent_method = "sample" if method == "sample" else "mean"
        return self._generate_from(u, image_size, zs, ys + [None] * steps, method, latent_method)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mode: str, method: str = "mean", z_from_prior: bool = False) -> torch.Tensor:
        """The paper's reconstructions (figure 3), with unquantised latents:
        rs1 (u only), rs2 (u and every z_k), conditional (u, z's and true y's) and
        full (x itself). `z_from_prior` replaces the inferred z's by their prior means,
        which shows how much the decoder uses them. Lossless models only: a lossy
        model's reconstructions are its codec's, at a quality setting."""
        if self.config.lossy:
            raise ValueError("a lossy model reconstructs through its codec, at a quality setting")
        inferred = self.infer(x)
        size = spatial_size(x)
        levels = len(self.levels)
        zs = [None] * levels if z_from_prior else inferred.zs
        if mode == "full":
            return x.to(torch.uint8)
        if mode == "rs1":
            return self._generate_from(inferred.u, size, [None] * levels, [None] * (levels + 1), method, "mean")
        if mode == "rs2":
            return self._generate_from(inferred.u, size, zs, [None] * (levels + 1), method, "mean")
        if mode == "conditional":
            ys = inferred.ys[:-1] + [None]
            return self._generate_from(inferred.u, size, zs, ys, method, "mean")
        raise ValueError(f"unknown reconstruction mode {mode!r}")

    @property
    def device(self) -> torch.device:
        # Exact models hold only buffers.
        return next(itertools.chain(self.parameters(), self.buffers())).device

    # -- identity ------------------------------------------------------------------
    def fingerprint(self) -> str:
        """SHA-256 of the config and every tensor of the state dict (names, shapes,
        dtypes and bytes): two models code compatibly only if these agree."""
        digest = hashlib.sha256(self.config.to_json().encode())
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
