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
    cut = tiny_codec.truncate(tiny_codec.compress(image, mode=source, step=0.5, classical_tiles=False), target)
    assert cut == tiny_codec.compress(image, mode=target, step=0.5, classical_tiles=False)
    assert unpack(cut).mode == target


def test_impossible_truncation_is_refused(tiny_codec):
    data = tiny_codec.compress(load(DATA / "chelsea_75x50.png"), mode="full", classical_tiles=False)
    with pytest.raises(CodecError, match="cannot be cut down to rs2"):
        tiny_codec.truncate(data, "rs2")


def test_lossy_rates_are_below_lossless(tiny_codec):
    image = load(DATA / "astronaut_128x128.png")
    sizes = {mode: len(tiny_codec.compress(image, mode=mode)) for mode in ("rs1", "rs2", "conditional", "full")}
    assert sizes["rs1"] < sizes["rs2"] < sizes["conditional"] < sizes["full"]


def _png_size(image: np.ndarray) -> int:
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return len(buffer.getvalue())


def _screenshot() -> np.ndarray:
    from PIL import ImageDraw

    image = Image.new("RGB", (300, 200), "white")
    draw = ImageDraw.Draw(image)
    for line in range(12):
        draw.text((10, 10 + 15 * line), f"line {line}: the quick brown fox jumps over", fill=(20, 20, 20))
    draw.rectangle((200, 20, 280, 90), fill=(30, 90, 200))
    return np.asarray(image)


def _palette_photo(colours: int = 200) -> np.ndarray:
    photo = Image.open(DATA / "astronaut_128x128.png").convert("RGB")
    return np.asarray(photo.quantize(colours).convert("RGB"))


def _smooth_photo() -> np.ndarray:
    """A photo the model codes better than PNG and WebP (a bicubic 2x enlargement)."""
    photo = Image.open(DATA / "astronaut_128x128.png").convert("RGB")
    return np.asarray(photo.resize((256, 256), Image.Resampling.BICUBIC))


@pytest.mark.parametrize(
    "make, stored_as", [(_screenshot, "pixels"), (_palette_photo, "pixels"), (_smooth_photo, "model")]
)
def test_full_files_are_never_larger_than_png(codec, make, stored_as):
    image = make()
    if stored_as == "pixels":
        assert len(np.unique(image.reshape(-1, 3), axis=0)) <= 256  # few colours
    data = codec.compress(image)
    kinds = {s.kind for s in unpack(data).sections}
    assert kinds == ({"pixels"} if stored_as == "pixels" else {"u", "y", "z", "x"})
    assert len(data) <= _png_size(image)
    assert np.array_equal(codec.decompress(data), image)


def test_classical_tiles_mix_with_model_tiles_and_decode_exactly(codec):
    tiled = Codec(codec.model, threads=2, tile_size=128)
    image = np.concatenate([_smooth_photo()[:128], _screenshot()[:128, :256]], axis=0)  # 256 x 256
    data = tiled.compress(image)
    kinds = [[s.kind for s in unpack(data).sections if s.tile == tile] for tile in range(4)]
    assert kinds[:2] == [["u", "y", "z", "y", "z", "y", "z", "x"]] * 2 and kinds[2:] == [["pixels"]] * 2
    assert np.array_equal(tiled.decompress(data), image)


def test_a_corrupt_pixels_section_is_refused(codec):
    from selfvae_codec.bitstream import Section, pack

    header = unpack(codec.compress(_screenshot()))
    (section,) = header.sections
    header.sections = [Section("pixels", 0, 0, section.payload[:-30] + bytes(30))]
    with pytest.raises(CodecError, match="pixels section|checksum"):
        codec.decompress(pack(header))
    header.sections = [Section("pixels", 0, 0, png_bytes(np.zeros((10, 10, 3), np.uint8)))]
    with pytest.raises(CodecError, match="not the tile's 300x200"):
        codec.decompress(pack(header))


def png_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("exact", [False, True])
def test_a_model_with_its_last_z_on_the_coarse_grid_codes_every_mode(exact):
    from selfvae_codec.models.exact import to_exact

    torch.manual_seed(0)
    model = SelfVAE(tiny_config(z_strides=(4, 4, 2)))
    model.initialize(torch.randint(0, 256, (2, 3, 32, 32)))
    codec = Codec(to_exact(model.eval()) if exact else model.eval(), threads=1, tile_size=32)
    image = load(DATA / "chelsea_75x50.png")
    assert np.array_equal(codec.decompress(codec.compress(image, mode="full")), image)
    sizes = {}
    for mode in ("conditional", "rs2", "rs1"):
        result = codec.encode(image, mode=mode)
        assert np.array_equal(codec.decompress(result.data), result.reconstruction)
        sizes[mode] = len(result.data)
    assert sizes["rs1"] < sizes["rs2"] < sizes["conditional"]


