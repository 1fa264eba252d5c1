"""SUMO floating-car-data (FCD) XML reader."""

from __future__ import annotations

import xml.parsers.expat

from .common import MobilityError
from .records import _build, _float
from .trajectory import Trajectory

# FCD elements that carry one node's sample inside a <timestep>.
_FCD_NODE_TAGS = ("vehicle", "person", "container")


class _FcdHandler:
    """expat callbacks collecting ``{id: (times, positions)}`` from one FCD file."""

    def __init__(self, path, parser):
        self.path = path
        self.parser = parser
        self.samples: dict[str, tuple[list[float], list[tuple[float, float]]]] = {}
        self.depth = 0
        self.time: float | None = None

    def start(self, tag, attrs):
        line = self.parser.CurrentLineNumber
        depth = self.depth
        self.depth = depth + 1
        if depth == 0:
            if tag != "fcd-export":
                raise MobilityError(self.path, line, f"expected root element <fcd-export>, got <{tag}>")
        elif tag == "timestep":
            self._timestep(line, depth, attrs)
        elif tag in _FCD_NODE_TAGS:
            self._node(line, depth, tag, attrs)
        # any other element (e.g. nested extensions) is ignored

    def _timestep(self, line: int, depth: int, attrs) -> None:
        if depth != 1:
            raise MobilityError(self.path, line, "expected <timestep> directly inside <fcd-export>")
        if "time" not in attrs:
            raise MobilityError(self.path, line, "expected a 'time' attribute on <timestep>")
        self.time = _float(self.path, line, attrs["time"], "<timestep time>")

    def _node(self, line: int, depth: int, tag: str, attrs) -> None:
        path = self.path
        if depth != 2 or self.time is None:
            raise MobilityError(path, line, f"expected <{tag}> inside a <timestep>")
        for key in ("id", "x", "y"):
            if key not in attrs:
                raise MobilityError(path, line, f"expected a '{key}' attribute on <{tag}>")
        nid = attrs["id"]
        x = _float(path, line, attrs["x"], f"<{tag} x> of {nid!r}")
        y = _float(path, line, attrs["y"], f"<{tag} y> of {nid!r}")
        t = self.time
        ts, xy = self.samples.setdefault(nid, ([], []))
        if ts and t <= ts[-1]:
            raise MobilityError(path, line, f"expected increasing times for node {nid!r}: "
                                            f"t={t:g} s after t={ts[-1]:g} s")
        ts.append(t)
        xy.append((x, y))

    def end(self, tag):
        self.depth -= 1
        if tag == "timestep" and self.depth == 1:
            self.time = None


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
    parser = xml.parsers.expat.ParserCreate()
    handler = _FcdHandler(path, parser)
    parser.StartElementHandler = handler.start
    parser.EndElementHandler = handler.end
    try:
        with open(path, "rb") as fh:
            parser.ParseFile(fh)
    except OSError as exc:
        raise MobilityError(path, None, f"cannot open trace file: {exc.strerror or exc}") from None
    except xml.parsers.expat.ExpatError as exc:
        raise MobilityError(path, exc.lineno, f"expected well-formed SUMO FCD XML: "
                                              f"{xml.parsers.expat.ErrorString(exc.code)}") from None
    if not handler.samples:
        raise MobilityError(path, parser.CurrentLineNumber or "?",
                            "expected at least one <vehicle>/<person> sample in <timestep> elements")
    return _build(handler.samples)
