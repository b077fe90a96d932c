"""Distilling a lighter lossy decoder (training/distil.py, `selfvae-codec distil`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import CHELSEA, error_lines, pixels, run

from selfvae_codec.bitstream import unpack
from selfvae_codec.codec.api import Codec
from selfvae_codec.codec.latent_optimisation import rate_and_error
from selfvae_codec.models.config import tiny_config
from selfvae_codec.models.exact import float_twin, quality_films, to_exact
from selfvae_codec.models.io import save_model
from selfvae_codec.models.levels import decoding_quality
from selfvae_codec.models.selfvae import SelfVAE, upper_decoding_alone
from selfvae_codec.training.data import RandomCropSampler
from selfvae_codec.training.distil import (
    decoding_parameters,
    fine_tune,
    reconstruction_psnr,
    shortened,
    with_upper_decoding,
)
from selfvae_codec.training.rate_distortion import lossy_model_from

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def teacher() -> SelfVAE:
    """A tiny lossy model whose trunk blocks do something (a new block is the identity)."""
    torch.manual_seed(0)
    lossless = SelfVAE(tiny_config(trunk_blocks=(0, 1, 3)))
    lossless.initialize(torch.randint(0, 256, (2, 3, 64, 64)))
    model = lossy_model_from(lossless, 3)
    with torch.no_grad():
        for block in model.levels[2].trunk_blocks:
            block.outer.weight.normal_(0, 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    rng = np.random.default_rng(1)
    return torch.from_numpy(rng.integers(0, 256, (2, 3, 32, 32))).long()


def _rates(model: SelfVAE, x: torch.Tensor, quality: int) -> dict[str, torch.Tensor]:
    terms = model.rate_distortion_terms(x, torch.full((len(x),), quality), noisy=False)
    return {name: value for name, value in terms.items() if name.startswith("rate")}


def test_the_student_keeps_the_first_blocks_and_sends_the_same_latents(teacher, crops):
    student = shortened(teacher, (0, 1, 1))
    assert len(student.levels[2].trunk_blocks) == 1
    assert torch.equal(student.levels[2].trunk_blocks[0].outer.weight, teacher.levels[2].trunk_blocks[0].outer.weight)
    with torch.no_grad():
        for quality in range(3):
            teacher_rates, student_rates = _rates(teacher, crops, quality), _rates(student, crops, quality)
            assert teacher_rates.keys() == student_rates.keys()
            assert all(torch.equal(teacher_rates[k], student_rates[k]) for k in teacher_rates)
        assert reconstruction_psnr(student, crops, [0]) != reconstruction_psnr(teacher, crops, [0])


def test_fine_tuning_trains_only_the_shortened_levels_decoding_and_lowers_its_error(teacher):
    student = shortened(teacher, (0, 1, 1))
    before = {name: tensor.clone() for name, tensor in student.state_dict().items()}
    parameters = decoding_parameters(student, teacher.config.trunk_blocks)
    names = {name for name, parameter in student.named_parameters() if any(parameter is p for p in parameters)}
    assert names and all(name.startswith("levels.2.") for name in names)
    sampler = RandomCropSampler([DATA / "astronaut_128x128.png"], 32, seed=0)
    held_out = torch.from_numpy(sampler.batch(8)).long()
    start = reconstruction_psnr(student, held_out, [0, 1, 2])
    steps = fine_tune(student, parameters, sampler, float("inf"), 3e-4, 4, max_steps=60)
    assert steps == 60
    after = student.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and changed <= names
    end = reconstruction_psnr(student, held_out, [0, 1, 2])
    assert sum(end.values()) > sum(start.values())


def test_students_need_a_lossy_float_teacher_and_fewer_blocks(teacher):
    with pytest.raises(ValueError, match="at most"):
        shortened(teacher, (0, 1, 4))
    with pytest.raises(ValueError, match="one per level"):
        shortened(teacher, (0, 1))
    with pytest.raises(ValueError, match="lossy float model"):
        shortened(SelfVAE(tiny_config()), (0, 0, 0))
    uncut = shortened(teacher, teacher.config.trunk_blocks)
    with pytest.raises(ValueError, match="train the decoding of some of levels 1 to 3"):
        decoding_parameters(uncut, teacher.config.trunk_blocks)  # nothing cut, no level named
    with pytest.raises(ValueError, match="levels 1 to 3"):
        decoding_parameters(uncut, teacher.config.trunk_blocks, [3])


def test_a_named_level_trains_the_teachers_own_decoding(teacher):
    """No block removed: the teacher's decoder at level 3 fitted to the rounded latents."""
    uncut = shortened(teacher, teacher.config.trunk_blocks)
    parameters = decoding_parameters(uncut, teacher.config.trunk_blocks, [2])
    names = {name for name, parameter in uncut.named_parameters() if any(parameter is p for p in parameters)}
    assert any(".trunk_blocks.2." in name for name in names) and all(n.startswith("levels.2.") for n in names)


