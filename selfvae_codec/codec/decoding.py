"""Decoding a parsed .svc file with a Codec: the checks that the file fits the model,
the tiles, and errors that name their likely cause."""

from __future__ import annotations

import numpy as np
import torch

from ..bitstream import Header, crc32, unpack_metadata
from ..errors import CodecError, count_of
from ..models.heads import adapted_heads
from .engine import code_adaptation, walk
from .entropy import CodingError, DecoderStream
from .images import read_classical_tile
from .runtime import release_free_memory, torch_threads
from .tiles import Progress, SectionCounter, is_classical_tile, output_image, sections_by_tile, tile_boxes


class ModelMismatchError(CodecError):
    """The file was encoded with a different model than the one given."""


def decode(codec, header: Header, progress: Progress | None = None, verify: bool = True) -> np.ndarray:
    """The image of a parsed file, decoded with `codec` (a Codec); with `verify`,
    checked against its image CRC."""
    check_file_fits_the_model(codec, header)
    unpack_metadata(header.metadata_payload)  # a damaged metadata section fails here, as in the CLI
    tiles = tile_boxes(header.height, header.width, header.tile_size)
    by_tile = sections_by_tile(header)
    adapted = any(s.kind == "adapt" for s in header.sections)
    counter = SectionCounter(progress, len(tiles) * codec.sections_per_tile(header.mode, adapted))
    reconstruction = np.empty((header.height, header.width, 3), dtype=np.uint8)
    # An exact model gives the same numbers at any thread count (its files say 0);
    # a float model's files decode only at the encoder's.
    threads = header.threads or codec.threads
    quality = header.quality - 1 if header.quality else None
    with torch_threads(threads), torch.no_grad():
        for index, (top, bottom, left, right) in enumerate(tiles):
            if is_classical_tile(by_tile.get(index, [])):
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
                adaptation = code_adaptation(stream, codec.model) if by_tile[index][0].kind == "adapt" else None
                with adapted_heads(codec.model, adaptation):
                    result = walk(
                        codec.model,
                        stream,
                        header.mode,
                        size,
                        header.latent_step,
                        quality=quality,
                        max_error=header.max_error,
                    )
                stream.finish()
            except CodingError as error:
                raise decoding_error(codec, f"cannot decode tile {index + 1} of {len(tiles)}: {error}") from error
            except BaseException as error:  # constriction panics are not Exceptions
                if isinstance(error, (KeyboardInterrupt, SystemExit, MemoryError)):
                    raise
                problem = (
                    f"cannot decode tile {index + 1} of {len(tiles)}: the entropy coder failed ({type(error).__name__})"
                )
                raise decoding_error(codec, problem) from error
            reconstruction[top:bottom, left:right] = result[0].permute(1, 2, 0).cpu().numpy()
            del result, stream
            release_free_memory()
    output = output_image(reconstruction, header.channels)
    if verify and crc32(output.tobytes()) != header.image_crc:
        raise decoding_error(codec, "the decoded image does not match the encoder's checksum")
    return output


def check_file_fits_the_model(codec, header: Header) -> None:
    """Refuse, before any model work, header fields the file's model cannot have
    written: a damaged field must not make the decoder run long (a thread count
    an exact model's file never records would run 255 threads) or far, and a file
    of another model is refused."""
    if header.model_fingerprint.hex() != codec.fingerprint:
        raise ModelMismatchError(
            f"the file was encoded with model {header.model_fingerprint.hex()[:12]}, "
            f"not with the loaded model {codec.fingerprint[:12]}"
        )
    if codec.portable and header.threads:
        raise CodecError(
            f"the file records {count_of(header.threads, 'encoder thread')}, "
            "but an exact model's files record none (corrupt header)"
        )
    if not codec.portable and not header.threads:
        raise CodecError("the file records no encoder thread count; a float model's files do (corrupt header)")
    if bool(header.quality) != codec.lossy or header.quality > codec.model.config.qualities:
        raise CodecError(f"the file's quality setting ({header.quality}) does not fit the model")
    if header.max_error and (codec.lossy or not codec.portable):
        raise CodecError(f"the file's maximum error ({header.max_error}) needs an exact lossless model")


def decoding_error(codec, problem: str) -> CodecError:
    """A failed decode, with its likely cause: for an exact model's file corrupt
    data; for a float model's file also a machine that computes other floats than
    the encoder's did, which the file cannot tell apart from corruption."""
    if codec.portable:
        return CodecError(f"{problem} (corrupt data)")
    here = f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"
    return CodecError(
        f"{problem}: the file was made by a float model, whose files decode only on the CPU kind "
        f"and torch build that wrote them (this machine: {here}), or it is corrupt; "
        "encode with an exact model (the shipped ones, or `selfvae-codec convert`) for files that decode anywhere"
    )
