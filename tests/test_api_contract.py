"""The API's error contract: every error a caller can cause is a one-line CodecError
(a BadValueError for a bad argument), whatever the input's form."""

import io

import numpy as np
import pytest
from cli_helpers import GRAY, error_lines, pixels, run

import selfvae_codec
from selfvae_codec.codec.api import Codec, CodecError, compress, decompress
from selfvae_codec.errors import BadValueError

# -- the API's error contract ------------------------------------------------------------


def test_every_user_error_is_a_codec_error(tmp_path):
    from selfvae_codec import ContainerError, ModelLoadError

    assert issubclass(ContainerError, CodecError) and issubclass(ModelLoadError, CodecError)
    assert selfvae_codec.CodecError is CodecError
    bad = tmp_path / "bad.svc"
    bad.write_bytes(b"SVC\x89junk")
    with pytest.raises(CodecError, match="truncated"):
        decompress(bad)
    with pytest.raises(CodecError, match="model file not found"):
        Codec(tmp_path / "missing.safetensors")


def test_decompress_takes_bytes_a_path_or_a_stream(tmp_path):
    data = compress(GRAY)
    (tmp_path / "g.svc").write_bytes(data)
    expected = pixels(GRAY)
    for source in (data, bytearray(data), str(tmp_path / "g.svc"), tmp_path / "g.svc", io.BytesIO(data)):
        assert np.array_equal(decompress(source), expected)
    with (tmp_path / "g.svc").open("rb") as stream:
        assert np.array_equal(decompress(stream), expected)
    with pytest.raises(BadValueError, match="expected .svc bytes, a path"):
        decompress(12)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0, 3), (0, 4, 3)])
def test_empty_arrays_are_refused_alike(shape):
    with pytest.raises(CodecError, match="the image is empty"):
        compress(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("threads", [0, -1, 256, 2.5])
def test_bad_thread_counts_are_refused(threads):
    with pytest.raises(CodecError, match="threads must be"):
        Codec(threads=threads)


# -- API edges ----------------------------------------------------------------------------


def test_quality_takes_numpy_integers_and_refuses_bools():
    lossy = Codec("lossy", threads=1)
    assert lossy.compress(GRAY, "rs2", quality=np.int64(3)) == lossy.compress(GRAY, "rs2", quality=3)
    for bad in (True, 3.0, "3"):
        with pytest.raises(BadValueError, match="quality must be a whole number"):
            lossy.compress(GRAY, "rs2", quality=bad)


@pytest.mark.parametrize("step", ["abc", None.__class__, -1.0, float("nan"), True])
def test_bad_steps_are_bad_values(step):
    with pytest.raises(BadValueError, match="step must be a number from 0.001 to 1000"):
        compress(GRAY, step=step)


def test_empty_input_says_so(tmp_path):
    result = run("encode", "-", "-o", tmp_path / "e.svc", input=b"")
    assert result.exit_code == 1
    assert error_lines(result) == ["error: stdin: the input is empty (0 bytes): no image to read"]
    with pytest.raises(CodecError, match="the input is empty"):
        compress(b"")
