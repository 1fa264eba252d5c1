"""CSV trace reader (``t,id,x,y``)."""

from __future__ import annotations

from .common import MobilityError, natural_key
from .records import _float, _open_text, read_csv_records
from .trajectory import Trajectory


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
