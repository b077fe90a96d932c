"""The lossy encoder's effort (latent_optimisation.py): rs2 / rs1 latents optimised by
SGA on the exact model's float twin, sent by the exact coder, decoded by today's decoder."""

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run
from PIL import Image

from selfvae_codec.bitstream import unpack
from selfvae_codec.codec.api import Codec
from selfvae_codec.codec.latent_optimisation import ITERATIONS, curve_slope, rate_and_error, soft_round
from selfvae_codec.models.config import tiny_config
from selfvae_codec.models.exact import float_twin, to_exact
from selfvae_codec.models.selfvae import SelfVAE
from selfvae_codec.training.rate_distortion import lossy_model_from

DATA = Path(__file__).parent / "data"
QUALITIES = 3


@pytest.fixture(scope="module")
def exact_lossy():
    torch.manual_seed(0)
    model = SelfVAE(tiny_config())
    model.initialize(torch.randint(0, 256, (2, 3, 64, 64)))
    return to_exact(lossy_model_from(model.eval(), QUALITIES).eval())


@pytest.fixture(scope="module")
def twin(exact_lossy):
    return float_twin(exact_lossy).requires_grad_(False)


def coffee() -> np.ndarray:
    return np.asarray(Image.open(DATA / "coffee_96x64.png").convert("RGB"))


def test_soft_rounding_picks_a_neighbouring_grid_point_and_hardens_as_it_cools():
    offsets = torch.linspace(-3, 3, 601)
    generator = torch.Generator().manual_seed(0)
    warm = soft_round(offsets, 0.5, generator)
    assert (warm >= torch.floor(offsets)).all() and (warm <= torch.floor(offsets) + 1).all()
    away_from_halves = (offsets - torch.floor(offsets) - 0.5).abs() > 0.2
    cold = soft_round(offsets, 0.02, generator)
    torch.testing.assert_close(cold[away_from_halves], torch.round(offsets[away_from_halves]), atol=1e-3, rtol=0)
    again = soft_round(offsets, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(warm, again)


def test_the_hard_walk_is_the_coders_rs2_and_rs1(exact_lossy, twin):
    """The objective's hard-rounded walk is what the coder sends and the decoder
    rebuilds: its error is the exact file's reconstruction error (to the float twin's
    rounding), its rate the coder's estimate within the scale grid's rounding."""
    image = coffee()
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].to(torch.int64)
    codec = Codec(exact_lossy, tile_size=128, threads=1)
    for mode in ("rs2", "rs1"):
        for quality in range(QUALITIES):
            rate, error, _ = rate_and_error(twin, twin.representations(x), quality, 1.0, mode == "rs2", [])
            result = codec.encode(image, mode, quality=quality + 1)
            coded_error = ((result.reconstruction.astype(np.float64) - image) ** 2).mean()
            assert float(error) == pytest.approx(coded_error, rel=0.02)
            coded_bits = sum(result.estimated_bits.values())
            assert float(rate) * image.shape[0] * image.shape[1] == pytest.approx(coded_bits, rel=0.03)


def test_optimisation_lowers_the_files_rate_plus_lambda_times_error_with_the_shipped_model():
    """On a photo, the latents SGA finds, coded by the exact model, give a file whose
    rate + lambda * error is below that of the encoder's own latents."""
    codec = Codec("lossy", threads=1)
    twin = float_twin(codec.model).requires_grad_(False)
    image = coffee()
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].to(torch.int64)
    quality = 4
    trade_off = curve_slope(twin, twin.representations(x), quality - 1, 1.0, sends_z=True)
    assert trade_off is not None and trade_off > 0

    def objective(result) -> float:
        error = ((result.reconstruction.astype(np.float64) - image) ** 2).mean()
        return 8 * len(result.data) / (image.shape[0] * image.shape[1]) + trade_off * error

    plain = codec.encode(image, "rs2", quality=quality)
    optimised = codec.encode(image, "rs2", quality=quality, effort=3)
    assert objective(optimised) < objective(plain)


def coding_settings(data: bytes) -> tuple:
    """What a file's header says of how it was coded, and its sections' order."""
    header = unpack(data)
    sections = [(s.kind, s.level, s.tile) for s in header.sections]
    return header.version, header.mode, header.quality, header.latent_step, header.tile_size, sections


def test_an_optimised_file_is_todays_format_and_decodes_to_the_prediction(exact_lossy):
    image = coffee()
    codec = Codec(exact_lossy, tile_size=64, threads=1)
    for mode in ("rs2", "rs1"):
        plain = codec.encode(image, mode, quality=2)
        optimised = codec.encode(image, mode, quality=2, effort=3)
        assert np.array_equal(codec.decompress(optimised.data), optimised.reconstruction)
        assert coding_settings(optimised.data) == coding_settings(plain.data)
    assert codec.encode(image, mode, quality=2, effort=3).data == optimised.data  # the same bytes again


def test_progress_moves_through_the_optimisation_and_ends_at_the_whole(exact_lossy):
    image = coffee()  # 96x64: two 64x64 tiles
    codec = Codec(exact_lossy, tile_size=64, threads=1)
    for effort, iterations in ((2, 0), (3, ITERATIONS[3])):
        calls: list[tuple[int, int]] = []
        codec.encode(image, "rs2", quality=2, effort=effort, progress=lambda *call, calls=calls: calls.append(call))
        sections = codec.sections_per_tile("rs2")
        assert [done for done, _ in calls] == list(range(1, 2 * (sections + iterations) + 1))
        assert {total for _, total in calls} == {2 * (sections + iterations)}


def test_the_cli_encodes_rs2_at_a_higher_effort_and_decodes_it(tmp_path):
    plain, optimised, png = tmp_path / "plain.svc", tmp_path / "optimised.svc", tmp_path / "back.png"
    source = DATA / "coffee_96x64.png"
    assert run("encode", source, "-o", plain, "--mode", "rs2", "-q", "3", "--threads", "1").exit_code == 0
    result = run("encode", source, "-o", optimised, "--mode", "rs2", "-q", "3", "--effort", "3", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert optimised.read_bytes() != plain.read_bytes()
    assert run("decode", optimised, "-o", png).exit_code == 0
    codec = Codec("lossy", threads=1)
    expected = codec.encode(source, "rs2", quality=3, effort=3).reconstruction
    assert np.array_equal(np.asarray(Image.open(png)), expected)
