"""Helpers shared by the benchmark scripts: image lists, classical codecs via Pillow
(and its plugins, from `pip install -e .[bench]`), timing and result files."""

from __future__ import annotations

import csv
import io
import json
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    """The images below a folder, sorted (the codec's own rule), the first `limit`."""
    from selfvae_codec.codec.images import list_images as codec_list_images

    return codec_list_images([folder])[:limit]


def load_rgb(path: Path) -> np.ndarray:
    """An image as the codec codes it: uint8 [H, W, 3] (grayscale repeated)."""
    from selfvae_codec.codec.images import load_image

    return load_image(path).pixels


def pillow_round_trip(array: np.ndarray, fmt: str, **options) -> tuple[bytes, np.ndarray, float, float]:
    started = time.perf_counter()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    encode_seconds = time.perf_counter() - started
    data = buffer.getvalue()
    started = time.perf_counter()
    with Image.open(io.BytesIO(data)) as decoded:
        out = np.asarray(decoded.convert("RGB"))
    return data, out, encode_seconds, time.perf_counter() - started


def selfvae_round_trip(codec, image: np.ndarray, label: str, **options):
    """Encode with selfvae-codec and decode again: (EncodeResult, decoded image, decode
    seconds); with a `target_bpp` option, the file of `Codec.encode_to_rate`. A decode
    that is not the encoder's reconstruction stops the benchmark."""
    target_bpp = options.pop("target_bpp", None)
    if target_bpp is None:
        result = codec.encode(image, **options)
    else:
        result = codec.encode_to_rate(image, target_bpp, **options)
    started = time.perf_counter()
    decoded = codec.decompress(result.data)
    decode_seconds = time.perf_counter() - started
    if not np.array_equal(decoded, result.reconstruction):
        raise SystemExit(f"selfvae-codec {label}: decoded differently than the encoder predicted")
    return result, decoded, decode_seconds


def lossless_codecs() -> dict:
    """name -> function(array) -> (bytes, decoded, encode s, decode s)."""
    codecs = {
        "PNG": lambda a: pillow_round_trip(a, "PNG", optimize=True),
        # WebP at its best (method 6): 2.2% smaller than method 4 on val/classic, and
        # what selfvae-codec's own classical tiles reach at --effort 3
        "WebP lossless": lambda a: pillow_round_trip(a, "WEBP", lossless=True, quality=100, method=6),
    }
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL format)

        codecs["JPEG XL lossless"] = lambda a: pillow_round_trip(a, "JXL", lossless=True, effort=7)
    except ImportError:
        pass
    return codecs


def add_common_arguments(parser) -> None:
    """The arguments every benchmark over a folder takes."""
    parser.add_argument("folder")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for selfvae-codec")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--model", default=None, help="pretrained name or .safetensors path")


def load_codec_and_images(args):
    """Set the thread count, list the images and load the model, reporting the load
    time apart from the coding times. `args` has folder, limit, model and threads."""
    import sys

    import torch

    from selfvae_codec.codec.api import Codec

    torch.set_num_threads(args.threads)
    files = list_images(args.folder, args.limit)
    codec = Codec(args.model, threads=args.threads)
    print(
        f"model loaded in {codec.load_seconds:.2f} s; {len(files)} images; {machine_description(args.threads)}",
        file=sys.stderr,
    )
    return codec, files


def load_lossy_codec(name: str | None, threads: int):
    """The codec of a lossy model: `name` (a shipped name or a .safetensors path), the
    shipped lossy model when None and there is one; None for 'none' or no such model."""
    from selfvae_codec.codec.api import Codec
    from selfvae_codec.models.pretrained import LOSSY_MODEL, registry

    if name == "none" or (name is None and LOSSY_MODEL not in registry()):
        return None
    codec = Codec(name or LOSSY_MODEL, threads=threads)
    if not codec.lossy:
        raise SystemExit(f"--lossy-model {name}: not a lossy model")
    return codec


def machine_description(threads: int) -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU used, torch threads {threads}"


def read_run_log(path: Path) -> list[dict]:
    """A training log's records: a run folder or its log.jsonl, or the compact CSV
    that benchmarks/compact_log.py keeps of it (numbers come back as numbers)."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    if path.suffix == ".csv":
        with open(path, newline="") as handle:
            return [
                {
                    key: value if key == "kind" else (int(value) if key == "step" else float(value))
                    for key, value in row.items()
                    if value != ""
                }
                for row in csv.DictReader(handle)
            ]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_json(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
