"""Clients' data from JSON Lines files (``data.source = "jsonl"``): the spec, the file indexed once,
and each client's rows made on demand from the client's own seed streams.

The training file (``train_path``) is read once per spec (:func:`file_index`, cached) through the
field mapping (:mod:`pwffsim.learn.filerows`). Held-out data come from ``eval_path`` if given, else
from a held-out share ``eval_share`` of the training file. Three splits (``split``):

* ``"by-field"``: device ``c`` is the ``c``-th distinct value of the rows' ``client`` field in sorted
  order (integers numerically, then strings; :func:`~pwffsim.learn.filerows.client_sort_key`) and
  gets exactly that client's rows. More devices than distinct ids is an error naming both numbers;
  fewer use the first ids in that order (the others' rows unused). Held out: with ``eval_path``,
  that file's rows of the same id (an id without one is an error); else ``round(eval_share * n)``
  of its ``n`` rows, at least 1 and at most ``n - 1`` (a client with one row is an error), chosen
  by a permutation from the client's own stream. Its training-set size (its FedAvg weight) is its
  row count minus the held-out ones; ``train_samples_per_client`` and ``eval_samples_per_client``
  do not apply.
* ``"dirichlet"``: the labels are the sorted distinct ``topic`` values of the training file; client
  ``c``'s mix ``w ~ Dirichlet(dirichlet_alpha * 1)`` over them (its stream, part 0), then
  ``train_samples(c)`` rows: counts per label ``~ Multinomial(n, w)`` and that many rows of the
  label's pool, without replacement unless the pool is smaller (part 1), shuffled; the same for
  ``eval_samples_per_client`` held-out rows from the held-out pool (part 2), over the labels that
  have held-out rows (``w`` renormalised to them).
* ``"iid"``: rows drawn uniformly from the pool the same way (one label).

For ``"dirichlet"`` and ``"iid"`` without ``eval_path`` the held-out pool is ``round(eval_share * m)``
rows of each label's ``m`` (at most ``m - 1``: every label keeps a training row), the same rows for
every client (a seeded permutation per label), so no row is both trained on and held out by anyone.
With ``eval_path``, its rows of the training file's labels are the held-out pool.

A client's rows depend only on the file, the seed and its index: not on the other clients, their
number, or when they are made (streams ``SeedSequence([seed, STREAM_FILE_DATA, client, part])``).
Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from .clients import ClientData
from .data import DataSpec, Sample
from .filerows import ClientId, FileRows, client_sort_key, field_map, read_rows

__all__ = ["JsonlDataSpec", "FileIndex", "SPLITS", "file_index", "jsonl_client_data", "jsonl_client_eval",
           "make_data_spec"]

SPLITS = ("by-field", "dirichlet", "iid")
#: Seed-stream tags: a client's rows (parts 0 mix, 1 train, 2 eval) and the shared held-out pool.
STREAM_FILE_DATA, STREAM_FILE_HOLDOUT = 0xF11E, 0xF10D
_MIX, _TRAIN, _EVAL = 0, 1, 2


@dataclass(frozen=True)
class JsonlDataSpec:
    """What :func:`file_index` and the client draws need (see the module docstring); the counterpart
    of :class:`~pwffsim.learn.data.DataSpec` for ``data.source = "jsonl"``. ``fields``: sample field ->
    JSON key (a mapping or pairs; completed with the defaults and held as sorted pairs)."""
    num_clients: int
    train_path: str
    eval_path: str | None = None
    eval_share: float = 0.2
    fields: Any = ()
    split: str = "dirichlet"
    train_samples_per_client: int | Sequence[int] = 64
    eval_samples_per_client: int = 16
    dirichlet_alpha: float = 0.5
    seed: int = 0
    reference_clients: int = 8
    source: str = field(default="jsonl", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(sorted(field_map(dict(self.fields)).items())))
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if not 0.0 < self.eval_share < 1.0:
            raise ValueError(f"eval_share must be in (0, 1), got {self.eval_share}")
        # the sizes, alpha and reference clients are checked as for the built-in data
        base = DataSpec(num_clients=self.num_clients, train_samples_per_client=self.train_samples_per_client,
                        eval_samples_per_client=self.eval_samples_per_client, dirichlet_alpha=self.dirichlet_alpha,
                        reference_clients=self.reference_clients)
        object.__setattr__(self, "train_samples_per_client", base.train_samples_per_client)

    @property
    def field_keys(self) -> dict[str, str]:
        return dict(self.fields)

    def train_samples(self, client: int) -> int:
        """``client``'s training-set size (O(1) once the file is indexed): its rows less the held-out
        ones (``"by-field"``), else ``train_samples_per_client``."""
        if self.split == "by-field":
            return file_index(self).train_count(client)
        n = self.train_samples_per_client
        return int(n) if isinstance(n, (int, np.integer)) else n[client]


def make_data_spec(**kw):
    """A :class:`JsonlDataSpec` if ``kw["source"] == "jsonl"``, else a built-in
    :class:`~pwffsim.learn.data.DataSpec` (``source`` absent or ``"builtin"``)."""
    source = kw.pop("source", "builtin")
    return JsonlDataSpec(**kw) if source == "jsonl" else DataSpec(**kw)


def _stream(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *tags]))


def _holdout_count(n: int, share: float) -> int:
    return min(n - 1, max(0, int(round(share * n))))


def _client_holdout(n: int, share: float) -> int:
    """Held-out rows of a "by-field" client with ``n >= 2`` rows: ``round(share * n)`` in ``[1, n - 1]``."""
    return max(1, _holdout_count(n, share))


@dataclass
class FileIndex:
    """The indexed file(s) of a spec: rows, labels and pools, and per-client row lists (by-field)."""
    spec: JsonlDataSpec
    train: FileRows
    eval: FileRows | None
    labels: list[str]
    pool: list[np.ndarray]          # per label: indices into train.samples drawn for training
    eval_pool: list[np.ndarray]     # per label: indices into the held-out rows (eval or train file)
    client_ids: list[ClientId]      # by-field: device c -> client_ids[c]
    client_rows: dict[ClientId, np.ndarray]
    client_eval_rows: dict[ClientId, np.ndarray]

    @property
    def held_out(self) -> FileRows:
        """The rows the held-out pools index: ``eval_path``'s, else the training file's."""
        return self.eval if self.eval is not None else self.train

    def train_count(self, client: int) -> int:
        rows = len(self.client_rows[self.client_ids[client]])
        return rows if self.eval is not None else rows - _client_holdout(rows, self.spec.eval_share)

    def all_samples(self) -> list[Sample]:
        return [*self.train.samples, *(self.eval.samples if self.eval is not None else ())]


def _by_label(rows: FileRows, labels: list[str]) -> list[np.ndarray]:
    at = {lab: k for k, lab in enumerate(labels)}
    groups: list[list[int]] = [[] for _ in labels]
    for i, s in enumerate(rows.samples):
        if s.topic in at:
            groups[at[s.topic]].append(i)
    return [np.asarray(g, dtype=np.int64) for g in groups]


def _by_client(rows: FileRows) -> dict[ClientId, np.ndarray]:
    groups: dict[ClientId, list[int]] = {}
    for i, c in enumerate(rows.clients):
        groups.setdefault(c, []).append(i)
    return {c: np.asarray(g, dtype=np.int64) for c, g in groups.items()}


def _check_by_field(spec: JsonlDataSpec, ix: FileIndex) -> None:
    n, k = spec.num_clients, len(ix.client_ids)
    key = spec.field_keys["client"]
    if n > k:
        raise ValueError(f"{spec.train_path}:0: field 'client' (JSON key {key!r}): data.split 'by-field' needs a "
                         f"distinct client id per device: {n} devices but {k} distinct ids")
    for c, cid in enumerate(ix.client_ids[:n]):
        if ix.eval is not None and cid not in ix.client_eval_rows:
            raise ValueError(f"{ix.eval.path}:0: field 'client' (JSON key {key!r}): no held-out row of client "
                             f"id {cid!r} (device {c})")
        rows = ix.client_rows[cid]
        if ix.eval is None and len(rows) < 2:
            first = ix.train.lines[int(rows[0])]
            raise ValueError(f"{spec.train_path}:{first}: field 'client' (JSON key {key!r}): client id {cid!r} "
                             f"(device {c}) has 1 row; holding out data.eval_share needs 2 (or give data.eval_path)")


def _holdout_pools(spec: JsonlDataSpec, groups: list[np.ndarray]):
    """Per label: (training pool, held-out pool) of the training file's row indices ``groups`` (see the
    module docstring)."""
    pool, held = [], []
    for k, idx in enumerate(groups):
        perm = idx[_stream(spec.seed, STREAM_FILE_HOLDOUT, k).permutation(len(idx))]
        h = _holdout_count(len(idx), spec.eval_share)
        held.append(np.sort(perm[:h]))
        pool.append(np.sort(perm[h:]))
    if not any(len(h) for h in held):
        raise ValueError(f"{spec.train_path}:0: too few rows to hold out data.eval_share = {spec.eval_share} "
                         "(give data.eval_path)")
    return pool, held


def _pools(spec: JsonlDataSpec, train: FileRows, ev: FileRows | None, labels: list[str]):
    """(training pools, held-out pools) per label, for the "dirichlet" and "iid" splits."""
    if spec.split == "iid":
        groups = [np.arange(len(train.samples))]
        held = [np.arange(len(ev.samples))] if ev is not None else None
    else:
        groups, held = _by_label(train, labels), (_by_label(ev, labels) if ev is not None else None)
    if held is None:
        return _holdout_pools(spec, groups)
    if not any(len(h) for h in held):
        raise ValueError(f"{spec.eval_path}:0: field 'topic' (JSON key {spec.field_keys['topic']!r}): no row has "
                         f"a topic of the training file ({', '.join(labels)})")
    return groups, held


def _stamp(path: str | None) -> tuple[int, int] | None:
    """(mtime in ns, size in bytes) of a file, so an index is rebuilt when the file changes."""
    import os

    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def file_index(spec: JsonlDataSpec) -> FileIndex:
    """Read and index ``spec``'s file(s) once (cached per spec and file stamp); one-line ``ValueError``
    naming the file, the line and the field of the first bad row."""
    return _file_index(spec, _stamp(spec.train_path), _stamp(spec.eval_path))


@lru_cache(maxsize=8)
def _file_index(spec: JsonlDataSpec, *_stamps) -> FileIndex:
    keys, by_field = spec.field_keys, spec.split == "by-field"
    train = read_rows(spec.train_path, keys, required_client=by_field)
    ev = read_rows(spec.eval_path, keys, required_client=by_field) if spec.eval_path else None
    if by_field:
        labels, pool, held = sorted({s.topic for s in train.samples}), [], []
    else:
        labels = ["all"] if spec.split == "iid" else sorted({s.topic for s in train.samples})
        pool, held = _pools(spec, train, ev, labels)
    client_rows = _by_client(train) if by_field else {}
    ix = FileIndex(spec=spec, train=train, eval=ev, labels=labels, pool=pool, eval_pool=held,
                   client_ids=sorted(client_rows, key=client_sort_key), client_rows=client_rows,
                   client_eval_rows=_by_client(ev) if (by_field and ev is not None) else {})
    if by_field:
        _check_by_field(spec, ix)
    return ix


def _take(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices of ``pool``: without replacement unless the pool is smaller than ``n``."""
    return pool[rng.choice(len(pool), size=n, replace=n > len(pool))]


