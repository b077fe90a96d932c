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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..bitstream import (
    ADAPTATION_FROM,
    FORMAT_VERSION,
    LOSSY_MODEL_MODES,
    MAX_ERROR,
    MAX_TILE_SIZE,
    MODES,
    NEAR_LOSSLESS_FROM,
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
from ..errors import BadValueError, CodecError
from ..models.io import ModelLoadError
from ..models.selfvae import SelfVAE
from ..models.transforms import within_error
from . import decoding, generation, truncation
from .adaptation import ADAPTATION_EFFORT
from .decoding import ModelMismatchError
from .entropy import CodingError
from .images import (
    DEFAULT_EFFORT,
    MAX_EFFORT,
    check_output,
    decode_to_image_file,
    load_image,
    svc_bytes,
    write_output,
)
from .latent_optimisation import optimisation_iterations
from .rate_control import encode_to_rate
from .runtime import check_step, free_cores, release_free_memory, resolve_device, torch_threads, whole_number
from .tile_encoding import ModelBitsEstimate, TileSettings, encode_model_or_classical
from .tiles import (
    Progress,
    SectionCounter,
    decode_classical,
    output_image,
    stored_classically,
    tile_boxes,
    whole_image_classical,
)

DEFAULT_TILE = 512
DEFAULT_QUALITY = 4  # a lossy model's default quality setting (1 = smallest files)
# rs2's qualities above a lossy model's own hand over to near-lossless `full` files of
# the shipped lossless model, at these maximum errors (about 37, 40 and 45 dB): rs2's
# decoder tops out near 34 dB, and finer steps or optimised latents add under 0.6 dB.
HIGH_QUALITY_MAX_ERRORS = (6, 4, 2)
# The latent quantisation step by mode. A fine step keeps what the z's carry (the
# local noise level that sharpens the pixel distributions): on clean photos 2^-2.5
# gives files 9% smaller than step 1, and 0.5% on JPEG-sourced ones (step_sweep
# results). The lossy modes, whose rate is mostly the latents', keep step 1, and so
# does a lossy model in every mode: its step multiplies the quality's learnt steps.
DEFAULT_STEP = {"full": 2**-2.5, "conditional": 2**-2.5, "rs2": 1.0, "rs1": 1.0}


@dataclass
class EncodeResult:
    data: bytes
    reconstruction: np.ndarray  # what decoding will return, bit for bit
    estimated_bits: dict[str, float]  # -log2 p of the coded symbols, per section
    seconds: float
    metadata: ImageMetadata  # what the file carries (empty when stripped)
    not_kept: list[str]  # what the source carried that the file does not (text, resolution, ...)


def file_metadata(data) -> ImageMetadata:
    """The ICC profile, EXIF and XMP an .svc file carries (bytes or a path)."""
    return unpack_metadata(unpack(svc_bytes(data)).metadata_payload)


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
        self.estimate_model_bits = ModelBitsEstimate(self.model)
        self.near_lossless: Codec | None = None  # the lossless model, for rs2's qualities above the model's
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

    def check_quality(self, mode: str, quality: int | None, step: float | None = None) -> int | None:
        """The quality to code at (None for a lossless model), or a one-line error (a
        `step` scales only the model's own qualities)."""
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
        quality = whole_number(quality, 1, count + (len(HIGH_QUALITY_MAX_ERRORS) if mode == "rs2" else 0), "quality")
        if quality > count and step is not None:
            raise BadValueError(f"a step scales qualities 1 to {count}, not {quality} (a near-lossless file)")
        return quality

    def check_max_error(self, mode: str, max_error: int, format_version: int = FORMAT_VERSION) -> int:
        """The maximum error to code at (0: lossless), or a one-line error."""
        max_error = whole_number(max_error, 0, MAX_ERROR, "the maximum error")
        if max_error and mode != "full":
            raise BadValueError(f"a maximum error applies to full files, not to {mode}")
        if max_error and (self.lossy or not self.portable):
            raise BadValueError("a maximum error needs an exact lossless model (the shipped one is 'default')")
        if max_error and format_version < NEAR_LOSSLESS_FROM:
            raise BadValueError(f"a maximum error needs format version {NEAR_LOSSLESS_FROM} or later")
        return max_error

    def sections_per_tile(self, mode: str, adapted: bool = False) -> int:
        """How many sections the model codes per tile in `mode` (an `adapt` one too
        where `adapted`)."""
        return len(section_order(mode, len(self.model.levels))) + adapted

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
        effort: int = DEFAULT_EFFORT,
        max_error: int = 0,
    ) -> EncodeResult:
        """Encode an image (path, file bytes, PIL image or uint8 array). Its ICC
        profile, EXIF and XMP go into the file unless `strip_metadata`. In `full`
        mode a tile is stored as a PNG or lossless WebP file instead where that is
        smaller than the model's coding (unless `classical_tiles` is False): screenshots,
        graphics and few-colour images never cost more than a classical coder.

        A lossy model codes rs2, rs1 and conditional at a `quality` from 1 (smallest
        files) to its number of settings (default DEFAULT_QUALITY; `step` scales its
        steps); rs2's next three are near-lossless `full` files (HIGH_QUALITY_MAX_ERRORS).
        `effort` (1 to 9, default 2) is how hard the encoder tries: the lossless WebP
        methods tried for classical tiles; from 3 on, `full` files (format 5 on) adapt
        the pixel heads to each tile (adaptation.py) and rs2 / rs1 files optimise their
        latents, longer at each level (latent_optimisation.py): several times slower.
        `max_error` N (1 to MAX_ERROR; `full` only) makes the file near-lossless:
        every decoded subpixel within N of the image's (engine.py).
        `format_version` 2 or 3 writes a file that older selfvae-codec releases read
        too (version 2: an exact model's probability tables then take 5-6x the time;
        versions before 4 rebuild a conditional image without holding its block means)."""
        if mode not in MODES:
            raise BadValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        quality = self.check_quality(mode, quality, step)
        max_error = self.check_max_error(mode, max_error, format_version)
        if quality is not None and quality > self.model.config.qualities:  # rs2 above its top: near-lossless
            if self.near_lossless is None:
                self.near_lossless = Codec("default", str(self.device), self.threads, self.tile_size)
            options = dict(strip_metadata=strip_metadata, classical_tiles=classical_tiles, effort=effort)
            options["max_error"] = HIGH_QUALITY_MAX_ERRORS[quality - self.model.config.qualities - 1]
            return self.near_lossless.encode(image, "full", None, progress, format_version=format_version, **options)
        step = check_step(step if step is not None else 1.0 if self.lossy else DEFAULT_STEP[mode])
        effort = whole_number(effort, 1, MAX_EFFORT, "effort")
        if format_version not in READABLE_VERSIONS:
            raise BadValueError(f"format_version must be one of {', '.join(map(str, READABLE_VERSIONS))}")
        started = time.perf_counter()
        loaded = load_image(image)
        array = loaded.pixels
        if max_error:  # what the decoder rebuilds, and what every tile codes
            array = within_error(torch.from_numpy(array).to(torch.int64), max_error).to(torch.uint8).numpy()
        metadata = ImageMetadata() if strip_metadata else loaded.metadata
        height, width = array.shape[:2]
        x = torch.from_numpy(array).permute(2, 0, 1)[None]  # uint8: tiles are widened one at a time
        reconstruction = np.empty_like(array)
        sections = [Section("meta", 0, 0, pack_metadata(metadata))] if metadata else []
        estimated: dict[str, float] = {}
        tiles = tile_boxes(height, width, self.tile_size)
        adapts = mode == "full" and effort >= ADAPTATION_EFFORT and format_version >= ADAPTATION_FROM
        units = self.sections_per_tile(mode, adapts) + optimisation_iterations(self.model, mode, effort)
        counter = SectionCounter(progress, len(tiles) * units)  # sections coded, iterations optimised
        settings = TileSettings(
            mode, step, quality, format_version, effort, max_error, loaded.channels, classical_tiles, adapts
        )
        with torch_threads(self.threads), torch.no_grad():
            for index, (top, bottom, left, right) in enumerate(tiles):
                tile = x[..., top:bottom, left:right].to(self.device, torch.int64)
                pixels = array[top:bottom, left:right]
                try:
                    result, tile_sections, tile_bits = encode_model_or_classical(
                        self.model, self.estimate_model_bits, tile, pixels, index, settings, counter
                    )
                except CodingError as error:
                    raise CodecError(f"tile {index + 1} of {len(tiles)}: {error}") from None
                counter.finish_tile(index, len(tiles))
                sections += tile_sections
                for label, bits in tile_bits.items():
                    estimated[label] = estimated.get(label, 0.0) + bits
                reconstruction[top:bottom, left:right] = result[0].permute(1, 2, 0).cpu().numpy()
                del result
                release_free_memory()
        if mode == "full" and not np.array_equal(reconstruction, array):
            raise CodecError("internal error: the lossless walk did not reproduce the image")
        tile_size = self.tile_size
        whole = whole_image_classical(array, loaded.channels == 1, sections, effort)
        if whole is not None:
            tile_size, classical = whole
            sections = [s for s in sections if s.kind == "meta"] + classical
            estimated = {"pixels": 8.0 * sum(len(s.payload) for s in classical)}
        output = output_image(reconstruction, loaded.channels)
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
            max_error=max_error,
            version=format_version,
            sections=sections,
        )
        seconds = time.perf_counter() - started
        return EncodeResult(pack(header), output, estimated, seconds, metadata, loaded.not_kept)

    def compress(self, image, mode: str = "full", step: float | None = None, **options) -> bytes:
        """The .svc bytes of `encode` (`options`: its keyword arguments)."""
        return self.encode(image, mode, step, **options).data

    def encode_to_rate(self, image, target_bpp: float, mode: str = "rs2", **options) -> EncodeResult:
        """The best file of a lossy model in `mode` at or under `target_bpp` bits per pixel
        (rate_control.py: qualities, then step scales searched, at an optimising effort
        by the plain encoder); `options` as `encode` takes them, but quality and step."""
        if not self.lossy:
            raise BadValueError("a target rate needs a lossy model (the shipped one is 'lossy')")
        self.check_quality(mode, 1)
        if isinstance(target_bpp, bool) or not isinstance(target_bpp, (int, float)) or not 0 < target_bpp < 100:
            raise BadValueError(
                f"the target rate must be a number of bits per pixel above 0 and below 100, got {target_bpp!r}"
            )
        image = image.read() if hasattr(image, "read") else image  # a stream is read once
        pixels = int(np.prod(load_image(image).pixels.shape[:2]))

        effort = whole_number(options.pop("effort", DEFAULT_EFFORT), 1, MAX_EFFORT, "effort")

        def encode_at(quality: int, step_scale: float, effort: int) -> EncodeResult:
            return self.encode(image, mode, step_scale, quality=quality, effort=effort, **options)

        started = time.perf_counter()
        result = encode_to_rate(encode_at, self.model.config.qualities, pixels, float(target_bpp), mode, effort)
        result.seconds = time.perf_counter() - started  # the whole search
        return result

    # -- decoding ------------------------------------------------------------------
    def decompress(self, data, progress: Progress | None = None, verify: bool = True) -> np.ndarray:
        """Decode .svc bytes (or the file at a path): uint8 [H, W, 3] or [H, W]."""
        return decoding.decode(self, unpack(svc_bytes(data)), progress, verify)

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
        return generation.upscale(self, image, factor, method, seed, size, progress)

    def sample(
        self, count: int = 1, size: tuple[int, int] = (256, 256), method: str = "sample", seed: int = 0
    ) -> np.ndarray:
        """`count` unconditional samples of `size` (width, height): uint8 [count, H, W, 3]."""
        return generation.sample(self, count, size, method, seed)

    # -- cutting files down ------------------------------------------------------------
    def truncate(self, data, mode: str) -> bytes:
        """Cut a file down to a lower mode without re-encoding: keep the sections the
        lower mode uses (they are a prefix of each tile's sections) and record the
        checksum of the image it decodes to. A tile a `full` file stores as a PNG or
        WebP holds its exact pixels, and is coded with the model in the lower mode.
        The result is byte-identical to encoding the image in that mode directly with
        the same model, quality and latent step (the file's: a `full` file cut to rs1
        keeps full's fine step, where `encode --mode rs1` uses step 1), except that an
        adapted `full` file (effort 3) cut to conditional keeps its adaptation."""
        return truncation.truncate(self, svc_bytes(data), mode)

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
        effort: int = DEFAULT_EFFORT,
        target_bpp: float | None = None,
        max_error: int = 0,
    ) -> EncodeResult:
        """Encode an image file (or binary stream) into an .svc file (or stream), at
        `target_bpp` by `encode_to_rate` where given; a path destination is checked
        before any work and written atomically."""
        if not hasattr(destination, "write"):
            check_output(destination, overwrite, source if not hasattr(source, "read") else None)
        image = source if not hasattr(source, "read") else source.read()
        options = dict(progress=progress, strip_metadata=strip_metadata, effort=effort, max_error=max_error)
        if target_bpp is not None:
            result = self.encode_to_rate(image, target_bpp, mode, **options)
        else:
            result = self.encode(image, mode, step, quality=quality, **options)
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
        return decode_to_image_file(
            source,
            destination,
            lambda header: decoding.decode(self, header, progress=progress),
            overwrite,
            image_format,
        )


