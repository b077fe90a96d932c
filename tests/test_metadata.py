"""Metadata: what an .svc file keeps of its source (ICC, EXIF, XMP), what it refuses
rather than drop (transparency), and what it names in a warning."""

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import CHELSEA, run
from PIL import Image, PngImagePlugin

from selfvae_codec.bitstream import unpack
from selfvae_codec.codec.api import Codec, CodecError, file_metadata


@pytest.fixture
def photo_with_metadata(tmp_path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees when shown
    exif[0x010F] = "TestCam"
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>test</x:xmpmeta>")
    path = tmp_path / "tagged.png"
    icc = Image.open(CHELSEA).info["icc_profile"]
    Image.open(CHELSEA).save(path, exif=exif.tobytes(), icc_profile=icc, pnginfo=info)
    return path


def test_icc_exif_and_xmp_survive_a_round_trip(photo_with_metadata, tmp_path):
    assert run("encode", photo_with_metadata, "-o", tmp_path / "t.svc").exit_code == 0
    assert file_metadata(tmp_path / "t.svc").names() == ["icc_profile", "exif", "xmp"]
    assert run("decode", tmp_path / "t.svc", "-o", tmp_path / "back.png").exit_code == 0
    original, back = Image.open(photo_with_metadata), Image.open(tmp_path / "back.png")
    assert back.info["icc_profile"] == original.info["icc_profile"]
    assert back.getexif()[0x0112] == 6 and back.getexif()[0x010F] == "TestCam"
    assert back.info["xmp"] == original.info["xmp"]
    assert np.array_equal(np.asarray(back), np.asarray(original))
    coded = Codec(threads=1).compress(photo_with_metadata, classical_tiles=False)  # a file truncate can cut
    (tmp_path / "m.svc").write_bytes(coded)
    cut = run("truncate", tmp_path / "m.svc", "--mode", "rs1", "-o", tmp_path / "cut.svc")
    assert cut.exit_code == 0 and file_metadata(tmp_path / "cut.svc") == file_metadata(tmp_path / "t.svc")


def test_strip_drops_the_metadata_and_formats_without_it_warn(photo_with_metadata, tmp_path):
    assert run("encode", photo_with_metadata, "-o", tmp_path / "s.svc", "--strip").exit_code == 0
    assert not file_metadata(tmp_path / "s.svc")
    assert all(s.kind != "meta" for s in unpack((tmp_path / "s.svc").read_bytes()).sections)
    assert run("encode", photo_with_metadata, "-o", tmp_path / "t.svc").exit_code == 0
    result = run("decode", tmp_path / "t.svc", "-o", tmp_path / "t.bmp")
    assert result.exit_code == 0 and "warning: " in result.stderr and "icc_profile and exif and xmp" in result.stderr


@pytest.mark.parametrize("mode, colour", [("L", 4), ("RGB", (4, 4, 4))])
def test_a_trns_transparent_colour_is_refused_not_dropped(tmp_path, mode, colour):
    gray = (np.arange(64 * 64).reshape(64, 64) % 128 * 2).astype(np.uint8)  # even values only
    image = Image.fromarray(gray if mode == "L" else np.stack([gray] * 3, axis=2))
    image.save(tmp_path / "trns.png", transparency=colour)
    result = run("encode", tmp_path / "trns.png")
    assert result.exit_code == 1 and "transparency" in result.stderr
    assert not (tmp_path / "trns.svc").exists()
    image.save(tmp_path / "unused.png", transparency=(5 if mode == "L" else (5, 5, 5)))  # no pixel has it
    assert run("encode", tmp_path / "unused.png").exit_code == 0


def test_a_tiffs_exif_tags_are_kept_without_its_layout_tags(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "TestCam"
    exif.get_ifd(0x8769)[0x9003] = "2020:01:01 10:00:00"  # DateTimeOriginal, in the Exif block
    Image.open(CHELSEA).save(tmp_path / "tagged.tiff", exif=exif.tobytes(), dpi=(300, 300))
    assert run("encode", tmp_path / "tagged.tiff", "-o", tmp_path / "t.svc").exit_code == 0
    assert run("decode", tmp_path / "t.svc", "-o", tmp_path / "back.png").exit_code == 0
    back = Image.open(tmp_path / "back.png").getexif()
    assert back[0x010F] == "TestCam" and back[0x011A] == 300
    # Pillow turns a TIFF's pixels upright as it loads them and drops the orientation
    # tag, so the decoded image is the upright one and must not be turned again.
    assert Image.open(tmp_path / "back.png").size == (50, 75) and 0x0112 not in back
    assert back.get_ifd(0x8769)[0x9003] == "2020:01:01 10:00:00"
    assert not {256, 257, 273, 279} & set(back)  # the TIFF's width, height and strips are not EXIF


def test_what_an_svc_file_does_not_keep_is_named_in_a_warning(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a cat")
    info.add_text("Author", "someone")
    Image.open(CHELSEA).save(tmp_path / "texts.png", pnginfo=info, dpi=(300, 300))
    result = run("encode", tmp_path / "texts.png")
    assert result.exit_code == 0
    assert "does not keep the source's text (Comment, Author), resolution (300 dpi)" in result.stderr
    assert "does not keep" not in run("encode", CHELSEA, "-o", tmp_path / "plain.svc").stderr


def test_the_api_and_the_cli_both_refuse_a_damaged_metadata_section(photo_with_metadata, tmp_path):
    from selfvae_codec.bitstream import Section, pack

    header = unpack(Codec(threads=1).compress(photo_with_metadata))
    header.sections[0] = Section("meta", 0, 0, b"\x09 not an entry")  # checksums are recomputed by pack
    (tmp_path / "bad.svc").write_bytes(pack(header))
    with pytest.raises(CodecError, match="metadata section"):
        Codec(threads=1).decompress(tmp_path / "bad.svc")
    result = run("decode", tmp_path / "bad.svc", "-o", tmp_path / "bad.png")
    assert result.exit_code == 1 and "metadata section" in result.stderr and not (tmp_path / "bad.png").exists()
