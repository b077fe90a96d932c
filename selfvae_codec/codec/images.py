"""Reading images in and writing them out (Pillow, numpy; no torch here).

What the codec accepts: 8-bit grayscale and RGB (any format Pillow reads, PIL images
or numpy uint8 arrays), palette images expanded to RGB, and an alpha channel only
when it is fully opaque. Everything else is refused with a one-line reason, never
silently reduced: transparency, 16-bit or float samples (whatever Pillow would turn
them into), CMYK, animations. The ICC profile, EXIF and XMP come along as metadata.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from ..bitstream import MAX_PIXELS, MAX_SIDE, Header, ImageMetadata, unpack, unpack_metadata
from ..errors import BadValueError, CodecError, OutputExistsError
from ..files import new_file_mode

# Files a folder of inputs contributes (by extension, case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif")
# Decoded images are written losslessly, in the format the extension names.
OUTPUT_FORMATS = {
    ".png": "PNG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".ppm": "PPM",
    ".pgm": "PPM",
    ".webp": "WEBP",
}
# Which metadata each output format can hold (through Pillow's save options).
FORMAT_METADATA = {
    "PNG": ("icc_profile", "exif", "xmp"),
    "WEBP": ("icc_profile", "exif", "xmp"),
    "TIFF": ("icc_profile", "exif"),
    "BMP": (),
    "PPM": (),
}
_HIGH_BIT_DEPTH = re.compile(r";(16|32)[BLN]?$")  # Pillow raw modes of 16/32-bit samples


# TIFF tags that describe the file's layout, not the picture: left out when a TIFF's
# tags become the EXIF block an .svc file keeps (ICC profile and XMP go separately).
TIFF_LAYOUT_TAGS = frozenset(
    [254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 288, 289]
    + [290, 291, 292, 293, 317, 320, 322, 323, 324, 325, 330, 338, 339, 340, 341, 347]
    + list(range(512, 522))
    + [529, 530, 531, 532, 700, 34675]
)
EXIF_POINTER_TAGS = (0x8769, 0x8825, 0xA005)  # the Exif, GPS and interoperability sub-blocks


@dataclass
class LoadedImage:
    pixels: np.ndarray  # uint8 [H, W, 3] (grayscale repeated into three channels)
    channels: int  # 1 or 3: what the source had and what decoding gives back
    metadata: ImageMetadata = field(default_factory=ImageMetadata)
    not_kept: list[str] = field(default_factory=list)  # what the source carried that an .svc file does not


def load_image(source) -> LoadedImage:
    """Read a path, file bytes, a binary file object, a PIL image or a uint8 array."""
    if hasattr(source, "read"):
        source = source.read()
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not source:
            raise CodecError("the input is empty (0 bytes): no image to read")
        return _load_file(io.BytesIO(bytes(source)), "the input")
    if isinstance(source, (str, os.PathLike)):
        return _load_file(Path(source), str(source))
    if isinstance(source, Image.Image):
        return _from_pil(source)
    if isinstance(source, np.ndarray):
        pixels, channels = _from_array(source)
        return LoadedImage(pixels, channels)
    raise CodecError(f"expected a path, image file bytes, PIL image or numpy array, got {type(source).__name__}")


def _load_file(file, name: str) -> LoadedImage:
    try:
        with Image.open(file) as opened:
            return _from_pil(opened)
    except FileNotFoundError as error:
        raise CodecError(f"input file not found: {name}") from error
    except IsADirectoryError as error:
        raise CodecError(f"{name} is a folder, not an image") from error
    except UnidentifiedImageError as error:
        raise CodecError(f"cannot read {name} as an image: not an image format this Pillow reads") from error
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise CodecError(f"cannot read {name} as an image: {error}") from error


def _raw_modes(image: Image.Image) -> list[str]:
    modes = []
    for tile in getattr(image, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        if isinstance(args, tuple) and args:
            args = args[0]
        if isinstance(args, str):
            modes.append(args)
    return modes


def _from_pil(image: Image.Image) -> LoadedImage:
    if getattr(image, "n_frames", 1) > 1:
        raise CodecError(f"the image is animated ({image.n_frames} frames); only still images are coded")
    # Pillow reduces 16-bit RGB(A) to 8 bits while loading; only the file's raw mode,
    # seen before loading, tells.
    if any(_HIGH_BIT_DEPTH.search(mode) for mode in _raw_modes(image)):
        raise CodecError("the image has 16-bit samples; only 8-bit images are coded (coding 8 bits would lose data)")
    image.load()
    xmp = image.info.get("xmp")
    exif = image.info.get("exif") or (_tiff_exif(image) if image.format == "TIFF" else None)
    metadata = ImageMetadata(
        icc_profile=image.info.get("icc_profile") or None,
        exif=exif or None,
        xmp=(xmp.encode("utf-8") if isinstance(xmp, str) else xmp) or None,
    )
    if "transparency" in image.info:  # a palette's, or a tRNS colour of a grayscale / RGB image
        image = image.convert("LA" if image.mode in ("1", "L") else "RGBA")
    if image.mode == "P":
        image = image.convert("RGB")
    if image.mode == "1":
        image = image.convert("L")
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        raise CodecError(
            f"unsupported image mode {image.mode!r}: only 8-bit grayscale and RGB "
            "(with an opaque alpha) are coded; convert it first"
        )
    pixels, channels = _from_array(np.asarray(image))
    return LoadedImage(pixels, channels, metadata, _not_kept(image))


def _tiff_exif(image: Image.Image) -> bytes | None:
    """A TIFF's descriptive tags (camera, orientation, dates, resolution, the Exif and
    GPS blocks) as an EXIF block, without the tags of its own file layout."""
    tags = image.getexif()
    kept = Image.Exif()
    for tag, value in tags.items():
        if tag not in TIFF_LAYOUT_TAGS and tag not in EXIF_POINTER_TAGS:
            kept[tag] = value
    for pointer in EXIF_POINTER_TAGS:
        if pointer in tags:
            kept.get_ifd(pointer).update(tags.get_ifd(pointer))
    return kept.tobytes() if len(kept) or any(kept.get_ifd(p) for p in EXIF_POINTER_TAGS) else None


def _not_kept(image: Image.Image) -> list[str]:
    """What the source file carried that an .svc file does not keep (the ICC profile,
    EXIF and XMP it keeps): text chunks, the resolution, colour tags without a profile."""
    text = [key for key in getattr(image, "text", {}) if key != "XML:com.adobe.xmp"]
    found = [f"text ({', '.join(text)})"] if text else []
    dpi = image.info.get("dpi")
    if dpi and 282 not in image.getexif():  # 282: the EXIF block's own resolution, which is kept
        found.append(f"resolution ({round(float(dpi[0]))} dpi)")
    if "icc_profile" not in image.info:
        found += [name for key, name in _COLOUR_TAGS.items() if key in image.info]
    return found


# PNG colour chunks that an ICC profile, when present, supersedes.
_COLOUR_TAGS = {"gamma": "gamma", "chromaticity": "chromaticities", "srgb": "sRGB rendering intent"}


def _from_array(image: np.ndarray) -> tuple[np.ndarray, int]:
    if image.dtype != np.uint8:
        raise CodecError(f"expected 8-bit pixels (uint8), got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        raise CodecError(f"unsupported image shape {image.shape}: expected H x W or H x W x 1|2|3|4")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise CodecError("the image is empty")
    if image.shape[0] * image.shape[1] > MAX_PIXELS or max(image.shape[:2]) > MAX_SIDE:
        raise CodecError(f"image of {image.shape[1]}x{image.shape[0]} pixels is too large to code")
    if image.ndim == 3 and image.shape[2] in (2, 4):  # gray+alpha or RGB+alpha
        if (image[..., -1] != 255).any():
            raise CodecError("the image has transparency; the codec does not code an alpha channel")
        image = image[..., :-1]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2), 1
    return np.array(image, dtype=np.uint8, order="C", copy=True), 3


def list_images(paths, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    """The files named, with every file below a named folder whose extension is one
    of `suffixes` (images by default), sorted."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise CodecError(f"no {' or '.join(suffixes[:3])}{' ...' if len(suffixes) > 3 else ''} files in {path}")
            files += found
        else:
            files.append(path)
    return files


