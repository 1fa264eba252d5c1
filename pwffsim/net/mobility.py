"""Node mobility: trajectories read from real traces (SUMO FCD, ns-2 setdest, CSV) or drawn from
synthetic models (random waypoint, Gauss-Markov), mapped to federated-learning clients.

Network side only: numpy and the standard library (never torch).

Conventions
-----------
* Positions are metres, as ``(x, y)``; times are seconds (``_s``); speeds m/s (``_mps``).
* A :class:`Trajectory` is piecewise linear between its samples. Before its first sample a node is
  at its first position; after its last one the *end policy* decides: ``"hold"`` (stays at the last
  position) or ``"leave"`` (``position`` returns ``None``: the node has left the scenario).
* :class:`MobilityModel` maps client ``k`` to one trajectory, transforms positions
  ``p' = scale * p + offset`` and, with an ``area``, reports a node outside it as out of coverage
  (``None``). The simulator treats ``None`` as "client unavailable".
* ``next_change_s`` gives the next time at which the piecewise-linear motion changes (a sample
  time, or the moment the node crosses the coverage-area edge): the simulator re-evaluates the
  channel there.
* Readers raise :class:`MobilityError` (a ``ValueError``) whose message is one line,
  ``"{path}:{line}: {what was expected}"``.
* Random models take a ``numpy.random.Generator``; nothing here touches a global random state.
"""

from __future__ import annotations

import csv
import math
import os
import re
import xml.parsers.expat
import numpy as np

__all__ = [
    "END_POLICIES",
    "MobilityError",
    "Trajectory",
    "MobilityModel",
    "natural_key",
    "read_sumo_fcd",
    "read_ns2_movements",
    "read_csv_trace",
    "load_trace",
    "static_positions",
    "random_waypoint",
    "gauss_markov",
    "straight_line",
]

END_POLICIES = ("hold", "leave")
TRACE_FORMATS = ("sumo-fcd", "ns2", "csv")
_FORMAT_ALIASES = {"sumo-fcd": "sumo-fcd", "sumo": "sumo-fcd", "fcd": "sumo-fcd", "xml": "sumo-fcd",
                   "ns2": "ns2", "ns-2": "ns2", "tcl": "ns2", "movements": "ns2", "csv": "csv"}
_EXTENSIONS = {".xml": "sumo-fcd", ".ns2": "ns2", ".tcl": "ns2", ".movements": "ns2", ".csv": "csv"}
# FCD elements that carry one node's sample inside a <timestep>.
_FCD_NODE_TAGS = ("vehicle", "person", "container")
# Relative tolerance used when merging ns-2 samples that fall on the same instant.
_TIME_EPS_S = 1e-9


# --------------------------------------------------------------------------------------------------
# errors and helpers
# --------------------------------------------------------------------------------------------------
class MobilityError(ValueError):
    """A trace file cannot be read. ``str()`` is one line: ``"{path}:{line}: {what}"`` (``line`` is
    ``"?"`` when unknown; for a file that cannot be opened the form is ``"{path}: {what}"``)."""

    def __init__(self, path, line, what: str):
        self.path = str(path)
        self.line = line
        self.what = " ".join(str(what).split())
        where = self.path if line is None else f"{self.path}:{'?' if line == '?' else line}"
        super().__init__(f"{where}: {self.what}")


def natural_key(s: str) -> tuple:
    """Sort key putting embedded numbers in numeric order: ``"2" < "10"``, ``"veh2" < "veh10"``."""
    parts = re.split(r"(\d+)", str(s))
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in parts if p != "")


def _check_end(end: str | None, name: str = "end") -> None:
    if end is not None and end not in END_POLICIES:
        raise ValueError(f"{name} must be one of {list(END_POLICIES)}, got {end!r}")


def _check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def _check_n(n) -> int:
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    return int(n)


def _check_area(area) -> tuple[float, float, float, float]:
    try:
        a = tuple(float(v) for v in area)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"area must be (xmin, ymin, xmax, ymax) in metres, got {area!r}") from exc
    if len(a) != 4 or not all(math.isfinite(v) for v in a) or a[2] <= a[0] or a[3] <= a[1]:
        raise ValueError(f"area must be finite (xmin, ymin, xmax, ymax) with xmax > xmin and "
                         f"ymax > ymin, in metres, got {area!r}")
    return a  # type: ignore[return-value]