def _draw(rng: np.random.Generator, pools: list[np.ndarray], w: np.ndarray, n: int) -> np.ndarray:
    has = np.array([len(p) > 0 for p in pools])
    w = np.where(has, w, 0.0)
    w = w / w.sum() if w.sum() > 0 else has / has.sum()
    counts = rng.multinomial(n, w)
    idx = np.concatenate([_take(rng, pools[k], int(m)) for k, m in enumerate(counts) if m] or [np.empty(0, int)])
    return idx[rng.permutation(len(idx))]


def _mix(ix: FileIndex, client: int) -> np.ndarray:
    k = len(ix.labels)
    if ix.spec.split != "dirichlet":
        return np.full(k, 1.0 / k)
    from .clients import _dirichlet

    return _dirichlet(_stream(ix.spec.seed, STREAM_FILE_DATA, client, _MIX), ix.spec.dirichlet_alpha, k)


def _by_field_rows(ix: FileIndex, client: int) -> tuple[list[Sample], list[Sample]]:
    rows = ix.client_rows[ix.client_ids[client]]
    if ix.eval is not None:
        return ([ix.train.samples[int(i)] for i in rows],
                [ix.eval.samples[int(i)] for i in ix.client_eval_rows[ix.client_ids[client]]])
    perm = rows[_stream(ix.spec.seed, STREAM_FILE_DATA, client, _EVAL).permutation(len(rows))]
    h = _client_holdout(len(rows), ix.spec.eval_share)
    return ([ix.train.samples[int(i)] for i in np.sort(perm[h:])],
            [ix.train.samples[int(i)] for i in np.sort(perm[:h])])


