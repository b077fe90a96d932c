"""Saving and loading model weights (safetensors: no pickle, no code execution)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import CodecError
from ..files import new_file_mode
from .config import ModelConfig
from .selfvae import SelfVAE


class ModelLoadError(CodecError):
    """A weights file is missing, corrupt, or does not match its recorded hash."""


def save_model(model: SelfVAE, path: str | Path, extra: dict | None = None) -> str:
    """Write weights + config atomically; returns the model fingerprint."""
    path = Path(path)
    fingerprint = model.fingerprint()
    metadata = {"config": model.config.to_json(), "fingerprint": fingerprint}
    if extra:
        metadata["extra"] = json.dumps(extra, sort_keys=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.chmod(tmp, new_file_mode())  # safetensors creates files readable by the owner only
    os.replace(tmp, path)
    return fingerprint


def read_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(path: str | Path, expected_sha256: str | None = None, device: str = "cpu") -> SelfVAE:
    """Load a model saved by `save_model`, optionally checking the file's hash."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise ModelLoadError(f"model file {path} does not match its recorded SHA-256 (corrupt or replaced)")
    try:
        metadata = read_metadata(path)
        config = ModelConfig.from_json(metadata["config"])
        tensors = load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises several types for a bad file
        raise ModelLoadError(f"cannot read model file {path}: {error}") from error
    model = SelfVAE(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ModelLoadError(
            f"model file {path} does not fit its config (missing {len(missing)}, unexpected {len(unexpected)} tensors)"
        )
    model.eval()
    return model.to(torch.device(device))
