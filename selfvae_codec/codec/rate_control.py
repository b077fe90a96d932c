"""Coding to a rate: the largest file of a lossy model at or under a target number of
bits per pixel (`encode --target-bpp`).

The qualities are searched first (the rate grows with the quality); between the
highest quality that fits and the next one, that next quality's latent steps are
scaled up (coarser, fewer bits) to land closer under the target. Every candidate is a
real encode, so the file returned is at or under the target by its true size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..errors import BadValueError

MAX_STEP_SCALE = 8.0  # the coarsest the next quality's steps are made
STEP_REFINEMENTS = 4  # bisections of the step scale (in log space)


def encode_to_rate(encode: Callable, qualities: int, pixels: int, target_bpp: float):
    """The EncodeResult of `encode(quality, step_scale)` with the most bits per pixel at
    or under `target_bpp`, over qualities 1..`qualities` and step scales from 1 to
    MAX_STEP_SCALE; a BadValueError where even the coarsest is above the target."""

    def rate(result) -> float:
        return 8 * len(result.data) / pixels

    best = None
    low, high = 1, qualities
    while low <= high:  # the highest quality whose file fits
        quality = (low + high) // 2
        result = encode(quality, 1.0)
        if rate(result) <= target_bpp:
            best, low = result, quality + 1
        else:
            high = quality - 1
    above = high + 1  # the lowest quality whose file does not fit at its own steps
    if above > qualities:
        return best

    def larger(a, b):
        return b if a is None or len(b.data) > len(a.data) else a

    coarsest = encode(above, MAX_STEP_SCALE)
    if rate(coarsest) > target_bpp:
        if best is None:
            raise BadValueError(
                f"the smallest file of this image (its metadata included) is {rate(coarsest):.3f} bpp, "
                f"above the target {target_bpp} bpp"
            )
        return best
    best = larger(best, coarsest)
    fits, misses = math.log(MAX_STEP_SCALE), 0.0  # log step scales that fit and that do not
    for _ in range(STEP_REFINEMENTS):
        middle = (fits + misses) / 2
        result = encode(above, math.exp(middle))
        if rate(result) <= target_bpp:
            best, fits = larger(best, result), middle
        else:
            misses = middle
    return best
