"""Training from the CLI: a few steps, an exact resume, and DDP replicas that stay identical."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from selfvae_codec.cli.main import cli
from selfvae_codec.models.io import load_model
from selfvae_codec.training.settings import TrainSettings
from selfvae_codec.training.trainer import learning_rate

DATA = Path(__file__).parent / "data"
TINY = json.dumps(
    {
        "u_channels": 4,
        "z_channels": 4,
        "flow_layers": 2,
        "flow_hidden": 8,
        "mixtures": 3,
        "top_width": 16,
        "level_widths": [16, 12, 8],
        "growth": 8,
        "dense_layers": 1,
    }
)


def train_args(out, steps):
    return [
        "train",
        str(DATA),
        "-o",
        str(out),
        "--val",
        str(DATA),
        "--steps",
        str(steps),
        "--batch-size",
        "2",
        "--crop",
        "32",
        "--val-crop",
        "48",
        "--val-every",
        "2",
        "--checkpoint-every",
        "2",
        "--config",
        TINY,
        "--no-progress",
        "--threads",
        "1",
    ]


def records(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_training_logs_validates_and_resumes_exactly(tmp_path):
    runner = CliRunner()
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert runner.invoke(cli, train_args(straight, 4), catch_exceptions=False).exit_code == 0
    assert runner.invoke(cli, train_args(split, 2), catch_exceptions=False).exit_code == 0
    result = runner.invoke(cli, train_args(split, 4), catch_exceptions=False)
    assert "resuming at step 2" in result.output
    vals = [r for r in records(straight) if r["kind"] == "val"]
    assert [r["step"] for r in vals] == [2, 4]
    assert all(0 < r["total"] < 16 for r in vals)  # bits per 8-bit subpixel, after a few steps
    a = load_model(straight / "latest.safetensors")
    b = load_model(split / "latest.safetensors")
    assert a.fingerprint() == b.fingerprint()  # resuming reproduces the uninterrupted run bit for bit


def test_latest_weights_are_the_moving_average_of_the_trained_weights(tmp_path):
    runner = CliRunner()
    out = tmp_path / "ema"
    args = [*train_args(out, 1), "--checkpoint-every", "1", "--ema-decay", "0.25"]
    assert runner.invoke(cli, args, catch_exceptions=False).exit_code == 0
    first = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    args[args.index("--steps") + 1] = "2"
    assert runner.invoke(cli, args, catch_exceptions=False).exit_code == 0
    second = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    average = load_model(out / "latest.safetensors").state_dict()
    changed = 0
    for name, value in average.items():
        if not value.is_floating_point():
            continue
        # The first update copies the weights, later ones move 1 - decay of the way.
        expected = first[name] + 0.75 * (second[name] - first[name])
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
        changed += not torch.equal(value, second[name])
    assert changed > 0  # the average is not just the raw weights


def test_learning_rate_warms_up_stays_then_decays_to_zero_at_the_last_step():
    constant = TrainSettings(train_dirs=[], out_dir="", steps=1000, lr=1e-3, warmup_steps=100)
    assert learning_rate(constant, 0) == pytest.approx(1e-5)
    assert learning_rate(constant, 99) == learning_rate(constant, 999) == pytest.approx(1e-3)
    decaying = TrainSettings(train_dirs=[], out_dir="", steps=1000, lr=1e-3, warmup_steps=100, decay_from=600)
    assert learning_rate(decaying, 599) == pytest.approx(1e-3)
    assert learning_rate(decaying, 800) == pytest.approx(0.5e-3)
    assert learning_rate(decaying, 999) == pytest.approx(1e-3 / 400)
    assert learning_rate(decaying, 1000) == 0.0
    # A grown run warms up again from its growing step, decay or not.
    assert learning_rate(decaying, 650, warmup_start=600) == pytest.approx(1e-3 * 51 / 100 * 350 / 400)


def test_training_with_a_decay_sets_the_decayed_rate_and_refuses_a_late_start(tmp_path):
    runner = CliRunner()
    out = tmp_path / "decay"
    args = [*train_args(out, 4), "--lr", "0.01", "--decay-from", "2"]
    assert runner.invoke(cli, args, catch_exceptions=False).exit_code == 0
    group = torch.load(out / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"][0]
    # The last step taken (step 3) ran at half the warming-up rate: 1 of the 2 decay steps left.
    assert group["lr"] == pytest.approx(0.01 * 4 / 500 * 1 / 2)
    late = runner.invoke(cli, [*train_args(tmp_path / "late", 4), "--decay-from", "4"])
    assert late.exit_code != 0 and "--decay-from" in late.output
    assert not (tmp_path / "late").exists()


def test_bad_config_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(cli, ["train", str(DATA), "-o", str(tmp_path / "o"), "--config", "{nope"])
    assert result.exit_code != 0 and "--config" in result.output


def test_distributed_training_keeps_replicas_identical(tmp_path):
    torchrun = shutil.which("torchrun")
    assert torchrun, "torchrun is installed with torch"
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "--master_port",
            "29531",
            "-m",
            "selfvae_codec.cli.main",
            *train_args(out, 3),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    # The first lines that name an error, then the end (torchrun's summary).
    errors = [line for line in proc.stderr.splitlines() if "rror" in line or "terminate" in line]
    assert proc.returncode == 0, "\n".join(errors[:20]) + "\n...\n" + proc.stderr[-1500:]
    checks = [r for r in records(out) if r["kind"] == "replica_check"]
    assert len(checks) == 1 and checks[0]["identical"] and len(checks[0]["fingerprints"]) == 2
    assert torch.isfinite(torch.tensor([r["total"] for r in records(out) if r["kind"] == "val"])).all()


def test_interrupt_saves_a_checkpoint_at_a_step_boundary(tmp_path):
    out = tmp_path / "interrupted"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfvae_codec.cli.main", *train_args(out, 100000)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.time() + 300  # generous: a loaded CI machine is slow to start torch
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (out / "checkpoint.pt").exists(), "training wrote no checkpoint within 300 s"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "saving a checkpoint" in output and "Traceback" not in output
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] >= 2
    resumed = CliRunner().invoke(cli, train_args(out, state["step"] + 1), catch_exceptions=False)
    assert f"resuming at step {state['step']}" in resumed.output


def test_evaluate_reports_elbo_and_a_tighter_importance_weighted_bound(tmp_path):
    import csv

    from selfvae_codec.models.config import tiny_config
    from selfvae_codec.models.io import save_model
    from selfvae_codec.models.selfvae import SelfVAE

    torch.manual_seed(0)
    model = SelfVAE(tiny_config(levels=2))
    model.initialize(torch.randint(0, 256, (2, 3, 32, 32)))
    weights = tmp_path / "tiny.safetensors"
    save_model(model, weights)
    rows_path = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            str(DATA),
            "--model",
            str(weights),
            "--samples",
            "4",
            "--tile-size",
            "64",
            "--csv",
            str(rows_path),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "4 images: negative ELBO" in result.output and "importance-weighted (4 samples)" in result.output
    rows = list(csv.DictReader(rows_path.open()))
    assert len(rows) == 4
    for row in rows:
        elbo, iw = float(row["elbo_bpd"]), float(row["iw_bpd"])
        assert 0 < iw <= elbo + 1e-9  # log-mean-exp of the weights is at least their mean
        terms = sum(float(v) for k, v in row.items() if k.startswith(("re_", "kl_")))
        assert abs(terms - elbo) < 1e-3


@pytest.mark.parametrize(
    ("option", "field", "new_blocks"),
    [
        ("--head-blocks", "head_blocks", 3 * 4),  # 0 + 1 + 2 blocks in each of the 4 group heads
        ("--trunk-blocks", "trunk_blocks", 3),  # 0 + 1 + 2 blocks after the trunks
    ],
)
def test_growing_a_run_keeps_its_output_and_training_continues(tmp_path, option, field, new_blocks):
    runner = CliRunner()
    source, grown = tmp_path / "source", tmp_path / "grown"
    assert runner.invoke(cli, train_args(source, 2), catch_exceptions=False).exit_code == 0
    result = runner.invoke(cli, ["grow", str(source), "-o", str(grown), option, "0,1,2"])
    assert result.exit_code == 0, result.output
    before, after = load_model(source / "latest.safetensors"), load_model(grown / "latest.safetensors")
    assert getattr(after.config, field) == (0, 1, 2)
    assert len(after.state_dict()) > len(before.state_dict())
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 21, 30)))
    torch.manual_seed(5)
    expected = before.elbo_terms(x)
    torch.manual_seed(5)
    actual = after.elbo_terms(x)
    for name, value in expected.items():
        if not name.startswith("_"):
            assert torch.equal(actual[name], value), name  # the same function, bit for bit
    source_state = torch.load(source / "checkpoint.pt", weights_only=True)
    grown_state = torch.load(grown / "checkpoint.pt", weights_only=True)
    assert grown_state["step"] == source_state["step"] == 2
    old_moments = source_state["optimizer"]["state"]
    assert len(grown_state["optimizer"]["state"]) == len(old_moments)  # the new blocks start without moments
    assert grown_state["warmup_start"] == 2

    # Training resumes from the grown run, and the new blocks' zero convolutions
    # learn from the first step on, in every weight (not only through a gain).
    def outer_weights(run):
        model = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
        return [value for name, value in model.items() if name.endswith("outer.weight")]

    assert len(outer_weights(grown)) == new_blocks
    assert all(not weight.any() for weight in outer_weights(grown))
    result = runner.invoke(cli, train_args(grown, 3), catch_exceptions=False)
    assert "resuming at step 2" in result.output
    assert all((weight != 0).float().mean() > 0.9 for weight in outer_weights(grown))
    # ... at the first rate of a fresh warm-up, not at the rate the source had reached.
    resumed = torch.load(grown / "checkpoint.pt", weights_only=True)
    settings = json.loads(resumed["settings"])
    (group,) = resumed["optimizer"]["param_groups"]
    first_rate = settings["lr"] / settings["warmup_steps"]
    assert group["lr"] == pytest.approx(first_rate)
    assert source_state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2 * first_rate)
    assert [r["kind"] for r in records(grown)].count("grow") == 1


def test_moving_a_levels_z_keeps_every_other_tensor_and_training_continues(tmp_path):
    runner = CliRunner()
    source, moved = tmp_path / "source", tmp_path / "moved"
    assert runner.invoke(cli, train_args(source, 2), catch_exceptions=False).exit_code == 0
    result = runner.invoke(cli, ["grow", str(source), "-o", str(moved), "--z-strides", "4,4,2"])
    assert result.exit_code == 0, result.output
    before, after = load_model(source / "latest.safetensors"), load_model(moved / "latest.safetensors")
    assert after.config.z_strides == (4, 4, 2)
    old, new = before.state_dict(), after.state_dict()
    latent_networks = ("posterior_net", "prior_from_coarse", "prior_from_prev", "context_from_z")
    changing = tuple(f"levels.2.{network}." for network in latent_networks)
    for name, tensor in new.items():
        if name in old:
            assert torch.equal(tensor, old[name]), name
        else:
            assert name.startswith(changing), name  # only the moved latent's networks gain layers
    dropped = set(old) - set(new)
    assert dropped and all(name.startswith(changing) for name in dropped)
    source_state = torch.load(source / "checkpoint.pt", weights_only=True)
    moved_state = torch.load(moved / "checkpoint.pt", weights_only=True)
    kept = sum(1 for name, _ in after.named_parameters() if name in dict(before.named_parameters()))
    assert len(moved_state["optimizer"]["state"]) == kept < len(source_state["optimizer"]["state"])
    result = runner.invoke(cli, train_args(moved, 3), catch_exceptions=False)
    assert "resuming at step 2" in result.output
    assert torch.load(moved / "checkpoint.pt", weights_only=True)["step"] == 3


def test_growing_refuses_a_taken_folder_and_a_wrong_shape(tmp_path):
    runner = CliRunner()
    source = tmp_path / "source"
    assert runner.invoke(cli, train_args(source, 1), catch_exceptions=False).exit_code == 0
    taken = runner.invoke(cli, ["grow", str(source), "-o", str(source), "--head-blocks", "0,0,1"])
    assert taken.exit_code != 0 and "already holds a run" in taken.output
    wrong = runner.invoke(cli, ["grow", str(source), "-o", str(tmp_path / "g"), "--head-blocks", "1,1"])
    assert wrong.exit_code != 0 and "head_blocks needs one count per level" in wrong.output
    neither = runner.invoke(cli, ["grow", str(source), "-o", str(tmp_path / "g")])
    assert neither.exit_code != 0 and "--head-blocks, --trunk-blocks, --z-strides or several" in neither.output
    garbled = runner.invoke(cli, ["grow", str(source), "-o", str(tmp_path / "g"), "--trunk-blocks", "0,x,1"])
    assert garbled.exit_code != 0 and "--trunk-blocks must be comma-separated integers" in garbled.output
    assert not (tmp_path / "g" / "checkpoint.pt").exists()


def test_a_run_resumes_from_the_shipped_copy_of_its_average(tmp_path):
    """A committed run keeps only its checkpoint when its moving average was shipped:
    the average is then read from the package (matched by fingerprint), never guessed."""
    from selfvae_codec.models.io import read_metadata
    from selfvae_codec.models.pretrained import PRETRAINED_DIR, registry
    from selfvae_codec.training.trainer import stored_average

    shipped = registry()["default-float"]
    average = stored_average(tmp_path, {"ema_fingerprint": shipped["fingerprint"]})
    weights = PRETRAINED_DIR / shipped["file"]
    assert read_metadata(weights)["fingerprint"] == shipped["fingerprint"]
    from safetensors.torch import load_file

    expected = load_file(str(weights))
    assert average is not None and set(average) == set(expected)
    assert all(torch.equal(average[name], expected[name]) for name in expected)
    assert stored_average(tmp_path, {"ema_fingerprint": "0" * 64}) is None


def test_a_second_validation_set_is_logged_beside_the_first(tmp_path):
    out = tmp_path / "two_sets"
    result = CliRunner().invoke(cli, [*train_args(out, 2), "--extra-val-dir", str(DATA)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    kinds = [r["kind"] for r in records(out)]
    assert kinds.count("val") == kinds.count("val_data") == 1
    assert kinds.count("val_ema") == kinds.count("val_ema_data") == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ema_decay", 1.0, "--ema-decay must be in"),
        ("native_fraction", 1.5, "--native-fraction must be in"),
        ("jpeg_max_scale", 0.0, "--jpeg-max-scale must be in"),
        ("coarse_weight", -0.1, "--coarse-weight must be >= 0"),
        ("conditional_weight", -1.0, "--conditional-weight must be >= 0"),
        ("clean_weight", 0.0, "--clean-weight must be positive"),
        ("minutes", 0.0, "--minutes must be positive"),
    ],
)
def test_training_settings_refuse_values_out_of_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings(train_dirs=[], out_dir="", **{field: value})


def test_a_run_from_a_crop_file_trains_within_its_minutes_and_writes_weights_and_log(tmp_path):
    """The GPU recipe on the CPU: `crops` packs regions of the photos into one file;
    `train` takes it in place of the folders and stops at its wall-clock budget,
    leaving the weights and the log."""
    crop_file = tmp_path / "crops.npz"
    result = CliRunner().invoke(cli, ["crops", str(DATA), "-o", str(crop_file), "--megabytes", "0.05", "--side", "48"])
    assert result.exit_code == 0, result.output
    from selfvae_codec.training.crops import read_crop_file

    regions, is_jpeg = read_crop_file(crop_file)
    assert crop_file.stat().st_size >= 50_000 and all(r.shape == (48, 48, 3) and r.dtype == np.uint8 for r in regions)
    assert len(is_jpeg) == len(regions)
    again = CliRunner().invoke(cli, ["crops", str(DATA), "-o", str(crop_file)])
    assert again.exit_code != 0 and "exists" in again.output

    out = tmp_path / "run"
    args = train_args(out, 1000)
    args[1] = str(crop_file)
    started = time.monotonic()
    result = CliRunner().invoke(cli, [*args, "--minutes", "0.05", "--log-every", "1"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 60
    step = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    assert 0 < step < 1000
    assert load_model(out / "latest.safetensors") is not None
    assert any(r["kind"] == "train" for r in records(out))
    mixed = CliRunner().invoke(cli, [*train_args(tmp_path / "other", 2)[:2], str(crop_file), *train_args(out, 2)[2:]])
    assert mixed.exit_code != 0 and "not both" in mixed.output
