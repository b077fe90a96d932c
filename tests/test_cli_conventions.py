"""The command line's conventions (stdin/stdout, batches, default names, exit codes,
checks before any work); metadata is in test_metadata.py, the API's error contract in
test_api_contract.py."""

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import CHELSEA, DATA, GRAY, error_lines, pixels, run
from PIL import Image

import selfvae_codec
from selfvae_codec.bitstream import unpack
from selfvae_codec.cli import main as cli_main
from selfvae_codec.codec.api import Codec, CodecError
from selfvae_codec.errors import BadValueError


def write_png16_rgb(path: Path, width: int = 4, height: int = 3) -> None:
    """A 16-bit RGB PNG (colour type 2), which Pillow opens as 8-bit mode RGB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    samples = (np.arange(width * 3, dtype=">u2") * 257 + 1).tobytes()
    rows = b"".join(b"\x00" + samples for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command loads a model (checks must come first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(cli_main, "load_codec", refuse)


# -- silent data loss and checks before any work -------------------------------------


def test_16_bit_rgb_png_is_refused_not_reduced(tmp_path):
    source = tmp_path / "deep.png"
    write_png16_rgb(source)
    assert Image.open(source).mode == "RGB"  # what hid the loss
    result = run("encode", source)
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"error: {source}: the image has 16-bit samples; only 8-bit images are coded (coding 8 bits would lose data)"
    ]
    assert not (tmp_path / "deep.svc").exists()
    with pytest.raises(CodecError, match="16-bit"):
        Codec(threads=1).compress(source)


@pytest.mark.parametrize(
    "args, status, message",
    [
        (["encode", CHELSEA, "-o", "{tmp}/nodir/x.svc"], 1, "output folder does not exist"),
        (["encode", "{tmp}/missing.png"], 1, "input file not found"),
        (["decode", "{tmp}/sub/c.svc", "-o", "{tmp}/sub/c.svc", "--force"], 1, "is the input file itself"),
        (["encode", CHELSEA, "-o", "{tmp}/x.png"], 2, "names an image, but encode writes an .svc file"),
        (["encode", CHELSEA, GRAY, "-o", "{tmp}/x.svc"], 1, "-o takes one input"),
        (["encode", CHELSEA, "-o", "{tmp}/x.svc", "-d", "{tmp}"], 1, "give -o or -d, not both"),
        (["encode", CHELSEA, "-d", "{tmp}/sub/c.svc"], 2, "is a file"),
        (["encode", "-", "-d", "{tmp}"], 1, "with '-' give -o"),
        (["encode", CHELSEA, "--mode", "rs2", "--step", "0", "-o", "{tmp}/x.svc"], 2, "step must be a number"),
    ],
)
def test_bad_arguments_fail_before_the_model_is_loaded(tmp_path, no_model, args, status, message):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.svc").write_bytes(b"not read")
    result = run(*[str(a).format(tmp=tmp_path) for a in args])
    assert result.exit_code == status
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


def test_decode_checks_the_output_format_before_the_model_is_loaded(tmp_path, no_model):
    svc = tmp_path / "c.svc"
    svc.write_bytes(Codec(threads=1).compress(CHELSEA))
    result = run("decode", svc, "-o", tmp_path / "c.jpg")
    assert result.exit_code == 2
    assert ".webp" in result.stderr and ".pgm" in result.stderr  # every format that works is listed
    result = run("decode", svc, "-o", tmp_path / "c.pgm")
    assert result.exit_code == 2 and "holds grayscale" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.svc"]


# -- standard input and output --------------------------------------------------------


def test_dash_reads_stdin_and_writes_stdout_with_the_summary_on_stderr(tmp_path):
    encoded = run("encode", "-", "-o", "-", input=CHELSEA.read_bytes())
    assert encoded.exit_code == 0, encoded.stderr
    assert unpack(encoded.stdout_bytes).width == 75
    assert "encoded stdin -> stdout" in encoded.stderr
    decoded = run("decode", "-", input=encoded.stdout_bytes)  # stdin without -o: stdout, as gzip -d
    assert decoded.exit_code == 0, decoded.stderr
    (tmp_path / "out.png").write_bytes(decoded.stdout_bytes)
    assert np.array_equal(pixels(tmp_path / "out.png"), pixels(CHELSEA))
    assert "decoded stdin -> stdout" in decoded.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "out.png"]  # no file named '-'


def test_a_file_named_dash_is_not_read_for_stdin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("-").write_bytes(b"not this")
    result = run("info", "-", input=Codec(threads=1).compress(GRAY))
    assert result.exit_code == 0 and "64x64x1" in result.output


# -- interrupts, exit codes, usage errors --------------------------------------------


def test_ctrl_c_exits_130_and_leaves_no_output(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (1536, 1536, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.png")
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfvae_codec", "encode", str(tmp_path / "big.png"), "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        # As a terminal delivers Ctrl-C: a shell's background job starts with SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(6)
    assert proc.poll() is None, "the encode finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert stderr.strip().splitlines()[-1] == "interrupted" and "Aborted" not in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]


@pytest.mark.parametrize(
    "args",
    [
        ["encode"],
        ["encode", CHELSEA, "--mode", "lossy"],
        ["encode", CHELSEA, "--bogus"],
        ["evaluate", DATA, "--limit", "0"],
        ["evaluate", DATA, "--limit", "-1"],
        ["evaluate", DATA, "--samples", "0"],
        ["nonsense"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args):
    result = run(*args)
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0], result.stderr


@pytest.mark.parametrize("device, message", [("foo", "unknown device"), ("mps", "not supported")])
def test_bad_devices_are_one_line_errors(device, message):
    result = run("encode", CHELSEA, "-o", "-", "--device", device)
    assert result.exit_code == 2 and error_lines(result) == [error_lines(result)[0]]
    assert message in result.stderr
    with pytest.raises(BadValueError, match=message):
        Codec(device=device)


def test_python_dash_m_runs_the_command_line():
    proc = subprocess.run([sys.executable, "-m", "selfvae_codec", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and selfvae_codec.__version__ in proc.stdout


def test_info_does_not_import_torch(tmp_path):
    svc = tmp_path / "g.svc"
    svc.write_bytes(Codec(threads=1).compress(GRAY))
    code = (
        "import sys; from selfvae_codec.cli.main import cli\n"
        f"try: cli.main(['info', {str(svc)!r}])\n"
        "except SystemExit: pass\n"
        "print('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "False"


# -- many files, default names, summaries ----------------------------------------------


def test_batch_with_default_names_and_one_bad_file(tmp_path):
    for source in (CHELSEA, GRAY):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    (tmp_path / "broken.png").write_text("not an image")
    result = run("encode", tmp_path, "--quiet")  # a folder: every image in it
    assert result.exit_code == 1  # one file failed; the others are coded
    assert error_lines(result) == [
        f"error: {tmp_path / 'broken.png'}: cannot read {tmp_path / 'broken.png'} as an "
        f"image: {error_lines(result)[0].split('as an image: ')[1]}"
    ]
    assert sorted(p.name for p in tmp_path.glob("*.svc")) == ["camera_gray_64x64.svc", "chelsea_75x50.svc"]
    out = tmp_path / "decoded"
    out.mkdir()
    result = run("decode", tmp_path / "chelsea_75x50.svc", tmp_path / "camera_gray_64x64.svc", "-d", out)
    assert result.exit_code == 0, result.stderr
    for source in (CHELSEA, GRAY):
        assert np.array_equal(pixels(out / source.name), pixels(source))
    assert run("encode", tmp_path / "chelsea_75x50.png").exit_code == 1  # exists: never silently overwritten


def test_grayscale_summary_counts_one_channel(tmp_path):
    result = run("encode", GRAY, "-o", tmp_path / "g.svc")
    size = (tmp_path / "g.svc").stat().st_size
    assert f"{size * 8 / (64 * 64):.3f} bits/subpixel" in result.output


def test_quiet_prints_nothing_and_verbose_prints_sections(tmp_path):
    quiet = run("encode", GRAY, "-o", tmp_path / "q.svc", "--quiet")
    assert quiet.exit_code == 0 and quiet.output == ""
    verbose = run("encode", GRAY, "-o", tmp_path / "v.svc", "-v")
    assert "  section " in verbose.output and "metadata kept: none" in verbose.output


def test_outputs_respect_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        assert run("encode", GRAY, "-o", tmp_path / "g.svc").exit_code == 0
        assert run("decode", tmp_path / "g.svc", "-o", tmp_path / "g.png").exit_code == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "g.svc").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "g.png").stat().st_mode & 0o777 == 0o644


def test_animated_images_are_refused(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    result = run("encode", tmp_path / "anim.gif")
    assert result.exit_code == 1 and "animated (2 frames)" in result.stderr
    assert not (tmp_path / "anim.svc").exists()


# -- evaluate ------------------------------------------------------------------------------


def test_evaluate_reports_unreadable_and_refused_images_and_scores_the_rest(tmp_path):
    (tmp_path / "ok.png").write_bytes(GRAY.read_bytes())
    (tmp_path / "broken.png").write_text("not an image")
    Image.fromarray(np.full((16, 16), 60000, np.uint16)).save(tmp_path / "deep_gray.png")
    rgba = np.zeros((16, 16, 4), np.uint8)
    Image.fromarray(rgba).save(tmp_path / "transparent.png")
    result = run("evaluate", tmp_path, "--samples", "1", "--quiet", "--csv", tmp_path / "scores.csv")
    assert result.exit_code == 1
    errors = [line for line in error_lines(result) if line.startswith("error:")]
    assert len(errors) == 3
    assert any("broken.png" in e for e in errors) and any("16-bit" in e for e in errors)
    assert any("transparency" in e for e in errors)
    assert "1 image: negative ELBO" in result.stdout and "3 images could not be read" in result.stdout
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("ok.png,64,64,")


def test_default_threads_leave_out_the_cores_other_processes_are_busy_on(tmp_path):
    import torch

    from selfvae_codec.codec.runtime import free_cores

    usable = min(len(os.sched_getaffinity(0)), torch.get_num_threads())
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.50 0.40 0.30 1/210 4242\n")  # only this thread runs
    assert free_cores(str(loadavg)) == usable
    loadavg.write_text(f"2.10 1.90 1.50 {usable + 1}/210 4242\n")  # every core busy
    assert free_cores(str(loadavg)) == 1
    assert free_cores(str(tmp_path / "missing")) == usable


def test_idle_openmp_threads_spin_briefly_then_sleep_unless_the_user_chose():
    script = "import os, selfvae_codec; print(os.environ['OMP_WAIT_POLICY'], os.environ.get('GOMP_SPINCOUNT'))"
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("OMP_", "GOMP_"))}
    chosen = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
    assert chosen.stdout.split() == ["PASSIVE", "30000"]
    environment["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's policy, with GNU OpenMP's own spin for it
    kept = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
    assert kept.stdout.split() == ["ACTIVE", "None"]


# -- batches ----------------------------------------------------------------------------


def test_out_dir_is_created_and_mirrors_the_input_folders(tmp_path):
    shots = tmp_path / "shots"
    (shots / "sub").mkdir(parents=True)
    (shots / "a.png").write_bytes(GRAY.read_bytes())
    (shots / "sub" / "a.png").write_bytes(CHELSEA.read_bytes())  # the same name, another folder
    result = run("encode", shots, "-d", tmp_path / "archive" / "deep", "--quiet")
    assert result.exit_code == 0, result.stderr
    archive = tmp_path / "archive" / "deep"
    assert sorted(str(p.relative_to(archive)) for p in archive.rglob("*.svc")) == ["a.svc", "sub/a.svc"]
    result = run("decode", archive, "-d", tmp_path / "restored", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert np.array_equal(pixels(tmp_path / "restored" / "sub" / "a.png"), pixels(CHELSEA))
    assert np.array_equal(pixels(tmp_path / "restored" / "a.png"), pixels(GRAY))


def test_existing_outputs_fail_alone_and_skip_existing_leaves_them(tmp_path):
    names = ("one.png", "two.png", "three.png")
    for name in names:
        (tmp_path / name).write_bytes(GRAY.read_bytes())
    (tmp_path / "one.svc").write_bytes(b"kept")
    (tmp_path / "three.svc").write_bytes(b"kept")
    result = run("encode", *[tmp_path / name for name in names], "--quiet")
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"error: {tmp_path / name}: {tmp_path / name.replace('.png', '.svc')} exists "
        "(use --force to replace it, or --skip-existing)"
        for name in ("one.png", "three.png")
    ]
    assert (tmp_path / "one.svc").read_bytes() == b"kept" and (tmp_path / "two.svc").stat().st_size > 100
    (tmp_path / "two.svc").unlink()
    result = run("encode", *[tmp_path / name for name in names], "--skip-existing")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("skipped") == 2 and (tmp_path / "two.svc").stat().st_size > 100
    assert (tmp_path / "three.svc").read_bytes() == b"kept"


def test_a_lone_existing_output_fails_before_the_model_is_loaded(tmp_path, no_model):
    (tmp_path / "g.png").write_bytes(GRAY.read_bytes())
    (tmp_path / "g.svc").write_bytes(b"kept")
    result = run("encode", tmp_path / "g.png")
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: {tmp_path / 'g.svc'} exists (use --force to replace it)"]
    assert run("encode", tmp_path / "g.png", "--skip-existing").exit_code == 0


# -- exit codes and messages --------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["encode", CHELSEA, "--mode", "rs2", "-q", "10", "-o", "{tmp}/x.svc"], "from 1 to 9, got 10"),
        (["encode", CHELSEA, "--mode", "rs1", "-q", "7", "-o", "{tmp}/x.svc"], "from 1 to 6, got 7"),
        (["encode", CHELSEA, "--mode", "rs2", "-q", "8", "--step", "0.5", "-o", "{tmp}/x.svc"], "not 8 (a near"),
        (["encode", CHELSEA, "--mode", "full", "-q", "3", "-o", "{tmp}/x.svc"], "a quality applies to"),
        (["upscale", CHELSEA, "--factor", "3"], "must be a power of two"),
        (["upscale", CHELSEA, "--size", "abc"], "must look like 640x480"),
        (["sample", "-o", "{tmp}/out.jpg"], "cannot write .jpg image files"),
    ],
)
def test_bad_values_exit_2_with_one_line(tmp_path, args, message):
    result = run(*[str(a).format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_bare_command_prints_its_help():
    result = run()
    assert result.exit_code == 0 and result.stdout.startswith("Usage: ") and "encode" in result.stdout
    assert "error" not in result.stderr


def test_quality_help_shows_the_lossy_range():
    help_text = run("encode", "--help").stdout
    quality = help_text[help_text.index("--quality") : help_text.index("--step")]
    assert quality.startswith("--quality 1-9") and "255" not in quality


def test_models_lists_the_two_coding_models_and_names_the_float_source_and_the_earlier_lossy():
    lines = run("models").stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == ["default", "lossy"]
    assert lines[-1].startswith("also shipped: default-float, the float weights")
    assert "; lossy-v3 and lossy-v4, earlier models whose files `lossy` reads (--all)" in lines[-1]
    everything = run("models", "--all").stdout.splitlines()
    assert [line.split(":")[0] for line in everything] == ["default", "default-float", "lossy", "lossy-v3", "lossy-v4"]


def test_messages_name_no_flags_in_the_api_and_count_in_words(tmp_path):
    with pytest.raises(BadValueError, match="^a quality needs a lossy model"):
        Codec(threads=1).compress(GRAY, "rs2", quality=2)
    (tmp_path / "g.svc").write_bytes(b"x")
    with pytest.raises(CodecError, match=r"g\.svc exists$"):
        Codec(threads=1).compress_file(GRAY, tmp_path / "g.svc")
    result = run("encode", GRAY, "-o", tmp_path / "new.svc", "--threads", "1")
    assert "(1 thread;" in result.stdout
