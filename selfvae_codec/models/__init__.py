"""The selfVAE family: networks, distributions, transforms (no entropy coding here).

Imported lazily, so that reading the registry of shipped models (`models.pretrained`)
does not import torch.
"""

_EXPORTS = {
    "ModelConfig": "config",
    "default_config": "config",
    "SelfVAE": "selfvae",
    "parameter_count": "selfvae",
}


def __getattr__(name):
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
