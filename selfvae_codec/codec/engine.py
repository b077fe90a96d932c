"""The walk down the hierarchy that both the encoder and the decoder run.

The encoder passes `truth` (the image's representations and posterior means) and an
EncoderStream; the decoder passes no truth and a DecoderStream. Everything else is
the same code on the same inputs and shapes, so the decoder rebuilds the encoder's
probabilities bit for bit.

Sections, in decoding order (a prefix of a file is a valid file of a lower mode):

    full:        u, y1, z1, y2, z2, ..., zL, x
    conditional: u, y1, z1, y2, z2, ..., zL          (x from p(x | y_L, z_L))
    rs2:         u, z1, ..., zL                      (y's generated, z's as sent)
    rs1:         u                                   (y's generated, z's prior means)

Latents: u is quantised in the prior's base space v = f^-1(u) on a grid of step
`step` and coded under N(0, 1); each z_k is coded as round((mu_q - mu_p) / step)
under the discretized N(0, sigma_p / step), sigma_p taken from a fixed scale table.
Exact models do the same in integers: the step is rounded to a multiple of 2^-12,
and the latents are coded under discretized logistics from integer tables
(`latent_table`) with the same standard deviation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..bitstream import MODES
from ..models import fixed_point
from ..models.distributions import DiagonalGaussian, DiscretizedLogisticMixture
from ..models.exact_distributions import (
    BIN_VALUES,
    LATENT_SCALES,
    ExactGaussian,
    ExactLogisticMixture,
    coder_counts,
)
from ..models.heads import adapted_heads, pixel_heads
from ..models.hierarchy import LevelState, TopState, descend, send_u
from ..models.levels import GroupState, Level, decoding_quality
from ..models.selfvae import SelfVAE
from ..models.transforms import bin_centre, bin_of, block_sum_bounds, error_bins, keep_block_means
from .entropy import CodingError, EncoderStream, latent_model

RECONSTRUCTION = "mean"  # how the decoder fills in what was not sent
TABLE_BUDGET = 1 << 23  # floats per probability-table chunk (32 MB)
# An exact model codes a symbol in two steps (_code_in_two_steps) where it has more
# than this many: every value (format 3 on), a near-lossless file's bin for a max error of 1 to 3.
TWO_STEPS_ABOVE = 2 * BIN_VALUES


def _row_ranges(height: int, width: int, mixtures: int, count: int) -> list[tuple[int, int]]:
    rows = max(1, TABLE_BUDGET // max(1, width * mixtures * (count + 1)))
    return [(start, min(height, start + rows)) for start in range(0, height, rows)]


def _for_coder(stream, table: torch.Tensor) -> np.ndarray:
    """A probability table as the coder takes it: an exact model's counts reduced
    (coder_counts) where the file's format says so; float probabilities as they are."""
    if stream.reduces_counts and not table.is_floating_point():
        table = coder_counts(table)
    return table.cpu().numpy()


