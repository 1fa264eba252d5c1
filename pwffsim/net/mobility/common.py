"""Shared pieces of the mobility package: the one-line file error, the natural id order and the
argument checks used by trajectories, models and the synthetic generators."""

from __future__ import annotations

import math
import re

import numpy as np

END_POLICIES = ("hold", "leave")


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
