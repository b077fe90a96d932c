"""Encode / decode time and peak memory of one image, each direction measured in a
fresh process (so the peak resident memory is that of the operation alone).

    python benchmarks/speed.py ../shared/data/train/wikipedia/001.png --threads 2 --mode full
    python benchmarks/speed.py --synthetic 4000x3000 --threads 2     # a large photo
    python benchmarks/speed.py PHOTO --max-error 2 --model-only     # near-lossless, every tile by the model
    python benchmarks/speed.py PHOTO --model-only --jpeg-xl          # beside JPEG XL lossless
    python benchmarks/speed.py PHOTO --mode rs2 --effort 4           # the lossy encoder's latents optimised

--synthetic WxH builds a photo-like image of that size by mirror-tiling a real
photo (../shared/data/train/wikipedia/001.png unless --source says otherwise).
Model loading is timed separately from coding.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared/data/train/wikipedia/001.png"


def synthetic_photo(width: int, height: int, source: Path) -> np.ndarray:
    photo = np.asarray(Image.open(source).convert("RGB"))
    tile = np.concatenate([photo, photo[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[::-1]], axis=0)
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:height, :width])


def child(direction: str, source: str, target: str, mode: str, threads: int, args) -> None:
    # No torch import before the codec's: selfvae_codec sets how OpenMP's threads wait
    # before torch loads OpenMP, as for a user (the codec runs at `threads` itself).
    from selfvae_codec.codec.api import Codec

    codec = Codec(args.model, threads=threads)
    started = time.perf_counter()
    if direction == "encode":
        options = dict(max_error=args.max_error, classical_tiles=not args.model_only, effort=args.effort)
        result = codec.encode(np.load(source), mode=mode, **options)
        Path(target).write_bytes(result.data)
    else:
        image = codec.decompress(Path(source).read_bytes())
        np.save(target, image)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "load_seconds": codec.load_seconds, "peak_rss_mb": peak_mb}))


def run_child(*args: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?")
    parser.add_argument("--synthetic", help="WxH: a photo-like image of this size")
    parser.add_argument("--source", default=str(DEFAULT_SOURCE))
    parser.add_argument("--mode", default="full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="default: the shipped model the CLI uses for --mode")
    parser.add_argument("--max-error", type=int, default=0, help="full: near-lossless within this error")
    parser.add_argument("--model-only", action="store_true", help="full: every tile coded by the model")
    parser.add_argument("--effort", type=int, default=2, help="the encoder's effort (1 to 9)")
    parser.add_argument(
        "--jpeg-xl", action="store_true", help="also time JPEG XL lossless (effort 7) on the image (bench extra)"
    )
    parser.add_argument(
        "--torch-kernels",
        action="store_true",
        help="the exact models' arithmetic by torch alone, not the compiled kernels",
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        direction, source, target, mode, threads = args.child
        child(direction, source, target, mode, int(threads), args)
        return
    if args.synthetic:
        width, height = (int(v) for v in args.synthetic.lower().split("x"))
        image = synthetic_photo(width, height, Path(args.source))
        label = f"synthetic {width}x{height} (mirror-tiled {Path(args.source).name})"
    elif args.image:
        image = np.asarray(Image.open(args.image).convert("RGB"))
        label = args.image
    else:
        parser.error("give an image or --synthetic WxH")
    from selfvae_codec.models.pretrained import default_model_for

    model = args.model or default_model_for(args.mode)  # the model the CLI would use
    extra = ["--model", model, "--max-error", str(args.max_error), "--effort", str(args.effort)]
    extra += ["--model-only"] if args.model_only else []
    env = {**os.environ, "SELFVAE_CODEC_TORCH_KERNELS": "1"} if args.torch_kernels else None
    with tempfile.TemporaryDirectory() as tmp:
        raw, svc, decoded = Path(tmp, "in.npy"), Path(tmp, "out.svc"), Path(tmp, "out.npy")
        np.save(raw, image)
        enc = run_child(*extra, "--child", "encode", str(raw), str(svc), args.mode, str(args.threads), env=env)
        dec = run_child(*extra, "--child", "decode", str(svc), str(decoded), args.mode, str(args.threads), env=env)
        error = int(np.abs(np.load(decoded).astype(np.int64) - image).max()) if args.mode == "full" else None
        size = svc.stat().st_size
    pixels = image.shape[0] * image.shape[1]
    setting = f", max error {args.max_error}" if args.max_error else ""
    setting += ", every tile by the model" if args.model_only else ""
    setting += f", effort {args.effort}"
    setting += ", torch kernels" if args.torch_kernels else ""
    print(
        f"{label}: {image.shape[1]}x{image.shape[0]}, mode {args.mode}{setting} (model {model}), {args.threads} threads"
    )
    print(
        f"  {size} bytes, {size * 8 / pixels:.3f} bpp, {size * 8 / (3 * pixels):.3f} bits/subpixel"
        + ("" if error is None else f", largest error {error} (bound {args.max_error})")
    )
    print(
        f"  encode {enc['seconds']:.2f} s (peak RSS {enc['peak_rss_mb']:.0f} MB), "
        f"decode {dec['seconds']:.2f} s (peak RSS {dec['peak_rss_mb']:.0f} MB), "
        f"model load {enc['load_seconds']:.2f} s"
    )
    if args.jpeg_xl:
        print_jpeg_xl(image)


def print_jpeg_xl(image: np.ndarray) -> None:
    """JPEG XL lossless at effort 7 on the same image, in this process (libjxl's own
    threads), best of 3."""
    import pillow_jxl  # noqa: F401  (registers the JXL format)
    from common import pillow_round_trip

    runs = [pillow_round_trip(image, "JXL", lossless=True, effort=7) for _ in range(3)]
    data = runs[0][0]
    print(
        f"  JPEG XL lossless (effort 7): {len(data) * 8 / image.size:.3f} bits/subpixel, "
        f"encode {min(r[2] for r in runs):.2f} s, decode {min(r[3] for r in runs):.2f} s"
    )


if __name__ == "__main__":
    main()