# -- tiles stored by a classical lossless coder -------------------------------------


WEBP_MAX_SIDE = 16383  # libwebp's largest width or height


# How hard the encoder tries, per effort level (`--effort`, 1 to MAX_EFFORT): among
# other things, which lossless WebP methods a tile stored classically is tried with
# (the smallest file is kept, so a higher effort never gives a larger file). On
# val/classic's photos (512x512 tiles, one busy core) method 5 makes files 0.9%
# smaller than method 4 in 3x its time (0.55 s against 0.18 s a tile), method 6 2.2%
# smaller in 14x its time; on small images method 4 can be the smallest. PNG at its
# default level is there for the guarantee "never larger than PNG" (0.07 s).
MAX_EFFORT = 9
EFFORT_WEBP_METHODS = {1: (4,), 2: (4, 5)} | {effort: (4, 5, 6) for effort in range(3, MAX_EFFORT + 1)}
DEFAULT_EFFORT = 2


def classical_lossless(pixels: np.ndarray, grayscale: bool, effort: int = DEFAULT_EFFORT, threads: int = 1) -> bytes:
    """The smallest of a PNG and lossless WebP files (at the effort's methods) of an
    RGB tile (one channel when the image is grayscale): what a `pixels` section holds.
    With `threads` > 1 the files are written side by side (Pillow's encoders release
    the GIL); the first of the smallest is kept either way. Each encoder gets its own
    Image: `save` keeps its options on the Image, so encoders sharing one could
    read each other's WebP method."""
    tile = np.ascontiguousarray(pixels[..., 0] if grayscale else pixels)
    settings = [("PNG", {"compress_level": 6})]
    if max(tile.shape[:2]) <= WEBP_MAX_SIDE:
        settings += [("WEBP", {"lossless": True, "quality": 100, "method": m}) for m in EFFORT_WEBP_METHODS[effort]]

    def write(setting: tuple[str, dict]) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(tile).save(buffer, format=setting[0], **setting[1])
        return buffer.getvalue()

    if threads > 1:
        with ThreadPoolExecutor(min(threads, len(settings))) as pool:
            files = list(pool.map(write, settings))
    else:
        files = [write(setting) for setting in settings]
    return min(files, key=len)


