"""Tiles: how an image is cut into the tiles it is coded in, how a file's sections
group by tile, progress counted in sections, the whole-image classical file that
replaces many tiny classical tiles, and files whose every tile is stored classically,
which decode without the model. No torch here: such a file decodes without loading it
(about 1.5 s of a CLI run)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..bitstream import MAX_TILE_SIZE, Header, Section, crc32
from ..errors import CodecError
from .images import classical_lossless, read_classical_tile

SECTION_ENTRY_BYTES = 12  # a section's line in the table
# progress(done, total): called as coding advances, in sections (several per tile).
Progress = Callable[[int, int], None]


def tile_boxes(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of the tiles, row by row, that an image is coded
    (and evaluated) in; the last row and column of tiles may be smaller."""
    return [
        (top, min(height, top + tile), left, min(width, left + tile))
        for top in range(0, height, tile)
        for left in range(0, width, tile)
    ]


# A `full` file whose tiles all went to PNG / WebP, averaging under this many bytes
# (flat areas, graphics), is tried as one classical file of the whole image (up to
# WHOLE_IMAGE_MAX_PIXELS): every tile's file has its own headers and restarts its
# coder at the tile's edge, which for a constant 65536x1 image made 6,468 bytes of
# what one PNG holds in 272.
WHOLE_IMAGE_TRY_BYTES = 1024
WHOLE_IMAGE_MAX_PIXELS = 1 << 24


def whole_image_classical(array: np.ndarray, grayscale: bool, sections: list[Section], effort: int):
    """(tile size, sections) of the image as one classical file (two where a side
    exceeds the container's largest tile), where that is smaller than the classical
    tiles in `sections`; otherwise None."""
    tiles = [s for s in sections if s.kind != "meta"]
    height, width = array.shape[:2]
    if len(tiles) < 2 or any(s.kind != "pixels" for s in tiles) or height * width > WHOLE_IMAGE_MAX_PIXELS:
        return None
    tiled_bytes = sum(len(s.payload) + SECTION_ENTRY_BYTES for s in tiles)
    if tiled_bytes >= WHOLE_IMAGE_TRY_BYTES * len(tiles):
        return None
    tile_size = min(MAX_TILE_SIZE, max(height, width))
    whole = [
        Section("pixels", 0, index, classical_lossless(array[top:bottom, left:right], grayscale, effort))
        for index, (top, bottom, left, right) in enumerate(tile_boxes(height, width, tile_size))
    ]
    if sum(len(s.payload) + SECTION_ENTRY_BYTES for s in whole) >= tiled_bytes:
        return None
    return tile_size, whole


def sections_by_tile(header: Header) -> dict[int, list[Section]]:
    """Each tile's sections, in file order (the metadata section is no tile's)."""
    by_tile: dict[int, list[Section]] = {}
    for section in header.sections:
        if section.kind != "meta":
            by_tile.setdefault(section.tile, []).append(section)
    return by_tile


def output_image(reconstruction: np.ndarray, channels: int) -> np.ndarray:
    """The decoded RGB image, or for a gray file its ITU-R 601 luma, rounded (as
    models.transforms.to_grayscale)."""
    if channels == 3:
        return reconstruction
    red, green, blue = (reconstruction[..., i].astype(np.int64) for i in range(3))
    return ((299 * red + 587 * green + 114 * blue + 500) // 1000).astype(np.uint8)


def is_classical_tile(sections: list[Section]) -> bool:
    """Whether a tile's sections are one PNG / WebP file of its pixels."""
    return [s.kind for s in sections] == ["pixels"]


def stored_classically(header: Header) -> bool:
    """Whether every tile of the file is stored as PNG or WebP (no model needed)."""
    by_tile = sections_by_tile(header)
    tiles = tile_boxes(header.height, header.width, header.tile_size)
    return all(is_classical_tile(by_tile.get(index, [])) for index in range(len(tiles)))


def decode_classical(header: Header, progress: Progress | None = None) -> np.ndarray:
    """The image of a file stored_classically, checked against its image CRC."""
    tiles = tile_boxes(header.height, header.width, header.tile_size)
    by_tile = sections_by_tile(header)
    reconstruction = np.empty((header.height, header.width, 3), dtype=np.uint8)
    for index, (top, bottom, left, right) in enumerate(tiles):
        reconstruction[top:bottom, left:right] = read_classical_tile(
            by_tile[index][0].payload, bottom - top, right - left
        )
        if progress:
            progress(index + 1, len(tiles))
    output = output_image(reconstruction, header.channels)
    if crc32(output.tobytes()) != header.image_crc:
        raise CodecError("the decoded image does not match the encoder's checksum (the file is damaged)")
    return output


class SectionCounter:
    """Turns per-section callbacks into progress(done, total) calls."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total)

    def finish_tile(self, index: int, tiles: int) -> None:
        """Count the sections of tile `index` (0-based, of `tiles`) not counted yet: a
        tile stored as a classical file codes none, or fewer than its share."""
        while self.done < (index + 1) * (self.total // tiles):
            self()
