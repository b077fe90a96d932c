"""Batches of inputs for the codec commands: planning every input and output before
any model is loaded, standard input and output (`-`), one progress bar, and the
summary lines and errors of each file."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import CodecError, OutputExistsError
from .common import CliError

STDIO = "-"


@dataclass
class Job:
    source: str  # a path, or "-" for standard input
    destination: str  # a path, or "-" for standard output
    problem: str | None = None  # why this file is not coded (its output exists, ...); the rest still are
    skipped: bool = False  # its output exists and --skip-existing asked to leave it

    @property
    def name(self) -> str:
        return "stdin" if self.source == STDIO else self.source


def _sources_and_names(inputs, input_suffixes) -> list[tuple[str, Path]]:
    """Every input file with the output name it takes under -d: a file named on the
    command line its own name, a file found in a named folder its path below that
    folder, so that -d mirrors the folders."""
    from ..codec.images import list_images

    found = []
    for named in inputs:
        for path in list_images([named], input_suffixes):
            found.append((str(path), path.relative_to(named) if Path(named).is_dir() else Path(path.name)))
    return found


def plan_jobs(inputs, output, out_dir, suffix: str, input_suffixes, force: bool, skip_existing: bool = False):
    """The (input, output) pairs of a command, or a one-line error for the command as
    a whole: outputs named by -o, put into -d (created, folders mirrored), or beside
    each input with `suffix`. An output that exists (without --force) is a problem of
    that file alone when there are several, or skipped with --skip-existing."""
    from ..codec.images import check_output

    if STDIO in inputs and len(inputs) > 1:
        raise CliError("'-' (standard input) must be the only input")
    if output is not None and out_dir is not None:
        raise CliError("give -o or -d, not both")
    if STDIO in inputs and out_dir is not None:
        raise CliError("-d names outputs after input files; with '-' give -o")
    if STDIO in inputs and sys.stdin.isatty():
        raise CliError("'-' reads standard input, which is a terminal here; pipe a file in or name one")
    sources = [(STDIO, Path(STDIO))] if inputs == (STDIO,) else _sources_and_names(inputs, input_suffixes)
    if output is not None and len(sources) > 1:
        raise CliError(f"-o takes one input, got {len(sources)}; use -d FOLDER for several")
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise CliError(f"-d {out_dir} is a file, not a folder")
    jobs = []
    for source, name in sources:
        if source != STDIO and not Path(source).is_file():
            raise CliError(f"input file not found: {source}")
        if output is not None:
            destination = output
        elif source == STDIO:
            destination = STDIO
        elif out_dir is not None:
            destination = str(Path(out_dir) / name.with_suffix(suffix))
        else:
            destination = str(Path(source).with_suffix(suffix))
        jobs.append(Job(source, destination))
    if jobs[0].destination == STDIO and sys.stdout.isatty():
        raise CliError("refusing to write binary data to a terminal; give -o FILE or use a pipe")
    if out_dir is not None:
        for job in jobs:
            Path(job.destination).parent.mkdir(parents=True, exist_ok=True)
    claimed: dict[str, str] = {}
    for job in jobs:
        if job.destination == STDIO:
            continue
        key = str(Path(job.destination).resolve())
        if key in claimed:
            job.problem = f"{job.destination} is {claimed[key]}'s output too; not coded"
            continue
        claimed[key] = job.source
        try:
            check_output(job.destination, force, None if job.source == STDIO else job.source)
        except OutputExistsError:
            job.skipped = skip_existing
            also = ", or --skip-existing" if len(jobs) > 1 else ""
            job.problem = f"{job.destination} exists (use --force to replace it{also})"
        except CodecError as error:
            job.problem = str(error)
    if len(jobs) == 1 and jobs[0].problem and not jobs[0].skipped:
        raise CliError(jobs[0].problem)
    return jobs


def any_to_code(jobs: list[Job]) -> bool:
    """Whether any job is left to code (else no model need be loaded)."""
    return any(job.problem is None for job in jobs)


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
    them (advanced section by section). A failed file, or one with a problem found
    while planning, is reported and the rest still run; returns the exit status."""
    failures = 0
    try:
        for index, job in enumerate(jobs):
            if job.skipped:
                report.line(f"skipped {job.name}: {job.destination} exists")
                continue
            if job.problem:
                failures += 1
                report.error(f"{job.name}: {job.problem}")
                continue
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
