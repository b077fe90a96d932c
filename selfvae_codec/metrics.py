"""Image quality measures shared by training, the benchmarks and the tests (numpy only)."""

from __future__ import annotations

import math

import numpy as np


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of 8-bit images whose mean squared error is `mse` (inf at 0)."""
    return float("inf") if mse <= 0 else 10 * math.log10(255.0**2 / mse)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two 8-bit images (any shape, all subpixels counted)."""
    return psnr_from_mse(float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))
