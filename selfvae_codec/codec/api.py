"""The Python API: compress / decompress images with a loaded model.

    from selfvae_codec import Codec
    codec = Codec()                               # the shipped default model
    data = codec.compress("photo.png", mode="full")
    image = codec.decompress(data)                # numpy uint8, H x W x 3 (or H x W)

`compress` / `decompress` at module level use one shared default Codec, loaded on
first use, so a batch of images does not reload the model.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..bitstream import ContainerError, Header, Section, crc32, pack, unpack
from ..models.selfvae import SelfVAE
from ..models.transforms import tile_boxes, to_grayscale
from .engine import MODES, walk
from .entropy import CodingError, DecoderStream, EncoderStream

DEFAULT_TILE = 512
DEFAULT_STEP = {"full": 1.0, "conditional": 1.0, "rs2": 1.0, "rs1": 1.0}
MAX_INPUT_PIXELS = 1 << 28
# (from mode, to mode) -> the section kinds the lower mode keeps. u is coded the
# same way in every mode; y's and z's of full / conditional files are coded with the
# true y's, which rs2 does not have, so full -> rs2 is impossible.
TRUNCATIONS = {
    ("full", "conditional"): {"u", "y", "z"},
    ("full", "rs1"): {"u"},
    ("conditional", "rs1"): {"u"},
    ("rs2", "rs1"): {"u"},
}


class CodecError(Exception):
    """Anything that stops an image from being coded or decoded (one-line message)."""


class ModelMismatchError(CodecError):
    """The file was encoded with a different model than the one given."""


@dataclass
class EncodeResult:
    data: bytes
    reconstruction: np.ndarray  # what decoding will return, bit for bit
    estimated_bits: dict[str, float]  # -log2 p of the coded pixel symbols, per section
    seconds: float


def image_to_array(image) -> tuple[np.ndarray, int]:
    """An RGB uint8 array [H, W, 3] and the original channel count (1 or 3).

    Accepts a path, a PIL image or a numpy uint8 array ([H, W], [H, W, 1|3|4]).
    Grayscale is coded as RGB with three equal channels and returned as grayscale.
    Palette images are expanded to RGB. An alpha channel is dropped only when it is
    fully opaque; otherwise the image is refused (the codec does not code alpha).
    """
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as opened:
                opened.load()
                return image_to_array(opened)
        except FileNotFoundError as error:
            raise CodecError(f"input file not found: {image}") from error
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
            raise CodecError(f"cannot read {image} as an image: {error}") from error
    if isinstance(image, Image.Image):
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode in ("1", "L", "LA", "RGB", "RGBA"):
            array = np.asarray(image.convert("L") if image.mode == "1" else image)
        else:
            raise CodecError(
                f"unsupported image mode {image.mode!r}: only 8-bit grayscale and RGB "
                "(with an opaque alpha) are coded; convert it first"
            )
        return image_to_array(array)
    if not isinstance(image, np.ndarray):
        raise CodecError(f"expected a path, PIL image or numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise CodecError(f"expected 8-bit pixels (uint8), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] in (2, 4):  # gray+alpha or RGB+alpha
        if (image[..., -1] != 255).any():
            raise CodecError("the image has transparency; the codec does not code an alpha channel")
        image = image[..., :-1]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2), 1
    if image.ndim != 3 or image.shape[2] != 3:
        raise CodecError(f"unsupported image shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise CodecError("the image is empty")
    if image.shape[0] * image.shape[1] > MAX_INPUT_PIXELS or max(image.shape[:2]) > 65536:
        raise CodecError(f"image of {image.shape[1]}x{image.shape[0]} pixels is too large to code")
    return np.array(image, dtype=np.uint8, order="C", copy=True), 3


def _output_image(reconstruction: np.ndarray, channels: int) -> np.ndarray:
    if channels == 3:
        return reconstruction
    rgb = torch.from_numpy(reconstruction).permute(2, 0, 1)[None]
    return to_grayscale(rgb)[0, 0].numpy().astype(np.uint8)


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Codec:
    """A loaded model plus coding settings; reuse one for many images."""

    def __init__(
        self,
        model: SelfVAE | str | Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
        tile_size: int = DEFAULT_TILE,
    ):
        from ..models.pretrained import load_pretrained

        started = time.perf_counter()
        if model is None or (isinstance(model, str) and not Path(model).suffix):
            model = load_pretrained(model or "default", device=device)
        elif isinstance(model, (str, Path)):
            from ..models.io import load_model

            model = load_model(model, device=device)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.threads = threads or torch.get_num_threads()
        if not 1 <= self.threads <= 255:
            raise CodecError("threads must be between 1 and 255")
        if not 16 <= tile_size <= 65535:
            raise CodecError("tile size must be between 16 and 65535")
        self.tile_size = tile_size
        self.fingerprint = self.model.fingerprint()
        self.load_seconds = time.perf_counter() - started

    # -- encoding ------------------------------------------------------------------
    def encode(
        self, image, mode: str = "full", step: float | None = None, progress: Callable[[int, int], None] | None = None
    ) -> EncodeResult:
        if mode not in MODES:
            raise CodecError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        step = DEFAULT_STEP[mode] if step is None else float(step)
        if not 1e-3 <= step <= 1e3:
            raise CodecError("the latent quantisation step must be between 0.001 and 1000")
        started = time.perf_counter()
        array, channels = image_to_array(image)
        height, width = array.shape[:2]
        x = torch.from_numpy(array).permute(2, 0, 1)[None].to(self.device, torch.int64)
        reconstruction = np.empty_like(array)
        sections: list[Section] = []
        estimated: dict[str, float] = {}
        tiles = tile_boxes(height, width, self.tile_size)
        with _torch_threads(self.threads), torch.no_grad():
            for index, (top, bottom, left, right) in enumerate(tiles):
                tile = x[..., top:bottom, left:right]
                stream = EncoderStream(tile=index)
                result = walk(
                    self.model, stream, mode, (bottom - top, right - left), step, truth=self.model.infer(tile)
                )
                sections += stream.finish()
                for label, bits in stream.estimated_bits.items():
                    estimated[label] = estimated.get(label, 0.0) + bits
                reconstruction[top:bottom, left:right] = result[0].permute(1, 2, 0).cpu().numpy()
                if progress:
                    progress(index + 1, len(tiles))
        if mode == "full" and not np.array_equal(reconstruction, array):
            raise CodecError("internal error: the lossless walk did not reproduce the image")
        output = _output_image(reconstruction, channels)
        header = Header(
            mode=mode,
            width=width,
            height=height,
            channels=channels,
            model_fingerprint=bytes.fromhex(self.fingerprint),
            latent_step=step,
            tile_size=self.tile_size,
            image_crc=crc32(output.tobytes()),
            threads=self.threads,
            sections=sections,
        )
        return EncodeResult(pack(header), output, estimated, time.perf_counter() - started)

    def compress(self, image, mode: str = "full", step: float | None = None) -> bytes:
        return self.encode(image, mode, step).data

    # -- decoding ------------------------------------------------------------------
    def decompress(
        self, data: bytes, progress: Callable[[int, int], None] | None = None, verify: bool = True
    ) -> np.ndarray:
        header = unpack(data)
        if header.model_fingerprint.hex() != self.fingerprint:
            raise ModelMismatchError(
                f"the file was encoded with model {header.model_fingerprint.hex()[:12]}, "
                f"not with the loaded model {self.fingerprint[:12]}"
            )
        tiles = tile_boxes(header.height, header.width, header.tile_size)
        by_tile: dict[int, list[Section]] = {}
        for section in header.sections:
            if section.tile >= len(tiles):
                raise CodecError(f"section for tile {section.tile}, but the image has {len(tiles)} tiles")
            by_tile.setdefault(section.tile, []).append(section)
        reconstruction = np.empty((header.height, header.width, 3), dtype=np.uint8)
        with _torch_threads(header.threads), torch.no_grad():
            for index, (top, bottom, left, right) in enumerate(tiles):
                stream = DecoderStream(by_tile.get(index, []))
                try:
                    result = walk(self.model, stream, header.mode, (bottom - top, right - left), header.latent_step)
                    stream.finish()
                except CodingError as error:
                    raise CodecError(f"cannot decode tile {index}: {error}") from error
                except BaseException as error:  # constriction panics are not Exceptions
                    if isinstance(error, (KeyboardInterrupt, SystemExit, MemoryError)):
                        raise
                    raise CodecError(f"cannot decode tile {index}: corrupt data ({type(error).__name__})") from error
                reconstruction[top:bottom, left:right] = result[0].permute(1, 2, 0).cpu().numpy()
                if progress:
                    progress(index + 1, len(tiles))
        output = _output_image(reconstruction, header.channels)
        if verify and crc32(output.tobytes()) != header.image_crc:
            raise CodecError(
                "the decoded image does not match the encoder's checksum "
                "(different torch build or device, or corrupt data); nothing was written"
            )
        return output

    # -- cutting files down ------------------------------------------------------------
    def truncate(self, data: bytes, mode: str) -> bytes:
        """Cut a file down to a lower mode without re-encoding: keep the sections the
        lower mode uses (they are a prefix of each tile's sections) and record the
        checksum of the image it decodes to. The result is byte-identical to encoding
        the image in that mode directly with the same settings."""
        header = unpack(data)
        if mode == header.mode:
            return data
        kept_kinds = TRUNCATIONS.get((header.mode, mode))
        if kept_kinds is None:
            possible = sorted(target for source, target in TRUNCATIONS if source == header.mode)
            raise CodecError(
                f"a {header.mode} file cannot be cut down to {mode} (possible: {', '.join(possible) or 'none'})"
            )
        header.sections = [s for s in header.sections if s.kind in kept_kinds]
        header.mode = mode
        header.image_crc = 0
        image = self.decompress(pack(header), verify=False)
        header.image_crc = crc32(image.tobytes())
        return pack(header)

    # -- files -----------------------------------------------------------------------
    def compress_file(
        self,
        source: str | Path,
        destination: str | Path,
        mode: str = "full",
        step: float | None = None,
        overwrite: bool = False,
    ) -> EncodeResult:
        destination = Path(destination)
        if destination.exists() and not overwrite:
            raise CodecError(f"{destination} exists (use --force / overwrite=True to replace it)")
        result = self.encode(source, mode, step)
        write_atomically(destination, result.data)
        return result

    def decompress_file(self, source: str | Path, destination: str | Path, overwrite: bool = False) -> np.ndarray:
        destination = Path(destination)
        if destination.exists() and not overwrite:
            raise CodecError(f"{destination} exists (use --force / overwrite=True to replace it)")
        image = self.decompress(read_file(source))
        save_image_atomically(destination, image)
        return image


def read_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as error:
        raise CodecError(f"input file not found: {path}") from error
    except IsADirectoryError as error:
        raise CodecError(f"{path} is a directory") from error


def write_atomically(destination: Path, data: bytes) -> None:
    """Write to a temporary file beside the destination, then rename: never a half file."""
    directory = destination.resolve().parent
    if not directory.is_dir():
        raise CodecError(f"output folder does not exist: {directory}")
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_image_atomically(destination: Path, image: np.ndarray) -> None:
    import io

    suffix = destination.suffix.lower()
    formats = {
        ".png": "PNG",
        ".bmp": "BMP",
        ".tif": "TIFF",
        ".tiff": "TIFF",
        ".ppm": "PPM",
        ".pgm": "PPM",
        ".webp": "WEBP",
    }
    if suffix not in formats:
        raise CodecError(f"cannot write {suffix or 'extension-less'} files; use .png (or .bmp, .tiff, .ppm)")
    buffer = io.BytesIO()
    options = {"lossless": True} if formats[suffix] == "WEBP" else {}
    Image.fromarray(image).save(buffer, format=formats[suffix], **options)
    write_atomically(destination, buffer.getvalue())


_DEFAULT_CODEC: Codec | None = None


def default_codec() -> Codec:
    global _DEFAULT_CODEC
    if _DEFAULT_CODEC is None:
        _DEFAULT_CODEC = Codec()
    return _DEFAULT_CODEC


def compress(image, mode: str = "full", step: float | None = None) -> bytes:
    """Compress an image (path, PIL image or uint8 array) with the default model."""
    return default_codec().compress(image, mode, step)


def decompress(data: bytes) -> np.ndarray:
    """Decompress .svc bytes with the default model: uint8 [H, W, 3] or [H, W]."""
    return default_codec().decompress(data)


__all__ = ["Codec", "CodecError", "ContainerError", "ModelMismatchError", "compress", "decompress"]
