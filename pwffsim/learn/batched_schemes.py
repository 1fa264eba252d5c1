"""The baselines' local procedures batched (:mod:`pwffsim.learn.local_schemes`: FedRep, Ditto), from
the pieces of the joint batched update (:mod:`pwffsim.learn.batched`): every phase of every client
together, each phase as the client's own procedure runs it.

* **FedRep**: the personal part (LoRA) alone for ``local_steps`` supervised steps, then its RLOO steps,
  then the global part (adapters) alone for ``fedrep_global_steps`` steps with the proximal term on
  the anchor's global keys; every phase's batches from the client's one generator, in order.
* **Ditto**: the global track as the joint update; then the personal model from ``personal_start``
  (default the initial state) with a fresh generator on the same seed and the pull ``ditto_lambda``
  towards the downloaded ``start_state``; the metrics are the personal model's, the gap is the global
  track's eval loss.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .batched import learner_layout, supervised_many
from .batched_align import align_many
from .batched_eval import metrics_many
from .contract import TrainJob, TrainResult
from .local_schemes import _mean_over_steps


def _slices(stacked: dict[str, Tensor], K: int) -> list[dict[str, Tensor]]:
    return [{key: v[k].clone() for key, v in stacked.items()} for k in range(K)]


def _track(L, jobs, gens, starts, anchors, mu, keys=None):
    """A joint-like track: supervised steps then RLOO steps (if any) of every job."""
    K = len(jobs)
    stacked, losses = supervised_many(L, jobs, gens, starts=starts, anchors=anchors, mu=mu, keys=keys)
    states, aligned = _slices(stacked, K), [(float("nan"), 0)] * K
    if L.train_spec.align_steps:
        states, aligned = align_many(L, learner_layout(L), jobs, gens, states, anchors=anchors, mu=mu, keys=keys)
    return states, losses, aligned


def fedrep_many(L, jobs: Sequence[TrainJob]) -> list[TrainResult]:
    """FedRep's local update of every job (:func:`pwffsim.learn.local_schemes.run_fedrep`), batched."""
    ts, st, K = L.train_spec, L.trainable_state, len(jobs)
    shared = [k for k in st.params if L.parameter_group(k) == "adapter"]
    personal = [k for k in st.params if k not in set(shared)]
    gens = [torch.Generator().manual_seed(j.seed) for j in jobs]
    states, head, aligned = _track(L, jobs, gens, [j.start_state for j in jobs], [None] * K, ts.prox_mu, personal)
    anchors = [None if j.prox_anchor is None else {k: v for k, v in j.prox_anchor.items() if k in set(shared)}
               for j in jobs]
    stacked, body = supervised_many(L, jobs, gens, starts=states, anchors=anchors, keys=shared,
                                    steps=ts.fedrep_global_steps)
    trained = _slices(stacked, K)
    metrics = metrics_many(L, learner_layout(L), jobs, trained)
    return [L.joint_result(j, s, _mean_over_steps([(h, ts.local_steps), (b, ts.fedrep_global_steps)]), m, *a)
            for j, s, h, b, m, a in zip(jobs, trained, head, body, metrics, aligned)]


def ditto_many(L, jobs: Sequence[TrainJob]) -> list[TrainResult]:
    """Ditto's local update of every job (:func:`pwffsim.learn.local_schemes.run_ditto`), batched."""
    ts, st = L.train_spec, L.trainable_state
    seeded = lambda: [torch.Generator().manual_seed(j.seed) for j in jobs]  # noqa: E731
    glob, losses, aligned = _track(L, jobs, seeded(), [j.start_state for j in jobs],
                                   [j.prox_anchor for j in jobs], ts.prox_mu)
    starts = [st.initial if j.personal_start is None else j.personal_start for j in jobs]
    personal, _, _ = _track(L, jobs, seeded(), starts, [j.start_state for j in jobs], ts.ditto_lambda)
    metrics = metrics_many(L, learner_layout(L), jobs, personal, gap_states=glob)
    out = []
    for j, g, p, loss, m, a in zip(jobs, glob, personal, losses, metrics, aligned):
        res = L.joint_result(j, g, loss, m, *a)
        res.personal_state = p
        out.append(res)
    return out
