"""The `selfvae-codec` command line: the codec commands (encode, decode, info,
truncate) here, models in catalogue.py, upscale and sample in generation.py, the
research commands (train, evaluate, ...) in research.py.

Conventions, as in gzip, cwebp and cjxl:
- `-` is standard input or output; the summary line then goes to standard error.
- Without `-o`, the output sits beside the input (`a.png` <-> `a.svc`); `-d FOLDER`
  collects the outputs of many inputs. Outputs are never overwritten without
  `--force`, never the input itself, and are written whole or not at all.
- Every option and output is checked before the model is loaded.
- Errors are one line on standard error starting with `error:`. Exit status: 0 done,
  1 failed (for a batch: any file failed; the others are still coded), 2 usage
  error, 130 interrupted.

Torch is imported only by commands that run a model, so `info` and `models` start fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..bitstream import LOSSY_MODEL_MODES, MAX_ERROR, MAX_TILE_SIZE, MODES
from ..codec.images import DEFAULT_EFFORT, MAX_EFFORT
from ..errors import BadValueError, CodecError, OutputExistsError, count_of
from .batch import STDIO, Job, Reporter, any_to_code, plan_jobs, reader, run_jobs, writer
from .catalogue import COMMANDS as CATALOGUE_COMMANDS
from .common import DEVICE_OPTION, FORCE_OPTION, MODEL_OPTION, THREADS_OPTION, CliError, load_codec, shared_options
from .generation import COMMANDS as GENERATION_COMMANDS
from .research import COMMANDS as RESEARCH_COMMANDS


class CommandLine(click.Group):
    """A click group whose every failure is one `error:` line and a documented exit
    status, instead of click's multi-line usage text and its "Aborted!"."""

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)  # as declared: the codec commands first, then the rest

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        if not (sys.argv[1:] if args is None else args):  # the bare command: its help, as for --help
            args = ["--help"]
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as error:
            hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
            click.echo(f"error: {error.format_message()}{hint}", err=True)
            sys.exit(2)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except CodecError as error:  # a bad value is a usage error (2), the rest failures (1)
            hint = " (use --force to replace it)" if isinstance(error, OutputExistsError) else ""
            click.echo(f"error: {error}{hint}", err=True)
            sys.exit(2 if isinstance(error, BadValueError) else 1)
        except OSError as error:
            click.echo(f"error: {error.strerror or error}{f': {error.filename}' if error.filename else ''}", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=CommandLine, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="selfvae-codec")
def cli() -> None:
    """selfvae-codec: a learned image codec built on a self-supervised VAE."""


# -- options shared by several commands ---------------------------------------------

QUIET_OPTION = click.option("--quiet", is_flag=True, help="No summary line, no progress bar, no warnings.")
VERBOSE_OPTION = click.option("-v", "--verbose", is_flag=True, help="Also print the bytes of every section.")
OUTPUT_OPTIONS = (
    click.option("-o", "--output", default=None, help="Output file ('-': standard output); one input only."),
    click.option(
        "-d",
        "--out-dir",
        default=None,
        type=click.Path(file_okay=False),
        help="Folder for the outputs of many inputs (created; folders given as inputs are mirrored in it).",
    ),
)
SKIP_EXISTING_OPTION = click.option(
    "--skip-existing", is_flag=True, help="Leave inputs whose output exists (a batch can be run again)."
)


# -- the commands ---------------------------------------------------------------------


def _rates(size: int, width: int, height: int, channels: int) -> str:
    pixels = width * height
    return f"{size * 8 / pixels:.3f} bpp, {size * 8 / (pixels * channels):.3f} bits/subpixel"


def _section_lines(header) -> list[str]:
    pixels = header.width * header.height
    totals: dict[str, int] = {}
    for section in header.sections:
        totals[section.label] = totals.get(section.label, 0) + len(section.payload)
    return [f"  section {label:>4}: {size:>9} bytes  {size * 8 / pixels:.4f} bpp" for label, size in totals.items()]


