"""The selfVAE family (Gatopoulos & Tomczak 2020) as one hierarchical model: its
networks and its geometry. The walk down the hierarchy is hierarchy.descend; the
methods here run it with the model's own policies.

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

import dataclasses
import hashlib
import itertools
import math

import torch
from torch import nn

from . import fixed_point
from .config import ModelConfig
from .distributions import DiagonalGaussian
from .exact_distributions import ExactGaussian
from .exact_layers import make_exact_layers
from .families import FAMILIES
from .heads import gaussian_from_params
from .hierarchy import ElboTerms, Generation, RateDistortionTerms, descend
from .layers import data_dependent_init
from .levels import DECODING_MODULES, Level, TopLatent, decoding_quality, spatial_size
from .priors import CheckerboardContext, MixtureOfGaussiansPrior, RealNVPPrior, StandardNormalPrior
from .transforms import downscale_pyramid, size_at_stride

INITIAL_LOG2_STEP_SPAN = 1.5  # a lossy model's steps start at 2^1.5 (coarsest) .. 2^-1.5 (finest)


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
        if config.u_context:
            self.u_context = CheckerboardContext(config.u_channels, config.u_context)
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
                    upper_decoding=config.upper_decoding if k == config.num_levels - 1 else 0,
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

    def standard_latents(self, shape: tuple[int, ...]) -> DiagonalGaussian | ExactGaussian:
        """N(0, 1) over latents of `shape`, float or exact as the model computes: what u
        is coded under in its prior's base space."""
        return (ExactGaussian if self.config.exact else DiagonalGaussian).standard(shape, self.device)

    def u_second_half(self, first_half: torch.Tensor, u_step: torch.Tensor) -> DiagonalGaussian | ExactGaussian:
        """A u_context model's Gaussian of u's second checkerboard half (base space),
        given the first half as sent (zeros elsewhere) and u's steps."""
        return gaussian_from_params(self.u_context(first_half, u_step))

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
        policy = ElboTerms(self, self.representations(x), analytic_kl)
        with decoding_quality(self, self.unquantised_quality):
            descend(self, spatial_size(x), policy)
        return {**policy.terms, "_kl_z_maps": policy.kl_maps}

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
        u_step, z_steps = self.trained_latent_steps(torch.tensor([quality], device=self.u_log_steps.device))
        return u_step * scale, [step * scale for step in z_steps]

    def trained_latent_steps(self, quality: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A float lossy model's latent steps for each example's quality (0-based, [B]):
        u's and each z_k's, [B, C, 1, 1]."""
        u_step = torch.exp(self.u_log_steps[quality])[:, :, None, None]
        z_steps = torch.exp(self.z_log_steps[quality])[:, :, :, None, None]  # [B, L, C, 1, 1]
        return u_step, list(z_steps.unbind(1))

    def rate_distortion_terms(
        self, x: torch.Tensor, quality: torch.Tensor, noisy: bool, conditional: bool = False, mixed: bool = False
    ) -> dict[str, torch.Tensor]:
        """What a lossy model trains on, per example (hierarchy.RateDistortionTerms):
        the bits of u and every z_k (rate_u, rate_z1 ..), the squared error of the rs2
        reconstruction summed over subpixels (squared_error) and coarse_mse, the mean
        over the coarser levels of each reconstructed y_k's MSE per subpixel.
        `quality` [B] picks each example's latent steps; `noisy` replaces rounding by
        uniform noise (training); `mixed` counts the rate on noisy latents and decodes
        the rounded ones. With `conditional`: the bits of a conditional file
        (rate_u, rate_y1, rate_z1, ..), and no distortion term."""
        self._check_input(x)
        if not self.config.lossy:
            raise ValueError("rate_distortion_terms needs a lossy model (config.qualities > 0)")
        ys = self.representations(x)
        policy = RateDistortionTerms(self, ys, self.trained_latent_steps(quality), noisy, conditional, mixed=mixed)
        with decoding_quality(self, quality):
            y = descend(self, spatial_size(x), policy)
        terms = policy.terms
        if not conditional:
            terms["squared_error"] = (y - ys[-1].to(y.dtype)).square().flatten(1).sum(1)
            terms["coarse_mse"] = torch.stack(policy.coarse_errors).mean(0)
        return terms

    def full_file_bits(self, x: torch.Tensor, step: float) -> torch.Tensor:
        """Per example: the bits of a `full` file of x as a float lossless model
        reckons them (u and every z_k on a grid of `step` relative to their prior means,
        every y_k and x under the model), which the exact coder's file matches to
        within a fraction of a percent."""
        self._check_input(x)
        if self.config.lossy or self.config.exact:
            raise ValueError("full_file_bits needs a float lossless model")
        steps = (step, [step] * len(self.levels))
        policy = RateDistortionTerms(self, self.representations(x), steps, noisy=False, conditional=True, full=True)
        descend(self, spatial_size(x), policy)
        return sum(policy.terms.values())

    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation of the weight-normalised layers from a batch."""
        with data_dependent_init(self):
            self.elbo_terms(x)

    # -- generative paths ------------------------------------------------------------
    def _generate(self, u, image_size, truth, given_ys, inferred_zs, method, latent_method) -> torch.Tensor:
        policy = Generation(u, truth, given_ys, inferred_zs, method, latent_method)
        with decoding_quality(self, self.unquantised_quality):
            return descend(self, image_size, policy).to(torch.uint8)

    @property
    def unquantised_quality(self) -> int | None:
        """The quality whose films a quality_film model decodes with where the latents
        are not quantised (the ELBO, generation): the finest. None for other models."""
        return self.config.qualities - 1 if self.config.quality_film else None

    @torch.no_grad()
    def sample(self, count: int, image_size: tuple[int, int], method: str = "sample") -> torch.Tensor:
        """Unconditional generation: u ~ p(u), then every level."""
        shape = (count, self.config.u_channels, *self.u_size(image_size))
        if self.config.exact:  # the base sample as activations
            base = torch.round(torch.randn(shape, device=self.device) * fixed_point.ACT_ONE).to(torch.int64)
            u = self.prior_u.from_base(base)
        else:
            u = self.prior_u.sample(shape, device=self.device)
        return self._generate(u, image_size, [], 0, 0, method, "sample")

    @torch.no_grad()
    def generate_from_representation(
        self, y_top: torch.Tensor, image_size: tuple[int, int], method: str = "sample"
    ) -> torch.Tensor:
        """Conditional generation from y_1 (e.g. a tiny image): z's sampled from their
        priors, finer y's generated. u is inferred from y_1 (only the z-priors use it)."""
        u = self.top.posterior(y_top).mean
        return self._generate(u, image_size, [y_top.to(torch.int64)], 1, 0, method, "sample")

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
        latent_method = "sample" if method == "sample" else "mean"
        return self._generate(u, image_size, ys, known, known - 1, method, latent_method)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mode: str, method: str = "mean", z_from_prior: bool = False) -> torch.Tensor:
        """The paper's reconstructions (figure 3), with unquantised latents:
        rs1 (u only), rs2 (u and every z_k), conditional (u, z's and true y's) and
        full (x itself). `z_from_prior` replaces the inferred z's by their prior means,
        which shows how much the decoder uses them. Lossless models only: a lossy
        model's reconstructions are its codec's, at a quality setting."""
        if self.config.lossy:
            raise ValueError("a lossy model reconstructs through its codec, at a quality setting")
        self._check_input(x)
        levels = len(self.levels)
        given_ys = {"full": levels + 1, "conditional": levels, "rs2": 0, "rs1": 0}.get(mode)
        if given_ys is None:
            raise ValueError(f"unknown reconstruction mode {mode!r}")
        if mode == "full":
            return x.to(torch.uint8)
        ys = self.representations(x)
        inferred_zs = 0 if mode == "rs1" or z_from_prior else levels
        return self._generate(
            self.top.posterior(ys[0]).mean, spatial_size(x), ys, given_ys, inferred_zs, method, "mean"
        )

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


