"""The optional `meta` section: the ICC profile, EXIF and XMP of the source image,
kept byte for byte so that a lossless archive loses nothing the file carried.

Payload: entries in ascending tag order, each tag at most once:

    tag u8 (1 ICC profile, 2 EXIF, 3 XMP), length u32, bytes

No torch here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields

from .container import ContainerError

_ENTRY = struct.Struct("<BI")
_TAGS = {"icc_profile": 1, "exif": 2, "xmp": 3}


@dataclass(frozen=True)
class ImageMetadata:
    icc_profile: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def names(self) -> list[str]:
        """The pieces present, e.g. ['icc_profile', 'exif']."""
        return [f.name for f in fields(self) if getattr(self, f.name)]


def pack_metadata(metadata: ImageMetadata) -> bytes:
    parts = []
    for name in metadata.names():
        value = getattr(metadata, name)
        parts.append(_ENTRY.pack(_TAGS[name], len(value)) + value)
    return b"".join(parts)


def unpack_metadata(payload: bytes | None) -> ImageMetadata:
    """The metadata in a `meta` section's payload (empty metadata for None)."""
    if payload is None:
        return ImageMetadata()
    names = {tag: name for name, tag in _TAGS.items()}
    found: dict[str, bytes] = {}
    offset, last_tag = 0, 0
    while offset < len(payload):
        if offset + _ENTRY.size > len(payload):
            raise ContainerError("metadata section is truncated")
        tag, length = _ENTRY.unpack_from(payload, offset)
        offset += _ENTRY.size
        if tag not in names or tag <= last_tag:
            raise ContainerError(f"metadata section has an unknown or repeated entry (tag {tag})")
        if offset + length > len(payload):
            raise ContainerError("metadata section is truncated")
        found[names[tag]] = payload[offset : offset + length]
        offset += length
        last_tag = tag
    return ImageMetadata(**found)
