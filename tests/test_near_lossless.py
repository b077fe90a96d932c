"""Near-lossless `full` files (--max-error N): every decoded subpixel within N of the
original, by construction, on every pixel; the bins' probabilities; the API, the CLI
and the container around them."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from selfvae_codec import Codec
from selfvae_codec.bitstream import unpack
from selfvae_codec.cli.main import cli
from selfvae_codec.errors import BadValueError, CodecError
from selfvae_codec.models.distributions import DiscretizedLogisticMixture
from selfvae_codec.models.exact_distributions import BIN_VALUES, ExactLogisticMixture
from selfvae_codec.models.transforms import bin_centre, bin_of, error_bins, within_error


@pytest.fixture(scope="module")
def codec():
    return Codec("default", tile_size=32)


def extreme_image(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """Noise, flat 0 and 255 areas and every value 0..255: the bins at both ends,
    clipped centres and values the model finds unlikely."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    image[: height // 4] = 0
    image[height // 4 : height // 2] = 255
    ramp = np.arange(height * width * channels) % 256
    image[-3:] = ramp[: 3 * width * channels].reshape(3, width, channels)
    return image[..., 0] if channels == 1 else image


@pytest.mark.parametrize("max_error", range(0, 33))
def test_every_value_lies_in_its_bin_within_the_error_of_its_centre(max_error):
    values = torch.arange(256)
    rebuilt = within_error(values, max_error)
    assert int((rebuilt - values).abs().max()) <= max_error
    assert 0 <= int(rebuilt.min()) and int(rebuilt.max()) <= 255
    if max_error:
        firsts = error_bins(max_error)
        bins = bin_of(values, max_error)
        assert bool(((firsts[bins] <= values) & (values < firsts[bins + 1])).all())
        assert torch.equal(bin_of(bin_centre(bins, max_error), max_error), bins)  # a centre names its bin
        assert int(firsts[0]) == 0 and int(firsts[-1]) == 256


@pytest.mark.parametrize("max_error", [1, 2, 5, 16])
def test_bin_tables_are_the_sums_of_the_value_tables(max_error):
    """An exact model's bin counts are exactly the sums of its per-value counts, in
    one step and in two."""
    generator = torch.Generator().manual_seed(max_error)
    channels, mixtures = 3, 4
    params = torch.randn(2, DiscretizedLogisticMixture.num_params(channels, mixtures), 5, 6, generator=generator)
    x = torch.randint(0, 256, (2, channels, 5, 6), generator=generator)
    firsts = error_bins(max_error)
    exact = ExactLogisticMixture((params * 4096).round().to(torch.int64), channels, mixtures)
    for c in range(channels):
        values = exact.channel_table(c, x)
        bins = exact.coder_bin_table(c, x, firsts)
        sums = torch.stack([values[..., a:b].sum(-1) for a, b in zip(firsts[:-1], firsts[1:], strict=True)], -1)
        assert torch.equal(bins, sums)
        # In two steps: groups of BIN_VALUES bins, then the bins within a group.
        rows = bins.reshape(-1, bins.shape[-1])
        mean, inv_scales, weights = exact.channel_parameters(c, x)
        groups = ExactLogisticMixture.bin_table(mean, inv_scales, weights, firsts)
        for group in range(groups.shape[-1]):
            within = rows[:, group * BIN_VALUES : (group + 1) * BIN_VALUES]
            assert torch.equal(groups[:, group], within.sum(-1))
            chosen = torch.full((rows.shape[0],), group)
            second = ExactLogisticMixture.value_in_bin_table(mean, inv_scales, weights, chosen, firsts)
            has_mass = within.sum(-1) > 0
            assert torch.equal(second[has_mass, : within.shape[-1]], within[has_mass])
            assert not second[:, within.shape[-1] :].any()  # no bins past the last


@pytest.mark.parametrize("max_error", [1, 2, 7, 32])
@pytest.mark.parametrize("channels", [3, 1])
def test_decoded_subpixels_are_within_the_maximum_error(codec, max_error, channels):
    """Coded by the model (no classical tiles), over several tiles with odd edges:
    the decoder rebuilds the encoder's image bit for bit, and every subpixel of it is
    within the bound of the original."""
    image = extreme_image(45, 70, channels, seed=max_error)
    result = codec.encode(image, "full", classical_tiles=False, max_error=max_error)
    header = unpack(result.data)
    assert header.max_error == max_error and header.tile_count == 6
    assert all(s.kind != "pixels" for s in header.sections)
    decoded = codec.decompress(result.data)
    assert np.array_equal(decoded, result.reconstruction)
    assert decoded.shape == image.shape
    assert int(np.abs(decoded.astype(np.int64) - image).max()) <= max_error


def test_classical_tiles_hold_the_binned_image(codec):
    image = np.full((40, 40, 3), 201, dtype=np.uint8)  # flat: a classical tile wins
    result = codec.encode(image, "full", max_error=4)
    assert {s.kind for s in unpack(result.data).sections} == {"pixels"}
    decoded = codec.decompress(result.data)
    assert np.array_equal(decoded, within_error(torch.from_numpy(image), 4).numpy())
    assert int(np.abs(decoded.astype(np.int64) - image).max()) <= 4


def test_a_larger_bound_gives_a_smaller_file(codec):
    image = np.asarray(Image.open("tests/data/astronaut_128x128.png").convert("RGB"))
    sizes = [len(codec.compress(image, "full", classical_tiles=False, max_error=n)) for n in (0, 1, 2, 4)]
    assert sizes == sorted(sizes, reverse=True) and sizes[1] < 0.85 * sizes[0]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(mode="rs2", max_error=2), "applies to full files"),
        (dict(max_error=33), "maximum error"),
        (dict(max_error=-1), "maximum error"),
        (dict(max_error="2"), "maximum error"),
        (dict(max_error=2, format_version=5), "format version 6"),
    ],
)
def test_bad_maximum_errors_are_refused(codec, options, message):
    with pytest.raises(BadValueError, match=message):
        codec.compress(np.zeros((8, 8, 3), np.uint8), **{"mode": "full", **options})


