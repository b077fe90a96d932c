"""The .svc container (no torch here)."""

from .container import (
    FORMAT_VERSION,
    LOSSY_MODEL_MODES,
    MAGIC,
    MODES,
    ContainerError,
    Header,
    Section,
    crc32,
    pack,
    section_order,
    unpack,
)
from .metadata import ImageMetadata, pack_metadata, unpack_metadata

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "LOSSY_MODEL_MODES",
    "MODES",
    "ContainerError",
    "Header",
    "ImageMetadata",
    "Section",
    "crc32",
    "pack",
    "pack_metadata",
    "section_order",
    "unpack",
    "unpack_metadata",
]