_SHIPPED_CODECS: dict[str, Codec] = {}


def shipped_codec(name: str = "default") -> Codec:
    """A Codec of a shipped model, loaded once."""
    if name not in _SHIPPED_CODECS:
        _SHIPPED_CODECS[name] = Codec(name)
    return _SHIPPED_CODECS[name]


def compress(
    image, mode: str = "full", step: float | None = None, quality: int | None = None, max_error: int = 0
) -> bytes:
    """Compress an image (path, file bytes, PIL image or uint8 array) with the shipped
    model for the mode (the lossy one for rs2, rs1 and conditional, when shipped);
    `max_error` N makes a `full` file near-lossless (every subpixel within N)."""
    from ..models.pretrained import default_model_for

    return shipped_codec(default_model_for(mode)).compress(image, mode, step, quality=quality, max_error=max_error)


def decompress(data) -> np.ndarray:
    """Decompress .svc bytes (or the file at a path) with the shipped model the file
    names: uint8 [H, W, 3] or [H, W]. A file whose tiles are all PNG / WebP needs no
    model, so it decodes even where its model is not shipped."""
    from ..models.pretrained import model_for_file

    data = svc_bytes(data)
    header = unpack(data)
    if stored_classically(header):
        return decode_classical(header)
    return shipped_codec(model_for_file(header.model_fingerprint.hex())).decompress(data)


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
