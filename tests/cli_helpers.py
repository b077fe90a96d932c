"""What the command-line and API tests share: the test images and a CLI runner."""

from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from selfvae_codec.cli.main import cli

DATA = Path(__file__).parent / "data"
CHELSEA = DATA / "chelsea_75x50.png"
GRAY = DATA / "camera_gray_64x64.png"


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))
