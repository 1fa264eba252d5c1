"""Block fading: one link's small-scale power gain |h|^2, constant within a coherence time.

Network side only (numpy; never torch).  Re-exported by :mod:`pwffsim.net.channel`.
"""
from __future__ import annotations

import math

import numpy as np

from .channel import _BLOCK_EDGE_TOL, FADING_KINDS, draw_fading_power
from .checks import as_float_array, check_rng, positive

__all__ = ["BlockFading"]

# Fading blocks are drawn in chunks of this many blocks (see BlockFading).
_BLOCK_CHUNK = 4096
_BLOCK_CACHE_CHUNKS = 16
# A Rayleigh chunk is drawn in steps, at least this many blocks at a time (the values do not change).
_FIRST_DRAW = 256


class _Chunk:
    """Blocks ``c * _BLOCK_CHUNK ...`` of one link, drawn from their own Generator up to ``filled``."""

    __slots__ = ("gen", "gains", "filled")

    def __init__(self, gen: np.random.Generator):
        self.gen, self.gains, self.filled = gen, np.empty(_BLOCK_CHUNK), 0


class BlockFading:
    """Block fading on one link: the power gain |h|^2 is constant within a block of length
    coherence_time_s and i.i.d. across blocks. Blocks are drawn lazily in index order from the link's
    own Generator, so the realisation never depends on the order or the times at which it is queried
    (common random numbers).

    Implementation: at construction one 63-bit key is drawn from ``rng``. Blocks are drawn in chunks of
    ``_BLOCK_CHUNK`` consecutive blocks; chunk ``c`` comes from ``default_rng([key, c])`` and is drawn in
    block order. Any block can thus be regenerated exactly on demand, memory stays bounded (a small
    cache of chunks) even for long runs with short coherence times, and the gain of block ``k`` depends
    only on ``rng``'s state at construction and on ``k``.  A Rayleigh chunk is drawn as far as it is
    read (numpy's exponential draws come out the same in one call or in several), so a link used for
    a few blocks costs a few draws.

    A time lying exactly on a block boundary ``t = k Tc`` belongs to block ``k`` (the new block); a
    tolerance of ``1e-9`` block is applied so that float round-off in ``k * Tc`` does not put it back in
    block ``k - 1``. ``next_boundary_s(t) > t`` always.
    """

    def __init__(self, kind: str, coherence_time_s: float, rng: np.random.Generator,
                 rician_k_db: float = 0.0):
        if kind not in FADING_KINDS:
            raise ValueError(f"unknown fading kind {kind!r}; expected one of {list(FADING_KINDS)}")
        tc = float(positive(coherence_time_s, "coherence_time_s"))
        check_rng(rng)
        self.kind = kind
        self.coherence_time_s = tc
        self.rician_k_db = float(as_float_array(rician_k_db, "rician_k_db"))
        self._static = kind == "none" or math.isinf(tc)
        self._key = int(rng.integers(0, 2**63 - 1))
        self._chunks: dict[int, _Chunk] = {}
        self._static_gain: float | None = None
        if kind == "none":
            self._static_gain = 1.0
        elif math.isinf(tc):
            # a single block for the whole run
            self._static_gain = float(self._chunk(0, 1)[0])

    def _check_t(self, t_s: float) -> float:
        t = float(t_s)
        if math.isnan(t) or t < 0:
            raise ValueError(f"t_s must be a time >= 0 s, got {t_s!r}")
        return t

    def block_index(self, t_s: float) -> int:
        """Index of the block containing ``t_s``: ``floor(t / Tc)`` (with a 1e-9-block tolerance at
        boundaries); 0 if the kind is ``"none"`` or ``Tc`` is infinite."""
        t = self._check_t(t_s)
        if self._static or math.isinf(t):
            return 0
        tc = self.coherence_time_s
        k = math.floor(t / tc + _BLOCK_EDGE_TOL)
        # guard against round-off at very large t / Tc: the block must end strictly after t
        while (k + 1) * tc <= t:
            k += 1
        return int(k)

    def _chunk(self, c: int, end: int = _BLOCK_CHUNK) -> np.ndarray:
        """Chunk ``c``'s gains, drawn at least up to index ``end`` (exclusive)."""
        chunk = self._chunks.get(c)
        if chunk is None:
            if len(self._chunks) >= _BLOCK_CACHE_CHUNKS:
                self._chunks.pop(next(iter(self._chunks)))  # evict the oldest chunk
            chunk = self._chunks[c] = _Chunk(np.random.default_rng([self._key, c]))
        if chunk.filled < end:
            if self.kind == "rayleigh":
                stop = min(_BLOCK_CHUNK, max(end, 2 * chunk.filled, _FIRST_DRAW))
                chunk.gen.standard_exponential(out=chunk.gains[chunk.filled:stop])
            else:  # a Rician draw is one (2, n) normal array: all of it at once
                stop = _BLOCK_CHUNK
                chunk.gains[:] = draw_fading_power(chunk.gen, self.kind, size=_BLOCK_CHUNK,
                                                   rician_k_db=self.rician_k_db)
            chunk.filled = stop
        return chunk.gains

    def block_gain(self, k: int) -> float:
        """|h|^2 of block ``k`` (k >= 0)."""
        if k < 0:
            raise ValueError(f"block index must be >= 0, got {k}")
        if self._static_gain is not None:
            return self._static_gain
        c, i = divmod(int(k), _BLOCK_CHUNK)
        return float(self._chunk(c, i + 1)[i])

    def blocks(self, k0: int, count: int) -> np.ndarray:
        """|h|^2 of blocks ``k0 .. k0 + count - 1`` (a new array; the values :meth:`block_gain` gives)."""
        if self._static_gain is not None:
            return np.full(count, self._static_gain)
        out = np.empty(count)
        k, filled = int(k0), 0
        while filled < count:
            c, i = divmod(k, _BLOCK_CHUNK)
            stop = min(_BLOCK_CHUNK, i + count - filled)
            part = self._chunk(c, stop)[i:stop]
            out[filled:filled + len(part)] = part
            filled += len(part)
            k += len(part)
        return out

    def gain(self, t_s: float) -> float:
        """|h|^2 of the block containing ``t_s`` (1.0 for ``"none"``)."""
        return self.block_gain(self.block_index(t_s))

    def next_boundary_s(self, t_s: float) -> float:
        """Start time of the next block strictly after ``t_s``; ``math.inf`` for ``"none"`` or
        infinite ``Tc``."""
        t = self._check_t(t_s)
        if self._static or math.isinf(t):
            return math.inf
        return (self.block_index(t) + 1) * self.coherence_time_s

    def __repr__(self) -> str:
        return (f"BlockFading(kind={self.kind!r}, coherence_time_s={self.coherence_time_s!r}, "
                f"rician_k_db={self.rician_k_db!r})")
