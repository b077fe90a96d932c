"""The .svc container (no torch here)."""

from .container import (
    BLOCK_MEANS_HELD_FROM,
    COUNTS_REDUCED_FROM,
    FORMAT_VERSION,
    LOSSY_MODEL_MODES,
    MAGIC,
    MAX_TILE_SIZE,
    MODES,
    READABLE_VERSIONS,
    VALUES_IN_TWO_STEPS_FROM,
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
    "MAX_TILE_SIZE",
    "READABLE_VERSIONS",
    "VALUES_IN_TWO_STEPS_FROM",
    "BLOCK_MEANS_HELD_FROM",
    "COUNTS_REDUCED_FROM",
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
