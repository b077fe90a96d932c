"""The `selfvae-codec` command line: the codec commands (encode, decode, info,
truncate, models) here, the research commands (train, evaluate, ...) in research.py.

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
from dataclasses import dataclass
from pathlib import Path

import click

from ..bitstream import MODES
from ..errors import CodecError
from .common import DEVICE_OPTION, MODEL_OPTION, THREADS_OPTION, CliError, shared_options
from .research import COMMANDS as RESEARCH_COMMANDS

STDIO = "-"


class CommandLine(click.Group):
    """A click group whose every failure is one `error:` line and a documented exit
    status, instead of click's multi-line usage text and its "Aborted!"."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
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
        except CodecError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(1)
        except OSError as error:
            click.echo(f"error: {error.strerror or error}{f': {error.filename}' if error.filename else ''}", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=CommandLine, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="selfvae-codec")
def cli() -> None:
    """selfvae-codec: a learned image codec built on a self-supervised VAE."""


# -- options shared by several commands ---------------------------------------------

FORCE_OPTION = click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
QUIET_OPTION = click.option("--quiet", is_flag=True, help="No summary line, no progress bar, no warnings.")
VERBOSE_OPTION = click.option("-v", "--verbose", is_flag=True, help="Also print the bytes of every section.")
OUTPUT_OPTIONS = (
    click.option("-o", "--output", default=None, help="Output file ('-': standard output); one input only."),
    click.option(
        "-d", "--out-dir", default=None, type=click.Path(file_okay=False), help="Folder for the outputs of many inputs."
    ),
)


# -- planning a batch: every check before the model is loaded ------------------------


@dataclass
class Job:
    source: str  # a path, or "-" for standard input
    destination: str  # a path, or "-" for standard output

    @property
    def name(self) -> str:
        return "stdin" if self.source == STDIO else self.source


def plan_jobs(inputs, output, out_dir, suffix: str, input_suffixes, force: bool) -> list[Job]:
    """The (input, output) pairs of a command, or a one-line error: outputs named by
    -o, put into -d, or beside each input with `suffix`."""
    from ..codec.images import check_output, list_images

    if STDIO in inputs and len(inputs) > 1:
        raise CliError("'-' (standard input) must be the only input")
    if output is not None and out_dir is not None:
        raise CliError("give -o or -d, not both")
    sources = [STDIO] if inputs == (STDIO,) else [str(p) for p in list_images(inputs, input_suffixes)]
    if output is not None and len(sources) > 1:
        raise CliError(f"-o takes one input, got {len(sources)}; use -d FOLDER for several")
    if out_dir is not None and not Path(out_dir).is_dir():
        raise CliError(f"output folder does not exist: {out_dir}")
    jobs = []
    for source in sources:
        if output is not None:
            destination = output
        elif source == STDIO:
            destination = STDIO
        elif out_dir is not None:
            destination = str(Path(out_dir) / (Path(source).stem + suffix))
        else:
            destination = str(Path(source).with_suffix(suffix))
        jobs.append(Job(source, destination))
    seen: dict[str, str] = {}
    for job in jobs:
        if job.source != STDIO and not Path(job.source).is_file():
            raise CliError(f"input file not found: {job.source}")
        if job.destination == STDIO:
            if sys.stdout.isatty():
                raise CliError("refusing to write binary data to a terminal; give -o FILE or use a pipe")
            continue
        key = str(Path(job.destination).resolve())
        if key in seen:
            raise CliError(f"{seen[key]} and {job.source} would both be written to {job.destination}")
        seen[key] = job.source
        check_output(job.destination, force, None if job.source == STDIO else job.source)
    return jobs


def _reader(source: str):
    return click.get_binary_stream("stdin") if source == STDIO else source


def _writer(destination: str):
    return click.get_binary_stream("stdout") if destination == STDIO else destination


