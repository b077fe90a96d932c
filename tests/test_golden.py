"""Golden files: .svc files written by earlier versions must keep decoding to the same
pixels, so that no change orphans existing archives. Each file in tests/golden is
listed in manifest.json with the SHA-256 of the pixels it decodes to and what made it
("made_by"): an exact model, whose files decode to the same pixels on every machine
(the compatibility contract), or a float model, whose files decode only where torch
computes the floats that the encoder's machine did (its torch build, CPU vector level
and thread count are recorded). Elsewhere a float file must fail with a clean
CodecError that says so, never decode to other pixels."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from selfvae_codec.bitstream import FORMAT_VERSION, READABLE_VERSIONS, unpack
from selfvae_codec.bitstream.container import CODED_KINDS
from selfvae_codec.cli.main import cli
from selfvae_codec.codec.api import Codec, decompress
from selfvae_codec.codec.engine import code_adaptation, encode_tile, walk
from selfvae_codec.codec.entropy import DecoderStream
from selfvae_codec.codec.tiles import sections_by_tile, stored_classically, tile_boxes
from selfvae_codec.errors import CodecError
from selfvae_codec.models.io import ModelLoadError
from selfvae_codec.models.pretrained import find_by_fingerprint, registry, retired_models
from selfvae_codec.models.priors import checkerboard

GOLDEN = Path(__file__).parent / "golden"
DATA = Path(__file__).parent / "data"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())


RETIRED = retired_models()
SHIPPED_MADE = sorted(name for name, entry in MANIFEST.items() if entry["made_by"]["model"] not in RETIRED)


def codec_for(header) -> Codec:
    name = find_by_fingerprint(header.model_fingerprint.hex())
    assert name is not None, "a golden file's model is no longer shipped: its archives would be orphaned"
    return Codec(name, threads=header.threads or None, tile_size=header.tile_size)


# CPU features by which oneDNN picks other float kernels on one torch build and vector
# level (a float file made on an AVX-512 Xeon without AMX fails on one with it).
KERNEL_FEATURES = ("avx_vnni", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile")


def cpu_features() -> list[str] | None:
    """The KERNEL_FEATURES this CPU has (Linux; None where they cannot be read)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return None
    return [feature for feature in KERNEL_FEATURES if feature in flags]


def this_environment() -> dict:
    return {
        "torch": torch.__version__.split("+")[0],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_features": cpu_features(),
    }


def other_environment(name: str) -> str | None:
    """Why a float golden file's floats may not come out here (None where they do):
    the environment it was made in against this one. A file whose record lacks the
    CPU features (made before they were recorded) may not decode on any machine."""
    made_by = MANIFEST[name]["made_by"]
    if made_by["exact"]:
        return None
    here = this_environment()
    recorded = {key: made_by.get(key) for key in here}
    if recorded == here and here["cpu_features"] is not None:
        return None
    return (
        f"{name} was made by float model {made_by['model']} with torch {recorded['torch']} on "
        f"{recorded['cpu_capability']} (CPU features {recorded['cpu_features'] or 'not recorded'}) at "
        f"{made_by['threads']} thread(s); this is torch {here['torch']} on {here['cpu_capability']} "
        f"(CPU features {here['cpu_features']})"
    )