def test_a_tile_the_entropy_coder_cannot_code_is_stored_classically(codec, monkeypatch):
    """Where constriction's float arithmetic leaves a symbol no probability it panics
    (a pyo3 PanicException, not an Exception): files of format version 3 met that on
    pure noise with the first shipped model. `full` then stores the tile as a
    classical file, and without classical tiles the error is one line, not a crash.
    The panic is injected here on the pixel section; from version 4 the tables reach
    the coder reduced (coder_counts), and the model codes the noise exactly."""
    from selfvae_codec.codec import entropy

    noise = np.random.default_rng(0).integers(0, 256, (192, 192, 3), dtype=np.uint8)
    coded = codec.encode(noise, "full", classical_tiles=False)
    assert "x" in {s.kind for s in unpack(coded.data).sections}
    assert np.array_equal(codec.decompress(coded.data), noise)

    class PanicException(BaseException):  # what pyo3 raises
        pass

    real_encode = entropy.EncoderStream._encode

    def panics_on_pixels(self, section):
        if section.kind == "x":
            raise PanicException("assertion failed: probability > 0")
        return real_encode(self, section)

    monkeypatch.setattr(entropy.EncoderStream, "_encode", panics_on_pixels)
    calls = []
    result = codec.encode(noise, "full", progress=lambda done, total: calls.append((done, total)))
    assert [s.kind for s in unpack(result.data).sections] == ["pixels"]
    assert calls[-1][0] == calls[-1][1]  # the progress still reaches its total
    assert np.array_equal(codec.decompress(result.data), noise)
    with pytest.raises(CodecError, match=r"tile 1 of 1: the entropy coder cannot code section x"):
        codec.encode(noise, "full", classical_tiles=False)


def test_a_ctrl_c_that_comes_back_as_a_coder_panic_still_interrupts(tiny_codec, monkeypatch):
    """A Ctrl-C that reaches Python calls inside the Rust coder surfaces as its panic
    (pyo3's PanicException, naming the KeyboardInterrupt): that must stop the encode,
    not turn into a tile stored classically."""
    from selfvae_codec.codec import entropy, tile_encoding

    class PanicException(BaseException):  # what pyo3 raises: not an Exception
        pass

    def interrupted(self, section):
        raise PanicException("called `Result::unwrap()` on an `Err` value: PyErr { type: <class 'KeyboardInterrupt'> }")

    monkeypatch.setattr(entropy.EncoderStream, "_encode", interrupted)
    monkeypatch.setattr(tile_encoding, "SKIP_MARGIN", float("inf"))  # the tiny model's tiles are coded
    with pytest.raises(KeyboardInterrupt):
        tiny_codec.encode(load(DATA / "chelsea_75x50.png"), "full")


def test_progress_counts_every_section_once(tiny_codec):
    image = load(DATA / "chelsea_75x50.png")
    calls = []
    tiny_codec.encode(image, "full", progress=lambda done, total: calls.append((done, total)))
    total = calls[-1][1]
    assert [done for done, _ in calls] == list(range(1, total + 1)) and {t for _, t in calls} == {total}


def test_a_file_of_small_classical_tiles_becomes_one_classical_file(codec, monkeypatch):
    """A flat 1200x40 image's three tiles are each a tiny PNG with its own headers;
    one PNG of the whole image is smaller, and is what the file holds. It decodes,
    and truncates to what a direct encode gives."""
    from selfvae_codec.codec import tiles

    flat = np.full((40, 1200, 3), 90, np.uint8)
    data = codec.compress(flat)
    header = unpack(data)
    assert header.tile_size == 1200 and [s.kind for s in header.sections] == ["pixels"]
    assert np.array_equal(codec.decompress(data), flat)
    assert codec.truncate(data, "conditional") == codec.compress(flat, "conditional", step=header.latent_step)
    monkeypatch.setattr(tiles, "WHOLE_IMAGE_TRY_BYTES", 0)  # never tried: a PNG per tile
    tiled = codec.compress(flat)
    assert unpack(tiled).tile_count == 3 and len(data) < len(tiled)


