"""Device availability: clients going offline and online, from traces or always online.

Network side only: the standard library (no numpy needed, never torch).

Conventions
-----------
* A client is online during its *online intervals* ``[start, end)`` (seconds); they are sorted and
  merged (overlapping or touching intervals become one). A client absent from the intervals is
  always online when ``default_online`` (default) and always offline otherwise.
* ``period_s`` (one number for every client, or ``{client: period}``): the pattern repeats with that
  period, ``online(c, t) = online(c, t mod period)``, for traces shorter than the run. Intervals are
  then taken modulo the period (an interval crossing the period end wraps to its start; one at least
  a period long means always online).
* ``next_change_s(c, t)`` is the next time strictly after ``t`` at which the state flips
  (``math.inf`` if never); ``online_until_s(c, t)`` is the end of the current online interval
  (``math.inf`` if it never ends; ``t`` itself when the client is offline at ``t``).
* Readers raise :class:`AvailabilityError` (a ``ValueError``) whose message is one line,
  ``"{path}:{line}: {what was expected}"`` (``line`` is ``?`` when unknown).
"""
from __future__ import annotations

import bisect
import json
import math
import os
import re
from typing import Iterable, Optional, Union

from .mobility import MobilityError, natural_key, read_csv_records  # same errors, id order and CSV rules

__all__ = [
    "AvailabilityError",
    "Availability",
    "read_availability_csv",
    "read_fedscale_behaviour_json",
    "always_online",
]

Interval = tuple[float, float]


class AvailabilityError(MobilityError):
    """An availability trace cannot be read. ``str()`` is one line: ``"{path}:{line}: {what}"``
    (``line`` is ``"?"`` when unknown; ``"{path}: {what}"`` for a file that cannot be opened)."""


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sort and merge ``[start, end)`` intervals; empty ones are dropped."""
    iv = sorted((s, e) for s, e in intervals if e > s)
    out: list[list[float]] = []
    for s, e in iv:
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _wrap(intervals: list[Interval], period: float) -> list[Interval]:
    """Intervals folded into ``[0, period)`` and merged."""
    out: list[Interval] = []
    for s, e in intervals:
        if e - s >= period:
            return [(0.0, period)]
        s2 = s % period
        e2 = s2 + (e - s)
        if e2 <= period:
            out.append((s2, e2))
        else:
            out.append((s2, period))
            out.append((0.0, e2 - period))
    return _merge(out)


class _Client:
    """One client's merged intervals and the points where its state flips (within one period when
    periodic)."""

    __slots__ = ("intervals", "starts", "ends", "period", "changes")

    def __init__(self, intervals: list[Interval], period: Optional[float]):
        self.period = period
        self.intervals = _wrap(intervals, period) if period is not None else intervals
        self.starts = [s for s, _ in self.intervals]
        self.ends = [e for _, e in self.intervals]
        if period is None:
            pts = [p for iv in self.intervals for p in iv if math.isfinite(p)]
        else:
            pts = _periodic_changes(self.intervals, period)
        self.changes = sorted(set(pts))

    def online(self, t: float) -> bool:
        if self.period is not None:
            t = t % self.period
        i = bisect.bisect_right(self.starts, t) - 1
        return i >= 0 and t < self.ends[i]

    def next_change(self, t: float) -> float:
        if not self.changes:
            return math.inf
        if self.period is None:
            i = bisect.bisect_right(self.changes, t)
            return self.changes[i] if i < len(self.changes) else math.inf
        tau = t % self.period
        base = t - tau
        i = bisect.bisect_right(self.changes, tau)
        if i < len(self.changes):
            nxt = base + self.changes[i]
        else:
            nxt = base + self.period + self.changes[0]
        # guard against rounding in t - tau: the result must lie strictly after t
        while nxt <= t:
            nxt += self.period
        return nxt


def _periodic_changes(intervals: list[Interval], period: float) -> list[float]:
    """Where the state of merged ``intervals`` folded into ``[0, period)`` flips, within one period."""
    pts = []
    for s, e in intervals:
        if s > 0.0:
            pts.append(s)
        if e < period:
            pts.append(e)
    # at the period boundary the state flips iff exactly one of "an interval starts at 0"
    # and "an interval ends at the period" holds
    at0 = bool(intervals) and intervals[0][0] == 0.0
    atp = bool(intervals) and intervals[-1][1] == period
    if at0 != atp:
        pts.append(0.0)
    return pts


def _check_period(p, what: str) -> float:
    try:
        v = float(p)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a positive finite number of seconds, got {p!r}") from exc
    if not (v > 0.0 and math.isfinite(v)):
        raise ValueError(f"{what} must be a positive finite number of seconds, got {p!r}")
    return v


class Availability:
    """Which clients are online when.

    ``intervals``: ``{client: [(start_s, end_s), ...]}`` online intervals ``[start, end)``
    (``start <= end``; ``start`` may be ``-inf`` and ``end`` ``inf``); sorted and merged here.
    ``default_online``: the state of clients absent from ``intervals``. ``period_s``: the pattern
    repeats with this period (a number, or ``{client: period}``; clients missing from the dict do
    not repeat). ``names``: optional ``{client: original id in the trace}``.
    """

    def __init__(self, intervals: dict[int, list[Interval]], default_online: bool = True,
                 period_s: Union[float, dict[int, float], None] = None,
                 names: Optional[dict[int, str]] = None):
        if not isinstance(intervals, dict):
            raise ValueError(f"intervals must be a dict {{client: [(start_s, end_s), ...]}}, "
                             f"got {type(intervals).__name__}")
        self.period_s, periods = _periods(period_s, intervals)
        self.default_online = bool(default_online)
        self.names = dict(names) if names else {}
        self._clients: dict[int, _Client] = {}
        for c, ivs in intervals.items():
            if isinstance(c, bool) or int(c) != c:
                raise ValueError(f"client ids must be integers, got {c!r}")
            c = int(c)
            self._clients[c] = _Client(_merge(_clean_interval(c, iv) for iv in ivs), periods.get(c))

    # ----------------------------------------------------------------------------------------------
    @property
    def clients(self) -> list[int]:
        """Clients with explicit intervals, sorted."""
        return sorted(self._clients)

    def intervals(self, client: int) -> list[Interval]:
        """The client's merged online intervals (folded into one period when periodic); ``None`` for a
        client without explicit intervals."""
        cl = self._clients.get(client)
        return None if cl is None else list(cl.intervals)

    def online(self, client: int, t_s: float) -> bool:
        cl = self._clients.get(client)
        if cl is None:
            return self.default_online
        return cl.online(float(t_s))

    def next_change_s(self, client: int, t_s: float) -> float:
        """Next time strictly after ``t_s`` at which the client's state flips (``math.inf`` if never)."""
        cl = self._clients.get(client)
        if cl is None:
            return math.inf
        return cl.next_change(float(t_s))

    def online_until_s(self, client: int, t_s: float) -> float:
        """End of the online interval containing ``t_s`` (``math.inf`` if it never ends); ``t_s``
        itself if the client is offline at ``t_s``."""
        if not self.online(client, t_s):
            return float(t_s)
        return self.next_change_s(client, t_s)

    def online_clients(self, clients: Iterable[int], t_s: float) -> list[int]:
        """The given clients that are online at ``t_s``, sorted."""
        return sorted(c for c in clients if self.online(c, t_s))

    def __repr__(self) -> str:
        return (f"Availability({len(self._clients)} clients with intervals, "
                f"default_online={self.default_online}, period_s={self.period_s})")