def code_pixels(
    stream,
    dist: DiscretizedLogisticMixture | ExactLogisticMixture,
    truth: torch.Tensor | None,
    mask: torch.Tensor,
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
    count: int = 256,
    max_error: int = 0,
) -> torch.Tensor:
    """Code (or decode) integer values on a grid [1, C, h, w] where `mask` is True,
    channel by channel. With `lo`/`hi`, each value is coded as its offset from lo
    among `count` values. With a `max_error` (a near-lossless file) the values are
    bin centres (transforms.bin_centre), each coded as its bin, and `lo`/`hi` bound
    the bins. Positions outside the mask come back as 0."""
    height, width = mask.shape
    binned = max_error > 0
    firsts = error_bins(max_error) if binned else None
    # An exact model codes values, and near-lossless bins where there are many, in two steps.
    symbol_count = len(firsts) - 1 if binned else 256
    in_two_steps = lo is None and stream.values_in_two_steps and dist.codes_in_bins and symbol_count > TWO_STEPS_ABOVE
    widest = BIN_VALUES if in_two_steps else symbol_count if binned and lo is None else count
    ranges = _row_ranges(height, width, dist.mixtures, widest)
    values = torch.zeros(1, dist.channels, height, width, dtype=torch.int64, device=mask.device)
    if truth is not None:
        values = torch.where(mask, truth.to(torch.int64), values)
    interval = lo is not None and count < 256

    for c in range(dist.channels):

        def table(i: int, c: int = c) -> np.ndarray:
            r0, r1 = ranges[i]
            part = dist.crop_rows(r0, r1)
            context = values[..., r0:r1, :]
            if binned and lo is None:
                probs = part.coder_bin_table(c, context, firsts)
            elif binned:
                first_bins = lo[:, c, r0:r1]
                probs = part.coder_bin_table(c, context, firsts, first_bins, count)
                probs = _bins_up_to(probs, first_bins, hi[:, c, r0:r1])
            elif lo is None:
                probs = part.coder_table(c, context)
            else:
                probs = part.coder_table(c, context, lo[..., r0:r1, :], hi[..., r0:r1, :], count)
            return _for_coder(stream, probs[0][mask[r0:r1]])

        true_symbols = None
        if truth is not None:
            symbols = bin_of(values[0, c], max_error) if binned else values[0, c]
            symbols = symbols - (lo[0, c] if interval else 0)
            true_symbols = [symbols[r0:r1][mask[r0:r1]].cpu().numpy() for r0, r1 in ranges]
        if in_two_steps:
            coded = _code_in_two_steps(stream, dist, c, values, mask, ranges, true_symbols, firsts)
        else:
            coded = stream.categorical(table, len(ranges), true_symbols)
        if truth is None:
            for (r0, r1), chunk in zip(ranges, coded, strict=True):
                decoded = torch.from_numpy(chunk.astype(np.int64)).to(mask.device)
                if interval:
                    decoded = decoded + lo[0, c, r0:r1][mask[r0:r1]]
                if binned:
                    decoded = bin_centre(decoded, max_error)
                values[0, c, r0:r1][mask[r0:r1]] = decoded
    return values


