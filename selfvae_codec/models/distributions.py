"""Distributions: the discretized logistic mixture over 0..255 with the PixelCNN++
linear coupling of channels, diagonal Gaussians, and the priors for `u`
(standard normal, mixture of Gaussians, RealNVP flow)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)
HALF_BIN = 1.0 / 255.0  # half the width of one of the 256 bins of [-1, 1]

# The standard deviations (in units of the quantisation step) that a float model's
# latents are coded with: only the integer index into this fixed table must match
# between the encoder and the decoder, never a float.
SCALE_TABLE = np.exp(np.linspace(math.log(0.05), math.log(256.0), 96))
_LOG_SCALE_MIN = math.log(SCALE_TABLE[0])
_LOG_SCALE_STEP = (math.log(SCALE_TABLE[-1]) - _LOG_SCALE_MIN) / (len(SCALE_TABLE) - 1)


def normalize_pixels(values: torch.Tensor) -> torch.Tensor:
    """0..255 integers -> floats in [-1, 1] (the mixture's and the networks' scale)."""
    return values.to(torch.float32) / 127.5 - 1.0


def _log_logistic_interval(
    lower: torch.Tensor, upper: torch.Tensor, lower_open: torch.Tensor, upper_open: torch.Tensor
) -> torch.Tensor:
    """log(sigmoid(upper) - sigmoid(lower)), stable for all arguments.

    `lower_open` / `upper_open` mark edges at -inf / +inf (the bins of 0 and 255,
    which take the tail mass). Uses
    log(s(b) - s(a)) = -a + log(1 - e^(a-b)) - softplus(-a) - softplus(-b).
    """
    lower = torch.where(lower_open, torch.zeros_like(lower), lower)
    upper = torch.where(upper_open, torch.zeros_like(upper), upper)
    # Keep b - a strictly positive for expm1 even where an edge is replaced above.
    gap = torch.where(lower_open | upper_open, torch.ones_like(upper), upper - lower).clamp(min=1e-12)
    both_finite = -lower + torch.log(-torch.expm1(-gap)) - F.softplus(-lower) - F.softplus(-upper)
    only_upper = -F.softplus(-upper)  # log sigmoid(upper)
    only_lower = -F.softplus(lower)  # log (1 - sigmoid(lower))
    out = torch.where(lower_open, only_upper, both_finite)
    out = torch.where(upper_open, only_lower, out)
    return torch.where(lower_open & upper_open, torch.zeros_like(out), out)


def logistic_bin_log_prob(offset: torch.Tensor, width: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log P(offset - width/2 < X < offset + width/2) for a logistic X with mean 0 and
    standard deviation `std` (elementwise)."""
    inv_scale = math.pi / (math.sqrt(3.0) * std)
    closed = torch.zeros_like(offset, dtype=torch.bool)
    return _log_logistic_interval((offset - width / 2) * inv_scale, (offset + width / 2) * inv_scale, closed, closed)


