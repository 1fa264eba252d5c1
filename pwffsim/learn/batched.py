"""Batched local updates: several clients' local updates computed together
(``execution.batch_clients``; :meth:`pwffsim.learn.train.Learner.run_many`).

Clients that train on the same frozen base differ only in their trainable state (LoRA + adapters).
:func:`run_many` stacks the states of up to ``K`` jobs along a new leading dimension
(:mod:`pwffsim.learn.stacked`) and runs each supervised step once for all of them: the rows of every
client's batch go through the base together, each row through its own client's LoRA matrices and
adapters (``bmm``); the loss is the sum over clients of each client's own loss (each slice's gradient
is its client's alone) and one optimizer steps the stacked tensors (AdamW and SGD are elementwise, so
every slice gets exactly its client's update; the proximal step and term are elementwise too).

What :meth:`~pwffsim.learn.train.Learner.run` does, per client: its batches are drawn from its own
generator seeded with ``job.seed`` (:func:`~pwffsim.learn.batches.epoch_order`), from its own rows,
with its own start state, proximal anchor and loss average. A row is computed only up to its last
response token, rounded up to a multiple of :data:`CUT_STEP` positions (the model is causal: the
padding after it never reaches a position a loss needs; rows are grouped by that length,
:func:`length_buckets`), and the LM head computes the logits of the response positions only. Each
trainable map's weight gradient is formed per client from its inputs and output gradients laid out as
the client's own batch (:class:`~pwffsim.learn.stacked.StepRows`), so that it sums in the order of a
sequential run: on the machines tested the result equals ``run``'s bit for bit; elsewhere it may
differ in the last bits (float sums in another order), not more.

The rest of the update is batched too, with each client's own draws: the RLOO alignment steps
(:mod:`pwffsim.learn.batched_align`; each client's generator continues where its batches left it),
the held-out losses, greedy metric answers and personalization gap (:mod:`pwffsim.learn.batched_eval`),
and FedRep's and Ditto's procedures phase by phase (:mod:`pwffsim.learn.batched_schemes`).
Run one by one with ``run`` instead (same results): a learner whose model has active dropout (a
mask would come from the global RNG: ``lora_dropout > 0`` or a base with dropout) or a trainable
part that is not vanilla LoRA or an adapter, ``local_steps = 0``; a group of one job (jobs group by
the keys of their proximal anchor). A batch without any response token gives the client a nan loss
and a zero gradient, as in ``run``.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor

from .batches import epoch_order
from .contract import TrainJob, TrainResult
from .optim import IGNORE, make_optimizer
from .stacked import StackLayout, StepRows, per_client_forward, stack_layout
from .state import ProximalTerm

#: The cost of one more forward (a length bucket), in row positions (:func:`length_buckets`).
BUCKET_OVERHEAD = 192
#: Rows are cut after a multiple of this many positions (or not at all): the backward's reductions
#: along a row (softmax's) then fill the same vector lanes as in the uncut row (16 floats: AVX-512),
#: and the kept positions get bit for bit the values of the uncut rows on the machines tested.
CUT_STEP = 16


def learner_layout(L) -> StackLayout:
    """The learner's :class:`~pwffsim.learn.stacked.StackLayout` (made once), with the learner-wide
    reasons to run sequentially."""
    layout = getattr(L, "_stack_layout", None)
    if layout is None:
        ts = L.train_spec
        if ts.local_steps == 0:
            layout = StackLayout(blocker="local_steps = 0")
        else:
            layout = stack_layout(L.model, L.trainable_state.params)
        L._stack_layout = layout
    return layout


def length_buckets(lengths: Sequence[int], overhead: int = BUCKET_OVERHEAD) -> list[int]:
    """Split points of ``lengths`` (sorted ascending) into consecutive buckets, each computed at its
    longest length, minimising ``sum(rows * longest) + overhead * buckets``; the end index of each
    bucket."""
    values = sorted(set(lengths))
    upto = [sum(1 for n in lengths if n <= v) for v in values]  # rows of length <= each value
    best = [0.0] + [math.inf] * len(values)
    cut = [0] * (len(values) + 1)
    for j in range(1, len(values) + 1):
        for i in range(j):
            rows = upto[j - 1] - (upto[i - 1] if i else 0)
            c = best[i] + rows * values[j - 1] + overhead
            if c < best[j]:
                best[j], cut[j] = c, i
    ends, j = [], len(values)
    while j:
        ends.append(upto[j - 1])
        j = cut[j]
    return ends[::-1]


def _forward_ce(model, step: StepRows, rows: Tensor, ids: Tensor, labels: Tensor, T: int,
                select: bool) -> Tensor:
    """``(len(rows), seq_len - 1)``: the next-token cross-entropy at every response position of
    ``rows`` (0 elsewhere, as ``run``'s), from one forward of those rows cut to ``T`` tokens."""
    S = ids.shape[1]
    cols = min(T, S - 1)
    tgt = labels[rows, 1:cols + 1]
    step.rows = rows
    if select:
        valid = tgt != IGNORE
        step.positions = valid.nonzero(as_tuple=True)
        logits = model(input_ids=ids[rows, :T]).logits
        ce = torch.nn.functional.cross_entropy(logits.float(), tgt[valid], reduction="none")
        return ce.new_zeros(rows.shape[0], S - 1).index_put(step.positions, ce)
    step.positions = None
    lg = model(input_ids=ids[rows, :T]).logits[:, :cols].float()
    ce = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), tgt.reshape(-1),
                                           ignore_index=IGNORE, reduction="none").view(tgt.shape)
    return torch.nn.functional.pad(ce, (0, S - 1 - cols))