def _periods(period_s, intervals: dict) -> tuple[Union[float, dict[int, float], None], dict[int, float]]:
    """``period_s`` as stored (checked) and the period of each client that repeats."""
    if isinstance(period_s, dict):
        periods = {int(c): _check_period(p, f"period_s[{c}]") for c, p in period_s.items()}
        return dict(periods), periods
    if period_s is not None:
        p = _check_period(period_s, "period_s")
        return p, {int(c): p for c in intervals}
    return None, {}


def _clean_interval(c: int, iv) -> Interval:
    """Client ``c``'s interval ``iv`` as a checked ``(start_s, end_s)`` pair of floats."""
    try:
        s, e = (float(v) for v in iv)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"client {c}: an interval must be (start_s, end_s), got {iv!r}") from exc
    if math.isnan(s) or math.isnan(e) or s == math.inf or e == -math.inf:
        raise ValueError(f"client {c}: interval ({s}, {e}) must not be NaN or empty at infinity")
    if e < s:
        raise ValueError(f"client {c}: interval end {e} s must not be before its start {s} s")
    return s, e


def always_online(n: int) -> Availability:
    """Clients ``0..n-1`` (and any other) always online."""
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    return Availability({i: [(-math.inf, math.inf)] for i in range(int(n))}, default_online=True)