def _start_positions(rng, n: int, area, start_positions) -> np.ndarray:
    xmin, ymin, xmax, ymax = area
    if start_positions is None:
        return np.column_stack((rng.uniform(xmin, xmax, n), rng.uniform(ymin, ymax, n)))
    p = np.asarray(start_positions, dtype=float)
    if p.shape != (n, 2) or not np.all(np.isfinite(p)):
        raise ValueError(f"start_positions must be a finite ({n}, 2) array in metres, got shape {p.shape}")
    if np.any(p[:, 0] < xmin) or np.any(p[:, 0] > xmax) or np.any(p[:, 1] < ymin) or np.any(p[:, 1] > ymax):
        raise ValueError(f"start_positions must lie inside area {area}")
    return p


# --------------------------------------------------------------------------------------------------
# Trajectory
# --------------------------------------------------------------------------------------------------
class Trajectory:
    """One node's piecewise-linear path: strictly increasing sample times ``t_s`` (shape ``(n,)``)
    and positions ``xy_m`` (shape ``(n, 2)``), ``n >= 1``.

    ``end`` fixes this trajectory's end policy (``"hold"`` or ``"leave"``); when ``None`` (default)
    the policy passed to :meth:`position` applies, and ``"hold"`` if none is passed. A policy fixed
    here wins (``static_positions`` fixes ``"hold"``, so a static node never "leaves").
    """

    __slots__ = ("t_s", "xy_m", "end")

    def __init__(self, t_s, xy_m, end: str | None = None):
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
        """False only after the last sample under the ``"leave"`` policy."""
        return not (self._policy(end) == "leave" and float(t_s) > self.t_s[-1])

    def position(self, t_s: float, end: str | None = None) -> np.ndarray | None:
        """Position at ``t_s`` (a new ``(2,)`` array), linearly interpolated between samples; the first
        position before the first sample; after the last sample the last position (``"hold"``) or
        ``None`` (``"leave"``)."""
        t = float(t_s)
        if math.isnan(t):
            raise ValueError("t_s must not be NaN")
        if not self.present(t, end):
            return None
        i = self._segment(t)
        if i < 0:
            return self.xy_m[0].copy()
        if i >= self.t_s.size - 1:
            return self.xy_m[-1].copy()
        t0, t1 = self.t_s[i], self.t_s[i + 1]
        w = (t - t0) / (t1 - t0)
        return self.xy_m[i] + w * (self.xy_m[i + 1] - self.xy_m[i])

    def velocity_mps(self, t_s: float) -> np.ndarray:
        """Velocity vector of the current segment; zero before the first and from the last sample on."""
        i = self._segment(float(t_s))
        if i < 0 or i >= self.t_s.size - 1:
            return np.zeros(2)
        return (self.xy_m[i + 1] - self.xy_m[i]) / (self.t_s[i + 1] - self.t_s[i])

    def speed_mps(self, t_s: float) -> float:
        """Speed of the current segment (``|p[i+1] - p[i]| / (t[i+1] - t[i])``); 0 before the first
        sample and when holding (or gone) after the last."""
        return float(np.hypot(*self.velocity_mps(t_s)))

    def next_change_s(self, t_s: float) -> float:
        """Next sample time strictly after ``t_s``; ``math.inf`` from the last sample on. (Under the
        ``"leave"`` policy the node is present at the last sample and gone just after it.)"""
        i = int(np.searchsorted(self.t_s, float(t_s), side="right"))
        return float(self.t_s[i]) if i < self.t_s.size else math.inf

    def transformed(self, offset_m=(0.0, 0.0), scale: float = 1.0) -> "Trajectory":
        """A copy with positions ``scale * p + offset_m``."""
        return Trajectory(self.t_s, float(scale) * self.xy_m + np.asarray(offset_m, dtype=float), self.end)


