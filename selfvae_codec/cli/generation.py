"""The model as a tool beyond coding: `upscale` (2x, 4x, 8x from the model's levels)
and `sample` (a grid of unconditional samples)."""

from __future__ import annotations

import re

import click

from ..errors import count_of
from .batch import STDIO, Reporter, writer
from .common import DEVICE_OPTION, FORCE_OPTION, MODEL_OPTION, THREADS_OPTION, CliError, load_codec, shared_options

METHOD_OPTION = click.option(
    "--method",
    type=click.Choice(["mean", "mode", "sample"]),
    help="How each generated level is filled in: its mean, its mode, or a sample (with --seed).",
)
SEED_OPTION = click.option("--seed", type=int, default=0, show_default=True, help="Seed of --method sample.")
GENERATION_OPTIONS = shared_options(
    METHOD_OPTION, SEED_OPTION, MODEL_OPTION, DEVICE_OPTION, THREADS_OPTION, FORCE_OPTION
)


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'WxH' as (width, height), or a one-line error."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise click.BadParameter(f"must look like 640x480, got {text!r}", param_hint="--size")
    return int(match[1]), int(match[2])


def _check_image_output(output: str, force: bool, source: str | None, channels: int | None = None) -> None:
    from ..codec.images import check_output, output_format

    if output != STDIO:
        output_format(output, channels)
        check_output(output, force, source)


@click.command()
@click.argument("image")
@click.option("-o", "--output", default=None, help="Output image ('-': PNG on standard output; default NAME_xF.png).")
@click.option("--factor", type=int, default=2, show_default=True, help="2, 4, 8, ...: up to 2 per model level.")
@click.option("--size", default=None, help="Crop to this original size, WxH (it must downscale to the input).")
@GENERATION_OPTIONS
@click.option("--quiet", is_flag=True, help="No summary line, no progress bar.")
def upscale(image, output, factor, size, method, seed, model_name, device, threads, force, quiet) -> None:
    """Make IMAGE FACTOR times larger with the model: the image is taken as the
    model's own downscale of a larger one, and the levels above it are generated."""
    import time
    from pathlib import Path

    from ..codec.images import encode_image_file, output_format, write_output

    if factor < 2 or factor & (factor - 1):
        raise click.BadParameter(f"must be a power of two (2, 4, 8, ...), got {factor}", param_hint="--factor")
    crop = parse_size(size)
    if image != STDIO and not Path(image).is_file():
        raise CliError(f"input file not found: {image}")
    if output is None:
        output = STDIO if image == STDIO else str(Path(image).with_name(f"{Path(image).stem}_x{factor}.png"))
    _check_image_output(output, force, None if image == STDIO else image)
    codec = load_codec(model_name, device, threads)
    report = Reporter(quiet, data_to_stdout=output == STDIO)
    source = click.get_binary_stream("stdin").read() if image == STDIO else image
    started = time.perf_counter()
    try:
        result = codec.upscale(
            source,
            factor,
            method or "mean",
            seed,
            crop,
            progress=lambda done, total: report.show_progress(f"upscaling {factor}x", done / total),
        )
    finally:
        report.close()
    data, _ = encode_image_file(result, "PNG" if output == STDIO else output_format(output), _no_metadata())
    write_output(writer(output), data)
    report.line(
        f"upscaled {'stdin' if image == STDIO else image} {factor}x -> {'stdout' if output == STDIO else output}: "
        f"{result.shape[1]}x{result.shape[0]}, {time.perf_counter() - started:.2f} s "
        f"({count_of(codec.threads, 'thread')}; model loaded in {codec.load_seconds:.2f} s)"
    )


def _no_metadata():
    from ..bitstream import ImageMetadata

    return ImageMetadata()


@click.command()
@click.option("-o", "--output", required=True, help="Output image: a grid of the samples ('-': PNG on stdout).")
@click.option("-n", "--count", type=click.IntRange(1, 256), default=8, show_default=True, help="How many samples.")
@click.option("--size", default="256x256", show_default=True, help="Size of each sample, WxH.")
@click.option("--columns", type=click.IntRange(min=1), default=None, help="Samples per row (default: near square).")
@GENERATION_OPTIONS
@click.option("--quiet", is_flag=True, help="No summary line.")
def sample(output, count, size, columns, method, seed, model_name, device, threads, force, quiet) -> None:
    """Draw unconditional samples from the model: u from its prior, then every level."""
    import math
    import time

    import numpy as np

    from ..codec.images import encode_image_file, output_format, write_output

    width, height = parse_size(size)
    _check_image_output(output, force, None)
    codec = load_codec(model_name, device, threads)
    started = time.perf_counter()
    samples = codec.sample(count, (width, height), method or "sample", seed)
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    for index, picture in enumerate(samples):
        top, left = (index // columns) * height, (index % columns) * width
        grid[top : top + height, left : left + width] = picture
    data, _ = encode_image_file(grid, "PNG" if output == STDIO else output_format(output), _no_metadata())
    write_output(writer(output), data)
    Reporter(quiet, data_to_stdout=output == STDIO).line(
        f"sampled {count_of(count, 'image')} of {width}x{height} -> {'stdout' if output == STDIO else output} "
        f"({rows}x{columns} grid), {time.perf_counter() - started:.2f} s"
    )


COMMANDS = [upscale, sample]
