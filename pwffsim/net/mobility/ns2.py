"""ns-2 movement-file (``setdest``) reader."""

from __future__ import annotations

import math
import re

import numpy as np

from .common import MobilityError, natural_key
from .ns2activity import apply_activity
from .records import _float, _open_text
from .trajectory import Trajectory

# Relative tolerance used when merging ns-2 samples that fall on the same instant.
_TIME_EPS_S = 1e-9

_NS2_SET = re.compile(r"^\$node_\(\s*([^)\s]+)\s*\)\s+set\s+([XYZ])_\s+(\S+)$")
_NS2_AT = re.compile(r'^\$ns_\s+at\s+(\S+)\s+"(.*)"$')
_NS2_SETDEST = re.compile(r"^\$node_\(\s*([^)\s]+)\s*\)\s+setdest\s+(\S+)\s+(\S+)\s+(\S+)$")
_NS2_GOD = re.compile(r"^\$god_\s")


def read_ns2_movements(path, activity=None) -> dict[str, Trajectory]:
    """Read an ns-2 movement file (the format of CMU ``setdest``, BonnMotion and SUMO's
    ``traceExporter.py --ns2mobility``)::

        $node_(0) set X_ 10.0
        $node_(0) set Y_ 20.0
        $node_(0) set Z_ 0.0
        $ns_ at 2.0 "$node_(0) setdest 100.0 200.0 5.0"

    A node starts (t = 0) at its ``X_``/``Y_``; ``setdest X Y v`` at time ``t`` moves it from where
    it is at ``t`` towards ``(X, Y)`` in a straight line at ``v`` m/s until it arrives; a later
    ``setdest`` interrupts an unfinished movement at the node's position at that time. ``v = 0``
    stops the node where it is. Commands are applied in time order (file order for equal times).
    ``Z_`` is checked but ignored. ``#`` comments, blank lines and ``$god_`` lines (CMU setdest's
    connectivity hints) are skipped. Returns ``{node id: Trajectory}`` (ids as written, e.g. "0").

    ``activity``: an ns-2 activity file (``$ns_ at T "$g(ID) start|stop"``, see
    :func:`~pwffsim.net.mobility.ns2activity.read_ns2_activity`); a node it names is present only
    between its ``start`` and ``stop``.

    Raises :class:`MobilityError` with the line for any other line shape, a non-numeric or negative
    value, a node with a ``setdest`` but no initial ``X_``/``Y_``, or a file without any node.
    """
    movements = _Ns2File(path)
    with _open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            movements.read_line(lineno, raw.strip())
    nodes = set(movements.init) | set(movements.cmds)
    if not nodes:
        raise MobilityError(path, 1, "expected at least one '$node_(ID) set X_ ...' line (empty movement file)")
    trajectories = {nid: movements.trajectory(nid) for nid in sorted(nodes, key=natural_key)}
    return trajectories if activity is None else apply_activity(trajectories, activity, path)