def step_ce(model, step: StepRows, ids: Tensor, labels: Tensor, select: bool, buckets: bool) -> Tensor:
    """``(rows, seq_len - 1)``: :func:`_forward_ce` of every row of the step, the rows with a
    response token cut after the positions they need (up to their last response token) rounded up
    to a multiple of :data:`CUT_STEP` (at most ``seq_len``), in :func:`length_buckets` (one forward
    each) if ``buckets``, else in one forward."""
    S = ids.shape[1]
    resp = labels[:, 1:] != IGNORE
    need = torch.where(resp.any(1), resp.cumsum(1).argmax(1) + 1, 0)
    length = (torch.div(need + CUT_STEP - 1, CUT_STEP, rounding_mode="floor") * CUT_STEP).clamp(max=S)
    order = torch.argsort(length, stable=True)
    order = order[need[order] > 0]
    ce = torch.zeros(ids.shape[0], S - 1)
    lengths = length[order].tolist()
    start = 0
    for end in (length_buckets(lengths) if buckets else [len(lengths)]):
        if end > start:
            rows = order[start:end].sort().values
            ce = ce.index_put((rows,), _forward_ce(model, step, rows, ids, labels, lengths[end - 1], select))
        start = end
    step.rows = step.positions = None
    return ce


def client_losses(ce: Tensor, labels: Tensor, K: int, average: str) -> tuple[Tensor, Tensor]:
    """``(to_backpropagate, shown)`` ``(K,)``: each client's loss of its rows' cross-entropies ``ce``
    (``average`` as :func:`pwffsim.learn.optim.response_loss`); ``shown`` is nan where ``run``'s loss
    is (no response token), with a zero gradient there as in ``run``."""
    resp = labels[:, 1:] != IGNORE
    counts = resp.sum(1)
    if average == "token":
        loss = ce.view(K, -1).sum(1) / counts.view(K, -1).sum(1)
        # shown: the model's own loss, nll_loss's mean over every (row, position) of the batch
        full = torch.nn.functional.pad(resp, (0, 1))
        tgt = torch.where(full, 0, IGNORE).view(K, -1)
        neg = -torch.nn.functional.pad(ce.detach(), (0, 1)).view(K, -1, 1)
        return loss, torch.stack([torch.nn.functional.nll_loss(neg[k], tgt[k], ignore_index=IGNORE)
                                  for k in range(K)])
    s, c = ce.sum(1).view(K, -1), counts.view(K, -1)
    has = c > 0
    per_row = torch.where(has, s / c.clamp(min=1), 0.0)
    rows = has.sum(1)
    loss = per_row.sum(1) / rows.clamp(min=1)
    return loss, torch.where(rows > 0, loss, math.nan)


def stacked_prox(anchors: Sequence[Mapping[str, Tensor] | None], mu: float, form: str,
                 stacked: Mapping[str, Tensor]) -> ProximalTerm:
    """The proximal term of every client at once (their anchors have the same keys, or none has
    one; ``mu`` 0: none): pairs of stacked parameters and stacked anchors, in the anchor's key order
    (as :meth:`~pwffsim.learn.state.TrainableState.proximal_term`)."""
    anchor = anchors[0]
    if anchor is None or not mu:
        return ProximalTerm([], mu, form)
    pairs = [(stacked[k], torch.stack([a[k].detach().to(stacked[k].dtype) for a in anchors])) for k in anchor]
    return ProximalTerm(pairs, mu, form)