# --------------------------------------------------------------------------------------------------
# MobilityModel
# --------------------------------------------------------------------------------------------------
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
        if not isinstance(trajectories, dict) or not all(isinstance(v, Trajectory) for v in trajectories.values()):
            raise ValueError("trajectories must be a dict mapping id -> Trajectory")
        if client_ids is None:
            client_ids = sorted(trajectories, key=natural_key)
        client_ids = [str(c) if str(c) in trajectories else c for c in client_ids]
        missing = [c for c in client_ids if c not in trajectories]
        if missing:
            raise ValueError(f"client_ids {missing!r} not in the trace (ids: "
                             f"{sorted(trajectories, key=natural_key)[:10]!r}...)")
        offset = np.asarray(offset_m, dtype=float)
        if offset.shape != (2,) or not np.all(np.isfinite(offset)):
            raise ValueError(f"offset_m must be a finite (x, y) pair in metres, got {offset_m!r}")
        scale = float(scale)
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
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
        t0 = float(traj.t_s[i])
        p0 = traj.xy_m[i]
        xmin, ymin, xmax, ymax = self.area
        crossings = []
        for axis, lo, hi in ((0, xmin, xmax), (1, ymin, ymax)):
            if v[axis] != 0:
                for edge in (lo, hi):
                    tc = t0 + (edge - p0[axis]) / v[axis]
                    if t < tc < nxt:
                        other = p0[1 - axis] + (tc - t0) * v[1 - axis]
                        olo, ohi = (ymin, ymax) if axis == 0 else (xmin, xmax)
                        if olo <= other <= ohi:
                            crossings.append(tc)
        return min(crossings, default=nxt)


# --------------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------------
def _open_text(path):
    try:
        return open(path, "r", encoding="utf-8", newline="")
    except OSError as exc:
        raise MobilityError(path, None, f"cannot open trace file: {exc.strerror or exc}") from None


def read_csv_records(lines, path, columns: tuple[str, ...], id_column: str, id_label: str,
                     error: type[MobilityError] = MobilityError) -> tuple[list[tuple[int, dict[str, str]]], int]:
    """The rows of a CSV trace with a header naming ``columns`` (any order, case-insensitive, extra
    columns ignored; blank lines and lines starting with ``#`` skipped), as ``(line, {column: text})``
    with the texts stripped, and the number of the last line read.  Raises ``error`` with the line for
    an empty file, a header missing a column, a short row or an empty ``id_column``."""
    reader = csv.reader(lines)
    header = None
    col: dict[str, int] = {}
    records: list[tuple[int, dict[str, str]]] = []
    for row in reader:
        lineno = reader.line_num
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [c.strip().lower() for c in row]
            missing = [c for c in columns if c not in header]
            if missing:
                raise error(path, lineno, f"expected a header with columns {','.join(columns)}; "
                                          f"missing {','.join(missing)} in {','.join(header)!r}")
            col = {c: header.index(c) for c in columns}
            continue
        if len(row) < len(header):
            raise error(path, lineno, f"expected {len(header)} fields ({','.join(header)}), got {len(row)}")
        rec = {c: row[i].strip() for c, i in col.items()}
        if not rec[id_column]:
            raise error(path, lineno, f"expected a non-empty {id_label}")
        records.append((lineno, rec))
    if header is None:
        raise error(path, 1, f"expected a header line '{','.join(columns)}' (empty file)")
    return records, reader.line_num


