"""The distributions of the exact models, in integer arithmetic (see fixed_point.py).

The parameters are activations (value * 2^12). Probability tables are int64 counts
whose ratios are the probabilities; they are the same on every machine, and the
entropy coder quantises them identically wherever it runs.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from . import fixed_point as fp
from .transforms import bins_from

COEFF_BITS = 15  # channel coupling coefficients: tanh * 2^15
EDGE_BITS = 16  # bin edges and means on the [-1, 1] pixel scale, * 2^16
LOG_SCALE_RANGE = 7 * fp.ACT_ONE  # log-scales are clamped to [-7, 7]
MEAN_RANGE = 4 * fp.ACT_ONE  # means are clamped to [-4, 4]
# Lower edge of pixel value v on the [-1, 1] scale, (2v - 256) / 255, * 2^16, rounded;
# the edges below 0 and above 255 lie so far out (2^36) that every CDF is exactly 0 and
# 1 there, even at the largest scale (and |t| stays below 2^63).
BIN_EDGES = torch.div(
    (2 * torch.arange(257, dtype=torch.int64) - 256) * (2 << EDGE_BITS) + 255, 2 * 255, rounding_mode="floor"
)
BIN_EDGES[0], BIN_EDGES[256] = -(1 << 36), 1 << 36
WINDOW_WIDTHS = (16, 32, 64, 128, 256)  # tables are computed over this many values
# Coding a value in two steps (format version 3): its bin of BIN_VALUES values, then
# the value within the bin; two tables of 16 counts each instead of one of 256.
BIN_VALUES = 16
BINS = 256 // BIN_VALUES
SATURATION_Q32 = fp.SIGMOID_RANGE << 32  # |t| beyond which the table's sigmoid is exactly 0 or 1


def _weighted_update(weights: torch.Tensor, likelihoods: torch.Tensor) -> torch.Tensor:
    """Mixture weights times each component's likelihood, renormalised to 2^16 in
    total (kept as they were where every likelihood is zero)."""
    joint = weights * likelihoods  # < 2^46
    total = joint.sum(dim=1, keepdim=True)
    updated = torch.div(joint << 16, total.clamp(min=1), rounding_mode="floor")
    return torch.where(total > 0, updated, weights)


def _component_cdf(edges: torch.Tensor, mean: torch.Tensor, inv_scales: torch.Tensor) -> torch.Tensor:
    """A logistic component's CDF * 2^30 at bin edges (* 2^16), for means (* 2^16) and
    inverse scales (* 2^16) that broadcast against them."""
    return fp.sigmoid_nearest_((edges - mean).mul_(inv_scales), 32)  # t * 2^32


CODER_COUNT_BITS = 23  # what coder_counts reduces a table's total below


def coder_counts(table: torch.Tensor) -> torch.Tensor:
    """Counts [N, K] (int64, any totals) as the entropy coder takes them: each row
    shifted right until its total is below 2^23, then one added to every entry. The
    coder converts counts to float32 and quantises them to 24 bits; with totals below
    2^24 every sum it forms is exact in float32, and no entry is 0, so every value can
    be coded (a 0, or float32 rounding of large totals, can leave a value without
    probability: constriction then cannot code it). The shift is the bit length of
    total >> 23, read from the exponent of that number in float64, which holds it
    exactly (it is below 2^40)."""
    total = table.sum(dim=-1)
    shift = torch.frexp((total >> CODER_COUNT_BITS).to(torch.float64)).exponent.to(torch.int64)
    return (table >> shift.unsqueeze(-1)) + 1


_SIGMOID_INT32 = fp.FINE_SIGMOID_TABLE.to(torch.int32)  # its entries are at most 2^30; half the cache


def _compiled_counts(mean, inv_scales, weights, edges: torch.Tensor) -> torch.Tensor:
    """ExactLogisticMixture.mixture_counts by the compiled kernel (_kernels.c)."""
    mean, inv_scales, weights = (t.to(torch.int64).contiguous() for t in (mean, inv_scales, weights))
    edges = edges.to(torch.int64).contiguous()
    rows, components = mean.shape
    edge_count = edges.shape[-1]
    counts = torch.empty(rows, edge_count - 1, dtype=torch.int64)
    if rows == 0 or edge_count < 2:
        return counts
    shift = 32 - fp.FINE_STEP_BITS  # _component_cdf's t is * 2^32
    offset = (fp.SIGMOID_RANGE << 32) + (1 << (shift - 1))
    shared_edges = edges.dim() == 1

    def run(start: int, stop: int) -> None:
        row_edges = edges if shared_edges else edges[start:stop]
        fp.kernels.mixture_counts(
            mean[start:stop].data_ptr(), inv_scales[start:stop].data_ptr(), weights[start:stop].data_ptr(),
            row_edges.data_ptr(), 0 if shared_edges else edge_count, _SIGMOID_INT32.data_ptr(),
            _SIGMOID_INT32.numel() - 1, offset, shift, stop - start, components, edge_count,
            counts[start:stop].data_ptr(),
        )  # fmt: skip

    fp.split_across_threads(run, rows, cost=components * edge_count)
    return counts


class ExactLogisticMixture:
    """The discretized logistic mixture with channel coupling (as
    DiscretizedLogisticMixture), on integers: weights exp(logit - max) * 2^16, CDFs
    from the sigmoid table, tables as int64 counts. Channel c's table uses the
    weights updated by the values of the channels before it."""

    codes_in_bins = True  # from format 3, values are coded as their bins, then within them

    def __init__(self, params: torch.Tensor, channels: int, mixtures: int):
        batch, _, height, width = params.shape
        m, c = mixtures, channels
        self.channels, self.mixtures = channels, mixtures
        self.params = params  # as the head gave them (adaptation fits them)
        logits = params[:, :m]
        self.weights = fp.exp_neg(logits.amax(dim=1, keepdim=True) - logits, fp.ACT_BITS) >> 14
        means = params[:, m : m + c * m].clamp(-MEAN_RANGE, MEAN_RANGE)
        self.means = means.reshape(batch, c, m, height, width)
        log_scales = params[:, m + c * m : m + 2 * c * m].clamp(-LOG_SCALE_RANGE, LOG_SCALE_RANGE)
        self.inv_scales = fp.exp(-log_scales).reshape(batch, c, m, height, width)  # * 2^16
        pairs = c * (c - 1) // 2
        self.coeffs = fp.tanh(params[:, m + 2 * c * m :], COEFF_BITS).reshape(batch, pairs, m, height, width)

    def crop_rows(self, start: int, stop: int) -> ExactLogisticMixture:
        out = object.__new__(ExactLogisticMixture)
        out.channels, out.mixtures = self.channels, self.mixtures
        out.weights = self.weights[..., start:stop, :]
        out.means = self.means[..., start:stop, :]
        out.inv_scales = self.inv_scales[..., start:stop, :]
        out.coeffs = self.coeffs[..., start:stop, :]
        return out

    def _channel_mean(self, c: int, x: torch.Tensor) -> torch.Tensor:
        """Channel c's component means given the earlier channels, * 2^16: [B, M, H, W]."""
        mean = self.means[:, c] << (EDGE_BITS - fp.ACT_BITS)
        for j in range(c):
            shifted = fp.pixels_to_activations(2 * x[:, j : j + 1]) << (EDGE_BITS - fp.ACT_BITS)
            mean = mean + fp.round_shift(self.coeffs[:, c * (c - 1) // 2 + j] * shifted, COEFF_BITS)
        return mean

    def _weights_for(self, c: int, x: torch.Tensor) -> torch.Tensor:
        """The mixture weights channel c sees: updated by channels 0..c-1's values."""
        weights = self.weights
        for j in range(c):
            value = x[:, j : j + 1].unsqueeze(-1)
            edges = fp.lookup(BIN_EDGES.to(x.device), torch.cat([value, value + 1], dim=-1))
            cdf = _component_cdf(edges, self._channel_mean(j, x).unsqueeze(-1), self.inv_scales[:, j].unsqueeze(-1))
            weights = _weighted_update(weights, cdf[..., 1] - cdf[..., 0])
        return weights

    @staticmethod
    def _mixed_cdf(mean, inv_scales, weights, edges) -> torch.Tensor:
        """sum_m weights_m * sigmoid((edges - mean_m) * inv_scales_m), * 2^46: one
        component at a time. mean, inv_scales, weights: [..., M]; edges: [..., E]."""
        mixed = None
        for m in range(mean.shape[-1]):
            cdf = _component_cdf(edges, mean[..., m : m + 1], inv_scales[..., m : m + 1])
            cdf = cdf.mul_(weights[..., m : m + 1])  # < 2^46
            mixed = cdf if mixed is None else mixed.add_(cdf)
        return mixed

    @classmethod
    def mixture_counts(cls, mean, inv_scales, weights, edges: torch.Tensor, compiled: bool = True) -> torch.Tensor:
        """The mixture's counts of the runs of values between consecutive bin edges:
        int64 [N, E - 1] for rows of channel_parameters ([N, M]) and edges [N, E] or
        [E] (* 2^16). By the compiled kernel on a CPU where it is built (`compiled`),
        else by torch (_mixed_cdf): the same integers."""
        if compiled and fp.compiled(mean):
            return _compiled_counts(mean, inv_scales, weights, edges)
        mixed = cls._mixed_cdf(mean, inv_scales, weights, edges.expand(mean.shape[0], -1))
        return mixed[:, 1:] - mixed[:, :-1]

    @staticmethod
    def _support(mean, inv_scales, weights) -> tuple[torch.Tensor, torch.Tensor]:
        """(lowest, highest) per position ([..., M] in, [...] out): the bin edges outside
        which every component with weight is exactly 0 (below) or 1 (above)."""
        reach = torch.div(SATURATION_Q32 + inv_scales - 1, inv_scales, rounding_mode="floor")
        edges = BIN_EDGES.to(mean.device)
        lowest = torch.searchsorted(edges, (mean - reach).contiguous(), right=True)
        highest = torch.searchsorted(edges, (mean + reach).contiguous()) - 1
        used = weights > 0
        lowest = torch.where(used, lowest, torch.full_like(lowest, 256)).amin(dim=-1)
        highest = torch.where(used, highest, torch.zeros_like(highest)).amax(dim=-1)
        return lowest, highest

    def _whole_table(self, mean, inv_scales, weights) -> torch.Tensor:
        """Counts of the values 0..255 ([N, M] in, [N, 256] out). Only the values that
        can have mass are computed (every other count is exactly 0), positions grouped
        by how many that is: the same numbers as computing all 256, faster."""
        lowest, highest = self._support(mean, inv_scales, weights)
        span = highest - lowest + 2  # values lowest-1 .. highest can have mass
        table = torch.zeros(mean.shape[0], 256, dtype=torch.int64, device=mean.device)
        done = 0
        for width in WINDOW_WIDTHS:
            in_bucket = span > done
            if width < 256:  # the last bucket also takes the spans of 257 and 258 values
                in_bucket &= span <= width
            rows = torch.nonzero(in_bucket).squeeze(1)
            done = width
            if rows.numel() == 0:
                continue
            first = (lowest.index_select(0, rows) - 1).clamp(0, 256 - width)
            values = first.unsqueeze(-1) + torch.arange(width + 1, device=mean.device)
            edges = fp.lookup(BIN_EDGES.to(mean.device), values)
            picked = [t.index_select(0, rows) for t in (mean, inv_scales, weights)]
            table[rows.unsqueeze(-1), values[:, :-1]] = self.mixture_counts(*picked, edges)
        return table

    def channel_parameters(self, c: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Channel c's component means, inverse scales and weights given x's channels
        < c, one row per position: int64 [B * H * W, M] each."""
        x = x.to(torch.int64)

        def rows(t: torch.Tensor) -> torch.Tensor:  # [B, M, H, W] -> [B * H * W, M]
            return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])

        return rows(self._channel_mean(c, x)), rows(self.inv_scales[:, c]), rows(self._weights_for(c, x))

    @classmethod
    def _counts_between(cls, mean, inv_scales, weights, firsts: torch.Tensor) -> torch.Tensor:
        """Counts of the runs of values firsts[k] .. firsts[k + 1] - 1 (firsts: [E] or
        [N, E] values 0..256, rows of channel_parameters in): int64 [N, E - 1]."""
        edges = fp.lookup(BIN_EDGES.to(mean.device), firsts.to(mean.device))
        return cls.mixture_counts(mean, inv_scales, weights, edges)

    @staticmethod
    def _units(units: torch.Tensor | None) -> torch.Tensor:
        """The first value of every unit a value is coded as, then 256: the values
        themselves, or a near-lossless file's bins (transforms.error_bins)."""
        return torch.arange(257, dtype=torch.int64) if units is None else units

    @classmethod
    def bin_table(cls, mean, inv_scales, weights, units: torch.Tensor | None = None) -> torch.Tensor:
        """Counts of the bins of BIN_VALUES units each (rows of channel_parameters in,
        int64 [N, bins] out; the last bin may hold fewer): the first step of coding a
        unit in two. `units` as _units (None: the values, 16 bins)."""
        firsts = cls._units(units)
        count = firsts.numel() - 1
        starts = torch.arange(0, count + BIN_VALUES, BIN_VALUES).clamp(max=count).unique()
        return cls._counts_between(mean, inv_scales, weights, firsts[starts])

    @classmethod
    def value_in_bin_table(
        cls, mean, inv_scales, weights, bins: torch.Tensor, units: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Counts of the BIN_VALUES units of each row's bin ([N] bins in, int64
        [N, BIN_VALUES] out; none past the last unit): the second step. A bin without
        mass (coded by the coder's floor probability) gets a uniform table."""
        firsts = cls._units(units).to(mean.device)
        count = firsts.numel() - 1
        positions = (bins * BIN_VALUES).unsqueeze(-1) + torch.arange(BIN_VALUES + 1, device=mean.device)
        table = cls._counts_between(mean, inv_scales, weights, firsts[positions.clamp(max=count)])
        exists = positions[:, :-1] < count
        return torch.where(table.sum(-1, keepdim=True) > 0, table, exists.to(torch.int64))

    def coder_bin_table(self, c: int, x: torch.Tensor, firsts: torch.Tensor, lo=None, count: int = 0) -> torch.Tensor:
        """Channel c's counts of the bins of values that `firsts` bounds (bin k: the
        values firsts[k] .. firsts[k + 1] - 1), given x's channels < c: int64
        [B, H, W, bins]; with `lo` ([B, H, W] bins), of the `count` bins from lo on.
        Near-lossless files are coded by exact models only."""
        batch, _, height, width = x.shape
        edges = firsts if lo is None else bins_from(firsts, lo.reshape(-1), count)
        counts = self._counts_between(*self.channel_parameters(c, x), edges)
        return counts.reshape(batch, height, width, -1)

    def channel_table(self, c: int, x: torch.Tensor, first: torch.Tensor | None = None, count: int = 256):
        """Channel c's counts for the `count` values first..first+count-1 (0..255 without
        `first`), given x's channels < c: int64 [B, H, W, count]."""
        mean, inv_scales, weights = self.channel_parameters(c, x)
        batch, _, height, width = x.shape
        if first is None:
            return self._whole_table(mean, inv_scales, weights).reshape(batch, height, width, 256)
        values = first.reshape(-1, 1) + torch.arange(count + 1, device=x.device)
        edges = fp.lookup(BIN_EDGES.to(x.device), values.clamp(max=256))
        return self.mixture_counts(mean, inv_scales, weights, edges).reshape(batch, height, width, count)

    def coder_table(self, c: int, x: torch.Tensor, lo=None, hi=None, count: int = 256) -> torch.Tensor:
        """Channel c's counts as the entropy coder takes them (channel_table, or with
        `lo`/`hi` interval_table), as DiscretizedLogisticMixture.coder_table."""
        if lo is None:
            return self.channel_table(c, x)
        return self.interval_table(c, x, lo, hi, count)

    def interval_table(self, c: int, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, count: int) -> torch.Tensor:
        """channel_table restricted to lo..hi (entry j: value lo + j when count < 256,
        value j when count == 256); uniform over the interval where its mass is zero."""
        first = lo[:, c] if count < 256 else torch.zeros_like(lo[:, c])
        table = self.channel_table(c, x, first, count)
        values = first.unsqueeze(-1) + torch.arange(count, device=table.device)
        allowed = (values >= lo[:, c].unsqueeze(-1)) & (values <= hi[:, c].unsqueeze(-1))
        table = torch.where(allowed, table, torch.zeros_like(table))
        return torch.where(table.sum(-1, keepdim=True) > 0, table, allowed.to(torch.int64))

    def generate(self, method: str, lo=None, hi=None, count: int = 4) -> torch.Tensor:
        """Integer values [B, C, H, W]: 'mean' (the mixture mean rounded, or within a
        short interval its own expectation), 'mode' or 'sample' (from the counts)."""
        batch, _, _, height, width = self.means.shape
        x = torch.zeros(batch, self.channels, height, width, dtype=torch.int64, device=self.means.device)
        short = lo is not None and count < 256
        for c in range(self.channels):
            if method == "mean" and not short:
                weights = self._weights_for(c, x)
                mean = (weights * self._channel_mean(c, x)).sum(dim=1)
                mean = torch.div(mean, weights.sum(dim=1), rounding_mode="floor")  # * 2^16
                value = torch.div(
                    (mean + (1 << EDGE_BITS)) * 255 + (1 << EDGE_BITS), 2 << EDGE_BITS, rounding_mode="floor"
                )
                value = value.clamp(0, 255)
                if lo is not None:
                    value = torch.maximum(torch.minimum(value, hi[:, c]), lo[:, c])
            else:
                table = self.channel_table(c, x) if lo is None else self.interval_table(c, x, lo, hi, count)
                offset = lo[:, c] if short else torch.zeros_like(x[:, 0])
                if method == "mean":
                    total = table.sum(-1)
                    moment = (table * torch.arange(count, device=table.device)).sum(-1)
                    value = offset + torch.div(2 * moment + total, 2 * total, rounding_mode="floor")
                elif method == "mode":
                    value = offset + table.argmax(dim=-1)
                elif method == "sample":
                    flat = table.reshape(-1, table.shape[-1]).to(torch.float64)
                    value = offset + torch.multinomial(flat, 1).reshape(table.shape[:-1])
                else:
                    raise ValueError(f"unknown generation method {method!r}")
            x[:, c] = value
        return x


class ExactGaussian:
    """A diagonal Gaussian with integer mean and log-std (* 2^12), log-std clamped to
    [-8, 4] as in DiagonalGaussian, with its coding interface: a latent on a grid of
    `step` (* 2^12) is sent as the symbol round((latent - mean) / step) under the
    integer table (latent_table) of the grid scale nearest std / step."""

    coder_grid = "logistic"

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean = mean
        self.log_std = log_std.clamp(-8 * fp.ACT_ONE, 4 * fp.ACT_ONE)

    @classmethod
    def from_params(cls, params: torch.Tensor) -> ExactGaussian:
        mean, log_std = params.chunk(2, dim=1)
        return cls(mean, log_std)

    @classmethod
    def standard(cls, shape: tuple[int, ...], device=None) -> ExactGaussian:
        """N(0, 1): what u is coded under in its prior's base space."""
        zeros = torch.zeros(shape, dtype=torch.int64, device=device)
        standard = cls(zeros, zeros)
        standard.std_q16 = torch.full(shape, 1 << 16, dtype=torch.int64, device=device)  # exp's table gives 2^16 - 1
        return standard

    @cached_property
    def std_q16(self) -> torch.Tensor:
        return fp.exp(self.log_std)

    def rsample(self) -> torch.Tensor:
        """A sample (for generation only: it draws float noise)."""
        noise = torch.randn(self.mean.shape, dtype=torch.float64, device=self.mean.device)
        return self.mean + torch.round(noise * self.std_q16 / 16).to(torch.int64)

    def scale_indices(self, step: int | torch.Tensor) -> np.ndarray:
        """The grid scale index of every latent coded on a grid of `step`."""
        return latent_scale_index(self.std_q16, step).cpu().numpy()

    def symbols(self, target: torch.Tensor, step: int | torch.Tensor) -> np.ndarray:
        """round((target - mean) / step), halves up, in integers."""
        return torch.div(2 * (target - self.mean) + step, 2 * step, rounding_mode="floor").cpu().numpy()

    def from_symbols(self, symbols: np.ndarray, step: int | torch.Tensor) -> torch.Tensor:
        """mean + step * symbols, saturated to the activations' range."""
        latents = self.mean + step * torch.from_numpy(symbols).to(self.mean.device)
        return latents.clamp(-fp.ACT_LIMIT, fp.ACT_LIMIT)


# Latents are coded under discretized logistics on a fixed grid of scales: the
# standard deviations (in quantisation steps) exp(LATENT_LOG_STD_FIRST + i * STEP) / 2^12,
# 0.05 to about 250, chosen by the nearest one in log space.
LATENT_SCALES = 96
LATENT_LOG_STD_FIRST = -12271  # round(ln 0.05 * 2^12)
LATENT_LOG_STD_STEP = 368  # ln(256 / 0.05) / 95 * 2^12, rounded
LATENT_TAIL_STDS = 9  # each table covers +-9 standard deviations (at least +-2)
LATENT_SYMBOL_LIMIT = 4096
PI_OVER_SQRT3_Q30 = 1947552238  # a logistic's scale is its standard deviation * sqrt(3) / pi


def latent_log_stds(positions: torch.Tensor) -> torch.Tensor:
    return LATENT_LOG_STD_FIRST + positions * LATENT_LOG_STD_STEP


def latent_scale_bounds(step_q12: int | torch.Tensor) -> torch.Tensor:
    """Thresholds on std * 2^16 * 2^12 between consecutive scale indices, for a step of
    step_q12 / 2^12: the geometric midpoints of the grid, times the step ([C, 1] steps
    give [C, LATENT_SCALES - 1] thresholds)."""
    twice_log = (
        2 * LATENT_LOG_STD_FIRST + (2 * torch.arange(LATENT_SCALES - 1, dtype=torch.int64) + 1) * LATENT_LOG_STD_STEP
    )
    midpoints = fp.exp(twice_log, fp.ACT_BITS + 1)
    return midpoints * step_q12


def latent_scale_index(std_q16: torch.Tensor, step_q12: int | torch.Tensor) -> torch.Tensor:
    """The grid index whose standard deviation is nearest std / step (in log space), for
    one step or (a tensor of C values) one per channel, dim 1 of std_q16 [B, C, ...]."""
    scaled = std_q16 << fp.ACT_BITS
    if not isinstance(step_q12, torch.Tensor):
        bounds = latent_scale_bounds(step_q12).to(std_q16.device)
        return torch.searchsorted(bounds, scaled.contiguous().reshape(-1), right=True).reshape(std_q16.shape)
    channels = std_q16.shape[1]
    bounds = latent_scale_bounds(step_q12.reshape(channels, 1).cpu()).to(std_q16.device)
    per_channel = scaled.transpose(0, 1).reshape(channels, -1).contiguous()
    indices = torch.searchsorted(bounds, per_channel, right=True)
    return indices.reshape(scaled.transpose(0, 1).shape).transpose(0, 1)


def latent_symbol_range(index: int) -> int:
    std_q16 = int(fp.exp(latent_log_stds(torch.tensor([index]))).item())
    return min(LATENT_SYMBOL_LIMIT, max(2, (LATENT_TAIL_STDS * std_q16 + 0xFFFF) >> 16))


def latent_table(index: int) -> torch.Tensor:
    """Counts (summing to 2^30) of the symbols -R..R under the discretized logistic of
    grid scale `index` (R = latent_symbol_range(index)); the end symbols take the tails.
    Built for s >= 0 and mirrored, so the table is exactly symmetric."""
    limit = latent_symbol_range(index)
    std_q16 = int(fp.exp(latent_log_stds(torch.tensor([index]))).item())
    upper_edges = 2 * torch.arange(limit, dtype=torch.int64) + 1  # 2 (s + 1/2) for s = 0..R-1
    # (s + 1/2) / scale * 2^20
    t_q20 = torch.div((upper_edges * PI_OVER_SQRT3_Q30) << 6, 2 * std_q16, rounding_mode="floor")
    cdf = torch.cat([fp.sigmoid(t_q20, 20), torch.tensor([fp.ONE_Q30])])  # CDF at s + 1/2, s = 0..R
    half = torch.diff(cdf)  # symbols 1..R
    center = 2 * cdf[:1] - fp.ONE_Q30
    return torch.cat([half.flip(0), center, half])
