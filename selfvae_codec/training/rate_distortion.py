"""Training a lossy model for rate and distortion (config.qualities > 0).

The loss of an example at quality q is  bits per pixel + lambda_q * MSE  (MSE over
subpixels on the 0..255 scale), the rate counted under the discretized logistics
that code u and the z's, the distortion on rs2's reconstruction as the decoder
walks it (SelfVAE.rate_distortion_terms). Latents get uniform noise in training
and are rounded in validation, as the coder rounds them. Each example of a batch
draws its quality, so one model learns every quality's steps.
"""

from __future__ import annotations

import torch

from ..metrics import psnr_from_mse
from ..models.config import ModelConfig
from ..models.selfvae import SelfVAE


def parse_lambdas(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError as error:
        raise ValueError(f"--lambdas must be comma-separated numbers, got {text!r}") from error
    if not values or any(v <= 0 for v in values) or values != sorted(values):
        raise ValueError(f"--lambdas must be positive and increasing (one per quality), got {text!r}")
    return values


def _bits(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per example: the sum of the rate terms (bits)."""
    return sum(value for name, value in terms.items() if name.startswith("rate_"))


def rate_distortion_loss(
    model: SelfVAE,
    x: torch.Tensor,
    lambdas: torch.Tensor,
    coarse_weight: float = 0.0,
    conditional_weight: float = 0.0,
    mixed: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of a batch (each example at a random quality) and what to log:
    bits per pixel of each latent, the MSE and the loss. The distortion is the image's
    MSE plus `coarse_weight` times the coarser levels' mean MSE (which keeps each
    level a faithful downscale, what the next level's network learnt to refine).
    `conditional_weight` adds that weight times the bits per pixel of the example's
    conditional file (bpp_conditional), which trains the y likelihoods that mode
    codes with. With `mixed`, the decoder walks on rounded latents, as the coder
    sends them (the rate stays on noisy ones)."""
    quality = torch.randint(len(lambdas), (x.shape[0],)).to(x.device)
    terms = model.rate_distortion_terms(x, quality, noisy=True, mixed=mixed)
    pixels = x.shape[2] * x.shape[3]
    rate = _bits(terms) / pixels
    mse = terms["squared_error"] / (pixels * x.shape[1])
    distortion = mse + coarse_weight * terms["coarse_mse"]
    loss = (rate + lambdas.to(x.device)[quality] * distortion).mean()
    extra = {}
    if conditional_weight > 0:
        conditional_rate = _bits(model.rate_distortion_terms(x, quality, noisy=True, conditional=True)) / pixels
        loss = loss + conditional_weight * conditional_rate.mean()
        extra["bpp_conditional"] = float(conditional_rate.detach().mean())
    record = {
        name.replace("rate_", "bpp_"): float(value.detach().mean()) / pixels
        for name, value in terms.items()
        if name.startswith("rate_")
    }
    record.update(
        bpp=float(rate.detach().mean()),
        mse=float(mse.detach().mean()),
        coarse_mse=float(terms["coarse_mse"].detach().mean()),
        total=float(loss.detach()),
        **extra,
    )
    return loss, record


@torch.no_grad()
def validate_rate_distortion(model: SelfVAE, crops: torch.Tensor, lambdas: list[float], device) -> dict[str, float]:
    """Rounded latents (what the coder sends) at every quality: bpp_qN, psnr_qN (of the
    mean MSE) of rs2, bpp_conditional_qN of conditional files, and 'total', the rs2
    loss averaged over the qualities."""
    out: dict[str, float] = {}
    losses = []
    for q, lam in enumerate(lambdas):
        bits = squared = conditional_bits = 0.0
        for start in range(0, len(crops), 8):
            batch = crops[start : start + 8].to(device)
            quality = torch.full((len(batch),), q, dtype=torch.int64, device=device)
            terms = model.rate_distortion_terms(batch, quality, noisy=False)
            bits += float(_bits(terms).sum())
            squared += float(terms["squared_error"].sum())
            conditional = model.rate_distortion_terms(batch, quality, noisy=False, conditional=True)
            conditional_bits += float(_bits(conditional).sum())
        pixels = crops.shape[0] * crops.shape[2] * crops.shape[3]
        bpp, mse = bits / pixels, squared / (pixels * crops.shape[1])
        out[f"bpp_q{q}"], out[f"psnr_q{q}"] = bpp, psnr_from_mse(mse)
        out[f"bpp_conditional_q{q}"] = conditional_bits / pixels
        losses.append(bpp + lam * mse)
    out["total"] = sum(losses) / len(losses)
    return out


def lossy_model_from(source: SelfVAE, qualities: int) -> SelfVAE:
    """A lossy model (`qualities` settings) that starts from a trained lossless float
    model's networks: every tensor is copied, and each posterior's first convolution,
    which gains the decoder's coarser level as extra input channels, gets zero weights
    there, so the posteriors start as the source's."""
    if source.config.exact or source.config.lossy:
        raise ValueError("start a lossy model from a lossless float model")
    config = ModelConfig.from_dict({**source.config.to_dict(), "qualities": qualities})
    model = SelfVAE(config)
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in source.state_dict().items():
            target = state[name]
            if target.shape == tensor.shape:
                target.copy_(tensor)
            elif name.endswith("posterior_net.stem.weight_v"):
                target.zero_()
                target[:, : tensor.shape[1]] = tensor
            else:
                raise ValueError(f"{name}: {tuple(tensor.shape)} does not fit {tuple(target.shape)}")
    return model
