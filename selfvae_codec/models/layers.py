"""Network building blocks: weight-normalised convolutions with data-dependent
initialisation, DenseNet blocks with channel attention, and resamplers.

Every network here is fully convolutional. Resamplers pad their input by
replication to a multiple of their factor and crop their output to the size the
caller asks for, so any image size works.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import fixed_point


class _WeightNormLayer(nn.Module):
    """w = g * v / ||v||, with g and the bias set from the first batch's statistics.

    `init_scale` is the standard deviation that data-dependent initialisation gives
    the outputs; output heads use a small one so they start near zero but not at it
    (a zero-initialised mixture head keeps all components identical forever).
    """

    def __init__(self, weight_shape: tuple[int, ...], out_dim: int, init_scale: float):
        super().__init__()
        self.out_dim = out_dim
        self.init_scale = init_scale
        self.data_init_pending = False
        self.weight_v = nn.Parameter(torch.randn(weight_shape) * 0.05)
        g_shape = [1] * len(weight_shape)
        g_shape[out_dim] = weight_shape[out_dim]
        self.weight_g = nn.Parameter(torch.full(g_shape, init_scale))
        self.bias = nn.Parameter(torch.zeros(weight_shape[out_dim]))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def weight(self) -> torch.Tensor:
        reduce_dims = [d for d in range(self.weight_v.dim()) if d != self.out_dim]
        norm = self.weight_v.pow(2).sum(dim=reduce_dims, keepdim=True).sqrt()
        return self.weight_g * self.weight_v / norm

    def _linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._linear(x, self.weight())
        if self.data_init_pending and not self.initialized:
            with torch.no_grad():
                mean = out.mean(dim=(0, 2, 3))
                std = out.std(dim=(0, 2, 3)).clamp(min=1e-6)
                scale = self.init_scale / std
                self.weight_g.mul_(scale.view(self.weight_g.shape))
                self.bias.copy_(-mean * scale)
                self.initialized.fill_(1)
            self.data_init_pending = False
            out = self._linear(x, self.weight())
        return out + self.bias.view(1, -1, 1, 1)


class WNConv2d(_WeightNormLayer):
    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        init_scale: float = 1.0,
    ):
        super().__init__((out_ch, in_ch, kernel_size, kernel_size), 0, init_scale)
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding

    def _linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, None, self.stride, self.padding)


class WNConvTranspose2d(_WeightNormLayer):
    """Exact 2x upsampling: kernel 4, stride 2, padding 1."""

    def __init__(self, in_ch: int, out_ch: int, init_scale: float = 1.0):
        super().__init__((in_ch, out_ch, 4, 4), 1, init_scale)

    def _linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, weight, None, 2, 1)


@contextlib.contextmanager
def data_dependent_init(model: nn.Module) -> Iterator[None]:
    """Within this block, each not-yet-initialised weight-norm layer sets its scale
    and bias from the statistics of the first batch it sees."""
    layers = [m for m in model.modules() if isinstance(m, _WeightNormLayer)]
    for layer in layers:
        layer.data_init_pending = not bool(layer.initialized)
    try:
        with torch.no_grad():
            yield
    finally:
        for layer in layers:
            layer.data_init_pending = False


def elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of float activations, or of an exact model's integer ones."""
    return F.elu(x) if x.is_floating_point() else fixed_point.elu(x)


class ELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return elu(x)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: rescale channels by a gate computed from their means."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            gate = x.mean(dim=(2, 3), keepdim=True)
            return x * torch.sigmoid(self.excite(F.elu(self.squeeze(gate))))
        count = x.shape[2] * x.shape[3]
        gate = torch.div(x.sum(dim=(2, 3), keepdim=True), count, rounding_mode="floor")
        gate = fixed_point.sigmoid(self.excite(fixed_point.elu(self.squeeze(gate))), fixed_point.ACT_BITS)
        return fixed_point.round_shift(x * (gate >> 15), 15)


class DenseBlock(nn.Module):
    """DenseNet block (each layer sees all earlier outputs), a 1x1 transition back to
    `width`, channel attention at the end, and a residual connection."""

    def __init__(self, width: int, growth: int, layers: int):
        super().__init__()
        self.growth = growth
        self.layers = nn.ModuleList(WNConv2d(width + i * growth, growth, 3) for i in range(layers))
        self.transition = WNConv2d(width + layers * growth, width, 1, init_scale=0.1)
        self.attention = ChannelAttention(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            return x + self.attention(self._exact_features(x))
        features = [x]
        for layer in self.layers:
            features.append(layer(elu(torch.cat(features, dim=1))))
        out = self.transition(elu(torch.cat(features, dim=1)))
        return x + self.attention(out)

    def _exact_features(self, x: torch.Tensor) -> torch.Tensor:
        """The transition's output for integer activations, with each feature's ELU
        computed once, into one buffer whose leading channels each layer reads (the
        same integers as the ELU of each concatenation; float models keep the form
        above, whose float results files may depend on)."""
        width, growth = x.shape[1], self.growth
        activated = x.new_empty(x.shape[0], width + len(self.layers) * growth, *x.shape[2:])
        activated[:, :width] = elu(x)
        for index, layer in enumerate(self.layers):
            channels = width + index * growth
            activated[:, channels : channels + growth] = elu(layer(activated[:, :channels]))
        return self.transition(activated)


def log2_int(factor: int) -> int:
    steps = int(round(math.log2(factor)))
    if factor < 1 or 2**steps != factor:
        raise ValueError(f"resampling factor must be a power of two, got {factor}")
    return steps


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the bottom / right so height and width divide by `multiple`."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    if not x.is_floating_point():
        return fixed_point.pad_replicate(x, (0, pad_w, 0, pad_h))
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


class Downsample(nn.Module):
    """`factor`x fewer positions through strided convolutions, each followed by a
    dense block. Output size is ceil(input / factor)."""

    def __init__(self, in_ch: int, width: int, factor: int, growth: int, layers: int):
        super().__init__()
        self.factor = factor
        self.stem = WNConv2d(in_ch, width, 3)
        stages = []
        for _ in range(log2_int(factor)):
            stages += [WNConv2d(width, width, 3, stride=2, padding=1), DenseBlock(width, growth, layers)]
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(pad_to_multiple(x, self.factor))
        for stage in self.stages:
            out = stage(out if isinstance(stage, DenseBlock) else elu(out))
        return out


class Upsample(nn.Module):
    """`factor`x more positions through transposed convolutions, cropped to `size`."""

    def __init__(self, in_ch: int, width: int, factor: int):
        super().__init__()
        self.stem = WNConv2d(in_ch, width, 3)
        self.stages = nn.ModuleList(WNConvTranspose2d(width, width) for _ in range(log2_int(factor)))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.stem(x)
        for stage in self.stages:
            out = stage(elu(out))
        return out[..., : size[0], : size[1]]
