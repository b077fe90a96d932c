"""Batches of inputs for the codec commands: planning every input and output before
any model is loaded, standard input and output (`-`), one progress bar, and the
summary lines and errors of each file."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import CodecError
from .common import CliError

STDIO = "-"


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
    if STDIO in inputs and out_dir is not None:
        raise CliError("-d names outputs after input files; with '-' give -o")
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


def reader(source: str):
    return click.get_binary_stream("stdin") if source == STDIO else source


def writer(destination: str):
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
