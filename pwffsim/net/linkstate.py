"""Where every device is and what every device x cell link looks like at a simulated instant.

:class:`SampledPositions` gives a device's position at the last sampling instant at or before ``t``
(``mobility.sample_step_s``; static devices never move).  :class:`LinkState` gives, for each
(device, cell, direction), the large-scale gain at that position (path loss, LOS state, shadowing, from
a :class:`~pwffsim.net.links.LinkBudget`) times the block fading ``|h|^2``, and the next instant either
can change (a fading block boundary or the next position sample).  Every random part comes from its
own stream keyed by device and cell, so the realisation never depends on the order of queries.

The orchestrator asks; nothing here knows about rounds or training.  Never imports torch.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np

from .channel import BlockFading, coherence_time_s, db_to_linear

_GAIN_CACHE_MAX = 100_000  # cached large-scale gains before the cache is cleared (memory bound)


class SampledPositions:
    """Positions of the devices, sampled every ``step_s`` from a mobility model (None: static)."""

    def __init__(self, static_m: np.ndarray, mobility=None, step_s: float = 1.0):
        self.static_m = static_m
        self.mobility = mobility
        self.step_s = float(step_s)

    @property
    def moving(self) -> bool:
        return self.mobility is not None

    def sample_index(self, t: float) -> int:
        return int(math.floor(t / self.step_s + 1e-9)) if self.moving else 0

    def position(self, k: int, t: float) -> Optional[np.ndarray]:
        """Position (m) at the last sample time at or before ``t`` (None: out of coverage / left)."""
        if self.mobility is None:
            return self.static_m[k]
        return self.mobility.position(k, self.sample_index(t) * self.step_s)

    def available(self, k: int, t: float) -> bool:
        return self.position(k, t) is not None

    def next_change_s(self, k: int, t: float) -> float:
        """The next sampling instant after ``t`` (inf for static devices)."""
        if self.mobility is None:
            return math.inf
        return (self.sample_index(t) + 1) * self.step_s

    def mean_speed_mps(self, k: int) -> float:
        """Path length over duration of device ``k``'s trajectory (0 if static or a single sample)."""
        if self.mobility is None:
            return 0.0
        traj = self.mobility.trajectory(k)
        if len(traj.t_s) < 2 or traj.t_s[-1] <= traj.t_s[0]:
            return 0.0
        dist = float(np.sum(np.hypot(*np.diff(traj.xy_m, axis=0).T)))
        return dist / float(traj.t_s[-1] - traj.t_s[0])


def coherence_times_s(positions: SampledPositions, n_devices: int, carrier_hz: float, default_s: float,
                      from_speed: bool) -> Sequence[float]:
    """Each device's fading coherence time (s): from its mean speed and the carrier (Clarke's
    0.423 / f_D, see :func:`~pwffsim.net.channel.coherence_time_s`) when ``from_speed`` and it moves,
    else ``default_s``.  Static devices (or ``from_speed`` off): one array, no per-device loop."""
    if not (from_speed and positions.moving):
        return np.full(n_devices, float(default_s))
    out = []
    for k in range(n_devices):
        v = positions.mean_speed_mps(k)
        out.append(coherence_time_s(v, carrier_hz) if v > 0 else default_s)
    return out


class LinkState:
    """Linear channel gain of every (device, cell, direction) link at a simulated instant.

    ``fading_rng(direction, device, cell)`` returns the link's own fading stream.
    """

    def __init__(self, budget, positions: SampledPositions, fading: str, rician_k_db: float,
                 coherence_s: Sequence[float], fading_rng: Callable[[str, int, int], np.random.Generator]):
        self.budget = budget
        self.positions = positions
        self.fading_kind = fading
        self.rician_k_db = rician_k_db
        self.coherence_s = coherence_s
        self._fading_rng = fading_rng
        self._gain_cache: dict[tuple[int, int, int], float] = {}
        self._fading: dict[tuple[int, int, str], BlockFading] = {}

    def large_scale_gain(self, k: int, cell: int, t: float) -> float:
        """Path loss x LOS x shadowing (linear) at the position sampled at ``t`` (0 out of coverage)."""
        key = (k, cell, self.positions.sample_index(t))
        g = self._gain_cache.get(key)
        if g is None:
            if len(self._gain_cache) > _GAIN_CACHE_MAX:
                self._gain_cache.clear()
            g = float(db_to_linear(self.budget.gain_db(k, cell, self.positions.position(k, t))))
            self._gain_cache[key] = g
        return g

    def fading(self, k: int, cell: int, direction: str) -> BlockFading:
        """The block-fading process of one link and direction (``"ul"`` or ``"dl"``), made on first use."""
        key = (k, cell, direction)
        f = self._fading.get(key)
        if f is None:
            f = BlockFading(self.fading_kind, float(self.coherence_s[k]), self._fading_rng(direction, k, cell),
                            self.rician_k_db)
            self._fading[key] = f
        return f

    def gain(self, k: int, cell: int, direction: str, t: float) -> float:
        """Linear gain at ``t``: large-scale x block fading."""
        return self.large_scale_gain(k, cell, t) * self.fading(k, cell, direction).gain(t)

    def next_change_s(self, k: int, cell: int, direction: str, t: float) -> float:
        """The next instant after ``t`` at which this link's gain may change."""
        return min(self.fading(k, cell, direction).next_boundary_s(t), self.positions.next_change_s(k, t))


class LinkView:
    """One direction of one device's link to whatever cell serves it at the time of the query: what a
    band reads (:class:`~pwffsim.net.transfer.Transfer`'s ``link``).  ``serving_cell()`` names the cell
    (it changes at a handover)."""

    __slots__ = ("links", "k", "direction", "serving_cell")

    def __init__(self, links: LinkState, k: int, direction: str, serving_cell: Callable[[], int]):
        self.links, self.k, self.direction, self.serving_cell = links, k, direction, serving_cell

    def large_scale(self, t: float) -> tuple[float, float]:
        """(large-scale gain at ``t``, the instant it may next change: the next position sample)."""
        links = self.links
        return links.large_scale_gain(self.k, self.serving_cell(), t), links.positions.next_change_s(self.k, t)

    def fading(self) -> BlockFading:
        return self.links.fading(self.k, self.serving_cell(), self.direction)

    def gain(self, t: float) -> float:
        """The whole gain at ``t`` (what ``LinkState.gain`` says)."""
        return self.links.gain(self.k, self.serving_cell(), self.direction, t)
