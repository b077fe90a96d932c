"""What the `conditional` mode can reach, whatever the model: it sends the finest
representation y_K (the 2x-downscaled image, rounded 2x2 means) losslessly, so its
rate is at least what the best lossless coder needs for y_K, and its quality is that
of a 2x upscaler. This measures, per image and then averaged:

  - the bits per pixel (of x) that JPEG XL lossless spends on y_K, a lower estimate
    of the conditional rate (the model's own coding of y_K is in the rd results);
  - PSNR of x rebuilt from y_K by repeating each block mean, and by bicubic upscaling;
  - PSNR of JPEG at the same bits per pixel (quality searched per image).

    python benchmarks/conditional_ceiling.py ../shared/data/val/bsds500
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import list_images, load_rgb, pillow_round_trip
from PIL import Image

from selfvae_codec.metrics import psnr
from selfvae_codec.models.transforms import downscale


def jpeg_at_rate(image: np.ndarray, bpp: float) -> tuple[float, float, np.ndarray]:
    """(bpp, PSNR, decoded image) of JPEG at the highest quality whose rate does not
    exceed `bpp`."""
    pixels = image.shape[0] * image.shape[1]
    best = None
    low, high = 1, 100
    while low <= high:  # rate grows with quality
        quality = (low + high) // 2
        data, decoded, _, _ = pillow_round_trip(image, "JPEG", quality=quality)
        rate = 8 * len(data) / pixels
        if rate <= bpp:
            best = (rate, psnr(decoded, image), decoded)
            low = quality + 1
        else:
            high = quality - 1
    if best is None:
        raise SystemExit(f"JPEG cannot go as low as {bpp:.2f} bpp")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    import pillow_jxl  # noqa: F401  (registers JXL; from the bench extra)

    rows = []
    for path in list_images(args.folder, args.limit):
        image = load_rgb(path)
        height, width = image.shape[:2]
        half = downscale(torch.from_numpy(image.copy()).permute(2, 0, 1)).permute(1, 2, 0).to(torch.uint8).numpy()
        data, _, _, _ = pillow_round_trip(half, "JXL", lossless=True, effort=7)
        rate = 8 * len(data) / (height * width)
        repeated = half.repeat(2, axis=0).repeat(2, axis=1)[:height, :width]
        bicubic = np.asarray(Image.fromarray(half).resize((2 * half.shape[1], 2 * half.shape[0]), Image.BICUBIC))
        jpeg_rate, jpeg_psnr, _ = jpeg_at_rate(image, rate)
        rows.append((rate, psnr(repeated, image), psnr(bicubic[:height, :width], image), jpeg_rate, jpeg_psnr))
    means = np.mean(np.array(rows), axis=0)
    print(f"Mean of {len(rows)} images\n")
    print("| y_K by JPEG XL lossless (bpp) | block means repeated (dB) | bicubic (dB) | JPEG at that rate (bpp, dB) |")
    print("| --- | --- | --- | --- |")
    print(f"| {means[0]:.3f} | {means[1]:.2f} | {means[2]:.2f} | {means[3]:.3f}, {means[4]:.2f} |")


if __name__ == "__main__":
    main()
