"""The Python API: compress / decompress images with a loaded model.

    from selfvae_codec import Codec
    codec = Codec()                               # the shipped default model
    data = codec.compress("photo.png", mode="full")
    image = codec.decompress(data)                # numpy uint8, H x W x 3 (or H x W)

`compress` / `decompress` at module level use one shared default Codec, loaded on
first use, so a batch of images does not reload the model. Every error is a
CodecError with a one-line message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..bitstream import (
    FORMAT_VERSION,
    LOSSY_MODEL_MODES,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_TILE_SIZE,
    MODES,
    READABLE_VERSIONS,
    ContainerError,
    Header,
    ImageMetadata,
    Section,
    crc32,
    pack,
    pack_metadata,
    section_order,
    unpack,
    unpack_metadata,
)
from ..errors import BadValueError, CodecError, count_of
from ..models.io import ModelLoadError
from ..models.selfvae import SelfVAE
from ..models.transforms import tile_boxes, to_grayscale
from .engine import walk
from .entropy import CodingError, DecoderStream, EncoderStream
from .images import (
    check_output,
    classical_lossless,
    encode_image_file,
    load_image,
    output_format,
    read_classical_tile,
    read_input,
    write_output,
)
from .runtime import (
    check_step,
    free_cores,
    release_free_memory,
    resolve_device,
    seeded,
    torch_threads,
    whole_number,
)

DEFAULT_TILE = 512
DEFAULT_QUALITY = 4  # a lossy model's default quality setting (1 = smallest files)
# The latent quantisation step by mode. A fine step keeps what the z's carry (the
# local noise level that sharpens the pixel distributions): on clean photos 2^-2.5
# gives files 9% smaller than step 1, and 0.5% on JPEG-sourced ones (step_sweep
# results). The lossy modes, whose rate is mostly the latents', keep step 1, and so
# does a lossy model in every mode: its step multiplies the quality's learnt steps.
DEFAULT_STEP = {"full": 2**-2.5, "conditional": 2**-2.5, "rs2": 1.0, "rs1": 1.0}
SECTION_ENTRY_BYTES = 12  # a section's line in the table
# (from mode, to mode) -> the section kinds the lower mode keeps. u is coded the
# same way in every mode; y's and z's of full / conditional files are coded with the
# true y's, which rs2 does not have, so full -> rs2 is impossible.
TRUNCATIONS = {
    ("full", "conditional"): {"meta", "u", "y", "z"},
    ("full", "rs1"): {"meta", "u"},
    ("conditional", "rs1"): {"meta", "u"},
    ("rs2", "rs1"): {"meta", "u"},
}
GENERATION_METHODS = ("mean", "mode", "sample")
# progress(done, total): called as coding advances, in sections (several per tile).
Progress = Callable[[int, int], None]


class ModelMismatchError(CodecError):
    """The file was encoded with a different model than the one given."""


@dataclass
class EncodeResult:
    data: bytes
    reconstruction: np.ndarray  # what decoding will return, bit for bit
    estimated_bits: dict[str, float]  # -log2 p of the coded symbols, per section
    seconds: float
    metadata: ImageMetadata  # what the file carries (empty when stripped)
    not_kept: list[str]  # what the source carried that the file does not (text, resolution, ...)


# A `full` file whose tiles all went to PNG / WebP, averaging under this many bytes
# (flat areas, graphics), is tried as one classical file of the whole image (up to
# WHOLE_IMAGE_MAX_PIXELS): every tile's file has its own headers and restarts its
# coder at the tile's edge, which for a constant 65536x1 image made 6,468 bytes of
# what one PNG holds in 272.
WHOLE_IMAGE_TRY_BYTES = 1024
WHOLE_IMAGE_MAX_PIXELS = 1 << 24


def _whole_image_classical(array: np.ndarray, grayscale: bool, sections: list[Section]):
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
        Section("pixels", 0, index, classical_lossless(array[top:bottom, left:right], grayscale))
        for index, (top, bottom, left, right) in enumerate(tile_boxes(height, width, tile_size))
    ]
    if sum(len(s.payload) + SECTION_ENTRY_BYTES for s in whole) >= tiled_bytes:
        return None
    return tile_size, whole


def _sections_by_tile(header: Header) -> dict[int, list[Section]]:
    """Each tile's sections, in file order (the metadata section is no tile's)."""
    by_tile: dict[int, list[Section]] = {}
    for section in header.sections:
        if section.kind != "meta":
            by_tile.setdefault(section.tile, []).append(section)
    return by_tile


def _output_image(reconstruction: np.ndarray, channels: int) -> np.ndarray:
    if channels == 3:
        return reconstruction
    rgb = torch.from_numpy(reconstruction).permute(2, 0, 1)[None]
    return to_grayscale(rgb)[0, 0].numpy().astype(np.uint8)


def _as_bytes(data) -> bytes:
    """.svc bytes from bytes-like data, a path to a file or a binary stream."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, (str, os.PathLike)) or hasattr(data, "read"):
        return read_input(data)
    raise BadValueError(f"expected .svc bytes, a path to an .svc file or a binary stream, got {type(data).__name__}")


