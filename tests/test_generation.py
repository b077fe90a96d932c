"""The model beyond coding: upscaling by its levels and unconditional samples."""

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from selfvae_codec.cli.main import cli
from selfvae_codec.codec.api import Codec, CodecError
from selfvae_codec.metrics import psnr
from selfvae_codec.models.transforms import downscale

DATA = Path(__file__).parent / "data"
PHOTOS = [DATA / "astronaut_128x128.png", DATA / "coffee_96x64.png", DATA / "chelsea_75x50.png"]


@pytest.fixture(scope="module")
def codec():
    return Codec(threads=2)


def model_downscale(image: np.ndarray, factor: int) -> np.ndarray:
    small = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].to(torch.int64)
    for _ in range(factor.bit_length() - 1):
        small = downscale(small)
    return small[0].permute(1, 2, 0).numpy().astype(np.uint8)


def test_upscaling_the_models_own_downscale_beats_bicubic(codec):
    """Measured on the test photos: better than bicubic at 2x on every photo, and on
    average at 4x and 8x; the upscaled image downscales back to the input."""
    gains = {factor: [] for factor in (2, 4, 8)}
    for path in PHOTOS:
        image = np.asarray(Image.open(path).convert("RGB"))
        size = (image.shape[1], image.shape[0])
        for factor in gains:
            small = model_downscale(image, factor)
            ours = codec.upscale(small, factor, size=size)
            exact = (small.shape[1] * factor, small.shape[0] * factor)  # then crop: grids stay aligned
            bicubic = np.asarray(Image.fromarray(small).resize(exact, Image.Resampling.BICUBIC))
            bicubic = bicubic[: image.shape[0], : image.shape[1]]
            gains[factor].append(psnr(image, ours) - psnr(image, bicubic))
            # every block keeps its mean (edge blocks of odd sizes lose their padding)
            assert np.array_equal(model_downscale(ours, factor)[:-1, :-1], small[:-1, :-1])
    assert all(gain > 0 for gain in gains[2]), gains
    assert np.mean(gains[4]) > 0 and np.mean(gains[8]) > 0, gains


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_output_size_is_factor_times_the_input_or_the_size_asked(codec, factor):
    small = np.asarray(Image.open(DATA / "chelsea_75x50.png"))  # odd width
    assert codec.upscale(small, factor).shape == (50 * factor, 75 * factor, 3)
    width, height = 75 * factor - (factor - 1), 50 * factor - 1
    assert codec.upscale(small, factor, size=(width, height)).shape == (height, width, 3)
    with pytest.raises(CodecError, match="downscales"):
        codec.upscale(small, factor, size=(75 * factor + 1, 50 * factor))


def test_grayscale_stays_grayscale_and_large_inputs_are_tiled(codec):
    gray = np.asarray(Image.open(DATA / "camera_gray_64x64.png"))
    assert codec.upscale(gray, 2).shape == (128, 128)
    tiled = Codec(codec.model, threads=2, tile_size=32)
    small = np.asarray(Image.open(DATA / "coffee_96x64.png"))
    out = tiled.upscale(small, 2)  # 6 x 4 tiles of 32
    assert out.shape == (128, 192, 3)
    assert np.array_equal(model_downscale(out, 2), small)


def test_sampling_methods_are_deterministic_with_a_seed(codec):
    small = model_downscale(np.asarray(Image.open(DATA / "coffee_96x64.png")), 4)
    first = codec.upscale(small, 4, method="sample", seed=3)
    assert np.array_equal(first, codec.upscale(small, 4, method="sample", seed=3))
    assert not np.array_equal(first, codec.upscale(small, 4, method="sample", seed=4))
    samples = codec.sample(3, (40, 24), seed=1)
    assert samples.shape == (3, 24, 40, 3) and samples.dtype == np.uint8
    assert np.array_equal(samples, codec.sample(3, (40, 24), seed=1))
    assert not np.array_equal(samples, codec.sample(3, (40, 24), seed=2))


@pytest.mark.parametrize(
    "factor, message", [(3, "power of two"), (1, "power of two"), (16, "at most 8x"), (0, "power of two")]
)
def test_bad_factors_are_refused(codec, factor, message):
    with pytest.raises(CodecError, match=message):
        codec.upscale(np.zeros((8, 8, 3), np.uint8), factor)


def test_upscale_and_sample_commands(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        cli, ["upscale", str(DATA / "chelsea_75x50.png"), "-o", str(tmp_path / "big.png"), "--factor", "4"]
    )
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "big.png").size == (300, 200)
    cropped = tmp_path / "crop.png"
    result = runner.invoke(
        cli, ["upscale", str(DATA / "chelsea_75x50.png"), "-o", str(cropped), "--size", "149x99", "--method", "sample"]
    )
    assert result.exit_code == 0 and Image.open(cropped).size == (149, 99)
    for factor, message in (("3", "power of two"), ("16", "at most 8x")):
        result = runner.invoke(
            cli, ["upscale", str(DATA / "chelsea_75x50.png"), "-o", str(tmp_path / "x.png"), "--factor", factor]
        )
        assert result.exit_code == 2 and message in result.stderr and not (tmp_path / "x.png").exists()
    result = runner.invoke(
        cli, ["sample", "-o", str(tmp_path / "grid.png"), "-n", "5", "--size", "32x16", "--seed", "7"]
    )
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "grid.png").size == (3 * 32, 2 * 16)
    result = runner.invoke(cli, ["sample", "-o", str(tmp_path / "bad.png"), "--size", "32by16"])
    assert result.exit_code == 2 and "--size: must look like" in result.stderr
