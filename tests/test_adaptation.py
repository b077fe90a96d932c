"""Per-image adaptation of the pixel heads (`--effort 3`): the fit, the `adapt`
section, the container's rules for it and truncation."""

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import selfvae_codec.codec.api as api
import selfvae_codec.codec.tile_encoding as tile_encoding
from selfvae_codec.bitstream import FORMAT_VERSION, ContainerError, Section, pack, unpack
from selfvae_codec.codec.adaptation import adapted_bits, fit_adaptation, record_heads
from selfvae_codec.codec.engine import encode_tile
from selfvae_codec.models.config import tiny_config
from selfvae_codec.models.exact import to_exact
from selfvae_codec.models.heads import BIAS_BITS, GAIN_BITS, adapt_parameters, adapted_heads, pixel_heads
from selfvae_codec.models.selfvae import SelfVAE

DATA = Path(__file__).parent / "data"
IMAGE = np.asarray(Image.open(DATA / "astronaut_128x128.png").convert("RGB"))[:64, :96]
STEP = 0.25


@pytest.fixture(scope="module")
def tiny_codec():
    torch.manual_seed(0)
    model = SelfVAE(tiny_config(levels=2))
    model.initialize(torch.randint(0, 256, (2, 3, 32, 32)))
    return api.Codec(model.eval(), threads=1, tile_size=48)


@pytest.fixture
def always_adapting(monkeypatch):
    """The encoder keeps every fitted adaptation, paying or not (small tiles rarely pay)."""
    monkeypatch.setattr(tile_encoding, "fit_adaptation", functools.partial(fit_adaptation, only_if_smaller=False))


def pixel_bits(bits: dict[str, float]) -> float:
    return sum(value for label, value in bits.items() if label[0] in "yx")


def test_the_fit_lowers_the_coders_bits_and_its_float_bits_are_the_coders(tiny_codec):
    model = tiny_codec.model
    tile = torch.from_numpy(IMAGE.copy()).permute(2, 0, 1)[None].to(torch.int64)
    samples, positions = record_heads(model, tile, STEP, FORMAT_VERSION)
    assert positions == samples.values.shape[0]  # a small tile: every position recorded
    heads = pixel_heads(model)
    zero = torch.zeros(len(heads), samples.params.shape[1])
    fitted_before = float(adapted_bits(samples, zero, zero, heads[0].channels, heads[0].mixtures))
    _, _, bits = encode_tile(model, tile, 0, "full", STEP, None, FORMAT_VERSION, None)
    assert fitted_before == pytest.approx(pixel_bits(bits), rel=1e-3)

    adaptation = fit_adaptation(model, tile, STEP, FORMAT_VERSION, only_if_smaller=False)
    assert adaptation.shape == (len(heads), 2, samples.params.shape[1]) and adaptation.dtype == torch.int64
    gains, biases = adaptation[:, 0] / (1 << GAIN_BITS), adaptation[:, 1] / (1 << BIAS_BITS)
    fitted_after = float(adapted_bits(samples, gains.float(), biases.float(), heads[0].channels, heads[0].mixtures))
    _, _, adapted = encode_tile(model, tile, 0, "full", STEP, None, FORMAT_VERSION, None, adaptation)
    assert pixel_bits(adapted) == pytest.approx(fitted_after, rel=1e-3)
    assert pixel_bits(adapted) < 0.97 * pixel_bits(bits)
    assert adapted["adapt"] > 0


