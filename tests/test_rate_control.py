"""Coding to a target rate (`encode --target-bpp`): the largest file at or under it."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from cli_helpers import CHELSEA, run

from selfvae_codec.bitstream import unpack
from selfvae_codec.codec.api import Codec
from selfvae_codec.codec.rate_control import MAX_STEP_SCALE, OPTIMISED_SAVING, encode_to_rate
from selfvae_codec.errors import BadValueError
from selfvae_codec.models.config import tiny_config
from selfvae_codec.models.selfvae import SelfVAE
from selfvae_codec.training.rate_distortion import lossy_model_from


@dataclass
class FakeResult:
    data: bytes


def fake_encoder(calls, optimised_share=0.9):
    """Bytes that grow with the quality and fall with the step scale, as a model's; at
    an optimising effort (3 and up) `optimised_share` of them."""

    def encode(quality: int, step_scale: float, effort: int = 2) -> FakeResult:
        calls.append((quality, step_scale, effort))
        share = optimised_share if effort >= 3 else 1.0
        return FakeResult(b"x" * int(share * 100 * quality / step_scale))

    return encode


@pytest.mark.parametrize("target_bytes", [100, 250, 330, 600])
def test_the_search_returns_the_largest_file_at_or_under_the_target(target_bytes):
    calls = []
    result = encode_to_rate(fake_encoder(calls), 6, pixels=8, target_bpp=target_bytes)  # 8 bits per byte, 8 pixels
    assert len(result.data) <= target_bytes
    sizes = [int(100 * q / s) for q, s, _ in calls]
    assert len(result.data) == max(size for size in sizes if size <= target_bytes)
    assert len(calls) <= 3 + 1 + 4  # the qualities by bisection, the coarsest steps, 4 refinements


@pytest.mark.parametrize("target_bytes", [100, 250, 330, 600])
def test_at_an_optimising_effort_only_the_search_s_outcome_is_encoded_harder(target_bytes):
    plain_calls, calls = [], []
    plain = encode_to_rate(fake_encoder(plain_calls), 6, pixels=8, target_bpp=target_bytes)
    result = encode_to_rate(fake_encoder(calls), 6, pixels=8, target_bpp=target_bytes, mode="rs2", effort=4)
    searched = [(q, s, effort) for q, s, effort in calls[: len(plain_calls)]]
    assert [(q, s) for q, s, _ in searched] == [(q, s) for q, s, _ in plain_calls]  # the plain search
    assert all(effort == 2 for *_, effort in searched)
    harder = calls[len(plain_calls) :]
    assert 1 <= len(harder) <= 2 and all(effort == 4 for *_, effort in harder)
    assert len(plain.data) <= len(result.data) / 0.9 + 1 and len(result.data) <= target_bytes
    above = [(int(100 * q / s), q, s) for q, s, _ in plain_calls if int(100 * q / s) > target_bytes]
    if above:
        _, q, s = min(above)
        if int(0.9 * 100 * q / s) <= target_bytes:  # the setting just above the target fits when optimised
            assert len(result.data) == int(0.9 * 100 * q / s)


def test_a_setting_far_above_the_target_is_not_encoded_harder():
    calls = []
    encode_to_rate(fake_encoder(calls), 6, pixels=8, target_bpp=100, effort=4)
    misses = [(int(100 * q / s), q, s) for q, s, effort in calls if effort != 4 and int(100 * q / s) > 100]
    size, *setting = min(misses)
    assert size * (1 - OPTIMISED_SAVING) <= 100  # near enough: encoded harder (and then it fits)
    assert [(q, s) for q, s, effort in calls if effort == 4] == [tuple(setting)]
    calls = []

    def steps_do_not_help(quality: int, step_scale: float, effort: int) -> FakeResult:
        calls.append((quality, step_scale, effort))
        return FakeResult(b"x" * 100 * quality)

    encode_to_rate(steps_do_not_help, 2, pixels=8, target_bpp=150, effort=4)  # quality 2: 200 bytes at any steps
    assert [(q, s) for q, s, effort in calls if effort == 4] == [(1, 1.0)]  # only the best that fits


def test_a_harder_file_that_does_not_fit_leaves_the_plain_one():
    calls = []
    plain = encode_to_rate(fake_encoder([]), 6, pixels=8, target_bpp=330)
    result = encode_to_rate(fake_encoder(calls, optimised_share=1.5), 6, pixels=8, target_bpp=330, effort=4)
    assert [effort for *_, effort in calls].count(4) == 2  # the near miss, then the best fit: neither fits
    assert result.data == plain.data
    full_calls = []
    encode_to_rate(fake_encoder(full_calls), 6, pixels=8, target_bpp=330, mode="full", effort=4)
    assert all(effort == 4 for *_, effort in full_calls)  # an effort that optimises nothing: the search runs at it


def test_the_search_says_when_no_file_is_small_enough():
    with pytest.raises(BadValueError, match=r"the smallest file of this image .* is 12\.000 bpp, above the target 1"):
        encode_to_rate(fake_encoder([]), 6, pixels=8, target_bpp=1)
    assert int(100 / MAX_STEP_SCALE) == 12


@pytest.fixture(scope="module")
def lossy_codec():
    torch.manual_seed(0)
    lossless = SelfVAE(tiny_config())
    lossless.initialize(torch.randint(0, 256, (2, 3, 64, 64)))
    return Codec(lossy_model_from(lossless.eval(), 3).eval(), threads=1)


def test_a_lossy_model_codes_at_or_under_the_target_and_the_file_decodes(lossy_codec):
    image = np.asarray(torch.randint(0, 256, (48, 64, 3), generator=torch.Generator().manual_seed(1)), np.uint8)
    rates = [8 * len(lossy_codec.compress(image, "rs2", quality=q)) / image[..., 0].size for q in (1, 2, 3)]
    target = (rates[0] + rates[1]) / 2
    result = lossy_codec.encode_to_rate(image, target, "rs2")
    assert rates[0] <= 8 * len(result.data) / image[..., 0].size <= target
    assert np.array_equal(lossy_codec.decompress(result.data), result.reconstruction)
    with pytest.raises(BadValueError, match="target rate must be"):
        lossy_codec.encode_to_rate(image, 0, "rs2")
    with pytest.raises(BadValueError, match="a lossy model codes"):
        lossy_codec.encode_to_rate(image, 1.0, "full")


def test_the_command_line_takes_a_target_only_where_it_applies(tmp_path):
    result = run("encode", CHELSEA, "-o", tmp_path / "a.svc", "--mode", "rs2", "--target-bpp", "0.5", "-q", "2")
    assert result.exit_code == 2 and "leave out -q" in result.stderr
    result = run("encode", CHELSEA, "-o", tmp_path / "a.svc", "--target-bpp", "0.5")
    assert result.exit_code == 2 and "not to full" in result.stderr
    result = run("encode", CHELSEA, "-o", tmp_path / "a.svc", "--mode", "rs2", "--target-bpp", "1.5", "--strip")
    assert result.exit_code == 0 and 8 * (tmp_path / "a.svc").stat().st_size / (75 * 50) <= 1.5
    header = unpack((tmp_path / "a.svc").read_bytes())
    assert f"mode rs2 quality {header.quality}" in result.output  # the summary names what the search chose
