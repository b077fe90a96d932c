"""The lossy encoder working harder (`--effort 3` and up for rs2 and rs1): the latents a
tile's file sends are optimised for its rate plus lambda times the squared error of
what the decoder rebuilds, by stochastic Gumbel annealing (SGA; Yang, Bamler & Mandt,
"Improving Inference for Neural Image Compression", NeurIPS 2020).

The optimisation runs on the float twin of the exact model (models.exact.float_twin):
the walk the decoder takes, with each latent rounded softly on its step relative to
its prior mean (a random mix of the two nearest grid points, sharper as the
temperature falls) so that gradients reach every latent. What comes out is the
integers the file sends, one per latent (u's, then each z_k's, in steps from the
prior mean); the exact model codes them (engine.Coding), so the decoder and the
format are today's.

lambda is the slope of the tile's own rate-distortion curve at its quality: the
geometric mean of the slopes of the chords to the neighbouring qualities, from the
encoder's latents at each. (The lambdas the model was trained with are for latents
with uniform noise, whose rate and distortion differ widely from the rounded ones
the coder sends, most at the low qualities.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..models.hierarchy import descend, latent_bits, send_u
from ..models.levels import decoding_quality
from ..models.selfvae import SelfVAE

FIRST_OPTIMISING_EFFORT = 3
OPTIMISED_MODES = ("rs2", "rs1")
# Adam iterations per effort level, doubling at each (an iteration: a forward and a
# backward pass of the float model, about 2.5 times a plain walk's time).
ITERATIONS = {3: 20, 4: 40, 5: 80, 6: 160, 7: 320, 8: 640, 9: 1280}
LEARNING_RATE = 0.02  # latents are optimised in units of their steps
TEMPERATURE_START, TEMPERATURE_END = 0.5, 0.05  # annealed geometrically over the iterations
CHECK_EVERY = 5  # iterations between evaluations of the hard-rounded latents


def optimisation_iterations(model: SelfVAE, mode: str, effort: int) -> int:
    """The iterations optimised_symbols runs per tile of a `mode` file at `effort` (0
    where the encoder sends the latents it infers)."""
    if mode in OPTIMISED_MODES and model.config.lossy and effort >= FIRST_OPTIMISING_EFFORT:
        return ITERATIONS[effort]
    return 0


def soft_round(offset: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """SGA: floor(offset) or floor(offset) + 1, picked at random with a Gumbel-softmax
    relaxation at `temperature` (offsets near a grid point mostly go to it)."""
    floor = torch.floor(offset)
    fraction = offset - floor
    eps = 1e-5
    logits = torch.stack(
        [-torch.atanh(fraction.clamp(eps, 1 - eps)), -torch.atanh((1 - fraction).clamp(eps, 1 - eps))], dim=-1
    )
    uniform = torch.rand(logits.shape, generator=generator, device=offset.device).clamp(1e-10, 1 - 1e-10)
    gumbel = -torch.log(-torch.log(uniform))
    weights = torch.softmax((logits / temperature + gumbel) / temperature, dim=-1)
    return floor + weights[..., 1]


class RelaxedWalk:
    """The decoder's walk of an rs2 / rs1 tile (hierarchy.Policy), the latents it sends
    taken from `values` (u in its prior's base space, then each z_k, in units of their
    steps) and rounded softly at `temperature`, or as the coder rounds them where it is
    None (then `symbols` holds what the file would send). With no `values`, they are
    the encoder's: the posterior means given the true image and, closed loop, the
    decoder's coarser levels (engine.Coding); they are appended to `values`."""

    def __init__(self, model: SelfVAE, ys, steps, sends_z: bool, values: list, temperature=None, generator=None):
        self.model, self.ys, self.sends_z = model, ys, sends_z
        self.u_step, self.z_steps = steps
        self.values, self.temperature, self.generator = values, temperature, generator
        self.bits = torch.zeros((), device=ys[0].device)
        self.symbols: list[np.ndarray] = []
        self._sent = 0

    def _value(self, encoders_value) -> torch.Tensor:
        """The next latent's values in units of its step (the encoder's on the first walk)."""
        if self._sent == len(self.values):
            self.values.append(encoders_value().detach())
        self._sent += 1
        return self.values[self._sent - 1]

    def _round(self, offset: torch.Tensor) -> torch.Tensor:
        if self.temperature is None:
            return torch.round(offset)
        return soft_round(offset, self.temperature, self.generator)

    def _count(self, offset: torch.Tensor, step: torch.Tensor, std: torch.Tensor, positions=None) -> None:
        """Add the bits of latents sent at `offset` from their prior means (at `positions`)."""
        self.bits = self.bits + latent_bits(offset, step, std, positions).sum()

    def _send(self, encoders_value, center: torch.Tensor, step: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        rounded = self._round(self._value(lambda: encoders_value() / step) - center / step)
        if self.temperature is None:
            self.symbols.append(rounded.detach().to(torch.int64).cpu().numpy())
        self._count(rounded * step, step, std)
        return center + rounded * step

    def top_latent(self, u_size):
        """u in its prior's base space (hierarchy.send_u), one value per latent."""
        top, prior_u, step = self.model.top, self.model.prior_u, self.u_step
        value = self._value(lambda: prior_u.to_base(top.posterior(self.ys[0]).mean) / step)
        symbols = torch.zeros(value.shape, dtype=torch.int64, device=value.device)

        def send(distribution, positions):
            center, std = distribution.mean.to(value.dtype), distribution.std.to(value.dtype)
            rounded = self._round(value - center / step)
            chosen = torch.ones_like(symbols, dtype=torch.bool) if positions is None else positions.expand_as(symbols)
            symbols[chosen] = rounded.detach().to(torch.int64)[chosen]
            self._count(rounded * step, step, std, positions)
            return center + rounded * step

        base = send_u(self.model, tuple(value.shape), step, send)
        if self.temperature is None:
            self.symbols.append(symbols.cpu().numpy())
        return prior_u.from_base(base)

    def top_representation(self, top):
        return top.likelihood.expected_values()

    def latent(self, at):
        prior = at.prior
        if not self.sends_z:
            return prior.mean
        k = at.index
        encoders = lambda: at.level.posterior(self.ys[k + 1], at.coarse).mean  # noqa: E731
        return self._send(encoders, prior.mean, self.z_steps[k], prior.std)

    def representation(self, at, z):
        return at.level.expected(at.coarse, z, at.fine_size)


def rate_and_error(
    twin: SelfVAE, ys, quality: int, step_scale: float, sends_z: bool, values: list, temperature=None, generator=None
):
    """(bits per pixel, mean squared error per subpixel, the walk) of one walk at
    `quality` (0-based), its latent steps scaled by `step_scale`."""
    walk = RelaxedWalk(twin, ys, twin.latent_steps(quality, step_scale), sends_z, values, temperature, generator)
    with decoding_quality(twin, quality):
        rebuilt = descend(twin, tuple(ys[-1].shape[-2:]), walk)
    pixels = ys[-1].shape[-1] * ys[-1].shape[-2]
    error = (rebuilt - ys[-1].to(rebuilt.dtype)).square().mean()
    return walk.bits / pixels, error, walk


def curve_slope(
    twin: SelfVAE, ys, quality: int, step_scale: float, sends_z: bool, at_quality: tuple[float, float] | None = None
) -> float | None:
    """lambda at `quality` (0-based): the bits per pixel the tile's encoder gains per unit
    of squared error, from the chords to the neighbouring qualities (None where no
    neighbour gives a falling curve). `at_quality`: the (rate, error) of the encoder's
    latents at `quality`, where the caller has them already."""
    points = {}
    for q in range(max(0, quality - 1), min(twin.config.qualities, quality + 2)):
        if q == quality and at_quality is not None:
            points[q] = at_quality
            continue
        rate, error, _ = rate_and_error(twin, ys, q, step_scale, sends_z, [])
        points[q] = (float(rate), float(error))
    slopes = []
    for low, high in ((quality - 1, quality), (quality, quality + 1)):
        if low in points and high in points:
            rate_gain = points[high][0] - points[low][0]
            error_gain = points[low][1] - points[high][1]
            if rate_gain > 0 and error_gain > 0:
                slopes.append(rate_gain / error_gain)
    return math.exp(sum(map(math.log, slopes)) / len(slopes)) if slopes else None


def optimised_symbols(
    twin: SelfVAE,
    tile: torch.Tensor,
    mode: str,
    quality: int,
    step_scale: float,
    effort: int,
    seed: int = 0,
    tick: Callable[[], None] | None = None,
) -> list[np.ndarray] | None:
    """The symbols (u's, then each z_k's in rs2) that an rs2 or rs1 file of `tile` sends
    at `quality` (0-based), optimised at `effort` (FIRST_OPTIMISING_EFFORT and up) by
    SGA on `twin`, the exact model's float twin; None where there is no slope to
    optimise for (a model of one quality). The best hard-rounded latents seen are kept,
    so the twin's rate + lambda * error never exceeds that of the encoder's latents.
    The same tile, seed and machine give the same symbols; `tick` is called after each
    iteration (progress)."""
    sends_z = mode == "rs2"
    values: list[torch.Tensor] = []  # filled with the encoder's latents by the first walk
    with torch.no_grad():
        ys = twin.representations(tile)
        rate, error, walk = rate_and_error(twin, ys, quality, step_scale, sends_z, values)
        trade_off = curve_slope(twin, ys, quality, step_scale, sends_z, at_quality=(float(rate), float(error)))
    if trade_off is None:
        return None
    best_loss, best_symbols = float(rate + trade_off * error), walk.symbols
    values = [value.clone().requires_grad_(True) for value in values]
    optimiser = torch.optim.Adam(values, lr=LEARNING_RATE)
    generator = torch.Generator(device=tile.device).manual_seed(seed)
    iterations = ITERATIONS[effort]
    for i in range(iterations):
        fraction = i / max(1, iterations - 1)
        temperature = TEMPERATURE_START * (TEMPERATURE_END / TEMPERATURE_START) ** fraction
        with torch.enable_grad():
            rate, error, _ = rate_and_error(twin, ys, quality, step_scale, sends_z, values, temperature, generator)
            optimiser.zero_grad()
            (rate + trade_off * error).backward()
        optimiser.step()
        if tick is not None:
            tick()
        if (i + 1) % CHECK_EVERY == 0 or i + 1 == iterations:
            with torch.no_grad():
                rate, error, walk = rate_and_error(twin, ys, quality, step_scale, sends_z, values)
            loss = float(rate + trade_off * error)
            if loss < best_loss:
                best_loss, best_symbols = loss, walk.symbols
    return best_symbols
