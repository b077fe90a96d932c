"""Entropy coding with constriction's ANS coder.

The encoder and the decoder drive the same `walk` (see engine.py) through a stream
object with one interface:

    stream.begin_section(kind, level)
    symbols = stream.categorical(table_fn, chunks, true_symbols)   # 0..K-1 per entry
    symbols = stream.latents(grid, scale_indices, true_symbols)    # integers, mean 0

`grid` says which family of latent distributions the scale indices pick:
"gaussian" (a float model's quantised Gaussians of SCALE_TABLE) or "logistic" (an
exact model's integer tables, latent_table).

`table_fn(i)` returns chunk i's probability table (float, [n_i, K]). The decoder
builds each table as it decodes; the encoder records the request and builds the
tables when it writes the section, last to first (ANS is a stack). Both call the
same function with the same arguments, so the tables are bit-identical.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache

import constriction
import numpy as np
import torch

from ..bitstream import BLOCK_MEANS_HELD_FROM, COUNTS_REDUCED_FROM, FORMAT_VERSION, VALUES_IN_TWO_STEPS_FROM, Section
from ..errors import count_of
from ..models.distributions import SCALE_TABLE
from ..models.exact_distributions import latent_symbol_range, latent_table

LATENT_SYMBOL_LIMIT = 4096  # latent symbols are clamped to [-L, L]
# The smallest probability constriction's 24-bit models give a codable value: the
# floor of the bit estimate.
MIN_PROBABILITY = 2.0**-24

_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
_GAUSSIAN = constriction.stream.model.QuantizedGaussian(-LATENT_SYMBOL_LIMIT, LATENT_SYMBOL_LIMIT)


class CodingError(Exception):
    """The coder was given invalid probabilities or the bitstream does not decode."""


def gaussian_bits(symbols: np.ndarray, stds: np.ndarray) -> float:
    """-log2 of the discretized N(0, std) probabilities of integer symbols."""
    s = torch.from_numpy(symbols.astype(np.float64))
    std = torch.from_numpy(stds.astype(np.float64))
    mass = torch.special.ndtr((s + 0.5) / std) - torch.special.ndtr((s - 0.5) / std)
    return float(-torch.log2(mass.clamp(min=MIN_PROBABILITY)).sum())


@cache
def latent_model(index: int) -> tuple[constriction.stream.model.Categorical, int, np.ndarray]:
    """(coder model, symbol range R, probabilities) of the exact models' latent scale
    `index`: symbols -R..R are coded as 0..2R."""
    counts = latent_table(index).numpy()
    model = constriction.stream.model.Categorical(counts.astype(np.float32), perfect=False)
    return model, latent_symbol_range(index), counts / counts.sum()


def _latent_groups(indices: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(scale index, positions) for each scale index present, in increasing order: the
    order in which an exact model's latents are coded."""
    flat = indices.ravel()
    return [(int(index), np.flatnonzero(flat == index)) for index in np.unique(flat)]


@contextlib.contextmanager
def _rust_panics_unprinted() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null meanwhile: Rust's panic hook writes its
    message there before the panic becomes a Python exception, which the caller turns
    into a one-line error."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _check_table(table: np.ndarray) -> np.ndarray:
    table = np.ascontiguousarray(table, dtype=np.float32)
    if table.ndim != 2 or not np.isfinite(table).all() or (table < 0).any():
        raise CodingError("the model produced invalid probabilities (NaN, infinite or negative)")
    if (table.sum(axis=1) <= 0).any():
        raise CodingError("the model produced a probability table with no mass")
    return table


@dataclass
class _Request:
    kind: str  # 'categorical', 'gaussian' or 'logistic'
    chunks: int
    table_fn: Callable[[int], np.ndarray] | None
    symbols: list[np.ndarray]  # per chunk (categorical) or one array (gaussian, logistic)
    scales: np.ndarray | None = None  # scale indices (gaussian, logistic)


