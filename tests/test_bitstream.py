import struct

import pytest

from selfvae_codec.bitstream import FORMAT_VERSION, ContainerError, Header, Section, crc32, pack, unpack
from selfvae_codec.bitstream.container import _FIXED


def make_header(**overrides) -> Header:
    fields = dict(
        mode="full",
        width=75,
        height=50,
        channels=3,
        model_fingerprint=bytes(range(32)),
        latent_step=0.5,
        tile_size=512,
        image_crc=1234,
        threads=2,
        sections=[
            Section("u", 0, 0, b"\x01\x02\x03\x04"),
            Section("y", 1, 0, b"abcdefgh"),
            Section("z", 1, 0, b""),
            Section("x", 0, 0, b""),
        ],
    )
    fields.update(overrides)
    return Header(**fields)


def test_round_trip_keeps_every_field():
    header = make_header()
    parsed = unpack(pack(header))
    for name in (
        "mode",
        "width",
        "height",
        "channels",
        "model_fingerprint",
        "latent_step",
        "tile_size",
        "image_crc",
        "threads",
    ):
        assert getattr(parsed, name) == getattr(header, name)
    assert parsed.sections == header.sections


def test_layout_starts_with_magic_and_version():
    data = pack(make_header())
    assert data[:4] == b"SVC\x89" and data[4] == FORMAT_VERSION == 6
    assert struct.unpack_from("<II", data, 12) == (75, 50)


def test_a_file_is_written_at_its_headers_version():
    for version in (1, 2, 3, 4, 5):
        data = pack(make_header(version=version))
        assert data[4] == version and unpack(data).version == version
    with pytest.raises(ContainerError, match="cannot write format version 7"):
        pack(make_header(version=7))
    with pytest.raises(ContainerError, match="version 1 file cannot hold a metadata"):
        pack(make_header(version=1, sections=[Section("meta", 0, 0, b"abcd"), *_sections("u y1 z1 x")]))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"PNG\x89", "wrong magic"),
        (b"SVC\x89\x01", "truncated"),
        (b"\x00" * 100, "wrong magic"),
    ],
)
def test_rejects_garbage(data, message):
    with pytest.raises(ContainerError, match=message):
        unpack(data)


def test_rejects_unknown_version():
    data = bytearray(pack(make_header()))
    data[4] = 9
    with pytest.raises(ContainerError, match="unsupported format version 9"):
        unpack(bytes(data))


def test_every_single_byte_flip_is_detected():
    data = pack(make_header())
    for position in range(len(data)):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x40
        with pytest.raises(ContainerError):
            unpack(bytes(corrupt))


def test_every_truncation_is_detected():
    data = pack(make_header())
    for length in range(len(data)):
        with pytest.raises(ContainerError):
            unpack(data[:length])


def test_trailing_bytes_are_rejected():
    with pytest.raises(ContainerError, match="trailing data"):
        unpack(pack(make_header()) + b"\x00\x00\x00\x00")


def _repack_fixed(data: bytes, **changes) -> bytes:
    """Rewrite fixed-header fields and fix the header CRC (a crafted, 'valid' file)."""
    fields = list(_FIXED.unpack_from(data, 0))
    names = [
        "magic",
        "version",
        "mode",
        "channels",
        "padding",
        "threads",
        "quality",
        "max_error",
        "reserved",
        "width",
        "height",
        "model",
        "step",
        "tile",
        "count",
        "image_crc",
    ]
    for name, value in changes.items():
        fields[names.index(name)] = value
    count = fields[names.index("count")]
    table_end = _FIXED.size + count * 12
    head = _FIXED.pack(*fields) + data[_FIXED.size : table_end]
    return head + struct.pack("<I", crc32(head)) + data[table_end + 4 :]


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(width=1 << 20), "out of range"),
        (dict(width=60000, height=60000), "out of range"),
        (dict(height=0), "out of range"),
        (dict(mode=7), "unknown mode"),
        (dict(channels=4), "channel count"),
        (dict(step=float("nan")), "quantisation step"),
        (dict(step=-1.0), "quantisation step"),
        (dict(tile=3), "tile size"),
        (dict(count=60000), "truncated"),
        (dict(reserved=1), "reserved header bytes"),
        (dict(quality=3), "invalid quality 3 for a full file"),
        (dict(max_error=33), "invalid maximum error 33"),
        (dict(mode=2, max_error=2), "invalid maximum error 2 for a rs2 file"),
        (dict(version=5, max_error=2), "reserved header bytes"),
    ],
)
def test_crafted_headers_with_valid_checksums_are_rejected(changes, message):
    data = _repack_fixed(pack(make_header()), **changes)
    with pytest.raises(ContainerError, match=message):
        unpack(data)


def _sections(labels: str, tiles: int = 1) -> list[Section]:
    """Sections named like 'u y1 z1 x', repeated for each tile."""
    out = []
    for tile in range(tiles):
        for label in labels.split():
            out.append(Section(label[0], int(label[1:] or 0), tile, b"\x00" * 4))
    return out


