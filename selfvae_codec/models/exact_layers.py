"""The convolutions of a model and their exact replacements: what building an exact
model needs before any weights exist (SelfVAE's constructor) and what converting a
trained float model needs (exact.to_exact)."""

from __future__ import annotations

from torch import nn

from .fixed_point import ExactConv
from .layers import WNConv2d, WNConvTranspose2d


def conv_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, (WNConv2d, WNConvTranspose2d, nn.Conv2d))
    }


def replace_layer(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def conv_geometry(layer: nn.Module) -> tuple[tuple[int, ...], int, int, int, bool]:
    """(weight shape, output channels, stride, padding, transposed) of a float conv."""
    if isinstance(layer, WNConvTranspose2d):
        shape = tuple(layer.weight_v.shape)
        return shape, shape[1], 2, 1, True
    if isinstance(layer, WNConv2d):
        shape = tuple(layer.weight_v.shape)
        return shape, shape[0], layer.stride, layer.padding, False
    return tuple(layer.weight.shape), layer.out_channels, layer.stride[0], layer.padding[0], False


def make_exact_layers(model: nn.Module) -> None:
    """Replace every float convolution by an empty ExactConv of the same geometry (to
    be filled by load_state_dict or `to_exact`)."""
    for name, layer in conv_layers(model).items():
        shape, out_channels, stride, padding, transpose = conv_geometry(layer)
        replace_layer(model, name, ExactConv(shape, out_channels, stride, padding, transpose))
