"""selfvae-codec: a learned image codec whose entropy model is a self-supervised VAE.

    from selfvae_codec import compress, decompress, Codec

The codec is imported lazily, so `selfvae_codec.bitstream` stays free of torch. Every
error a user can cause is a `CodecError` (corrupt files are `ContainerError`s, missing
or corrupt weights `ModelLoadError`s, both CodecErrors).
"""

import os

__version__ = "0.1.0"

# OpenMP threads that wait for work sleep instead of spinning, unless the user chose
# otherwise. Spinning threads fight any other busy process for the cores: beside one,
# 2 spinning threads took 5.16 s where 2 sleeping ones took 2.94 s
# (benchmarks/results/threads_under_load.csv). OpenMP reads this when torch loads it,
# so it is set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
