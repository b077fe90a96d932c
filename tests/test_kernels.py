"""The compiled kernels of the exact models (selfvae_codec/models/_kernels.c) against
the torch code they replace, which stays the reference and the fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfvae_codec.codec.api import Codec
from selfvae_codec.models import fixed_point as fp
from selfvae_codec.models.exact_distributions import BIN_EDGES, BIN_VALUES, ExactLogisticMixture

PHOTO = Path(__file__).parent / "data" / "coffee_96x64.png"
built = pytest.mark.skipif(fp.kernels is None, reason="the kernels are not built")


def test_the_kernels_are_built_by_the_install():
    """`pip install -e .` compiles them wherever a C compiler is found (as on CI);
    without one the package still works, on the slower torch path, and this test says so."""
    assert fp.kernels is not None


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


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
def test_the_table_kernel_gives_the_torch_codes_integers(threads):
    """All 257 edges (the outermost at +-2^36), the two-step tables' 17 shared edges,
    17 edges per row and narrow windows: the same counts, also split across threads."""
    rows = 3 * fp.KERNEL_ITEMS_PER_THREAD // 100  # split at 2 threads
    mean, inv_scales, weights = _mixture_rows(rows, 10, seed=5)
    assert (weights == 0).any() and inv_scales.max() > 1 << 26
    generator = torch.Generator().manual_seed(6)
    per_row = torch.randint(0, 256 - BIN_VALUES, (rows, 1), generator=generator) + torch.arange(BIN_VALUES + 1)
    window = torch.randint(0, 256 - 32, (rows, 1), generator=generator) + torch.arange(33)
    for edges in (BIN_EDGES, BIN_EDGES[::BIN_VALUES], BIN_EDGES[per_row], BIN_EDGES[window.clamp(max=256)]):
        reference = ExactLogisticMixture.mixture_counts(mean, inv_scales, weights, edges, compiled=False)
        counts = ExactLogisticMixture.mixture_counts(mean, inv_scales, weights, edges)
        assert torch.equal(counts, reference)
        assert (counts >= 0).all() and (counts.sum(-1) > 0).any()


def _without_kernels(function, *args):
    kernels, fp.kernels = fp.kernels, None
    try:
        return function(*args)
    finally:
        fp.kernels = kernels


@built
def test_the_elu_kernel_gives_the_torch_codes_integers(threads):
    """Over the whole range of activations, saturation and the table's end included."""
    generator = torch.Generator().manual_seed(7)
    x = torch.randint(-fp.ACT_LIMIT, fp.ACT_LIMIT + 1, (2, 8, 64, 96), generator=generator)
    x[0, 0, 0, :5] = torch.tensor([-fp.ACT_LIMIT, fp.ACT_LIMIT, 0, -1, 1])
    assert torch.equal(fp.elu(x), _without_kernels(fp.elu, x))


@built
def test_the_interpolation_kernel_gives_the_torch_codes_integers(threads):
    """exp, exp(-y), sigmoid and tanh at the input scales the models use, over and
    beyond the tables' ranges (both clamped ends) and at table entries exactly."""
    generator = torch.Generator().manual_seed(9)
    x = torch.randint(-(fp.ACT_LIMIT << 2), (fp.ACT_LIMIT << 2) + 1, (3, 7, 50, 41), generator=generator)
    x.view(-1)[:6] = torch.tensor([0, 1, -1, fp.ACT_ONE << 3, -(fp.ACT_ONE << 5), 5 << 10])
    functions = [
        lambda v: fp.exp_neg(v.abs(), fp.ACT_BITS),
        lambda v: fp.exp_neg(v.abs(), fp.LUT_STEP_BITS),  # no fraction
        lambda v: fp.sigmoid(v, fp.ACT_BITS - 1),
        lambda v: fp.exp(v),
        lambda v: fp.tanh(v),
    ]
    for function in functions:
        assert torch.equal(function(x), _without_kernels(function, x))


@built
@pytest.mark.parametrize(
    "shape, stride, padding, transpose",
    [
        ((16, 12, 3, 3), 1, 1, False),
        ((16, 12, 4, 4), 2, 1, False),
        ((12, 16, 4, 4), 2, 1, True),
        ((8, 12, 1, 1), 1, 0, False),
    ],
)
def test_the_rescaling_kernel_gives_the_torch_codes_integers(threads, shape, stride, padding, transpose):
    """An exact convolution's output, shifts from 1 to 40 and saturation included."""
    generator = torch.Generator().manual_seed(8)
    out_channels = shape[1] if transpose else shape[0]
    layer = fp.ExactConv(shape, out_channels, stride, padding, transpose)
    layer.weight.copy_(torch.randint(-(1 << fp.WEIGHT_BITS), (1 << fp.WEIGHT_BITS) + 1, shape, generator=generator))
    layer.shift.copy_(torch.randint(1, 41, (out_channels,), generator=generator))
    layer.bias.copy_(torch.randint(-(1 << 40), 1 << 40, (out_channels,), generator=generator))
    x = torch.randint(
        -fp.ACT_LIMIT, fp.ACT_LIMIT + 1, (2, shape[0] if transpose else shape[1], 33, 40), generator=generator
    )
    out = layer(x)
    assert torch.equal(out, _without_kernels(layer, x))
    assert out.abs().max() == fp.ACT_LIMIT  # some saturate


@built
def test_files_are_the_same_bytes_with_and_without_the_kernels(monkeypatch):
    """A real photo through the shipped models, lossless, near-lossless and lossy: the
    kernels change nothing in the file or in the decoded image."""
    image = np.asarray(Image.open(PHOTO).convert("RGB"))
    lossless, lossy = Codec("default", threads=1), Codec("lossy", threads=1)
    for codec, mode, options in (
        (lossless, "full", {"classical_tiles": False}),
        (lossless, "full", {"classical_tiles": False, "max_error": 2}),
        (lossy, "rs2", {}),
        (lossy, "conditional", {}),
    ):
        data = codec.compress(image, mode, **options)
        decoded = codec.decompress(data)
        with monkeypatch.context() as patch:
            patch.setattr(fp, "kernels", None)
            assert codec.compress(image, mode, **options) == data
            assert np.array_equal(codec.decompress(data), decoded)