def read_classical_tile(payload: bytes, height: int, width: int) -> np.ndarray:
    """The RGB pixels [height, width, 3] of a `pixels` section, or a one-line error."""
    try:
        with Image.open(io.BytesIO(payload), formats=["PNG", "WEBP"]) as image:
            if image.size != (width, height) or image.mode not in ("L", "RGB"):
                raise CodecError(
                    f"a pixels section holds a {image.mode} {image.size[0]}x{image.size[1]} image, "
                    f"not the tile's {width}x{height}"
                )
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise CodecError(f"a pixels section is not a readable PNG or WebP image ({error})") from error
    return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array


# -- outputs -------------------------------------------------------------------------


def output_format(destination: str | Path, channels: int | None = None) -> str:
    """The Pillow format an image output path asks for, or a one-line error."""
    suffix = Path(destination).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        known = ", ".join(OUTPUT_FORMATS)
        raise BadValueError(f"cannot write {suffix or 'extension-less'} image files; use one of {known}")
    if suffix == ".pgm" and channels == 3:
        raise BadValueError("a .pgm file holds grayscale and this image is RGB; use .ppm or .png")
    return OUTPUT_FORMATS[suffix]


def check_output(destination: str | Path, overwrite: bool, source: str | Path | None = None) -> None:
    """Refuse, before any work, an output that exists (unless overwrite), that is the
    input itself, or whose folder does not exist."""
    destination = Path(destination)
    if source is not None and destination.exists() and Path(source).exists():
        if os.path.samefile(source, destination):
            raise CodecError(f"the output {destination} is the input file itself")
    if destination.is_dir():
        raise CodecError(f"the output {destination} is a folder")
    if destination.exists() and not overwrite:
        raise OutputExistsError(f"{destination} exists")
    if not destination.resolve().parent.is_dir():
        raise CodecError(f"output folder does not exist: {destination.resolve().parent}")


