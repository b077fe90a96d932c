"""The `.svc` container: a fixed header, a section table, the section payloads.

All integers little-endian. Layout (byte offsets):

    0   4  magic            b"SVC\\x89"
    4   1  format version   6 (versions 1 to 5 are still read and written)
    5   1  mode             0 full, 1 conditional, 2 rs2, 3 rs1
    6   1  channels         1 (grayscale input) or 3 (RGB)
    7   1  padding          1 = replicate (padding is implicit: never coded)
    8   1  threads          0: an exact model, any thread count decodes; 1..255: the
                            torch thread count the encoder ran a float model with,
                            which the decoder uses too (float results may depend on it)
    9   1  quality          0: a lossless model's file (it has no quality settings);
                            1..255: the quality setting of a lossy model (1 = coarsest)
    10  1  max error        version 6 on: the largest difference a near-lossless
                            `full` file allows between a decoded subpixel and the
                            original (1..MAX_ERROR); 0: lossless, or another mode
                            (earlier versions: zero)
    11  1  reserved         zero
    12  4  width            u32, 1..MAX_SIDE
    16  4  height           u32, 1..MAX_SIDE
    20  32 model            SHA-256 fingerprint of the model (config + weights)
    52  4  latent step      f32, quantisation step of the latents (> 0)
    56  2  tile size        u16, side of the square tiles coded independently (a
                            `full` file holding the whole image as one classical
                            section: the image's longer side)
    58  2  section count    u16
    60  4  image CRC-32     of the decoded image's bytes (H x W x channels, uint8)
    64  12*N section table, per section:
            kind u8 (1 u, 2 z, 3 y, 4 x, 5 meta, 6 pixels, 7 adapt), level u8, tile u16,
            length u32, CRC-32 u32
    ..  4  header CRC-32    of every byte before it
    ..     payloads, in table order (ANS streams of 32-bit words; meta: see metadata.py;
           pixels: a PNG or lossless WebP file of the tile)

The section table must follow the mode's order (`section_order`) tile by tile, after
an optional single `meta` section (version 2 on); in a `full` file (version 2 on) a tile
may instead be one `pixels` section. The file must end exactly after
the last payload. Version 3 changes only how an exact model's pixel values are
coded: as a bin of 16 values, then the value within it (`VALUES_IN_TWO_STEPS_FROM`).
Version 4 hands an exact model's pixel tables to the coder with totals below 2^24 and
no zero count, so that every value can be coded (`COUNTS_REDUCED_FROM`), and moves a
conditional file's image onto the images whose 2x2 block means are the exact
half-size image it sends (`BLOCK_MEANS_HELD_FROM`). Version 5 lets a tile of a `full`
or `conditional` file begin with an `adapt` section: the encoder's per-image
adjustment of the model's pixel heads, which the decoder applies (`ADAPTATION_FROM`).
Version 6 adds near-lossless `full` files (`NEAR_LOSSLESS_FROM`): with a max error N
the model codes every level as bins of 2N + 1 values (engine.py).
No torch here.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field

from ..errors import CodecError, count_of

MAGIC = b"SVC\x89"
FORMAT_VERSION = 6
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)
VALUES_IN_TWO_STEPS_FROM = 3  # the first version whose exact models code pixel values in two steps
COUNTS_REDUCED_FROM = 4  # the first version whose exact models' pixel tables reach the coder reduced, none zero
BLOCK_MEANS_HELD_FROM = 4  # the first version whose conditional images keep the sent half-size image's block means
ADAPTATION_FROM = 5  # the first version whose tiles may carry an adaptation of the pixel heads
NEAR_LOSSLESS_FROM = 6  # the first version whose `full` files may allow a maximum error
MAX_ERROR = 32  # the largest maximum error a near-lossless file may allow


@dataclass(frozen=True)
class Mode:
    """What a mode's files carry for each level (u is always sent)."""

    sends_z: bool
    sends_y: bool
    sends_x: bool
    summary: str


