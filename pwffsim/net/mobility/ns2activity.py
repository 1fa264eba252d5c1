"""ns-2 activity-file reader: when each node exists (``start`` / ``stop``)."""

from __future__ import annotations

import math
import re

from .common import MobilityError, natural_key
from .records import _float, _open_text
from .trajectory import Trajectory

# $ns_ at TIME "$g(ID) start|stop", optionally followed by "; # comment" (SUMO adds "; # SUMO-ID: ...")
_ACTIVITY = re.compile(r'^\$ns_\s+at\s+(\S+)\s+"\s*\$g\(\s*([^)\s]+)\s*\)\s+(\S+)\s*"\s*(?:;.*)?$')
_EXPECTED = "expected '$ns_ at TIME \"$g(ID) start|stop\"'"


def read_ns2_activity(path, nodes=None, movements=None) -> dict[str, list[tuple[float, float]]]:
    """Read an ns-2 activity file (SUMO's ``traceExporter.py --ns2activity-output``)::

        $ns_ at 30.0 "$g(r1#2) start"; # SUMO-ID: r1#2
        $ns_ at 115.0 "$g(r1#2) stop"; # SUMO-ID: r1#2

    ``$g(ID)`` names the node ``$node_(ID)`` of the movement file (SUMO's running index, or the SUMO
    id with ``--orig-ids``). A node is present from each ``start`` until the next ``stop`` of it
    (``[start, stop)``; a ``start`` without a ``stop`` lasts for ever; a ``start`` and ``stop`` at
    the same time give no interval). Lines apply in time order (file order for equal times); ``#``
    comments and blank lines are skipped. Returns ``{node id: [(start_s, stop_s), ...]}``.

    ``nodes``: the ids of the movement file ``movements``; a ``$g(ID)`` not among them is an error.
    Raises :class:`MobilityError` with the line for any other line shape, a non-numeric or negative
    time, an unknown node, a ``stop`` without a ``start`` or a ``start`` while started.
    """
    events: dict[str, list[tuple[float, int, str]]] = {}
    with _open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if line and not line.startswith("#"):
                nid, ev = _event(path, lineno, line, nodes, movements)
                events.setdefault(nid, []).append(ev)
    return {nid: _intervals(path, nid, evs) for nid, evs in sorted(events.items(), key=lambda kv: natural_key(kv[0]))}


def _event(path, lineno: int, line: str, nodes, movements) -> tuple[str, tuple[float, int, str]]:
    m = _ACTIVITY.match(line)
    if not m or m.group(3) not in ("start", "stop"):
        raise MobilityError(path, lineno, f"{_EXPECTED}, got {line!r}")
    t = _float(path, lineno, m.group(1), "the time of '$ns_ at'")
    if t < 0:
        raise MobilityError(path, lineno, f"expected a time >= 0 s, got {m.group(1)!r}")
    nid = m.group(2)
    if nodes is not None and nid not in nodes:
        raise MobilityError(path, lineno, f"expected $g(ID) to name a node of {movements}, got {nid!r}")
    return nid, (t, lineno, m.group(3))


def _intervals(path, nid: str, events: list[tuple[float, int, str]]) -> list[tuple[float, float]]:
    """The ``[start, stop)`` intervals of one node from its start/stop events."""
    out: list[tuple[float, float]] = []
    started = None
    for t, lineno, what in sorted(events, key=lambda e: (e[0], e[1])):
        if what == "start":
            if started is not None:
                raise MobilityError(path, lineno, f"expected a 'stop' of node {nid!r} before its next 'start'; "
                                                  f"got a 'start' of node {nid!r} at t={t:g} s after the one at "
                                                  f"t={started:g} s")
            started = t
        else:
            if started is None:
                raise MobilityError(path, lineno, f"expected a 'start' of node {nid!r} before its 'stop' at "
                                                  f"t={t:g} s (a stop without a 'start')")
            if t > started:
                out.append((started, t))
            started = None
    if started is not None:
        out.append((started, math.inf))
    return out


def apply_activity(trajectories: dict[str, Trajectory], activity_path, movements_path) -> dict[str, Trajectory]:
    """The trajectories with the activity intervals of ``activity_path`` (nodes it does not name
    keep theirs: present from their first sample)."""
    active = read_ns2_activity(activity_path, set(trajectories), movements_path)
    return {nid: tr.with_activity(active[nid]) if nid in active else tr for nid, tr in trajectories.items()}
