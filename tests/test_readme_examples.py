"""The README's usage examples, run exactly as written in a scratch folder that holds
the files they name."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "tests" / "data" / "astronaut_128x128.png"


def usage_examples() -> list[str]:
    """The command lines of the README's first code block under '## Using it'."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Using it", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)[1]
    return [line.split("   #")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    Image.fromarray(photo[:48, :64]).save(folder / "photo.png")
    (folder / "shots").mkdir()
    (folder / "photos").mkdir()
    for index in range(2):
        Image.fromarray(photo[40 * index : 40 * index + 32, :40]).save(folder / "shots" / f"shot{index}.png")
    Image.fromarray(photo[64:96, 64:96]).save(folder / "photos" / "one.png")
    Image.fromarray(photo[:16, :16]).save(folder / "small.png")
    shutil.copy(ROOT / "selfvae_codec" / "pretrained" / "default-float.safetensors", folder / "mine.safetensors")
    return folder


def test_the_readme_shows_the_commands_this_test_runs():
    commands = usage_examples()
    assert len(commands) >= 10 and all(line.startswith(("selfvae-codec", "cat ")) for line in commands)


@pytest.mark.parametrize("command", usage_examples())
def test_readme_example_runs_as_written(scratch, command):
    bin_folder = str(Path(sys.executable).parent)  # the selfvae-codec of this Python
    environment = {**os.environ, "PATH": bin_folder + os.pathsep + os.environ["PATH"], "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=scratch,
        env=environment,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert "error" not in result.stderr.lower(), result.stderr


def test_readme_process_pool_example_codes_a_folder(tmp_path):
    readme = (ROOT / "README.md").read_text()
    script = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "ProcessPoolExecutor" in block)
    (tmp_path / "shots").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        shutil.copy(PHOTO, tmp_path / "shots" / name)
    (tmp_path / "pool.py").write_text(script)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "pool.py"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["encoded", "shots/a.png", "encoded", "shots/b.png", "encoded", "shots/c.png"]
    from selfvae_codec import decompress

    for name in ("a", "b", "c"):
        decoded = decompress(tmp_path / "shots" / f"{name}.svc")
        assert np.array_equal(decoded, np.asarray(Image.open(PHOTO).convert("RGB")))
