"""The benchmark's arithmetic: BD-rate and the anchors' PSNR at a given rate; the report's provenance check;
the per-level diagnosis of a lossy model."""

import json
import math

import conditional_ceiling
import level_quality
import numpy as np
import pytest
import rate_distortion
import report_sections
import torch
from PIL import Image

from selfvae_codec.codec.api import Codec
from selfvae_codec.models.config import tiny_config
from selfvae_codec.models.pretrained import retired_models
from selfvae_codec.models.selfvae import SelfVAE
from selfvae_codec.training.rate_distortion import lossy_model_from

CURVE = [(0.25, 25.0), (0.5, 28.0), (1.0, 31.5), (2.0, 35.0), (4.0, 38.0)]


def test_bd_rate_of_a_curve_against_itself_is_zero():
    assert rate_distortion.bd_rate(CURVE, CURVE) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_of_half_the_bits_at_equal_quality_is_minus_fifty_percent():
    halved = [(bpp / 2, quality) for bpp, quality in CURVE]
    assert rate_distortion.bd_rate(CURVE, halved) == pytest.approx(-50.0, abs=1e-6)


def test_bd_rate_refuses_flat_or_short_curves():
    flat = [(bpp, 29.0 + 0.01 * i) for i, (bpp, _) in enumerate(CURVE)]
    assert rate_distortion.bd_rate(CURVE, flat) is None
    assert rate_distortion.bd_rate(CURVE, CURVE[:3]) is None
    # MS-SSIM is NaN for images too small to measure it
    assert rate_distortion.bd_rate(CURVE, [(bpp, math.nan) for bpp, _ in CURVE]) is None


def test_anchor_psnr_interpolates_in_log_rate_and_refuses_to_extrapolate():
    points = [dict(bpp=bpp, psnr_rgb=quality) for bpp, quality in CURVE]
    assert rate_distortion.anchor_psnr_at(points, 0.5) == pytest.approx(28.0)
    # halfway between 0.5 and 1.0 in log-rate
    assert rate_distortion.anchor_psnr_at(points, math.sqrt(0.5)) == pytest.approx(29.75)
    assert rate_distortion.anchor_psnr_at(points, 0.1) is None
    assert rate_distortion.anchor_psnr_at(points, 5.0) is None


def test_jpeg_at_rate_takes_the_best_quality_within_the_rate():
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 64 * 48).reshape(48, 64)
    image = np.clip(ramp[..., None] + rng.normal(0, 20, (48, 64, 3)), 0, 255).astype(np.uint8)
    low_rate, low_psnr, _ = conditional_ceiling.jpeg_at_rate(image, 2.0)
    high_rate, high_psnr, _ = conditional_ceiling.jpeg_at_rate(image, 6.0)
    assert low_rate <= 2.0 and high_rate <= 6.0
    assert high_rate > low_rate and high_psnr > low_psnr
    with pytest.raises(SystemExit, match="cannot go as low"):
        conditional_ceiling.jpeg_at_rate(image, 0.01)


def test_the_report_finds_tables_measured_with_other_weights_than_the_shipped_models():
    shipped = report_sections.registry()["default"]["fingerprint"]
    shipped_lossy = report_sections.registry()["lossy"]["fingerprint"]
    assert report_sections.earlier_models({"model_fingerprint": shipped}) == []
    assert report_sections.earlier_models({}) == []
    other = "0" * 64 if shipped != "0" * 64 else "1" * 64
    assert report_sections.earlier_models({"model_fingerprint": other}) == [("default", other, None, shipped)]
    retired = retired_models()["lossy-v1"]["fingerprint"]  # an earlier model, no longer shipped
    found = report_sections.earlier_models({"model_fingerprint": shipped, "lossy_model_fingerprint": retired})
    assert found == [("lossy", retired, "lossy-v1", shipped_lossy)]
    assert len(report_sections.earlier_model_note({"model_fingerprint": other})) == 2  # the line and a blank


def test_the_per_level_diagnosis_walks_as_the_decoder_does():
    torch.manual_seed(0)
    lossless = SelfVAE(tiny_config())
    lossless.initialize(torch.randint(0, 256, (2, 3, 64, 64)))
    model = lossy_model_from(lossless.eval(), 3).eval()
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.int64)
    codec = Codec(model)
    for quality in (1, 3):
        scores = level_quality.level_scores(model, x, quality - 1)
        assert len(scores["walk"]) == len(model.levels) + 1
        assert all(len(scores[how]) == len(model.levels) for how in ("given the truth", "z at prior mean", "bicubic"))
        rs2 = codec.encode(image, "rs2", quality=quality).reconstruction
        assert scores["walk"][-1] == pytest.approx(rate_distortion.psnr(rs2, image), abs=1e-9)


