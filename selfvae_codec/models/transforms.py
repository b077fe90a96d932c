"""Self-supervised transforms y = d(x): deterministic, discrete (0..255) and exact.

All arithmetic is integer arithmetic on int64 tensors, so the transforms give the
same result on every machine, thread count and device. Images are tensors of shape
[B, C, H, W] holding integers in 0..255 (any integer dtype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_even(image: torch.Tensor) -> torch.Tensor:
    """Replicate the last row / column once where the height / width is odd."""
    height, width = image.shape[-2:]
    pad_w, pad_h = width % 2, height % 2
    if pad_w == 0 and pad_h == 0:
        return image
    # F.pad's replicate mode needs a float tensor; values stay exact integers.
    padded = F.pad(image.to(torch.float32), (0, pad_w, 0, pad_h), mode="replicate")
    return padded.to(image.dtype)


def downscale(image: torch.Tensor) -> torch.Tensor:
    """One discrete 2x downscale: the rounded mean of each 2x2 block.

    y = floor((a + b + c + d + 2) / 4), so the block sum s satisfies
    4y - 2 <= s <= 4y + 1. Odd sizes are padded by replication first, so the output
    is ceil(H/2) x ceil(W/2).
    """
    padded = pad_to_even(image).to(torch.int64)
    block_sum = padded[..., 0::2, 0::2] + padded[..., 0::2, 1::2] + padded[..., 1::2, 0::2] + padded[..., 1::2, 1::2]
    return torch.div(block_sum + 2, 4, rounding_mode="floor")


def downscale_pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[y_1 (smallest), ..., y_K, y_{K+1} = x] for K = `levels` downscales."""
    pyramid = [image.to(torch.int64)]
    for _ in range(levels):
        pyramid.insert(0, downscale(pyramid[0]))
    return pyramid


