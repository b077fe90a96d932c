"""The research commands: train, evaluate, and the developers' grow and publish."""

from __future__ import annotations

import json
import sys

import click

from ..errors import CodecError
from .common import DEVICE_OPTION, MODEL_OPTION, THREADS_OPTION, CliError, shared_options


@click.command()
@click.argument("train_dirs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Run folder: checkpoint, log, weights.")
@click.option("--val", "val_dir", type=click.Path(exists=True), help="Held-out folder for periodic validation.")
@click.option("--steps", default=100_000, show_default=True, help="Train until this many optimiser steps.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--crop", default=128, show_default=True, help="Random crop size (pixels).")
@click.option("--val-crop", default=256, show_default=True, help="Validation crop size (one per image).")
@click.option("--lr", default=2e-3, show_default=True, help="AdaMax learning rate after warm-up.")
@click.option(
    "--decay-from",
    type=click.IntRange(min=0),
    default=None,
    help="From this step the learning rate falls linearly towards zero at --steps (default: constant).",
)
@click.option("--free-bits", default=0.05, show_default=True, help="Free bits per z element (nats).")
@click.option(
    "--ema-decay",
    default=0.999,
    show_default=True,
    type=click.FloatRange(0.0, 1.0, max_open=True),
    help="Moving average of the weights, validated and saved to latest.safetensors (0: off).",
)
@click.option(
    "--native-fraction",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="Share of crops taken at native resolution; the rest are downscaled by 0.6-1 to hide JPEG artefacts.",
)
@click.option("--val-every", default=1000, show_default=True)
@click.option("--checkpoint-every", default=250, show_default=True)
@click.option("--config", "config_json", default=None, help="Model config as JSON, or a path to a JSON file.")
@click.option("--threads", default=1, show_default=True, help="torch threads (1 while you work beside it).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--compile",
    "use_compile",
    is_flag=True,
    help="torch.compile the training step: 1.4x faster in training here, after minutes of compiling.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
def train(
    train_dirs,
    out_dir,
    val_dir,
    steps,
    batch_size,
    crop,
    val_crop,
    lr,
    decay_from,
    free_bits,
    ema_decay,
    native_fraction,
    val_every,
    checkpoint_every,
    config_json,
    threads,
    device,
    seed,
    use_compile,
    no_progress,
) -> None:
    """Train a model on folders of images; resumes from OUT/checkpoint.pt if present.

    Ctrl-C (or SIGTERM) saves a checkpoint. Under `torchrun --nproc_per_node N` the
    same command trains with DistributedDataParallel.
    """
    from pathlib import Path

    from ..training.trainer import Trainer, TrainSettings

    config = {}
    if config_json:
        text = Path(config_json).read_text() if Path(config_json).is_file() else config_json
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise CliError(f"--config is neither a JSON file nor JSON: {error}") from error
    settings = TrainSettings(
        train_dirs=list(train_dirs),
        out_dir=out_dir,
        val_dir=val_dir,
        steps=steps,
        batch_size=batch_size,
        crop=crop,
        val_crop=val_crop,
        lr=lr,
        decay_from=decay_from,
        free_bits=free_bits,
        ema_decay=ema_decay,
        native_fraction=native_fraction,
        val_every=val_every,
        checkpoint_every=checkpoint_every,
        threads=threads,
        device=device,
        seed=seed,
        compile=use_compile,
        progress=not no_progress,
        config=config,
    )
    if decay_from is not None and decay_from >= steps:
        raise CliError(f"--decay-from ({decay_from}) must be below --steps ({steps})")
    trainer = Trainer(settings)
    if trainer.rank == 0:
        what = "resuming at step" if trainer.resumed else "starting at step"
        click.echo(f"{what} {trainer.step}; checkpoints in {out_dir}", err=True)
    try:
        trainer.run()
    finally:
        trainer.close()


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
    folders). Images the codec would refuse are reported and skipped; the rest are scored."""
    import torch
    from tqdm import tqdm

    from ..codec.api import resolve_device
    from ..codec.images import list_images, load_image
    from ..models.pretrained import load_named_model
    from ..training.evaluate import evaluate_image, write_scores_csv

    files = list_images(folders)[:limit]
    model = load_named_model(model_name, device=str(resolve_device(device)))
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
        raise CliError(f"none of the {len(files)} image(s) could be scored")
    if csv_path:
        write_scores_csv(csv_path, scores)
    count = len(scores)
    terms = {t: sum(s.terms_bpd[t] for s in scores) / count for t in scores[0].terms_bpd}
    click.echo("terms (bpd): " + ", ".join(f"{k} {v:.4f}" for k, v in terms.items()), err=True)
    click.echo(
        f"{count} images: negative ELBO {sum(s.elbo_bpd for s in scores) / count:.4f} bpd, "
        f"importance-weighted ({samples} samples) {sum(s.iw_bpd for s in scores) / count:.4f} bpd"
        + (f"; {failed} image(s) could not be read" if failed else "")
    )
    return 1 if failed else 0


@click.command(hidden=True)
@click.argument("weights", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", default="default", show_default=True)
@click.option("--description", required=True)
@click.option("--validation-bpd", type=float, default=None)
def publish(weights, name, description, validation_bpd) -> None:
    """(developers) Ship WEIGHTS inside the package as pretrained model NAME."""
    from ..models.pretrained import publish as publish_model

    entry = publish_model(weights, name, description, validation_bpd=validation_bpd)
    click.echo(json.dumps(entry, indent=2))


@click.command(hidden=True)
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "target", required=True, type=click.Path(), help="New run folder.")
@click.option("--head-blocks", help="Residual blocks per likelihood head, per level: e.g. 0,0,1.")
@click.option("--trunk-blocks", help="Wide residual blocks after each likelihood trunk, per level: e.g. 0,1,2.")
def grow(source, target, head_blocks, trunk_blocks) -> None:
    """(developers) Grow the run SOURCE into a larger model with the same output;
    `train -o OUT` continues it."""
    from ..models.selfvae import parameter_count
    from ..training.grow import grow_run

    blocks = {}
    for name, text in (("head_blocks", head_blocks), ("trunk_blocks", trunk_blocks)):
        if text is None:
            continue
        try:
            blocks[name] = tuple(int(count) for count in text.split(","))
        except ValueError as error:
            option = "--" + name.replace("_", "-")
            raise CliError(f"{option} must be comma-separated integers, got {text!r}") from error
    if not blocks:
        raise CliError("give --head-blocks, --trunk-blocks or both")
    try:
        model = grow_run(source, target, **blocks)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        raise CliError(str(error)) from error
    click.echo(f"grown run in {target}: {parameter_count(model):,} parameters")


COMMANDS = [train, evaluate, grow, publish]
