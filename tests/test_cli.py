"""The command line as a user runs it: round trips, summaries, and bad input that
must end in one clear line, a non-zero exit and no output file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from selfvae_codec.cli.main import cli

DATA = Path(__file__).parent / "data"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_clean_failure(result, message: str, *must_not_exist: Path):
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert message in lines[0]
    assert "Traceback" not in result.output
    for path in must_not_exist:
        assert not path.exists()
    leftovers = [p for p in must_not_exist[0].parent.iterdir() if p.name.startswith(".")] if must_not_exist else []
    assert leftovers == []


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("svc")
    out = folder / "chelsea.svc"
    result = run("encode", DATA / "chelsea_75x50.png", "-o", out, "--threads", "2")
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.mark.parametrize("name", ["chelsea_75x50.png", "camera_gray_64x64.png"])
def test_encode_decode_round_trip(tmp_path, name):
    svc, png = tmp_path / "a.svc", tmp_path / "a.png"
    assert run("encode", DATA / name, "-o", svc, "--mode", "full").exit_code == 0
    result = run("decode", svc, "-o", png)
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(DATA / name)))


def test_summary_line_reports_rates_from_the_real_file(encoded):
    out, output = encoded
    size = out.stat().st_size
    line = output.strip().splitlines()[-1]
    assert f"{size} bytes" in line
    assert f"{size * 8 / (75 * 50):.3f} bpp" in line
    assert "bits/subpixel" in line and "model loaded in" in line


def test_info_lists_header_and_sections(tmp_path):
    from selfvae_codec.codec.api import Codec

    out = tmp_path / "model.svc"  # coded by the model in every tile, with the photo's ICC profile
    out.write_bytes(Codec(threads=1).compress(DATA / "chelsea_75x50.png", classical_tiles=False))
    result = run("info", out, "--json")
    assert result.exit_code == 0
    record = json.loads(result.output)
    assert (record["width"], record["height"], record["mode"]) == (75, 50, "full")
    assert record["bytes"] == out.stat().st_size
    icc_size = len(Image.open(DATA / "chelsea_75x50.png").info["icc_profile"])
    assert record["metadata"] == {"icc_profile": icc_size}
    assert list(record["sections"]) == ["meta", "u", "y1", "z1", "y2", "z2", "y3", "z3", "x"]
    assert record["header_bytes"] + sum(s["bytes"] for s in record["sections"].values()) == record["bytes"]


def test_info_shows_tiles_stored_as_classical_pixels(encoded):
    out, _ = encoded  # the CLI's default: this small photo codes smaller as lossless WebP
    record = json.loads(run("info", out, "--json").output)
    assert list(record["sections"]) == ["meta", "pixels"]
    assert record["header_bytes"] + sum(s["bytes"] for s in record["sections"].values()) == record["bytes"]


def test_decoding_twice_gives_identical_files(encoded, tmp_path):
    out, _ = encoded
    assert run("decode", out, "-o", tmp_path / "1.png").exit_code == 0
    assert run("decode", out, "-o", tmp_path / "2.png").exit_code == 0
    assert (tmp_path / "1.png").read_bytes() == (tmp_path / "2.png").read_bytes()


def test_existing_output_is_not_overwritten_without_force(encoded, tmp_path):
    out, _ = encoded
    target = tmp_path / "exists.png"
    target.write_bytes(b"keep me")
    result = run("decode", out, "-o", target)
    assert result.exit_code != 0 and "--force" in result.output
    assert target.read_bytes() == b"keep me"
    assert run("decode", out, "-o", target, "--force").exit_code == 0
    assert target.read_bytes() != b"keep me"


def _corruptions(data: bytes) -> dict[str, bytes]:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    version = bytearray(data)
    version[4] = 7
    return {
        "empty": b"",
        "truncated": data[: len(data) - 17],
        "wrong magic": b"XXXX" + data[4:],
        "unknown version": bytes(version),
        "flipped byte": bytes(flipped),
        "random bytes": np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
    }


@pytest.mark.parametrize(
    "kind, message",
    [
        ("empty", "empty file"),
        ("truncated", "truncated"),
        ("wrong magic", "not an .svc file"),
        ("unknown version", "unsupported format version"),
        ("flipped byte", "checksum mismatch"),
        ("random bytes", "not an .svc file"),
    ],
)
def test_bad_svc_files_fail_cleanly(encoded, tmp_path, kind, message):
    out, _ = encoded
    bad = tmp_path / "bad.svc"
    bad.write_bytes(_corruptions(out.read_bytes())[kind])
    target = tmp_path / "never.png"
    assert_clean_failure(run("decode", bad, "-o", target), message, target)
    if kind != "empty":
        assert_clean_failure(run("info", bad), message)


def test_non_image_input_fails_cleanly(tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("hello")
    target = tmp_path / "never.svc"
    assert_clean_failure(run("encode", fake, "-o", target), "cannot read", target)


def test_missing_input_fails_cleanly(tmp_path):
    target = tmp_path / "never.svc"
    assert_clean_failure(run("encode", tmp_path / "nope.png", "-o", target), "not found", target)
    assert_clean_failure(run("decode", tmp_path / "nope.svc", "-o", tmp_path / "x.png"), "not found")


def _with_unknown_model(data: bytes, path: Path) -> Path:
    from selfvae_codec.bitstream import pack, unpack

    header = unpack(data)
    header.model_fingerprint = bytes(32)
    path.write_bytes(pack(header))
    return path


def test_unknown_model_fingerprint_fails_cleanly(tmp_path):
    """A file whose tiles need the model it names, and that model is unknown."""
    from selfvae_codec import Codec

    data = Codec("default", threads=1).compress(DATA / "chelsea_75x50.png", "full", classical_tiles=False)
    other = _with_unknown_model(data, tmp_path / "other.svc")
    target = tmp_path / "never.png"
    assert_clean_failure(run("decode", other, "-o", target), "not shipped", target)


def test_files_of_png_or_webp_tiles_decode_without_the_model_or_torch(encoded, tmp_path):
    """Every tile stored classically: the CLI decodes the file without loading any
    model (even one it does not know) and without importing torch."""
    from selfvae_codec.bitstream import unpack

    out, _ = encoded
    assert all(s.kind in ("pixels", "meta") for s in unpack(out.read_bytes()).sections)
    other = _with_unknown_model(out.read_bytes(), tmp_path / "other.svc")
    target = tmp_path / "decoded.png"
    script = (
        "import sys; from selfvae_codec.cli.main import main; sys.argv = ['selfvae-codec', 'decode', "
        f"{str(other)!r}, '-o', {str(target)!r}]\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('torch imported:', 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "no model needed" in result.stdout and "torch imported: False" in result.stdout
    expected = np.asarray(Image.open(DATA / "chelsea_75x50.png").convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(target)), expected)


def test_unsupported_output_format_fails_cleanly(encoded, tmp_path):
    out, _ = encoded
    target = tmp_path / "out.jpg"
    assert_clean_failure(run("decode", out, "-o", target), "cannot write", target)


def test_console_script_reports_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.svc"
    bad.write_bytes(b"SVC")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "selfvae_codec.cli.main", "decode", str(bad), "-o", str(tmp_path / "o.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: bad.svc: not an .svc file (wrong magic bytes)".replace("bad.svc", str(bad))
    assert "Traceback" not in proc.stderr and not (tmp_path / "o.png").exists()


def test_truncate_command_cuts_full_to_conditional(tmp_path):
    from selfvae_codec.codec.api import Codec

    out = tmp_path / "model.svc"
    out.write_bytes(Codec(threads=1).compress(DATA / "chelsea_75x50.png", classical_tiles=False))
    cut = tmp_path / "cut.svc"
    result = run("truncate", out, "--mode", "conditional", "-o", cut)
    assert result.exit_code == 0, result.output
    info = json.loads(run("info", cut, "--json").output)
    assert info["mode"] == "conditional" and "x" not in info["sections"]
    assert run("decode", cut, "-o", tmp_path / "cut.png").exit_code == 0


def test_truncate_codes_classical_tiles_with_the_model_as_a_direct_encode_would(tmp_path):
    from selfvae_codec.bitstream import pack, unpack
    from selfvae_codec.codec.api import Codec

    photo = np.asarray(Image.open(DATA / "astronaut_128x128.png").convert("RGB"))[:32, :64]
    codec = Codec(threads=1, tile_size=32)
    classical = unpack(codec.compress(photo))  # clean photo tiles: stored as PNG or WebP
    assert [s.kind for s in classical.sections] == ["pixels", "pixels"]
    header = unpack(codec.compress(photo, classical_tiles=False))
    # A file whose first tile is the model's and second a classical one.
    header.sections = [s for s in header.sections if s.tile == 0] + classical.sections[1:]
    (tmp_path / "full.svc").write_bytes(pack(header))
    assert run("decode", tmp_path / "full.svc", "-o", tmp_path / "full.png").exit_code == 0
    for mode in ("conditional", "rs1"):
        result = run("truncate", tmp_path / "full.svc", "--mode", mode, "-o", tmp_path / f"{mode}.svc")
        assert result.exit_code == 0, result.output
        direct = codec.compress(photo, mode, step=header.latent_step)
        assert (tmp_path / f"{mode}.svc").read_bytes() == direct


def test_encode_takes_an_effort_and_refuses_one_out_of_range(tmp_path):
    svc, png = tmp_path / "a.svc", tmp_path / "a.png"
    assert run("encode", DATA / "chelsea_75x50.png", "-o", svc, "--effort", "3", "--threads", "2").exit_code == 0
    assert run("decode", svc, "-o", png).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(DATA / "chelsea_75x50.png")))
    result = run("encode", DATA / "chelsea_75x50.png", "-o", tmp_path / "b.svc", "--effort", "10")
    assert result.exit_code == 2 and "--effort" in result.output
    assert not (tmp_path / "b.svc").exists()