@dataclass
class _OpenSection:
    kind: str
    level: int
    requests: list[_Request] = field(default_factory=list)


class _FormatRules:
    """What the file's format version changes in the walk (engine.py)."""

    version: int

    @property
    def values_in_two_steps(self) -> bool:
        """An exact model's pixel values are coded as a bin and a value within it."""
        return self.version >= VALUES_IN_TWO_STEPS_FROM

    @property
    def reduces_counts(self) -> bool:
        """An exact model's pixel tables reach the coder through coder_counts (totals
        below 2^24, no zero count), so that every value can be coded."""
        return self.version >= COUNTS_REDUCED_FROM

    @property
    def holds_block_means(self) -> bool:
        """A conditional image is moved onto the images whose 2x2 means are the sent
        half-size image (transforms.keep_block_means)."""
        return self.version >= BLOCK_MEANS_HELD_FROM


class EncoderStream(_FormatRules):
    """Records what the walk codes; `finish()` returns the ANS-coded sections of a
    file of format `version`."""

    def __init__(self, tile: int = 0, on_section: Callable[[], None] | None = None, version: int = FORMAT_VERSION):
        self.tile = tile
        self.version = version
        self.sections: list[Section] = []
        self._open: _OpenSection | None = None
        self._on_section = on_section
        self.estimated_bits: dict[str, float] = {}

    def begin_section(self, kind: str, level: int = 0) -> None:
        self._close()
        self._open = _OpenSection(kind, level)

    def categorical(
        self, table_fn: Callable[[int], np.ndarray], chunks: int, true_symbols: list[np.ndarray]
    ) -> list[np.ndarray]:
        symbols = [np.ascontiguousarray(s, dtype=np.int32) for s in true_symbols]
        self._open.requests.append(_Request("categorical", chunks, table_fn, symbols))
        return symbols

    def latents(self, grid: str, indices: np.ndarray, true_symbols: np.ndarray) -> np.ndarray:
        if grid == "gaussian":
            symbols = np.clip(np.rint(true_symbols), -LATENT_SYMBOL_LIMIT, LATENT_SYMBOL_LIMIT).astype(np.int32)
            self._open.requests.append(_Request("gaussian", 1, None, [symbols], indices.astype(np.int64)))
            return symbols
        symbols = np.zeros(indices.shape, dtype=np.int64)
        flat = symbols.reshape(-1)
        for index, positions in _latent_groups(indices):
            limit = latent_model(index)[1]
            flat[positions] = np.clip(true_symbols.reshape(-1)[positions], -limit, limit)
        self._open.requests.append(_Request("logistic", 1, None, [symbols], indices.astype(np.int64)))
        return symbols

    def _close(self) -> None:
        if self._open is None:
            return
        section, self._open = self._open, None
        try:
            with _rust_panics_unprinted():
                self._encode(section)
        except BaseException as error:
            # constriction panics (a pyo3 PanicException) where its float arithmetic
            # leaves a symbol that is to be coded with no probability: with tables of
            # very unequal entries and an empty one, as on pure noise.
            if type(error).__name__ != "PanicException":
                raise
            if "KeyboardInterrupt" in str(error):  # a Ctrl-C seen inside the coder comes back as its panic
                raise KeyboardInterrupt from None
            raise CodingError(f"the entropy coder cannot code section {section.kind}{section.level or ''}") from None
        if self._on_section:  # after the redirection: a progress bar writes to stderr
            self._on_section()

    def _encode(self, section: _OpenSection) -> None:
        coder = constriction.stream.stack.AnsCoder()
        bits = 0.0
        for request in reversed(section.requests):
            if request.kind == "logistic":
                flat = request.symbols[0].reshape(-1)
                for index, positions in reversed(_latent_groups(request.scales)):
                    model, limit, probabilities = latent_model(index)
                    offsets = (flat[positions] + limit).astype(np.int32)
                    bits -= float(np.log2(np.maximum(probabilities[offsets], MIN_PROBABILITY)).sum())
                    coder.encode_reverse(offsets, model)
                continue
            if request.kind == "gaussian":
                symbols = request.symbols[0].ravel()
                stds = SCALE_TABLE[request.scales.ravel()]
                if symbols.size:
                    bits += gaussian_bits(symbols, stds)
                    coder.encode_reverse(symbols, _GAUSSIAN, np.zeros(symbols.size), stds)
                continue
            for i in reversed(range(request.chunks)):
                symbols = request.symbols[i]
                if symbols.size == 0:
                    continue
                table = _check_table(request.table_fn(i))
                chosen = np.take_along_axis(table / table.sum(1, keepdims=True), symbols[:, None].astype(np.int64), 1)
                bits -= float(np.log2(np.maximum(chosen, MIN_PROBABILITY)).sum())
                coder.encode_reverse(symbols, _CATEGORICAL, table)
        label = section.kind if section.kind in ("adapt", "u", "x") else f"{section.kind}{section.level}"
        self.estimated_bits[label] = self.estimated_bits.get(label, 0.0) + bits
        payload = coder.get_compressed().astype("<u4").tobytes()
        self.sections.append(Section(section.kind, section.level, self.tile, payload))

    def finish(self) -> list[Section]:
        self._close()
        return self.sections