def encode_image_file(image: np.ndarray, fmt: str, metadata: ImageMetadata) -> tuple[bytes, list[str]]:
    """The bytes of a lossless image file, with the metadata the format can hold, and
    the names of the metadata pieces it could not."""
    options: dict = {"lossless": True, "quality": 100} if fmt == "WEBP" else {}
    kept = [name for name in metadata.names() if name in FORMAT_METADATA[fmt]]
    for name in kept:
        options[name] = getattr(metadata, name)
    if fmt == "PNG" and "xmp" in kept:  # Pillow writes XMP into PNG as an iTXt chunk
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", options.pop("xmp").decode("utf-8", "replace"))
        options["pnginfo"] = info
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue(), [name for name in metadata.names() if name not in kept]


def write_output(destination: str | Path | BinaryIO, data: bytes) -> None:
    """Write to a binary stream, or atomically to a path."""
    if hasattr(destination, "write"):
        destination.write(data)
        destination.flush()
    else:
        write_atomically(Path(destination), data)


def write_atomically(destination: Path, data: bytes) -> None:
    """Write to a temporary file beside the destination, then rename: never a half
    file. The file gets the permissions a new file gets (0666 less the umask)."""
    directory = destination.resolve().parent
    if not directory.is_dir():
        raise CodecError(f"output folder does not exist: {directory}")
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, new_file_mode())
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def decode_to_image_file(
    source: str | Path | BinaryIO,
    destination: str | Path | BinaryIO,
    decode: Callable[[Header], np.ndarray],
    overwrite: bool = False,
    image_format: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Decode an .svc file (or stream) with `decode` (its parsed header -> the image)
    into a lossless image file with the metadata the .svc carries. The format
    follows the destination's extension (PNG for a stream unless `image_format` says
    otherwise); a path destination is checked before any work and written
    atomically. Returns the image and the names of metadata pieces the output format
    could not hold."""
    header = unpack(read_input(source))
    if hasattr(destination, "write"):
        image_format = image_format or "PNG"
    else:
        image_format = image_format or output_format(destination, header.channels)
        check_output(destination, overwrite, source if not hasattr(source, "read") else None)
    image = decode(header)
    encoded, dropped = encode_image_file(image, image_format, unpack_metadata(header.metadata_payload))
    write_output(destination, encoded)
    return image, dropped


def read_input(source: str | Path | BinaryIO) -> bytes:
    """The bytes of a file (path or binary stream), or a one-line error."""
    if hasattr(source, "read"):
        return source.read()
    try:
        return Path(source).read_bytes()
    except FileNotFoundError as error:
        raise CodecError(f"input file not found: {source}") from error
    except IsADirectoryError as error:
        raise CodecError(f"{source} is a folder") from error
    except PermissionError as error:
        raise CodecError(f"cannot read {source}: permission denied") from error


def svc_bytes(data) -> bytes:
    """.svc bytes from bytes-like data, a path to a file or a binary stream."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, (str, os.PathLike)) or hasattr(data, "read"):
        return read_input(data)
    raise BadValueError(f"expected .svc bytes, a path to an .svc file or a binary stream, got {type(data).__name__}")
