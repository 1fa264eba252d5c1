"""Reading a trace file of any supported format (:func:`load_trace`)."""

from __future__ import annotations

import os

from .common import MobilityError
from .csvtrace import read_csv_trace
from .fcd import read_sumo_fcd
from .ns2 import read_ns2_movements
from .trajectory import Trajectory

TRACE_FORMATS = ("sumo-fcd", "ns2", "csv")
_FORMAT_ALIASES = {"sumo-fcd": "sumo-fcd", "sumo": "sumo-fcd", "fcd": "sumo-fcd", "xml": "sumo-fcd",
                   "ns2": "ns2", "ns-2": "ns2", "tcl": "ns2", "movements": "ns2", "csv": "csv"}
_EXTENSIONS = {".xml": "sumo-fcd", ".ns2": "ns2", ".tcl": "ns2", ".movements": "ns2", ".csv": "csv"}


def load_trace(path, fmt: str | None = None, activity=None) -> dict[str, Trajectory]:
    """Read a trace file; ``fmt`` (``"sumo-fcd"``/``"fcd"``/``"xml"``, ``"ns2"``, ``"csv"``) wins when
    given, otherwise the extension decides: ``.xml`` -> SUMO FCD, ``.ns2``/``.tcl``/``.movements`` ->
    ns-2, ``.csv`` -> CSV. ``activity``: an ns-2 activity file, for an ns-2 trace only (see
    :func:`~pwffsim.net.mobility.ns2.read_ns2_movements`)."""
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
    if kind == "ns2":
        return read_ns2_movements(p, activity)
    if activity is not None:
        raise MobilityError(os.fspath(activity), None, f"an ns-2 activity file goes with an ns-2 movement trace; "
                                                       f"expected one, got a {kind} trace {p}")
    return (read_sumo_fcd if kind == "sumo-fcd" else read_csv_trace)(p)
