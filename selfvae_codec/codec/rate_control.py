"""Coding to a rate: the best file of a lossy model at or under a target number of bits
per pixel (`encode --target-bpp`).

The qualities are searched first (the rate grows with the quality); between the
highest quality that fits and the next one, that next quality's latent steps are
scaled up (coarser, fewer bits) to land closer under the target. Every candidate is a
real encode, so the file returned is at or under the target by its true size.

An encoder that optimises its latents (`--effort` 3 and up) costs tens of plain
encodes, so the search runs with the plain encoder and only its outcome is encoded
harder: first the setting just above the target (optimised latents cost a few per
cent fewer bits at the same setting, so its file often fits, at a higher quality
than any plain file that fits), then the best setting that fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..errors import BadValueError
from .latent_optimisation import FIRST_OPTIMISING_EFFORT, OPTIMISED_MODES

MAX_STEP_SCALE = 8.0  # the coarsest the next quality's steps are made
STEP_REFINEMENTS = 4  # bisections of the step scale (in log space)
# Optimised latents save a few per cent of a setting's rate (3-8% measured at effort
# 4), so a setting more than this share above the target is not encoded harder.
OPTIMISED_SAVING = 0.1


def encode_to_rate(
    encode: Callable, qualities: int, pixels: int, target_bpp: float, mode: str = "rs2", effort: int = 1
):
    """The EncodeResult of `encode(quality, step_scale, effort)` with the most bits per
    pixel at or under `target_bpp`, over qualities 1..`qualities` and step scales from 1
    to MAX_STEP_SCALE; a BadValueError where even the coarsest is above the target.
    Where `effort` optimises the latents of `mode`, the search runs at the plain
    effort, and the setting just above the target (if within OPTIMISED_SAVING of it),
    then the best one under it, are encoded at `effort`: the first of those files that
    fits is returned (the plain file where neither does)."""
    plain_effort = min(effort, FIRST_OPTIMISING_EFFORT - 1) if mode in OPTIMISED_MODES else effort

    def rate(result) -> float:
        return 8 * len(result.data) / pixels

    fitting, missing = None, None  # (result, quality, step_scale): the largest that fits, the smallest that does not

    def attempt(quality: int, step_scale: float) -> bool:
        nonlocal fitting, missing
        result = encode(quality, step_scale, plain_effort)
        if rate(result) <= target_bpp:
            if fitting is None or len(result.data) > len(fitting[0].data):
                fitting = (result, quality, step_scale)
            return True
        if missing is None or len(result.data) < len(missing[0].data):
            missing = (result, quality, step_scale)
        return False

    low, high = 1, qualities
    while low <= high:  # the highest quality whose file fits
        quality = (low + high) // 2
        if attempt(quality, 1.0):
            low = quality + 1
        else:
            high = quality - 1
    above = high + 1  # the lowest quality whose file does not fit at its own steps
    if above <= qualities:
        coarsest_fits = attempt(above, MAX_STEP_SCALE)
        if fitting is None:
            raise BadValueError(
                f"the smallest file of this image (its metadata included) is {rate(missing[0]):.3f} bpp, "
                f"above the target {target_bpp} bpp"
            )
        if coarsest_fits:  # refine the step scale between the coarsest and the quality's own
            fits, misses = math.log(MAX_STEP_SCALE), 0.0  # log step scales that fit and that do not
            for _ in range(STEP_REFINEMENTS):
                middle = (fits + misses) / 2
                if attempt(above, math.exp(middle)):
                    fits = middle
                else:
                    misses = middle
    if effort != plain_effort:
        if missing is not None and rate(missing[0]) * (1 - OPTIMISED_SAVING) > target_bpp:
            missing = None
        for candidate in (missing, fitting):
            if candidate is not None:
                result = encode(*candidate[1:], effort)
                if rate(result) <= target_bpp:
                    return result
    return fitting[0]
