"""selfvae-codec: a learned image codec whose entropy model is a self-supervised VAE.

    from selfvae_codec import compress, decompress, Codec

The codec is imported lazily, so `selfvae_codec.bitstream` stays free of torch.
"""

__version__ = "0.1.0"

_API = {"Codec", "CodecError", "ModelMismatchError", "compress", "decompress"}


def __getattr__(name):
    if name in _API:
        from .codec import api

        return getattr(api, name)
    raise AttributeError(f"module 'selfvae_codec' has no attribute {name!r}")


__all__ = sorted(_API)
