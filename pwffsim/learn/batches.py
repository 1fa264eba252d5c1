"""Each client's tensors, made on first use and kept in a bounded cache, and the order a local update
samples them in.

Per client (:class:`ClientTensors`): the training rows (``input_ids``, ``labels``: loss on the response
tokens), the held-out eval rows (cycled to ``eval_batches * batch_size`` rows), as many rows of the
reference clients' held-out data (:func:`~pwffsim.learn.clients.reference_clients`, round-robin, each
one's eval set cycled) and left-padded prompts: the training prompts (alignment draws from them) and
``metric_prompts`` held-out prompts stratified over the preference-dependent families
(:func:`~pwffsim.learn.clients.client_metric_samples`) for the greedy reward metrics.

Nothing is made before a client is first asked for: :class:`ClientBatches` then makes its data
(:func:`~pwffsim.learn.clients.client_data`) and tensors and keeps the ``cache_size`` most recently used
clients (least recently used out first; an evicted client is made again, identically). A client's
tensors depend only on the specs and its index, so results depend neither on when or in which order
clients are first used nor on the cache; a client never used costs nothing.

Prompts are left-padded to one fixed length ``prompt_len``, the longest prompt the data spec can
produce (over every fact of its topics, :meth:`~pwffsim.learn.data.Topic.sft_pairs`, not only the
data made so far; for data from a file, :class:`~pwffsim.learn.filedata.JsonlDataSpec`, over every row
of the file), so every generation has the same shape and cost whatever the population. A file's rows
longer than ``seq_len`` are truncated (a warning counts them and the file's out-of-vocabulary tokens).
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .clients import ClientData, client_metric_samples, reference_clients
from .data import DataSpec, Sample, rows_from_ids
from .filedata import is_file_data, source_client_data, source_client_eval, token_report

#: ``(input_ids, labels)`` rows, ``[n, seq_len]`` each.
Rows = tuple[Tensor, Tensor]
#: ``(input_ids, attention_mask)`` of left-padded prompts, ``[n, prompt_len]`` each (mask 1 = real
#: token).
Prompts = tuple[Tensor, Tensor]

#: Clients whose tensors :class:`ClientBatches` keeps by default (~75 kB each at the defaults).
CACHED_CLIENTS = 128


def cycled(samples: Sequence[Sample], n: int) -> list[Sample]:
    """The first ``n`` samples of ``samples`` repeated cyclically."""
    return [samples[i % len(samples)] for i in range(n)]


def round_robin(sets: Sequence[Sequence[Sample]], n: int) -> list[Sample]:
    """``n`` samples taken round-robin over ``sets``, each one cycled. Empty if there is no set."""
    return [sets[i % len(sets)][(i // len(sets)) % len(sets[i % len(sets)])]
            for i in range(n if sets else 0)]


def longest_lengths(spec: DataSpec, tokenizer) -> tuple[int, int]:
    """``(row, prompt)``: the most tokens a row (prompt + response + eos) and a prompt of ``spec``'s
    data can have, over every fact of its topics (:meth:`~pwffsim.learn.data.DataSpec.every_sft_pair`)."""
    pairs = spec.every_sft_pair()
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    responses = tokenizer([" " + r for _, r in pairs], add_special_tokens=False)["input_ids"]
    return (max(len(p) + len(r) + 1 for p, r in zip(prompts, responses)),
            max(len(p) for p in prompts))


def epoch_order(n: int, rows_needed: int, gen: torch.Generator) -> Tensor:
    """Row indices for ``rows_needed`` training rows out of ``n``: whole random permutations from
    ``gen``, concatenated (no permutation is drawn when no row is needed)."""
    if not rows_needed:
        return torch.empty(0, dtype=torch.long)
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-rows_needed // n))])


@dataclass(frozen=True)
class ClientTensors:
    """One client's data and tensors (see the module docstring); ``eval_others`` is ``None`` when
    there is no other client or no eval row. Shared, never modified."""
    data: ClientData
    train: Rows
    eval: Rows
    eval_others: Rows | None
    train_prompts: Prompts
    metric_samples: list[Sample]
    metric_prompts: Prompts


class ClientBatches:
    """Every client's :class:`ClientTensors` by index (``batches[c]``), made on first use and cached
    (see the module docstring). ``len(batches)`` is the number of clients."""

    def __init__(self, spec: DataSpec, tokenizer, seq_len: int, eval_rows: int,
                 metric_prompts: int, cache_size: int = CACHED_CLIENTS):
        self.token_report = None  # data from a file: its TokenReport (out-of-vocabulary, truncated rows)
        if is_file_data(spec):
            self.token_report = report = token_report(spec, tokenizer, seq_len)
            longest, self.prompt_len = min(report.longest_row, seq_len), report.longest_prompt
            if (msg := report.warning(spec, seq_len)) is not None:
                warnings.warn(msg, stacklevel=2)
        else:
            longest, self.prompt_len = longest_lengths(spec, tokenizer)
        if longest > seq_len:
            raise ValueError(f"seq_len {seq_len} is too short: the longest sample needs "
                             f"{longest} tokens (prompt + response + eos)")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.spec, self.tokenizer, self.seq_len = spec, tokenizer, seq_len
        self.eval_rows, self.metric_prompts, self.cache_size = eval_rows, metric_prompts, cache_size
        self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                       else tokenizer.eos_token_id)
        self._cache: OrderedDict[int, ClientTensors] = OrderedDict()
        # the reference clients' pools: at most M + 2 distinct ones (M = spec.reference_clients)
        self._pools: dict[tuple[int, ...], Rows | None] = {}

    def __len__(self) -> int:
        return self.spec.num_clients

    def __getitem__(self, client: int) -> ClientTensors:
        got = self._cache.get(client)
        if got is not None:
            self._cache.move_to_end(client)
            return got
        got = self._cache[client] = self._build(client)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return got

    def cached(self) -> list[int]:
        """The clients whose tensors are held, least recently used first."""
        return list(self._cache)

    def _tokenize(self, samples: Sequence[Sample]) -> dict[str, list[int]]:
        """Token ids of the samples' prompts and ``" " + response``s, in one batched call."""
        texts = list(dict.fromkeys(t for s in samples for t in (s.prompt, " " + s.response)))
        return dict(zip(texts, self.tokenizer(texts, add_special_tokens=False)["input_ids"]))

    def _rows(self, samples: Sequence[Sample], tok: dict[str, list[int]]) -> Rows:
        pairs = [(tok[s.prompt], tok[" " + s.response]) for s in samples]
        return rows_from_ids(pairs, self.seq_len, self.eos, self.pad)

    def _prompts(self, samples: Sequence[Sample], tok: dict[str, list[int]]) -> Prompts:
        """Left-padded prompt ids ``[n, prompt_len]`` and their attention mask (1 = real token)."""
        P = self.prompt_len
        rows = [tok[s.prompt] for s in samples]
        ids = [[self.pad] * (P - len(p)) + p for p in rows]
        mask = [[0] * (P - len(p)) + [1] * len(p) for p in rows]
        return (torch.tensor(ids, dtype=torch.long).reshape(len(rows), P),
                torch.tensor(mask, dtype=torch.long).reshape(len(rows), P))

    def _others(self, client: int) -> Rows | None:
        refs = tuple(reference_clients(self.spec, client))
        if refs not in self._pools:
            pool = round_robin([source_client_eval(self.spec, r) for r in refs], self.eval_rows)
            self._pools[refs] = self._rows(pool, self._tokenize(pool)) if pool else None
        return self._pools[refs]

    def _check(self, data: ClientData, tok: dict[str, list[int]]) -> None:
        """The spec-wide bounds hold for this client's samples (they do unless a tokenizer's count for
        a word depends on its neighbours, see :class:`~pwffsim.learn.data.Topic`)."""
        limit = None if self.token_report is not None else self.seq_len  # a file's rows are truncated
        for s in (*data.train, *data.eval):
            p, r = tok[s.prompt], tok[" " + s.response]
            if (limit is not None and len(p) + len(r) + 1 > limit) or len(p) > self.prompt_len:
                raise ValueError(f"client {data.client}'s sample {s.prompt!r} is longer than the "
                                 f"bounds (seq_len {self.seq_len}, prompt_len {self.prompt_len})")

    def _build(self, client: int) -> ClientTensors:
        data = source_client_data(self.spec, client)
        # a file's rows have no preference families: its first held-out prompts, cycled
        metric = (cycled(data.eval, self.metric_prompts) if is_file_data(self.spec)
                  else client_metric_samples(self.spec, client, self.metric_prompts))
        tok = self._tokenize((*data.train, *data.eval, *metric))
        self._check(data, tok)
        return ClientTensors(data=data, train=self._rows(data.train, tok),
                             eval=self._rows(cycled(data.eval, self.eval_rows), tok),
                             eval_others=self._others(client),
                             train_prompts=self._prompts(data.train, tok),
                             metric_samples=metric, metric_prompts=self._prompts(metric, tok))


class ClientsView(Sequence[ClientData]):
    """Every client's :class:`~pwffsim.learn.clients.ClientData` by index, through the cache of
    ``batches`` (made on first use); ``len()`` is the number of clients (nothing is made)."""

    def __init__(self, batches: ClientBatches):
        self._batches = batches

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, client: int) -> ClientData:  # type: ignore[override]
        if not 0 <= client < len(self._batches):
            raise IndexError(f"client {client} out of range 0..{len(self._batches) - 1}")
        return self._batches[client].data
