"""Trajectories mapped to federated-learning clients (:class:`MobilityModel`)."""

from __future__ import annotations

import math

import numpy as np

from .common import END_POLICIES, _check_area, natural_key
from .trajectory import Trajectory


class MobilityModel:
    """A set of trajectories mapped to clients ``0 .. num_clients-1``.

    * ``client_ids``: client ``k`` follows ``trajectories[client_ids[k]]``; default: all trace ids in
      natural order (``"2"`` before ``"10"``).
    * positions are transformed ``p' = scale * p + offset_m`` (speeds scale by ``scale``).
    * ``end``: ``"hold"`` (default) or ``"leave"``, for trajectories that do not fix their own.
    * ``area = (xmin, ymin, xmax, ymax)`` in the transformed frame (edges included): outside it a node
      is out of coverage and :meth:`position` returns ``None``, which the simulator treats as
      "client unavailable" (as it does a node that has left).
    """

    def __init__(self, trajectories: dict[str, Trajectory], client_ids: list[str] | None = None,
                 offset_m=(0.0, 0.0), scale: float = 1.0, end: str = "hold",
                 area: tuple[float, float, float, float] | None = None):
        client_ids = _client_ids(trajectories, client_ids)
        offset, scale = _transform(offset_m, scale)
        if end not in END_POLICIES:
            raise ValueError(f"end must be one of {list(END_POLICIES)}, got {end!r}")
        self.client_ids: list[str] = list(client_ids)
        self.offset_m = offset
        self.scale = scale
        self.end = end
        self.area = None if area is None else _check_area(area)
        self._traj = [trajectories[c].transformed(offset, scale) for c in self.client_ids]

    @property
    def num_clients(self) -> int:
        return len(self._traj)

    def trajectory(self, client: int) -> Trajectory:
        """The (transformed) trajectory of ``client``."""
        return self._traj[self._index(client)]

    def _index(self, client) -> int:
        if isinstance(client, bool) or int(client) != client or not 0 <= client < len(self._traj):
            raise ValueError(f"client must be an integer in [0, {len(self._traj)}), got {client!r}")
        return int(client)

    def _inside(self, p: np.ndarray) -> bool:
        if self.area is None:
            return True
        xmin, ymin, xmax, ymax = self.area
        return bool(xmin <= p[0] <= xmax and ymin <= p[1] <= ymax)

    def position(self, client: int, t_s: float) -> np.ndarray | None:
        """Position of ``client`` at ``t_s`` in metres, or ``None`` when it has left (``"leave"``) or
        is outside ``area``."""
        p = self._traj[self._index(client)].position(t_s, self.end)
        if p is None or not self._inside(p):
            return None
        return p

    def available(self, client: int, t_s: float) -> bool:
        """``position(client, t_s) is not None``."""
        return self.position(client, t_s) is not None

    def positions(self, t_s: float) -> list[np.ndarray | None]:
        """Positions of all clients at ``t_s``."""
        return [self.position(k, t_s) for k in range(self.num_clients)]

    def speed_mps(self, client: int, t_s: float) -> float:
        """Speed of the client's current segment (transformed frame); 0 when holding or gone."""
        traj = self._traj[self._index(client)]
        if not traj.present(t_s, self.end):
            return 0.0
        return traj.speed_mps(t_s)

    def next_change_s(self, client: int, t_s: float) -> float:
        """Next time strictly after ``t_s`` at which the client's motion changes: its next sample, or,
        with an ``area``, the moment the current segment crosses the area edge (the client goes out
        of or comes back into coverage), whichever is first; ``math.inf`` if none."""
        traj = self._traj[self._index(client)]
        t = float(t_s)
        nxt = traj.next_change_s(t)
        if self.area is None or not math.isfinite(nxt):
            return nxt
        i = traj._segment(t)
        if i < 0:
            return nxt
        v = traj.velocity_mps(t)
        if not np.any(v):
            return nxt
        return min(_edge_crossings(self.area, float(traj.t_s[i]), traj.xy_m[i], v, t, nxt), default=nxt)


def _client_ids(trajectories, client_ids) -> list:
    """The trace ids clients follow (default: all, in natural order); every one must be in the trace."""
    if not isinstance(trajectories, dict) or not all(isinstance(v, Trajectory) for v in trajectories.values()):
        raise ValueError("trajectories must be a dict mapping id -> Trajectory")
    if client_ids is None:
        client_ids = sorted(trajectories, key=natural_key)
    client_ids = [str(c) if str(c) in trajectories else c for c in client_ids]
    missing = [c for c in client_ids if c not in trajectories]
    if missing:
        raise ValueError(f"client_ids {missing!r} not in the trace (ids: "
                         f"{sorted(trajectories, key=natural_key)[:10]!r}...)")
    return client_ids


def _transform(offset_m, scale) -> tuple[np.ndarray, float]:
    """The checked ``(offset, scale)`` of ``p' = scale * p + offset``."""
    offset = np.asarray(offset_m, dtype=float)
    if offset.shape != (2,) or not np.all(np.isfinite(offset)):
        raise ValueError(f"offset_m must be a finite (x, y) pair in metres, got {offset_m!r}")
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    return offset, scale


def _edge_crossings(area, t0: float, p0: np.ndarray, v: np.ndarray, t: float, nxt: float) -> list[float]:
    """Times in ``(t, nxt)`` at which the segment ``p0 + (time - t0) v`` crosses an edge of ``area``
    (at a point on the edge, corners included)."""
    xmin, ymin, xmax, ymax = area
    crossings = []
    for axis, lo, hi in ((0, xmin, xmax), (1, ymin, ymax)):
        if v[axis] == 0:
            continue
        olo, ohi = (ymin, ymax) if axis == 0 else (xmin, xmax)
        for edge in (lo, hi):
            tc = t0 + (edge - p0[axis]) / v[axis]
            if t < tc < nxt and olo <= p0[1 - axis] + (tc - t0) * v[1 - axis] <= ohi:
                crossings.append(tc)
    return crossings