def test_a_higher_effort_never_gives_a_larger_full_file(tiny_codec):
    """The tiny model's tiles are all stored classically: each effort keeps the
    smallest of its WebP methods, a superset of the effort below it."""
    image = np.asarray(Image.open(DATA / "astronaut_128x128.png").convert("RGB"))
    files = [tiny_codec.compress(image, "full", effort=effort) for effort in (1, 2, 3)]
    assert len(files[0]) >= len(files[1]) >= len(files[2])
    for data in files:
        assert np.array_equal(tiny_codec.decompress(data), image)
    for effort in (0, 10, 2.5):
        with pytest.raises(CodecError, match="effort must be"):
            tiny_codec.compress(image, "full", effort=effort)


def test_classical_files_wider_than_webp_allows_are_png():
    from selfvae_codec.codec.images import WEBP_MAX_SIDE, classical_lossless, read_classical_tile

    wide = np.random.default_rng(0).integers(0, 4, (2, WEBP_MAX_SIDE + 1, 3), dtype=np.uint8)
    data = classical_lossless(wide, grayscale=False)
    assert data.startswith(b"\x89PNG")
    assert np.array_equal(read_classical_tile(data, 2, WEBP_MAX_SIDE + 1), wide)


@pytest.mark.parametrize("effort", [1, 2, 3])
def test_classical_files_written_side_by_side_are_the_ones_written_in_turn(effort):
    from selfvae_codec.codec.images import classical_lossless

    photo = load(DATA / "coffee_96x64.png")
    assert classical_lossless(photo, False, effort, threads=3) == classical_lossless(photo, False, effort, threads=1)


def test_classical_encoders_side_by_side_keep_their_own_options(monkeypatch):
    """Pillow's save keeps its options on the image, so encoders sharing one image
    could read each other's WebP method. A WebP writer slowed down to let the
    others start first must still write the files written in turn."""
    import time

    from PIL import Image

    from selfvae_codec.codec.images import classical_lossless

    gray = load(DATA / "camera_gray_64x64.png")
    in_turn = classical_lossless(gray, True, effort=3, threads=1)
    write_webp = Image.SAVE["WEBP"]

    def slow_write_webp(image, file, name):
        time.sleep(0.05)
        write_webp(image, file, name)

    monkeypatch.setitem(Image.SAVE, "WEBP", slow_write_webp)
    assert classical_lossless(gray, True, effort=3, threads=4) == in_turn


def test_the_float_estimate_of_a_full_file_matches_the_exact_coder(codec):
    """The float twin's reckoning of a `full` tile's bits, on which the encoder decides
    whether to run the exact model, is the exact coder's to within 1%."""
    image = load(DATA / "astronaut_128x128.png")
    header = unpack(codec.compress(image, "full", classical_tiles=False))
    coded_bits = 8 * sum(len(s.payload) for s in header.sections)
    tile = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].long()
    assert abs(codec.estimate_model_bits(tile, header.latent_step) / coded_bits - 1) < 0.01


def test_the_exact_model_is_not_run_on_a_tile_it_would_lose(codec, monkeypatch):
    """A tile whose estimated model bits exceed its classical file's is stored
    classically without coding it; with classical tiles off, the model codes it."""
    from selfvae_codec.codec import tile_encoding

    image = load(DATA / "coffee_96x64.png")
    coded = []
    real_encode_tile = tile_encoding.encode_tile
    monkeypatch.setattr(tile_encoding, "encode_tile", lambda *a, **k: coded.append(1) or real_encode_tile(*a, **k))
    monkeypatch.setattr(tile_encoding, "SKIP_MARGIN", -0.999)  # the model never seems to win
    data = codec.compress(image, "full")
    assert not coded and [s.kind for s in unpack(data).sections] == ["pixels"]
    assert np.array_equal(codec.decompress(data), image)
    codec.compress(image, "full", classical_tiles=False)
    assert coded


def test_gray_output_is_the_models_luma_of_the_decoded_rgb():
    """tiles.output_image (numpy, so that classical files decode without torch) gives
    models.transforms.to_grayscale's integers, black, white and a saturated colour included."""
    from selfvae_codec.codec.tiles import output_image
    from selfvae_codec.models.transforms import to_grayscale

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    rgb[0, :3] = [[0, 0, 0], [255, 255, 255], [255, 0, 255]]
    expected = to_grayscale(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0, 0].numpy()
    gray = output_image(rgb, 1)
    assert gray.dtype == np.uint8 and np.array_equal(gray, expected)
