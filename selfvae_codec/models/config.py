"""Model configuration: a JSON-serialisable description of one model of the family."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from .families import FAMILIES

PRIORS = ("realnvp", "standard", "mog")
# Per-level counts of residual blocks a trained model can grow by (see training/grow.py).
BLOCK_FIELDS = ("head_blocks", "trunk_blocks")
DEFAULT_Z_STRIDE = 4  # z_k lives at 1/4 of y_{k+1}'s size unless `z_strides` says otherwise


@dataclass(frozen=True)
class ModelConfig:
    """One model of the selfVAE family.

    family: 'selfvae-downscale' (K = `levels` discrete 2x downscales), 'selfvae-sketch'
      (one level whose representation is the pencil sketch) or 'vae' (one latent u).
    u_stride: how many times smaller u is than y_1 (a power of two).
    level_widths: channel width of each level, from level 1 (coarsest) to the last
      (full resolution); the default puts capacity at low resolution, where it is cheap.
    head_blocks: residual blocks in each likelihood head, per level (empty: none).
      They start at zero, so a trained model can grow them without changing its output.
    trunk_blocks: wide residual blocks after each level's likelihood trunk, per level,
      shared by its heads; they start at zero too.
    z_strides: per level, how many times smaller z_k is than y_{k+1} (a power of two,
      at least y_k's own stride below y_{k+1}); empty: DEFAULT_Z_STRIDE everywhere.
      A finer z at the last level carries more of x's detail (lossy models).
    exact: integer weights and fixed-point arithmetic (models/exact.py): every number
      that decides a probability is the same on every machine.
    qualities: 0 for a lossless model; N > 0 for a lossy model trained for rate and
      distortion (training/rate_distortion.py) at N quality settings, each with its own
      learned latent steps. Its z posteriors also see the decoder's reconstruction of
      the coarser level (closed loop), and its decoder generates pixels freely instead
      of holding the coarser level's block means, so the z's can correct them.
    quality_film: a lossy model whose levels' likelihood trunks are told the quality:
      per quality, a gain and a bias per channel after the context block and inside
      and after every trunk block (levels.QualityFilm), so one decoder can rebuild
      each quality's rounded latents its own way. They start as the identity.
    upper_decoding: a lossy model whose last level rebuilds the qualities from this
      one (1-based) up with a second set of decoding parts (context block, trunk
      blocks, group heads: the level's `upper`), such as the decoding the model had
      before its own was fitted to the low qualities' rounded latents; 0: one set.
    u_context: a lossy model that codes u in two halves of a checkerboard, the second
      under a Gaussian that a small network (this many channels wide; 0: none) predicts
      from the first half as sent and u's steps (priors.CheckerboardContext), instead
      of under N(0, 1) everywhere.
    """

    family: str = "selfvae-downscale"
    levels: int = 3
    image_channels: int = 3
    u_channels: int = 8
    z_channels: int = 8
    u_stride: int = 2
    prior: str = "realnvp"
    flow_layers: int = 4
    flow_hidden: int = 64
    mog_components: int = 8
    mixtures: int = 5
    top_width: int = 64
    level_widths: tuple[int, ...] = field(default=(64, 48, 32))
    growth: int = 16
    dense_layers: int = 2
    sketch_blur_passes: int = 4
    head_blocks: tuple[int, ...] = ()
    trunk_blocks: tuple[int, ...] = ()
    z_strides: tuple[int, ...] = ()
    exact: bool = False
    qualities: int = 0
    quality_film: bool = False
    upper_decoding: int = 0
    u_context: int = 0

    def __post_init__(self):
        object.__setattr__(self, "level_widths", tuple(self.level_widths))
        for name in BLOCK_FIELDS:
            blocks = tuple(getattr(self, name))
            if blocks and len(blocks) != self.num_levels:
                raise ValueError(f"{name} needs one count per level ({self.num_levels}), got {len(blocks)}")
            if any(count < 0 for count in blocks):
                raise ValueError(f"{name} counts must be >= 0")
            # No blocks anywhere is spelt () whatever the input, so equal models have equal configs.
            object.__setattr__(self, name, blocks if any(blocks) else ())
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {tuple(FAMILIES)}, got {self.family!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.u_stride < 1 or self.u_stride & (self.u_stride - 1):
            raise ValueError("u_stride must be a power of two")
        if self.num_levels != len(self.level_widths):
            raise ValueError(
                f"{self.family} with {self.num_levels} level(s) needs that many level_widths, "
                f"got {len(self.level_widths)}"
            )
        self._check_z_strides()
        if self.qualities < 0:
            raise ValueError(f"qualities must be >= 0, got {self.qualities}")
        if self.quality_film and not self.qualities:
            raise ValueError("quality_film needs a lossy model (qualities > 0)")
        if self.upper_decoding and not 2 <= self.upper_decoding <= self.qualities:
            raise ValueError(f"upper_decoding must be 0 or a quality from 2 to {self.qualities}")
        if self.u_context < 0 or (self.u_context and not self.qualities):
            raise ValueError("u_context needs a lossy model (qualities > 0) and a width >= 0")
        FAMILIES[self.family].check(self)

    @property
    def num_levels(self) -> int:
        """Number of z levels (and of likelihoods below the top one)."""
        return FAMILIES[self.family].num_levels(self.levels)

    def _check_z_strides(self) -> None:
        strides = tuple(self.z_strides)
        if strides and len(strides) != self.num_levels:
            raise ValueError(f"z_strides needs one stride per level ({self.num_levels}), got {len(strides)}")
        # The default everywhere is spelt (), so equal models have equal configs.
        object.__setattr__(self, "z_strides", () if all(s == DEFAULT_Z_STRIDE for s in strides) else strides)
        y_strides = FAMILIES[self.family].y_strides(self)
        previous = y_strides[0] * self.u_stride  # u's stride relative to x
        for k, stride in enumerate(self.level_z_strides):
            coarse_ratio = y_strides[k] // y_strides[k + 1]
            if stride < 1 or stride & (stride - 1) or stride < coarse_ratio:
                raise ValueError(f"z_strides[{k}] must be a power of two of at least {coarse_ratio}, got {stride}")
            if stride * y_strides[k + 1] > previous:
                raise ValueError(f"z_{k + 1} must not be coarser than the latent above it (z_strides {strides})")
            previous = stride * y_strides[k + 1]

    @property
    def level_z_strides(self) -> tuple[int, ...]:
        return self.z_strides or (DEFAULT_Z_STRIDE,) * self.num_levels

    @property
    def lossy(self) -> bool:
        return self.qualities > 0

    @property
    def level_head_blocks(self) -> tuple[int, ...]:
        return self.head_blocks or (0,) * self.num_levels

    @property
    def level_trunk_blocks(self) -> tuple[int, ...]:
        return self.trunk_blocks or (0,) * self.num_levels

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["level_widths"] = list(self.level_widths)
        # Written only when used, so models saved before these fields existed keep
        # their fingerprints (the config JSON is part of the fingerprint).
        for name in (*BLOCK_FIELDS, "z_strides"):
            if getattr(self, name):
                data[name] = list(getattr(self, name))
            else:
                del data[name]
        for name in ("exact", "qualities", "quality_film", "upper_decoding", "u_context"):  # written only when set
            if not data[name]:
                del data[name]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


def default_config() -> ModelConfig:
    """The shipped default: 3 downscale levels, light at full resolution."""
    return ModelConfig()


def tiny_config(**overrides) -> ModelConfig:
    """A very small model for tests and quick experiments."""
    base = dict(
        u_channels=4,
        z_channels=4,
        flow_layers=2,
        flow_hidden=8,
        mixtures=3,
        top_width=16,
        level_widths=(16, 12, 8),
        growth=8,
        dense_layers=1,
    )
    base.update(overrides)
    if "level_widths" not in overrides:
        family = FAMILIES[base.get("family", "selfvae-downscale")]
        base["level_widths"] = (16, 12, 8, 8)[: family.num_levels(base.get("levels", 3))]
    return ModelConfig(**base)