@pytest.mark.parametrize(
    "mode, labels",
    [
        ("full", "u y1 z1 y2 z2 x"),
        ("conditional", "u y1 z1 y2 z2"),
        ("rs2", "u z1 z2"),
        ("rs1", "u"),
        ("full", "u x"),  # a model without representations
    ],
)
def test_every_mode_order_round_trips_over_several_tiles(mode, labels):
    header = make_header(mode=mode, width=40, height=20, tile_size=16, sections=_sections(labels, tiles=6))
    assert header.tile_count == 6
    assert unpack(pack(header)).sections == header.sections


@pytest.mark.parametrize(
    "mode, labels, message",
    [
        ("full", "u y1 z2 x", "out of order at tile 1: found u y1 z2 x"),  # wrong level
        ("full", "u y1 z1", "out of order"),  # x missing
        ("full", "u z1 y1 x", "out of order"),  # swapped
        ("rs2", "u y1 z1", "out of order"),  # a y in an rs2 file
        ("rs1", "u x", "out of order"),
        ("full", "x2 y1 z1 x", "out of order"),  # a level on u's place
    ],
)
def test_section_tables_out_of_the_modes_order_are_rejected(mode, labels, message):
    header = make_header(mode=mode, sections=_sections(labels))
    with pytest.raises(ContainerError, match=message):
        pack(header)


def test_sections_of_the_wrong_tile_or_a_missing_tile_are_rejected():
    sections = _sections("u y1 z1 x", tiles=2)
    swapped = sections[4:] + sections[:4]
    with pytest.raises(ContainerError, match="names tile 1 after tile 2"):
        pack(make_header(width=20, height=16, tile_size=16, sections=swapped))
    with pytest.raises(ContainerError, match="out of order at tile 2: found nothing"):
        pack(make_header(width=20, height=16, tile_size=16, sections=sections[:4]))
    extra = Section("u", 0, 2, b"\x00" * 4)
    with pytest.raises(ContainerError, match="names tile 3"):
        pack(make_header(width=20, height=16, tile_size=16, sections=[*sections, extra]))


def test_a_full_file_may_hold_a_tile_as_classical_pixels():
    pixels = [Section("pixels", 0, 1, b"PNG bytes")]
    third = [Section(s.kind, s.level, 2, s.payload) for s in _sections("u y1 z1 x")]
    sections = _sections("u y1 z1 x") + pixels + third
    header = make_header(width=48, height=16, tile_size=16, sections=sections)
    assert unpack(pack(header)).sections == sections
    for mode, labels in (("conditional", "u y1 z1"), ("rs2", "u z1")):
        lossy = [*_sections(labels), Section("pixels", 0, 1, b"x")]
        with pytest.raises(ContainerError, match="out of order at tile 2"):
            pack(make_header(mode=mode, width=32, height=16, tile_size=16, sections=lossy))


def test_metadata_section_must_come_first():
    meta = Section("meta", 0, 0, b"abc")  # any length: not an ANS stream
    header = make_header(sections=[meta, *_sections("u y1 z1 x")])
    assert unpack(pack(header)).metadata_payload == b"abc"
    with pytest.raises(ContainerError, match="out of order"):
        pack(make_header(sections=[*_sections("u y1 z1 x"), meta]))
    with pytest.raises(ContainerError, match="level 0 and tile 0"):
        pack(make_header(sections=[Section("meta", 1, 0, b"abc"), *_sections("u y1 z1 x")]))


def test_version_1_files_are_read_but_cannot_hold_metadata():
    plain = _repack_fixed(pack(make_header()), version=1)
    assert unpack(plain).version == 1
    with_meta = pack(make_header(sections=[Section("meta", 0, 0, b"abcd"), *_sections("u y1 z1 x")]))
    with pytest.raises(ContainerError, match="version 1 file cannot hold a metadata"):
        unpack(_repack_fixed(with_meta, version=1))


def test_metadata_payload_round_trips_and_rejects_garbage():
    from selfvae_codec.bitstream import ImageMetadata, pack_metadata, unpack_metadata

    metadata = ImageMetadata(icc_profile=b"\x00icc", exif=b"Exif\x00\x00MM", xmp=b"<x:xmpmeta/>")
    assert unpack_metadata(pack_metadata(metadata)) == metadata
    only_exif = ImageMetadata(exif=b"II*")
    assert unpack_metadata(pack_metadata(only_exif)) == only_exif and only_exif.names() == ["exif"]
    assert not ImageMetadata() and unpack_metadata(None) == ImageMetadata()
    payload = pack_metadata(metadata)
    with pytest.raises(ContainerError, match="truncated"):
        unpack_metadata(payload[:-1])
    with pytest.raises(ContainerError, match="unknown or repeated"):
        unpack_metadata(payload + payload)
    with pytest.raises(ContainerError, match="unknown or repeated"):
        unpack_metadata(b"\x09\x00\x00\x00\x00")


def test_pack_refuses_invalid_headers():
    with pytest.raises(ContainerError):
        pack(make_header(mode="lossy"))
    with pytest.raises(ContainerError):
        pack(make_header(model_fingerprint=b"short"))


def test_bitstream_package_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, selfvae_codec.bitstream; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