# --------------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------------
def _read_text(path) -> str:
    try:
        with open(path, "r", encoding="utf-8", newline="") as fh:
            return fh.read()
    except OSError as exc:
        raise AvailabilityError(path, None, f"cannot open availability trace: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise AvailabilityError(path, "?", f"expected UTF-8 text: {exc.reason}") from exc


def _float(path, line, text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise AvailabilityError(path, line, f"expected a number for {what}, got {text!r}") from None
    if math.isnan(v):
        raise AvailabilityError(path, line, f"expected a number for {what}, got {text!r}")
    return v


_COLUMNS = ("client", "start_s", "end_s")


def read_availability_csv(path, client_map: Optional[dict[str, int]] = None,
                          period_s: Optional[float] = None, default_online: bool = True) -> Availability:
    """Read online intervals from a CSV with header ``client,start_s,end_s`` (columns in any order,
    extra columns ignored; blank lines and lines starting with ``#`` skipped; rows in any order;
    ``end_s`` may be ``inf``). Overlapping rows of one client are merged.

    Client ids: with ``client_map`` each id is looked up there; otherwise, if every id is an
    integer, those integers; otherwise ids map to ``0..n-1`` in natural order (``"dev2" < "dev10"``).
    ``period_s`` and ``default_online`` go to :class:`Availability`.

    Raises :class:`AvailabilityError` with the line for an empty file, a header missing a column,
    a short row, an empty id, a non-numeric value, an end before its start, or an id missing from
    ``client_map``.
    """
    p = os.fspath(path)
    text = _read_text(p)
    records, _ = read_csv_records(text.splitlines(), p, _COLUMNS, "client", "client id", AvailabilityError)
    rows: list[tuple[str, float, float, int]] = []
    for lineno, rec in records:
        cid = rec["client"]
        s = _float(p, lineno, rec["start_s"], "start_s")
        e = _float(p, lineno, rec["end_s"], "end_s")
        if not math.isfinite(s):
            raise AvailabilityError(p, lineno, f"expected a finite start_s, got {s}")
        if e < s:
            raise AvailabilityError(p, lineno, f"expected end_s >= start_s, got start_s={s:g} end_s={e:g}")
        if client_map is not None and cid not in client_map:
            raise AvailabilityError(p, lineno, f"expected a client id listed in client_map, got {cid!r}")
        rows.append((cid, s, e, lineno))
    mapping = _client_numbers(sorted({r[0] for r in rows}, key=natural_key), client_map)
    intervals: dict[int, list[Interval]] = {}
    names: dict[int, str] = {}
    for cid, s, e, _ in rows:
        intervals.setdefault(mapping[cid], []).append((s, e))
        names[mapping[cid]] = cid
    return Availability(intervals, default_online=default_online, period_s=period_s, names=names)


def _client_numbers(ids: list[str], client_map: Optional[dict[str, int]]) -> dict[str, int]:
    """Trace id -> client: through ``client_map``; else the ids themselves if all are integers; else
    ``0..n-1`` in the order of ``ids``."""
    if client_map is not None:
        return {cid: int(client_map[cid]) for cid in ids}
    if all(re.fullmatch(r"[+-]?\d+", cid) for cid in ids):
        return {cid: int(cid) for cid in ids}
    return {cid: i for i, cid in enumerate(ids)}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_fedscale_behaviour_json(path) -> Availability:
    """Read FedScale's client behaviour trace (``client_behave_trace``, normally a pickle; here the
    same dict stored as JSON, never unpickled)::

        {"<client_id>": {"active": [t0, t2, ...], "inactive": [t1, t3, ...], "finish_time": T,
                         "duration": ..., "model": ...}, ...}

    A client is online from ``active[i]`` to ``inactive[i]`` (an ``active`` without a matching
    ``inactive``: online until ``finish_time``), and its pattern repeats every ``finish_time``
    (FedScale takes the time modulo ``finish_time``). Other keys are ignored. Client ids map to
    ``0..n-1`` in natural order of the keys; ``Availability.names`` keeps the keys.

    Raises :class:`AvailabilityError`: invalid JSON with the decoder's line, structural errors
    (not an object, ``active``/``inactive`` not lists of numbers, a missing or non-positive
    ``finish_time``, more ``inactive`` than ``active`` entries, ``inactive[i] < active[i]``) with
    line ``?``.
    """
    p = os.fspath(path)
    text = _read_text(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AvailabilityError(p, exc.lineno, f"expected valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(data, dict) or not data:
        raise AvailabilityError(p, "?", "expected a non-empty JSON object {client_id: {active, inactive, "
                                        "finish_time}}")
    keys = sorted(data, key=natural_key)
    intervals: dict[int, list[Interval]] = {}
    periods: dict[int, float] = {}
    names: dict[int, str] = {}
    for i, key in enumerate(keys):
        intervals[i], periods[i] = _fedscale_client(p, f"client {key!r}", data[key])
        names[i] = str(key)
    return Availability(intervals, default_online=True, period_s=periods, names=names)


def _fedscale_client(p: str, where: str, rec) -> tuple[list[Interval], float]:
    """One client's online intervals and period (its ``finish_time``) from its FedScale record."""
    if not isinstance(rec, dict):
        raise AvailabilityError(p, "?", f"{where}: expected an object with active, inactive, finish_time")
    for name in ("active", "inactive"):
        v = rec.get(name)
        if not isinstance(v, list):
            raise AvailabilityError(p, "?", f"{where}: expected {name!r} to be a list of times in s, "
                                            f"got {type(v).__name__ if name in rec else 'nothing'}")
        if not all(_is_number(x) for x in v):
            raise AvailabilityError(p, "?", f"{where}: expected {name!r} to hold finite numbers")
    fin = rec.get("finish_time")
    if not (_is_number(fin) and fin > 0):
        raise AvailabilityError(p, "?", f"{where}: expected a positive number finish_time, got {fin!r}")
    act, ina = rec["active"], rec["inactive"]
    if len(ina) > len(act):
        raise AvailabilityError(p, "?", f"{where}: expected at most as many inactive ({len(ina)}) "
                                        f"as active ({len(act)}) times")
    ivs: list[Interval] = []
    for j, a in enumerate(act):
        e = float(ina[j]) if j < len(ina) else float(fin)
        if e < a:
            raise AvailabilityError(p, "?", f"{where}: expected inactive[{j}] >= active[{j}], "
                                            f"got {e:g} < {a:g}")
        ivs.append((float(a), e))
    return ivs, float(fin)
