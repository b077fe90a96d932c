"""Exact models: a trained float model converted to integer weights and fixed-point
arithmetic (post-training quantisation, no data needed).

An exact model is a SelfVAE whose config says `exact`: every convolution is an
`ExactConv` (integer weights, per-channel shifts, integer biases), its networks
compute on int64 activations, and its heads return ExactLogisticMixture and
ExactGaussian. Its state dict holds only those integers (plus any float prior
parameters that never reach the coder), so its fingerprint covers exactly what
decides the probabilities.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from .exact_layers import conv_geometry, conv_layers, replace_layer
from .fixed_point import ACT_ONE, ExactConv
from .layers import WNConv2d, WNConvTranspose2d
from .levels import QualityFilm
from .selfvae import SelfVAE


def quality_films(model: SelfVAE) -> list[QualityFilm]:
    """A quality_film model's films in a fixed order (none for other models)."""
    return [module for module in model.modules() if isinstance(module, QualityFilm)]


def _steps_q12(log_steps: torch.Tensor) -> torch.Tensor:
    return torch.round(torch.exp(log_steps.double()) * ACT_ONE).clamp(min=1).to(torch.int64)


def to_exact(model: SelfVAE, keep: SelfVAE | None = None) -> SelfVAE:
    """The exact model of a trained float model: each convolution's effective weights
    (weight norm folded in) and bias quantised per output channel.

    With `keep`, an exact model whose float twin `model` was trained from (a decoder
    distilled from it), every convolution still holding the twin's weights takes
    `keep`'s integers: quantising the twin can differ from `keep` by a rounding, so
    what was not trained (the encoder, the priors) stays bit for bit what it was,
    and so do the latents a file sends."""
    if model.config.exact:
        return model
    exact = SelfVAE(dataclasses.replace(model.config, exact=True))
    kept = _untrained_layers(model, keep) if keep is not None else {}
    for name, layer in conv_layers(model).items():
        if name in kept:
            replace_layer(exact, name, copy.deepcopy(kept[name]))
            continue
        _, _, stride, padding, transpose = conv_geometry(layer)
        weight = layer.weight() if isinstance(layer, (WNConv2d, WNConvTranspose2d)) else layer.weight
        replace_layer(exact, name, ExactConv.from_float(weight, layer.bias, stride, padding, transpose))
    if model.config.lossy:  # the latent steps, rounded to multiples of 2^-12
        with torch.no_grad():
            exact.u_steps_q12.copy_(_steps_q12(model.u_log_steps))
            exact.z_steps_q12.copy_(_steps_q12(model.z_log_steps))
    for exact_film, film in zip(quality_films(exact), quality_films(model), strict=True):
        exact_film.table.copy_(film.exact_table())
    # Parameters outside the convolutions (a mixture-of-Gaussians prior's) are copied.
    float_state = model.state_dict()
    with torch.no_grad():
        for name, tensor in exact.state_dict().items():
            if tensor.is_floating_point() and name in float_state:
                tensor.copy_(float_state[name])
    return exact.eval()


def _untrained_layers(model: SelfVAE, keep: SelfVAE) -> dict[str, ExactConv]:
    """`keep`'s exact convolutions whose float twin's tensors `model`'s layers of the
    same name still hold."""
    if not keep.config.exact:
        raise ValueError("the model whose integers are kept must be exact")
    twin_layers, kept_layers = conv_layers(float_twin(keep)), dict(keep.named_modules())
    untrained = {}
    for name, layer in conv_layers(model).items():
        twin = twin_layers.get(name)
        if twin is None or type(twin) is not type(layer):
            continue
        ours, theirs = layer.state_dict(), twin.state_dict()
        if ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours):
            untrained[name] = kept_layers[name]
    return untrained


def float_twin(exact: SelfVAE) -> SelfVAE:
    """A float model that computes what the exact model `exact` computes, but for the
    rounding of its activations: every convolution takes the exact one's integers as
    float weights and biases. The encoder reckons with it what the exact model's
    coding would cost before paying for it (codec/tile_encoding.py)."""
    if not exact.config.exact:
        raise ValueError("float_twin needs an exact model")
    twin = SelfVAE(dataclasses.replace(exact.config, exact=False))
    exact_layers = dict(exact.named_modules())
    with torch.no_grad():
        for name, layer in conv_layers(twin).items():
            weight, bias = exact_layers[name].float_weight_and_bias()
            if isinstance(layer, (WNConv2d, WNConvTranspose2d)):
                reduce_dims = [d for d in range(weight.dim()) if d != layer.out_dim]
                layer.weight_v.copy_(weight)
                layer.weight_g.copy_(weight.pow(2).sum(dim=reduce_dims, keepdim=True).sqrt())
                layer.initialized.fill_(1)
            else:
                layer.weight.copy_(weight)
            if layer.bias is not None:
                layer.bias.copy_(bias)
        if exact.config.lossy:
            twin.u_log_steps.copy_(torch.log(exact.u_steps_q12.double() / ACT_ONE))
            twin.z_log_steps.copy_(torch.log(exact.z_steps_q12.double() / ACT_ONE))
        for twin_film, film in zip(quality_films(twin), quality_films(exact), strict=True):
            twin_film.table.copy_(film.float_table())
        twin_state = twin.state_dict()
        for name, tensor in exact.state_dict().items():  # a mixture-of-Gaussians prior's
            if tensor.is_floating_point() and name in twin_state:
                twin_state[name].copy_(tensor)
    return twin.to(exact.device).eval()