def test_a_distilled_student_converts_and_codes_files_from_the_command_line(teacher, tmp_path):
    """distil -> convert -> encode / decode, as a developer runs it; bad input is one line."""
    save_model(teacher, tmp_path / "teacher.safetensors")
    student, exact = tmp_path / "student.safetensors", tmp_path / "exact.safetensors"
    common = ["--teacher", tmp_path / "teacher.safetensors", "-o", student, "--crop", 32, "--batch", 2]
    result = run("distil", DATA, *common, "--trunk-blocks", "0,1,1", "--val", DATA, "--val-crop", 48, "--minutes", 0.02)
    assert result.exit_code == 0, result.output
    assert "teacher" in result.output and "student after" in result.output and student.is_file()
    assert run("convert", student, "-o", exact).exit_code == 0
    codec = Codec(str(exact), threads=1)
    assert codec.model.config.trunk_blocks == (0, 1, 1)
    image = pixels(CHELSEA)
    decoded = codec.decompress(codec.compress(image, "rs2", quality=2))
    assert decoded.shape == image.shape
    film = ["--trunk-blocks", "0,1,3", "--train-levels", "3", "--quality-film", "--minutes", 0.02, "-f"]
    told = run("distil", DATA, *common, *film)
    assert told.exit_code == 0, told.output
    assert run("convert", student, "-o", exact, "-f").exit_code == 0
    codec = Codec(str(exact), threads=1)
    assert codec.model.config.quality_film
    decoded = codec.decompress(codec.compress(image, "rs2", quality=2))
    assert decoded.shape == image.shape
    refused = run("distil", DATA, *common, "--trunk-blocks", "0,1,4", "-f")
    assert refused.exit_code == 1 and error_lines(refused) == [
        "error: each level keeps at most its (0, 1, 3) trunk blocks, not (0, 1, 4)"
    ]


def test_a_quality_film_student_starts_as_its_teacher_and_decodes_each_quality_its_own_way(teacher, crops):
    """Told the quality (config.quality_film), the student starts as the identity
    of its teacher; a film of one quality changes that quality's reconstruction only,
    and the films train with the decoding."""
    student = shortened(teacher, teacher.config.trunk_blocks, quality_film=True)
    assert student.config.quality_film and not teacher.config.quality_film
    qualities = [0, 1, 2]
    assert reconstruction_psnr(student, crops, qualities) == reconstruction_psnr(teacher, crops, qualities)
    films = quality_films(student)
    assert len(films) == 3 + 2 * (0 + 1 + 3)  # per level one after the context block; two per trunk block
    with torch.no_grad():
        films[-1].table[0, 1].fill_(0.5)  # quality 1's bias after level 3's last block
    changed = reconstruction_psnr(student, crops, qualities)
    teacher_psnr = reconstruction_psnr(teacher, crops, qualities)
    assert changed[0] != teacher_psnr[0] and changed[1] == teacher_psnr[1] and changed[2] == teacher_psnr[2]

    parameters = decoding_parameters(student, teacher.config.trunk_blocks, [2])
    before = [film.table.detach().clone() for film in films]
    sampler = RandomCropSampler([DATA / "astronaut_128x128.png"], 32, seed=0)
    fine_tune(student, parameters, sampler, float("inf"), 3e-4, 4, max_steps=3)
    moved = [not torch.equal(film.table, old) for film, old in zip(films, before, strict=True)]
    assert moved == [False] * 4 + [True] * 7  # levels 1 and 2 did not train; level 3's films did


def test_a_quality_film_model_decodes_only_at_a_quality(teacher, crops):
    with pytest.raises(ValueError, match="quality_film needs a lossy model"):
        tiny_config(quality_film=True)
    student = shortened(teacher, teacher.config.trunk_blocks, quality_film=True)
    with pytest.raises(RuntimeError, match="decodes at a quality"):
        student.levels[2].context(crops[:1, :, ::2, ::2], torch.zeros(1, 4, 8, 8))