def _summary(verb: str, job: Job, size: int, header, seconds: float, codec) -> str:
    """One line: what was coded, the file's size and rates, the time."""
    if codec is None:  # a file of PNG / WebP tiles only, decoded without the model
        work = "tiles stored as PNG / WebP, no model needed"
    else:
        threads = header.threads or codec.threads  # a file's 0: an exact model, run at the codec's count
        work = f"{count_of(threads, 'thread')}; model loaded in {codec.load_seconds:.2f} s"
    metadata = f" ({len(header.metadata_payload)} of them metadata)" if header.metadata_payload else ""
    setting = f" quality {header.quality}" if header.quality else ""
    setting += f" max error {header.max_error}" if header.max_error else ""
    if header.quality and header.latent_step != 1.0:  # a lossy model's steps, scaled (--target-bpp)
        setting += f" (steps x{header.latent_step:.2f})"
    return (
        f"{verb} {job.name} -> {'stdout' if job.destination == STDIO else job.destination}: "
        f"{header.width}x{header.height}x{header.channels}, mode {header.mode}{setting}, {size} bytes{metadata}, "
        f"{_rates(size, header.width, header.height, header.channels)}, {seconds:.2f} s "
        f"({work})"
    )


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@shared_options(*OUTPUT_OPTIONS)
@click.option(
    "--mode",
    type=click.Choice(list(MODES)),
    default="full",
    show_default=True,
    help="full is lossless; conditional, rs2 and rs1 trade quality for bits.",
)
@click.option(
    "-q",
    "--quality",
    type=int,
    metavar="1-9",
    default=None,
    help="rs2, rs1 and conditional (the lossy model, 1-6): 1 gives the smallest files, higher settings more "
    "bits and quality; `selfvae-codec models` lists each setting's rate. rs2 -q 7, 8, 9 write near-lossless "
    "full files (--max-error 6, 4, 2: about 37, 40, 45 dB).",
)
@click.option(
    "--target-bpp",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="rs2, rs1 and conditional (the lossy model): the largest file at or under this many bits per pixel.",
)
@click.option("--step", type=float, default=None, help="Latent quantisation step (expert: the latents' rate).")
@click.option("--tile-size", type=click.IntRange(16, MAX_TILE_SIZE), default=None, help="Tile side (default 512).")
@click.option("--strip", is_flag=True, help="Leave out the ICC profile, EXIF and XMP.")
@click.option(
    "--max-error",
    type=click.IntRange(0, MAX_ERROR),
    default=0,
    show_default=True,
    help="full: near-lossless, every subpixel within this many levels of the original (0: lossless).",
)
@click.option(
    "-e",
    "--effort",
    type=click.IntRange(1, MAX_EFFORT),
    default=DEFAULT_EFFORT,
    show_default=True,
    help="How hard the encoder tries: 1 fastest; from 3 on, full files adapt the model to the image "
    "and rs2 / rs1 files optimise their latents, longer at each level (slower).",
)
@shared_options(MODEL_OPTION, DEVICE_OPTION, THREADS_OPTION, FORCE_OPTION, SKIP_EXISTING_OPTION)
@shared_options(QUIET_OPTION, VERBOSE_OPTION)
def encode(
    inputs,
    output,
    out_dir,
    mode,
    quality,
    target_bpp,
    step,
    tile_size,
    strip,
    max_error,
    effort,
    model_name,
    device,
    threads,
    force,
    skip_existing,
    quiet,
    verbose,
):
    """Compress images (files, folders of images, or - for standard input) into .svc
    files: a.png -> a.svc unless -o or -d says otherwise."""
    from ..bitstream import unpack
    from ..codec.images import IMAGE_SUFFIXES
    from ..codec.runtime import check_step
    from ..models.pretrained import default_model_for

    if step is not None:
        check_step(step)
    if target_bpp is not None and (quality is not None or step is not None):
        raise click.UsageError("--target-bpp chooses the quality and the step: leave out -q and --step")
    if max_error and mode != "full":
        raise click.UsageError(f"--max-error applies to full files, not to {mode}")
    if target_bpp is not None and mode not in LOSSY_MODEL_MODES:
        raise click.UsageError(f"--target-bpp applies to {', '.join(LOSSY_MODEL_MODES)}, not to {mode} (lossless)")
    if output not in (None, STDIO) and Path(output).suffix.lower() in IMAGE_SUFFIXES:
        raise click.BadParameter(f"{output} names an image, but encode writes an .svc file", param_hint="-o")
    jobs = plan_jobs(inputs, output, out_dir, ".svc", IMAGE_SUFFIXES, force, skip_existing)
    report = Reporter(quiet, data_to_stdout=jobs[0].destination == STDIO)
    if not any_to_code(jobs):
        return run_jobs(jobs, report, "encoding", None)
    codec = load_codec(model_name or default_model_for(mode), device, threads, tile_size)
    codec.check_quality(mode, quality, step)  # before any image: the same answer for every one
    codec.check_max_error(mode, max_error)
    if target_bpp is not None and not codec.lossy:
        raise CliError("--target-bpp needs a lossy model (the shipped one is 'lossy')")
    if not codec.portable:
        report.warn(
            "a float model's files decode only on the CPU kind and torch build that wrote them; "
            "encode with an exact model (the shipped ones, or `selfvae-codec convert`) for files that decode anywhere"
        )

    def encode_one(job: Job, progress) -> None:
        result = codec.compress_file(
            reader(job.source),
            writer(job.destination),
            mode,
            step,
            force,
            strip_metadata=strip,
            progress=progress,
            quality=quality,
            effort=effort,
            target_bpp=target_bpp,
            max_error=max_error,
        )
        header = unpack(result.data)
        if result.not_kept and not strip:
            report.warn(f"{job.name}: an .svc file does not keep the source's {', '.join(result.not_kept)}")
        report.line(_summary("encoded", job, len(result.data), header, result.seconds, codec))
        if verbose:
            kept = ", ".join(result.metadata.names()) or "none"
            for text in [*_section_lines(header), f"  metadata kept: {kept}"]:
                report.line(text)

    return run_jobs(jobs, report, "encoding", encode_one)


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@shared_options(*OUTPUT_OPTIONS, MODEL_OPTION, DEVICE_OPTION, THREADS_OPTION)
@shared_options(FORCE_OPTION, SKIP_EXISTING_OPTION, QUIET_OPTION, VERBOSE_OPTION)
def decode(inputs, output, out_dir, model_name, device, threads, force, skip_existing, quiet, verbose):
    """Decompress .svc files (files, folders, or - for standard input) into images:
    a.svc -> a.png unless -o or -d says otherwise (.png, .bmp, .tiff, .ppm, .pgm,
    lossless .webp; PNG on standard output). The file names the model (by fingerprint)
    and the mode; the image's metadata is written back. Any --threads gives the same
    image (files of float models made before the exact ones run at their own count).
    A file whose tiles are all PNG / WebP decodes without loading the model."""
    import io
    import time
    from functools import partial

    from ..bitstream import unpack
    from ..codec.images import decode_to_image_file, output_format, read_input
    from ..codec.tiles import decode_classical, stored_classically

    jobs = plan_jobs(inputs, output, out_dir, ".png", (".svc",), force, skip_existing)
    stdin_data = read_input(click.get_binary_stream("stdin")) if jobs[0].source == STDIO else None
    headers, sizes = {}, {}
    for job in jobs:  # every file's header and output format, before any model is loaded
        if job.problem:
            continue
        data = stdin_data if job.source == STDIO else read_input(job.source)
        try:
            headers[job.source], sizes[job.source] = unpack(data), len(data)
        except CodecError as error:
            if len(jobs) == 1:
                raise CliError(f"{job.name}: {error}") from error
            job.problem = str(error)  # a batch codes the other files
            continue
        if job.destination != STDIO:
            try:
                output_format(job.destination, headers[job.source].channels)
            except BadValueError as error:
                raise BadValueError(f"{job.destination}: {error}") from error
    report = Reporter(quiet, data_to_stdout=jobs[0].destination == STDIO)
    codecs: dict[str, object] = {}

    def decode_one(job: Job, progress) -> None:
        header = headers[job.source]
        source = io.BytesIO(stdin_data) if job.source == STDIO else job.source
        if model_name is None and stored_classically(header):  # no model needed: torch is not even imported
            codec = None
            started = time.perf_counter()
            decode = partial(decode_classical, progress=progress)
            _, dropped = decode_to_image_file(source, writer(job.destination), decode, overwrite=force)
        else:
            codec = codec_for_file(header, model_name, device, threads, codecs)
            started = time.perf_counter()
            _, dropped = codec.decompress_file(source, writer(job.destination), overwrite=force, progress=progress)
        seconds = time.perf_counter() - started
        report.line(_summary("decoded", job, sizes[job.source], header, seconds, codec))
        if dropped:
            report.warn(f"{job.destination} cannot hold the {' and '.join(dropped)} of the image; left out (use .png)")
        if verbose:
            for text in _section_lines(header):
                report.line(text)

    return run_jobs(jobs, report, "decoding", decode_one)


