"""Grow a trained run into a larger model, and training goes on from there instead
of from scratch.

- Block counts: the new layers are residual blocks in the likelihood heads or after
  the likelihood trunks, whose last convolution starts at zero (`ResidualBlock`), so
  the grown model computes exactly the source's function at the moment of growing.
- z strides: a level's z moves to another resolution. Its latent networks (posterior,
  prior and the trunk's reading of z) keep the layers that still fit (the same stem
  and the first resampling stages), lose the others and gain new ones. Every other
  tensor is the source's, but the model is a different function: the decoder must
  learn to read the new z (docs/training.md: the lossy run that did it).
The target run is a normal run folder: `selfvae-codec train -o TARGET` resumes it
(same step, optimiser state per parameter, moving average, RNG states), with the
learning rate warming up again from the step of growing.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch

from ..models.config import BLOCK_FIELDS, ModelConfig
from ..models.io import save_model
from ..models.selfvae import SelfVAE
from .trainer import AVERAGE_FILE, CHECKPOINT_FILE, LOG_FILE, save_checkpoint_file, stored_average

GROW_FIELDS = BLOCK_FIELDS + ("z_strides",)
# A level's networks that read or write z_k at its resolution.
LATENT_NETWORKS = ("posterior_net", "prior_from_coarse", "prior_from_prev", "context_from_z")


def _restrided_levels(old: ModelConfig, new: ModelConfig) -> list[int]:
    """The levels whose z_k is at another resolution, or whose z_{k-1} is."""
    old_strides, new_strides = old.level_z_strides, new.level_z_strides
    moved = [a != b for a, b in zip(old_strides, new_strides, strict=True)]
    return [k for k in range(len(moved)) if moved[k] or (k > 0 and moved[k - 1])]


def _grown_model(config: ModelConfig, weights: dict[str, torch.Tensor], restrided: list[int]) -> SelfVAE:
    """The grown model with every tensor it shares with `weights` copied from them;
    only the new blocks' tensors and the `restrided` levels' latent networks may
    differ."""
    model = SelfVAE(config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    changing = tuple(f"levels.{k}.{network}." for k in restrided for network in LATENT_NETWORKS)

    def may_be_new(name: str) -> bool:
        return ".blocks." in name or ".trunk_blocks." in name or name.startswith(changing)

    if any(not name.startswith(changing) for name in unexpected) or not all(map(may_be_new, missing)):
        raise ValueError(f"the source does not fit the grown model (unexpected {unexpected}, missing {missing})")
    return model


def _grown_optimizer_state(old_state: dict, old_names: list[str], new_names: list[str]) -> dict:
    """AdaMax state keyed by the grown model's parameter order: each parameter kept
    keeps its moments, the new ones start without any, dropped ones lose theirs."""
    new_index = {name: i for i, name in enumerate(new_names)}
    state = {new_index[old_names[i]]: moments for i, moments in old_state["state"].items() if old_names[i] in new_index}
    (group,) = old_state["param_groups"]
    return {"state": state, "param_groups": [{**group, "params": list(range(len(new_names)))}]}


def grow_run(source: str | Path, target: str | Path, **changes: tuple[int, ...]) -> SelfVAE:
    """Write TARGET/checkpoint.pt, latest.safetensors and log.jsonl: SOURCE's run
    with the block counts or z strides given, per level (`head_blocks=`: residual
    blocks per likelihood head, `trunk_blocks=`: wide residual blocks after each
    likelihood trunk, `z_strides=`: see ModelConfig). Returns the grown model (the
    raw weights)."""
    source, target = Path(source), Path(target)
    if not changes or set(changes) - set(GROW_FIELDS):
        raise ValueError(f"grow by one or more of {GROW_FIELDS}, got {sorted(changes)}")
    if (target / CHECKPOINT_FILE).exists():
        raise FileExistsError(f"{target} already holds a run")
    state = torch.load(source / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    old_config = ModelConfig.from_json(state["config"])
    config = dataclasses.replace(old_config, **{name: tuple(values) for name, values in changes.items()})
    pairs = zip(
        config.level_head_blocks + config.level_trunk_blocks,
        old_config.level_head_blocks + old_config.level_trunk_blocks,
        strict=True,
    )
    if any(new < old for new, old in pairs):
        raise ValueError("growing cannot remove blocks")
    restrided = _restrided_levels(old_config, config)
    torch.manual_seed(0)  # the new layers' initial weights
    model = _grown_model(config, state["model"], restrided)
    new_names = [name for name, _ in model.named_parameters()]
    # Modules register in the same order with or without the new layers, so the
    # source's parameters are numbered in the grown order, where layers that were
    # dropped (restrided latent networks) are skipped.
    old_model = SelfVAE(old_config)
    old_names = [name for name, _ in old_model.named_parameters()]
    target.mkdir(parents=True, exist_ok=True)
    grown = dict(state, model=model.state_dict(), config=config.to_json())
    grown["optimizer"] = _grown_optimizer_state(state["optimizer"], old_names, new_names)
    # The learning rate warms up again from this step: AdaMax moves a parameter
    # without moments by the full rate in every coordinate on its first step, which
    # would throw the new blocks' outputs far off (docs/training.md); warmed up, the
    # new moments form while the steps are small.
    grown["warmup_start"] = state["step"]
    if "ema_fingerprint" in state:
        source_average = stored_average(source, state)
        if source_average is None:
            raise ValueError(f"{source / AVERAGE_FILE} is not the checkpoint's moving average")
        # The new tensors of the average start where the raw weights' start.
        average_weights = {**model.state_dict(), **source_average}
        average = _grown_model(config, average_weights, restrided)
        extra = {"step": state["step"], "ema_decay": json.loads(state["settings"])["ema_decay"]}
        grown["ema_fingerprint"] = save_model(average, target / AVERAGE_FILE, extra=extra)
    if (source / LOG_FILE).is_file():
        shutil.copyfile(source / LOG_FILE, target / LOG_FILE)
    with open(target / LOG_FILE, "a") as handle:
        record = {"kind": "grow", "step": state["step"], "source": str(source)}
        record.update({name: list(values) for name, values in changes.items()})
        handle.write(json.dumps(record) + "\n")
    # Written last: a folder without checkpoint.pt is not a run yet.
    save_checkpoint_file(grown, target / CHECKPOINT_FILE)
    return model
