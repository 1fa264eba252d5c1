"""The held-out metrics of several clients' trained states at once, after a batched update
(:mod:`pwffsim.learn.batched`): what :meth:`Learner._metrics <pwffsim.learn.train.Learner._metrics>`
and :meth:`~pwffsim.learn.train.Learner.global_only_loss` give each client, from forwards of every
client's rows together (:mod:`pwffsim.learn.stacked`, no gradient).

* the held-out losses (own eval rows, the reference clients' rows, the own rows with the personal
  part reset): the rows of every client in one set of forwards (cut as the training rows are); each
  client's per-position cross-entropies are then added up batch by batch exactly as ``_loss_on``
  does (:func:`pwffsim.learn.optim.held_out_totals`);
* the greedy answers to the metric prompts: one generation of every client's prompts (a row's
  tokens depend on its own logits only), each client's answers then scored as ``_metrics`` does.

Clients whose row sets differ in size (a reference pool missing for some) are measured one by one.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from .batches import Rows
from .contract import TrainJob
from .metrics import NO_REWARDS, reward_metrics
from .stacked import StackLayout, StepRows, per_client_forward


def _stack(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([s[k] for s in states]) for k in states[0]}


def _uniform(rows: Sequence[Rows | None]) -> int | None:
    """The common number of rows of every client's set (0: none has any), None if they differ."""
    sizes = {0 if r is None else r[0].shape[0] for r in rows}
    return sizes.pop() if len(sizes) == 1 else None


@torch.no_grad()
def losses_many(L, layout: StackLayout, stacked: Mapping[str, Tensor], rows: Sequence[Rows | None]) -> list[float]:
    """``L._loss_on(rows[k])`` with client ``k``'s slice of ``stacked`` loaded, for every ``k``."""
    from .batched import step_ce
    from .optim import held_out_totals

    K, n = len(rows), _uniform(rows)
    if n is None:
        return [_loss_alone(L, {k: v[i] for k, v in stacked.items()}, r) for i, r in enumerate(rows)]
    if n == 0:
        return [float("nan")] * K
    ids, labels = torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])
    L.model.eval()
    step = StepRows(stacked, K, n, ids.shape[1], record=False)
    select = layout.head is not None
    with per_client_forward(layout, step, select_logits=select):
        ce = step_ce(L.model, step, ids, labels, select, buckets=True)
    bs, out = L.train_spec.batch_size, []
    for k in range(K):
        total, count = 0.0, 0
        for i in range(k * n, (k + 1) * n, bs):
            end = min(i + bs, (k + 1) * n)
            t, c = held_out_totals(ce[i:end], labels[i:end], L.train_spec.loss_average)
            total, count = total + t, count + c
        out.append(total / count if count else float("nan"))
    return out


def _loss_alone(L, state: Mapping[str, Tensor], rows: Rows | None) -> float:
    L.trainable_state.load(state)
    return L._loss_on(rows)


@torch.no_grad()
def greedy_many(L, layout: StackLayout, stacked: Mapping[str, Tensor], prompts: Sequence[tuple[Tensor, Tensor]]
                ) -> list[Tensor]:
    """Each client's greedy answer tokens to its prompts (``(ids, mask)``, the same count for
    every client) under its slice of ``stacked``: ``L.sampler.generate`` of all of them at once."""
    K, n = len(prompts), prompts[0][0].shape[0]
    ids, mask = torch.cat([p[0] for p in prompts]), torch.cat([p[1] for p in prompts])
    step = StepRows(stacked, K, n, ids.shape[1], rows=torch.arange(K * n), record=False)
    with per_client_forward(layout, step):
        new = L.sampler.generate(ids, mask, None)
    return list(new.split(n))


def _greedy_alone(L, state: Mapping[str, Tensor], prompts: tuple[Tensor, Tensor]) -> Tensor:
    L.trainable_state.load(state)
    return L.sampler.generate(*prompts, None)


def metrics_many(L, layout: StackLayout, jobs: Sequence[TrainJob], states: Sequence[dict[str, Tensor]],
                 gap_states: Sequence[dict[str, Tensor]] | None = None) -> list[dict]:
    """For each job, ``L._metrics(client, ...)`` of its trained ``state`` and its
    ``eval_loss_global_only``: the eval loss of ``gap_states`` if given, else of the state with its
    personal part reset (:meth:`~pwffsim.learn.train.Learner.global_only_loss`)."""
    b = [L.batches[j.client] for j in jobs]
    stacked = _stack(states)
    own = losses_many(L, layout, stacked, [x.eval for x in b])
    others = losses_many(L, layout, stacked, [x.eval_others for x in b])
    out = [dict(eval_loss=e, eval_loss_others=o, **NO_REWARDS) for e, o in zip(own, others)]
    if any(x.metric_samples for x in b):
        if _uniform([x.metric_prompts for x in b]):
            answers = greedy_many(L, layout, stacked, [x.metric_prompts for x in b])
        else:
            answers = [_greedy_alone(L, s, x.metric_prompts) for s, x in zip(states, b)]
        for m, x, j, new in zip(out, b, jobs, answers):
            if x.metric_samples:
                m.update(reward_metrics(L.rewards, x.metric_samples, L.sampler.decode(new), j.pref_help, j.pref_safe))
    reset = [j.personal_reset for j in jobs]
    if gap_states is not None:
        gap = losses_many(L, layout, _stack(gap_states), [x.eval for x in b])
    elif all(reset) and len({frozenset(r) for r in reset}) == 1:
        gap = losses_many(L, layout, _stack([{**s, **r} for s, r in zip(states, reset)]), [x.eval for x in b])
    else:
        gap = [L.global_only_loss(j.client, s, j.personal_reset) for j, s in zip(jobs, states)]
    for m, g in zip(out, gap):
        m["eval_loss_global_only"] = g
    return out
