"""How the codec runs on this machine, and the checks of its arguments: the device,
the thread count (and the cores free for it), seeded random numbers, memory given
back between tiles, and whole-number / step values (one-line BadValueErrors)."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..errors import BadValueError, CodecError, count_of


def whole_number(value, low: int, high: int, name: str) -> int:
    """`value` as an int from `low` to `high` (numpy integers too, never a bool), or a
    one-line error naming it."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and low <= value <= high:
        return int(value)
    raise BadValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")


def check_step(step) -> float:
    """The latent quantisation step as a float from 0.001 to 1000, or a one-line error."""
    try:
        value = float(step)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(step, (bool, np.bool_)) or not 1e-3 <= value <= 1e3:
        raise BadValueError(f"the latent quantisation step must be a number from 0.001 to 1000, got {step!r}")
    return value


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device the codec runs on (cpu, cuda, cuda:N), or a one-line error."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise BadValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from error
    if parsed.type not in ("cpu", "cuda"):
        raise BadValueError(f"device {device!r} is not supported; use cpu, cuda or cuda:N")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise CodecError(f"device {device!r}: CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            devices = count_of(torch.cuda.device_count(), "CUDA device")
            raise CodecError(f"device {device!r}: this machine has {devices}")
    return parsed


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's random numbers from `seed`, leaving the caller's generator as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def free_cores(loadavg: str = "/proc/loadavg") -> int:
    """The cores no other process is running on now: the usable cores less the other
    runnable threads (Linux's /proc/loadavg, the least of a few looks 5 ms apart, so a
    passing blip does not count; elsewhere torch's own count). The codec's default
    thread count: threads beyond the free cores slow it down (a busy core's thread
    holds up the others at every step)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        others = []
        for _ in range(3):
            with open(loadavg) as load:
                running = int(load.read().split()[3].split("/")[0])
            others.append(running - 1)  # less this thread
            time.sleep(0.005)
    except (OSError, ValueError, IndexError):
        return max(1, min(usable, torch.get_num_threads()))
    return max(1, min(usable, torch.get_num_threads()) - min(others))


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to release by hand
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Give the memory freed by a tile back to the system (glibc's malloc_trim). glibc
    keeps freed tensors' pages for reuse, and across many tiles the process grew by a
    third over one tile's peak (1.18 GB for 48 tiles against 0.9 GB for one)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
