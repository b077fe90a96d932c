"""selfvae-codec: a learned image codec whose entropy model is a self-supervised VAE.

    from selfvae_codec import compress, decompress, Codec

The codec is imported lazily, so `selfvae_codec.bitstream` stays free of torch. Every
error a user can cause is a `CodecError` (corrupt files are `ContainerError`s, missing
or corrupt weights `ModelLoadError`s, both CodecErrors).
"""

__version__ = "0.1.0"

_API = {"Codec", "EncodeResult", "ModelLoadError", "ModelMismatchError", "compress", "decompress", "file_metadata"}


def __getattr__(name):
    if name == "CodecError":
        from .errors import CodecError

        return CodecError
    if name == "ContainerError":
        from .bitstream import ContainerError

        return ContainerError
    if name in _API:
        from .codec import api

        return getattr(api, name)
    raise AttributeError(f"module 'selfvae_codec' has no attribute {name!r}")


__all__ = sorted(_API | {"CodecError", "ContainerError"})