class DiscretizedLogisticMixture:
    """Mixture of discretized logistics over 0..255 per subpixel, PixelCNN++ style.

    `params` is [B, P, H, W] with P = num_params(channels, mixtures): mixture logits
    (shared by the channels), means, log-scales, and tanh coupling coefficients so
    that the mean of channel c is mu_c + sum_{j<c} coeff_{c,j} * x_j.

    Channel c's conditional p(x_c | x_<c) uses the mixture weights updated by the
    earlier channels, w_m ∝ pi_m prod_{j<c} p_m(x_j), so the product of the channel
    conditionals (what the entropy coder codes) is exactly the joint likelihood.
    An optional inclusive interval [lo, hi] per subpixel restricts and renormalises
    each channel's conditional to that interval.
    """

    codes_in_bins = False  # only an exact model's values are coded as bins, then values within them

    def __init__(self, params: torch.Tensor, channels: int, mixtures: int):
        batch, count, height, width = params.shape
        if count != self.num_params(channels, mixtures):
            raise ValueError(f"expected {self.num_params(channels, mixtures)} parameter maps, got {count}")
        self.channels, self.mixtures = channels, mixtures
        m, c = mixtures, channels
        self.params = params  # as the head gave them (adaptation fits them)
        self.log_weights = F.log_softmax(params[:, :m], dim=1)
        self.means = params[:, m : m + c * m].reshape(batch, c, m, height, width)
        self.log_scales = params[:, m + c * m : m + 2 * c * m].reshape(batch, c, m, height, width).clamp(min=-7.0)
        pairs = c * (c - 1) // 2
        self.coeffs = torch.tanh(params[:, m + 2 * c * m :].reshape(batch, pairs, m, height, width))

    def crop_rows(self, start: int, stop: int) -> DiscretizedLogisticMixture:
        """The same distribution restricted to rows start..stop-1 (for chunked tables)."""
        out = object.__new__(DiscretizedLogisticMixture)
        out.channels, out.mixtures = self.channels, self.mixtures
        out.log_weights = self.log_weights[..., start:stop, :]
        out.means = self.means[..., start:stop, :]
        out.log_scales = self.log_scales[..., start:stop, :]
        out.coeffs = self.coeffs[..., start:stop, :]
        return out

    @staticmethod
    def num_params(channels: int, mixtures: int) -> int:
        return mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)

    def _channel_mean(self, c: int, x_norm: torch.Tensor) -> torch.Tensor:
        mean = self.means[:, c]
        for j in range(c):
            mean = mean + self.coeffs[:, c * (c - 1) // 2 + j] * x_norm[:, j : j + 1]
        return mean

    def _component_interval_log_prob(
        self, c: int, mean: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
    ) -> torch.Tensor:
        """log P_m(lo <= x_c <= hi) for every component m: [B, M, H, W]."""
        inv_scale = torch.exp(-self.log_scales[:, c])
        lo = lo.unsqueeze(1)
        hi = hi.unsqueeze(1)
        lower = (normalize_pixels(lo) - HALF_BIN - mean) * inv_scale
        upper = (normalize_pixels(hi) + HALF_BIN - mean) * inv_scale
        return _log_logistic_interval(lower, upper, (lo <= 0).expand_as(lower), (hi >= 255).expand_as(upper))

    def _channel_states(self, x: torch.Tensor, upto: int):
        """Yield (c, log_weights, mean) for channels 0..upto-1 given the values x."""
        x_norm = normalize_pixels(x)
        log_w = self.log_weights
        for c in range(upto):
            mean = self._channel_mean(c, x_norm)
            yield c, log_w, mean
            component = self._component_interval_log_prob(c, mean, x[:, c], x[:, c])
            log_w = F.log_softmax(log_w + component, dim=1)

    def log_prob(
        self,
        x: torch.Tensor,
        lo: torch.Tensor | None = None,
        hi: torch.Tensor | None = None,
        bins: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Log-probability (nats) of integer values x [B, C, H, W]; returns [B, H, W].
        With `bins` (first, last: [B, C, H, W]), of the values first..last of each
        subpixel (a near-lossless file's bin), the channels still conditioned on x."""
        x = x.to(torch.int64)
        first, last = bins if bins is not None else (x, x)
        total = torch.zeros(x.shape[0], *x.shape[2:], device=self.means.device)
        for c, log_w, mean in self._channel_states(x, self.channels):
            component = self._component_interval_log_prob(c, mean, first[:, c], last[:, c])
            total = total + torch.logsumexp(log_w + component, dim=1)
            if lo is not None:
                mass = self._component_interval_log_prob(c, mean, lo[:, c], hi[:, c])
                total = total - torch.logsumexp(log_w + mass, dim=1)
        return total

    def channel_probabilities(
        self, c: int, x: torch.Tensor, lo: torch.Tensor | None = None, count: int = 256
    ) -> torch.Tensor:
        """Probabilities of channel c's values given x's channels < c: [B, H, W, count].

        Without `lo`: the 256-entry table of values 0..255. With `lo` ([B, C, H, W]):
        the `count` values lo..lo+count-1 of channel c; callers zero the entries above
        their upper bound and renormalise (see `interval_probabilities`).

        This is the entropy coder's hot path: positions become rows [N, M] and each
        component adds its weighted CDF at every bin edge with fused in-place ops.
        """
        x = x.to(torch.int64)
        *_, (_, log_w, mean) = self._channel_states(x, c + 1)
        batch, mixtures, height, width = mean.shape

        def rows(t: torch.Tensor) -> torch.Tensor:
            return t.permute(0, 2, 3, 1).reshape(-1, mixtures)

        weights = rows(torch.exp(log_w))
        inv_scale = rows(torch.exp(-self.log_scales[:, c]))
        offset = -rows(mean) * inv_scale
        if lo is None:
            # The 255 edges between consecutive values; value 0 / 255 take the tails.
            edge_values = torch.arange(1, 256, device=mean.device)
            edges = normalize_pixels(edge_values) - HALF_BIN
        else:
            # Lower edges of the values first .. first+count, per position.
            edge_values = lo[:, c].reshape(-1, 1) + torch.arange(count + 1, device=mean.device)
            edges = normalize_pixels(edge_values) - HALF_BIN  # [N, count+1]
        cdf = None
        for m in range(mixtures):
            component = torch.addcmul(offset[:, m : m + 1], inv_scale[:, m : m + 1], edges).sigmoid_()
            if cdf is None:
                cdf = component.mul_(weights[:, m : m + 1])
            else:
                cdf.addcmul_(component, weights[:, m : m + 1])
        if lo is None:
            cdf = torch.nn.functional.pad(cdf, (1, 0), value=0.0)
            cdf = torch.nn.functional.pad(cdf, (0, 1), value=1.0)
        else:
            cdf = torch.where(edge_values <= 0, torch.zeros_like(cdf), cdf)
            cdf = torch.where(edge_values >= 256, torch.ones_like(cdf), cdf)
        probs = (cdf[:, 1:] - cdf[:, :-1]).clamp(min=0.0)
        return probs.reshape(batch, height, width, -1)

    def coder_table(self, c: int, x: torch.Tensor, lo=None, hi=None, count: int = 256) -> torch.Tensor:
        """Channel c's table as the entropy coder takes it, given x's channels < c:
        probabilities of 0..255, or with `lo`/`hi` of the values allowed there
        (interval_probabilities). ExactLogisticMixture has the same method."""
        if lo is None:
            return self.channel_probabilities(c, x)
        return self.interval_probabilities(c, x, lo, hi, count)

    def interval_probabilities(
        self, c: int, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, count: int
    ) -> torch.Tensor:
        """Channel c's conditional restricted to lo..hi and renormalised.

        count < 256: [B, H, W, count], entry j is the probability of lo + j (the
        interval must hold at most `count` values). count == 256: the whole table of
        0..255 with the entries outside lo..hi set to zero.
        """
        if count == 256:
            first = torch.zeros_like(lo[:, c])
            probs = self.channel_probabilities(c, x)
        else:
            first = lo[:, c]
            probs = self.channel_probabilities(c, x, lo=lo, count=count)
        values = first.unsqueeze(-1) + torch.arange(count, device=probs.device)
        allowed = (values >= lo[:, c].unsqueeze(-1)) & (values <= hi[:, c].unsqueeze(-1))
        probs = torch.where(allowed, probs, torch.zeros_like(probs))
        # Where all the allowed mass underflowed, fall back to uniform over the interval.
        probs = torch.where(probs.sum(-1, keepdim=True) > 0, probs, allowed.to(probs.dtype))
        return probs / probs.sum(dim=-1, keepdim=True)

    def expected_values(self) -> torch.Tensor:
        """`generate('mean')` without bounds, differentiably: floats [B, C, H, W] that
        hold the same integers, with gradients passed straight through the rounding."""
        x = torch.zeros(self.means.shape[0], 0, *self.means.shape[-2:], device=self.means.device)
        for c in range(self.channels):
            # The earlier channels' values enter as they are; the ones after c are unused.
            padded = torch.cat([x, x.new_zeros(x.shape[0], self.channels - c, *x.shape[2:])], dim=1)
            *_, (_, log_w, mean) = self._channel_states(padded, c + 1)
            value = ((torch.exp(log_w) * mean).sum(dim=1, keepdim=True) + 1.0) * 127.5
            value = value.clamp(0.0, 255.0)
            x = torch.cat([x, value + (torch.round(value) - value).detach()], dim=1)
        return x

    def generate(
        self, method: str, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None, count: int = 4
    ) -> torch.Tensor:
        """Integer values [B, C, H, W] by `method`: 'mean' (the mixture mean, rounded;
        within a short interval, the interval's own expectation), 'mode' (the most
        probable value, channel by channel) or 'sample'."""
        batch, _, _, height, width = self.means.shape
        x = torch.zeros(batch, self.channels, height, width, dtype=torch.int64, device=self.means.device)
        for c in range(self.channels):
            if method == "mean" and lo is not None and count < 256:
                # A short interval's own expectation: the unrestricted mixture mean can
                # lie far outside it (the restricted likelihood never constrains it).
                probs = self.interval_probabilities(c, x, lo, hi, count)
                offsets = (probs * torch.arange(count, device=probs.device)).sum(dim=-1)
                value = lo[:, c] + torch.round(offsets).to(torch.int64)
            elif method == "mean":
                *_, (_, log_w, mean) = self._channel_states(x, c + 1)
                value = (torch.exp(log_w) * mean).sum(dim=1)
                value = torch.round((value + 1.0) * 127.5).clamp(0, 255).to(torch.int64)
                if lo is not None:
                    value = torch.maximum(torch.minimum(value, hi[:, c]), lo[:, c])
            else:
                if lo is None:
                    probs = self.channel_probabilities(c, x)
                else:
                    probs = self.interval_probabilities(c, x, lo, hi, count)
                offset = lo[:, c] if lo is not None and count < 256 else torch.zeros_like(x[:, 0])
                if method == "mode":
                    value = probs.argmax(dim=-1)
                elif method == "sample":
                    flat = probs.reshape(-1, probs.shape[-1])
                    value = torch.multinomial(flat, 1).reshape(probs.shape[:-1])
                else:
                    raise ValueError(f"unknown generation method {method!r}")
                value = value + offset
            x[:, c] = value
        return x


def scale_indices(std_over_step: np.ndarray) -> np.ndarray:
    """Nearest SCALE_TABLE entry (in log space) for each standard deviation."""
    with np.errstate(divide="ignore", invalid="ignore"):
        position = (np.log(std_over_step) - _LOG_SCALE_MIN) / _LOG_SCALE_STEP
    position = np.nan_to_num(position, nan=0.0, posinf=len(SCALE_TABLE) - 1, neginf=0.0)
    return np.clip(np.rint(position), 0, len(SCALE_TABLE) - 1).astype(np.int64)


class DiagonalGaussian:
    """A diagonal Gaussian over latents. The coder sends a latent on a grid of `step`
    centred on the mean, as the symbol round((latent - mean) / step) under the
    quantised Gaussian of SCALE_TABLE nearest std / step; ExactGaussian has the same
    coding interface (coder_grid, scale_indices, symbols, from_symbols)."""

    coder_grid = "gaussian"

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean = mean
        self.log_std = log_std.clamp(-8.0, 4.0)

    @classmethod
    def from_params(cls, params: torch.Tensor) -> DiagonalGaussian:
        mean, log_std = params.chunk(2, dim=1)
        return cls(mean, log_std)

    @classmethod
    def standard(cls, shape: tuple[int, ...], device=None) -> DiagonalGaussian:
        """N(0, 1), what u is coded under in its prior's base space. Held in float64, so
        that its scales std / step are 1 / step in double precision, as the format
        defines them."""
        zeros = torch.zeros(shape, dtype=torch.float64, device=device)
        return cls(zeros, zeros)

    def scale_indices(self, step: float | torch.Tensor) -> np.ndarray:
        """The SCALE_TABLE index of every latent coded on a grid of `step`."""
        return scale_indices((self.std / step).cpu().numpy().astype(np.float64))

    def symbols(self, target: torch.Tensor, step: float | torch.Tensor) -> np.ndarray:
        """(target - mean) / step: the coder rounds it to the symbols it sends."""
        return ((target - self.mean).to(target.dtype) / step).cpu().numpy()

    def from_symbols(self, symbols: np.ndarray, step: float | torch.Tensor) -> torch.Tensor:
        """The latents that coded `symbols` stand for: mean + step * symbols (float32)."""
        offsets = step * torch.from_numpy(symbols.astype(np.float32)).to(self.mean.device)
        return (self.mean + offsets).to(offsets.dtype)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(self.log_std)

    def rsample(self) -> torch.Tensor:
        return self.mean + self.std * torch.randn_like(self.mean)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Elementwise log density."""
        standardized = (value - self.mean) / self.std
        return -0.5 * (standardized**2 + LOG_2PI) - self.log_std

    def kl(self, other: DiagonalGaussian) -> torch.Tensor:
        """Elementwise KL(self || other), analytic."""
        var_ratio = torch.exp(2 * (self.log_std - other.log_std))
        mean_term = ((self.mean - other.mean) / other.std) ** 2
        return 0.5 * (var_ratio + mean_term - 1.0) - (self.log_std - other.log_std)
