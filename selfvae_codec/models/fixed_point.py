"""Fixed-point arithmetic for the exact (integer) models.

An exact model computes every number that decides a probability or a lossy
reconstruction as an integer, so every machine gets the same numbers: any x86
vector level or ARM, any thread count, any torch version, CPU or CUDA.

- Activations are int64 tensors holding value * 2^ACT_BITS, saturated at
  +-ACT_LIMIT.
- A convolution (`ExactConv`) multiplies them by integer weights (at most
  2^WEIGHT_BITS in magnitude) in float64: every product and partial sum is an
  integer below 2^53, so the result is exact in any summation order, with or
  without FMA, on any BLAS. It is rescaled to 2^-ACT_BITS by a per-channel shift
  that rounds half up.
- Nonlinear functions are lookup tables with linear interpolation in integer
  arithmetic. The tables are built at import from integer-only arithmetic (a Taylor
  series of exp in 2^-30 fixed point), never from float math functions, so they too
  are the same everywhere.

Rounding rule everywhere: floor, written as an arithmetic right shift or a floor
division of int64 tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:  # compiled kernels (setup.py, _kernels.c); without them the same integers come from torch
    from . import _kernels as kernels
except ImportError:
    kernels = None
if os.environ.get("SELFVAE_CODEC_TORCH_KERNELS"):  # the reference path, for comparison
    kernels = None

ACT_BITS = 12  # activations: value * 2^12
ACT_ONE = 1 << ACT_BITS
ACT_LIMIT = 1 << 22  # activations saturate at +-1024
WEIGHT_BITS = 12  # integer weights are at most 2^12 in magnitude
ONE_Q30 = 1 << 30  # the unit of the function tables' outputs
LN2_Q30 = 744261118  # round(ln 2 * 2^30)
LUT_STEP_BITS = 10  # table entries every 2^-10 of the input
EXP_RANGE = 40  # exp(-y) is tabulated for y in [0, 40]
SIGMOID_RANGE = 16  # sigmoid(t) for t in [-16, 16]


KERNEL_ITEMS_PER_THREAD = 1 << 16  # work items below which splitting a kernel across threads does not pay
_KERNEL_POOLS: dict[int, ThreadPoolExecutor] = {}


def compiled(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernels serve these tensors (built, and all on the CPU)."""
    return kernels is not None and all(t.device.type == "cpu" for t in tensors)


