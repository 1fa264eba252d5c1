"""One node's piecewise-linear path (:class:`Trajectory`)."""

from __future__ import annotations

import math

import numpy as np

from .common import _check_end


class Trajectory:
    """One node's piecewise-linear path: strictly increasing sample times ``t_s`` (shape ``(n,)``)
    and positions ``xy_m`` (shape ``(n, 2)``), ``n >= 1``.

    The node exists from its first sample on: before it, it is absent (:meth:`position` is ``None``,
    as for a vehicle SUMO inserts later). ``end`` fixes this trajectory's end policy (``"hold"`` or
    ``"leave"``); when ``None`` (default) the policy passed to :meth:`position` applies, and
    ``"hold"`` if none is passed. A policy fixed here wins (``static_positions`` fixes ``"hold"``, so a
    static node never "leaves").

    ``active_s``: optional activity intervals ``[(start, stop), ...]`` (s, sorted, disjoint,
    ``start < stop``, ``stop`` may be ``inf``); when given, the node is present only during
    ``[start, stop)`` of one of them (an ns-2 activity file's ``start`` / ``stop``), and within its
    samples as above.
    """

    __slots__ = ("t_s", "xy_m", "end", "active_s")

    def __init__(self, t_s, xy_m, end: str | None = None, active_s=None):
        t = np.array(t_s, dtype=float).reshape(-1)
        xy = np.array(xy_m, dtype=float)
        if t.size == 0:
            raise ValueError("a Trajectory needs at least one sample")
        if xy.shape != (t.size, 2):
            raise ValueError(f"xy_m must have shape ({t.size}, 2) to match t_s, got {xy.shape}")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(xy))):
            raise ValueError("t_s and xy_m must be finite")
        if np.any(np.diff(t) <= 0):
            raise ValueError("t_s must be strictly increasing")
        _check_end(end)
        self.t_s = t
        self.xy_m = xy
        self.end = end
        self.active_s = None if active_s is None else _check_intervals(active_s)
        self.t_s.setflags(write=False)
        self.xy_m.setflags(write=False)

    def __repr__(self) -> str:
        return (f"Trajectory({self.t_s.size} samples, t={self.start_s:g}..{self.stop_s:g} s"
                + (f", end={self.end!r})" if self.end else ")"))

    def __len__(self) -> int:
        return int(self.t_s.size)

    @property
    def start_s(self) -> float:
        """Time of the first sample."""
        return float(self.t_s[0])

    @property
    def stop_s(self) -> float:
        """Time of the last sample."""
        return float(self.t_s[-1])

    def _policy(self, end: str | None) -> str:
        _check_end(end)
        return self.end or end or "hold"

    def _segment(self, t: float) -> int:
        """Index ``i`` with ``t_s[i] <= t < t_s[i+1]``; -1 before the first sample, ``n-1`` at or
        after the last."""
        return int(np.searchsorted(self.t_s, t, side="right")) - 1

    def present(self, t_s: float, end: str | None = None) -> bool:
        """Whether the node exists at ``t_s``: not before its first sample, not after its last under
        the ``"leave"`` policy, and only inside an activity interval when there are some."""
        t = float(t_s)
        if t < self.t_s[0] or (self._policy(end) == "leave" and t > self.t_s[-1]):
            return False
        return self.active_s is None or any(a <= t < b for a, b in self.active_s)

    def position(self, t_s: float, end: str | None = None) -> np.ndarray | None:
        """Position at ``t_s`` (a new ``(2,)`` array), linearly interpolated between samples; ``None``
        while the node is absent (see :meth:`present`); after the last sample the last position
        (``"hold"``) or ``None`` (``"leave"``)."""
        t = float(t_s)
        if math.isnan(t):
            raise ValueError("t_s must not be NaN")
        if not self.present(t, end):
            return None
        i = self._segment(t)
        if i >= self.t_s.size - 1:
            return self.xy_m[-1].copy()
        t0, t1 = self.t_s[i], self.t_s[i + 1]
        w = (t - t0) / (t1 - t0)
        return self.xy_m[i] + w * (self.xy_m[i + 1] - self.xy_m[i])

    def velocity_mps(self, t_s: float) -> np.ndarray:
        """Velocity vector of the current segment; zero before the first and from the last sample on
        (activity is not looked at: :class:`MobilityModel` reports 0 for an absent node)."""
        i = self._segment(float(t_s))
        if i < 0 or i >= self.t_s.size - 1:
            return np.zeros(2)
        return (self.xy_m[i + 1] - self.xy_m[i]) / (self.t_s[i + 1] - self.t_s[i])

    def speed_mps(self, t_s: float) -> float:
        """Speed of the current segment (``|p[i+1] - p[i]| / (t[i+1] - t[i])``); 0 before the first
        sample and when holding (or gone) after the last."""
        return float(np.hypot(*self.velocity_mps(t_s)))

    def next_change_s(self, t_s: float) -> float:
        """Next sample time or activity start/stop strictly after ``t_s``; ``math.inf`` if none. (Under
        the ``"leave"`` policy the node is present at the last sample and gone just after it.)"""
        t = float(t_s)
        i = int(np.searchsorted(self.t_s, t, side="right"))
        nxt = float(self.t_s[i]) if i < self.t_s.size else math.inf
        if self.active_s is not None:
            nxt = min([nxt] + [e for iv in self.active_s for e in iv if e > t])
        return nxt

    def with_activity(self, active_s) -> "Trajectory":
        """A copy present only during the activity intervals ``active_s`` (see the class)."""
        return Trajectory(self.t_s, self.xy_m, self.end, active_s)

    def transformed(self, offset_m=(0.0, 0.0), scale: float = 1.0) -> "Trajectory":
        """A copy with positions ``scale * p + offset_m``."""
        return Trajectory(self.t_s, float(scale) * self.xy_m + np.asarray(offset_m, dtype=float), self.end,
                          self.active_s)


def _check_intervals(active_s) -> tuple[tuple[float, float], ...]:
    """``active_s`` as sorted, disjoint ``(start, stop)`` float pairs with ``start < stop``."""
    try:
        out = tuple((float(a), float(b)) for a, b in active_s)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"active_s must be a list of (start, stop) pairs in s, got {active_s!r}") from exc
    for i, (a, b) in enumerate(out):
        if not (math.isfinite(a) and a < b) or (i and a < out[i - 1][1]):
            raise ValueError(f"active_s must be sorted, disjoint (start, stop) pairs with finite "
                             f"start < stop, got {active_s!r}")
    return out