def _steps(L, layout, step: StepRows, data, orders, opt, prox, select: bool, buckets: bool) -> list[Tensor]:
    """The supervised steps of :func:`supervised_many`; each step's per-client losses."""
    ts, B, K = L.train_spec, L.train_spec.batch_size, step.clients
    shown = []
    with per_client_forward(layout, step, select_logits=select):
        for s in range(len(orders[0]) // B):
            idx = [o[s * B:(s + 1) * B] for o in orders]
            ids = torch.cat([d[0][i] for d, i in zip(data, idx)])
            labels = torch.cat([d[1][i] for d, i in zip(data, idx)])
            loss, seen = client_losses(step_ce(L.model, step, ids, labels, select, buckets), labels, K,
                                       ts.loss_average)
            shown.append(seen.detach())
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad or prox.in_loss:
                (loss.sum() + prox() if prox.in_loss else loss.sum()).backward()
            step.weight_grads()
            opt.step()
            prox.after_step(ts.learning_rate)
    opt.zero_grad(set_to_none=True)
    return shown


def supervised_many(L, jobs: Sequence[TrainJob], gens: Sequence[torch.Generator], *,
                    starts: Sequence[Mapping[str, Tensor]] | None = None,
                    anchors: Sequence[Mapping[str, Tensor] | None] | None = None, mu: float | None = None,
                    keys: Sequence[str] | None = None, steps: int | None = None,
                    buckets: bool = True, select: bool = True) -> tuple[dict[str, Tensor], list[float]]:
    """The supervised steps of every job together (see the module docstring), as
    ``Learner._supervised_steps``: ``steps`` (default ``local_steps``) steps of a fresh optimizer on
    ``keys`` (default every trainable key; the others frozen) from ``starts`` (default the jobs' start
    states), with the proximal term ``mu`` (default ``prox_mu``) towards ``anchors`` (default the
    jobs' ``prox_anchor``); ``(stacked trained state, each job's mean loss)``. ``buckets`` /
    ``select``: the length buckets and the LM head at the response positions only (off: one forward
    of the rows cut to the step's longest, every logit)."""
    ts, st, layout = L.train_spec, L.trainable_state, learner_layout(L)
    K, B = len(jobs), ts.batch_size
    steps = ts.local_steps if steps is None else steps
    starts = [j.start_state for j in jobs] if starts is None else starts
    trained = set(st.params if keys is None else keys)
    data = [L.batches[j.client].train for j in jobs]
    orders = [epoch_order(ids.shape[0], steps * B, g)[:steps * B] for (ids, _), g in zip(data, gens)]
    stacked = {k: torch.stack([s[k] for s in starts]).to(p.dtype).requires_grad_(k in trained)
               for k, p in st.params.items()}
    if not steps:
        return {k: v.detach() for k, v in stacked.items()}, [math.nan] * K
    prox = stacked_prox([j.prox_anchor for j in jobs] if anchors is None else anchors,
                        ts.prox_mu if mu is None else mu, ts.prox_form, stacked)
    opt = make_optimizer(ts.optimizer, [v for k, v in stacked.items() if k in trained], ts.learning_rate)
    L.model.train()
    shown = _steps(L, layout, StepRows(stacked, K, B, data[0][0].shape[1]), data, orders, opt, prox,
                   select and layout.head is not None, buckets)
    by_step = torch.stack(shown)
    return {k: v.detach() for k, v in stacked.items()}, [float(by_step[:, k].mean()) for k in range(K)]


def _group_key(L, job: TrainJob):
    """Jobs batch together iff their proximal anchors have the same keys (or none has one)."""
    if job.prox_anchor is None or not L.train_spec.prox_mu:
        return None
    return tuple(job.prox_anchor)


def _run_group(L, jobs: list[TrainJob]) -> list[TrainResult]:
    """One batched group: the supervised steps, the alignment steps (:mod:`.batched_align`) and the
    held-out metrics (:mod:`.batched_eval`) of every job together; FedRep and Ditto by
    :mod:`.batched_schemes`."""
    from .batched_align import align_many
    from .batched_eval import metrics_many

    if L.local_scheme != "joint":
        from .batched_schemes import ditto_many, fedrep_many

        return (fedrep_many if L.local_scheme == "fedrep" else ditto_many)(L, jobs)

    layout = learner_layout(L)
    gens = [torch.Generator().manual_seed(j.seed) for j in jobs]
    stacked, losses = supervised_many(L, jobs, gens)
    trained = [{key: v[k].clone() for key, v in stacked.items()} for k in range(len(jobs))]
    aligned = [(float("nan"), 0)] * len(jobs)
    if L.train_spec.align_steps:
        trained, aligned = align_many(L, layout, jobs, gens, trained)
    metrics = metrics_many(L, layout, jobs, trained)
    return [L.joint_result(j, s, loss, m, *a) for j, s, loss, m, a in zip(jobs, trained, losses, metrics, aligned)]


def run_many(L, jobs: list[TrainJob]) -> list[TrainResult]:
    """The results of ``L.run(job)`` for every job, in order, computed batched where possible (see
    the module docstring)."""
    for job in jobs:  # run's errors, before anything is computed
        L.check_job(job)
    if len(jobs) < 2 or learner_layout(L).blocker is not None:
        return [L.run(j) for j in jobs]
    st, ts = L.trainable_state, L.train_spec
    groups: dict[object, list[int]] = {}
    alone = []
    for i, job in enumerate(jobs):
        st.load(job.start_state)  # run's checks of the states
        st.proximal_term(job.prox_anchor, ts.prox_mu, ts.prox_form)
        if L.local_scheme == "ditto" and job.personal_start is not None:
            st.load(job.personal_start)
        if L.batches[job.client].train[0].shape[0] == 0:  # no training row: run's error
            alone.append(i)
        else:
            groups.setdefault(_group_key(L, job), []).append(i)
    results: dict[int, TrainResult] = {}
    for members in groups.values():
        if len(members) == 1:
            alone.extend(members)
            continue
        results.update(zip(members, _run_group(L, [jobs[i] for i in members])))
    for i in alone:
        results[i] = L.run(jobs[i])
    return [results[i] for i in range(len(jobs))]
