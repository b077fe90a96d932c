"""Lossy models (config.qualities > 0): the rate-distortion objective, coding at
quality settings, their exact conversion, and training one from a lossless model."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from selfvae_codec.bitstream import pack, unpack
from selfvae_codec.cli.main import cli
from selfvae_codec.codec.api import HIGH_QUALITY_MAX_ERRORS, Codec, CodecError, decompress
from selfvae_codec.metrics import psnr, psnr_from_mse
from selfvae_codec.models.config import tiny_config
from selfvae_codec.models.exact import to_exact
from selfvae_codec.models.io import load_model, save_model
from selfvae_codec.models.selfvae import SelfVAE
from selfvae_codec.training.rate_distortion import lossy_model_from

DATA = Path(__file__).parent / "data"
QUALITIES = 3


def _initialized(config) -> SelfVAE:
    torch.manual_seed(0)
    model = SelfVAE(config)
    model.initialize(torch.randint(0, 256, (2, 3, 64, 64)))
    return model.eval()


@pytest.fixture(scope="module")
def lossless():
    return _initialized(tiny_config())


@pytest.fixture(scope="module")
def lossy(lossless):
    return lossy_model_from(lossless, QUALITIES).eval()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)


def test_a_lossy_model_starts_with_its_sources_posteriors(lossless, lossy):
    x = torch.randint(0, 256, (1, 3, 48, 40))
    ys = lossless.representations(x)
    for k, (before, after) in enumerate(zip(lossless.levels, lossy.levels, strict=True)):
        expected = before.posterior(ys[k + 1]).mean
        # Whatever coarser level the decoder has: its input channels start at zero weight.
        noise = torch.randint(0, 256, ys[k].shape)
        torch.testing.assert_close(after.posterior(ys[k + 1], noise).mean, expected)


def test_mixed_quantisation_decodes_the_rounded_latents_and_rates_the_noisy_ones(lossy):
    """With `mixed`, the reconstruction is the rounded walk's (what the coder sends),
    the rate is the noisy walk's at the same noise, and the distortion's gradient
    reaches the posterior networks through the rounding."""
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, 3, 40, 56))).to(torch.int64)
    quality = torch.tensor([0, QUALITIES - 1])
    with torch.no_grad():
        rounded = lossy.rate_distortion_terms(x, quality, noisy=False)
        torch.manual_seed(3)
        noisy = lossy.rate_distortion_terms(x, quality, noisy=True)
        torch.manual_seed(3)
        mixed = lossy.rate_distortion_terms(x, quality, noisy=True, mixed=True)
    torch.testing.assert_close(mixed["squared_error"], rounded["squared_error"])
    torch.testing.assert_close(mixed["rate_u"], noisy["rate_u"])
    assert not torch.equal(mixed["squared_error"], noisy["squared_error"])
    lossy.zero_grad()
    lossy.rate_distortion_terms(x, quality, noisy=True, mixed=True)["squared_error"].sum().backward()
    posterior = lossy.levels[0].posterior_net
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in posterior.parameters())
    lossy.zero_grad()


def test_the_objective_measures_what_the_decoder_rebuilds(lossy):
    """rate_distortion_terms with rounded latents walks the decoder's path: its squared
    error is that of the codec's rs2 reconstruction, and its rate is what the exact
    model's logistic tables code (within their scale grid's rounding)."""
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 3, 40, 56), dtype=np.uint8))
    image = x[0].permute(1, 2, 0).numpy()
    codec, exact_codec = Codec(lossy, tile_size=64, threads=1), Codec(to_exact(lossy), tile_size=64, threads=1)
    for quality in range(QUALITIES):
        with torch.no_grad():
            terms = lossy.rate_distortion_terms(x.to(torch.int64), torch.tensor([quality]), noisy=False)
        result = codec.encode(image, "rs2", quality=quality + 1)
        error = ((torch.from_numpy(result.reconstruction).permute(2, 0, 1)[None].double() - x) ** 2).sum()
        assert float(terms["squared_error"]) == pytest.approx(float(error), rel=1e-6)
        bits = sum(float(v) for k, v in terms.items() if k.startswith("rate_"))
        coded = sum(exact_codec.encode(image, "rs2", quality=quality + 1).estimated_bits.values())
        assert coded == pytest.approx(bits, rel=0.03)


def test_the_conditional_objective_counts_what_conditional_files_code(lossy):
    """With `conditional`, rate_distortion_terms counts the bits of a conditional file:
    the y's given the true coarser levels, and the z's inferred and coded given them
    (as the exact coder's tables code them, within their scale grid's rounding)."""
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (1, 3, 40, 56), dtype=np.uint8))
    image = x[0].permute(1, 2, 0).numpy()
    exact_codec = Codec(to_exact(lossy), tile_size=64, threads=1)
    for quality in range(QUALITIES):
        with torch.no_grad():
            at_quality = torch.tensor([quality])
            terms = lossy.rate_distortion_terms(x.to(torch.int64), at_quality, noisy=False, conditional=True)
        assert "squared_error" not in terms
        assert sorted(k for k in terms if k.startswith("rate_y")) == ["rate_y1", "rate_y2", "rate_y3"]
        coded = exact_codec.encode(image, "conditional", quality=quality + 1).estimated_bits
        y_bits = sum(float(v) for k, v in terms.items() if k.startswith("rate_y"))
        assert sum(v for k, v in coded.items() if k.startswith("y")) == pytest.approx(y_bits, rel=0.01)
        bits = sum(float(v) for k, v in terms.items() if k.startswith("rate_"))
        assert sum(coded.values()) == pytest.approx(bits, rel=0.03)


@pytest.mark.parametrize("exact", [False, True])
def test_lossy_files_decode_to_the_prediction_and_truncate_to_rs1(lossy, image, exact):
    codec = Codec(to_exact(lossy) if exact else lossy, tile_size=32, threads=1)
    sizes = []
    for quality in range(1, QUALITIES + 1):
        result = codec.encode(image, "rs2", quality=quality)
        assert unpack(result.data).quality == quality
        assert np.array_equal(codec.decompress(result.data), result.reconstruction)
        rs1 = codec.encode(image, "rs1", quality=quality)
        assert codec.truncate(result.data, "rs1") == rs1.data
        assert np.array_equal(codec.decompress(rs1.data), rs1.reconstruction)
        # conditional: the exact y's, the model's own z's, x generated from them.
        conditional = codec.encode(image, "conditional", quality=quality)
        assert np.array_equal(codec.decompress(conditional.data), conditional.reconstruction)
        assert codec.truncate(conditional.data, "rs1") == rs1.data
        assert len(conditional.data) > len(result.data)
        sizes.append(len(result.data))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # finer steps at higher qualities


def test_quality_settings_are_checked(lossy, lossless, image):
    lossy_codec, lossless_codec = Codec(lossy, tile_size=32), Codec(lossless, tile_size=32)
    with pytest.raises(CodecError, match="from 1 to 3"):
        lossy_codec.encode(image, "rs1", quality=4)
    with pytest.raises(CodecError, match="from 1 to 6"):  # rs2 goes on as near-lossless files
        lossy_codec.encode(image, "rs2", quality=7)
    with pytest.raises(CodecError, match="codes conditional, rs2 and rs1, not full"):
        lossy_codec.encode(image, "full")
    with pytest.raises(CodecError, match="needs a lossy model"):
        lossless_codec.encode(image, "rs2", quality=2)
    with pytest.raises(CodecError, match="applies to conditional, rs2 and rs1, not to full"):
        lossless_codec.encode(image, "full", quality=2)
    header = unpack(lossy_codec.compress(image, "rs2", quality=1))
    header.quality = 0  # a crafted file: the model's, without a quality
    with pytest.raises(CodecError, match=r"quality setting \(0\) does not fit"):
        lossy_codec.decompress(pack(header))


def test_rs2_above_the_model_s_qualities_writes_near_lossless_files(lossy, image):
    lossy_codec = Codec(lossy, tile_size=32)
    errors = []
    for quality, max_error in zip(range(QUALITIES + 1, QUALITIES + 4), HIGH_QUALITY_MAX_ERRORS, strict=True):
        result = lossy_codec.encode(image, "rs2", quality=quality)
        header = unpack(result.data)
        assert (header.mode, header.max_error) == ("full", max_error)
        assert header.model_fingerprint.hex() == Codec("default").fingerprint  # the shipped lossless model's
        decoded = decompress(result.data)
        assert np.array_equal(decoded, result.reconstruction)
        errors.append(int(np.abs(decoded.astype(int) - image).max()))
        assert errors[-1] <= max_error
    assert errors == sorted(errors, reverse=True) and errors[-1] > 0  # each setting closer to the image
    with pytest.raises(CodecError, match="a step scales qualities 1 to 3, not 4"):
        lossy_codec.encode(image, "rs2", 0.5, quality=QUALITIES + 1)
    with pytest.raises(CodecError, match="a maximum error applies to full files, not to rs2"):
        lossy_codec.encode(image, "rs2", quality=QUALITIES + 1, max_error=1)


def test_exact_lossy_models_keep_integer_steps(lossy, tmp_path):
    exact = to_exact(lossy)
    assert exact.u_steps_q12.dtype == torch.int64
    u_step, z_steps = lossy.latent_steps(QUALITIES - 1)
    exact_u, exact_z = exact.latent_steps(QUALITIES - 1)
    torch.testing.assert_close(exact_u.double() / 4096, u_step.double(), atol=1 / 8192, rtol=0)
    assert len(exact_z) == len(z_steps)
    save_model(exact, tmp_path / "exact.safetensors")
    assert load_model(tmp_path / "exact.safetensors").fingerprint() == exact.fingerprint()


def test_the_cli_encodes_at_a_quality_and_info_shows_it(lossy, tmp_path):
    weights = tmp_path / "lossy.safetensors"
    save_model(lossy, weights)
    source = DATA / sorted(p.name for p in DATA.glob("*.png"))[0]
    runner = CliRunner()
    args = ["encode", str(source), "-o", str(tmp_path / "a.svc"), "--mode", "rs2", "--model", str(weights)]
    result = runner.invoke(cli, [*args, "--quality", "2"])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(cli, ["info", str(tmp_path / "a.svc"), "--json"]).output)
    assert info["quality"] == 2
    decode = ["decode", str(tmp_path / "a.svc"), "-o", str(tmp_path / "a.png"), "--model", str(weights)]
    decoded = runner.invoke(cli, decode)
    assert decoded.exit_code == 0, decoded.output
    refused = runner.invoke(cli, [*args, "--quality", "9", "-f"])
    assert refused.exit_code != 0 and "quality must be a whole number from 1 to 6" in refused.output


def test_training_a_lossy_model_from_a_lossless_one(lossless, tmp_path):
    weights = tmp_path / "lossless.safetensors"
    save_model(lossless, weights)
    out = tmp_path / "run"
    args = ["train", str(DATA), "-o", str(out), "--val", str(DATA), "--init-from", str(weights)]
    args += ["--config", '{"qualities": 2}', "--lambdas", "0.005,0.05", "--steps", "2", "--batch-size", "2"]
    args += ["--crop", "32", "--val-crop", "48", "--val-every", "2", "--no-progress", "--threads", "1"]
    args += ["--conditional-weight", "0.5", "--log-every", "1"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    (val,) = [r for r in log if r["kind"] == "val"]
    assert val["bpp_q0"] < val["bpp_q1"] and 0 < val["psnr_q0"] < 60
    # A conditional file sends the y's losslessly: many more bits than rs2's latents.
    assert val["bpp_conditional_q0"] > val["bpp_q0"] + 1
    train = [r for r in log if r["kind"] == "train"]
    assert len(train) == 2 and all(np.isfinite(r["total"]) and r["bpp_conditional"] > r["bpp"] for r in train)
    trained = load_model(out / "latest.safetensors")
    assert trained.config.qualities == 2
    one_lambda = ["0.05" if a == "0.005,0.05" else str(tmp_path / "bad") if a == str(out) else a for a in args]
    bad = CliRunner().invoke(cli, one_lambda)
    assert bad.exit_code != 0 and "--lambdas gives 1 trade-offs for a model of 2 qualities" in bad.output


def test_a_lossy_run_resumes_exactly(lossless, tmp_path):
    """The quality each example draws comes from the checkpointed random state: a run
    cut in two gives the weights of the uninterrupted one."""
    weights = tmp_path / "lossless.safetensors"
    save_model(lossless, weights)

    def run(out, steps):
        args = ["train", str(DATA), "-o", str(out), "--init-from", str(weights), "--config", '{"qualities": 2}']
        args += ["--lambdas", "0.005,0.05", "--steps", str(steps), "--batch-size", "2", "--crop", "32"]
        args += ["--checkpoint-every", "2", "--no-progress", "--threads", "1"]
        assert CliRunner().invoke(cli, args, catch_exceptions=False).exit_code == 0

    run(tmp_path / "straight", 4)
    run(tmp_path / "split", 2)
    run(tmp_path / "split", 4)
    straight = load_model(tmp_path / "straight" / "latest.safetensors")
    assert straight.fingerprint() == load_model(tmp_path / "split" / "latest.safetensors").fingerprint()
    with pytest.raises(ValueError, match="through its codec"):
        straight.reconstruct(torch.zeros(1, 3, 32, 32, dtype=torch.int64), "rs2")


def test_models_lists_a_lossy_models_measured_rates(monkeypatch):
    from selfvae_codec.models import pretrained

    entry = {"description": "a lossy model", "fingerprint": "ab" * 32, "rs2_points": {}}
    entry["rs2_points"] = {"1": {"bpp": 0.1, "psnr": 25.0}, "2": {"bpp": 0.3, "psnr": 28.5}}
    monkeypatch.setattr(pretrained, "registry", lambda: {"lossy": entry})
    output = CliRunner().invoke(cli, ["models"]).output
    assert "lossy: a lossy model [rs2 on the validation photos: q1 0.100 bpp 25.00 dB, q2 0.300 bpp 28.50 dB" in output
    entry["conditional_points"] = {"1": {"bpp": 4.0, "psnr": 30.0}}
    output = CliRunner().invoke(cli, ["models"]).output
    assert "q2 0.300 bpp 28.50 dB; conditional on the validation photos: q1 4.000 bpp 30.00 dB" in output


def test_publish_records_the_rates_of_each_mode_a_summary_has_at_quality_settings():
    from selfvae_codec.cli.research import quality_points

    summary = {
        "selfvae_points": [
            {"codec": "selfvae-rs2", "setting": "q1", "bpp": 0.123456, "psnr_rgb": 25.4321},
            {"codec": "selfvae-conditional", "setting": "q1", "bpp": 4.5, "psnr_rgb": 31.0},
            {"codec": "selfvae-conditional", "setting": "step0.5", "bpp": 3.0, "psnr_rgb": 29.0},
        ]
    }
    assert quality_points(summary, "rs2") == {"1": {"bpp": 0.1235, "psnr": 25.43}}
    assert quality_points(summary, "conditional") == {"1": {"bpp": 4.5, "psnr": 31.0}}
    assert quality_points(summary, "rs1") == {}


@pytest.mark.parametrize("source", ["astronaut_128x128.png", "coffee_96x64.png"])
def test_the_shipped_models_order_the_modes_and_qualities(source):
    """What the CLI uses by default on a real photo: the lossy model for rs2, rs1 and
    conditional, the lossless one for full. Higher qualities cost more bytes, and give a
    higher PSNR in rs2; rs2 is at least 2 dB above rs1 at every quality, conditional (at
    the default quality) at least 2 dB above bicubic upscaling of the half-size image it
    sends, the modes are ordered in rate, and every decode is the reconstruction the
    encoder predicted."""
    from PIL import Image

    from selfvae_codec.models.pretrained import default_model_for
    from selfvae_codec.models.transforms import downscale

    image = np.asarray(Image.open(DATA / source).convert("RGB"))
    assert [default_model_for(mode) for mode in ("rs2", "rs1", "conditional", "full")] == [
        "lossy",
        "lossy",
        "lossy",
        "default",
    ]
    lossy_codec, lossless_codec = Codec("lossy", threads=2), Codec("default", threads=2)
    qualities = range(1, lossy_codec.model.config.qualities + 1)
    points = {}

    def measured(result) -> tuple[int, float]:
        assert np.array_equal(lossy_codec.decompress(result.data), result.reconstruction)
        return len(result.data), psnr(result.reconstruction, image)

    for mode in ("rs1", "rs2"):
        for quality in qualities:
            points[mode, quality] = measured(lossy_codec.encode(image, mode, quality=quality, strip_metadata=True))
    for mode in ("rs1", "rs2"):
        sizes = [points[mode, q][0] for q in qualities]
        assert sizes == sorted(set(sizes)), (mode, points)
    # rs1's preview (u alone) stays within about 0.3 dB across qualities: only rs2's
    # quality is asserted to rise with the setting.
    psnrs = [points["rs2", q][1] for q in qualities]
    assert psnrs == sorted(set(psnrs)), points
    assert all(points["rs2", q][1] >= points["rs1", q][1] + 2 for q in qualities), points
    conditional, conditional_psnr = measured(lossy_codec.encode(image, "conditional", strip_metadata=True))
    half = downscale(torch.from_numpy(image.copy()).permute(2, 0, 1)).permute(1, 2, 0).to(torch.uint8).numpy()
    bicubic = np.asarray(Image.fromarray(half).resize(image.shape[1::-1], Image.BICUBIC), dtype=np.float64)
    assert conditional_psnr >= psnr_from_mse(float(np.mean((bicubic - image) ** 2))) + 2
    full = len(lossless_codec.compress(image, "full", strip_metadata=True, classical_tiles=False))
    smallest, largest = points["rs2", qualities[0]][0], points["rs2", qualities[-1]][0]
    assert points["rs1", qualities[0]][0] < smallest < largest < conditional < full


def test_a_conditional_image_keeps_the_sent_half_size_image_from_format_version_4():
    """Version 4 moves a conditional image onto the images whose 2x2 means are the exact
    half-size image it sends: a closer image, and each version decodes to what its
    encoder predicted. The lossless model's conditional images hold those means
    already, so for it only the coding of the tables changes, not the image."""
    from PIL import Image

    from selfvae_codec.models.transforms import downscale

    image = np.asarray(Image.open(DATA / "coffee_96x64.png").convert("RGB"))
    truth = torch.from_numpy(image.copy()).permute(2, 0, 1)[None]
    lossy_codec, lossless_codec = Codec("lossy", threads=2), Codec("default", threads=2)
    old, new = (
        lossy_codec.encode(image, "conditional", quality=1, strip_metadata=True, format_version=version)
        for version in (3, 4)
    )
    for result in (old, new):
        assert np.array_equal(lossy_codec.decompress(result.data), result.reconstruction)
    rebuilt = torch.from_numpy(new.reconstruction.copy()).permute(2, 0, 1)[None]
    assert torch.equal(downscale(rebuilt), downscale(truth))
    assert psnr(new.reconstruction, image) > psnr(old.reconstruction, image)
    lossless = [lossless_codec.encode(image, "conditional", format_version=v).reconstruction for v in (3, 4)]
    assert np.array_equal(*lossless)
