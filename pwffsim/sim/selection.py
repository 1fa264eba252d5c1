"""Client selection: small classes behind one narrow interface.

A selector picks ``min(k, len(candidates))`` of the candidate clients for a round, given a
:class:`SelectionContext` (what the server knows now: expected uplink rates, batteries, sample
counts, last losses and last round durations). Every selector returns a sorted list of distinct
client ids, and is deterministic given the ``numpy.random.Generator`` it is passed (the candidates'
order does not matter: they are sorted first). Nothing here touches a global random state or torch.

* ``"uniform"`` (:class:`UniformSelector`): uniform random without replacement.
* ``"channel"`` (:class:`ChannelAwareSelector`): the ``k`` highest expected uplink rates.
* ``"battery"`` (:class:`BatteryAwareSelector`): uniform among clients whose battery is at least
  ``threshold_fraction`` of its capacity.
* ``"oort"`` (:class:`OortSelector`): Oort-like utility-guided selection (Lai et al., OSDI 2021).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

__all__ = [
    "SELECTORS",
    "SelectionContext",
    "LazyMap",
    "SortedIds",
    "ClientSelector",
    "UniformSelector",
    "ChannelAwareSelector",
    "BatteryAwareSelector",
    "OortSelector",
    "make_selector",
]


class SortedIds(Sequence):
    """Distinct client ids in increasing order, held in one integer array (what the round loop's
    candidates are): selectors skip sorting them, membership is a binary search, and a large
    population's candidates are never turned into a Python list unless a selector walks them."""

    __slots__ = ("_ids",)

    def __init__(self, ids=()):
        self._ids = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return SortedIds(self._ids[i])
        return int(self._ids[i])

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids.tolist())

    def __contains__(self, k) -> bool:
        i = int(np.searchsorted(self._ids, k))
        return i < len(self._ids) and int(self._ids[i]) == k

    def __eq__(self, other) -> bool:
        return list(self) == list(other)

    def __repr__(self) -> str:
        return f"SortedIds({self._ids.tolist()!r})"


class LazyMap(Mapping):
    """A read-only mapping over ``keys`` whose values are computed on first lookup (``value(k)``) and
    kept: a selection context field nobody reads costs nothing, one that is read gives what an eager
    dict would.  ``keys`` is any container with ``in`` and iteration (e.g. :class:`SortedIds`)."""

    __slots__ = ("_keys", "_value", "_cache")

    def __init__(self, keys, value: Callable[[int], object]):
        self._keys, self._value, self._cache = keys, value, {}

    def __getitem__(self, k):
        try:
            return self._cache[k]
        except KeyError:
            if k not in self._keys:
                raise
        v = self._cache[k] = self._value(k)
        return v

    def __contains__(self, k) -> bool:
        return k in self._keys

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass
class SelectionContext:
    """What the server knows when it selects clients for a round. Every mapping is keyed by client
    id and may omit clients (see each selector for how a missing entry is treated).  The round loop
    fills it with :class:`LazyMap` views, computed only for the clients a selector asks about."""

    round: int = 0
    t_s: float = 0.0
    # each candidate's expected uplink rate now (large-scale path loss, no fading), bit/s
    expected_rate_bps: dict[int, float] = field(default_factory=dict)
    battery_j: dict[int, float] = field(default_factory=dict)
    battery_capacity_j: dict[int, float] = field(default_factory=dict)
    num_samples: dict[int, int] = field(default_factory=dict)
    # last local training loss (missing if the client never trained)
    last_loss: dict[int, float] = field(default_factory=dict)
    # last observed round duration (download + compute + upload), s (missing if never)
    last_duration_s: dict[int, float] = field(default_factory=dict)


def _prepare(candidates: Sequence[int], k) -> tuple[list[int], int]:
    """Sorted distinct candidates and the number to pick, ``min(k, len(candidates))``."""
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
    cands = candidates if isinstance(candidates, SortedIds) else sorted(set(int(c) for c in candidates))
    return cands, min(int(k), len(cands))


def _uniform(rng: np.random.Generator, pool: Sequence[int], k: int) -> list[int]:
    """``k`` distinct members of ``pool`` (in the given order), uniformly at random."""
    if k <= 0 or not pool:
        return []
    k = min(k, len(pool))
    picked = rng.choice(len(pool), size=k, replace=False)
    return [pool[int(i)] for i in picked]


class ClientSelector:
    """Base class: uniform random selection of ``min(k, len(candidates))`` clients without
    replacement, returned sorted."""

    name = "uniform"

    def select(self, rng: np.random.Generator, candidates: Sequence[int], k: int,
               ctx: Optional[SelectionContext] = None) -> list[int]:
        cands, k = _prepare(candidates, k)
        return sorted(_uniform(rng, cands, k))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class UniformSelector(ClientSelector):
    name = "uniform"


class ChannelAwareSelector(ClientSelector):
    """The ``k`` candidates with the highest ``ctx.expected_rate_bps`` (ties: lower client id
    first). A candidate without an expected rate counts as rate 0. Uses no randomness."""

    name = "channel"

    def select(self, rng, candidates, k, ctx=None):
        cands, k = _prepare(candidates, k)
        rates = ctx.expected_rate_bps if ctx is not None else {}
        order = sorted(cands, key=lambda c: (-float(rates.get(c, 0.0)), c))
        return sorted(order[:k])