def _bins_up_to(table: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """An exact model's counts [..., count] of the bins lo, lo + 1, ... at each
    position ([...] bounds) with those above hi given none; uniform over lo..hi where
    they have none."""
    candidates = lo.unsqueeze(-1) + torch.arange(table.shape[-1], device=table.device)
    allowed = candidates <= hi.unsqueeze(-1)
    picked = torch.where(allowed, table, torch.zeros_like(table))
    return torch.where(picked.sum(-1, keepdim=True) > 0, picked, allowed.to(picked.dtype))


def near_lossless_bounds(group: GroupState, max_error: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The bins the last pixel of each 2x2 block can take in a near-lossless file,
    whose levels are the bin centres of the downscale pyramid of the image's bins:
    the block's bins must sum to what its coarse bin allows (transforms.downscale)."""
    known = sum(bin_of(values, max_error) for values in group.earlier)
    low_sum, high_sum = block_sum_bounds(bin_of(group.coarse, max_error))
    last_bin = len(error_bins(max_error)) - 2
    return (low_sum - known).clamp(0, last_bin), (high_sum - known).clamp(0, last_bin)


def _code_in_two_steps(
    stream,
    dist: ExactLogisticMixture,
    c: int,
    values: torch.Tensor,
    mask: torch.Tensor,
    ranges: list[tuple[int, int]],
    true_symbols: list[np.ndarray] | None,
    units: torch.Tensor | None = None,
) -> list[np.ndarray]:
    """Code channel c's symbols, its values (0..255) or with `units` (a near-lossless
    file's error_bins) its bins, as their groups of BIN_VALUES symbols, then as the
    symbols within those groups: in the stream, every group of the channel comes
    before every symbol within a group, whatever the chunks. Two tables of 16 counts
    per value instead of one of 256."""
    parameters: dict[int, tuple[torch.Tensor, ...]] = {}

    def parameters_of(i: int) -> tuple[torch.Tensor, ...]:
        # Each chunk's parameters serve its two tables: computed for the first, freed
        # after the second (the encoder builds them last to first, the decoder first to last).
        if i in parameters:
            return parameters.pop(i)
        r0, r1 = ranges[i]
        real = mask[r0:r1].reshape(-1)
        rows = dist.crop_rows(r0, r1).channel_parameters(c, values[..., r0:r1, :])
        parameters[i] = tuple(t[real] for t in rows)
        return parameters[i]

    def first_step_table(i: int) -> np.ndarray:
        return _for_coder(stream, ExactLogisticMixture.bin_table(*parameters_of(i), units))

    true_bins = None if true_symbols is None else [s // BIN_VALUES for s in true_symbols]
    bins = stream.categorical(first_step_table, len(ranges), true_bins)

    def second_step_table(i: int) -> np.ndarray:
        chosen = torch.from_numpy(bins[i].astype(np.int64)).to(values.device)
        return _for_coder(stream, ExactLogisticMixture.value_in_bin_table(*parameters_of(i), chosen, units))

    true_offsets = None if true_symbols is None else [s % BIN_VALUES for s in true_symbols]
    offsets = stream.categorical(second_step_table, len(ranges), true_offsets)
    return [b.astype(np.int64) * BIN_VALUES + o for b, o in zip(bins, offsets, strict=True)]


def _all_real(size: tuple[int, int], device) -> torch.Tensor:
    return torch.ones(size, dtype=torch.bool, device=device)


def code_level_pixels(
    stream,
    level: Level,
    coarse: torch.Tensor,
    z: torch.Tensor,
    fine_size: tuple[int, int],
    truth: torch.Tensor | None,
    max_error: int = 0,
) -> torch.Tensor:
    """Code y_{k+1} under p(y_{k+1} | y_k, z_k): four block groups when grouped, the
    last one as an offset among the few values its block allows. With a `max_error`
    (the image of a near-lossless file, whose truth is already on the bin centres)
    the other values are coded as their bins; the last group, which its block's
    mean pins, stays exact."""
    context = level.context(coarse, z)
    if not level.grouped:
        return code_pixels(stream, level.head(context), truth, _all_real(fine_size, coarse.device), max_error=max_error)

    def code_group(group: GroupState) -> torch.Tensor:
        if not group.last:
            return code_pixels(stream, group.distribution, group.truth, group.mask, max_error=max_error)
        lo, hi = near_lossless_bounds(group, max_error) if max_error else (group.lo, group.hi)
        return code_pixels(stream, group.distribution, group.truth, group.mask, lo, hi, group.count, max_error)

    return level.walk_groups(coarse, context, fine_size, code_group, truth)


def step_q12(step: float) -> int:
    """An exact model's latent step: `step` rounded to a multiple of 2^-12 (at least one)."""
    return max(1, round(step * fixed_point.ACT_ONE))


def code_latents(
    stream, distribution: DiagonalGaussian | ExactGaussian, step, target: torch.Tensor | None, positions=None
) -> torch.Tensor:
    """Code (or decode) latents on a grid of `step` centred on the distribution's mean
    (`target`: the encoder's values; None when decoding), only those at `positions`
    (booleans that broadcast to the latents) where given; returns the latents as sent
    (the distribution's means elsewhere)."""
    indices = distribution.scale_indices(step)
    symbols = None if target is None else distribution.symbols(target, step)
    if positions is None:
        return distribution.from_symbols(stream.latents(distribution.coder_grid, indices, symbols), step)
    chosen = np.broadcast_to(positions.cpu().numpy(), indices.shape)
    sent = stream.latents(distribution.coder_grid, indices[chosen], None if symbols is None else symbols[chosen])
    every = np.zeros(indices.shape, dtype=sent.dtype)
    every[chosen] = sent
    return distribution.from_symbols(every, step)


def latent_steps(model: SelfVAE, step: float, quality: int | None) -> tuple:
    """(u's step, [each z_k's step]): `step` for a lossless model (in units of 2^-12
    for an exact one); a lossy model's steps at `quality`, times `step`."""
    if model.config.lossy:
        if quality is None:
            raise ValueError("a lossy model codes at a quality setting")
        return model.latent_steps(quality, step)
    if quality is not None:
        raise ValueError("only a lossy model has quality settings")
    single = step_q12(step) if model.config.exact else step
    return single, [single] * len(model.levels)


def _section_of(model: SelfVAE, index: int) -> tuple[str, int]:
    """Section kind/level of representation ys[index] (the last one is x)."""
    return ("x", 0) if index == len(model.levels) else ("y", index + 1)


class Coding:
    """The walk's policy for the encoder (with `truth`, the image's representations
    [y_1, ..., x], and an EncoderStream) and the decoder (no truth, a DecoderStream):
    code what the mode sends, generate the rest as the decoder does."""

    def __init__(
        self,
        model: SelfVAE,
        stream,
        mode: str,
        steps,
        truth: list[torch.Tensor] | None,
        max_error: int = 0,
        symbols: list[np.ndarray] | None = None,
    ):
        self.model, self.stream, self.spec, self.truth = model, stream, MODES[mode], truth
        self.u_step, self.z_steps = steps
        self.max_error = max_error  # a near-lossless file's: every level is coded as bins
        self.symbols = symbols  # the encoder's chosen latents (latent_optimisation.py), u's first

    def _target(self, index: int, distribution, step, encoders_value):
        """What the encoder sends for latent `index` (0 is u): its chosen symbols if
        given, else its own value (`encoders_value()`); None when decoding."""
        if self.truth is None:
            return None
        if self.symbols is not None:
            return distribution.from_symbols(self.symbols[index], step)
        return encoders_value()

    def _sends(self, index: int) -> bool:
        return self.spec.sends_x if index == len(self.model.levels) else self.spec.sends_y

    def _true(self, index: int) -> torch.Tensor | None:
        return None if self.truth is None else self.truth[index]

    def top_latent(self, u_size):
        """u in its prior's base space (hierarchy.send_u)."""
        model = self.model
        self.stream.begin_section("u")
        encoders = []  # the encoder's u, once inferred

        def encoders_value():
            if not encoders:
                encoders.append(model.prior_u.to_base(model.top.posterior(self.truth[0]).mean))
            return encoders[0]

        def send(distribution, positions):
            target = self._target(0, distribution, self.u_step, encoders_value)
            return code_latents(self.stream, distribution, self.u_step, target, positions)

        return model.prior_u.from_base(send_u(model, (1, model.config.u_channels, *u_size), self.u_step, send))

    def top_representation(self, top: TopState):
        if not self._sends(0):
            return top.likelihood.generate(RECONSTRUCTION)
        self.stream.begin_section(*_section_of(self.model, 0))
        real = _all_real(top.size, top.u.device)
        return code_pixels(self.stream, top.likelihood, self._true(0), real, max_error=self.max_error)

    def latent(self, at: LevelState):
        if not self.spec.sends_z:
            return at.prior.mean
        k = at.index
        self.stream.begin_section("z", k + 1)

        def encoders_value():  # a lossy model's encoder infers z_k given the decoder's y_k (closed loop)
            coarse = at.coarse if self.model.config.lossy else self.truth[k]
            return at.level.posterior(self.truth[k + 1], coarse).mean

        target = self._target(k + 1, at.prior, self.z_steps[k], encoders_value)
        return code_latents(self.stream, at.prior, self.z_steps[k], target)

    def representation(self, at: LevelState, z):
        k = at.index
        if self._sends(k + 1):
            self.stream.begin_section(*_section_of(self.model, k + 1))
            return code_level_pixels(
                self.stream, at.level, at.coarse, z, at.fine_size, self._true(k + 1), self.max_error
            )
        fine = at.level.generate(at.coarse, z, at.fine_size, RECONSTRUCTION)
        if self.stream.holds_block_means and self.spec.sends_y and at.level.grouped:
            fine = keep_block_means(fine, at.coarse)  # y_k exact, y_{k+1} its 2x upscale
        return fine


@torch.no_grad()
def walk(
    model: SelfVAE,
    stream,
    mode: str,
    image_size: tuple[int, int],
    step: float,
    truth: list[torch.Tensor] | None = None,
    quality: int | None = None,
    max_error: int = 0,
    symbols: list[np.ndarray] | None = None,
) -> torch.Tensor:
    """Code (encoder, with `truth`: the tile's representations) or decode (decoder)
    one tile; returns the reconstruction [1, C, H, W] as int64 (the image itself in
    `full` mode, within `max_error` of it in a near-lossless one). A lossy model
    codes at `quality` (0-based). The encoder sends the latents' `symbols` where
    given (u's first). What the file's format version changes comes from the stream
    (entropy._FormatRules)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    coding = Coding(model, stream, mode, latent_steps(model, step, quality), truth, max_error, symbols)
    with decoding_quality(model, quality):
        return descend(model, image_size, coding)


# An adaptation's section: the grid scale (exact_distributions.latent_table) its gains
# are coded with and its biases', each coded under the grid scale SCALE_OF_SCALES,
# then the gains and the biases.
SCALE_OF_SCALES = 70  # a standard deviation of 27 indices, symbols -243..243


def table_bits(values: np.ndarray, index: int) -> float:
    """The bits of integer `values` under the exact latent table of grid scale `index`
    (infinite where a value lies outside the table or has no probability)."""
    _, limit, probabilities = latent_model(index)
    if np.abs(values).max() > limit:
        return math.inf
    with np.errstate(divide="ignore"):
        return float(-np.log2(probabilities[values + limit]).sum())


def adaptation_scales(adaptation: torch.Tensor) -> list[int]:
    """The grid scale that codes each row kind of an adaptation (gains, biases) in the
    fewest bits: the encoder's choice, sent first."""
    rows = [adaptation[:, kind].reshape(-1).cpu().numpy() for kind in range(adaptation.shape[1])]
    return [min(range(LATENT_SCALES), key=lambda index, row=row: table_bits(row, index)) for row in rows]


def code_adaptation(stream, model: SelfVAE, adaptation: torch.Tensor | None = None) -> torch.Tensor:
    """Code (encoder: `adaptation`, [heads, 2, P] integers, each within its coding
    table's range) or decode (None) a tile's `adapt` section; returns the adaptation."""
    heads = pixel_heads(model)
    shape = (len(heads), 2, DiscretizedLogisticMixture.num_params(heads[0].channels, heads[0].mixtures))
    stream.begin_section("adapt")
    chosen = None if adaptation is None else np.array(adaptation_scales(adaptation))
    scales = stream.latents("logistic", np.full(2, SCALE_OF_SCALES), chosen)
    if not (0 <= scales).all() or not (scales < LATENT_SCALES).all():
        raise CodingError("the adapt section names a coding table that does not exist")
    indices = np.empty(shape, dtype=np.int64)
    indices[:, 0], indices[:, 1] = scales
    symbols = stream.latents("logistic", indices, None if adaptation is None else adaptation.cpu().numpy())
    return torch.from_numpy(np.asarray(symbols, dtype=np.int64))


def representations(model: SelfVAE, tile: torch.Tensor, max_error: int = 0) -> list[torch.Tensor]:
    """What the walk codes of a tile: its representations [y_1, ..., x]; in a
    near-lossless file (`max_error`) those of the image of its bins (bin_of), each
    value a bin, as its bin's centre. The last is then the image within `max_error`
    (transforms.within_error), and every level is coded as bins."""
    if not max_error:
        return model.representations(tile)
    return [bin_centre(level, max_error) for level in model.representations(bin_of(tile, max_error))]


def encode_tile(
    model: SelfVAE,
    tile: torch.Tensor,
    index: int,
    mode: str,
    step: float,
    quality,
    version: int,
    counter,
    adaptation: torch.Tensor | None = None,
    max_error: int = 0,
    symbols: list[np.ndarray] | None = None,
):
    """Tile `index` (int64 [1, C, h, w]) coded in a file of format `version`, at
    `quality` (1-based; None for a lossless model), its pixel heads adapted by
    `adaptation` (sent first) if given, within `max_error` of each value (a
    near-lossless `full` file), its latents as `symbols` where given: its
    reconstruction, its sections and the estimated bits of each section (a
    CodingError if it cannot be coded)."""
    stream = EncoderStream(tile=index, on_section=counter, version=version)
    if adaptation is not None:
        adaptation = code_adaptation(stream, model, adaptation)
    quality = quality - 1 if quality else None
    truth = representations(model, tile, max_error)
    with adapted_heads(model, adaptation):
        result = walk(model, stream, mode, tile.shape[-2:], step, truth, quality, max_error, symbols)
    return result, stream.finish(), stream.estimated_bits