class DecoderStream(_FormatRules):
    """Decodes the sections of one tile of a file of format `version` in order, as the
    walk asks for them."""

    def __init__(
        self, sections: list[Section], on_section: Callable[[], None] | None = None, version: int = FORMAT_VERSION
    ):
        self.version = version
        self._pending = list(sections)
        self._coder = None
        self._on_section = on_section

    def begin_section(self, kind: str, level: int = 0) -> None:
        self._check_exhausted()
        if self._coder is not None and self._on_section:
            self._on_section()
        if not self._pending:
            raise CodingError(f"the file has no section {kind}{level or ''} where one is needed")
        section = self._pending.pop(0)
        if section.kind != kind or (kind in ("z", "y") and section.level != level):
            raise CodingError(f"expected section {kind}{level or ''}, found {section.label}")
        words = np.frombuffer(section.payload, dtype="<u4").astype(np.uint32)
        self._coder = constriction.stream.stack.AnsCoder(words)

    def categorical(self, table_fn: Callable[[int], np.ndarray], chunks: int, true_symbols=None) -> list[np.ndarray]:
        out = []
        for i in range(chunks):
            table = _check_table(table_fn(i))
            if table.shape[0] == 0:
                out.append(np.zeros(0, dtype=np.int32))
                continue
            out.append(np.asarray(self._coder.decode(_CATEGORICAL, table), dtype=np.int32))
        return out

    def latents(self, grid: str, indices: np.ndarray, true_symbols=None) -> np.ndarray:
        if grid == "gaussian":
            flat = indices.ravel()
            if flat.size == 0:
                return np.zeros(indices.shape, dtype=np.int32)
            symbols = self._coder.decode(_GAUSSIAN, np.zeros(flat.size), SCALE_TABLE[flat])
            return np.asarray(symbols, dtype=np.int32).reshape(indices.shape)
        symbols = np.zeros(indices.shape, dtype=np.int64)
        flat = symbols.reshape(-1)
        for index, positions in _latent_groups(indices):
            model, limit, _ = latent_model(index)
            flat[positions] = np.asarray(self._coder.decode(model, positions.size), dtype=np.int64) - limit
        return symbols

    def _check_exhausted(self) -> None:
        # A well-formed section is consumed exactly; leftovers mean a mismatch.
        if self._coder is not None and not self._coder.is_empty():
            raise CodingError("a section was not consumed exactly")

    def finish(self) -> None:
        self._check_exhausted()
        if self._coder is not None and self._on_section:
            self._on_section()
        if self._pending:
            raise CodingError(f"{count_of(len(self._pending), 'unexpected extra section')} in the file")
