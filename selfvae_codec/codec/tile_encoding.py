"""Encoding one tile of an image: the model's sections, or in a `full` file a PNG /
WebP file of the tile where that is smaller, without running the exact model on a
tile that its own estimate says it cannot win."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..bitstream import Section
from ..models.exact import float_twin
from ..models.selfvae import SelfVAE
from .adaptation import fit_adaptation
from .engine import encode_tile
from .entropy import CodingError
from .images import classical_lossless
from .latent_optimisation import optimisation_iterations, optimised_symbols
from .tiles import SECTION_ENTRY_BYTES

# The exact model codes a `full` tile only where the float model's estimate of its
# bits is under the classical file's times (1 + margin). The estimate matches the
# model's file to within 1%; adaptation (effort 3) makes a tile's file up to
# 8% smaller than the unadapted estimate, so it gets a wider margin.
SKIP_MARGIN = 0.01
SKIP_MARGIN_ADAPTED = 0.10


class ModelBitsEstimate:
    """The bits of a tile's `full` sections as a lossless model's float twin reckons
    them (SelfVAE.full_file_bits): a forward pass, about 40% of exact coding's time.
    The lossy encoder's latent optimisation runs on the same twin (float_model)."""

    def __init__(self, model: SelfVAE):
        self.model = model
        self._float_model: SelfVAE | None = None

    def float_model(self) -> SelfVAE:
        """The model's float twin (the model itself if it is a float one), made once;
        its weights are constants (gradients go to latents only)."""
        if self._float_model is None:
            self._float_model = float_twin(self.model) if self.model.config.exact else self.model
            self._float_model.requires_grad_(False)
        return self._float_model

    @torch.no_grad()
    def __call__(self, tile: torch.Tensor, step: float) -> float:
        return float(self.float_model().full_file_bits(tile, step).sum())


@dataclass
class TileSettings:
    """How every tile of a file is coded."""

    mode: str
    step: float
    quality: int | None  # 1-based, a lossy model's
    version: int  # the file's format version
    effort: int
    max_error: int
    channels: int  # the image's: 1 (grayscale) or 3
    classical_tiles: bool  # whether a `full` tile may be stored as PNG / WebP
    adapts: bool  # whether the pixel heads are fitted to each tile


def _coded_by_model(
    model: SelfVAE, estimate: ModelBitsEstimate, tile: torch.Tensor, index: int, s: TileSettings, counter
):
    adaptation = fit_adaptation(model, tile, s.step, s.version, max_error=s.max_error) if s.adapts else None
    symbols = None
    if optimisation_iterations(model, s.mode, s.effort):
        twin = estimate.float_model()
        symbols = optimised_symbols(twin, tile, s.mode, s.quality - 1, s.step, s.effort, tick=counter)
    return encode_tile(
        model, tile, index, s.mode, s.step, s.quality, s.version, counter, adaptation, s.max_error, symbols
    )


def encode_model_or_classical(
    model: SelfVAE,
    estimate: ModelBitsEstimate,
    tile: torch.Tensor,
    pixels: np.ndarray,
    index: int,
    settings: TileSettings,
    counter,
):
    """Tile `index` (int64 [1, C, h, w] on the model's device; `pixels` the same as
    uint8 h x w x C): (reconstruction, sections, estimated bits per section). A tile
    the model cannot code raises CodingError unless it may be stored classically."""
    s = settings
    if not (s.mode == "full" and s.classical_tiles):
        return _coded_by_model(model, estimate, tile, index, s, counter)
    classical = classical_lossless(pixels, s.channels == 1, s.effort, torch.get_num_threads())
    classical_sections, classical_bits = [Section("pixels", 0, index, classical)], {"pixels": 8.0 * len(classical)}
    margin = SKIP_MARGIN_ADAPTED if s.adapts else SKIP_MARGIN
    if not s.max_error and estimate(tile, s.step) > 8 * len(classical) * (1 + margin):
        return tile, classical_sections, classical_bits
    try:
        result, sections, bits = _coded_by_model(model, estimate, tile, index, s, counter)
    except CodingError:
        return tile, classical_sections, classical_bits  # a tile the coder cannot code
    if len(classical) < sum(len(section.payload) + SECTION_ENTRY_BYTES for section in sections):
        return result, classical_sections, classical_bits
    return result, sections, bits
