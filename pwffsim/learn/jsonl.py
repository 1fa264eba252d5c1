"""Local instruction / preference data from JSON Lines files, and a non-IID split among clients.

One JSON object per line (blank lines are skipped), in any of these shapes:

* Alpaca: ``{"instruction": str, "input"?: str, "output": str}`` -> ``prompt = instruction`` (plus
  ``"\\n" + input`` when ``input`` is non-empty), ``response = output``;
* preference pair: ``{"prompt": str, "chosen": str, "rejected": str}`` -> ``response = chosen``,
  ``rejected = rejected``;
* plain: ``{"prompt": str, "response": str}``.

Optional keys on every shape: ``"topic"`` (str, default ``"default"``), ``"tags"`` (list of str,
e.g. ``["unsafe"]``) and ``"answer"`` (str: the helpful answer if it is not the response).

A malformed file raises ``ValueError("<path>:<line>: <what was expected>")``.

A scenario selects file data with ``data.source = "jsonl"``: that reads rows through an explicit field
mapping (:mod:`pwffsim.learn.filerows`) and splits them per client lazily (:mod:`pwffsim.learn.filedata`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import Sample

__all__ = ["load_jsonl_samples", "parse_record", "split_among_clients", "DEFAULT_TOPIC"]

DEFAULT_TOPIC = "default"

_SHAPES = ("expected an Alpaca record {'instruction', 'output', 'input'?}, a preference pair "
           "{'prompt', 'chosen', 'rejected'} or {'prompt', 'response'}")


def _str_field(obj: dict, key: str, where: str, required: bool = True) -> str:
    if key not in obj:
        if required:
            raise ValueError(f"{where}: missing key {key!r}; {_SHAPES}")
        return ""
    v = obj[key]
    if not isinstance(v, str):
        raise ValueError(f"{where}: key {key!r} must be a string, got {type(v).__name__}")
    return v


def parse_record(obj, where: str = "<record>") -> Sample:
    """One decoded JSON record -> :class:`Sample`; ``where`` prefixes error messages."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "instruction" in obj:
        instruction = _str_field(obj, "instruction", where)
        extra = _str_field(obj, "input", where, required=False)
        prompt = f"{instruction}\n{extra}" if extra.strip() else instruction
        response = _str_field(obj, "output", where)
        rejected = _str_field(obj, "rejected", where, required=False)
    elif "prompt" in obj:
        prompt = _str_field(obj, "prompt", where)
        if "chosen" in obj or "rejected" in obj:
            response = _str_field(obj, "chosen", where)
            rejected = _str_field(obj, "rejected", where)
        else:
            response = _str_field(obj, "response", where)
            rejected = ""
    else:
        raise ValueError(f"{where}: no 'instruction' or 'prompt' key; {_SHAPES}")
    topic = _str_field(obj, "topic", where, required=False) or DEFAULT_TOPIC
    tags = obj.get("tags", [])
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError(f"{where}: key 'tags' must be a list of strings")
    answer = _str_field(obj, "answer", where, required=False)
    return Sample(topic=topic, prompt=prompt, response=response, tags=tuple(tags),
                  answer=answer, rejected=rejected)


def json_objects(path) -> list[tuple[int, str, object]]:
    """``(line number, "path:line", parsed value)`` of every non-blank line of the JSON Lines file
    ``path``; one-line ``ValueError`` naming the file (and line) if it cannot be read, a line is not
    JSON or there is no line at all."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}:0: cannot read the file as UTF-8 JSON Lines ({e.__class__.__name__}: "
                         f"{getattr(e, 'strerror', None) or e})") from None
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            out.append((i, where, json.loads(line)))
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno}); "
                             "expected one JSON object per line") from None
    if not out:
        raise ValueError(f"{path}:1: empty file; expected one JSON object per line")
    return out


def load_jsonl_samples(path) -> list[Sample]:
    """Read a JSON Lines file of Alpaca records or preference pairs (see the module docstring)."""
    return [parse_record(obj, where) for _, where, obj in json_objects(path)]


def _client_shares(rng: np.random.Generator, num_clients: int, alpha: float) -> np.ndarray:
    """One topic's client shares ``~ Dirichlet(alpha * 1)``, normalised; if the draw degenerates
    (underflow at tiny ``alpha``), the whole topic goes to one random client."""
    w = rng.dirichlet(np.full(num_clients, alpha))
    if not np.all(np.isfinite(w)) or w.sum() <= 0:
        w = np.zeros(num_clients)
        w[int(rng.integers(num_clients))] = 1.0
    return w / w.sum()


def _fill_empty_clients(groups: list[list[int]], rng: np.random.Generator) -> None:
    """Give each empty client (in client order) one random sample index of the largest client."""
    for c in range(len(groups)):
        if not groups[c]:
            big = max(range(len(groups)), key=lambda k: len(groups[k]))
            groups[c].append(groups[big].pop(int(rng.integers(len(groups[big])))))


def split_among_clients(samples: Sequence[Sample], num_clients: int, alpha: float,
                        seed: int = 0) -> list[list[Sample]]:
    """Non-IID partition by topic: for each topic (in order of first appearance), client shares
    ``~ Dirichlet(alpha * 1)`` and that topic's samples are dealt out in those proportions (a
    seeded shuffle, then contiguous slices). Every sample goes to exactly one client; if there
    are at least ``num_clients`` samples, an empty client then takes one sample from the largest.
    Small ``alpha`` -> each topic concentrated on few clients; large ``alpha`` -> near IID.
    Deterministic from ``seed``; each client's list keeps the input order."""
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if not (alpha > 0 and np.isfinite(alpha)):
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5B17]))
    by_topic: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_topic.setdefault(s.topic, []).append(i)
    owner = np.empty(len(samples), dtype=np.int64)
    for idx in by_topic.values():
        w = _client_shares(rng, num_clients, alpha)
        perm = np.asarray(idx)[rng.permutation(len(idx))]
        cuts = np.round(np.cumsum(w)[:-1] * len(idx)).astype(int)
        for c, part in enumerate(np.split(perm, cuts)):
            owner[part] = c
    groups: list[list[int]] = [[] for _ in range(num_clients)]
    for i in range(len(samples)):
        groups[int(owner[i])].append(i)
    if len(samples) >= num_clients:
        _fill_empty_clients(groups, rng)
    return [[samples[i] for i in sorted(g)] for g in groups]