def block_sum_bounds(coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive bounds of a 2x2 block's sum given its downscaled value."""
    return 4 * coarse - 2, 4 * coarse + 1


def keep_block_means(fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """`fine` (0..255) moved, block by block, to the nearest image whose 2x2 blocks
    downscale to `coarse`: each block's missing sum is spread over those of its four
    pixels that can still move that way (as evenly as integers allow: the remainder
    goes to the first of them in block order), clipped to 0..255; a pixel that hits 0
    or 255 leaves the rest to the others in the next pass. Used where the coarse image
    is exact and the fine one a model's guess (a conditional file): the truth lies in
    that set, and moving onto it brings a guess closer to the truth. On an odd side the
    last row / column counts twice in its block, as in `downscale`, so those blocks
    only come closer to their bounds."""
    height, width = fine.shape[-2:]
    image = fine.to(torch.int64)
    low, high = block_sum_bounds(coarse.to(torch.int64))
    offsets = ((0, 0), (0, 1), (1, 0), (1, 1))
    for _ in range(len(offsets) + 1):  # each pass settles a block or saturates a pixel of it
        padded = pad_to_even(image)
        pixels = [padded[..., dy::2, dx::2] for dy, dx in offsets]
        block_sum = sum(pixels)
        missing = block_sum.clamp(low, high) - block_sum
        if not bool(missing.any()):
            break
        up = missing > 0
        movable = [torch.where(up, pixel < 255, pixel > 0) & (missing != 0) for pixel in pixels]
        count = sum(m.to(torch.int64) for m in movable).clamp(min=1)
        share = torch.div(missing.abs(), count, rounding_mode="floor")
        remainder = missing.abs() - share * count
        rank = torch.zeros_like(missing)  # how many movable pixels come before, in block order
        for pixel, can_move in zip(pixels, movable, strict=True):
            step = (share + (rank < remainder).to(torch.int64)) * can_move
            pixel += torch.where(up, step, -step)
            rank += can_move
        image = padded[..., :height, :width].clamp(0, 255)
    return image


def to_grayscale(image: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, rounded: [B, 3, H, W] -> [B, 1, H, W]. Gray input passes."""
    image = image.to(torch.int64)
    if image.shape[1] == 1:
        return image
    red, green, blue = image[:, 0:1], image[:, 1:2], image[:, 2:3]
    return torch.div(299 * red + 587 * green + 114 * blue + 500, 1000, rounding_mode="floor")


_BINOMIAL_TAPS = (1, 4, 6, 4, 1)  # sums to 16


def _integer_blur(gray: torch.Tensor, passes: int) -> torch.Tensor:
    """Separable 5-tap binomial blur in integer arithmetic, repeated `passes` times."""
    kernel = torch.tensor(_BINOMIAL_TAPS, dtype=torch.int64)
    out = gray
    for _ in range(passes):
        for dim in (-1, -2):
            pad = (2, 2, 0, 0) if dim == -1 else (0, 0, 2, 2)
            padded = F.pad(out.to(torch.float32), pad, mode="replicate").to(torch.int64)
            length = out.shape[dim]
            acc = torch.zeros_like(out)
            for offset, tap in enumerate(kernel.tolist()):
                acc = acc + tap * padded.narrow(dim, offset, length)
            out = torch.div(acc + 8, 16, rounding_mode="floor")
    return out


def sketch(image: torch.Tensor, blur_passes: int = 4) -> torch.Tensor:
    """Pencil sketch: grayscale colour-dodged with its blurred inverse, 0..255.

    sketch = min(255, gray * 255 // (255 - blur(255 - gray))), so flat areas turn white
    and edges dark. Returns [B, 1, H, W].
    """
    gray = to_grayscale(image)
    blurred_inverse = _integer_blur(255 - gray, blur_passes)
    denominator = (255 - blurred_inverse).clamp(min=1)  # 0 only where all is black
    dodged = torch.div(gray * 255, denominator, rounding_mode="floor")
    return dodged.clamp(max=255)


def size_at_stride(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """Spatial size of a tensor that lives at `stride` of an image of `size`."""
    return (-(-size[0] // stride), -(-size[1] // stride))


# Near-lossless coding with a maximum error N per subpixel: the values 0..255 fall in
# bins of 2N + 1 values, bin k holding k(2N+1) - N .. k(2N+1) + N (the first and last
# cut at 0 and 255); a value is sent as its bin and rebuilt as the bin's centre
# k(2N+1), or 255 where the last bin's centre lies above 255. Every value of a bin
# is within N of what it is rebuilt as.


def error_bins(max_error: int) -> torch.Tensor:
    """The first value of each bin, then 256: int64 [bins + 1]."""
    width = 2 * max_error + 1
    count = (255 + max_error) // width + 1
    return (torch.arange(count + 1, dtype=torch.int64) * width - max_error).clamp(0, 256)


def bins_from(firsts: torch.Tensor, first_bin: torch.Tensor, count: int) -> torch.Tensor:
    """The bounds (firsts, as error_bins gives them) of the `count` bins from
    `first_bin` on, per position: [..., count + 1] values (256 past the last bin)."""
    bins = first_bin.unsqueeze(-1) + torch.arange(count + 1, device=first_bin.device)
    return firsts.to(first_bin.device)[bins.clamp(max=firsts.numel() - 1)]


def bin_of(values: torch.Tensor, max_error: int) -> torch.Tensor:
    """The bin (0-based) that each value 0..255 lies in."""
    return torch.div(values.to(torch.int64) + max_error, 2 * max_error + 1, rounding_mode="floor")


def bin_centre(bins: torch.Tensor, max_error: int) -> torch.Tensor:
    """The value each bin is rebuilt as."""
    return (bins.to(torch.int64) * (2 * max_error + 1)).clamp(max=255)


def within_error(image: torch.Tensor, max_error: int) -> torch.Tensor:
    """The image as near-lossless coding rebuilds it: every value moved to its bin's
    centre, at most `max_error` away (the image itself for 0)."""
    if max_error == 0:
        return image
    return bin_centre(bin_of(image, max_error), max_error)
