"""selfvae-codec: a learned image codec whose entropy model is a self-supervised VAE.

    from selfvae_codec import compress, decompress, Codec

The codec is imported lazily, so `selfvae_codec.bitstream` stays free of torch. Every
error a user can cause is a `CodecError` (corrupt files are `ContainerError`s, missing
or corrupt weights `ModelLoadError`s, both CodecErrors).
"""

import os

__version__ = "0.1.0"

# OpenMP threads that wait for work spin for a moment (GNU OpenMP: 30,000 spins, about
# 0.3 ms), then sleep, unless the user chose a policy. Spinning threads fight any other
# busy process for the cores: beside one, 2 threads that spin until there is work took
# 5.16 s where 2 sleeping ones took 2.94 s (benchmarks/results/threads_under_load.csv);
# threads that sleep at once pay a wake-up for each of the networks' thousands of
# small operations: on an idle machine a decode took 6.90 s where a brief spin took 5.79 s
# (benchmarks/results/threads_under_load_decode.csv). OpenMP reads these when torch
# loads it, so they are set before torch is imported.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ.setdefault("GOMP_SPINCOUNT", "30000")

_API = {"Codec", "EncodeResult", "ModelLoadError", "ModelMismatchError", "compress", "decompress", "file_metadata"}


def __getattr__(name):
    if name in ("CodecError", "BadValueError"):
        from . import errors

        return getattr(errors, name)
    if name == "ContainerError":
        from .bitstream import ContainerError

        return ContainerError
    if name in _API:
        from .codec import api

        return getattr(api, name)
    raise AttributeError(f"module 'selfvae_codec' has no attribute {name!r}")


__all__ = sorted(_API | {"BadValueError", "CodecError", "ContainerError"})