class _Ns2File:
    """The initial positions and ``setdest`` commands of one movement file, by node id."""

    def __init__(self, path):
        self.path = path
        self.init: dict[str, dict[str, float]] = {}
        self.first_line: dict[str, int] = {}
        self.cmds: dict[str, list[tuple[float, int, float, float, float]]] = {}

    def read_line(self, lineno: int, line: str) -> None:
        if not line or line.startswith("#") or _NS2_GOD.match(line):
            return
        m = _NS2_SET.match(line)
        if m:
            nid, coord, val = m.groups()
            self.init.setdefault(nid, {})[coord] = _float(self.path, lineno, val, f"$node_({nid}) {coord}_")
            self.first_line.setdefault(nid, lineno)
            return
        m = _NS2_AT.match(line)
        if m:
            self._at(lineno, m)
            return
        raise MobilityError(self.path, lineno, "expected '$node_(ID) set X_|Y_|Z_ VALUE' or "
                                               f"'$ns_ at TIME \"$node_(ID) setdest X Y SPEED\"', got {line!r}")

    def _at(self, lineno: int, m: re.Match) -> None:
        path = self.path
        t = _float(path, lineno, m.group(1), "the time of '$ns_ at'")
        if t < 0:
            raise MobilityError(path, lineno, f"expected a time >= 0 s, got {m.group(1)!r}")
        inner = m.group(2).strip()
        if _NS2_GOD.match(inner):
            return
        d = _NS2_SETDEST.match(inner)
        if not d:
            raise MobilityError(path, lineno, f"expected '$node_(ID) setdest X Y SPEED' inside "
                                              f"'$ns_ at', got {inner!r}")
        nid = d.group(1)
        x = _float(path, lineno, d.group(2), "setdest X")
        y = _float(path, lineno, d.group(3), "setdest Y")
        v = _float(path, lineno, d.group(4), "setdest speed")
        if v < 0:
            raise MobilityError(path, lineno, f"expected a setdest speed >= 0 m/s, got {d.group(4)!r}")
        self.cmds.setdefault(nid, []).append((t, lineno, x, y, v))
        self.first_line.setdefault(nid, lineno)

    def trajectory(self, nid: str) -> Trajectory:
        """Node ``nid``'s path: its start, then the samples its ``setdest`` commands produce."""
        pos = self.init.get(nid, {})
        if "X" not in pos or "Y" not in pos:
            missing = [c + "_" for c in "XY" if c not in pos]
            raise MobilityError(self.path, self.first_line[nid], f"expected initial '$node_({nid}) set "
                                                                 f"{missing[0]} VALUE' for node {nid!r}")
        ts = [0.0]
        xy = [np.array([pos["X"], pos["Y"]])]
        # current movement: start time, start point, destination, speed
        cur = (0.0, xy[0], xy[0], 0.0)
        for t, _, x, y, v in sorted(self.cmds.get(nid, []), key=lambda c: (c[0], c[1])):
            t0, p0, dest, speed = cur
            here = _ns2_position(t, t0, p0, dest, speed)
            # close the previous movement: arrival sample (if it arrived before t) and a sample at t
            arrive = _ns2_arrival(t0, p0, dest, speed)
            if arrive < t and arrive > ts[-1] + _TIME_EPS_S:
                ts.append(arrive)
                xy.append(dest.copy())
            _append_sample(ts, xy, t, here)
            cur = (t, here, np.array([x, y]), v)
        t0, p0, dest, speed = cur
        arrive = _ns2_arrival(t0, p0, dest, speed)
        if math.isfinite(arrive) and arrive > ts[-1] + _TIME_EPS_S:
            ts.append(arrive)
            xy.append(dest.copy())
        return _dedupe(ts, xy)


def _ns2_arrival(t0: float, p0: np.ndarray, dest: np.ndarray, speed: float) -> float:
    d = float(np.hypot(*(dest - p0)))
    if d == 0.0:
        return t0
    if speed <= 0:
        return math.inf
    return t0 + d / speed


def _ns2_position(t: float, t0: float, p0: np.ndarray, dest: np.ndarray, speed: float) -> np.ndarray:
    d = float(np.hypot(*(dest - p0)))
    if d == 0.0 or speed <= 0:
        return p0.copy()
    travelled = min(d, speed * (t - t0))
    return p0 + (dest - p0) * (travelled / d)


def _append_sample(ts: list, xy: list, t: float, p: np.ndarray) -> None:
    if t <= ts[-1] + _TIME_EPS_S:
        # same instant as the previous sample (e.g. two commands at once): the later one wins
        xy[-1] = p.copy()
    else:
        ts.append(t)
        xy.append(p.copy())


def _dedupe(ts: list, xy: list) -> Trajectory:
    """Drop interior samples of constant position (keeps first/last of every pause) — no effect on
    the motion, only on ``next_change_s`` reporting fewer redundant change points."""
    t = np.asarray(ts, dtype=float)
    p = np.asarray(xy, dtype=float).reshape(-1, 2)
    if t.size > 2:
        same_prev = np.r_[False, np.all(p[1:] == p[:-1], axis=1)]
        same_next = np.r_[np.all(p[1:] == p[:-1], axis=1), False]
        keep = ~(same_prev & same_next)
        keep[-1] = True
        t, p = t[keep], p[keep]
    return Trajectory(t, p)
