"""The RLOO alignment steps of several clients at once, after their batched supervised steps
(:mod:`pwffsim.learn.batched`): what :meth:`RLOOAligner.run <pwffsim.learn.align.RLOOAligner.run>`
does for each client, with the forwards of every client's rows together (:mod:`pwffsim.learn.stacked`).

Per step, each client draws its prompts from its own generator; one generation samples every client's
responses (each client's rows from its own generator, token after token, as its own generation
would: :meth:`~pwffsim.learn.align.ResponseSampler.generate` with a sequence of generators); each
client's responses are scored as its own. A client whose step is skipped (every advantage zero) drops
out of that step; the others' log-probs (and, with the KL term, their reference log-probs) come from
one forward; the loss is the sum of their RLOO losses (:meth:`~pwffsim.learn.align.RLOOAligner.policy_loss`).
Each client keeps its own trainable tensors and its own optimizer (a skipped step must leave its
optimizer state untouched), stepped with its own gradient, then its own proximal step.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from .align import equal_groups
from .contract import TrainJob
from .optim import make_optimizer
from .stacked import StackLayout, StepRows, per_client_forward
from .state import ProximalTerm


class _Client:
    """One client's alignment phase: its trainable tensors, optimizer, proximal term, reference and
    what its steps gave."""

    def __init__(self, L, job: TrainJob, gen: torch.Generator, state: dict[str, Tensor],
                 anchor: Mapping[str, Tensor] | None, mu: float, keys: set[str]):
        ts = L.train_spec
        self.job, self.gen, self.data = job, gen, L.batches[job.client]
        self.params = {k: v.detach().clone().requires_grad_(k in keys) for k, v in state.items()}
        self.opt = make_optimizer(ts.optimizer, [p for p in self.params.values() if p.requires_grad],
                                  ts.align_learning_rate)
        anchor = anchor if mu else None
        self.prox = ProximalTerm([] if anchor is None else
                                 [(self.params[k], v.detach().to(self.params[k].dtype)) for k, v in anchor.items()],
                                 mu, ts.prox_form)
        self.ref = {k: v.detach().clone() for k, v in state.items()} if ts.align_kl_coef > 0 else None
        self.rewards: list[float] = []
        self.skipped = 0

    def skip(self, r: Tensor) -> None:
        self.rewards.append(float(r.mean()))
        self.skipped += 1

    def result(self) -> tuple[dict[str, Tensor], tuple[float, int]]:
        self.opt.zero_grad(set_to_none=True)
        mean = sum(self.rewards) / len(self.rewards) if self.rewards else float("nan")
        return {k: v.detach().clone() for k, v in self.params.items()}, (mean, self.skipped)


def _stack(values: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([v[k] for v in values]) for k in values[0]}


def _forward_logp(L, layout: StackLayout, stacked: dict[str, Tensor], x: Tensor, xm: Tensor, new: Tensor,
                  n: int, record: bool) -> tuple[Tensor, StepRows]:
    K = len(next(iter(stacked.values())))
    step = StepRows(stacked, K, n, x.shape[1], rows=torch.arange(x.shape[0]), record=record)
    with per_client_forward(layout, step):
        return L.aligner._response_logp(x, xm, new), step


def _sample(L, layout: StackLayout, clients: list[_Client]) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Every client's ``(ids, mask, new, r)`` of this step (as ``RLOOAligner._sample_and_score``)."""
    al = L.aligner
    drawn = [al.draw_prompts(c.data.train_prompts, c.gen) for c in clients]
    ids, mask = torch.cat([d[0] for d in drawn]), torch.cat([d[1] for d in drawn])
    n = drawn[0][0].shape[0]
    step = StepRows(_stack([{k: v.detach() for k, v in c.params.items()} for c in clients]), len(clients), n,
                    ids.shape[1], rows=torch.arange(ids.shape[0]), record=False)
    with per_client_forward(layout, step):
        new = L.sampler.generate(ids, mask, [c.gen for c in clients]).split(n)
    return [(d[0], d[1], nw, al.score(c.data.data.train, d[2], nw, c.job.pref_help, c.job.pref_safe))
            for c, d, nw in zip(clients, drawn, new)]


def _step(L, layout: StackLayout, clients: list[_Client]) -> None:
    """One RLOO step of every client (see the module docstring)."""
    al, lr = L.aligner, L.train_spec.align_learning_rate
    sampled = _sample(L, layout, clients)
    active = []
    for c, (ids, mask, new, r) in zip(clients, sampled):
        if c.ref is None and bool(equal_groups(r).all()):
            c.skip(r)
        else:
            active.append((c, ids, mask, new, r))
    if not active:
        return
    x, xm = (torch.cat(t) for t in zip(*[al.policy_inputs(ids, mask, new) for _, ids, mask, new, _ in active]))
    new = torch.cat([a[3] for a in active])
    n = active[0][3].shape[0]
    logp_ref = None
    if active[0][0].ref is not None:
        with torch.no_grad():
            logp_ref = _forward_logp(L, layout, _stack([a[0].ref for a in active]), x, xm, new, n, False)[0].split(n)
    first = active[0][0].params
    stacked = {k: v.detach().requires_grad_(first[k].requires_grad)
               for k, v in _stack([a[0].params for a in active]).items()}
    logp, rows = _forward_logp(L, layout, stacked, x, xm, new, n, True)
    losses, trained = [], []
    for i, ((c, _, _, nw, r), lp) in enumerate(zip(active, logp.split(n))):
        loss = al.policy_loss(r, lp, None if logp_ref is None else logp_ref[i], al.sampler.until_eos(nw))
        if loss is None:
            c.skip(r)
            continue
        c.rewards.append(float(r.mean()))
        losses.append(loss + c.prox() if c.prox.in_loss else loss)
        trained.append((i, c))
    if not trained:
        return
    for _, c in trained:
        c.opt.zero_grad(set_to_none=True)
    sum(losses).backward()
    rows.weight_grads()
    for i, c in trained:
        for k, p in c.params.items():
            if p.requires_grad:
                g = stacked[k].grad[i]
                p.grad = g if p.grad is None else p.grad + g
        c.opt.step()
        c.prox.after_step(lr)


def align_many(L, layout: StackLayout, jobs: Sequence[TrainJob], gens: Sequence[torch.Generator],
               states: Sequence[dict[str, Tensor]], *, anchors: Sequence[Mapping[str, Tensor] | None] | None = None,
               mu: float | None = None, keys: Sequence[str] | None = None
               ) -> tuple[list[dict[str, Tensor]], list[tuple[float, int]]]:
    """Each job's ``align_steps`` RLOO steps from its ``state`` (after its supervised steps), on its
    generator, training ``keys`` (default all), with the proximal term ``mu`` (default ``prox_mu``)
    towards ``anchors`` (default the jobs' ``prox_anchor``): ``(aligned states, [(align_reward,
    align_steps_skipped)])``, as ``L.aligner.run``."""
    ts = L.train_spec
    anchors = [j.prox_anchor for j in jobs] if anchors is None else anchors
    trained = set(states[0] if keys is None else keys)
    clients = [_Client(L, j, g, s, a, ts.prox_mu if mu is None else mu, trained)
               for j, g, s, a in zip(jobs, gens, states, anchors)]
    for _ in range(L.train_spec.align_steps):
        _step(L, layout, clients)
    out = [c.result() for c in clients]
    return [o[0] for o in out], [o[1] for o in out]
