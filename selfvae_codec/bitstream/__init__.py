"""The .svc container (no torch here)."""

from .container import (
    FORMAT_VERSION,
    MAGIC,
    MODES,
    ContainerError,
    Header,
    Section,
    crc32,
    pack,
    unpack,
)

__all__ = ["FORMAT_VERSION", "MAGIC", "MODES", "ContainerError", "Header", "Section", "crc32", "pack", "unpack"]