def test_an_exact_quality_film_model_codes_what_its_float_twin_computes(teacher):
    """The films' integers (exact model) and their float twin agree to the rounding of
    the activations; files round-trip exactly, and a film changes the file's image."""
    student = shortened(teacher, teacher.config.trunk_blocks, quality_film=True)
    torch.manual_seed(3)
    with torch.no_grad():
        for film in quality_films(student):
            film.table.normal_(0, 0.1)
    exact = to_exact(student)
    assert all(film.table.dtype == torch.int64 for film in quality_films(exact))
    twin = float_twin(exact)
    assert all(
        torch.allclose(a.table, b.table, atol=1 / 256)
        for a, b in zip(quality_films(twin), quality_films(student), strict=True)
    )
    image = pixels(CHELSEA)[:40, :48]
    codec = Codec(exact, threads=1)
    for quality in (1, 3):
        result = codec.encode(image, "rs2", quality=quality)
        assert np.array_equal(codec.decompress(result.data), result.reconstruction)
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].long()
        with torch.no_grad():
            _, error, _ = rate_and_error(twin, twin.representations(x), quality - 1, 1.0, True, [])
        coded_error = ((result.reconstruction.astype(np.float64) - image) ** 2).mean()
        assert float(error) == pytest.approx(coded_error, rel=0.02)
    with_films = codec.encode(image, "rs2", quality=1).reconstruction
    for film in quality_films(exact):
        film.table.zero_()
    assert not np.array_equal(Codec(exact, threads=1).encode(image, "rs2", quality=1).reconstruction, with_films)


def test_quality_weights_pick_which_qualities_train(teacher):
    """Drawn only at quality 3, only quality 3's films move; bad weights are refused."""
    student = shortened(teacher, teacher.config.trunk_blocks, quality_film=True)
    parameters = decoding_parameters(student, teacher.config.trunk_blocks, [2])
    films = quality_films(student)
    before = [film.table.detach().clone() for film in films]
    sampler = RandomCropSampler([DATA / "astronaut_128x128.png"], 32, seed=0)
    fine_tune(student, parameters, sampler, float("inf"), 3e-4, 2, max_steps=2, quality_weights=[0, 0, 1])
    moved = {
        q for film, old in zip(films, before, strict=True) for q in range(3) if not torch.equal(film.table[q], old[q])
    }
    assert moved == {2}
    for weights in ([1, 1], [0, 0, 0], [1, -1, 1]):
        with pytest.raises(ValueError, match="give 3 quality weights"):
            fine_tune(student, parameters, sampler, float("inf"), 3e-4, 2, max_steps=1, quality_weights=weights)


def test_a_quality_film_model_samples_and_scores_at_its_finest_quality(teacher, crops):
    """Where no latent is quantised (the ELBO, sampling, upscaling) a quality_film model
    decodes with its finest quality's films; inside a walk at a quality, that one's."""
    student = shortened(teacher, teacher.config.trunk_blocks, quality_film=True)
    with torch.no_grad():
        quality_films(student)[-1].table[2, 1].fill_(0.3)  # the finest quality's last bias
        finest, plain = reconstruction_term(student, crops), reconstruction_term(teacher, crops)
        assert not torch.equal(finest, plain)
        with decoding_quality(student, 0):
            assert torch.equal(reconstruction_term(student, crops), finest)  # the ELBO's own quality wins
            assert student.levels[2].quality.tolist() == [0]  # and the outer one is restored
        assert student.sample(1, (16, 16)).shape == (1, 3, 16, 16)


def reconstruction_term(model: SelfVAE, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)  # the same posterior sample for every model
    return model.elbo_terms(x)["re_x"]