def split_across_threads(run: Callable[[int, int], None], items: int, cost: int = 1) -> None:
    """run(start, stop) over the items 0..items-1, in as many parts as torch's intra-op
    thread count allows (the kernels release the GIL); `cost`: work per item."""
    threads = max(1, min(torch.get_num_threads(), items * cost // KERNEL_ITEMS_PER_THREAD))
    if threads == 1:
        run(0, items)
        return
    if threads not in _KERNEL_POOLS:
        _KERNEL_POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="selfvae-kernels")
    bounds = [items * i // threads for i in range(threads + 1)]
    list(_KERNEL_POOLS[threads].map(run, bounds[:-1], bounds[1:]))  # list(): raises what a part raised


def _elementwise(kernel: Callable[[int, int, int], None], x: torch.Tensor) -> torch.Tensor:
    """kernel(address of x's first value, address of the output's, count) over x's
    values, split across threads: a new int64 tensor of x's shape."""
    x = x.contiguous()
    out = torch.empty_like(x)
    flat_x, flat_out = x.view(-1), out.view(-1)

    def run(start: int, stop: int) -> None:
        kernel(flat_x[start:stop].data_ptr(), flat_out[start:stop].data_ptr(), stop - start)

    split_across_threads(run, x.numel())
    return out


def round_shift(values: torch.Tensor, bits) -> torch.Tensor:
    """values / 2^bits rounded half up (bits: an int >= 1 or a broadcastable tensor)."""
    half = 1 << (bits - 1) if isinstance(bits, int) else torch.bitwise_left_shift(torch.ones_like(bits), bits - 1)
    return (values + half) >> bits


def _exp_neg_q30(y_q30: np.ndarray) -> np.ndarray:
    """exp(-y) * 2^30 for y * 2^30 >= 0 (int64), by integer arithmetic only: y = k ln2 + r,
    exp(-r) by its Taylor series in 2^-30 fixed point, then a shift by k. (numpy: one
    thread, so building the tables at import stays fast on a busy machine.)"""
    k = y_q30 // LN2_Q30
    r = y_q30 - k * LN2_Q30
    term = np.full_like(r, ONE_Q30)
    total = term.copy()
    for n in range(1, 16):
        term = -((term * r) // (n * ONE_Q30))
        total += term
    return total >> np.minimum(k, 62)


def _exp_neg_table(step_bits: int, last: int) -> torch.Tensor:
    """exp(-y) * 2^30 for y = 0, 2^-step_bits, ..., last."""
    return torch.from_numpy(_exp_neg_q30(np.arange((last << step_bits) + 1, dtype=np.int64) << (30 - step_bits)))


def _sigmoid_table(step_bits: int) -> torch.Tensor:
    """sigmoid(t) * 2^30 for t = -16, -16 + 2^-step_bits, ..., 16: 2^60 // (2^30 + exp(-t) 2^30)
    for t >= 0, and 2^30 minus that below."""
    positive = _exp_neg_table(step_bits, SIGMOID_RANGE).numpy()
    upper = (ONE_Q30 * ONE_Q30) // (ONE_Q30 + positive)
    return torch.from_numpy(np.concatenate([ONE_Q30 - upper[::-1][:-1], upper]))


EXP_NEG_TABLE = _exp_neg_table(LUT_STEP_BITS, EXP_RANGE)
SIGMOID_TABLE = _sigmoid_table(LUT_STEP_BITS)
# The probability tables' sigmoid: looked up without interpolation on a finer grid.
FINE_STEP_BITS = 12
FINE_SIGMOID_TABLE = _sigmoid_table(FINE_STEP_BITS)
FINE_SIGMOID_TABLE[0], FINE_SIGMOID_TABLE[-1] = 0, ONE_Q30  # exactly 0 and 1 beyond |t| = 16
_TABLE_CACHE: dict[tuple[str, torch.device], torch.Tensor] = {}


def _on(name: str, table: torch.Tensor, device: torch.device) -> torch.Tensor:
    key = (name, device)
    if key not in _TABLE_CACHE:
        # One copy of the last entry, so that interpolation at the top end stays in range.
        _TABLE_CACHE[key] = torch.cat([table, table[-1:]]).to(device)
    return _TABLE_CACHE[key]


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index] for a 1-D table and any index shape (index_select: several times
    faster on CPU than torch.take or advanced indexing, the same values)."""
    return torch.index_select(table, 0, index.reshape(-1)).view(index.shape)


def _interpolate(name: str, table: torch.Tensor, x: torch.Tensor, input_bits: int, first: int) -> torch.Tensor:
    """table at x, where table[i] holds the function at first + i * 2^-LUT_STEP_BITS and
    x holds value * 2^input_bits; linear between entries, clamped at the ends."""
    lut = _on(name, table, x.device)
    fraction_bits = input_bits - LUT_STEP_BITS
    if compiled(x) and x.dtype == torch.int64:

        def kernel(x_at: int, out_at: int, count: int) -> None:
            kernels.interpolate(x_at, lut.data_ptr(), table.numel(), first << input_bits, fraction_bits, count, out_at)

        return _elementwise(kernel, x)
    offset = (x - (first << input_bits)).clamp(0, (table.numel() - 1) << fraction_bits)
    index = offset >> fraction_bits
    low = lookup(lut, index)
    if fraction_bits == 0:
        return low
    fraction = offset - (index << fraction_bits)
    return low + (((lookup(lut, index + 1) - low) * fraction) >> fraction_bits)


def exp_neg(y: torch.Tensor, input_bits: int) -> torch.Tensor:
    """exp(-y) * 2^30 for y = y / 2^input_bits >= 0 (y beyond 40 gives exp(-40))."""
    return _interpolate("exp_neg", EXP_NEG_TABLE, y, input_bits, 0)


def sigmoid(t: torch.Tensor, input_bits: int) -> torch.Tensor:
    """sigmoid(t) * 2^30, saturating beyond |t| = 16."""
    return _interpolate("sigmoid", SIGMOID_TABLE, t, input_bits, -SIGMOID_RANGE)


def sigmoid_nearest_(t: torch.Tensor, input_bits: int) -> torch.Tensor:
    """sigmoid(t) * 2^30 at the nearest multiple of 2^-12 (input_bits > 12); exactly 0 and
    1 from |t| = 16 on: the fast form for probability tables. Computed in t, which it
    overwrites: a probability table's tensors are its largest, and a copy costs time."""
    table = _on("sigmoid_fine", FINE_SIGMOID_TABLE, t.device)
    shift = input_bits - FINE_STEP_BITS
    t += (SIGMOID_RANGE << input_bits) + (1 << (shift - 1))
    t >>= shift
    return lookup(table, t.clamp_(0, FINE_SIGMOID_TABLE.numel() - 1))


EXP_MAX = 8  # exp(x) is defined up to x = 8
EXP_MAX_Q16 = int(torch.div(torch.tensor(1 << 46), EXP_NEG_TABLE[EXP_MAX << LUT_STEP_BITS], rounding_mode="floor"))


def exp(x: torch.Tensor, input_bits: int = ACT_BITS) -> torch.Tensor:
    """exp(x) * 2^16 for x = x / 2^input_bits <= 8 (clamped there)."""
    below = ((EXP_MAX << input_bits) - x).clamp(min=0)
    return (EXP_MAX_Q16 * exp_neg(below, input_bits)) >> 30


def tanh(x: torch.Tensor, out_bits: int = ACT_BITS) -> torch.Tensor:
    """tanh(x) * 2^out_bits for activations x: 2 sigmoid(2x) - 1."""
    return round_shift(2 * sigmoid(x, ACT_BITS - 1) - ONE_Q30, 30 - out_bits)


def _elu_negative_table() -> torch.Tensor:
    """exp(-k / 2^12) - 1, as activations, for k = 0 .. 40 * 2^12."""
    below = torch.arange((EXP_RANGE << ACT_BITS) + 1, dtype=torch.int64)
    return round_shift(exp_neg(below, ACT_BITS) - ONE_Q30, 30 - ACT_BITS)


ELU_NEGATIVE_TABLE = _elu_negative_table()


def elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of activations: x above zero, exp(x) - 1 below (one table entry per input)."""
    if compiled(x) and x.dtype == torch.int64:

        def kernel(x_at: int, out_at: int, count: int) -> None:
            kernels.elu(x_at, ELU_NEGATIVE_TABLE.data_ptr(), ELU_NEGATIVE_TABLE.numel() - 1, count, out_at)

        return _elementwise(kernel, x)
    table = _on("elu", ELU_NEGATIVE_TABLE, x.device)
    # table[0] == 0, so positive inputs read 0 from the table and keep x from the clamp
    # (one pass less than torch.where).
    out = lookup(table, (-x).clamp_(0, ELU_NEGATIVE_TABLE.numel() - 1))
    return out.add_(x.clamp(min=0))


def pixels_to_activations(twice_values: torch.Tensor) -> torch.Tensor:
    """The networks' input scale, v / 127.5 - 1, for v = twice_values / 2 (integers or
    half-integers), as activations: round((2v - 255) * 2^12 / 255)."""
    return torch.div((twice_values.to(torch.int64) - 255) * (2 * ACT_ONE) + 255, 2 * 255, rounding_mode="floor")


def pad_replicate(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Replicate padding of an int64 tensor (exact through float64: |x| < 2^53)."""
    return F.pad(x.to(torch.float64), pad, mode="replicate").to(torch.int64)


class ExactConv(nn.Module):
    """An integer convolution (or 2x transposed convolution) of activations.

    out = (conv(x, weight) + bias) >> shift, per output channel, where the weights are
    integers with |w| <= 2^WEIGHT_BITS and `shift` puts the result back at
    2^-ACT_BITS (the bias includes the half that makes the shift round)."""

    def __init__(self, weight_shape: tuple[int, ...], out_channels: int, stride: int, padding: int, transpose: bool):
        super().__init__()
        self.stride, self.padding, self.transpose = stride, padding, transpose
        self.register_buffer("weight", torch.zeros(weight_shape, dtype=torch.int16))
        self.register_buffer("shift", torch.ones(out_channels, dtype=torch.int64))
        self.register_buffer("bias", torch.zeros(out_channels, dtype=torch.int64))
        self._weight64: torch.Tensor | None = None

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int, transpose: bool):
        """Quantise float weights: per output channel, the largest power-of-two scale
        that keeps every weight within 2^WEIGHT_BITS."""
        weight = weight.detach().to(torch.float64).cpu()
        out_dim = 1 if transpose else 0
        out_channels = weight.shape[out_dim]
        per_channel = weight.transpose(0, out_dim).reshape(out_channels, -1)
        largest = per_channel.abs().amax(dim=1).clamp(min=2.0**-20)
        shift = (WEIGHT_BITS - torch.ceil(torch.log2(largest))).to(torch.int64).clamp(1, 40)
        scale_shape = [1] * weight.dim()
        scale_shape[out_dim] = out_channels
        quantised = torch.round(weight * torch.pow(2.0, shift.to(torch.float64)).view(scale_shape))
        layer = cls(tuple(weight.shape), out_channels, stride, padding, transpose)
        layer.weight.copy_(quantised.to(torch.int16))
        layer.shift.copy_(shift)
        float_bias = torch.zeros(out_channels, dtype=torch.float64) if bias is None else bias.detach().double().cpu()
        scaled_bias = torch.round(float_bias * torch.pow(2.0, (shift + ACT_BITS).to(torch.float64)))
        layer.bias.copy_(scaled_bias.to(torch.int64) + torch.bitwise_left_shift(torch.ones_like(shift), shift - 1))
        return layer

    def float_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The float weights and bias this layer computes with (on activations in
        units of one, not 2^-ACT_BITS), the rounding of its output left out."""
        out_dim = 1 if self.transpose else 0
        scale_shape = [1] * self.weight.dim()
        scale_shape[out_dim] = -1
        scale = torch.pow(2.0, -self.shift.to(torch.float64))
        weight = self.weight.to(torch.float64) * scale.view(scale_shape)
        half = torch.bitwise_left_shift(torch.ones_like(self.shift), self.shift - 1)
        bias = (self.bias - half).to(torch.float64) * scale / ACT_ONE
        return weight.float(), bias.float()

    def _apply(self, fn, recurse=True):
        self._weight64 = None  # moved to another device: rebuild the float64 copy
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._weight64 is None:
            self._weight64 = self.weight.to(torch.float64)
        # cuDNN may pick transforming algorithms (Winograd, FFT) that are not exact.
        with torch.backends.cudnn.flags(enabled=False):
            if self.transpose:
                acc = F.conv_transpose2d(x.to(torch.float64), self._weight64, None, self.stride, self.padding)
            else:
                acc = self._convolve(x)
        if compiled(acc) and acc.stride(-1) == 1:
            return self._rescale_compiled(acc)
        out = acc.to(torch.int64)
        del acc  # in place from here on: these tensors are the largest of an exact model
        out += self.bias.view(1, -1, 1, 1)
        out >>= self.shift.view(1, -1, 1, 1)
        return out.clamp_(-ACT_LIMIT, ACT_LIMIT)

    def _rescale_compiled(self, sums: torch.Tensor) -> torch.Tensor:
        """forward's rescaling of the float64 sums in one pass (_kernels.c: rescale)."""
        batch, channels, height, width = sums.shape
        out = torch.empty(batch, channels, height, width, dtype=torch.int64)
        bias, shift = self.bias.contiguous(), self.shift.contiguous()

        def run(first: int, stop: int) -> None:
            kernels.rescale(
                sums.data_ptr(), sums.stride(0), sums.stride(1), sums.stride(2), bias.data_ptr(), shift.data_ptr(),
                ACT_LIMIT, channels, height, width, first, stop, out.data_ptr(),
            )  # fmt: skip

        split_across_threads(run, batch * channels, cost=height * width)
        return out

    def _convolve(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution as one matrix product per kernel tap, accumulated: no
        unfolded copy of the input (1.5-3x faster than conv2d in float64 on CPU, and the
        integer sums make the result the same)."""
        pad = self.padding
        if not pad:
            return shifted_products(x.to(torch.float64), self._weight64, self.stride)
        batch, channels, height, width = x.shape
        padded = x.new_empty(batch, channels, height + 2 * pad, width + 2 * pad, dtype=torch.float64)
        padded[..., pad:-pad, pad:-pad] = x  # converted in the copy: one pass
        for border in (padded[..., :pad, :], padded[..., -pad:, :], padded[..., :, :pad], padded[..., :, -pad:]):
            border.zero_()
        return shifted_products(padded, self._weight64, self.stride)


# Output columns per block of a convolution's matrix products: the block and the
# input columns it reads stay in a core's cache across the kernel taps.
GEMM_BLOCK_COLUMNS = 4096


def shifted_products(padded: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """conv2d(padded, weight, stride=stride) without padding, as a sum over the kernel
    taps (dy, dx) of weight[:, :, dy, dx] @ (the input shifted by the tap). The input
    is split into its stride x stride phases (rows and columns a, b mod stride), each
    flattened, so that every shifted input is a contiguous slice of a phase: the
    outputs are computed on the phases' row length, and the columns past each
    output row are dropped at the end."""
    batch, channels, height, width = padded.shape
    out_channels, _, kernel, _ = weight.shape
    out_height, out_width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    if height % stride or width % stride:
        padded = F.pad(padded, (0, -width % stride, 0, -height % stride))
    phase_height, phase_width = -(-height // stride), -(-width // stride)
    phases = {
        (a, b): padded[:, :, a::stride, b::stride].reshape(batch, channels, phase_height * phase_width)
        for a in range(stride)
        for b in range(stride)
    }
    length = (out_height - 1) * phase_width + out_width
    taps = []  # (weight, phase, offset of the shifted input in the phase) per tap
    for dy in range(kernel):
        for dx in range(kernel):
            offset = (dy // stride) * phase_width + dx // stride
            taps.append((weight[:, :, dy, dx].contiguous(), phases[dy % stride, dx % stride], offset))
    # Uninitialised: the first tap overwrites (beta=0), and what lies past `length`
    # belongs to the dropped columns. On a CPU the output is built in blocks of
    # columns, every tap's product added to a block while it is still in the cache.
    out = padded.new_empty(batch, out_channels, out_height * phase_width)
    block_columns = GEMM_BLOCK_COLUMNS if padded.device.type == "cpu" else length
    for item in range(batch):
        for start in range(0, length, block_columns):
            end = min(length, start + block_columns)
            block = out[item, :, start:end]
            for index, (tap_weight, phase, offset) in enumerate(taps):
                block.addmm_(tap_weight, phase[item, :, offset + start : offset + end], beta=0 if index == 0 else 1)
    return out.view(batch, out_channels, out_height, phase_width)[..., :out_width]