def test_an_adapted_file_decodes_exactly_and_cuts_down_with_or_without_its_adaptation(tiny_codec, always_adapting):
    data = tiny_codec.compress(IMAGE, "full", STEP, classical_tiles=False, effort=3)
    header = unpack(data)
    tiles = [[s for s in header.sections if s.tile == index] for index in range(header.tile_count)]
    assert header.tile_count == 4 and all(own[0].kind == "adapt" for own in tiles)
    assert np.array_equal(tiny_codec.decompress(data), IMAGE)
    plain = unpack(tiny_codec.compress(IMAGE, "full", STEP, classical_tiles=False, effort=2))
    assert "adapt" not in {s.kind for s in plain.sections}
    assert len(data) != len(pack(plain))  # the adaptation reached the coder

    conditional = tiny_codec.truncate(data, "conditional")
    assert [s.kind for s in unpack(conditional).sections].count("adapt") == 4
    tiny_codec.decompress(conditional)  # checked against the image checksum the cut records
    rs1 = tiny_codec.truncate(data, "rs1")
    assert rs1 == tiny_codec.compress(IMAGE, "rs1", STEP)


def test_only_full_files_of_format_5_at_effort_3_adapt(tiny_codec, always_adapting):
    for mode, effort, version in (("full", 2, FORMAT_VERSION), ("full", 3, 4), ("conditional", 3, FORMAT_VERSION)):
        data = tiny_codec.compress(IMAGE, mode, STEP, classical_tiles=False, effort=effort, format_version=version)
        assert "adapt" not in {s.kind for s in unpack(data).sections}, (mode, effort, version)


def test_the_container_takes_an_adapt_section_only_first_in_a_tile_of_a_mode_that_codes_pixels(
    tiny_codec, always_adapting
):
    header = unpack(tiny_codec.compress(IMAGE, "full", STEP, classical_tiles=False, effort=3))
    first, second, *rest = header.sections
    swapped = dataclasses.replace(header, sections=[second, first, *rest])
    with pytest.raises(ContainerError, match="out of order at tile 1"):
        pack(swapped)
    with pytest.raises(ContainerError, match="out of order at tile 1"):
        pack(dataclasses.replace(header, version=4))
    rs2 = unpack(tiny_codec.compress(IMAGE, "rs2", STEP))
    with_adapt = [Section("adapt", 0, 0, first.payload), *rs2.sections]
    with pytest.raises(ContainerError, match="out of order at tile 1"):
        pack(dataclasses.replace(rs2, sections=with_adapt))


def test_adapted_heads_apply_the_integer_adaptation_and_leave_the_model_as_it_was(tiny_codec):
    generator = torch.Generator().manual_seed(0)
    adaptation = torch.randint(-100, 100, (2, 5), generator=generator)
    exact = torch.randint(-(1 << 14), 1 << 14, (1, 5, 3, 4), generator=generator)
    gain, bias = adaptation[0].view(1, 5, 1, 1), adaptation[1].view(1, 5, 1, 1)
    expected = exact + torch.floor(exact * gain / (1 << GAIN_BITS) + 0.5).to(torch.int64) + bias * 16
    assert torch.equal(adapt_parameters(exact, adaptation), expected)
    floats = exact.to(torch.float32) / 4096
    assert torch.allclose(adapt_parameters(floats, adaptation), expected.to(torch.float32) / 4096, atol=1e-3)

    model = to_exact(tiny_codec.model)
    heads = pixel_heads(model)
    values = torch.ones(len(heads), 2, heads[0].out.bias.shape[0], dtype=torch.int64)
    with adapted_heads(model, values):
        assert all(torch.equal(head.adaptation, values[i]) for i, head in enumerate(heads))
    assert all(head.adaptation is None for head in heads)


def test_a_large_tile_is_fitted_on_a_bounded_sample_of_its_positions(tiny_codec, monkeypatch):
    from selfvae_codec.codec import adaptation

    monkeypatch.setattr(adaptation, "RECORDED_POSITIONS", 100)
    tile = torch.from_numpy(IMAGE.copy()).permute(2, 0, 1)[None].to(torch.int64)
    samples, positions = record_heads(tiny_codec.model, tile, STEP, FORMAT_VERSION)
    calls = 1 + 2 * 4  # p(y_1 | u), then 4 groups at each of the 2 levels
    assert samples.values.shape[0] <= 100 * calls < positions
    assert fit_adaptation(tiny_codec.model, tile, STEP, FORMAT_VERSION, only_if_smaller=False).shape[0] == 9
