"""What the codec and the research commands share: the error type and options."""

from __future__ import annotations

import click


class CliError(click.ClickException):
    """A clear one-line error with exit status 1."""

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


MODEL_OPTION = click.option(
    "--model",
    "model_name",
    default=None,
    help="Pretrained model name or a .safetensors path (default: the shipped default; decode: the file's).",
)
DEVICE_OPTION = click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
FORCE_OPTION = click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
THREADS_OPTION = click.option(
    "--threads",
    type=click.IntRange(1, 255),
    default=None,
    help="torch threads (default: the cores no other process is busy on now).",
)


def load_codec(model_name, device, threads, tile_size=None):
    """The codec a command runs (torch is imported here, not before)."""
    from ..codec.api import DEFAULT_TILE, Codec

    return Codec(model_name, device=device, threads=threads, tile_size=tile_size or DEFAULT_TILE)


def shared_options(*options):
    """Apply several click options at once, in the order given."""

    def apply(function):
        for option in reversed(options):
            function = option(function)
        return function

    return apply
