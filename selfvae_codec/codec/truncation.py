"""Cutting an .svc file down to a lower mode without re-encoding its model-coded tiles."""

from __future__ import annotations

import torch

from ..bitstream import crc32, pack, unpack
from ..errors import BadValueError, CodecError
from .decoding import check_file_fits_the_model, decode
from .engine import encode_tile
from .entropy import CodingError
from .images import read_classical_tile
from .runtime import torch_threads
from .tiles import is_classical_tile, sections_by_tile, tile_boxes

# (from mode, to mode) -> the section kinds the lower mode keeps. u is coded the
# same way in every mode; y's and z's of full / conditional files are coded with the
# true y's, which rs2 does not have, so full -> rs2 is impossible. A conditional file
# keeps the pixel heads' adaptation its y's were coded with; rs1 codes no pixels.
TRUNCATIONS = {
    ("full", "conditional"): {"meta", "adapt", "u", "y", "z"},
    ("full", "rs1"): {"meta", "u"},
    ("conditional", "rs1"): {"meta", "u"},
    ("rs2", "rs1"): {"meta", "u"},
}


def truncate(codec, data: bytes, mode: str) -> bytes:
    """Codec.truncate: the .svc bytes `data` cut down to `mode` with `codec`'s model.
    The kept sections are a prefix of each tile's; a tile stored as a PNG or WebP
    file is coded with the model in the lower mode."""
    header = unpack(data)
    if mode == header.mode:
        return data
    if header.max_error:
        raise BadValueError(
            f"a near-lossless file (max error {header.max_error}) cannot be cut down: its levels are coded as "
            "bins, which a lower mode does not read; encode the image in that mode instead"
        )
    kept_kinds = TRUNCATIONS.get((header.mode, mode))
    if kept_kinds is None:
        possible = sorted(target for source, target in TRUNCATIONS if source == header.mode)
        raise BadValueError(
            f"a {header.mode} file cannot be cut down to {mode} (possible: {', '.join(possible) or 'none'})"
        )
    check_file_fits_the_model(codec, header)
    sections = [s for s in header.sections if s.kind == "meta"]
    if header.tile_size > codec.tile_size and all(s.kind in ("meta", "pixels") for s in header.sections):
        # The image as one classical file: coded in this codec's tiles, as a direct encode would.
        image = decode(codec, header)
        direct = unpack(
            codec.compress(image, mode, header.latent_step, strip_metadata=True, format_version=header.version)
        )
        direct.sections = sections + direct.sections
        return pack(direct)
    tiles = tile_boxes(header.height, header.width, header.tile_size)
    by_tile = sections_by_tile(header)
    with torch_threads(codec.threads), torch.no_grad():
        for index, (top, bottom, left, right) in enumerate(tiles):
            own = by_tile.get(index, [])
            if not is_classical_tile(own):
                sections += [s for s in own if s.kind in kept_kinds]
                continue
            # A classical tile is only in a `full` file, a lossless model's: no quality.
            pixels = read_classical_tile(own[0].payload, bottom - top, right - left)
            tile = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].to(codec.device, torch.int64)
            try:
                step, version = header.latent_step, header.version
                _, coded, _ = encode_tile(codec.model, tile, index, mode, step, None, version, None)
            except CodingError as error:
                raise CodecError(f"tile {index + 1} of {len(tiles)}: {error}") from None
            sections += coded
    header.sections = sections
    header.mode = mode
    image = decode(codec, header, verify=False)
    header.image_crc = crc32(image.tobytes())
    return pack(header)