def upper_decoding_alone(model: SelfVAE) -> SelfVAE:
    """The model that `model` (config.upper_decoding) took its upper decoding from:
    its last level rebuilds every quality with that decoding, the quality films are
    dropped and every other tensor is `model`'s. A lossy model joined from its
    predecessor so carries the predecessor whole, and reads its files."""
    if not model.config.upper_decoding:
        raise ValueError("the model has no upper decoding")
    alone = SelfVAE(dataclasses.replace(model.config, quality_film=False, upper_decoding=0))
    last = f"levels.{len(model.levels) - 1}."
    state = {}
    for name, tensor in model.state_dict().items():
        if ".quality_films." in name:
            continue
        if name.startswith(last):
            inner = name[len(last) :]
            if inner.split(".")[0] in DECODING_MODULES:
                continue  # the lower decoding
            name = last + inner.removeprefix("upper.")
        state[name] = tensor
    alone.load_state_dict(state)
    return alone.eval()


def without_u_context(model: SelfVAE) -> SelfVAE:
    """`model` without its checkerboard context for u (config.u_context): the model it
    was fitted to (training/u_context.py), which a model so fitted carries whole, and
    whose files it reads."""
    if not model.config.u_context:
        raise ValueError("the model has no u context")
    alone = SelfVAE(dataclasses.replace(model.config, u_context=0))
    alone.load_state_dict({name: t for name, t in model.state_dict().items() if not name.startswith("u_context.")})
    return alone.eval()