# The one table of modes: the container, the engine, the API and the CLI read it.
# The order gives the mode codes in the header.
MODES: dict[str, Mode] = {
    "full": Mode(sends_z=True, sends_y=True, sends_x=True, summary="lossless: every level and the image"),
    "conditional": Mode(sends_z=True, sends_y=True, sends_x=False, summary="x rebuilt from the exact half-size image"),
    "rs2": Mode(sends_z=True, sends_y=False, sends_x=False, summary="every level generated from u and the z's"),
    "rs1": Mode(sends_z=False, sends_y=False, sends_x=False, summary="everything generated from u alone"),
}
# The modes a lossy model codes, at a quality setting: rs2, which it is trained for,
# its prefix rs1, and conditional (the exact y's, with its own z's and x generated).
LOSSY_MODEL_MODES = ("conditional", "rs2", "rs1")
SECTION_KINDS = {1: "u", 2: "z", 3: "y", 4: "x", 5: "meta", 6: "pixels", 7: "adapt"}
KIND_CODES = {name: code for code, name in SECTION_KINDS.items()}
CODED_KINDS = ("adapt", "u", "z", "y", "x")  # ANS streams of the model's symbols
# The modes whose tiles may begin with an `adapt` section (the modes that code pixels).
ADAPTED_MODES = ("full", "conditional")
ADAPTATION = [("adapt", 0)]
# A `full` file may hold a tile as `pixels` instead: a classical lossless image file
# (PNG or WebP lossless) of the tile, where that is smaller than the model's coding.
CLASSICAL_TILE = [("pixels", 0)]
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 28  # 268 megapixels
MAX_SECTIONS = 65535
MAX_TILE_SIZE = 65535  # the header's 16-bit tile size

_FIXED = struct.Struct("<4sBBBBBBBBII32sfHHI")
_SECTION = struct.Struct("<BBHII")
_CRC = struct.Struct("<I")


class ContainerError(CodecError, ValueError):
    """The bytes are not a valid .svc file (with a one-line reason)."""


@dataclass(frozen=True)
class Section:
    kind: str  # 'u', 'z', 'y', 'x', 'meta', 'pixels' or 'adapt'
    level: int  # 1-based level for z / y; 0 otherwise
    tile: int
    payload: bytes

    @property
    def label(self) -> str:
        return f"{self.kind}{self.level}" if self.kind in ("z", "y") else self.kind


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
    quality: int = 0  # a lossy model's quality setting, 1-based (0: a lossless model)
    max_error: int = 0  # a near-lossless `full` file's bound per subpixel (0: exact)
    padding: int = 1
    version: int = FORMAT_VERSION
    sections: list[Section] = field(default_factory=list)

    @property
    def tile_count(self) -> int:
        return math.ceil(self.height / self.tile_size) * math.ceil(self.width / self.tile_size)

    @property
    def metadata_payload(self) -> bytes | None:
        return next((s.payload for s in self.sections if s.kind == "meta"), None)


def section_order(mode: str, levels: int) -> list[tuple[str, int]]:
    """The (kind, level) of each section of one tile, in decoding order: u, then per
    level y_k and z_k, then x, as far as the mode sends them."""
    spec = MODES[mode]
    order = [("u", 0)]
    for k in range(1, levels + 1):
        if spec.sends_y:
            order.append(("y", k))
        if spec.sends_z:
            order.append(("z", k))
    if spec.sends_x:
        order.append(("x", 0))
    return order


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
    if not 16 <= header.tile_size <= MAX_TILE_SIZE:
        raise ContainerError(f"invalid tile size {header.tile_size}")
    if len(header.model_fingerprint) != 32:
        raise ContainerError("model fingerprint must be 32 bytes")
    if not 0 <= header.threads <= 255:
        raise ContainerError(f"invalid thread count {header.threads}")
    if not 0 <= header.quality <= 255 or (header.quality and header.mode not in LOSSY_MODEL_MODES):
        raise ContainerError(f"invalid quality {header.quality} for a {header.mode} file")
    if header.padding != 1:
        raise ContainerError(f"unknown padding mode {header.padding}")
    if header.max_error and header.version < NEAR_LOSSLESS_FROM:
        raise ContainerError(f"a maximum error needs format version {NEAR_LOSSLESS_FROM} or later")
    if not 0 <= header.max_error <= MAX_ERROR or (header.max_error and header.mode != "full"):
        raise ContainerError(f"invalid maximum error {header.max_error} for a {header.mode} file")


def _labels(order: list[tuple[str, int]]) -> str:
    return " ".join(f"{kind}{level or ''}" for kind, level in order) or "nothing"


