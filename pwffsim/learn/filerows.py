"""Rows of a JSON Lines data file read through a field mapping (``data.source = "jsonl"``).

One JSON object per line (blank lines skipped). Each :class:`~pwffsim.learn.data.Sample` field is read
from the JSON key the mapping names (``data.fields``; by default the key equal to the field's name):

* ``prompt``, ``response``: strings, required;
* ``answer``, ``rejected``: strings, optional (default ``""``);
* ``topic``: a string, optional (default :data:`~pwffsim.learn.jsonl.DEFAULT_TOPIC`);
* ``tags``: a string or a list of strings, optional (default none);
* ``client``: a string or an integer, required when ``required_client`` (the ``"by-field"`` split),
  else optional.

Unlike :func:`~pwffsim.learn.jsonl.load_jsonl_samples` nothing is combined: an Alpaca file is read by
mapping ``prompt`` to ``instruction`` and ``response`` to ``output`` (its ``input`` is not appended).
A malformed file raises one line ``ValueError("<path>:<line>: field '<field>' (JSON key '<key>'):
<what was expected>")`` (line 0: the file itself). Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .data import Sample
from .jsonl import DEFAULT_TOPIC, json_objects

__all__ = ["FIELD_NAMES", "FileRows", "ClientId", "client_sort_key", "field_map", "read_rows"]

#: The sample fields a JSONL file supplies, in order (``data.fields`` maps each to a JSON key).
FIELD_NAMES = ("prompt", "response", "answer", "rejected", "topic", "tags", "client")

#: A row's client id as the file gives it: a string or an integer.
ClientId = str | int


def field_map(fields: Mapping[str, str] | tuple[tuple[str, str], ...] | None = None) -> dict[str, str]:
    """Every field of :data:`FIELD_NAMES` -> its JSON key (the field's own name unless mapped)."""
    given = dict(fields or {})
    unknown = sorted(set(given) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(f"unknown data field(s) {unknown}; the fields are {list(FIELD_NAMES)}")
    for name, key in given.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"data field {name!r} must map to a non-empty JSON key, got {key!r}")
    return {name: given.get(name, name) for name in FIELD_NAMES}


def client_sort_key(cid: ClientId) -> tuple[int, int | str]:
    """Device order of client ids: integers in numeric order, then strings in code-point order."""
    return (0, cid) if isinstance(cid, int) else (1, cid)


@dataclass(frozen=True)
class FileRows:
    """A file's rows: ``samples[i]`` from line ``lines[i]``, its client id ``clients[i]`` (None: none)."""
    path: str
    samples: tuple[Sample, ...]
    clients: tuple[ClientId | None, ...]
    lines: tuple[int, ...]


class _Row:
    """One decoded line and how to name it in an error."""

    def __init__(self, obj: dict, where: str, keys: dict[str, str]):
        self.obj, self.where, self.keys = obj, where, keys

    def error(self, name: str, what: str) -> ValueError:
        return ValueError(f"{self.where}: field '{name}' (JSON key {self.keys[name]!r}): {what}")

    def text(self, name: str, required: bool, default: str = "") -> str:
        key = self.keys[name]
        if key not in self.obj:
            if required:
                raise self.error(name, "missing; expected a string")
            return default
        v = self.obj[key]
        if not isinstance(v, str):
            raise self.error(name, f"expected a string, got {type(v).__name__}")
        return v

    def tags(self) -> tuple[str, ...]:
        v = self.obj.get(self.keys["tags"], [])
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
            raise self.error("tags", f"expected a string or a list of strings, got {type(v).__name__}")
        return tuple(v)

    def client(self, required: bool) -> ClientId | None:
        key = self.keys["client"]
        if key not in self.obj:
            if required:
                raise self.error("client", "missing; expected a string or an integer (data.split 'by-field')")
            return None
        v = self.obj[key]
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise self.error("client", f"expected a string or an integer, got {type(v).__name__}")
        return v


def _sample(row: _Row) -> Sample:
    return Sample(topic=row.text("topic", False) or DEFAULT_TOPIC, prompt=row.text("prompt", True),
                  response=row.text("response", True), tags=row.tags(), answer=row.text("answer", False),
                  rejected=row.text("rejected", False))


def read_rows(path: str | Path, fields: Mapping[str, str] | None = None,
              required_client: bool = False) -> FileRows:
    """Every row of the JSONL file ``path`` through the mapping ``fields`` (see the module docstring)."""
    keys = field_map(fields)
    samples, clients, lines = [], [], []
    for i, where, obj in json_objects(path):
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        row = _Row(obj, where, keys)
        samples.append(_sample(row))
        clients.append(row.client(required_client))
        lines.append(i)
    return FileRows(str(path), tuple(samples), tuple(clients), tuple(lines))