def _check_client(spec: JsonlDataSpec, client: int) -> None:
    if not 0 <= client < spec.num_clients:
        raise ValueError(f"client {client} out of range 0..{spec.num_clients - 1}")


def jsonl_client_eval(spec: JsonlDataSpec, client: int) -> list[Sample]:
    """``client``'s held-out samples (as in :func:`jsonl_client_data`)."""
    _check_client(spec, client)
    ix = file_index(spec)
    if spec.split == "by-field":
        return _by_field_rows(ix, client)[1]
    rng = _stream(spec.seed, STREAM_FILE_DATA, client, _EVAL)
    held = ix.held_out.samples
    return [held[int(i)] for i in _draw(rng, ix.eval_pool, _mix(ix, client), spec.eval_samples_per_client)]


def jsonl_client_data(spec: JsonlDataSpec, client: int) -> ClientData:
    """Client ``client``'s rows (see the module docstring); ``topic_weights`` is its mix over the labels
    (``"by-field"``: its training rows' label shares over the training file's topics)."""
    _check_client(spec, client)
    ix = file_index(spec)
    if spec.split == "by-field":
        train, ev = _by_field_rows(ix, client)
        topics = sorted({s.topic for s in ix.train.samples})
        w = np.array([sum(s.topic == t for s in train) for t in topics], dtype=float) / len(train)
        return ClientData(client=client, topic_weights=w, train=train, eval=ev)
    w = _mix(ix, client)
    rng = _stream(spec.seed, STREAM_FILE_DATA, client, _TRAIN)
    train = [ix.train.samples[int(i)] for i in _draw(rng, ix.pool, w, spec.train_samples(client))]
    return ClientData(client=client, topic_weights=w, train=train, eval=jsonl_client_eval(spec, client))