class Reporter:
    """Summary lines (standard output, or standard error when the data goes to
    standard output), warnings, and progress bars that appear after a second."""

    def __init__(self, quiet: bool, data_to_stdout: bool):
        self.quiet = quiet
        self.err = data_to_stdout
        self.bar = None

    def line(self, text: str, err: bool | None = None) -> None:
        if self.quiet:
            return
        err = self.err if err is None else err
        if self.bar is not None:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr if err else sys.stdout)
        else:
            click.echo(text, err=err)

    def warn(self, text: str) -> None:
        self.line(f"warning: {text}", err=True)

    def error(self, text: str) -> None:
        click.echo(f"error: {text}", err=True)  # errors show even with --quiet

    def show_progress(self, description: str, fraction: float) -> None:
        """Draw (or move) the one progress bar: `fraction` of the work is done. It
        appears only on a terminal, once the work has taken a second."""
        if self.quiet:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(
                total=1.0,
                leave=False,
                delay=1.0,
                file=sys.stderr,
                disable=None,  # None: no bar when standard error is not a terminal (logs, pipes)
                bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
            )
        self.bar.set_description_str(description, refresh=False)
        self.bar.update(fraction - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_jobs(jobs: list[Job], report: Reporter, label: str, code_one) -> int:
    """Run code_one(job, progress) for every job under one progress bar over all of
    them (advanced section by section). A failed file is reported and the rest still
    run; returns the exit status."""
    failures = 0
    try:
        for index, job in enumerate(jobs):
            description = f"{label} {Path(job.name).name}" + (f" ({index + 1}/{len(jobs)})" if len(jobs) > 1 else "")

            def progress(done: int, total: int, index=index, description=description) -> None:
                report.show_progress(description, (index + done / total) / len(jobs))

            try:
                code_one(job, progress)
            except CodecError as error:
                failures += 1
                report.error(f"{job.name}: {error}")
    finally:
        report.close()
    return 1 if failures else 0


# -- the commands ---------------------------------------------------------------------


def load_codec(model_name, device, threads, tile_size=None):
    from ..codec.api import DEFAULT_TILE, Codec

    return Codec(model_name, device=device, threads=threads, tile_size=tile_size or DEFAULT_TILE)


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
    return (
        f"{verb} {job.name} -> {'stdout' if job.destination == STDIO else job.destination}: "
        f"{header.width}x{header.height}x{header.channels}, mode {header.mode}, {size} bytes, "
        f"{_rates(size, header.width, header.height, header.channels)}, {seconds:.2f} s "
        f"({header.threads} threads; model loaded in {codec.load_seconds:.2f} s)"
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
@click.option("--step", type=float, default=None, help="Latent quantisation step (expert: the latents' rate).")
@click.option("--tile-size", type=click.IntRange(16, 65535), default=None, help="Tile side (default 512).")
@click.option("--strip", is_flag=True, help="Leave out the ICC profile, EXIF and XMP.")
@shared_options(MODEL_OPTION, DEVICE_OPTION, THREADS_OPTION, FORCE_OPTION, QUIET_OPTION, VERBOSE_OPTION)
def encode(inputs, output, out_dir, mode, step, tile_size, strip, model_name, device, threads, force, quiet, verbose):
    """Compress images (files, folders of images, or - for standard input) into .svc
    files: a.png -> a.svc unless -o or -d says otherwise."""
    from ..bitstream import unpack
    from ..codec.images import IMAGE_SUFFIXES

    jobs = plan_jobs(inputs, output, out_dir, ".svc", IMAGE_SUFFIXES, force)
    report = Reporter(quiet, data_to_stdout=jobs[0].destination == STDIO)
    codec = load_codec(model_name, device, threads, tile_size)

    def encode_one(job: Job, progress) -> None:
        result = codec.compress_file(
            _reader(job.source), _writer(job.destination), mode, step, force, strip_metadata=strip, progress=progress
        )
        header = unpack(result.data)
        report.line(_summary("encoded", job, len(result.data), header, result.seconds, codec))
        if verbose:
            kept = ", ".join(result.metadata.names()) or "none"
            for text in [*_section_lines(header), f"  metadata kept: {kept}"]:
                report.line(text)

    return run_jobs(jobs, report, "encoding", encode_one)


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@shared_options(*OUTPUT_OPTIONS, MODEL_OPTION, DEVICE_OPTION, FORCE_OPTION, QUIET_OPTION, VERBOSE_OPTION)
def decode(inputs, output, out_dir, model_name, device, force, quiet, verbose):
    """Decompress .svc files (files, folders, or - for standard input) into images:
    a.svc -> a.png unless -o or -d says otherwise (.png, .bmp, .tiff, .ppm, .pgm,
    lossless .webp; PNG on standard output). The file names the model (by fingerprint),
    the mode and the thread count; the image's metadata is written back."""
    import io
    import time

    from ..bitstream import unpack
    from ..codec.images import output_format, read_input

    jobs = plan_jobs(inputs, output, out_dir, ".png", (".svc",), force)
    stdin_data = read_input(click.get_binary_stream("stdin")) if jobs[0].source == STDIO else None
    headers, sizes = {}, {}
    for job in jobs:  # every file's header and output format, before any model is loaded
        data = stdin_data if job.source == STDIO else read_input(job.source)
        try:
            headers[job.source], sizes[job.source] = unpack(data), len(data)
        except CodecError as error:
            raise CliError(f"{job.name}: {error}") from error
        if job.destination != STDIO:
            try:
                output_format(job.destination, headers[job.source].channels)
            except CodecError as error:
                raise CliError(f"{job.destination}: {error}") from error
    report = Reporter(quiet, data_to_stdout=jobs[0].destination == STDIO)
    codecs: dict[str, object] = {}

    def decode_one(job: Job, progress) -> None:
        header = headers[job.source]
        codec = codec_for_file(header, model_name, device, codecs)
        started = time.perf_counter()
        source = io.BytesIO(stdin_data) if job.source == STDIO else job.source
        _, dropped = codec.decompress_file(source, _writer(job.destination), overwrite=force, progress=progress)
        seconds = time.perf_counter() - started
        report.line(_summary("decoded", job, sizes[job.source], header, seconds, codec))
        if dropped:
            report.warn(f"{job.destination} cannot hold the {' and '.join(dropped)} of the image; left out (use .png)")
        if verbose:
            for text in _section_lines(header):
                report.line(text)

    return run_jobs(jobs, report, "decoding", decode_one)


def codec_for_file(header, model_name, device: str, cache: dict):
    """A codec with the model the file names (by fingerprint) unless --model says
    otherwise, running at the file's thread count; one per model and thread count."""
    from ..models.pretrained import find_by_fingerprint

    if model_name is None:
        model_name = find_by_fingerprint(header.model_fingerprint.hex())
        if model_name is None:
            raise CodecError(
                f"encoded with model {header.model_fingerprint.hex()[:12]}, "
                "which is not shipped with this version; pass it with --model PATH"
            )
    key = f"{model_name}@{header.threads}"
    if key not in cache:
        cache[key] = load_codec(model_name, device, header.threads)
    return cache[key]


def _read_svc(source: str):
    """A file's bytes (a path, or - for standard input) and its validated header."""
    from ..bitstream import unpack
    from ..codec.images import read_input

    try:
        data = read_input(_reader(source))
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
    from ..models.pretrained import find_by_fingerprint

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
    click.echo(f"  model {record['model'][:16]}... ({record['model_name'] or 'not shipped with this version'})")
    click.echo(
        f"  latent step {header.latent_step:g}, tiles {record['tiles']} of {header.tile_size}, threads {header.threads}"
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
    codec = codec_for_file(header, model_name, "cpu", {})
    try:
        cut = codec.truncate(data, mode)
    except CodecError as error:
        raise CliError(f"{job.name}: {error}") from error
    write_output(_writer(output), cut)
    Reporter(quiet, data_to_stdout=output == STDIO).line(
        f"cut {job.name} ({header.mode}, {len(data)} bytes) to {'stdout' if output == STDIO else output} "
        f"({mode}, {len(cut)} bytes, {len(cut) * 8 / (header.width * header.height):.3f} bpp)"
    )


@cli.command()
def models() -> None:
    """List the pretrained models shipped with this version."""
    from ..models.pretrained import registry

    entries = registry()
    if not entries:
        click.echo("no pretrained models are shipped with this build")
        return
    for name, entry in entries.items():
        bpd = entry.get("validation_bpd")
        measured = f"validation {bpd:.4f} bpd" if bpd is not None else "not validated"
        click.echo(f"{name}: {entry.get('description', '')} [{measured}; {entry['fingerprint'][:12]}]")


for _command in RESEARCH_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    try:
        cli.main(prog_name="selfvae-codec")
    except KeyboardInterrupt:  # outside a command (click turns the rest into Abort)
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
