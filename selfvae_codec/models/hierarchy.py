"""The one walk down the hierarchy, and what the model does on the way.

`descend` goes from the top: u, then y_1 from p(y_1 | u), then for every level k the
prior p(z_k | y_k, z_{k-1}), z_k and y_{k+1}. A policy decides what each of them is:

    policy.top_latent(u_size)              -> u
    policy.top_representation(TopState)    -> y_1
    policy.latent(LevelState)              -> z_k
    policy.representation(LevelState, z_k) -> y_{k+1}

The policies here score the ELBO (training a lossless model), the rate-distortion
terms (training a lossy one) and generate (sample, upscale, reconstruct). The codec's
encoder and decoder (codec/engine.py) and benchmarks/level_quality.py bring their
own. Distributions are built only when a policy asks for them (TopState.likelihood,
LevelState.prior), so taking a given value costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import torch

from .distributions import DiagonalGaussian, DiscretizedLogisticMixture, logistic_bin_log_prob
from .levels import Level, TopLatent
from .priors import checkerboard


@dataclass
class TopState:
    """The top of the walk once u is known: p(y_1 | u) on demand."""

    top: TopLatent
    u: torch.Tensor
    size: tuple[int, int]  # y_1's

    @cached_property
    def likelihood(self) -> DiscretizedLogisticMixture:
        return self.top.likelihood(self.u, self.size)


@dataclass
class LevelState:
    """Level `index` (0-based) of the walk: y_k as the walk holds it (`coarse`), the
    latent above (`previous`: z_{k-1}, or u), and p(z_k | y_k, z_{k-1}) on demand."""

    index: int
    level: Level
    coarse: torch.Tensor
    previous: torch.Tensor
    z_size: tuple[int, int]
    fine_size: tuple[int, int]  # y_{k+1}'s

    @cached_property
    def prior(self) -> DiagonalGaussian:
        return self.level.prior(self.coarse, self.previous, self.z_size)


class Policy(Protocol):
    def top_latent(self, u_size: tuple[int, int]) -> torch.Tensor: ...

    def top_representation(self, top: TopState) -> torch.Tensor: ...

    def latent(self, at: LevelState) -> torch.Tensor: ...

    def representation(self, at: LevelState, z: torch.Tensor) -> torch.Tensor: ...


def descend(model, image_size: tuple[int, int], policy: Policy) -> torch.Tensor:
    """Walk `model` (a SelfVAE) down from u to x for an image of `image_size`; returns
    the last representation the policy gives (x, or its reconstruction)."""
    u = policy.top_latent(model.u_size(image_size))
    y = policy.top_representation(TopState(model.top, u, model.y_size(0, image_size)))
    previous = u
    for k, level in enumerate(model.levels):
        at = LevelState(k, level, y, previous, model.z_size(k, image_size), model.y_size(k + 1, image_size))
        previous = policy.latent(at)
        y = policy.representation(at, previous)
    return y


def send_u(model, shape: tuple[int, ...], u_step, send) -> torch.Tensor:
    """u in its prior's base space as a file sends it, each latent on a grid of `u_step`
    about its distribution's mean. `send(distribution, positions)` sends the latents at
    `positions` ([1, 1, H, W] booleans; None: all of them) under `distribution` and
    returns the sent latents (full shape: what lies outside `positions` is ignored).
    All of u goes under N(0, 1), or in a u_context model the checkerboard's first half
    does, then its second half under the Gaussian predicted from the first."""
    standard = model.standard_latents(shape)
    if not model.config.u_context:
        return send(standard, None)
    first = checkerboard(shape[-2:], device=standard.mean.device)
    sent_first = send(standard, first)
    first_half = torch.where(first, sent_first, torch.zeros_like(sent_first))
    second = model.u_second_half(first_half, u_step)
    return torch.where(first, sent_first, send(second, ~first))


def representation_names(levels: int) -> list[str]:
    """y1 .. y{L}, x: the names of [y_1, ..., y_L, x] in the terms' keys."""
    return [f"y{k + 1}" for k in range(levels)] + ["x"]