def spec_files(spec: Mapping[str, Any]) -> list[str]:
    """The data files a data-spec keyword dict names (none for the built-in data)."""
    return [p for p in (spec.get("train_path"), spec.get("eval_path")) if p] if spec.get("source") == "jsonl" else []


def is_file_data(spec: Any) -> bool:
    return getattr(spec, "source", "builtin") == "jsonl"


def source_client_data(spec: Any, client: int) -> ClientData:
    """``client``'s data from either source (:func:`~pwffsim.learn.clients.client_data` for the built-in)."""
    from .clients import client_data

    return jsonl_client_data(spec, client) if is_file_data(spec) else client_data(spec, client)


def source_client_eval(spec: Any, client: int) -> list[Sample]:
    """``client``'s held-out samples from either source."""
    from .clients import client_eval

    return jsonl_client_eval(spec, client) if is_file_data(spec) else client_eval(spec, client)


@dataclass(frozen=True)
class TokenReport:
    """Token counts over every row of a spec's file(s) (training and held-out), with one tokenizer."""
    longest_row: int      # prompt + " " + response + eos, tokens
    longest_prompt: int   # tokens
    rows: int
    truncated_rows: int   # rows longer than seq_len (cut to seq_len, as every row is)
    unknown_tokens: int   # tokens equal to the tokenizer's unk token, over prompts, responses and answers
    tokens: int           # all tokens of prompts, responses and answers

    def warning(self, spec: JsonlDataSpec, seq_len: int) -> str | None:
        """One line on out-of-vocabulary tokens and truncated rows (None if there are neither)."""
        parts = []
        if self.unknown_tokens:
            parts.append(f"{self.unknown_tokens} of {self.tokens} tokens of the prompts, responses and answers "
                         f"({100.0 * self.unknown_tokens / self.tokens:.1f}%) are out of the tokenizer's "
                         "vocabulary and read as its unknown token")
        if self.truncated_rows:
            parts.append(f"{self.truncated_rows} of {self.rows} rows are longer than seq_len {seq_len} tokens "
                         f"(the longest {self.longest_row}) and are truncated")
        files = " and ".join(p for p in (spec.train_path, spec.eval_path) if p)
        return f"data file {files}: " + "; ".join(parts) if parts else None


def token_report(spec: JsonlDataSpec, tokenizer, seq_len: int) -> TokenReport:
    """The :class:`TokenReport` of ``spec``'s rows (one batched tokenizer call over distinct texts)."""
    samples = file_index(spec).all_samples()
    texts = list(dict.fromkeys(t for s in samples for t in (s.prompt, " " + s.response, s.answer)))
    ids = dict(zip(texts, tokenizer(texts, add_special_tokens=False)["input_ids"]))
    unk = getattr(tokenizer, "unk_token_id", None)
    used = [ids[t] for s in samples for t in (s.prompt, " " + s.response) + ((s.answer,) if s.answer else ())]
    rows = [len(ids[s.prompt]) + len(ids[" " + s.response]) + 1 for s in samples]
    return TokenReport(longest_row=max(rows), longest_prompt=max(len(ids[s.prompt]) for s in samples),
                       rows=len(rows), truncated_rows=sum(r > seq_len for r in rows),
                       unknown_tokens=0 if unk is None else sum(t == unk for u in used for t in u),
                       tokens=sum(len(u) for u in used))