def pixel_hash(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


@pytest.mark.parametrize("name", SHIPPED_MADE)
def test_golden_file_decodes_to_its_recorded_pixels(name):
    entry = MANIFEST[name]
    data = (GOLDEN / name).read_bytes()
    if other_environment(name):
        pytest.skip(other_environment(name))
    image = codec_for(unpack(data)).decompress(data)
    assert list(image.shape) == entry["shape"]
    assert pixel_hash(image) == entry["pixels_sha256"]


FLOAT_MADE = sorted(name for name in SHIPPED_MADE if not MANIFEST[name]["made_by"]["exact"])


@pytest.mark.parametrize("name", FLOAT_MADE)
def test_a_float_golden_file_decodes_to_its_pixels_or_says_why_not_on_any_machine(name):
    """Everywhere, a float model's file gives its recorded pixels or a one-line
    CodecError naming the cause, never other pixels."""
    data = (GOLDEN / name).read_bytes()
    try:
        image = codec_for(unpack(data)).decompress(data)
    except CodecError as error:
        assert other_environment(name), f"fails where it was made: {error}"
        message = str(error)
        assert "\n" not in message and "float model" in message and "exact model" in message
        assert torch.backends.cpu.get_cpu_capability() in message
    else:
        assert pixel_hash(image) == MANIFEST[name]["pixels_sha256"]


@pytest.mark.parametrize("name", sorted(set(MANIFEST) - set(SHIPPED_MADE)))
def test_a_retired_models_file_names_the_model_and_the_release_that_reads_it(name, tmp_path):
    """A model retired from the package leaves its files a one-line message, in the
    API and on the command line, instead of pixels; a file of PNG / WebP tiles only
    needs no model and decodes to its recorded pixels."""
    model = MANIFEST[name]["made_by"]["model"]
    if stored_classically(unpack((GOLDEN / name).read_bytes())):
        assert pixel_hash(decompress(GOLDEN / name)) == MANIFEST[name]["pixels_sha256"]
        result = CliRunner().invoke(cli, ["decode", str(GOLDEN / name), "-o", str(tmp_path / "x.png")])
        assert (
            result.exit_code == 0
            and pixel_hash(np.asarray(Image.open(tmp_path / "x.png"))) == MANIFEST[name]["pixels_sha256"]
        )
        return
    with pytest.raises(ModelLoadError) as raised:
        decompress(GOLDEN / name)
    message = str(raised.value)
    assert "\n" not in message and model in message and "selfvae-codec at commit" in message
    result = CliRunner().invoke(cli, ["decode", str(GOLDEN / name), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and result.stderr == f"error: {GOLDEN / name}: {message}\n"


def test_the_manifest_records_what_made_every_golden_file():
    for name, entry in MANIFEST.items():
        made_by = entry["made_by"]
        header = unpack((GOLDEN / name).read_bytes())
        recorded = {**registry(), **RETIRED}[made_by["model"]]
        assert recorded["fingerprint"] == header.model_fingerprint.hex()
        assert made_by["exact"] == recorded["exact"] == (header.threads == 0)
        if not made_by["exact"]:
            assert made_by["threads"] == header.threads and {"torch", "cpu_capability"} <= set(made_by)


# Files whose encoder optimised the latents it sends (lossy, --effort 3 and up): the
# choice is the encoder's own (floats); coding what it chose is exact.
OPTIMISED = sorted(name for name in SHIPPED_MADE if MANIFEST[name]["made_by"].get("effort", 1) >= 3)
MODEL_CODED = sorted(
    name
    for name in SHIPPED_MADE
    if all(s.kind not in ("pixels", "adapt") for s in unpack((GOLDEN / name).read_bytes()).sections)
    and name not in OPTIMISED
)
ADAPTED_FULL = sorted(
    name
    for name in SHIPPED_MADE
    if MANIFEST[name]["mode"] == "full" and "adapt" in {s.kind for s in unpack((GOLDEN / name).read_bytes()).sections}
)


@pytest.mark.parametrize("name", MODEL_CODED)
def test_encoding_again_gives_the_golden_sections(name):
    """Encoding at the file's format version gives its model-coded sections byte for
    byte: the model, the walk and the coder of every version are unchanged (the
    metadata may differ; PNG / WebP tiles depend on the libraries and are left out)."""
    entry = MANIFEST[name]
    if other_environment(name):
        pytest.skip(other_environment(name))
    golden = unpack((GOLDEN / name).read_bytes())
    codec = codec_for(golden)
    data = codec.compress(
        DATA / entry["source"],
        entry["mode"],
        golden.latent_step,
        strip_metadata=True,
        classical_tiles=False,
        quality=golden.quality or None,
        format_version=golden.version,
        max_error=golden.max_error,
    )
    fresh = unpack(data)
    assert fresh.version == golden.version
    assert fresh.sections == [s for s in golden.sections if s.kind in CODED_KINDS]
    assert (fresh.image_crc, fresh.channels, fresh.latent_step) == (
        golden.image_crc,
        golden.channels,
        golden.latent_step,
    )


@pytest.mark.parametrize("name", ADAPTED_FULL)
def test_coding_again_with_the_files_adaptation_gives_the_golden_sections(name):
    """The adaptation an encoder fits is its own (floats); given the file's, the coding
    of an adapted tile is exact: every tile codes to the golden sections."""
    golden = unpack((GOLDEN / name).read_bytes())
    codec = codec_for(golden)
    image = torch.from_numpy(np.asarray(Image.open(DATA / MANIFEST[name]["source"]).convert("RGB")).copy())
    x = image.permute(2, 0, 1)[None].to(torch.int64)
    by_tile = sections_by_tile(golden)
    for index, (top, bottom, left, right) in enumerate(tile_boxes(golden.height, golden.width, golden.tile_size)):
        stream = DecoderStream(by_tile[index], version=golden.version)
        adaptation = code_adaptation(stream, codec.model)
        tile = x[..., top:bottom, left:right]
        step, version = golden.latent_step, golden.version
        coded = encode_tile(codec.model, tile, index, "full", step, None, version, None, adaptation, golden.max_error)
        sections = coded[1]
        assert sections == by_tile[index]


class RecordingStream(DecoderStream):
    """A decoder's stream that keeps the latents' symbols it reads."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.symbols = []

    def latents(self, grid, indices, true_symbols=None):
        symbols = super().latents(grid, indices, true_symbols)
        self.symbols.append(symbols)
        return symbols


def symbols_by_latent(model, read: list[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    """The symbols of each latent of a tile of `size` (u's first) from those a stream
    read: a u_context model reads u in two halves of its checkerboard."""
    if not model.config.u_context:
        return read
    shape = (1, model.config.u_channels, *model.u_size(size))
    first = np.broadcast_to(checkerboard(shape[-2:]).numpy(), shape)
    u = np.zeros(shape, dtype=read[0].dtype)
    u[first], u[~first] = read[0], read[1]
    return [u, *read[2:]]


@pytest.mark.parametrize("name", OPTIMISED)
def test_coding_again_with_the_files_latents_gives_the_golden_sections(name):
    """Given the latents an optimised file sends, the exact coder writes its sections
    byte for byte: what the encoder chose is what is sent, on any machine."""
    golden = unpack((GOLDEN / name).read_bytes())
    codec = codec_for(golden)
    image = torch.from_numpy(np.asarray(Image.open(DATA / MANIFEST[name]["source"]).convert("RGB")).copy())
    x = image.permute(2, 0, 1)[None].to(torch.int64)
    by_tile = sections_by_tile(golden)
    step, version, quality = golden.latent_step, golden.version, golden.quality
    for index, (top, bottom, left, right) in enumerate(tile_boxes(golden.height, golden.width, golden.tile_size)):
        stream = RecordingStream(by_tile[index], version=version)
        walk(codec.model, stream, golden.mode, (bottom - top, right - left), step, quality=quality - 1)
        tile = x[..., top:bottom, left:right]
        symbols = symbols_by_latent(codec.model, stream.symbols, (bottom - top, right - left))
        sent = encode_tile(codec.model, tile, index, golden.mode, step, quality, version, None, symbols=symbols)
        assert sent[1] == by_tile[index]


def test_golden_files_cover_every_version_metadata_classical_tiles_and_the_exact_models():
    headers = [unpack((GOLDEN / name).read_bytes()) for name in SHIPPED_MADE]
    assert {h.version for h in headers} == set(READABLE_VERSIONS)
    assert {h.mode for h in headers} == {"full", "conditional", "rs2", "rs1"}
    exact = [h for h in headers if h.threads == 0]  # files of exact models say 0 threads
    assert {h.mode for h in exact} == {"full", "conditional", "rs2", "rs1"} and any(h.tile_count > 1 for h in exact)
    lossy = [h for h in headers if h.quality]  # files of the lossy models record a quality
    assert {h.mode for h in lossy} == {"rs2", "rs1", "conditional"} and any(h.tile_count > 1 for h in lossy)
    # The current version's exact pixel coding (values in two steps), on one and many tiles:
    current = [h for h in exact if h.version == FORMAT_VERSION and "x" in {s.kind for s in h.sections}]
    assert current and any(h.tile_count > 1 for h in current)
    kinds = {s.kind for h in headers for s in h.sections}
    assert {"meta", "pixels", "adapt"} <= kinds and any(h.tile_count > 1 for h in headers)
    adapted = {h.mode for h in headers if any(s.kind == "adapt" for s in h.sections)}
    assert adapted == {"full", "conditional"}
    # Near-lossless files of the exact model, in colour over several odd-edged tiles and in grayscale:
    near_lossless = [h for h in exact if h.max_error]
    assert {h.channels for h in near_lossless} == {1, 3} and any(h.tile_count > 1 for h in near_lossless)
    assert any(s.kind == "adapt" for h in near_lossless for s in h.sections)
    # A lossy file whose encoder optimised its latents, over several tiles:
    assert any(unpack((GOLDEN / name).read_bytes()).tile_count > 1 for name in OPTIMISED)


def test_full_golden_files_decode_to_their_source_images_or_within_their_maximum_error():
    for name in SHIPPED_MADE:
        entry = MANIFEST[name]
        if entry["mode"] == "full" and not other_environment(name):
            data = (GOLDEN / name).read_bytes()
            header = unpack(data)
            image = codec_for(header).decompress(data).astype(np.int64)
            error = np.abs(image - np.asarray(Image.open(DATA / entry["source"])))
            assert error.max() == header.max_error  # 0 for a lossless file; the bound is reached
