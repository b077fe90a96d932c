"""The pretrained models shipped inside the package (no network needed).

Reading the registry needs no torch (`selfvae-codec info` and `models` use it);
loading a model imports it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
REGISTRY_FILE = PRETRAINED_DIR / "models.json"


@lru_cache(maxsize=1)
def _entries() -> dict[str, dict]:
    if not REGISTRY_FILE.is_file():
        return {}
    return json.loads(REGISTRY_FILE.read_text())


# A registry entry with one of these keys has no file of its own: it is an earlier model
# that the named model carries whole, so that its files keep decoding, rebuilt by
# dropping what was added to it: the model whose upper decoding the named one took
# (selfvae.upper_decoding_alone), or the named model without its u context
# (selfvae.without_u_context).
UPPER_DECODING_OF = "upper_decoding_of"
WITHOUT_U_CONTEXT_OF = "without_u_context_of"
CARRIED_BY = (UPPER_DECODING_OF, WITHOUT_U_CONTEXT_OF)


def carried_by(entry: dict) -> str | None:
    """The model a registry entry without a file of its own is rebuilt from, if any."""
    return next((entry[key] for key in CARRIED_BY if key in entry), None)


def carrier(name: str) -> str:
    """The shipped model whose file holds model `name` (itself, or the end of its
    chain of carried_by)."""
    source = carried_by(_entries()[name])
    return name if source is None else carrier(source)


def registry() -> dict[str, dict]:
    """The shipped models: name -> {file, sha256, fingerprint, description, validation
    numbers}."""
    return {name: entry for name, entry in _entries().items() if "retired" not in entry}


def retired_models() -> dict[str, dict]:
    """Models no longer shipped: name -> {fingerprint, description, retired (the
    release that reads their files)}."""
    return {name: entry for name, entry in _entries().items() if "retired" in entry}


def load_pretrained(name: str = "default", device: str = "cpu"):
    """A shipped model by name, checked against its recorded hash and fingerprint."""
    from .io import ModelLoadError, load_model

    entries = registry()
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise ModelLoadError(f"no pretrained model named {name!r} (available: {known})")
    entry = entries[name]
    if carried_by(entry) is not None:
        from .selfvae import upper_decoding_alone, without_u_context

        rebuild = upper_decoding_alone if UPPER_DECODING_OF in entry else without_u_context
        model = rebuild(load_pretrained(carried_by(entry), device))
    else:
        model = load_model(PRETRAINED_DIR / entry["file"], expected_sha256=entry["sha256"], device=device)
    if model.fingerprint() != entry["fingerprint"]:
        raise ModelLoadError(f"pretrained model {name!r} does not match its recorded fingerprint")
    return model


def load_named_model(name: str | Path | None = None, device: str = "cpu"):
    """The one rule for `--model` and `Codec(model=...)`: a path to an existing file or
    anything ending in .safetensors is a weights file; anything else names a shipped
    model; None is the shipped default."""
    from .io import load_model

    if name is None:
        return load_pretrained("default", device)
    if Path(name).is_file() or str(name).endswith(".safetensors"):
        return load_model(name, device=device)
    return load_pretrained(str(name), device)


LOSSY_MODEL = "lossy"  # the shipped model for the lossy modes, when there is one
# The modes whose shipped model is the lossy one. In conditional its z's carry the
# detail that the lossless model's do not: its rebuilt image is 3 dB and more above
# bicubic upscaling of the same exact half-resolution image, the lossless model's
# 0.5 dB (benchmarks/results).
SHIPPED_LOSSY_MODES = ("rs2", "rs1", "conditional")
# The modes whose measured rates a lossy model's registry entry records per quality
# (as "<mode>_points"): `publish` writes them, `models` lists them.
RATED_MODES = ("rs2", "conditional")
# Shipped beside the two coding models: the float weights `default` was converted from
# (what `evaluate` scores and training starts from). `models` names it on one line,
# with the earlier models that read their files (CARRIED_BY).
SUPPORTING_MODELS = ("default-float",)


def default_model_for(mode: str) -> str:
    """The shipped model a mode uses unless told otherwise: the lossy model for the
    modes it is trained for, `default` (lossless) for the rest."""
    return LOSSY_MODEL if mode in SHIPPED_LOSSY_MODES and LOSSY_MODEL in registry() else "default"


def find_by_fingerprint(fingerprint: str) -> str | None:
    """The name of the shipped model with this fingerprint, if any."""
    for name, entry in registry().items():
        if entry["fingerprint"] == fingerprint:
            return name
    return None


def find_retired(fingerprint: str) -> str | None:
    """The name of the retired model with this fingerprint, if any."""
    for name, entry in retired_models().items():
        if entry["fingerprint"] == fingerprint:
            return name
    return None


def model_for_file(fingerprint: str) -> str:
    """The shipped model that made a file (by its fingerprint), or a one-line error
    naming the retired model and the release that reads it."""
    from .io import ModelLoadError

    name = find_by_fingerprint(fingerprint)
    if name is not None:
        return name
    retired = find_retired(fingerprint)
    if retired is not None:
        raise ModelLoadError(
            f"the file was made with model {retired} ({fingerprint[:12]}), which this version no longer "
            f"ships; {retired_models()[retired]['retired']}, or decode it with that model's weights file"
        )
    raise ModelLoadError(
        f"the file was made with model {fingerprint[:12]}, which is not shipped with this version; "
        "decode it with that model's weights file"
    )


def float_source(name: str | Path | None) -> str | Path | None:
    """The float model a shipped exact model was converted from (what `evaluate`
    scores), or `name` itself."""
    entry = registry().get("default" if name is None else str(name), {})
    return find_by_fingerprint(entry["source_fingerprint"]) if "source_fingerprint" in entry else name


def publish(weights: str | Path, name: str, description: str, exact: bool = False, **numbers) -> dict:
    """Copy trained weights into the package and record their hash, fingerprint and
    measured numbers in models.json (a developer tool: the result is committed).
    With `exact`, ship the exact (integer) conversion of the float weights instead."""
    import shutil

    from .exact import to_exact
    from .io import file_sha256, load_model, save_model

    model = load_model(weights)
    target = PRETRAINED_DIR / f"{name}.safetensors"
    numbers = {key: value for key, value in numbers.items() if value is not None}
    if exact and not model.config.exact:
        numbers["source_fingerprint"] = model.fingerprint()
        model = to_exact(model)
        save_model(model, target)
    elif Path(weights).resolve() != target.resolve():
        shutil.copyfile(weights, target)
    entries = dict(_entries())  # the retired models' entries too
    entries[name] = {
        "file": target.name,
        "sha256": file_sha256(target),
        "fingerprint": model.fingerprint(),
        "description": description,
        "exact": model.config.exact,
        **numbers,
    }
    REGISTRY_FILE.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    _entries.cache_clear()
    return entries[name]
