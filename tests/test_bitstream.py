import struct

import pytest

from selfvae_codec.bitstream import ContainerError, Header, Section, crc32, pack, unpack
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
        sections=[Section("u", 0, 0, b"\x01\x02\x03\x04"), Section("y", 1, 0, b"abcdefgh"), Section("x", 0, 0, b"")],
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
    assert data[:4] == b"SVC\x89" and data[4] == 1
    assert struct.unpack_from("<II", data, 12) == (75, 50)


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
        (dict(threads=0), "thread count"),
        (dict(count=60000), "truncated"),
    ],
)
def test_crafted_headers_with_valid_checksums_are_rejected(changes, message):
    data = _repack_fixed(pack(make_header()), **changes)
    with pytest.raises(ContainerError, match=message):
        unpack(data)


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