def test_a_lossy_model_refuses_a_maximum_error():
    with pytest.raises(BadValueError, match="exact lossless model"):
        Codec("lossy").check_max_error("full", 2)


def test_the_cli_codes_reports_and_refuses_to_truncate_near_lossless_files(tmp_path):
    source = tmp_path / "a.png"
    image = extreme_image(33, 40, 3)
    Image.fromarray(image).save(source)
    runner = CliRunner()
    result = runner.invoke(cli, ["encode", str(source), "-o", str(tmp_path / "a.svc"), "--max-error", "3"])
    assert result.exit_code == 0, result.output
    assert "max error 3" in result.output
    result = runner.invoke(cli, ["info", str(tmp_path / "a.svc")])
    assert "every subpixel within 3 of the original" in result.output
    result = runner.invoke(cli, ["decode", str(tmp_path / "a.svc"), "-o", str(tmp_path / "b.png")])
    assert result.exit_code == 0, result.output
    decoded = np.asarray(Image.open(tmp_path / "b.png")).astype(np.int64)
    assert int(np.abs(decoded - image).max()) <= 3
    result = runner.invoke(cli, ["truncate", str(tmp_path / "a.svc"), "--mode", "rs1", "-o", str(tmp_path / "c.svc")])
    assert result.exit_code == 1 and "cannot be cut down" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "c.svc").exists()
    result = runner.invoke(cli, ["encode", str(source), "--mode", "rs2", "--max-error", "3", "-d", str(tmp_path)])
    assert result.exit_code == 2 and "applies to full files" in result.output


def test_a_corrupt_maximum_error_is_caught_by_the_image_checksum(codec):
    """A header that claims another bound (checksums recomputed) decodes to other
    pixels, which the image checksum refuses."""
    from selfvae_codec.bitstream import pack

    header = unpack(codec.compress(extreme_image(20, 20, 3), "full", classical_tiles=False, max_error=2))
    header.max_error = 3
    with pytest.raises(CodecError):
        codec.decompress(pack(header))


@pytest.mark.parametrize("max_error", [0, 2])
def test_the_adaptation_fit_counts_the_bits_the_coder_codes(max_error):
    """The fit's float bits of the recorded heads (unadapted) are the coder's own
    estimate of the pixel sections: the bins, and the last pixel of each block among
    its bins, are recorded as coded."""
    from selfvae_codec.codec.adaptation import adapted_bits, record_heads
    from selfvae_codec.codec.engine import encode_tile
    from selfvae_codec.models.heads import pixel_heads

    model = Codec("default").model
    image = np.asarray(Image.open("tests/data/astronaut_128x128.png").convert("RGB"))
    tile = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].to(torch.int64)
    samples, positions = record_heads(model, tile, 2**-2.5, 6, max_error)
    heads = pixel_heads(model)
    zero = torch.zeros(len(heads), samples.params.shape[1])
    fitted = float(adapted_bits(samples, zero, zero, heads[0].channels, heads[0].mixtures))
    _, _, bits = encode_tile(model, tile, 0, "full", 2**-2.5, None, 6, None, None, max_error)
    coded = sum(value for label, value in bits.items() if label[0] in "yx")
    assert positions == samples.values.shape[0] and abs(fitted / coded - 1) < 1e-4


def test_an_adapted_near_lossless_file_decodes_within_its_bound():
    codec = Codec("default")
    image = np.asarray(Image.open("tests/data/astronaut_128x128.png").convert("RGB"))
    result = codec.encode(image, "full", classical_tiles=False, max_error=8, effort=3)
    assert "adapt" in {s.kind for s in unpack(result.data).sections}
    plain = codec.compress(image, "full", classical_tiles=False, max_error=8)
    assert len(result.data) < len(plain)
    decoded = codec.decompress(result.data)
    assert np.array_equal(decoded, result.reconstruction)
    assert int(np.abs(decoded.astype(np.int64) - image).max()) <= 8


def test_a_float_model_refuses_a_maximum_error():
    """Near-lossless coding is defined on the exact models' integers only."""
    with pytest.raises(BadValueError, match="exact lossless model"):
        Codec("default-float").check_max_error("full", 2)
