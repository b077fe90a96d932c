"""The `.svc` container: a fixed header, a section table, the section payloads.

All integers little-endian. Layout (byte offsets):

    0   4  magic            b"SVC\\x89"
    4   1  format version   1
    5   1  mode             0 full, 1 conditional, 2 rs2, 3 rs1
    6   1  channels         1 (grayscale input) or 3 (RGB)
    7   1  padding          1 = replicate (padding is implicit: never coded)
    8   1  threads          torch thread count the encoder ran the model with; the
                            decoder uses the same (CPU float results may depend on it)
    9   3  reserved         zero
    12  4  width            u32, 1..MAX_SIDE
    16  4  height           u32, 1..MAX_SIDE
    20  32 model            SHA-256 fingerprint of the model (config + weights)
    52  4  latent step      f32, quantisation step of the latents (> 0)
    56  2  tile size        u16, side of the square tiles coded independently
    58  2  section count    u16
    60  4  image CRC-32     of the decoded image's bytes (H x W x channels, uint8)
    64  12*N section table, per section:
            kind u8 (1 u, 2 z, 3 y, 4 x), level u8, tile u16, length u32, CRC-32 u32
    ..  4  header CRC-32    of every byte before it
    ..     payloads, in table order (each an ANS stream of 32-bit words)

The file must end exactly after the last payload. No torch here.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

MAGIC = b"SVC\x89"
FORMAT_VERSION = 1
MODES = ("full", "conditional", "rs2", "rs1")
SECTION_KINDS = {1: "u", 2: "z", 3: "y", 4: "x"}
KIND_CODES = {name: code for code, name in SECTION_KINDS.items()}
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 28  # 268 megapixels
MAX_SECTIONS = 65535

_FIXED = struct.Struct("<4sBBBBB3xII32sfHHI")
_SECTION = struct.Struct("<BBHII")
_CRC = struct.Struct("<I")


class ContainerError(ValueError):
    """The bytes are not a valid .svc file (with a one-line reason)."""


@dataclass(frozen=True)
class Section:
    kind: str  # 'u', 'z', 'y' or 'x'
    level: int  # 1-based level for z / y; 0 for u and x
    tile: int
    payload: bytes

    @property
    def label(self) -> str:
        return self.kind if self.kind in ("u", "x") else f"{self.kind}{self.level}"


@dataclass
class Header:
    mode: str
    width: int
    height: int
    channels: int
    model_fingerprint: bytes
    latent_step: float
    tile_size: int
    image_crc: int = 0
    threads: int = 1
    padding: int = 1
    version: int = FORMAT_VERSION
    sections: list[Section] = field(default_factory=list)


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _validate_header_fields(header: Header) -> None:
    if header.mode not in MODES:
        raise ContainerError(f"unknown mode {header.mode!r}")
    if header.channels not in (1, 3):
        raise ContainerError(f"unsupported channel count {header.channels}")
    if (
        not (1 <= header.width <= MAX_SIDE and 1 <= header.height <= MAX_SIDE)
        or header.width * header.height > MAX_PIXELS
    ):
        raise ContainerError(f"declared image size {header.width}x{header.height} is out of range")
    if not header.latent_step > 0 or header.latent_step != header.latent_step or header.latent_step > 1e6:
        raise ContainerError(f"invalid latent quantisation step {header.latent_step}")
    if not 16 <= header.tile_size <= 65535:
        raise ContainerError(f"invalid tile size {header.tile_size}")
    if len(header.model_fingerprint) != 32:
        raise ContainerError("model fingerprint must be 32 bytes")
    if not 1 <= header.threads <= 255:
        raise ContainerError(f"invalid thread count {header.threads}")
    if header.padding != 1:
        raise ContainerError(f"unknown padding mode {header.padding}")


def pack(header: Header) -> bytes:
    """Serialise a header and its sections into the bytes of one .svc file."""
    _validate_header_fields(header)
    if len(header.sections) > MAX_SECTIONS:
        raise ContainerError("too many sections")
    parts = [
        _FIXED.pack(
            MAGIC,
            FORMAT_VERSION,
            MODES.index(header.mode),
            header.channels,
            header.padding,
            header.threads,
            header.width,
            header.height,
            header.model_fingerprint,
            header.latent_step,
            header.tile_size,
            len(header.sections),
            header.image_crc,
        )
    ]
    for section in header.sections:
        parts.append(
            _SECTION.pack(
                KIND_CODES[section.kind], section.level, section.tile, len(section.payload), crc32(section.payload)
            )
        )
    head = b"".join(parts)
    return head + _CRC.pack(crc32(head)) + b"".join(s.payload for s in header.sections)


def unpack(data: bytes) -> Header:
    """Parse and fully validate .svc bytes; raises ContainerError with a reason."""
    if len(data) == 0:
        raise ContainerError("empty file")
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise ContainerError("not an .svc file (wrong magic bytes)")
    if len(data) < _FIXED.size:
        raise ContainerError("truncated file (header incomplete)")
    (
        _,
        version,
        mode_code,
        channels,
        padding,
        threads,
        width,
        height,
        fingerprint,
        step,
        tile_size,
        count,
        image_crc,
    ) = _FIXED.unpack_from(data, 0)
    if version != FORMAT_VERSION:
        raise ContainerError(f"unsupported format version {version} (this build reads version {FORMAT_VERSION})")
    table_end = _FIXED.size + count * _SECTION.size
    if len(data) < table_end + _CRC.size:
        raise ContainerError("truncated file (section table incomplete)")
    (stored_crc,) = _CRC.unpack_from(data, table_end)
    if crc32(data[:table_end]) != stored_crc:
        raise ContainerError("header checksum mismatch (the file is corrupt)")
    if mode_code >= len(MODES):
        raise ContainerError(f"unknown mode code {mode_code}")
    header = Header(
        mode=MODES[mode_code],
        width=width,
        height=height,
        channels=channels,
        model_fingerprint=fingerprint,
        latent_step=step,
        tile_size=tile_size,
        image_crc=image_crc,
        threads=threads,
        padding=padding,
        version=version,
    )
    _validate_header_fields(header)
    offset = table_end + _CRC.size
    entries = [_SECTION.unpack_from(data, _FIXED.size + i * _SECTION.size) for i in range(count)]
    total = offset + sum(entry[3] for entry in entries)
    if len(data) < total:
        raise ContainerError(f"truncated file ({len(data)} bytes, the header declares {total})")
    if len(data) > total:
        raise ContainerError(f"trailing data after the last section ({len(data) - total} bytes)")
    for kind_code, level, tile, length, crc in entries:
        if kind_code not in SECTION_KINDS:
            raise ContainerError(f"unknown section kind {kind_code}")
        payload = data[offset : offset + length]
        if crc32(payload) != crc:
            raise ContainerError(
                f"section {SECTION_KINDS[kind_code]}{level or ''} (tile {tile}) checksum mismatch (the file is corrupt)"
            )
        if length % 4:
            raise ContainerError("section length is not a whole number of 32-bit words")
        header.sections.append(Section(SECTION_KINDS[kind_code], level, tile, payload))
        offset += length
    return header