def test_an_upper_decoding_rebuilds_the_top_qualities_as_the_model_it_came_from(teacher, crops):
    """A student fitted to the low qualities joined with its teacher's decoding for
    the top ones (config.upper_decoding): each quality rebuilds as its source model
    does, with the same latents; a batch that mixes both is refused."""
    student = shortened(teacher, teacher.config.trunk_blocks, quality_film=True)
    with torch.no_grad():
        for film in quality_films(student.levels[2]):  # the films of the level whose decoding is split
            film.table.normal_(0, 0.1)
    joined = with_upper_decoding(student, teacher, 3)
    assert joined.config.upper_decoding == 3
    with torch.no_grad():
        assert reconstruction_psnr(joined, crops, [0, 1]) == reconstruction_psnr(student, crops, [0, 1])
        assert reconstruction_psnr(joined, crops, [2]) == reconstruction_psnr(teacher, crops, [2])
        assert _rates(joined, crops, 2).keys() == _rates(teacher, crops, 2).keys()
        with pytest.raises(ValueError, match="one of its two decodings"):
            joined.rate_distortion_terms(crops, torch.tensor([0, 2]), noisy=False)
    exact = to_exact(joined)
    image = pixels(CHELSEA)[:40, :48]
    codec = Codec(exact, threads=1)
    for quality in (1, 3):
        result = codec.encode(image, "rs2", quality=quality)
        assert np.array_equal(codec.decompress(result.data), result.reconstruction)
    other = lossy_model_from(SelfVAE(tiny_config(trunk_blocks=(0, 1, 3))), 3)
    with pytest.raises(ValueError, match="send different latents"):
        with_upper_decoding(student, other, 3)
    with pytest.raises(ValueError, match="upper_decoding must be 0 or a quality from 2 to 3"):
        with_upper_decoding(student, teacher, 4)


def test_a_joined_model_carries_the_model_its_upper_decoding_came_from_whole(teacher, crops):
    """upper_decoding_alone takes back the teacher from a joined model, float or exact:
    the same fingerprint, so the teacher's files decode with it (the shipped `lossy`
    so carries the previous one); a model without an upper decoding is refused."""
    student = shortened(teacher, teacher.config.trunk_blocks, quality_film=True)
    joined = with_upper_decoding(student, teacher, 2)
    assert upper_decoding_alone(joined).fingerprint() == teacher.fingerprint()
    exact_teacher = to_exact(teacher)
    carried = upper_decoding_alone(to_exact(joined))
    assert carried.fingerprint() == exact_teacher.fingerprint()
    image = pixels(CHELSEA)[:40, :48]
    data = Codec(exact_teacher, threads=1).compress(image, "rs2", quality=1)
    assert np.array_equal(Codec(carried, threads=1).decompress(data), Codec(exact_teacher, threads=1).decompress(data))
    with pytest.raises(ValueError, match="no upper decoding"):
        upper_decoding_alone(teacher)


def test_converting_a_student_keeps_its_exact_teachers_integers_where_it_was_not_trained(teacher, tmp_path):
    """A decoder distilled from an exact model's float twin converts with that model's
    integers for every layer it did not train (`convert --keep-integers-of`): its rs2
    files send the teacher's latents byte for byte; the twin itself converts back to
    the teacher."""
    exact_teacher = to_exact(teacher)
    assert to_exact(float_twin(exact_teacher), keep=exact_teacher).fingerprint() == exact_teacher.fingerprint()
    student = float_twin(exact_teacher)
    trained = decoding_parameters(student, student.config.trunk_blocks, levels=[2])
    with torch.no_grad():
        for parameter in trained:
            parameter.add_(0.01 * torch.randn_like(parameter))
    save_model(student, tmp_path / "student.safetensors")
    save_model(exact_teacher, tmp_path / "teacher.safetensors")
    out, weights = tmp_path / "exact.safetensors", tmp_path / "student.safetensors"
    result = run("convert", weights, "-o", out, "--keep-integers-of", tmp_path / "teacher.safetensors")
    assert result.exit_code == 0, result.output
    exact = Codec(str(out), threads=1).model
    assert exact.fingerprint() == to_exact(student, keep=exact_teacher).fingerprint() != exact_teacher.fingerprint()
    ours, theirs = exact.state_dict(), exact_teacher.state_dict()
    decoding = tuple(f"levels.2.{part}." for part in ("context_block", "trunk_blocks", "group_heads"))
    assert all(torch.equal(ours[name], theirs[name]) for name in ours if not name.startswith(decoding))
    image = pixels(CHELSEA)
    sent = [
        unpack(Codec(model, threads=1).compress(image, "rs2", quality=2)).sections for model in (exact, exact_teacher)
    ]
    assert sent[0] == sent[1]
    refused = run("convert", weights, "-o", out, "-f", "--keep-integers-of", weights)
    assert refused.exit_code == 1 and error_lines(refused) == ["error: the model whose integers are kept must be exact"]