class BatteryAwareSelector(ClientSelector):
    """Skip candidates whose ``battery_j < threshold_fraction * battery_capacity_j``; uniform random
    among the rest (all of them when fewer than ``k`` are left). A candidate without a battery level
    or capacity in the context is never skipped (treated as mains-powered)."""

    name = "battery"

    def __init__(self, threshold_fraction: float = 0.2):
        t = float(threshold_fraction)
        if not (0.0 <= t <= 1.0):
            raise ValueError(f"threshold_fraction must be in [0, 1], got {threshold_fraction!r}")
        self.threshold_fraction = t

    def eligible(self, candidates: Sequence[int], ctx: Optional[SelectionContext]) -> list[int]:
        cands, _ = _prepare(candidates, 0)
        if ctx is None:
            return cands
        out = []
        for c in cands:
            b, cap = ctx.battery_j.get(c), ctx.battery_capacity_j.get(c)
            if b is not None and cap is not None and float(b) < self.threshold_fraction * float(cap):
                continue
            out.append(c)
        return out

    def select(self, rng, candidates, k, ctx=None):
        _, k = _prepare(candidates, k)
        pool = self.eligible(candidates, ctx)
        return sorted(_uniform(rng, pool, k))

    def __repr__(self) -> str:
        return f"BatteryAwareSelector(threshold_fraction={self.threshold_fraction})"


class OortSelector(ClientSelector):
    """Oort-like guided selection (Lai et al., "Oort: Efficient Federated Learning via Guided
    Participant Selection", OSDI 2021), without Oort's pacer and staleness bonus.

    * A candidate is *explored* once it has a ``ctx.last_loss``; the others are *unexplored*.
    * Utility of an explored client: statistical utility ``|B_i| * sqrt(loss_i^2)`` (``|B_i|`` =
      ``ctx.num_samples``, 1 if missing; the last loss stands in for the mean squared sample loss),
      times the system factor ``(T / t_i) ** alpha`` when its last duration ``t_i > T``
      (``T`` = ``preferred_duration_s``, default: the median of the candidates' known
      ``ctx.last_duration_s``; a client without a known duration is not penalised).
    * Exploration: ``n_explore = k - floor((1 - epsilon) * k)``, at least 1 if any candidate is
      unexplored, drawn uniformly among the unexplored candidates (or, if there are none, among the
      explored ones not exploited). Exploitation: the remaining ``k - n_explore`` with the highest
      utility (ties: lower id first). When one group is too small the other fills the gap.
    """

    name = "oort"

    def __init__(self, epsilon: float = 0.1, alpha: float = 2.0,
                 preferred_duration_s: Optional[float] = None):
        e, a = float(epsilon), float(alpha)
        if not (0.0 <= e <= 1.0):
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
        if not (a >= 0.0 and math.isfinite(a)):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if preferred_duration_s is not None:
            p = float(preferred_duration_s)
            if not (p > 0.0 and math.isfinite(p)):
                raise ValueError(f"preferred_duration_s must be a positive finite number of seconds, "
                                 f"got {preferred_duration_s!r}")
            preferred_duration_s = p
        self.epsilon = e
        self.alpha = a
        self.preferred_duration_s = preferred_duration_s

    def preferred_duration(self, candidates: Sequence[int], ctx: SelectionContext) -> Optional[float]:
        """``T``: ``preferred_duration_s`` if set, else the median known duration (None if none)."""
        if self.preferred_duration_s is not None:
            return self.preferred_duration_s
        known = [float(ctx.last_duration_s[c]) for c in candidates if c in ctx.last_duration_s]
        return float(np.median(known)) if known else None

    def utilities(self, candidates: Sequence[int], ctx: SelectionContext) -> dict[int, float]:
        """Utility of every explored candidate (those with a ``last_loss``)."""
        cands, _ = _prepare(candidates, 0)
        T = self.preferred_duration(cands, ctx)
        out: dict[int, float] = {}
        for c in cands:
            if c not in ctx.last_loss:
                continue
            loss = float(ctx.last_loss[c])
            u = float(ctx.num_samples.get(c, 1)) * math.sqrt(loss * loss)
            t = ctx.last_duration_s.get(c)
            if T is not None and t is not None and float(t) > T:
                u *= (T / float(t)) ** self.alpha
            out[c] = u
        return out

    def select(self, rng, candidates, k, ctx=None):
        cands, k = _prepare(candidates, k)
        if k == 0:
            return []
        ctx = ctx if ctx is not None else SelectionContext()
        util = self.utilities(cands, ctx)
        explored = [c for c in cands if c in util]
        unexplored = [c for c in cands if c not in util]
        n_explore = k - int(math.floor((1.0 - self.epsilon) * k + 1e-9))
        if unexplored:
            n_explore = min(max(n_explore, 1), len(unexplored))
        n_exploit = min(k - n_explore, len(explored))
        n_explore = k - n_exploit
        ranked = sorted(explored, key=lambda c: (-util[c], c))
        exploit = ranked[:n_exploit]
        pool = unexplored if unexplored else ranked[n_exploit:]
        return sorted(exploit + _uniform(rng, pool, n_explore))

    def __repr__(self) -> str:
        return (f"OortSelector(epsilon={self.epsilon}, alpha={self.alpha}, "
                f"preferred_duration_s={self.preferred_duration_s})")


SELECTORS = {
    "uniform": UniformSelector,
    "channel": ChannelAwareSelector,
    "battery": BatteryAwareSelector,
    "oort": OortSelector,
}


def make_selector(name: str, **kw) -> ClientSelector:
    """A selector by name (``"uniform"``, ``"channel"``, ``"battery"``, ``"oort"``); ``kw`` go to its
    constructor (``threshold_fraction`` for battery; ``epsilon``, ``alpha``,
    ``preferred_duration_s`` for oort)."""
    cls = SELECTORS.get(name)
    if cls is None:
        raise ValueError(f"unknown selector {name!r}, expected one of: {', '.join(SELECTORS)}")
    try:
        return cls(**kw)
    except TypeError as exc:
        raise ValueError(f"selector {name!r}: bad arguments {sorted(kw)}: {exc}") from exc
