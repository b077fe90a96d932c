"""The levels of the hierarchy: the top latent u (q(u | y_1), p(y_1 | u)) and each
level k (q(z_k | y_{k+1}), p(z_k | y_k, z_{k-1}), p(y_{k+1} | y_k, z_k)), with the
2x2-block pixel groups of a downscale level."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from . import fixed_point
from .config import ModelConfig
from .distributions import DiagonalGaussian, DiscretizedLogisticMixture, normalize_pixels
from .heads import GaussianHead, MixtureHead, ResidualBlock
from .layers import DenseBlock, Downsample, Upsample, WNConv2d
from .transforms import block_sum_bounds, pad_to_even

GROUPS = 4  # the pixels of a 2x2 block: top-left, top-right, bottom-left, bottom-right
GROUP_OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))
LAST_GROUP_VALUES = 4  # the last pixel of a block has at most 4 values given the others
FILM_GAIN_BITS = 8  # an exact model's quality gains are multiples of 2^-8


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


class QualityFilm(nn.Module):
    """Per quality setting, a gain and a bias per channel: h * (1 + g) + b, all zero
    at the start (the identity). A float model holds g and b as floats; an exact one
    as integers (g in units of 2^-FILM_GAIN_BITS, b in the activations' 2^-12), and
    computes h + round(h * g / 2^FILM_GAIN_BITS) + b on its integer activations."""

    def __init__(self, qualities: int, channels: int, exact: bool):
        super().__init__()
        shape = (qualities, 2, channels)
        if exact:
            self.register_buffer("table", torch.zeros(shape, dtype=torch.int64))
        else:
            self.table = nn.Parameter(torch.zeros(shape))

    def forward(self, h: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        rows = self.table[quality]
        if not h.is_floating_point() and not rows.any():
            return h  # the identity (an exact model's untrained films)
        gain, bias = (row[..., None, None] for row in rows.unbind(1))  # [B, C, 1, 1] each
        if h.is_floating_point():
            return h * (1 + gain.to(h.dtype)) + bias.to(h.dtype)
        # h + round_shift(h * gain, FILM_GAIN_BITS) + bias, in one product and one shift:
        # h and bias times 2^FILM_GAIN_BITS pass the shift unchanged.
        one = 1 << FILM_GAIN_BITS
        out = h * (one + gain)
        out += bias * one + one // 2
        return out.bitwise_right_shift_(FILM_GAIN_BITS)

    def exact_table(self) -> torch.Tensor:
        """A float film's table as an exact model's integers."""
        return torch.round(self.table.detach().double().cpu() * _film_units()).to(torch.int64)

    def float_table(self) -> torch.Tensor:
        """An exact film's integers as the float table that computes the same."""
        return (self.table.double().cpu() / _film_units()).float()


def _film_units() -> torch.Tensor:
    """How many of an exact film's integer units make one: [1, 2 (gain, bias), 1]."""
    return torch.tensor([1 << FILM_GAIN_BITS, fixed_point.ACT_ONE], dtype=torch.float64).view(1, 2, 1)


@contextlib.contextmanager
def decoding_quality(model: nn.Module, quality: torch.Tensor | int | None) -> Iterator[None]:
    """Meanwhile, the levels of a `quality_film` model decode at `quality` (0-based:
    an int, or a tensor [B] of each example's); other models ignore it."""
    levels = [module for module in model.modules() if isinstance(module, Level)]
    if quality is not None and not torch.is_tensor(quality):
        quality = torch.tensor([quality], dtype=torch.int64)
    before = [level.quality for level in levels]
    for level in levels:
        level.quality = quality
    try:
        yield
    finally:
        for level, earlier in zip(levels, before, strict=True):
            level.quality = earlier


# The decoding parts build_decoding gives a grouped level (and its `upper`).
DECODING_MODULES = ("context_block", "trunk_blocks", "group_heads")


def build_decoding(
    module: nn.Module,
    cfg: ModelConfig,
    width: int,
    fine_channels: int,
    head_blocks: int,
    trunk_blocks: int,
    grouped: bool,
) -> None:
    """Give `module` a level's decoding parts: its context block, the wide residual
    blocks after it (twice its width inside: they deepen and widen what every group
    head sees, and start as the identity) and its pixel heads (`group_heads`: group g
    sees the trunk, the g earlier pixels of its block, and (last group) the block-sum
    remainder 4 y - (a + b + c) that pins it to 4 values; `head` where not grouped)."""
    module.context_block = DenseBlock(width, cfg.growth, cfg.dense_layers)
    module.trunk_blocks = nn.Sequential(*(ResidualBlock(width, 2 * width) for _ in range(trunk_blocks)))
    if grouped:
        module.group_heads = nn.ModuleList(
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
        module.head = MixtureHead(width, width, fine_channels, cfg.mixtures, head_blocks)


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
        upper_decoding: int = 0,
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
        build_decoding(self, cfg, width, fine_channels, head_blocks, trunk_blocks, self.grouped)
        self.quality: torch.Tensor | None = None  # the quality it decodes at (decoding_quality)
        if cfg.quality_film:
            # After the context block, then per trunk block inside it and after it.
            widths = [width] + [2 * width, width] * trunk_blocks
            self.quality_films = nn.ModuleList(QualityFilm(cfg.qualities, w, cfg.exact) for w in widths)
        self.upper_from = upper_decoding - 1  # the first quality (0-based) `upper` decodes
        if upper_decoding:
            if not self.grouped:
                raise ValueError("upper_decoding needs a downscale level")
            self.upper = nn.Module()
            build_decoding(self.upper, cfg, width, fine_channels, head_blocks, trunk_blocks, grouped=True)

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
    def decoding(self) -> nn.Module:
        """The module whose context block, trunk blocks and group heads rebuild the
        current quality: the level itself, or `upper` for the qualities it decodes."""
        if not hasattr(self, "upper"):
            return self
        upper = self.current_quality() >= self.upper_from
        if not upper.any():
            return self
        if not upper.all():
            raise ValueError("a batch of this model decodes qualities of one of its two decodings only")
        return self.upper

    def current_quality(self) -> torch.Tensor:
        if self.quality is None:
            raise RuntimeError("this model decodes at a quality: call it within decoding_quality")
        return self.quality

    def context(self, coarse: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Trunk features at y_k's resolution, shared by the group heads."""
        size = spatial_size(coarse)
        features = self.context_from_coarse(network_input(coarse, self.exact)) + self.context_from_z(z, size)
        decoding = self.decoding()
        features = decoding.context_block(features)
        if decoding is not self or not hasattr(self, "quality_films"):
            return decoding.trunk_blocks(features)
        quality = self.current_quality().to(features.device)
        films = iter(self.quality_films)
        features = next(films)(features, quality)
        for block in self.trunk_blocks:
            inner_film = next(films)
            features = next(films)(block(features, lambda h, film=inner_film: film(h, quality)), quality)
        return features

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
        return self.decoding().group_heads[g](torch.cat(inputs, dim=1)), lo, hi

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
            return self.walk_groups(coarse, context, fine_size, lambda group: group.distribution.generate(method))

        def generate_within(group: GroupState) -> torch.Tensor:
            return group.distribution.generate(method, group.lo, group.hi, group.count)

        return self.walk_groups(coarse, context, fine_size, generate_within)

    def expected(self, coarse: torch.Tensor, z: torch.Tensor, fine_size: tuple[int, int]) -> torch.Tensor:
        """A lossy model's y_{k+1} for training: what `generate(..., 'mean')` gives, as
        floats that carry gradients (rounding passes them straight through)."""
        context = self.context(coarse, z)
        if not self.grouped:
            return self.head(context).expected_values()
        return self.walk_groups(coarse, context, fine_size, lambda group: group.distribution.expected_values())

    def walk_groups(
        self,
        coarse: torch.Tensor,
        context: torch.Tensor,
        fine_size: tuple[int, int],
        choose: Callable[[GroupState], torch.Tensor],
        truth: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The one loop over the four pixel groups of the 2x2 blocks, in order: group
        g's distribution given the groups before it, then `choose(group)` returns its
        values (generated, coded or decoded). Returns y_{k+1}, [B, C, *fine_size]."""
        block_h, block_w = spatial_size(coarse)
        fine_even = coarse.new_zeros(coarse.shape[0], self.fine_channels, 2 * block_h, 2 * block_w)
        true_groups = split_blocks(pad_to_even(truth)) if truth is not None else [None] * GROUPS
        masks = real_group_masks(fine_size, device=coarse.device)
        for g in range(GROUPS):
            earlier = split_blocks(fine_even)[:g]
            distribution, lo, hi = self.group_distribution(g, context, earlier, coarse)
            last = g == GROUPS - 1
            count = LAST_GROUP_VALUES if last else 256
            dy, dx = GROUP_OFFSETS[g]
            fine_even[..., dy::2, dx::2] = choose(
                GroupState(distribution, lo, hi, last, count, masks[g], true_groups[g], coarse, earlier)
            )
            fine_even = refill_padding(fine_even, fine_size)
        return fine_even[..., : fine_size[0], : fine_size[1]]


@dataclass
class GroupState:
    """One group of the 2x2-block walk: its distribution, the values each block can
    still take (lo..hi), and, for coding, which positions are real and their truth."""

    distribution: DiscretizedLogisticMixture
    lo: torch.Tensor
    hi: torch.Tensor
    last: bool  # the last group: at most `count` values are left per block
    count: int
    mask: torch.Tensor  # [h', w'] bools: real pixels (not padding)
    truth: torch.Tensor | None  # the true values (encoder only)
    coarse: torch.Tensor  # y_k: the block means
    earlier: list[torch.Tensor]  # the values of the groups before this one
