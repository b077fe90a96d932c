"""The compiled probability-table kernel (selfvae_codec/models/_tables.c) against the
torch code it replaces, which stays the reference and the fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfvae_codec.codec.api import Codec
from selfvae_codec.models import exact_distributions
from selfvae_codec.models import fixed_point as fp
from selfvae_codec.models.exact_distributions import BIN_EDGES, BIN_VALUES, ExactLogisticMixture

PHOTO = Path(__file__).parent / "data" / "coffee_96x64.png"
built = pytest.mark.skipif(exact_distributions.compiled_tables is None, reason="the kernel is not built")


def test_the_kernel_is_built_by_the_install():
    """`pip install -e .` compiles it wherever a C compiler is found (as on CI); without
    one the package still works, on the slower torch path, and this test says so."""
    assert exact_distributions.compiled_tables is not None


def _mixture_rows(rows: int, mixtures: int, seed: int) -> tuple[torch.Tensor, ...]:
    """channel_parameters of random mixtures with the extremes the model can give:
    the sharpest and widest components, means at their limits, weights of zero."""
    generator = torch.Generator().manual_seed(seed)
    params = torch.randn(1, mixtures * 10, 1, rows, generator=generator, dtype=torch.float64) * 3
    log_scales = params[:, mixtures * 4 : mixtures * 7].view(1, 3, mixtures, 1, rows)
    log_scales[..., : rows // 4] = -7.0
    log_scales[..., rows // 4 : rows // 2] = 7.0
    means = params[:, mixtures : mixtures * 4].view(1, 3, mixtures, 1, rows)
    means[:, :, 0, :, rows // 2 : rows * 5 // 8] = 4.0
    means[:, :, 0, :, rows * 5 // 8 : rows * 3 // 4] = -4.0
    params[:, :mixtures, :, rows * 3 // 4 :] *= 20  # logits far apart: weights of 0
    mixture = ExactLogisticMixture(torch.round(params * fp.ACT_ONE).to(torch.int64), 3, mixtures)
    x = torch.randint(0, 256, (1, 3, 1, rows), generator=generator)
    return mixture.channel_parameters(2, x)


@built
@pytest.mark.parametrize("threads", [1, 2])
def test_the_kernel_gives_the_torch_codes_integers(threads):
    """All 257 edges (the outermost at +-2^36), the two-step tables' 17 shared edges,
    17 edges per row and narrow windows: the same counts, also split across threads."""
    rows = 3 * exact_distributions.KERNEL_ROWS_PER_THREAD  # enough to split
    mean, inv_scales, weights = _mixture_rows(rows, 10, seed=5)
    assert (weights == 0).any() and inv_scales.max() > 1 << 26
    generator = torch.Generator().manual_seed(6)
    per_row = torch.randint(0, 256 - BIN_VALUES, (rows, 1), generator=generator) + torch.arange(BIN_VALUES + 1)
    window = torch.randint(0, 256 - 32, (rows, 1), generator=generator) + torch.arange(33)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for edges in (BIN_EDGES, BIN_EDGES[::BIN_VALUES], BIN_EDGES[per_row], BIN_EDGES[window.clamp(max=256)]):
            reference = ExactLogisticMixture.mixture_counts(mean, inv_scales, weights, edges, compiled=False)
            counts = ExactLogisticMixture.mixture_counts(mean, inv_scales, weights, edges)
            assert torch.equal(counts, reference)
            assert (counts >= 0).all() and (counts.sum(-1) > 0).any()
    finally:
        torch.set_num_threads(previous)


@built
def test_files_are_the_same_bytes_with_and_without_the_kernel(monkeypatch):
    """A real photo through the shipped model, lossless and near-lossless: the kernel
    changes nothing in the file or in the decoded image."""
    image = np.asarray(Image.open(PHOTO).convert("RGB"))
    codec = Codec("default", threads=1)
    for options in ({}, {"max_error": 2}):
        data = codec.compress(image, "full", classical_tiles=False, **options)
        decoded = codec.decompress(data)
        with monkeypatch.context() as patch:
            patch.setattr(exact_distributions, "compiled_tables", None)
            assert codec.compress(image, "full", classical_tiles=False, **options) == data
            assert np.array_equal(codec.decompress(data), decoded)