def file_metadata(data) -> ImageMetadata:
    """The ICC profile, EXIF and XMP an .svc file carries (bytes or a path)."""
    return unpack_metadata(unpack(_as_bytes(data)).metadata_payload)


class _SectionCounter:
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


class Codec:
    """A loaded model plus coding settings; reuse one for many images."""

    def __init__(
        self,
        model: SelfVAE | str | Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
        tile_size: int = DEFAULT_TILE,
    ):
        from ..models.pretrained import load_named_model

        started = time.perf_counter()
        self.device = resolve_device(device)
        if threads is not None:
            threads = whole_number(threads, 1, 255, "threads")
        tile_size = whole_number(tile_size, 16, MAX_TILE_SIZE, "the tile size")
        if not isinstance(model, SelfVAE):
            model = load_named_model(model, device=str(self.device))
        self.model = model.to(self.device).eval()
        self.threads = threads if threads is not None else min(255, free_cores())
        self.tile_size = tile_size
        self.fingerprint = self.model.fingerprint()
        self.load_seconds = time.perf_counter() - started

    @property
    def portable(self) -> bool:
        """Whether the model's files decode on any machine: an exact model's do; a
        float model's only where torch computes the same floats (same CPU kind,
        vector level and torch build)."""
        return self.model.config.exact

    @property
    def lossy(self) -> bool:
        """Whether the model is a lossy one (coding at quality settings)."""
        return self.model.config.lossy

    def check_quality(self, mode: str, quality: int | None) -> int | None:
        """The quality to code at (None for a lossless model), or a one-line error."""
        lossy_modes = ", ".join(LOSSY_MODEL_MODES[:-1]) + " and " + LOSSY_MODEL_MODES[-1]
        if not self.lossy:
            if quality is None:
                return None
            if mode not in LOSSY_MODEL_MODES:
                raise BadValueError(f"a quality applies to {lossy_modes}, not to {mode} (a lossless model's mode)")
            raise BadValueError("a quality needs a lossy model (this one is lossless; the shipped one is 'lossy')")
        if mode not in LOSSY_MODEL_MODES:
            raise BadValueError(f"a lossy model codes {lossy_modes}, not {mode}")
        count = self.model.config.qualities
        if quality is None:
            return min(DEFAULT_QUALITY, count)
        return whole_number(quality, 1, count, "quality")

    def _sections_per_tile(self, mode: str) -> int:
        return len(section_order(mode, len(self.model.levels)))

    # -- encoding ------------------------------------------------------------------
    def encode(
        self,
        image,
        mode: str = "full",
        step: float | None = None,
        progress: Progress | None = None,
        strip_metadata: bool = False,
        classical_tiles: bool = True,
        quality: int | None = None,
        format_version: int = FORMAT_VERSION,
    ) -> EncodeResult:
        """Encode an image (path, file bytes, PIL image or uint8 array). Its ICC
        profile, EXIF and XMP go into the file unless `strip_metadata`. In `full`
        mode a tile is stored as a PNG or lossless WebP file instead where that is
        smaller than the model's coding (unless `classical_tiles` is False): screenshots,
        graphics and few-colour images never cost more than a classical coder.

        A lossy model codes rs2, rs1 and conditional at a `quality` from 1 (smallest
        files) to its number of settings (default DEFAULT_QUALITY); `step` then scales
        its steps.
        `format_version` 2 or 3 writes a file that older selfvae-codec releases read
        too (version 2: an exact model's probability tables then take 5-6x the time;
        versions before 4 rebuild a conditional image without holding its block means)."""
        if mode not in MODES:
            raise BadValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        quality = self.check_quality(mode, quality)
        step = check_step(step if step is not None else 1.0 if self.lossy else DEFAULT_STEP[mode])
        if format_version not in READABLE_VERSIONS:
            raise BadValueError(f"format_version must be one of {', '.join(map(str, READABLE_VERSIONS))}")
        started = time.perf_counter()
        loaded = load_image(image)
        array = loaded.pixels
        metadata = ImageMetadata() if strip_metadata else loaded.metadata
        height, width = array.shape[:2]
        x = torch.from_numpy(array).permute(2, 0, 1)[None]  # uint8: tiles are widened one at a time
        reconstruction = np.empty_like(array)
        sections = [Section("meta", 0, 0, pack_metadata(metadata))] if metadata else []
        estimated: dict[str, float] = {}
        tiles = tile_boxes(height, width, self.tile_size)
        counter = _SectionCounter(progress, len(tiles) * self._sections_per_tile(mode))
        with torch_threads(self.threads), torch.no_grad():
            for index, (top, bottom, left, right) in enumerate(tiles):
                tile = x[..., top:bottom, left:right].to(self.device, torch.int64)
                try:
                    result, tile_sections, tile_bits = self._encode_tile(
                        tile, index, mode, step, quality, format_version, counter
                    )
                except CodingError as error:
                    if not (mode == "full" and classical_tiles):
                        raise CodecError(f"tile {index + 1} of {len(tiles)}: {error}") from None
                    # A full tile the coder cannot code is stored as a classical file.
                    result, tile_sections, tile_bits = tile, [], {}
                    counter.finish_tile(index, len(tiles))
                if mode == "full" and classical_tiles:
                    classical = classical_lossless(array[top:bottom, left:right], grayscale=loaded.channels == 1)
                    model_bytes = sum(len(s.payload) + SECTION_ENTRY_BYTES for s in tile_sections)
                    if not tile_sections or len(classical) < model_bytes:
                        tile_sections = [Section("pixels", 0, index, classical)]
                        tile_bits = {"pixels": 8.0 * len(classical)}
                sections += tile_sections
                for label, bits in tile_bits.items():
                    estimated[label] = estimated.get(label, 0.0) + bits
                reconstruction[top:bottom, left:right] = result[0].permute(1, 2, 0).cpu().numpy()
                del result
                release_free_memory()
        if mode == "full" and not np.array_equal(reconstruction, array):
            raise CodecError("internal error: the lossless walk did not reproduce the image")
        tile_size = self.tile_size
        whole = _whole_image_classical(array, loaded.channels == 1, sections)
        if whole is not None:
            tile_size, classical = whole
            sections = [s for s in sections if s.kind == "meta"] + classical
            estimated = {"pixels": 8.0 * sum(len(s.payload) for s in classical)}
        output = _output_image(reconstruction, loaded.channels)
        header = Header(
            mode=mode,
            width=width,
            height=height,
            channels=loaded.channels,
            model_fingerprint=bytes.fromhex(self.fingerprint),
            latent_step=step,
            tile_size=tile_size,
            image_crc=crc32(output.tobytes()),
            threads=0 if self.model.config.exact else self.threads,
            quality=quality or 0,
            version=format_version,
            sections=sections,
        )
        seconds = time.perf_counter() - started
        return EncodeResult(pack(header), output, estimated, seconds, metadata, loaded.not_kept)

    def _encode_tile(self, tile: torch.Tensor, index: int, mode: str, step: float, quality, version: int, counter):
        """One tile (int64 [1, 3, h, w]) coded with the model: its reconstruction, its
        sections and the estimated bits of each (a CodingError if it cannot be)."""
        stream = EncoderStream(tile=index, on_section=counter, version=version)
        result = walk(
            self.model,
            stream,
            mode,
            tile.shape[-2:],
            step,
            # A lossy model's encoder infers the z's inside the walk (closed loop).
            truth=self.model.infer(tile, with_z=MODES[mode].sends_z and not self.lossy),
            quality=quality - 1 if quality else None,
        )
        return result, stream.finish(), stream.estimated_bits

    def compress(
        self,
        image,
        mode: str = "full",
        step: float | None = None,
        strip_metadata: bool = False,
        classical_tiles: bool = True,
        quality: int | None = None,
        format_version: int = FORMAT_VERSION,
    ) -> bytes:
        """The .svc bytes of `encode`."""
        return self.encode(
            image,
            mode,
            step,
            strip_metadata=strip_metadata,
            classical_tiles=classical_tiles,
            quality=quality,
            format_version=format_version,
        ).data

    # -- decoding ------------------------------------------------------------------
    def decompress(self, data, progress: Progress | None = None, verify: bool = True) -> np.ndarray:
        """Decode .svc bytes (or the file at a path): uint8 [H, W, 3] or [H, W]."""
        return self._decode(unpack(_as_bytes(data)), progress, verify)

    def _decode(self, header: Header, progress: Progress | None = None, verify: bool = True) -> np.ndarray:
        """The image of a parsed file; with `verify`, checked against its image CRC."""
        self._check_file_fits_the_model(header)
        unpack_metadata(header.metadata_payload)  # a damaged metadata section fails here, as in the CLI
        tiles = tile_boxes(header.height, header.width, header.tile_size)
        by_tile = _sections_by_tile(header)
        counter = _SectionCounter(progress, len(tiles) * self._sections_per_tile(header.mode))
        reconstruction = np.empty((header.height, header.width, 3), dtype=np.uint8)
        # An exact model gives the same numbers at any thread count (its files say 0);
        # a float model's files decode only at the encoder's.
        threads = header.threads or self.threads
        quality = header.quality - 1 if header.quality else None
        with torch_threads(threads), torch.no_grad():
            for index, (top, bottom, left, right) in enumerate(tiles):
                if [s.kind for s in by_tile.get(index, [])] == ["pixels"]:
                    reconstruction[top:bottom, left:right] = read_classical_tile(
                        by_tile[index][0].payload, bottom - top, right - left
                    )
                    counter.finish_tile(index, len(tiles))
                    continue
                stream = DecoderStream(
                    by_tile.get(index, []),
                    on_section=counter,
                    version=header.version,
                )
                try:
                    size = (bottom - top, right - left)
                    result = walk(self.model, stream, header.mode, size, header.latent_step, quality=quality)
                    stream.finish()
                except CodingError as error:
                    raise self._decoding_error(f"cannot decode tile {index + 1} of {len(tiles)}: {error}") from error
                except BaseException as error:  # constriction panics are not Exceptions
                    if isinstance(error, (KeyboardInterrupt, SystemExit, MemoryError)):
                        raise
                    problem = (
                        f"cannot decode tile {index + 1} of {len(tiles)}: "
                        f"the entropy coder failed ({type(error).__name__})"
                    )
                    raise self._decoding_error(problem) from error
                reconstruction[top:bottom, left:right] = result[0].permute(1, 2, 0).cpu().numpy()
                del result, stream
                release_free_memory()
        output = _output_image(reconstruction, header.channels)
        if verify and crc32(output.tobytes()) != header.image_crc:
            raise self._decoding_error("the decoded image does not match the encoder's checksum")
        return output

    def _check_file_fits_the_model(self, header: Header) -> None:
        """Refuse, before any model work, header fields the file's model cannot have
        written: a damaged field must not make the decoder run long (a thread count
        an exact model's file never records would run 255 threads) or far, and a file
        of another model is refused."""
        if header.model_fingerprint.hex() != self.fingerprint:
            raise ModelMismatchError(
                f"the file was encoded with model {header.model_fingerprint.hex()[:12]}, "
                f"not with the loaded model {self.fingerprint[:12]}"
            )
        if self.portable and header.threads:
            raise CodecError(
                f"the file records {count_of(header.threads, 'encoder thread')}, "
                "but an exact model's files record none (corrupt header)"
            )
        if not self.portable and not header.threads:
            raise CodecError("the file records no encoder thread count; a float model's files do (corrupt header)")
        if bool(header.quality) != self.lossy or header.quality > self.model.config.qualities:
            raise CodecError(f"the file's quality setting ({header.quality}) does not fit the model")

    def _decoding_error(self, problem: str) -> CodecError:
        """A failed decode, with its likely cause: for an exact model's file corrupt
        data; for a float model's file also a machine that computes other floats than
        the encoder's did, which the file cannot tell apart from corruption."""
        if self.portable:
            return CodecError(f"{problem} (corrupt data)")
        here = f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"
        return CodecError(
            f"{problem}: the file was made by a float model, whose files decode only on the CPU kind "
            f"and torch build that wrote them (this machine: {here}), or it is corrupt; "
            "encode with an exact model (the shipped ones, or `selfvae-codec convert`) for files that decode anywhere"
        )

    # -- the model as a generator ------------------------------------------------------
    def upscale(
        self,
        image,
        factor: int,
        method: str = "mean",
        seed: int = 0,
        size: tuple[int, int] | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """An image `factor` (2, 4, 8, ...) times larger: the input is taken as the
        model's own downscale of it, and the levels above it are generated ('mean',
        'mode' or 'sample', the last seeded by `seed`), tile by tile like the codec.
        `size` (width, height) crops the result to an original size that downscales
        to the input. Grayscale in, grayscale out."""
        if method not in GENERATION_METHODS:
            raise BadValueError(f"unknown method {method!r}; choose from {', '.join(GENERATION_METHODS)}")
        largest = self.model.max_upscale()
        if factor < 2 or factor & (factor - 1):
            raise BadValueError(f"the factor must be a power of two (2, 4, 8, ...), got {factor}")
        if factor > largest:
            raise BadValueError(f"this model upscales at most {largest}x (one doubling per level), not {factor}x")
        loaded = load_image(image)
        height, width = loaded.pixels.shape[:2]
        out_width, out_height = size if size is not None else (width * factor, height * factor)
        if -(-out_height // factor) != height or -(-out_width // factor) != width:
            raise BadValueError(
                f"a {out_width}x{out_height} image downscales {factor}x to "
                f"{-(-out_width // factor)}x{-(-out_height // factor)}, not to the input's {width}x{height}"
            )
        if max(out_width, out_height) > MAX_SIDE or out_width * out_height > MAX_PIXELS:
            raise BadValueError(f"a {out_width}x{out_height} output is too large")
        small = torch.from_numpy(loaded.pixels).permute(2, 0, 1)[None].to(self.device, torch.int64)
        output = np.empty((out_height, out_width, 3), dtype=np.uint8)
        tile = max(factor, self.tile_size - self.tile_size % factor)  # tiles of the input must align
        tiles = tile_boxes(out_height, out_width, tile)
        with seeded(seed), torch_threads(self.threads), torch.no_grad():
            for index, (top, bottom, left, right) in enumerate(tiles):
                part = small[..., top // factor : -(-bottom // factor), left // factor : -(-right // factor)]
                result = self.model.upscale(part, factor, (bottom - top, right - left), method)
                output[top:bottom, left:right] = result[0].permute(1, 2, 0).cpu().numpy()
                if progress:
                    progress(index + 1, len(tiles))
        return _output_image(output, loaded.channels)

    def sample(
        self, count: int = 1, size: tuple[int, int] = (256, 256), method: str = "sample", seed: int = 0
    ) -> np.ndarray:
        """`count` unconditional samples of `size` (width, height): uint8 [count, H, W, 3]."""
        if method not in GENERATION_METHODS:
            raise BadValueError(f"unknown method {method!r}; choose from {', '.join(GENERATION_METHODS)}")
        if not 1 <= count <= 256:
            raise BadValueError(f"count must be from 1 to 256, got {count}")
        width, height = size
        if not (1 <= width <= 2048 and 1 <= height <= 2048):
            raise BadValueError(f"sample sizes go from 1x1 to 2048x2048, got {width}x{height}")
        with seeded(seed), torch_threads(self.threads), torch.no_grad():
            samples = self.model.sample(count, (height, width), method)
        return samples.permute(0, 2, 3, 1).cpu().numpy()

    # -- cutting files down ------------------------------------------------------------
    def truncate(self, data, mode: str) -> bytes:
        """Cut a file down to a lower mode without re-encoding: keep the sections the
        lower mode uses (they are a prefix of each tile's sections) and record the
        checksum of the image it decodes to. A tile a `full` file stores as a PNG or
        WebP holds its exact pixels, and is coded with the model in the lower mode.
        The result is byte-identical to encoding the image in that mode directly with
        the same model, quality and latent step (the file's: a `full` file cut to rs1
        keeps full's fine step, where `encode --mode rs1` uses step 1)."""
        data = _as_bytes(data)
        header = unpack(data)
        if mode == header.mode:
            return data
        kept_kinds = TRUNCATIONS.get((header.mode, mode))
        if kept_kinds is None:
            possible = sorted(target for source, target in TRUNCATIONS if source == header.mode)
            raise BadValueError(
                f"a {header.mode} file cannot be cut down to {mode} (possible: {', '.join(possible) or 'none'})"
            )
        self._check_file_fits_the_model(header)
        sections = [s for s in header.sections if s.kind == "meta"]
        if header.tile_size > self.tile_size and all(s.kind in ("meta", "pixels") for s in header.sections):
            # The image as one classical file: coded in this codec's tiles, as a direct encode would.
            image = self._decode(header)
            direct = unpack(
                self.compress(image, mode, header.latent_step, strip_metadata=True, format_version=header.version)
            )
            direct.sections = sections + direct.sections
            return pack(direct)
        tiles = tile_boxes(header.height, header.width, header.tile_size)
        by_tile = _sections_by_tile(header)
        with torch_threads(self.threads), torch.no_grad():
            for index, (top, bottom, left, right) in enumerate(tiles):
                own = by_tile.get(index, [])
                if [s.kind for s in own] != ["pixels"]:
                    sections += [s for s in own if s.kind in kept_kinds]
                    continue
                # A classical tile is only in a `full` file, a lossless model's: no quality.
                pixels = read_classical_tile(own[0].payload, bottom - top, right - left)
                tile = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].to(self.device, torch.int64)
                try:
                    _, coded, _ = self._encode_tile(tile, index, mode, header.latent_step, None, header.version, None)
                except CodingError as error:
                    raise CodecError(f"tile {index + 1} of {len(tiles)}: {error}") from None
                sections += coded
        header.sections = sections
        header.mode = mode
        image = self._decode(header, verify=False)
        header.image_crc = crc32(image.tobytes())
        return pack(header)

    # -- files -----------------------------------------------------------------------
    def compress_file(
        self,
        source: str | Path | BinaryIO,
        destination: str | Path | BinaryIO,
        mode: str = "full",
        step: float | None = None,
        overwrite: bool = False,
        strip_metadata: bool = False,
        progress: Progress | None = None,
        quality: int | None = None,
    ) -> EncodeResult:
        """Encode an image file (or binary stream) into an .svc file (or stream);
        a path destination is checked before any work and written atomically."""
        if not hasattr(destination, "write"):
            check_output(destination, overwrite, source if not hasattr(source, "read") else None)
        image = source if not hasattr(source, "read") else source.read()
        result = self.encode(image, mode, step, progress=progress, strip_metadata=strip_metadata, quality=quality)
        write_output(destination, result.data)
        return result

    def decompress_file(
        self,
        source: str | Path | BinaryIO,
        destination: str | Path | BinaryIO,
        overwrite: bool = False,
        image_format: str | None = None,
        progress: Progress | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """Decode an .svc file (or stream) into a lossless image file with the metadata
        the .svc carries. The format follows the destination's extension (PNG for a
        stream unless `image_format` says otherwise). Returns the image and the names
        of metadata pieces the output format could not hold."""
        data = read_input(source)
        header = unpack(data)
        if hasattr(destination, "write"):
            image_format = image_format or "PNG"
        else:
            image_format = image_format or output_format(destination, header.channels)
            check_output(destination, overwrite, source if not hasattr(source, "read") else None)
        image = self._decode(header, progress=progress)
        encoded, dropped = encode_image_file(image, image_format, unpack_metadata(header.metadata_payload))
        write_output(destination, encoded)
        return image, dropped


_SHIPPED_CODECS: dict[str, Codec] = {}


def shipped_codec(name: str = "default") -> Codec:
    """A Codec of a shipped model, loaded once."""
    if name not in _SHIPPED_CODECS:
        _SHIPPED_CODECS[name] = Codec(name)
    return _SHIPPED_CODECS[name]


def compress(image, mode: str = "full", step: float | None = None, quality: int | None = None) -> bytes:
    """Compress an image (path, file bytes, PIL image or uint8 array) with the shipped
    model for the mode (the lossy one for rs2, rs1 and conditional, when shipped)."""
    from ..models.pretrained import default_model_for

    return shipped_codec(default_model_for(mode)).compress(image, mode, step, quality=quality)


def decompress(data) -> np.ndarray:
    """Decompress .svc bytes (or the file at a path) with the shipped model the file
    names: uint8 [H, W, 3] or [H, W]."""
    from ..models.pretrained import model_for_file

    data = _as_bytes(data)
    return shipped_codec(model_for_file(unpack(data).model_fingerprint.hex())).decompress(data)


__all__ = [
    "Codec",
    "CodecError",
    "ContainerError",
    "EncodeResult",
    "ModelLoadError",
    "ModelMismatchError",
    "compress",
    "decompress",
    "file_metadata",
]
