"""The `selfvae-codec` command line."""

from __future__ import annotations

import json
import sys

import click


class CliError(click.ClickException):
    """A clear one-line error with a non-zero exit."""

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="selfvae-codec")
def cli() -> None:
    """selfvae-codec: a learned image codec built on a self-supervised VAE."""


@cli.command()
@click.argument("train_dirs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Run folder: checkpoint, log, weights.")
@click.option("--val", "val_dir", type=click.Path(exists=True), help="Held-out folder for periodic validation.")
@click.option("--steps", default=100_000, show_default=True, help="Train until this many optimiser steps.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--crop", default=64, show_default=True, help="Random crop size (pixels).")
@click.option("--lr", default=2e-3, show_default=True, help="AdaMax learning rate after warm-up.")
@click.option("--free-bits", default=0.05, show_default=True, help="Free bits per z element (nats).")
@click.option("--val-every", default=1000, show_default=True)
@click.option("--checkpoint-every", default=250, show_default=True)
@click.option("--config", "config_json", default=None, help="Model config as JSON, or a path to a JSON file.")
@click.option("--threads", default=1, show_default=True, help="torch threads (1 while you work beside it).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
def train(
    train_dirs,
    out_dir,
    val_dir,
    steps,
    batch_size,
    crop,
    lr,
    free_bits,
    val_every,
    checkpoint_every,
    config_json,
    threads,
    device,
    seed,
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
        lr=lr,
        free_bits=free_bits,
        val_every=val_every,
        checkpoint_every=checkpoint_every,
        threads=threads,
        device=device,
        seed=seed,
        progress=not no_progress,
        config=config,
    )
    trainer = Trainer(settings)
    if trainer.rank == 0:
        what = "resuming at step" if trainer.resumed else "starting at step"
        click.echo(f"{what} {trainer.step}; checkpoints in {out_dir}", err=True)
    trainer.run()


def main() -> None:
    try:
        cli.main(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
