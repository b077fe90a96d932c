"""A lossy model's checkerboard context for u (config.u_context): u's second half coded
under a Gaussian predicted from its first half, fitted with everything else frozen."""

import dataclasses

import numpy as np
import pytest
import torch

from selfvae_codec.bitstream import unpack
from selfvae_codec.codec.api import Codec
from selfvae_codec.models.config import tiny_config
from selfvae_codec.models.exact import float_twin, to_exact
from selfvae_codec.models.hierarchy import quantize_as_sent, quantize_latents, rate_of_u
from selfvae_codec.models.priors import checkerboard
from selfvae_codec.models.selfvae import SelfVAE, without_u_context
from selfvae_codec.training.rate_distortion import lossy_model_from
from selfvae_codec.training.u_context import fit_u_context, u_bits, with_u_context

QUALITIES = 3
WIDTH = 8


@pytest.fixture(scope="module")
def lossy():
    torch.manual_seed(0)
    model = SelfVAE(tiny_config())
    model.initialize(torch.randint(0, 256, (2, 3, 64, 64)))
    return lossy_model_from(model.eval(), QUALITIES).eval()


@pytest.fixture(scope="module")
def fitted(lossy):
    """A context that predicts something: its weights drawn at random (the fit's own
    test below shows that it learns)."""
    model = with_u_context(lossy, WIDTH)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.u_context.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)


def smooth_bases(count: int, seed: int) -> torch.Tensor:
    """u's that neighbours predict: noise at a quarter of the size, upsampled."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn((count, tiny_config().u_channels, 4, 4), generator=generator)
    return torch.nn.functional.interpolate(coarse, scale_factor=4, mode="bilinear", align_corners=False) * 2


def test_the_setting_needs_a_lossy_model_and_leaves_other_models_fingerprints_alone(lossy):
    with pytest.raises(ValueError, match="u_context needs a lossy model"):
        dataclasses.replace(tiny_config(), u_context=8)
    assert "u_context" not in lossy.config.to_dict()
    assert dataclasses.replace(lossy.config, u_context=WIDTH).to_dict()["u_context"] == WIDTH


def test_only_a_float_lossy_model_takes_a_context(lossy):
    with pytest.raises(ValueError, match="fitted to a lossy model"):
        with_u_context(SelfVAE(tiny_config()), WIDTH)
    with pytest.raises(ValueError, match="on a float model"):
        with_u_context(to_exact(lossy), WIDTH)
    with pytest.raises(ValueError, match="has a u context already"):
        with_u_context(with_u_context(lossy, WIDTH), WIDTH)


def test_the_checkerboard_halves_u():
    first = checkerboard((3, 4))[0, 0]
    assert first.tolist() == [[True, False, True, False], [False, True, False, True], [True, False, True, False]]


def test_a_new_context_is_the_standard_normal_so_u_costs_what_it_did(lossy):
    """The head starts at zero: mean 0 and standard deviation 1, where u was coded."""
    started = with_u_context(lossy, WIDTH)
    bases = smooth_bases(4, 0)
    for quality in range(QUALITIES):
        assert u_bits(started, bases, quality) == pytest.approx(u_bits(lossy, bases, quality), rel=1e-6)


def test_fitting_lowers_the_bits_of_u_that_neighbours_predict(lossy):
    model = with_u_context(lossy, WIDTH)
    torch.manual_seed(0)
    fit_u_context(model, smooth_bases(64, 0), seconds=600, learning_rate=3e-3, batch=16, max_steps=150)
    held_out = smooth_bases(16, 1)
    for quality in range(QUALITIES):
        assert u_bits(model, held_out, quality) < 0.9 * u_bits(lossy, held_out, quality)
    # Only the context learnt.
    assert all(
        torch.equal(tensor, lossy.state_dict()[name]) for name, tensor in without_u_context(model).state_dict().items()
    )


def test_the_first_half_is_sent_as_before_and_the_second_about_its_predicted_mean(fitted):
    bases = smooth_bases(2, 2)
    step = fitted.latent_steps(1)[0]
    sent, _ = rate_of_u(fitted, bases, step, quantize_as_sent)
    first = checkerboard(tuple(bases.shape[-2:]))
    rounded_about_zero = quantize_latents(bases, torch.zeros_like(bases), step, noisy=False)
    assert torch.equal(sent[first.expand_as(sent)], rounded_about_zero[first.expand_as(sent)])
    mean = fitted.u_second_half(torch.where(first, rounded_about_zero, 0), step).mean
    offsets = (sent - mean) / step
    second = ~first.expand_as(sent)
    torch.testing.assert_close(offsets[second], torch.round(offsets[second]), atol=1e-4, rtol=0)
    assert not torch.equal(sent[second], rounded_about_zero[second])


@pytest.mark.parametrize("exact", [False, True], ids=["float", "exact"])
@pytest.mark.parametrize("mode", ["rs2", "rs1", "conditional"])
def test_files_decode_to_what_the_encoder_rebuilt(fitted, image, exact, mode):
    """Every decode checks the encoder's image CRC: the decoder rebuilds the encoder's
    u (and all below it) exactly."""
    codec = Codec(to_exact(fitted) if exact else fitted)
    for effort in (2, 3) if mode != "conditional" else (2,):
        encoded = codec.encode(image, mode, quality=2, effort=effort)
        assert codec.decompress(encoded.data).shape == image.shape


def test_an_rs2_file_cut_to_rs1_decodes(fitted, image):
    codec = Codec(to_exact(fitted))
    cut = codec.truncate(codec.compress(image, "rs2", quality=1), "rs1")
    assert unpack(cut).mode == "rs1" and codec.decompress(cut).shape == image.shape


def test_without_the_context_the_model_is_the_one_it_was_fitted_to(lossy, fitted):
    assert without_u_context(fitted).fingerprint() == lossy.fingerprint()
    exact = to_exact(fitted, keep=to_exact(lossy))
    assert without_u_context(exact).fingerprint() == to_exact(lossy).fingerprint()
    assert float_twin(exact).config.u_context == WIDTH
    with pytest.raises(ValueError, match="no u context"):
        without_u_context(lossy)
