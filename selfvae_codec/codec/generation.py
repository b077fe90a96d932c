"""The model as a generator, through a Codec's model and settings: an image upscaled
(the levels above it generated) and unconditional samples."""

from __future__ import annotations

import numpy as np
import torch

from ..bitstream import MAX_PIXELS, MAX_SIDE
from ..errors import BadValueError
from .images import load_image
from .runtime import seeded, torch_threads
from .tiles import Progress, output_image, tile_boxes

GENERATION_METHODS = ("mean", "mode", "sample")


def upscale(
    codec, image, factor: int, method: str, seed: int, size: tuple[int, int] | None, progress: Progress | None
) -> np.ndarray:
    """Codec.upscale: the image `factor` times larger, tile by tile."""
    if method not in GENERATION_METHODS:
        raise BadValueError(f"unknown method {method!r}; choose from {', '.join(GENERATION_METHODS)}")
    largest = codec.model.max_upscale()
    if factor < 2 or factor & (factor - 1):
        raise BadValueError(f"the factor must be a power of two (2, 4, 8, ...), got {factor}")
    if factor > largest:
        raise BadValueError(f"this model upscales at most {largest}x (one doubling per level), not {factor}x")
    loaded = load_image(image)
    height, width = loaded.pixels.shape[:2]
    out_width, out_height = size if size is not None else (width * factor, height * factor)
    if -(-out_height // factor) != height or -(-out_width // factor) != width:
        raise BadValueError(
            f"a {out_width}x{out_height} image downscales {factor}x to "
            f"{-(-out_width // factor)}x{-(-out_height // factor)}, not to the input's {width}x{height}"
        )
    if max(out_width, out_height) > MAX_SIDE or out_width * out_height > MAX_PIXELS:
        raise BadValueError(f"a {out_width}x{out_height} output is too large")
    small = torch.from_numpy(loaded.pixels).permute(2, 0, 1)[None].to(codec.device, torch.int64)
    output = np.empty((out_height, out_width, 3), dtype=np.uint8)
    tile = max(factor, codec.tile_size - codec.tile_size % factor)  # tiles of the input must align
    tiles = tile_boxes(out_height, out_width, tile)
    with seeded(seed), torch_threads(codec.threads), torch.no_grad():
        for index, (top, bottom, left, right) in enumerate(tiles):
            part = small[..., top // factor : -(-bottom // factor), left // factor : -(-right // factor)]
            result = codec.model.upscale(part, factor, (bottom - top, right - left), method)
            output[top:bottom, left:right] = result[0].permute(1, 2, 0).cpu().numpy()
            if progress:
                progress(index + 1, len(tiles))
    return output_image(output, loaded.channels)


def sample(codec, count: int, size: tuple[int, int], method: str, seed: int) -> np.ndarray:
    """Codec.sample: `count` unconditional samples, uint8 [count, H, W, 3]."""
    if method not in GENERATION_METHODS:
        raise BadValueError(f"unknown method {method!r}; choose from {', '.join(GENERATION_METHODS)}")
    if not 1 <= count <= 256:
        raise BadValueError(f"count must be from 1 to 256, got {count}")
    width, height = size
    if not (1 <= width <= 2048 and 1 <= height <= 2048):
        raise BadValueError(f"sample sizes go from 1x1 to 2048x2048, got {width}x{height}")
    with seeded(seed), torch_threads(codec.threads), torch.no_grad():
        samples = codec.model.sample(count, (height, width), method)
    return samples.permute(0, 2, 3, 1).cpu().numpy()