class ElboTerms:
    """The negative ELBO, one posterior sample: every y is the true one, every latent a
    sample of its posterior. Fills `terms` (nats per example): kl_u, re_y1, then
    kl_z{k}, re_y{k+1} per level (re_x last); `kl_maps` holds the elementwise KL maps.
    With analytic_kl=False a KL term is the single-sample log q - log p."""

    def __init__(self, model, ys: list[torch.Tensor], analytic_kl: bool):
        self.model, self.ys, self.analytic_kl = model, ys, analytic_kl
        self.names = representation_names(len(ys) - 1)
        self.terms: dict[str, torch.Tensor] = {}
        self.kl_maps: list[torch.Tensor] = []

    def top_latent(self, u_size):
        q_u = self.model.top.posterior(self.ys[0])
        u = q_u.rsample()
        self.terms["kl_u"] = q_u.log_prob(u).flatten(1).sum(1) - self.model.prior_u.log_prob(u)
        return u

    def top_representation(self, top):
        self.terms[f"re_{self.names[0]}"] = -top.likelihood.log_prob(self.ys[0]).flatten(1).sum(1)
        return self.ys[0]

    def latent(self, at):
        k = at.index
        q_z = at.level.posterior(self.ys[k + 1], at.coarse)
        z = q_z.rsample()
        kl_map = q_z.kl(at.prior) if self.analytic_kl else q_z.log_prob(z) - at.prior.log_prob(z)
        self.kl_maps.append(kl_map)
        self.terms[f"kl_z{k + 1}"] = kl_map.flatten(1).sum(1)
        return z

    def representation(self, at, z):
        k = at.index
        self.terms[f"re_{self.names[k + 1]}"] = -at.level.log_prob(self.ys[k + 1], at.coarse, z)
        return self.ys[k + 1]


def quantize_latents(values: torch.Tensor, center: torch.Tensor, step: torch.Tensor, noisy: bool) -> torch.Tensor:
    """center + step * round((values - center) / step), as the coder sends them; with
    `noisy`, values + uniform noise of one step's width (its training stand-in)."""
    if noisy:
        return values + step * (torch.rand_like(values) - 0.5)
    return center + step * torch.round((values - center) / step)


def quantize_as_sent(
    values: torch.Tensor, center: torch.Tensor, step: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the latents rounded as the coder sends them, the same): rate and walk alike."""
    rounded = quantize_latents(values, center, step, noisy=False)
    return rounded, rounded


def quantize_mixed(values: torch.Tensor, center: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixed quantisation (Minnen & Singh 2020): (the latents with uniform noise, for
    the rate; the latents rounded as the coder sends them, with straight-through
    gradients, for the decoder)."""
    rounded = quantize_latents(values, center, step, noisy=False)
    return quantize_latents(values, center, step, noisy=True), values + (rounded - values).detach()


def latent_bits(offset: torch.Tensor, step: torch.Tensor, std: torch.Tensor, positions=None) -> torch.Tensor:
    """Bits per example of latents `offset` from their prior means, each the mass of
    its step-wide bin under a logistic with standard deviation `std` (only those at
    `positions`, booleans that broadcast to `offset`, where given)."""
    bits = -logistic_bin_log_prob(offset, step, std) / math.log(2)
    if positions is not None:
        bits = torch.where(positions, bits, torch.zeros_like(bits))
    return bits.flatten(1).sum(1)


def rate_of_u(model, base: torch.Tensor, u_step, quantized) -> tuple[torch.Tensor, torch.Tensor]:
    """(u in base space as the decoder walks on it, its bits per example) for the
    encoder's `base`, each latent quantised by `quantized(values, center, step)`, which
    returns (the latents the rate is counted on, the latents sent): send_u's two
    halves in a u_context model."""
    rate = torch.zeros(base.shape[0], device=base.device)

    def send(distribution, positions):
        nonlocal rate
        center, std = distribution.mean.to(base.dtype), distribution.std.to(base.dtype)
        for_rate, sent = quantized(base, center, u_step)
        rate = rate + latent_bits(for_rate - center, u_step, std, positions)
        return sent

    sent = send_u(model, tuple(base.shape), u_step, send)
    return sent, rate


