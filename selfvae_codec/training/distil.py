"""A lighter lossy decoder from a trained one (`selfvae-codec distil`).

The student is the teacher with fewer wide residual blocks after a level's likelihood
trunk (the first blocks kept), which is where an rs2 decode spends most of its
arithmetic. Its encoder, latent priors and the levels left as they were are the
teacher's and stay frozen, so every latent a file sends, and so its rate, is the
teacher's. What is trained is the shortened levels' decoding path (their context
block, trunk blocks and pixel heads), on the log of the rs2 reconstruction's squared
error with the latents rounded as the coder sends them, at qualities drawn at random:
the student learns to rebuild the image from the same bits with less arithmetic.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import torch

from ..metrics import psnr_from_mse
from ..models.levels import DECODING_MODULES, QualityFilm
from ..models.selfvae import SelfVAE
from .data import RandomCropSampler

# The parts of a level that turn the coarser level and its z into y_k's pixels.
DECODING_PARTS = (*DECODING_MODULES, "quality_films")
# The quality gains and biases learn this many times faster than the shared weights:
# they start at zero and hold a few numbers each, which the shared rate would move slowly.
FILM_LR_SCALE = 10.0


def shortened(teacher: SelfVAE, trunk_blocks: tuple[int, ...], quality_film: bool = False) -> SelfVAE:
    """A float copy of the lossy float model `teacher` with level k's trunk cut to its
    first trunk_blocks[k] blocks, and with `quality_film` told the quality
    (config.quality_film; the gains and biases a teacher without them lacks start as
    the identity); every other tensor is the teacher's."""
    config = teacher.config
    if config.exact or not config.lossy:
        raise ValueError("distil starts from a lossy float model (the float twin of an exact one will do)")
    if len(trunk_blocks) != len(config.trunk_blocks):
        raise ValueError(f"give {len(config.trunk_blocks)} trunk block counts, one per level")
    if any(not 0 <= new <= old for new, old in zip(trunk_blocks, config.trunk_blocks, strict=True)):
        raise ValueError(f"each level keeps at most its {config.trunk_blocks} trunk blocks, not {trunk_blocks}")
    film = config.quality_film or quality_film
    student = SelfVAE(dataclasses.replace(config, trunk_blocks=tuple(trunk_blocks), quality_film=film))
    kept = student.state_dict()
    taken = {name: tensor for name, tensor in teacher.state_dict().items() if name in kept}
    student.load_state_dict(taken, strict=False)
    missing = set(kept) - set(taken)
    if any(".quality_films." not in name for name in missing):
        raise ValueError(f"the teacher lacks {sorted(missing)[:3]}")
    return student


def with_upper_decoding(lower: SelfVAE, upper: SelfVAE, first_quality: int) -> SelfVAE:
    """One lossy float model from two that send the same latents: `lower`'s, whose last
    level rebuilds the qualities from `first_quality` (1-based) up with `upper`'s
    decoding parts (config.upper_decoding), such as the teacher's own decoding where a
    student fitted to the low qualities rebuilds the top ones worse."""
    if lower.config.exact or upper.config.exact:
        raise ValueError("with_upper_decoding joins float models (the float twin of an exact one will do)")
    if dataclasses.replace(upper.config, quality_film=False) != dataclasses.replace(lower.config, quality_film=False):
        raise ValueError("the two models differ in more than their quality films")
    joined = SelfVAE(dataclasses.replace(lower.config, upper_decoding=first_quality))
    state = dict(lower.state_dict())
    last = f"levels.{len(lower.levels) - 1}."
    upper_state = upper.state_dict()
    for name, tensor in upper_state.items():
        part = name[len(last) :].split(".")[0] if name.startswith(last) else None
        if part in DECODING_MODULES:  # the upper decoding has no quality films
            state[f"{last}upper.{name[len(last) :]}"] = tensor
        elif ".quality_films." not in name and not torch.equal(tensor, state[name]):
            raise ValueError(f"the two models send different latents ({name} differs)")
    joined.load_state_dict(state)
    return joined.eval()


