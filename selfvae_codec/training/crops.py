"""A crop file: training regions of folders of photos in one compact file, for a run
on a machine the photos are not on (a GPU lent for minutes).

Regions are cut at random (every pixel of a kind equally likely, clean photos'
pixels `clean_weight` times as often as JPEG ones, as training picks them), JPEG
sources downscaled by `jpeg_scale` first (what --jpeg-max-scale does to them in
training), and stored as lossless WebP files until the budget is spent. `train`
takes the file in place of folders and cuts its crops from these regions.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..codec.images import list_images, load_image, write_output

REGION_METHOD = 0  # lossless WebP method: fastest to write, the budget counts the bytes


def write_crop_file(
    folders: list[str],
    path: str | Path,
    megabytes: float = 30.0,
    side: int = 256,
    jpeg_scale: float = 0.5,
    clean_weight: float = 4.0,
    seed: int = 0,
) -> int:
    """Write regions of `side` x `side` from the photos in `folders` to `path` (.npz)
    until they take `megabytes`; returns how many."""
    files = list_images(folders)
    is_jpeg = np.array([p.suffix.lower() in (".jpg", ".jpeg") for p in files])
    sizes = [Image.open(p).size for p in files]
    scales = np.where(is_jpeg, jpeg_scale, 1.0)
    usable = np.array([min(w, h) * s >= side for (w, h), s in zip(sizes, scales, strict=True)])
    if not usable.any():
        raise ValueError(f"no photo in {', '.join(folders)} is at least {side} pixels on its shorter side")
    areas = np.array([w * h for w, h in sizes], dtype=np.float64) * scales**2 * np.where(is_jpeg, 1.0, clean_weight)
    weights = np.where(usable, areas, 0.0)
    rng = np.random.default_rng(seed)
    budget = int(megabytes * 1e6)
    payloads, jpeg_flags, total = [], [], 0
    while total < budget:
        index = int(rng.choice(len(files), p=weights / weights.sum()))
        region = _random_region(load_image(files[index]).pixels, side, scales[index], rng)
        buffer = io.BytesIO()
        Image.fromarray(region).save(buffer, format="WEBP", lossless=True, quality=100, method=REGION_METHOD)
        payloads.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        jpeg_flags.append(bool(is_jpeg[index]))
        total += len(payloads[-1])
    offsets = np.cumsum([0] + [len(p) for p in payloads])
    buffer = io.BytesIO()
    np.savez(buffer, payload=np.concatenate(payloads), offsets=offsets, is_jpeg=np.array(jpeg_flags))
    write_output(path, buffer.getvalue())  # whole or not at all
    return len(payloads)


def _random_region(image: np.ndarray, side: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A `side` x `side` region of `image` downscaled by `scale` (area filter)."""
    source = min(int(round(side / scale)), image.shape[0], image.shape[1])
    top = int(rng.integers(0, image.shape[0] - source + 1))
    left = int(rng.integers(0, image.shape[1] - source + 1))
    region = image[top : top + source, left : left + source]
    if source != side:
        region = np.asarray(Image.fromarray(region).resize((side, side), Image.Resampling.BOX))
    return np.ascontiguousarray(region)


def read_crop_file(path: str | Path) -> tuple[list[np.ndarray], list[bool]]:
    """The regions of a crop file (uint8 [side, side, 3] each) and whether each came
    from a JPEG photo."""
    with np.load(path) as stored:
        payload, offsets, is_jpeg = stored["payload"], stored["offsets"], stored["is_jpeg"]
    regions = []
    for start, stop in zip(offsets[:-1], offsets[1:], strict=True):
        with Image.open(io.BytesIO(payload[start:stop].tobytes())) as image:
            regions.append(np.asarray(image.convert("RGB")))
    return regions, [bool(flag) for flag in is_jpeg]