def test_reused_rows_keep_what_the_run_does_not_measure_and_refuse_missing_images(tmp_path):
    from common import write_csv

    def row(image, codec, setting, bpp):
        return dict(
            image=image,
            codec=codec,
            setting=setting,
            bpp=bpp,
            psnr_rgb=30.0,
            ms_ssim_rgb=0.9,
            encoding_time=0.1,
            decoding_time=0.1,
        )

    path = tmp_path / "per_image.csv"
    write_csv(
        path,
        [
            row("a.png", "selfvae-rs2", "q1", 0.2),
            row("a.png", "selfvae-conditional", "step1", 3.0),
            row("a.png", "JPEG", "q50", 1.0),
            row("b.png", "JPEG", "q50", 1.5),
        ],
    )
    by_image, modes = rate_distortion.reused_rows(path, ["rs2", "rs1"], ["a.png", "b.png"])
    assert [(r["codec"], r["bpp"]) for r in by_image["a.png"]] == [("selfvae-conditional", 3.0), ("JPEG", 1.0)]
    assert [(r["codec"], r["bpp"]) for r in by_image["b.png"]] == [("JPEG", 1.5)]
    assert modes == ["conditional"]
    with pytest.raises(SystemExit, match="no rows for c.png"):
        rate_distortion.reused_rows(path, ["rs2"], ["a.png", "c.png"])


def test_a_run_that_reuses_rows_records_and_reports_the_models_they_were_measured_with(tmp_path):
    """Reused rows of selfvae-codec's modes keep the lossy model that measured them,
    through a chain of runs, and the report names it where it is not the run's."""
    earlier = {
        "lossy_model_fingerprint": "a" * 64,
        "lossy_modes": ["rs2", "rs1", "conditional"],
        "reused_rows": {"measured_modes": ["rs2"], "reused_models": {"rs1": "b" * 64, "conditional": "b" * 64}},
    }
    (tmp_path / "summary.json").write_text(json.dumps(earlier))
    record = rate_distortion.reuse_record(tmp_path / "per_image.csv", ["rs1"])
    assert record["measured_modes"] == ["rs1"]
    assert record["reused_models"] == {"rs2": "a" * 64, "conditional": "b" * 64}
    clause = report_sections.reused_models_clause({"lossy_model_fingerprint": "a" * 64, "reused_rows": record})
    assert clause == ", selfvae-codec's conditional with `an earlier model` (bbbbbbbbbbbb)"
    assert report_sections.reused_models_clause({"lossy_model_fingerprint": "a" * 64}) == ""


def test_the_lossy_model_codes_the_modes_it_is_given_and_the_report_says_so():
    torch.manual_seed(0)
    lossless = SelfVAE(tiny_config())
    lossless.initialize(torch.randint(0, 256, (2, 3, 64, 64)))
    codec, lossy_codec = Codec(lossless.eval()), Codec(lossy_model_from(lossless.eval(), 3).eval())
    coder, settings = rate_distortion.selfvae_settings("conditional", codec, [0.5, 1.0], lossy_codec, ("rs2", "rs1"))
    assert coder is codec and [label for label, _ in settings] == ["step0.5", "step1"]
    modes = ("rs2", "rs1", "conditional")  # the shipped lossy model's modes, the default
    coder, settings = rate_distortion.selfvae_settings("conditional", codec, [0.5, 1.0], lossy_codec)
    assert coder is lossy_codec and [label for label, _ in settings] == ["q1", "q2", "q3"]

    summary = {"bd_rate_percent_psnr": {"selfvae-rs2": {}, "selfvae-conditional": {}}, "lossy_model_fingerprint": "f"}
    assert report_sections.settings_by_mode(summary) == {"rs2": "quality", "conditional": "step"}
    with_modes = {**summary, "lossy_modes": list(modes)}
    assert report_sections.settings_by_mode(with_modes) == {"rs2": "quality", "conditional": "quality"}


def test_the_exact_note_reads_each_comparison_with_its_own_models(tmp_path, monkeypatch):
    rows = ["image,mode,model,bpp,psnr,encode_s,decode_s"]
    for image in ("a", "b"):
        rows += [
            f"{image},rs2,source.safetensors,0.5,30.0,1.0,1.0",
            f"{image},rs2,lossy,0.5,30.5,2.0,3.0",
            f"{image},conditional,source.safetensors,4.0,32.0,1.0,1.0",
            f"{image},conditional,lossy,4.0,31.9,3.0,3.0",
            f"{image},full,source.safetensors,9.0,inf,1.0,1.0",
            f"{image},full,lossy,9.0,inf,9.0,9.0",
        ]
    (tmp_path / "exact_lossy").mkdir()
    (tmp_path / "exact_lossy" / "per_image.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(report_sections, "RESULTS", tmp_path)
    name, gap, slowdowns = report_sections.exact_gaps("exact_lossy")
    assert name == "lossy" and gap == pytest.approx(0.5) and sorted(slowdowns) == pytest.approx([2.5, 3.0])
    assert report_sections.exact_gaps("exact") is None


def test_the_near_lossless_benchmark_checks_bounds_and_finds_jpeg_xl_at_the_psnr():
    import near_lossless

    image = np.asarray(Image.open("tests/data/chelsea_75x50.png").convert("RGB"))
    row = near_lossless.ours(Codec("default"), image, 2, "chelsea", effort=1)
    assert row["selfvae_max_error"] <= 2 and row["selfvae_psnr"] > 40
    pytest.importorskip("imagecodecs")
    jxl = near_lossless.jpeg_xl_at_psnr(image, row["selfvae_psnr"])
    assert jxl["jxl_psnr"] >= row["selfvae_psnr"]
    assert near_lossless.jpeg_ls(image, 2, "chelsea")["jpegls_psnr"] > 40
    summary = near_lossless.summarize(
        [{"image": "a", "max_error": 2, "x": 1.0}, {"image": "b", "max_error": 2, "x": 3.0}]
    )
    assert summary == [{"max_error": 2, "images": 2, "x": 2.0}]