def _float(path, line, value, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise MobilityError(path, line, f"expected a number for {what}, got {value!r}") from None
    if not math.isfinite(x):
        raise MobilityError(path, line, f"expected a finite number for {what}, got {value!r}")
    return x


def _build(samples: dict[str, tuple[list[float], list[tuple[float, float]]]]) -> dict[str, Trajectory]:
    return {nid: Trajectory(ts, xy) for nid, (ts, xy) in sorted(samples.items(), key=lambda kv: natural_key(kv[0]))}


def read_sumo_fcd(path) -> dict[str, Trajectory]:
    """Read a SUMO floating-car-data file (``sumo --fcd-output``, written with
    ``--fcd-output.geo false`` so ``x``/``y`` are metres)::

        <fcd-export>
          <timestep time="0.00">
            <vehicle id="veh0" x="..." y="..." speed="..." .../>
            <person id="p0" x="..." y="..." .../>
          </timestep>
        </fcd-export>

    ``<vehicle>``, ``<person>`` and ``<container>`` samples become one trajectory per ``id`` (a
    person and a vehicle sharing an id would be merged: SUMO ids are unique per scenario). A node
    missing from a timestep is interpolated across the gap. Returns ``{id: Trajectory}``.

    Raises :class:`MobilityError` (with the element's line) for malformed XML, a root that is not
    ``<fcd-export>``, a missing or non-numeric ``time``/``id``/``x``/``y``, a node sample outside a
    ``<timestep>``, a node whose times are not increasing, or a file without any sample.
    """
    samples: dict[str, tuple[list[float], list[tuple[float, float]]]] = {}
    state = {"depth": 0, "time": None, "root": False}
    parser = xml.parsers.expat.ParserCreate()

    def start(tag, attrs):
        line = parser.CurrentLineNumber
        depth = state["depth"]
        state["depth"] = depth + 1
        if depth == 0:
            if tag != "fcd-export":
                raise MobilityError(path, line, f"expected root element <fcd-export>, got <{tag}>")
            state["root"] = True
            return
        if tag == "timestep":
            if depth != 1:
                raise MobilityError(path, line, "expected <timestep> directly inside <fcd-export>")
            if "time" not in attrs:
                raise MobilityError(path, line, "expected a 'time' attribute on <timestep>")
            state["time"] = _float(path, line, attrs["time"], "<timestep time>")
            return
        if tag in _FCD_NODE_TAGS:
            if depth != 2 or state["time"] is None:
                raise MobilityError(path, line, f"expected <{tag}> inside a <timestep>")
            for key in ("id", "x", "y"):
                if key not in attrs:
                    raise MobilityError(path, line, f"expected a '{key}' attribute on <{tag}>")
            nid = attrs["id"]
            x = _float(path, line, attrs["x"], f"<{tag} x> of {nid!r}")
            y = _float(path, line, attrs["y"], f"<{tag} y> of {nid!r}")
            t = state["time"]
            ts, xy = samples.setdefault(nid, ([], []))
            if ts and t <= ts[-1]:
                raise MobilityError(path, line, f"expected increasing times for node {nid!r}: "
                                                f"t={t:g} s after t={ts[-1]:g} s")
            ts.append(t)
            xy.append((x, y))
        # any other element (e.g. nested extensions) is ignored

    def end(tag):
        state["depth"] -= 1
        if tag == "timestep" and state["depth"] == 1:
            state["time"] = None

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        with open(path, "rb") as fh:
            parser.ParseFile(fh)
    except OSError as exc:
        raise MobilityError(path, None, f"cannot open trace file: {exc.strerror or exc}") from None
    except xml.parsers.expat.ExpatError as exc:
        raise MobilityError(path, exc.lineno, f"expected well-formed SUMO FCD XML: "
                                              f"{xml.parsers.expat.ErrorString(exc.code)}") from None
    if not samples:
        raise MobilityError(path, parser.CurrentLineNumber or "?",
                            "expected at least one <vehicle>/<person> sample in <timestep> elements")
    return _build(samples)


_NS2_SET = re.compile(r"^\$node_\(\s*([^)\s]+)\s*\)\s+set\s+([XYZ])_\s+(\S+)$")
_NS2_AT = re.compile(r'^\$ns_\s+at\s+(\S+)\s+"(.*)"$')
_NS2_SETDEST = re.compile(r"^\$node_\(\s*([^)\s]+)\s*\)\s+setdest\s+(\S+)\s+(\S+)\s+(\S+)$")
_NS2_GOD = re.compile(r"^\$god_\s")


def read_ns2_movements(path) -> dict[str, Trajectory]:
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

    Raises :class:`MobilityError` with the line for any other line shape, a non-numeric or negative
    value, a node with a ``setdest`` but no initial ``X_``/``Y_``, or a file without any node.
    """
    init: dict[str, dict[str, float]] = {}
    first_line: dict[str, int] = {}
    cmds: dict[str, list[tuple[float, int, float, float, float]]] = {}
    with _open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#") or _NS2_GOD.match(line):
                continue
            m = _NS2_SET.match(line)
            if m:
                nid, coord, val = m.groups()
                init.setdefault(nid, {})[coord] = _float(path, lineno, val, f"$node_({nid}) {coord}_")
                first_line.setdefault(nid, lineno)
                continue
            m = _NS2_AT.match(line)
            if m:
                t = _float(path, lineno, m.group(1), "the time of '$ns_ at'")
                if t < 0:
                    raise MobilityError(path, lineno, f"expected a time >= 0 s, got {m.group(1)!r}")
                inner = m.group(2).strip()
                if _NS2_GOD.match(inner):
                    continue
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
                cmds.setdefault(nid, []).append((t, lineno, x, y, v))
                first_line.setdefault(nid, lineno)
                continue
            raise MobilityError(path, lineno, "expected '$node_(ID) set X_|Y_|Z_ VALUE' or "
                                              f"'$ns_ at TIME \"$node_(ID) setdest X Y SPEED\"', got {line!r}")
    nodes = set(init) | set(cmds)
    if not nodes:
        raise MobilityError(path, 1, "expected at least one '$node_(ID) set X_ ...' line (empty movement file)")
    out: dict[str, Trajectory] = {}
    for nid in sorted(nodes, key=natural_key):
        pos = init.get(nid, {})
        if "X" not in pos or "Y" not in pos:
            missing = [c + "_" for c in "XY" if c not in pos]
            raise MobilityError(path, first_line[nid], f"expected initial '$node_({nid}) set "
                                                       f"{missing[0]} VALUE' for node {nid!r}")
        ts = [0.0]
        xy = [np.array([pos["X"], pos["Y"]])]
        # current movement: start time, start point, destination, speed
        cur = (0.0, xy[0], xy[0], 0.0)
        for t, _, x, y, v in sorted(cmds.get(nid, []), key=lambda c: (c[0], c[1])):
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
        out[nid] = _dedupe(ts, xy)
    return out


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


def read_csv_trace(path) -> dict[str, Trajectory]:
    """Read a CSV trace with header ``t,id,x,y`` (``t`` in s, ``x``/``y`` in m; the columns may come
    in any order, extra columns are ignored) and rows in any order. Ids are strings. Returns
    ``{id: Trajectory}``.

    Raises :class:`MobilityError` with the line for an empty file, a header missing a column, a row
    with a missing or non-numeric value, or two rows for the same id and time.
    """
    rows: dict[str, list[tuple[float, int, float, float]]] = {}
    with _open_text(path) as fh:
        records, last_line = read_csv_records(fh, path, ("t", "id", "x", "y"), "id", "id")
    for lineno, rec in records:
        t = _float(path, lineno, rec["t"], "t")
        x = _float(path, lineno, rec["x"], "x")
        y = _float(path, lineno, rec["y"], "y")
        rows.setdefault(rec["id"], []).append((t, lineno, x, y))
    if not rows:
        raise MobilityError(path, last_line or 1, "expected at least one data row after the header")
    out: dict[str, Trajectory] = {}
    for nid in sorted(rows, key=natural_key):
        r = sorted(rows[nid])
        for a, b in zip(r, r[1:]):
            if a[0] == b[0]:
                raise MobilityError(path, max(a[1], b[1]), f"expected one row per id and time: "
                                                           f"id {nid!r} at t={a[0]:g} s also on line {min(a[1], b[1])}")
        out[nid] = Trajectory([s[0] for s in r], [(s[2], s[3]) for s in r])
    return out


def load_trace(path, fmt: str | None = None) -> dict[str, Trajectory]:
    """Read a trace file; ``fmt`` (``"sumo-fcd"``/``"fcd"``/``"xml"``, ``"ns2"``, ``"csv"``) wins when
    given, otherwise the extension decides: ``.xml`` -> SUMO FCD, ``.ns2``/``.tcl``/``.movements`` ->
    ns-2, ``.csv`` -> CSV."""
    p = os.fspath(path)
    if fmt is not None:
        kind = _FORMAT_ALIASES.get(str(fmt).lower())
        if kind is None:
            raise ValueError(f"fmt must be one of {sorted(_FORMAT_ALIASES)}, got {fmt!r}")
    else:
        kind = _EXTENSIONS.get(os.path.splitext(p)[1].lower())
        if kind is None:
            if not os.path.exists(p):
                raise MobilityError(p, None, "cannot open trace file: No such file or directory")
            raise MobilityError(p, None, f"cannot tell the trace format from the extension; expected one of "
                                         f"{sorted(_EXTENSIONS)} or fmt in {list(TRACE_FORMATS)}")
    reader = {"sumo-fcd": read_sumo_fcd, "ns2": read_ns2_movements, "csv": read_csv_trace}[kind]
    return reader(p)


# --------------------------------------------------------------------------------------------------
# synthetic mobility
# --------------------------------------------------------------------------------------------------
def static_positions(positions: np.ndarray) -> dict[str, Trajectory]:
    """Fixed nodes: ``{"0": ..., "1": ...}``, one single-sample trajectory per row of the ``(n, 2)``
    array (end policy fixed to ``"hold"``: a static node never leaves)."""
    p = np.asarray(positions, dtype=float)
    if p.ndim != 2 or p.shape[1] != 2 or not np.all(np.isfinite(p)):
        raise ValueError(f"positions must be a finite (n, 2) array in metres, got shape {p.shape}")
    return {str(i): Trajectory([0.0], p[i:i + 1], end="hold") for i in range(p.shape[0])}


def straight_line(start_xy, end_xy, speed_mps: float, t0_s: float = 0.0) -> Trajectory:
    """Constant-speed straight movement from ``start_xy`` (at ``t0_s``) to ``end_xy``."""
    a = np.asarray(start_xy, dtype=float)
    b = np.asarray(end_xy, dtype=float)
    if a.shape != (2,) or b.shape != (2,) or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError(f"start_xy and end_xy must be finite (x, y) pairs, got {start_xy!r}, {end_xy!r}")
    v = float(speed_mps)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"speed_mps must be a finite speed > 0 m/s, got {speed_mps!r}")
    t0 = float(t0_s)
    d = float(np.hypot(*(b - a)))
    if d == 0.0:
        return Trajectory([t0], [a])
    return Trajectory([t0, t0 + d / v], [a, b])


def random_waypoint(rng: np.random.Generator, n: int, area, speed_range_mps=(1.0, 15.0),
                    pause_s=(0.0, 5.0), duration_s: float = 600.0,
                    start_positions=None) -> dict[str, Trajectory]:
    """Random waypoint model (Johnson & Maltz 1996; Camp, Boleng & Davies 2002, sec. 2.1): each node
    repeatedly picks a destination uniform in ``area = (xmin, ymin, xmax, ymax)`` and a speed uniform
    in ``speed_range_mps``, travels there in a straight line, then pauses for a time uniform in
    ``pause_s``; sampled until ``duration_s`` (the last leg is cut there). Returns ``{"0": ...}``.
    """
    _check_rng(rng)
    n = _check_n(n)
    area = _check_area(area)
    vmin, vmax = (float(v) for v in speed_range_mps)
    if not (math.isfinite(vmax) and 0 < vmin <= vmax):
        raise ValueError(f"speed_range_mps must be (vmin, vmax) with 0 < vmin <= vmax, got {speed_range_mps!r}")
    pmin, pmax = (float(v) for v in pause_s)
    if not (math.isfinite(pmax) and 0 <= pmin <= pmax):
        raise ValueError(f"pause_s must be (min, max) with 0 <= min <= max, got {pause_s!r}")
    duration = float(duration_s)
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration_s must be finite and > 0, got {duration_s!r}")
    xmin, ymin, xmax, ymax = area
    starts = _start_positions(rng, n, area, start_positions)
    out = {}
    for k in range(n):
        t = 0.0
        p = starts[k].copy()
        ts, xy = [0.0], [p.copy()]
        while t < duration:
            dest = np.array([rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)])
            v = rng.uniform(vmin, vmax)
            d = float(np.hypot(*(dest - p)))
            t_arrive = t + d / v
            if t_arrive >= duration:
                xy.append(p + (dest - p) * ((duration - t) / (t_arrive - t)))
                ts.append(duration)
                break
            if t_arrive > t:
                ts.append(t_arrive)
                xy.append(dest.copy())
            t, p = t_arrive, dest
            pause = rng.uniform(pmin, pmax)
            if pause > 0:
                t_end = min(t + pause, duration)
                ts.append(t_end)
                xy.append(p.copy())
                t = t_end
        out[str(k)] = Trajectory(ts, xy)
    return out


def gauss_markov(rng: np.random.Generator, n: int, area, mean_speed_mps: float = 5.0, alpha: float = 0.75,
                 step_s: float = 1.0, duration_s: float = 600.0, start_positions=None,
                 speed_std_mps: float | None = None, direction_std_rad: float = math.pi / 4) -> dict[str, Trajectory]:
    """Gauss-Markov mobility (Liang & Haas, INFOCOM 1999; as described in Camp et al. 2002, sec. 2.6).

    Every ``step_s`` the speed and direction are updated as
    ``s_n = alpha s_{n-1} + (1 - alpha) s_mean + sqrt(1 - alpha^2) N(0, sigma_s^2)`` and
    ``d_n = alpha d_{n-1} + (1 - alpha) d_mean + sqrt(1 - alpha^2) N(0, sigma_d^2)``, so the stationary
    speed is ``N(s_mean, sigma_s^2)`` (clipped at 0). ``sigma_s`` defaults to ``mean_speed_mps / 4``
    and ``sigma_d`` to pi/4; ``d_mean`` is uniform per node, the initial speed is ``s_mean`` and the
    initial direction uniform. The node moves in a straight line at ``(s, d)`` during each step and
    is reflected (specularly) at the edges of ``area``, with an extra sample at every bounce so the
    path stays exact; the mean direction is mirrored too, so memory does not push the node back into
    the edge. Returns ``{"0": ...}``.
    """
    _check_rng(rng)
    n = _check_n(n)
    area = _check_area(area)
    s_mean = float(mean_speed_mps)
    if not math.isfinite(s_mean) or s_mean < 0:
        raise ValueError(f"mean_speed_mps must be finite and >= 0, got {mean_speed_mps!r}")
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    step = float(step_s)
    duration = float(duration_s)
    if not (math.isfinite(step) and step > 0 and math.isfinite(duration) and duration > 0):
        raise ValueError(f"step_s and duration_s must be finite and > 0, got {step_s!r}, {duration_s!r}")
    sig_s = s_mean / 4.0 if speed_std_mps is None else float(speed_std_mps)
    sig_d = float(direction_std_rad)
    if sig_s < 0 or sig_d < 0:
        raise ValueError("speed_std_mps and direction_std_rad must be >= 0")
    xmin, ymin, xmax, ymax = area
    lo = np.array([xmin, ymin])
    hi = np.array([xmax, ymax])
    starts = _start_positions(rng, n, area, start_positions)
    root = math.sqrt(1.0 - a * a)
    n_steps = int(math.ceil(duration / step - 1e-9))
    out = {}
    for k in range(n):
        p = starts[k].copy()
        d_mean = rng.uniform(0.0, 2.0 * math.pi)
        s, d = s_mean, rng.uniform(0.0, 2.0 * math.pi)
        ts, xy = [0.0], [p.copy()]
        t = 0.0
        for _ in range(n_steps):
            dt = min(step, duration - t)
            vel = max(s, 0.0) * np.array([math.cos(d), math.sin(d)])
            remaining = dt
            while remaining > 0:
                # time to the first edge hit along the current velocity
                tau = math.inf
                hit = np.zeros(2, dtype=bool)
                for ax in (0, 1):
                    if vel[ax] > 0:
                        tc = (hi[ax] - p[ax]) / vel[ax]
                    elif vel[ax] < 0:
                        tc = (lo[ax] - p[ax]) / vel[ax]
                    else:
                        continue
                    if tc < tau - 1e-12:
                        tau, hit = tc, np.array([ax == 0, ax == 1])
                    elif abs(tc - tau) <= 1e-12:
                        hit[ax] = True
                if tau >= remaining:
                    p = p + vel * remaining
                    t += remaining
                    remaining = 0.0
                else:
                    tau = max(tau, 0.0)
                    p = p + vel * tau
                    t += tau
                    remaining -= tau
                    vel = np.where(hit, -vel, vel)
                    if tau > 0 and t > ts[-1]:
                        ts.append(t)
                        xy.append(np.clip(p, lo, hi))
                    # mirror the heading (and the mean heading) like the velocity
                    if hit[0]:
                        d, d_mean = math.pi - d, math.pi - d_mean
                    if hit[1]:
                        d, d_mean = -d, -d_mean
                p = np.clip(p, lo, hi)
            if t > ts[-1]:
                ts.append(t)
                xy.append(p.copy())
            s = a * s + (1.0 - a) * s_mean + root * rng.normal(0.0, sig_s) if sig_s > 0 else a * s + (1.0 - a) * s_mean
            d = a * d + (1.0 - a) * d_mean + root * rng.normal(0.0, sig_d) if sig_d > 0 else a * d + (1.0 - a) * d_mean
        out[str(k)] = Trajectory(ts, xy)
    return out
