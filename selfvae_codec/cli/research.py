"""The research commands: train, crops, evaluate, and the developers' grow, publish and distil."""

from __future__ import annotations

import gc
import json
import sys

import click

from ..errors import CodecError, count_of
from .common import DEVICE_OPTION, FORCE_OPTION, MODEL_OPTION, THREADS_OPTION, CliError, shared_options


def settings_options(function):
    """One click option for every TrainSettings field with a help text."""
    from dataclasses import MISSING, fields

    from ..training.settings import TrainSettings

    for item in reversed(fields(TrainSettings)):
        if "help" not in item.metadata:
            continue
        flag = "--" + item.name.replace("_", "-")
        default = None if item.default is MISSING else item.default
        if isinstance(default, bool):
            option = click.option(flag, item.name, is_flag=True, help=item.metadata["help"])
        else:
            option = click.option(
                flag,
                item.name,
                default=default,
                show_default=default is not None,
                help=item.metadata["help"],
                **item.metadata["option"],
            )
        function = option(function)
    return function


@click.command()
@click.argument("train_dirs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Run folder: checkpoint, log, weights.")
@click.option("--val", "val_dir", type=click.Path(exists=True), help="Held-out folder for periodic validation.")
@click.option("--config", "config_json", default=None, help="Model config as JSON, or a path to a JSON file.")
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
@settings_options
def train(train_dirs, out_dir, val_dir, config_json, no_progress, **settings) -> None:
    """Train a model on folders of images; resumes from OUT/checkpoint.pt if present.

    Ctrl-C (or SIGTERM) saves a checkpoint. Under `torchrun --nproc_per_node N` the
    same command trains with DistributedDataParallel.
    """
    from pathlib import Path

    from ..training.settings import TrainSettings

    config = {}
    if config_json:
        text = Path(config_json).read_text() if Path(config_json).is_file() else config_json
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise CliError(f"--config is neither a JSON file nor JSON: {error}") from error
    try:
        settings = TrainSettings(
            list(train_dirs), out_dir, val_dir, progress=not no_progress, config=config, **settings
        )
    except ValueError as error:
        raise CliError(str(error)) from error
    from ..training.trainer import Trainer

    try:
        trainer = Trainer(settings)
    except ValueError as error:
        raise CliError(str(error)) from error
    if trainer.rank == 0:
        what = "resuming at step" if trainer.resumed else "starting at step"
        click.echo(f"{what} {trainer.step}; checkpoints in {out_dir}", err=True)
    try:
        trainer.run()
    finally:
        trainer.close()
        # Release the DDP replica's tensors while the interpreter is fully alive: gloo
        # work objects that still hold them at interpreter shutdown can abort (SIGABRT).
        del trainer
        gc.collect()


@click.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The crop file to write (.npz).")
@click.option("--megabytes", type=click.FloatRange(min=0.01), default=30.0, show_default=True, help="Its size.")
@click.option("--side", type=click.IntRange(32, 4096), default=256, show_default=True, help="Side of each region.")
@click.option(
    "--jpeg-scale",
    type=click.FloatRange(0.05, 1.0),
    default=0.5,
    show_default=True,
    help="JPEG photos are downscaled by this first (hides their blocks, as train's --jpeg-max-scale).",
)
@click.option(
    "--clean-weight",
    type=click.FloatRange(min=0.01),
    default=4.0,
    show_default=True,
    help="How much more often a pixel of a non-JPEG photo is picked than a JPEG one.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random regions.")
@shared_options(FORCE_OPTION)
def crops(folders, output, megabytes, side, jpeg_scale, clean_weight, seed, force) -> None:
    """Write random regions of folders of photos into one compact file that `train`
    takes in place of the folders: a run on another machine (a GPU) needs only it."""
    from pathlib import Path

    from ..training.crops import write_crop_file

    if not output.endswith(".npz"):
        raise CliError(f"{output}: a crop file's name ends in .npz (that is how train recognises it)")
    if Path(output).exists() and not force:
        raise CliError(f"{output} exists (-f overwrites)")
    try:
        count = write_crop_file(list(folders), output, megabytes, side, jpeg_scale, clean_weight, seed)
    except ValueError as error:
        raise CliError(str(error)) from error
    size = Path(output).stat().st_size
    click.echo(f"wrote {count} regions of {side}x{side} to {output} ({size / 1e6:.1f} MB)")


