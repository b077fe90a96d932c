"""File helpers shared by the codec and the model files (no torch)."""

from __future__ import annotations

import os


def new_file_mode() -> int:
    """The permissions a new file gets: 0666 less the process's umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask
