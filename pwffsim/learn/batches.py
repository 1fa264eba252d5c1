"""Every client's data as tensors, tokenised once, and the order a local update samples it in.

Per client: the training rows (``input_ids``, ``labels``: loss on the response tokens), the held-out
eval rows (cycled to ``eval_batches * batch_size`` rows), a pool of the other clients' eval rows of
the same size (round-robin over the other clients), and left-padded prompts: the training prompts
(alignment draws from them) and the first ``metric_prompts`` eval prompts (cycled) for the greedy
reward metrics. Prompts are left-padded to one fixed length ``prompt_len`` (the longest prompt of
all clients' data), so every generation has the same shape and cost.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .data import ClientData, Sample, encode_samples, encoded_length

#: ``(input_ids, labels)`` rows, ``[n, seq_len]`` each.
Rows = tuple[Tensor, Tensor]
#: ``(input_ids, attention_mask)`` of left-padded prompts, ``[n, prompt_len]`` each (mask 1 = real
#: token).
Prompts = tuple[Tensor, Tensor]


def cycled(samples: Sequence[Sample], n: int) -> list[Sample]:
    """The first ``n`` samples of ``samples`` repeated cyclically."""
    return [samples[i % len(samples)] for i in range(n)]


def others_eval_pool(clients: Sequence[ClientData], client: int, n: int) -> list[Sample]:
    """``n`` eval samples of the clients other than ``client``: round-robin over the other clients,
    each one's eval set cycled. Empty if there is no other client."""
    others = [o for o in clients if o.client != client]
    pool = []
    for i in range(n if others else 0):
        o = others[i % len(others)]
        pool.append(o.eval[(i // len(others)) % len(o.eval)])
    return pool


def epoch_order(n: int, rows_needed: int, gen: torch.Generator) -> Tensor:
    """Row indices for ``rows_needed`` training rows out of ``n``: whole random permutations from
    ``gen``, concatenated (no permutation is drawn when no row is needed)."""
    if not rows_needed:
        return torch.empty(0, dtype=torch.long)
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-rows_needed // n))])


class ClientBatches:
    """The tokenised tensors of every client (see the module docstring), indexed by client.

    ``train[c]``, ``eval[c]``: :data:`Rows`; ``eval_others[c]``: :data:`Rows` or ``None`` (one
    client, or no eval rows); ``train_prompts[c]``, ``metric_prompts[c]``: :data:`Prompts`;
    ``metric_samples[c]``: the samples behind ``metric_prompts[c]``."""

    def __init__(self, clients: Sequence[ClientData], tokenizer, seq_len: int, eval_rows: int,
                 metric_prompts: int):
        longest = max(encoded_length(s, tokenizer) for c in clients for s in (*c.train, *c.eval))
        if longest > seq_len:
            raise ValueError(f"seq_len {seq_len} is too short: the longest sample needs "
                             f"{longest} tokens (prompt + response + eos)")
        self.tokenizer = tokenizer
        self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                       else tokenizer.eos_token_id)
        self.prompt_len = max(len(self._prompt_ids(s)) for c in clients for s in (*c.train, *c.eval))
        self.train: list[Rows] = []
        self.eval: list[Rows] = []
        self.eval_others: list[Rows | None] = []
        self.train_prompts: list[Prompts] = []
        self.metric_samples: list[list[Sample]] = []
        self.metric_prompts: list[Prompts] = []
        for c in clients:
            self.train.append(encode_samples(c.train, tokenizer, seq_len))
            self.eval.append(encode_samples(cycled(c.eval, eval_rows), tokenizer, seq_len))
            pool = others_eval_pool(clients, c.client, eval_rows)
            self.eval_others.append(encode_samples(pool, tokenizer, seq_len) if pool else None)
            self.train_prompts.append(self.encode_prompts(c.train))
            self.metric_samples.append(cycled(c.eval, metric_prompts))
            self.metric_prompts.append(self.encode_prompts(self.metric_samples[-1]))

    def _prompt_ids(self, sample: Sample) -> list[int]:
        return list(self.tokenizer(sample.prompt, add_special_tokens=False)["input_ids"])

    def encode_prompts(self, samples: Sequence[Sample]) -> Prompts:
        """Left-padded prompt ids ``[n, prompt_len]`` and their attention mask (1 = real token)."""
        P = self.prompt_len
        ids = torch.full((len(samples), P), self.pad, dtype=torch.long)
        mask = torch.zeros((len(samples), P), dtype=torch.long)
        for i, s in enumerate(samples):
            p = self._prompt_ids(s)
            ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, P - len(p):] = 1
        return ids, mask