def codec_for_file(header, model_name, device: str, threads: int | None, cache: dict):
    """A codec with the model the file names (by fingerprint) unless --model says
    otherwise; one per model."""
    from ..models.pretrained import model_for_file

    if model_name is None:
        model_name = model_for_file(header.model_fingerprint.hex())
    if model_name not in cache:
        cache[model_name] = load_codec(model_name, device, threads)
    return cache[model_name]


def _read_svc(source: str):
    """A file's bytes (a path, or - for standard input) and its validated header."""
    from ..bitstream import unpack
    from ..codec.images import read_input

    try:
        data = read_input(reader(source))
        return data, unpack(data)
    except CodecError as error:
        raise CliError(f"{'stdin' if source == STDIO else source}: {error}") from error


@cli.command()
@click.argument("svc_file")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(svc_file, as_json) -> None:
    """Show an .svc file's header, sections and bits per section (no model needed;
    - reads standard input)."""
    from ..bitstream import unpack_metadata
    from ..models.pretrained import find_by_fingerprint, find_retired

    data, header = _read_svc(svc_file)
    pixels = header.width * header.height
    sections: dict[str, int] = {}
    for section in header.sections:
        sections[section.label] = sections.get(section.label, 0) + len(section.payload)
    metadata = unpack_metadata(header.metadata_payload)
    record = {
        "file": svc_file,
        "bytes": len(data),
        "format_version": header.version,
        "mode": header.mode,
        "width": header.width,
        "height": header.height,
        "channels": header.channels,
        "model": header.model_fingerprint.hex(),
        "model_name": find_by_fingerprint(header.model_fingerprint.hex()),
        "latent_step": header.latent_step,
        "quality": header.quality or None,
        "max_error": header.max_error,
        "tile_size": header.tile_size,
        "threads": header.threads,
        "tiles": header.tile_count,
        "metadata": {name: len(getattr(metadata, name)) for name in metadata.names()},
        "header_bytes": len(data) - sum(sections.values()),
        "bpp": len(data) * 8 / pixels,
        "bits_per_subpixel": len(data) * 8 / (pixels * header.channels),
        "sections": {label: {"bytes": size, "bpp": size * 8 / pixels} for label, size in sections.items()},
    }
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(
        f"{svc_file}: .svc version {header.version}, mode {header.mode}, "
        f"{header.width}x{header.height}x{header.channels}"
    )
    retired = find_retired(record["model"])
    shipped = record["model_name"] or (f"{retired}, retired" if retired else "not shipped with this version")
    click.echo(f"  model {record['model'][:16]}... ({shipped})")
    if header.quality:
        click.echo(f"  quality {header.quality} (lossy model)")
    if header.max_error:
        click.echo(f"  near-lossless: every subpixel within {header.max_error} of the original")
    click.echo(
        f"  latent step {header.latent_step:g}, tiles {record['tiles']} of {header.tile_size}, "
        + (f"threads {header.threads}" if header.threads else "exact model (any thread count)")
    )
    kept = ", ".join(f"{name} ({size} bytes)" for name, size in record["metadata"].items()) or "none"
    click.echo(f"  metadata: {kept}")
    click.echo(f"  {len(data)} bytes: {_rates(len(data), header.width, header.height, header.channels)}")
    click.echo(f"  header {record['header_bytes']} bytes")
    for text in _section_lines(header):
        click.echo(text)


