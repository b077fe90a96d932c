"""Grow a trained run into a larger model that computes exactly the same function.

The new layers are residual blocks in the likelihood heads or after the likelihood
trunks, whose last convolution starts at zero (`ResidualBlock`), so the grown
model's ELBO equals the source's at the moment of growing, and training goes on
from there instead of from scratch.
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


def _grown_model(config: ModelConfig, weights: dict[str, torch.Tensor]) -> SelfVAE:
    """The grown model with every existing tensor copied from `weights`; only the
    new blocks' tensors may be missing from them."""
    model = SelfVAE(config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or any(".blocks." not in name and ".trunk_blocks." not in name for name in missing):
        raise ValueError(f"the source does not fit the grown model (unexpected {unexpected}, missing {missing})")
    return model


def _grown_optimizer_state(old_state: dict, old_names: list[str], new_names: list[str]) -> dict:
    """AdaMax state keyed by the grown model's parameter order: each old parameter
    keeps its moments, the new ones start without any."""
    new_index = {name: i for i, name in enumerate(new_names)}
    state = {new_index[old_names[i]]: moments for i, moments in old_state["state"].items()}
    (group,) = old_state["param_groups"]
    return {"state": state, "param_groups": [{**group, "params": list(range(len(new_names)))}]}


def grow_run(source: str | Path, target: str | Path, **blocks: tuple[int, ...]) -> SelfVAE:
    """Write TARGET/checkpoint.pt, latest.safetensors and log.jsonl: SOURCE's run
    with the block counts given (`head_blocks=`: residual blocks per likelihood head,
    `trunk_blocks=`: wide residual blocks after each likelihood trunk; per level).
    Returns the grown model (the raw weights)."""
    source, target = Path(source), Path(target)
    if not blocks or set(blocks) - set(BLOCK_FIELDS):
        raise ValueError(f"grow by one or more of {BLOCK_FIELDS}, got {sorted(blocks)}")
    if (target / CHECKPOINT_FILE).exists():
        raise FileExistsError(f"{target} already holds a run")
    state = torch.load(source / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    old_config = ModelConfig.from_json(state["config"])
    config = dataclasses.replace(old_config, **{name: tuple(counts) for name, counts in blocks.items()})
    pairs = zip(
        config.level_head_blocks + config.level_trunk_blocks,
        old_config.level_head_blocks + old_config.level_trunk_blocks,
        strict=True,
    )
    if any(new < old for new, old in pairs):
        raise ValueError("growing cannot remove blocks")
    torch.manual_seed(0)  # the new blocks' (irrelevant to the output) inner weights
    model = _grown_model(config, state["model"])
    new_names = [name for name, _ in model.named_parameters()]
    # Modules register in the same order with or without the new blocks, so the
    # source's parameter order is the grown one without them.
    old_names = [name for name in new_names if name in state["model"]]
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
        average = _grown_model(config, average_weights)
        extra = {"step": state["step"], "ema_decay": json.loads(state["settings"])["ema_decay"]}
        grown["ema_fingerprint"] = save_model(average, target / AVERAGE_FILE, extra=extra)
    if (source / LOG_FILE).is_file():
        shutil.copyfile(source / LOG_FILE, target / LOG_FILE)
    with open(target / LOG_FILE, "a") as handle:
        record = {"kind": "grow", "step": state["step"], "source": str(source)}
        record.update({name: list(counts) for name, counts in blocks.items()})
        handle.write(json.dumps(record) + "\n")
    # Written last: a folder without checkpoint.pt is not a run yet.
    save_checkpoint_file(grown, target / CHECKPOINT_FILE)
    return model