def decoding_parameters(
    student: SelfVAE, teacher_blocks: tuple[int, ...], levels: list[int] | None = None
) -> list[torch.nn.Parameter]:
    """The trainable parameters: the decoding parts of `levels` (0-based), by default
    of the levels whose trunk was cut. Naming a level whose trunk was not cut trains
    the teacher's own decoding there on the rounded latents."""
    if levels is None:
        pairs = zip(student.config.trunk_blocks, teacher_blocks, strict=True)
        levels = [k for k, (new, old) in enumerate(pairs) if new < old]
    if not levels or not all(0 <= k < len(teacher_blocks) for k in levels):
        raise ValueError(f"train the decoding of some of levels 1 to {len(teacher_blocks)}")
    prefixes = tuple(f"levels.{k}.{part}." for k in levels for part in DECODING_PARTS)
    return [parameter for name, parameter in student.named_parameters() if name.startswith(prefixes)]


def reconstruction_psnr(model: SelfVAE, crops: torch.Tensor, qualities: list[int]) -> dict[int, float]:
    """rs2's PSNR (of the mean squared error) on crops [N, 3, H, W] at each quality
    (0-based), the latents rounded as the coder sends them."""
    out = {}
    with torch.no_grad():
        for quality in qualities:
            squared = 0.0
            for start in range(0, len(crops), 8):
                batch = crops[start : start + 8]
                picked = torch.full((len(batch),), quality, dtype=torch.int64)
                squared += float(model.rate_distortion_terms(batch, picked, noisy=False)["squared_error"].sum())
            mse = squared / crops.numel()
            out[quality] = psnr_from_mse(mse)
    return out


def fine_tune(
    student: SelfVAE,
    parameters: list[torch.nn.Parameter],
    sampler: RandomCropSampler,
    seconds: float,
    learning_rate: float,
    batch: int,
    report: Callable[[int, float], None] | None = None,
    max_steps: int | None = None,
    quality_weights: list[float] | None = None,
) -> int:
    """Adam on `parameters` (everything else frozen) for `seconds` (or max_steps):
    the mean over random crops at random qualities of the log of each crop's rs2
    squared error per subpixel, rounded latents (a model's quality gains and biases
    at FILM_LR_SCALE times the learning rate). The log weighs every quality alike
    (in dB), where on the plain squared error the low qualities' large errors drown
    the top ones'; it is floored at 1e-3 (78 dB) so that a crop rebuilt exactly cannot
    make it infinite. Qualities are drawn in proportion to `quality_weights` (default:
    alike). report(step, mean PSNR in dB) every step. Returns the number of steps."""
    for parameter in student.parameters():
        parameter.requires_grad_(False)
    for parameter in parameters:
        parameter.requires_grad_(True)
    films = {id(film.table) for film in student.modules() if isinstance(film, QualityFilm)}
    groups = [
        {"params": [p for p in parameters if id(p) not in films], "lr": learning_rate},
        {"params": [p for p in parameters if id(p) in films], "lr": learning_rate * FILM_LR_SCALE},
    ]
    optimizer = torch.optim.Adam([group for group in groups if group["params"]])
    weights = torch.tensor(quality_weights or [1.0] * student.config.qualities, dtype=torch.float64)
    if len(weights) != student.config.qualities or not (weights >= 0).all() or not weights.sum() > 0:
        raise ValueError(f"give {student.config.qualities} quality weights, not negative, not all zero")
    student.train()
    started, step = time.monotonic(), 0
    while time.monotonic() - started < seconds and (max_steps is None or step < max_steps):
        x = torch.from_numpy(sampler.batch(batch)).long()
        quality = torch.multinomial(weights, batch, replacement=True)
        squared = student.rate_distortion_terms(x, quality, noisy=False)["squared_error"] / x[0].numel()
        loss = torch.log(squared.clamp_min(1e-3)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if report is not None:
            report(step, psnr_from_mse(math.exp(loss.item())))
    student.eval()
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    return step
