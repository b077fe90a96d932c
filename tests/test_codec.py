"""The codec through the Python API: exact round trips, determinism, the lossy
modes' predicted reconstructions, and refusals."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfvae_codec.bitstream import unpack
from selfvae_codec.bitstream.container import _FIXED, crc32
from selfvae_codec.codec.api import Codec, CodecError, ModelMismatchError
from selfvae_codec.codec.images import load_image
from selfvae_codec.models.config import tiny_config
from selfvae_codec.models.selfvae import SelfVAE

DATA = Path(__file__).parent / "data"
PHOTOS = sorted(DATA.glob("*.png"))


@pytest.fixture(scope="module")
def codec():
    return Codec(threads=2)  # the shipped default model


@pytest.fixture(scope="module")
def tiny_codec():
    torch.manual_seed(0)
    model = SelfVAE(tiny_config(levels=2))
    model.initialize(torch.randint(0, 256, (2, 3, 32, 32)))
    return Codec(model.eval(), threads=1, tile_size=32)


def load(path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.mark.parametrize("path", PHOTOS, ids=[p.name for p in PHOTOS])
def test_full_mode_is_exact_and_deterministic(codec, path):
    data = codec.compress(path, mode="full")
    first = codec.decompress(data)
    second = codec.decompress(data)
    original = load(path)
    assert first.dtype == np.uint8 and first.shape == original.shape
    assert np.array_equal(first, original)
    assert first.tobytes() == second.tobytes()
    assert codec.compress(path, mode="full") == data  # encoding is deterministic too


def test_multi_tile_odd_size_round_trip(tiny_codec):
    image = load(DATA / "chelsea_75x50.png")
    data = tiny_codec.compress(image, mode="full")
    assert len({s.tile for s in unpack(data).sections}) == 3 * 2  # 75x50 in 32-pixel tiles
    assert np.array_equal(tiny_codec.decompress(data), image)


def test_pil_and_array_inputs_agree(codec):
    path = DATA / "coffee_96x64.png"
    assert codec.compress(Image.open(path)) == codec.compress(load(path)) == codec.compress(str(path))


@pytest.mark.parametrize("mode", ["conditional", "rs2", "rs1"])
def test_lossy_modes_decode_to_the_predicted_reconstruction(tiny_codec, mode):
    image = load(DATA / "chelsea_75x50.png")
    result = tiny_codec.encode(image, mode=mode)
    decoded = tiny_codec.decompress(result.data)
    assert decoded.shape == image.shape
    assert np.array_equal(decoded, result.reconstruction)


def test_grayscale_comes_back_grayscale(tiny_codec):
    gray = load(DATA / "camera_gray_64x64.png")
    assert gray.ndim == 2
    out = tiny_codec.decompress(tiny_codec.compress(gray))
    assert out.ndim == 2 and np.array_equal(out, gray)


def test_opaque_alpha_is_dropped_and_transparency_refused(tiny_codec):
    rgb = load(DATA / "coffee_96x64.png")
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert np.array_equal(tiny_codec.decompress(tiny_codec.compress(rgba)), rgb)
    rgba[0, 0, 3] = 10
    with pytest.raises(CodecError, match="transparency"):
        tiny_codec.compress(rgba)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((8, 8, 3), np.uint16), "8-bit"),
        (np.zeros((8, 8, 5), np.uint8), "shape"),
        (Image.new("CMYK", (8, 8)), "unsupported image mode"),
        (Image.new("I;16", (8, 8)), "unsupported image mode"),
        ("does/not/exist.png", "not found"),
        (12, "expected a path"),
    ],
)
def test_unsupported_inputs_are_refused(bad, message):
    with pytest.raises(CodecError, match=message):
        load_image(bad)


def test_non_image_file_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(CodecError, match="cannot read"):
        load_image(path)


def test_model_mismatch_is_refused(codec, tiny_codec):
    data = tiny_codec.compress(load(DATA / "chelsea_75x50.png"))
    with pytest.raises(ModelMismatchError, match="encoded with model"):
        codec.decompress(data)


def test_image_checksum_mismatch_raises_instead_of_returning_a_wrong_image(tiny_codec):
    data = tiny_codec.compress(load(DATA / "chelsea_75x50.png"))
    fields = list(_FIXED.unpack_from(data, 0))
    fields[-1] ^= 1  # the image CRC
    count = fields[-2]
    table_end = _FIXED.size + count * 12
    head = _FIXED.pack(*fields) + data[_FIXED.size : table_end]
    tampered = head + crc32(head).to_bytes(4, "little") + data[table_end + 4 :]
    with pytest.raises(CodecError, match="checksum"):
        tiny_codec.decompress(tampered)


def test_estimated_bits_track_the_file_size(codec):
    image = load(DATA / "astronaut_128x128.png")
    result = codec.encode(image, mode="full")
    estimate = sum(result.estimated_bits.values())
    header_bits = 8 * (len(result.data) - sum(len(s.payload) for s in unpack(result.data).sections))
    payload_bits = 8 * len(result.data) - header_bits
    assert estimate <= payload_bits <= estimate * 1.05 + 64 * len(result.estimated_bits)


@pytest.mark.parametrize(
    "source, target", [("full", "conditional"), ("full", "rs1"), ("conditional", "rs1"), ("rs2", "rs1")]
)
def test_truncation_gives_the_bytes_of_direct_encoding(tiny_codec, source, target):
    image = load(DATA / "chelsea_75x50.png")
    cut = tiny_codec.truncate(tiny_codec.compress(image, mode=source, step=0.5), target)
    assert cut == tiny_codec.compress(image, mode=target, step=0.5)
    assert unpack(cut).mode == target


def test_impossible_truncation_is_refused(tiny_codec):
    data = tiny_codec.compress(load(DATA / "chelsea_75x50.png"), mode="full")
    with pytest.raises(CodecError, match="cannot be cut down to rs2"):
        tiny_codec.truncate(data, "rs2")


def test_lossy_rates_are_below_lossless(tiny_codec):
    image = load(DATA / "astronaut_128x128.png")
    sizes = {mode: len(tiny_codec.compress(image, mode=mode)) for mode in ("rs1", "rs2", "conditional", "full")}
    assert sizes["rs1"] < sizes["rs2"] < sizes["conditional"] < sizes["full"]
