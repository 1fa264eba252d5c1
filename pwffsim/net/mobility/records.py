"""Text-trace plumbing shared by the readers (and by :mod:`pwffsim.net.availability`): opening a
file, the CSV row reader, number parsing with the line in the error, and building trajectories."""

from __future__ import annotations

import csv
import math

from .common import MobilityError, natural_key
from .trajectory import Trajectory


def _open_text(path):
    try:
        return open(path, "r", encoding="utf-8", newline="")
    except OSError as exc:
        raise MobilityError(path, None, f"cannot open trace file: {exc.strerror or exc}") from None


def _skipped(row: list[str]) -> bool:
    """A blank CSV line or one starting with ``#``."""
    return not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#")


def _header_columns(row: list[str], lineno: int, path, columns: tuple[str, ...],
                    error: type[MobilityError]) -> tuple[list[str], dict[str, int]]:
    """The header's column names and the index of each wanted column; ``error`` if one is missing."""
    header = [c.strip().lower() for c in row]
    missing = [c for c in columns if c not in header]
    if missing:
        raise error(path, lineno, f"expected a header with columns {','.join(columns)}; "
                                  f"missing {','.join(missing)} in {','.join(header)!r}")
    return header, {c: header.index(c) for c in columns}


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
        if _skipped(row):
            continue
        if header is None:
            header, col = _header_columns(row, lineno, path, columns, error)
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