class RateDistortionTerms:
    """What a lossy model trains on, walking as its decoder does: y_1 from u, each
    level's prior from the reconstructed y_k, z_k from the posterior given the true
    y_{k+1} and that y_k, y_{k+1} as the decoder's 'mean' would generate it (floats
    with straight-through gradients). Latents are quantised on the quality's steps
    (relative to the prior mean), or get uniform noise of the same width (`noisy`);
    with `mixed`, the rate is counted on the noisy latents and the decoder walks on the
    rounded ones (quantize_mixed).

    Fills `terms` per example: rate_u, rate_z1 .. (bits); `coarse_errors` holds each
    reconstructed y_k's MSE per subpixel. With `conditional`, every y_k is the true one,
    coded losslessly (rate_y1 .. rate_yL, bits): the walk of a conditional file; with
    `full` too, x as well (rate_x): the walk of a `full` file."""

    def __init__(
        self,
        model,
        ys: list[torch.Tensor],
        steps,
        noisy: bool,
        conditional: bool,
        full: bool = False,
        mixed: bool = False,
    ):
        self.model, self.ys, self.noisy, self.conditional = model, ys, noisy, conditional or full
        self.full, self.mixed = full, mixed
        self.u_step, self.z_steps = steps
        self.terms: dict[str, torch.Tensor] = {}
        self.coarse_errors: list[torch.Tensor] = []

    def top_latent(self, u_size):
        prior_u = self.model.prior_u
        base = prior_u.to_base(self.model.top.posterior(self.ys[0]).mean)
        sent, self.terms["rate_u"] = rate_of_u(self.model, base, self.u_step, self._quantized)
        return prior_u.from_base(sent)

    def _quantized(self, values, center, step) -> tuple[torch.Tensor, torch.Tensor]:
        """(the latents the rate is counted on, the latents the decoder walks on)."""
        if self.mixed:
            return quantize_mixed(values, center, step)
        quantized = quantize_latents(values, center, step, self.noisy)
        return quantized, quantized

    def top_representation(self, top):
        if self.conditional:
            self.terms["rate_y1"] = -top.likelihood.log_prob(self.ys[0]).flatten(1).sum(1) / math.log(2)
            return self.ys[0]
        return top.likelihood.expected_values()

    def latent(self, at):
        k = at.index
        if not self.conditional:
            error = at.coarse - self.ys[k].to(at.coarse.dtype)
            self.coarse_errors.append(error.square().flatten(1).mean(1))
        prior = at.prior
        posterior_mean = at.level.posterior(self.ys[k + 1], at.coarse).mean
        for_rate, sent = self._quantized(posterior_mean, prior.mean, self.z_steps[k])
        self.terms[f"rate_z{k + 1}"] = latent_bits(for_rate - prior.mean, self.z_steps[k], prior.std)
        return sent

    def representation(self, at, z):
        k = at.index
        if not self.conditional:
            return at.level.expected(at.coarse, z, at.fine_size)
        if k + 1 < len(self.model.levels) or self.full:  # a conditional file does not code x
            name = f"rate_y{k + 2}" if k + 1 < len(self.model.levels) else "rate_x"
            self.terms[name] = -at.level.log_prob(self.ys[k + 1], at.coarse, z) / math.log(2)
        return self.ys[k + 1]


class Generation:
    """Generate what is not given. u is given; the first `given_ys` of `truth` (the true
    [y_1, ...]) are taken as they are, and the first `inferred_zs` latents are their
    posterior means given `truth`. The other y's are generated by `method` ('mean',
    'mode', 'sample'), the other z's are the prior means (`latent_method` 'mean') or
    prior samples ('sample')."""

    def __init__(self, u, truth: list[torch.Tensor], given_ys: int, inferred_zs: int, method: str, latent_method: str):
        self.u, self.truth, self.given_ys, self.inferred_zs = u, truth, given_ys, inferred_zs
        self.method, self.latent_method = method, latent_method

    def top_latent(self, u_size):
        return self.u

    def top_representation(self, top):
        return self.truth[0] if self.given_ys > 0 else top.likelihood.generate(self.method)

    def latent(self, at):
        k = at.index
        if k < self.inferred_zs:
            return at.level.posterior(self.truth[k + 1], self.truth[k]).mean
        return at.prior.mean if self.latent_method == "mean" else at.prior.rsample()

    def representation(self, at, z):
        if at.index + 1 < self.given_ys:
            return self.truth[at.index + 1]
        return at.level.generate(at.coarse, z, at.fine_size, self.method)