@cli.command()
@click.argument("svc_file")
@click.option("--mode", required=True, type=click.Choice(["conditional", "rs1"]), help="The lower mode to cut down to.")
@click.option("-o", "--output", required=True, help="Output .svc file ('-': standard output).")
@shared_options(MODEL_OPTION, FORCE_OPTION, QUIET_OPTION)
def truncate(svc_file, mode, output, model_name, force, quiet) -> None:
    """Cut an .svc file down to a lower mode without re-encoding
    (full -> conditional or rs1, conditional -> rs1, rs2 -> rs1)."""
    from ..codec.images import write_output

    (job,) = plan_jobs((svc_file,), output, None, ".svc", (".svc",), force)
    data, header = _read_svc(svc_file)
    codec = codec_for_file(header, model_name, "cpu", None, {})
    try:
        cut = codec.truncate(data, mode)
    except CodecError as error:
        raise CliError(f"{job.name}: {error}") from error
    write_output(writer(output), cut)
    Reporter(quiet, data_to_stdout=output == STDIO).line(
        f"cut {job.name} ({header.mode}, {len(data)} bytes) to {'stdout' if output == STDIO else output} "
        f"({mode}, {len(cut)} bytes, {len(cut) * 8 / (header.width * header.height):.3f} bpp)"
    )


for _command in CATALOGUE_COMMANDS + GENERATION_COMMANDS + RESEARCH_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    try:
        cli.main(prog_name="selfvae-codec")
    except KeyboardInterrupt:  # outside a command (click turns the rest into Abort)
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