def _validate_section_table(header: Header, version: int) -> None:
    """Sections must be an optional meta section, then every tile's sections, tiles in
    order: the mode's order with the same number of levels in every tile (after an
    optional `adapt` section, from version 5 in the modes that code pixels), or (in a
    `full` file) one `pixels` section."""
    sections = header.sections
    if sections and sections[0].kind == "meta":
        if version < 2:
            raise ContainerError("a version 1 file cannot hold a metadata section")
        if sections[0].level or sections[0].tile:
            raise ContainerError("the metadata section must have level 0 and tile 0")
        sections = sections[1:]
    by_tile: list[list[Section]] = [[] for _ in range(header.tile_count)]
    for position, section in enumerate(sections):
        previous = sections[position - 1].tile if position else 0
        if not previous <= section.tile < header.tile_count:
            raise ContainerError(
                f"section {section.label} names tile {section.tile + 1} after tile {previous + 1} "
                f"(the image has {count_of(header.tile_count, 'tile')}, in order)"
            )
        by_tile[section.tile].append(section)
    expected = None
    for tile, found in enumerate(by_tile):
        order = [(s.kind, s.level) for s in found]
        if order == CLASSICAL_TILE and header.mode == "full" and version >= 2:
            continue
        if order[:1] == ADAPTATION and version >= ADAPTATION_FROM and header.mode in ADAPTED_MODES:
            order = order[1:]
        if expected is None:  # the first tile coded by the model sets the number of levels
            expected = section_order(header.mode, levels=sum(kind == "z" for kind, _ in order))
        if order != expected:
            raise ContainerError(
                f"section table out of order at tile {tile + 1}: found {_labels(order)}, "
                f"a {header.mode} file needs {_labels(expected)} in every tile"
            )


def pack(header: Header) -> bytes:
    """Serialise a header and its sections into the bytes of one .svc file of the
    header's version (the current one unless set: a truncated file keeps its own)."""
    if header.version not in READABLE_VERSIONS:
        raise ContainerError(f"cannot write format version {header.version}")
    _validate_header_fields(header)
    if len(header.sections) > MAX_SECTIONS:
        raise ContainerError("too many sections")
    _validate_section_table(header, header.version)
    parts = [
        _FIXED.pack(
            MAGIC,
            header.version,
            list(MODES).index(header.mode),
            header.channels,
            header.padding,
            header.threads,
            header.quality,
            header.max_error,
            0,
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
        quality,
        max_error,
        reserved,
        width,
        height,
        fingerprint,
        step,
        tile_size,
        count,
        image_crc,
    ) = _FIXED.unpack_from(data, 0)
    if version not in READABLE_VERSIONS:
        raise ContainerError(
            f"unsupported format version {version} (this build reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; a newer selfvae-codec may read it)"
        )
    table_end = _FIXED.size + count * _SECTION.size
    if len(data) < table_end + _CRC.size:
        raise ContainerError("truncated file (section table incomplete)")
    (stored_crc,) = _CRC.unpack_from(data, table_end)
    if crc32(data[:table_end]) != stored_crc:
        raise ContainerError("header checksum mismatch (the file is corrupt)")
    if reserved or (max_error and version < NEAR_LOSSLESS_FROM):
        raise ContainerError("reserved header bytes are not zero")
    if mode_code >= len(MODES):
        raise ContainerError(f"unknown mode code {mode_code}")
    header = Header(
        mode=list(MODES)[mode_code],
        width=width,
        height=height,
        channels=channels,
        model_fingerprint=fingerprint,
        latent_step=step,
        tile_size=tile_size,
        image_crc=image_crc,
        threads=threads,
        quality=quality,
        max_error=max_error,
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
        kind = SECTION_KINDS[kind_code]
        payload = data[offset : offset + length]
        if crc32(payload) != crc:
            label = f"{kind}{level or ''}"
            raise ContainerError(f"section {label} (tile {tile + 1}) checksum mismatch (the file is corrupt)")
        if kind in CODED_KINDS and length % 4:
            raise ContainerError("section length is not a whole number of 32-bit words")
        header.sections.append(Section(kind, level, tile, payload))
        offset += length
    _validate_section_table(header, version)
    return header