@click.command()
@click.argument("folders", nargs=-1, required=True)
@click.option(
    "--samples", type=click.IntRange(min=1), default=16, show_default=True, help="Posterior samples per image."
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N images.")
@click.option("--tile-size", type=click.IntRange(16, 65535), default=512, show_default=True, help="Scoring tile side.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Write per-image rows here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@shared_options(MODEL_OPTION, DEVICE_OPTION, THREADS_OPTION)
@click.option("--seed", default=0, show_default=True)
def evaluate(folders, samples, limit, tile_size, csv_path, quiet, model_name, device, threads, seed) -> int:
    """Negative ELBO and importance-weighted bits per dimension of images (files or
    folders). Images the codec would refuse are reported and skipped; the rest are scored.
    A shipped exact model is scored through the float model it was converted from."""
    import torch
    from tqdm import tqdm

    from ..codec.images import list_images, load_image
    from ..codec.runtime import resolve_device
    from ..models.pretrained import float_source, load_named_model
    from ..training.evaluate import evaluate_image, write_scores_csv

    files = list_images(folders)[:limit]
    model = load_named_model(float_source(model_name), device=str(resolve_device(device)))
    if model.config.exact:
        raise CliError("evaluate needs a float model: an exact model's ELBO is measured by coding (benchmarks/)")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    scores, failed = [], 0
    for path in tqdm(files, unit="image", file=sys.stderr, disable=True if quiet else None, delay=1.0):
        try:
            image = load_image(path).pixels
        except CodecError as error:
            failed += 1
            click.echo(f"error: {path}: {error}", err=True)
            continue
        scores.append(evaluate_image(model, image, samples, tile=tile_size, name=path.name))
    if not scores:
        raise CliError(f"none of the {count_of(len(files), 'image')} could be scored")
    if csv_path:
        write_scores_csv(csv_path, scores)
    count = len(scores)
    terms = {t: sum(s.terms_bpd[t] for s in scores) / count for t in scores[0].terms_bpd}
    click.echo("terms (bpd): " + ", ".join(f"{k} {v:.4f}" for k, v in terms.items()), err=True)
    click.echo(
        f"{count_of(count, 'image')}: negative ELBO {sum(s.elbo_bpd for s in scores) / count:.4f} bpd, "
        f"importance-weighted ({samples} samples) {sum(s.iw_bpd for s in scores) / count:.4f} bpd"
        + (f"; {count_of(failed, 'image')} could not be read" if failed else "")
    )
    return 1 if failed else 0


@click.command()
@click.argument("weights", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The exact model's .safetensors.")
@click.option(
    "--keep-integers-of",
    "keep_name",
    metavar="MODEL",
    help="An exact model WEIGHTS was distilled from (a shipped name or .safetensors): every layer left "
    "untrained keeps its integers, so the files' latents stay the same.",
)
@FORCE_OPTION
def convert(weights, output, keep_name, force) -> None:
    """Convert trained float WEIGHTS into an exact (integer) model, whose files decode
    on every machine. Files of a float model decode only where its floats are
    reproduced (same torch build, instruction set and thread count)."""
    from pathlib import Path

    from ..models.exact import to_exact
    from ..models.io import load_model, save_model
    from ..models.pretrained import load_named_model

    if Path(output).exists() and not force:
        raise CliError(f"{output} exists (use -f to overwrite)")
    try:
        model = load_model(weights)
        keep = load_named_model(keep_name) if keep_name else None
        exact = to_exact(model, keep)
    except (CodecError, ValueError) as error:
        raise CliError(str(error)) from error
    fingerprint = save_model(exact, output)
    click.echo(f"wrote {output}: exact model {fingerprint[:12]} (from {model.fingerprint()[:12]})")


@click.command(hidden=True)
@click.argument("weights", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", default="default", show_default=True)
@click.option("--description", required=True)
@click.option("--validation-bpd", type=float, default=None)
@click.option("--exact", is_flag=True, help="Ship the exact (integer) conversion of the float WEIGHTS.")
@click.option(
    "--rd-summary",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A lossy model's benchmark summary.json: its rs2 (and conditional) points are recorded per quality.",
)
def publish(weights, name, description, validation_bpd, exact, rd_summary) -> None:
    """(developers) Ship WEIGHTS inside the package as pretrained model NAME."""
    from pathlib import Path

    from ..models.pretrained import RATED_MODES
    from ..models.pretrained import publish as publish_model

    points = {}
    if rd_summary:
        summary = json.loads(Path(rd_summary).read_text())
        points = {f"{mode}_points": quality_points(summary, mode) or None for mode in RATED_MODES}
        if not points["rs2_points"]:
            raise CliError(f"{rd_summary} has no rs2 points at quality settings")
    entry = publish_model(weights, name, description, exact=exact, validation_bpd=validation_bpd, **points)
    click.echo(json.dumps(entry, indent=2))


def quality_points(summary: dict, mode: str) -> dict[str, dict[str, float]]:
    """A benchmark summary's mean bpp and PSNR of `mode` at each quality setting."""
    return {
        point["setting"].removeprefix("q"): {"bpp": round(point["bpp"], 4), "psnr": round(point["psnr_rgb"], 2)}
        for point in summary["selfvae_points"]
        if point["codec"] == f"selfvae-{mode}" and point["setting"].startswith("q")
    }


@click.command(hidden=True)
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "target", required=True, type=click.Path(), help="New run folder.")
@click.option("--head-blocks", help="Residual blocks per likelihood head, per level: e.g. 0,0,1.")
@click.option("--trunk-blocks", help="Wide residual blocks after each likelihood trunk, per level: e.g. 0,1,2.")
@click.option("--z-strides", help="How many times smaller each z_k is than y_{k+1}, per level: e.g. 4,4,2.")
def grow(source, target, head_blocks, trunk_blocks, z_strides) -> None:
    """(developers) Grow the run SOURCE into a larger model (with the same output
    when only blocks are added); `train -o OUT` continues it."""
    from ..models.selfvae import parameter_count
    from ..training.grow import grow_run

    changes = {}
    for name, text in (("head_blocks", head_blocks), ("trunk_blocks", trunk_blocks), ("z_strides", z_strides)):
        if text is None:
            continue
        try:
            changes[name] = tuple(int(value) for value in text.split(","))
        except ValueError as error:
            option = "--" + name.replace("_", "-")
            raise CliError(f"{option} must be comma-separated integers, got {text!r}") from error
    if not changes:
        raise CliError("give --head-blocks, --trunk-blocks, --z-strides or several")
    try:
        model = grow_run(source, target, **changes)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        raise CliError(str(error)) from error
    click.echo(f"grown run in {target}: {parameter_count(model):,} parameters")


@click.command(hidden=True)
@click.argument("train_dirs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--teacher", default="lossy", show_default=True, help="A lossy model: pretrained name or .safetensors.")
@click.option("--trunk-blocks", required=True, help="Trunk blocks the student keeps, per level: e.g. 1,3,3.")
@click.option("--train-levels", help="Levels (1-based) whose decoding trains, e.g. 3 (default: the shortened ones).")
@click.option("--quality-weights", help="How often each quality is drawn, e.g. 1,1,1,1,2,3 (default: alike).")
@click.option("--quality-film", is_flag=True, help="Tell the student's decoding the quality (config.quality_film).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The student's .safetensors.")
@click.option("--val", "val_dirs", multiple=True, type=click.Path(exists=True), help="Held-out folder (repeatable).")
@click.option("--minutes", type=click.FloatRange(min=0), default=60.0, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True)
@click.option("--crop", type=click.IntRange(32), default=128, show_default=True, help="Training crops' side.")
@click.option("--val-crop", type=click.IntRange(32), default=256, show_default=True, help="Held-out crops' side.")
@click.option("--seed", type=int, default=0, show_default=True)
@THREADS_OPTION
@FORCE_OPTION
def distil(
    train_dirs,
    teacher,
    trunk_blocks,
    train_levels,
    quality_weights,
    quality_film,
    output,
    val_dirs,
    minutes,
    lr,
    batch,
    crop,
    val_crop,
    seed,
    threads,
    force,
) -> None:
    """(developers) Train a lighter lossy decoder from TEACHER on photos in TRAIN_DIRS:
    fewer trunk blocks, the same latents and rate (training/distil.py). An exact
    teacher is distilled through its float twin; `convert` makes the student exact.
    Prints rs2's PSNR on the --val crops (one centre crop per photo) per quality."""
    from pathlib import Path

    import torch

    from ..codec.images import list_images
    from ..models.exact import float_twin
    from ..models.io import save_model
    from ..models.pretrained import load_named_model
    from ..training.data import RandomCropSampler, training_sources, validation_crops
    from ..training.distil import decoding_parameters, fine_tune, reconstruction_psnr, shortened

    if Path(output).exists() and not force:
        raise CliError(f"{output} exists (use -f to overwrite)")
    try:
        blocks = tuple(int(value) for value in trunk_blocks.split(","))
        levels = None if train_levels is None else [int(value) - 1 for value in train_levels.split(",")]
        weights = None if quality_weights is None else [float(value) for value in quality_weights.split(",")]
    except ValueError as error:
        raise CliError("--trunk-blocks, --train-levels and --quality-weights take comma-separated numbers") from error
    torch.set_num_threads(threads or 1)
    torch.manual_seed(seed)
    try:
        source = load_named_model(teacher)
        source = float_twin(source) if source.config.exact else source
        student = shortened(source, blocks, quality_film)
        parameters = decoding_parameters(student, source.config.trunk_blocks, levels)
        crops = [validation_crops(list_images([folder]), val_crop, per_image=1) for folder in val_dirs]
        sampler = RandomCropSampler(training_sources(list(train_dirs)), crop, seed, **DISTIL_DATA)
    except (CodecError, ValueError) as error:
        raise CliError(str(error)) from error
    qualities = list(range(source.config.qualities))

    def show(label: str, model) -> None:
        for folder, held_out in zip(val_dirs, crops, strict=True):
            scores = reconstruction_psnr(model, torch.from_numpy(held_out).long(), qualities)
            click.echo(f"{label} {folder}: " + ", ".join(f"q{q + 1} {db:.3f} dB" for q, db in scores.items()))

    show("teacher", source)
    if blocks != source.config.trunk_blocks:
        show("student at the start", student)

    def report(step: int, loss: float) -> None:
        if step % 100 == 0:
            click.echo(f"step {step}: PSNR of the batch {loss:.2f} dB")

    try:
        steps = fine_tune(student, parameters, sampler, 60 * minutes, lr, batch, report, quality_weights=weights)
    except ValueError as error:
        raise CliError(str(error)) from error
    save_model(student, output)
    show(f"student after {steps} steps", student)
    click.echo(f"wrote {output}")


@click.command("fit-u-context", hidden=True)
@click.argument("train_dirs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--teacher", default="lossy", show_default=True, help="A lossy model: pretrained name or .safetensors.")
@click.option("--width", type=click.IntRange(1), default=128, show_default=True, help="The context's channels.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The fitted .safetensors.")
@click.option("--val", "val_dirs", multiple=True, type=click.Path(exists=True), help="Held-out folder (repeatable).")
@click.option("--crops", "crop_count", type=click.IntRange(1), default=6000, show_default=True)
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=15.0, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True)
@click.option("--crop", type=click.IntRange(32), default=256, show_default=True, help="Crops' side.")
@click.option("--seed", type=int, default=0, show_default=True)
@THREADS_OPTION
@FORCE_OPTION
def fit_u_context(
    train_dirs, teacher, width, output, val_dirs, crop_count, minutes, lr, batch, crop, seed, threads, force
) -> None:
    """(developers) Fit a checkerboard context for u (config.u_context) to TEACHER's
    encoder on photos in TRAIN_DIRS, everything else frozen (training/u_context.py).
    An exact teacher is fitted through its float twin; `convert --keep-integers-of
    TEACHER` makes the result exact. Prints the bits of u on the --val crops (one
    centre crop per photo) per quality, before and after."""
    from pathlib import Path

    import torch

    from ..codec.images import list_images
    from ..models.exact import float_twin
    from ..models.io import save_model
    from ..models.pretrained import load_named_model
    from ..training.data import RandomCropSampler, training_sources, validation_crops
    from ..training.u_context import encoder_bases, training_bases, u_bits, with_u_context
    from ..training.u_context import fit_u_context as fit

    if Path(output).exists() and not force:
        raise CliError(f"{output} exists (use -f to overwrite)")
    torch.set_num_threads(threads or 1)
    torch.manual_seed(seed)
    try:
        source = load_named_model(teacher)
        source = float_twin(source) if source.config.exact else source
        model = with_u_context(source, width)
        held_out = [
            encoder_bases(source, torch.from_numpy(validation_crops(list_images([folder]), crop, per_image=1)).long())
            for folder in val_dirs
        ]
        sampler = RandomCropSampler(training_sources(list(train_dirs)), crop, seed, **DISTIL_DATA)
    except (CodecError, ValueError) as error:
        raise CliError(str(error)) from error
    bases = training_bases(source, sampler, crop_count)
    click.echo(f"the encoder's u of {len(bases)} training crops")

    def report(step: int, bits: float) -> None:
        if step % 200 == 0:
            click.echo(f"step {step}: {bits:.4f} bits per latent of u (the batch)")

    steps = fit(model, bases, 60 * minutes, lr, batch, seed, report)
    save_model(model, output)
    for folder, folder_bases in zip(val_dirs, held_out, strict=True):
        for quality in range(source.config.qualities):
            before, after = u_bits(source, folder_bases, quality), u_bits(model, folder_bases, quality)
            click.echo(
                f"{folder} q{quality + 1}: u {before / len(folder_bases):.1f} -> {after / len(folder_bases):.1f} "
                f"bits per crop ({100 * (after / before - 1):+.2f}%)"
            )
    click.echo(f"wrote {output} after {steps} steps")


# The crops distil trains on: clean photos weighted up, JPEG sources downscaled (as runs/clean).
DISTIL_DATA = {"jpeg_max_scale": 0.5, "clean_weight": 4.0, "native_fraction": 0.5}

COMMANDS = [train, crops, evaluate, convert, grow, publish, distil, fit_u_context]
