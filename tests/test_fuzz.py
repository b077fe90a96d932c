"""Damaged files fail fast and cleanly: mutated fixed-header fields, section-table
entries and payload bytes of multi-tile files of every mode, with the checksums
recomputed so that the damage reaches the parser and the model. Every decode must
end in a CodecError or in the original pixels, within 3x the time of decoding the
intact file.

SELFVAE_FUZZ_CASES sets the mutations per kind and mode (default 28: every fixed
field at its largest value, then at a random damage; under a minute on 2 cores);
SELFVAE_FUZZ_CASES=200 is a long local run, SELFVAE_FUZZ_SEED varies them.
"""

from __future__ import annotations

import os
import random
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfvae_codec import Codec, CodecError
from selfvae_codec.bitstream.container import _FIXED, _SECTION

DATA = Path(__file__).parent / "data"
SEED = int(os.environ.get("SELFVAE_FUZZ_SEED", "0"))
TIME_FACTOR = 3.0
TIMER_SLACK = 0.25  # seconds: scheduling noise on a busy machine, against decodes of ~0.1-0.5 s

# (offset, struct format) of each fixed-header field after the magic bytes.
FIXED_FIELDS = {
    "version": (4, "B"),
    "mode": (5, "B"),
    "channels": (6, "B"),
    "padding": (7, "B"),
    "threads": (8, "B"),
    "quality": (9, "B"),
    "max error": (10, "B"),
    "reserved": (11, "B"),
    "width": (12, "I"),
    "height": (16, "I"),
    "fingerprint": (20, "B"),  # one byte of it
    "latent step": (52, "f"),
    "tile size": (56, "H"),
    "section count": (58, "H"),
    "image crc": (60, "I"),
}
CASES = int(os.environ.get("SELFVAE_FUZZ_CASES", str(2 * len(FIXED_FIELDS))))
SECTION_FIELDS = {"kind": (0, "B"), "level": (1, "B"), "tile": (2, "H"), "length": (4, "I"), "crc": (8, "I")}


def _section_count(data: bytes) -> int:
    return struct.unpack_from("<H", data, 58)[0]


def recompute_checksums(data: bytes) -> bytes:
    """The header CRC, and where the table's lengths fit the file each section's CRC,
    recomputed: damage then passes the checksums and reaches the parser and the model."""
    data = bytearray(data)
    count = _section_count(data)
    table_end = _FIXED.size + count * _SECTION.size
    if len(data) < table_end + 4:
        return bytes(data)
    offset = table_end + 4
    for i in range(count):
        entry = _FIXED.size + i * _SECTION.size
        length = struct.unpack_from("<I", data, entry + 4)[0]
        if offset + length > len(data):
            break
        struct.pack_into("<I", data, entry + 8, zlib.crc32(data[offset : offset + length]))
        offset += length
    struct.pack_into("<I", data, table_end, zlib.crc32(data[:table_end]))
    return bytes(data)


def _mutated_value(rng: random.Random, fmt: str, value, extreme: bool):
    """The field's largest value when `extreme`, else one of a few typical damages."""
    if fmt == "f":
        if extreme:
            return 1e6
        return rng.choice([0.0, -value, value * 2, value / 2, value * 1e4, value / 1e4, float("nan"), 1e-6])
    limit = (1 << (8 * struct.calcsize(fmt))) - 1
    if extreme:
        return limit
    candidates = [0, 1, value ^ (1 << rng.randrange(8 * struct.calcsize(fmt))), rng.randint(0, limit)]
    candidates += [max(0, value - 1), min(limit, value + 1), min(limit, value * 2)]
    return rng.choice(candidates)


def _set_field(data: bytes, offset: int, fmt: str, rng: random.Random, extreme: bool) -> bytes:
    out = bytearray(data)
    value = struct.unpack_from("<" + fmt, out, offset)[0]
    struct.pack_into("<" + fmt, out, offset, _mutated_value(rng, fmt, value, extreme))
    return bytes(out)


def mutate_fixed_field(data: bytes, rng: random.Random, case: int) -> tuple[str, bytes]:
    name = list(FIXED_FIELDS)[case % len(FIXED_FIELDS)]
    offset, fmt = FIXED_FIELDS[name]
    if name == "fingerprint":
        offset += rng.randrange(32)
    extreme = case < len(FIXED_FIELDS)  # every field at its largest value first
    return name, recompute_checksums(_set_field(data, offset, fmt, rng, extreme))


def mutate_section_entry(data: bytes, rng: random.Random, case: int) -> tuple[str, bytes]:
    index = rng.randrange(_section_count(data))
    name = list(SECTION_FIELDS)[case % len(SECTION_FIELDS)]
    offset, fmt = SECTION_FIELDS[name]
    extreme = case < len(SECTION_FIELDS)
    mutated = _set_field(data, _FIXED.size + index * _SECTION.size + offset, fmt, rng, extreme)
    return f"section {index} {name}", recompute_checksums(mutated)


def mutate_payload(data: bytes, rng: random.Random, case: int) -> tuple[str, bytes]:
    payload_start = _FIXED.size + _section_count(data) * _SECTION.size + 4
    out = bytearray(data)
    how = rng.choice(["flip", "randomise", "zero"])
    position = rng.randrange(payload_start, len(out))
    span = rng.choice([1, 4, 16])
    for i in range(position, min(len(out), position + span)):
        out[i] = {"flip": out[i] ^ (1 << rng.randrange(8)), "randomise": rng.randrange(256), "zero": 0}[how]
    return f"{how} {span} payload byte(s) at {position}", recompute_checksums(bytes(out))


MUTATIONS = {"fixed field": mutate_fixed_field, "section entry": mutate_section_entry, "payload": mutate_payload}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    # 64x48 at tile size 32: four tiles, two of them partial.
    return np.asarray(Image.open(DATA / "astronaut_128x128.png").convert("RGB"))[:48, :64].copy()


@pytest.fixture(scope="module")
def codecs() -> dict[str, Codec]:
    return {"lossless": Codec("default", threads=1, tile_size=32), "lossy": Codec("lossy", threads=1, tile_size=32)}


def _decode_seconds(codec: Codec, data: bytes) -> float:
    started = time.perf_counter()
    codec.decompress(data)
    return time.perf_counter() - started


@pytest.mark.parametrize("mode", ["full", "conditional", "rs2", "rs1"])
@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_damaged_file_fails_cleanly_or_decodes_its_pixels_within_3x_the_time(codecs, photo, mode, mutation):
    codec = codecs["lossless" if mode == "full" else "lossy"]
    intact = codec.compress(photo, mode, classical_tiles=False)  # model-coded tiles only
    pixels = codec.decompress(intact)
    normal = min(_decode_seconds(codec, intact) for _ in range(2))
    bound = TIME_FACTOR * normal + TIMER_SLACK
    rng = random.Random(f"{SEED} {mode} {mutation}")
    for case in range(CASES):
        what, damaged = MUTATIONS[mutation](intact, rng, case)
        started = time.perf_counter()
        try:
            decoded = codec.decompress(damaged)
        except CodecError:
            decoded = None
        seconds = time.perf_counter() - started
        assert seconds <= bound, f"{mode} file, {what}: {seconds:.2f} s against {normal:.2f} s intact"
        if decoded is not None:
            assert np.array_equal(decoded, pixels), f"{mode} file, {what}: decoded to other pixels"
