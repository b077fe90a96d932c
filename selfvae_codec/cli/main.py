"""The `selfvae-codec` command line."""

from __future__ import annotations

import json
import sys

import click


class CliError(click.ClickException):
    """A clear one-line error with a non-zero exit."""

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


MODEL_OPTION = click.option(
    "--model",
    "model_name",
    default=None,
    help="Pretrained model name or a .safetensors path (default: the shipped default).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="selfvae-codec")
def cli() -> None:
    """selfvae-codec: a learned image codec built on a self-supervised VAE."""


@cli.command()
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


@cli.command()
@click.argument("folder", type=click.Path(exists=True))
@click.option("--samples", default=16, show_default=True, help="Posterior samples per image (importance weights).")
@click.option("--limit", type=int, default=None, help="Only the first N images.")
@click.option("--tile-size", default=512, show_default=True, help="Images larger than this are scored in tiles.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Write per-image rows here.")
@MODEL_OPTION
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(1, 255), default=None)
@click.option("--seed", default=0, show_default=True)
def evaluate(folder, samples, limit, tile_size, csv_path, model_name, device, threads, seed) -> None:
    """Negative ELBO and importance-weighted bits per dimension on a folder of images."""
    import csv

    import torch
    from tqdm import tqdm

    from ..models.io import ModelLoadError, load_model
    from ..models.pretrained import load_pretrained
    from ..training.data import list_images, load_rgb
    from ..training.evaluate import evaluate_image

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    try:
        files = list_images([folder])[:limit]
        if model_name and model_name.endswith(".safetensors"):
            model = load_model(model_name, device=device)
        else:
            model = load_pretrained(model_name or "default", device=device)
    except (ModelLoadError, FileNotFoundError) as error:
        raise CliError(str(error)) from error
    scores = []
    for path in tqdm(files, unit="image", file=sys.stderr):
        scores.append(evaluate_image(model, load_rgb(path), samples, tile=tile_size, name=path.name))
    if csv_path:
        with open(csv_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            term_names = list(scores[0].terms_bpd)
            writer.writerow(["image", "width", "height", "elbo_bpd", "iw_bpd", *term_names])
            for s in scores:
                writer.writerow(
                    [
                        s.name,
                        s.width,
                        s.height,
                        f"{s.elbo_bpd:.5f}",
                        f"{s.iw_bpd:.5f}",
                        *(f"{s.terms_bpd[t]:.5f}" for t in term_names),
                    ]
                )
    mean_elbo = sum(s.elbo_bpd for s in scores) / len(scores)
    mean_iw = sum(s.iw_bpd for s in scores) / len(scores)
    terms = {t: sum(s.terms_bpd[t] for s in scores) / len(scores) for t in scores[0].terms_bpd}
    click.echo("terms (bpd): " + ", ".join(f"{k} {v:.4f}" for k, v in terms.items()), err=True)
    click.echo(
        f"{len(scores)} images: negative ELBO {mean_elbo:.4f} bpd, "
        f"importance-weighted ({samples} samples) {mean_iw:.4f} bpd"
    )


# -- coding commands --------------------------------------------------------------------

MODEL_OPTION = click.option(
    "--model",
    "model_name",
    default=None,
    help="Pretrained model name or a .safetensors path (default: the shipped default).",
)
DEVICE_OPTION = click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
THREADS_OPTION = click.option(
    "--threads", type=click.IntRange(1, 255), default=None, help="torch threads (default: torch's choice)."
)
FORCE_OPTION = click.option("-f", "--force", is_flag=True, help="Overwrite an existing output file.")


def _load_codec(model_name, device, threads, tile_size=None):
    from ..codec.api import DEFAULT_TILE, Codec, CodecError
    from ..models.io import ModelLoadError

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(f"--device {device}: CUDA is not available on this machine")
    try:
        return Codec(model_name, device=device, threads=threads, tile_size=tile_size or DEFAULT_TILE)
    except (ModelLoadError, CodecError) as error:
        raise CliError(str(error)) from error


def _coding_errors():
    from ..bitstream import ContainerError
    from ..codec.api import CodecError
    from ..models.io import ModelLoadError

    return (CodecError, ContainerError, ModelLoadError, OSError)


def _progress_bar(enabled: bool, label: str):
    """A tqdm bar over tiles, shown only for images of several tiles."""
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    state = {"bar": None}

    def update(done: int, total: int) -> None:
        if total < 2:
            return
        if state["bar"] is None:
            state["bar"] = tqdm(total=total, desc=label, unit="tile", leave=False, file=sys.stderr)
        state["bar"].update(done - state["bar"].n)

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()

    return update, close


def _refuse_existing(output: str, force: bool) -> None:
    from pathlib import Path

    if Path(output).exists() and not force:
        raise CliError(f"{output} exists (use --force to overwrite it)")


def _read_svc(svc_file: str):
    """The file's bytes and its validated header, or a one-line error."""
    from ..bitstream import unpack
    from ..codec.api import read_file

    try:
        data = read_file(svc_file)
        return data, unpack(data)
    except _coding_errors() as error:
        raise CliError(f"{svc_file}: {error}") from error


def _codec_for_file(svc_file: str, header, model_name, device: str):
    """A codec with the model the file names (by fingerprint) unless --model says otherwise,
    running at the file's thread count."""
    from ..models.pretrained import find_by_fingerprint

    if model_name is None:
        model_name = find_by_fingerprint(header.model_fingerprint.hex())
        if model_name is None:
            raise CliError(
                f"{svc_file} was encoded with model {header.model_fingerprint.hex()[:12]}, "
                "which is not shipped with this version; pass it with --model PATH"
            )
    return _load_codec(model_name, device, header.threads)


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .svc file.")
@click.option(
    "--mode",
    type=click.Choice(["full", "conditional", "rs2", "rs1"]),
    default="full",
    show_default=True,
    help="full is lossless; the others trade quality for bits.",
)
@click.option("--step", type=float, default=None, help="Latent quantisation step (rate knob of the latents).")
@click.option("--tile-size", type=click.IntRange(16, 65535), default=None, help="Tile side (default 512).")
@MODEL_OPTION
@DEVICE_OPTION
@THREADS_OPTION
@FORCE_OPTION
@click.option("--quiet", is_flag=True, help="No summary line, no progress bar.")
def encode(image, output, mode, step, tile_size, model_name, device, threads, force, quiet) -> None:
    """Compress IMAGE into an .svc file."""
    from pathlib import Path

    _refuse_existing(output, force)
    codec = _load_codec(model_name, device, threads, tile_size)
    update, close = _progress_bar(not quiet, "encoding")
    try:
        from ..codec.api import write_atomically

        result = codec.encode(image, mode, step, progress=update)
        write_atomically(Path(output), result.data)
    except _coding_errors() as error:
        raise CliError(str(error)) from error
    finally:
        close()
    if not quiet:
        height, width = result.reconstruction.shape[:2]
        channels = 3 if result.reconstruction.ndim == 3 else 1
        _summary(
            "encoded",
            output,
            len(result.data),
            width,
            height,
            channels,
            mode,
            result.seconds,
            codec.load_seconds,
            codec.threads,
        )


@cli.command()
@click.argument("svc_file", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output image (.png, .bmp, .tiff, .ppm, lossless .webp).",
)
@MODEL_OPTION
@DEVICE_OPTION
@FORCE_OPTION
@click.option("--quiet", is_flag=True, help="No summary line, no progress bar.")
def decode(svc_file, output, model_name, device, force, quiet) -> None:
    """Decompress an .svc file into an image. The file says everything needed: the
    model it needs (by fingerprint), the mode and the thread count."""
    import time
    from pathlib import Path

    from ..codec.api import save_image_atomically

    _refuse_existing(output, force)
    data, header = _read_svc(svc_file)
    codec = _codec_for_file(svc_file, header, model_name, device)
    update, close = _progress_bar(not quiet, "decoding")
    started = time.perf_counter()
    try:
        image = codec.decompress(data, progress=update)
        save_image_atomically(Path(output), image)
    except _coding_errors() as error:
        raise CliError(f"{svc_file}: {error}") from error
    finally:
        close()
    if not quiet:
        channels = 3 if image.ndim == 3 else 1
        _summary(
            "decoded",
            output,
            len(data),
            header.width,
            header.height,
            channels,
            header.mode,
            time.perf_counter() - started,
            codec.load_seconds,
            header.threads,
        )


def _summary(verb, path, size, width, height, channels, mode, seconds, load_seconds, threads) -> None:
    pixels = width * height
    click.echo(
        f"{verb} {path}: {width}x{height}x{channels}, mode {mode}, {size} bytes, "
        f"{size * 8 / pixels:.3f} bpp, {size * 8 / (pixels * 3):.3f} bits/subpixel, "
        f"{seconds:.2f} s ({threads} threads; model loaded in {load_seconds:.2f} s)"
    )


@cli.command()
@click.argument("svc_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(svc_file, as_json) -> None:
    """Show an .svc file's header, sections and bits per section (no model needed)."""
    from ..models.pretrained import find_by_fingerprint

    data, header = _read_svc(svc_file)
    pixels = header.width * header.height
    sections: dict[str, int] = {}
    for section in header.sections:
        sections[section.label] = sections.get(section.label, 0) + len(section.payload)
    payload = sum(sections.values())
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
        "tiles": len({s.tile for s in header.sections}),
        "header_bytes": len(data) - payload,
        "bpp": len(data) * 8 / pixels,
        "bits_per_subpixel": len(data) * 8 / (pixels * 3),
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
    click.echo(
        f"  {len(data)} bytes: {record['bpp']:.3f} bpp, {record['bits_per_subpixel']:.3f} bits/subpixel "
        f"(header {record['header_bytes']} bytes)"
    )
    for label, entry in sections.items():
        click.echo(f"  section {label:>3}: {entry:>9} bytes  {entry * 8 / pixels:.4f} bpp")


@cli.command()
@click.argument("svc_file", type=click.Path(dir_okay=False))
@click.option("--mode", required=True, type=click.Choice(["conditional", "rs1"]), help="The lower mode to cut down to.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .svc file.")
@MODEL_OPTION
@FORCE_OPTION
def truncate(svc_file, mode, output, model_name, force) -> None:
    """Cut an .svc file down to a lower mode without re-encoding
    (full -> conditional or rs1, conditional -> rs1, rs2 -> rs1)."""
    from pathlib import Path

    from ..codec.api import write_atomically

    _refuse_existing(output, force)
    data, header = _read_svc(svc_file)
    codec = _codec_for_file(svc_file, header, model_name, "cpu")
    try:
        cut = codec.truncate(data, mode)
        write_atomically(Path(output), cut)
    except _coding_errors() as error:
        raise CliError(f"{svc_file}: {error}") from error
    pixels = header.width * header.height
    click.echo(
        f"cut {svc_file} ({header.mode}, {len(data)} bytes) to {output} ({mode}, {len(cut)} bytes, "
        f"{len(cut) * 8 / pixels:.3f} bpp)"
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


@cli.command(hidden=True)
@click.argument("weights", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", default="default", show_default=True)
@click.option("--description", required=True)
@click.option("--validation-bpd", type=float, default=None)
def publish(weights, name, description, validation_bpd) -> None:
    """(developers) Ship WEIGHTS inside the package as pretrained model NAME."""
    from ..models.pretrained import publish as publish_model

    entry = publish_model(weights, name, description, validation_bpd=validation_bpd)
    click.echo(json.dumps(entry, indent=2))


@cli.command(hidden=True)
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


def main() -> None:
    try:
        cli.main(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
