"""Local updates of the personalized-FL baselines (``TrainSpec.local_scheme``), built from the
:class:`~pwffsim.learn.train.Learner`'s pieces: its supervised steps, its RLOO aligner, its trainable
state and its held-out metrics. :meth:`Learner.run <pwffsim.learn.train.Learner.run>` dispatches here
for every local scheme but ``"joint"``.

**FedRep** (Collins et al., ICML 2021, "Exploiting shared representations for personalized federated
learning"), ``"fedrep"``: PWFF's split (the adapters are the global representation, LoRA the
personal head), but the head and the representation train in turn instead of jointly:

1. the personal part alone (adapters frozen: ``requires_grad`` off, not in the optimizer):
   ``local_steps`` supervised steps, then the ``align_steps`` RLOO steps (the personal objective is
   the head's), no proximal term (it would anchor only the frozen global part);
2. the global part alone (LoRA frozen): ``fedrep_global_steps`` supervised steps (a fresh ``TrainSpec.optimizer``),
   with the proximal term ``prox_mu`` on the anchor's global keys.

The batches of both phases come from one generator seeded with ``job.seed`` (phase 1's permutations,
then phase 2's). ``train_loss`` is the step-weighted mean over both phases' supervised steps; the
metrics are the locally updated state's (as for the joint update).

**Ditto** (Li et al., ICML 2021, "Ditto: fair and robust federated learning through
personalization"), ``"ditto"``: the global model (``job.start_state``, every trainable key) is
updated exactly as ``"joint"`` (FedAvg / FedProx: same seed, same steps, same ``prox_anchor``), and
returned in ``state``; then the device's own full model ``v_k`` (``job.personal_start``; None: the
initial state) is updated from its own value with the same seed (so the same batches), the same
supervised and alignment steps and, instead of the proximal term, the pull
``ditto_lambda/2 * ||v_k - w||^2`` towards the downloaded global ``w = job.start_state`` over every
key (``ditto_lambda = 0``: a plain local update of ``v_k``). It is returned in ``personal_state``;
the held-out metrics (``eval_loss``, rewards, ``objective``) are ``v_k``'s; ``train_loss`` and
``align_reward`` are the global update's (what is uploaded). Charged: both updates
(:func:`pwffsim.learn.cost.update_phases`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch

from .contract import TrainJob, TrainResult
from .state import ProximalTerm, frozen

if TYPE_CHECKING:  # pragma: no cover
    from .train import Learner

#: The metrics of ``Learner._metrics`` a result carries: its fields but those set here.
_METRIC_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainResult)) - {
    "client", "round", "state", "num_samples", "train_loss", "flops", "tokens", "align_reward",
    "personal_state"}


def _seeded(seed: int) -> torch.Generator:
    """Seed torch (dropout) and return the job's batch generator, as the joint update does."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _result(L: Learner, job: TrainJob, train_loss: float, align_reward: float, state: dict,
            **extra: Any) -> TrainResult:
    """The result with the held-out metrics of the model now loaded (every metric ``_metrics``
    gives that is a :class:`TrainResult` field) and the learner's constant cost."""
    L.model.eval()
    m = L._metrics(job.client, job.pref_help, job.pref_safe)
    flops, tokens = L.estimate_cost()
    metrics = {k: v for k, v in m.items() if k in _METRIC_FIELDS}
    return TrainResult(client=job.client, round=job.round, state=state,
                       num_samples=L.batches[job.client].train[0].shape[0], train_loss=train_loss,
                       flops=flops, tokens=tokens, align_reward=align_reward, **metrics, **extra)


def _mean_over_steps(pairs: list[tuple[float, int]]) -> float:
    """Step-weighted mean of per-phase mean losses (phases without steps are left out)."""
    done = [(loss, n) for loss, n in pairs if n]
    steps = sum(n for _, n in done)
    return sum(loss * n for loss, n in done) / steps if steps else math.nan


def run_fedrep(L: Learner, job: TrainJob) -> TrainResult:
    """FedRep's local update (see the module docstring)."""
    ts, st, c = L.train_spec, L.trainable_state, job.client
    b = L.batches[c]
    gen = _seeded(job.seed)
    st.load(job.start_state)
    global_keys = set(st.group_keys("adapter"))
    personal = [p for k, p in st.params.items() if k not in global_keys]
    shared = [p for k, p in st.params.items() if k in global_keys]
    none = ProximalTerm([], ts.prox_mu, ts.prox_form)
    with frozen(shared):
        head_loss = L._supervised_steps(c, gen, none, params=personal)
        align_reward, skipped = L.aligner.run(b.train_prompts, b.data.train, gen, personal, none,
                                              job.pref_help, job.pref_safe)
    anchor = None if job.prox_anchor is None else {
        k: v for k, v in job.prox_anchor.items() if k in global_keys}
    with frozen(personal):
        prox = st.proximal_term(anchor, ts.prox_mu, ts.prox_form)
        body_loss = L._supervised_steps(c, gen, prox, params=shared, steps=ts.fedrep_global_steps)
    train_loss = _mean_over_steps([(head_loss, ts.local_steps), (body_loss, ts.fedrep_global_steps)])
    trained = st.extract()
    res = _result(L, job, train_loss, align_reward, trained, align_steps_skipped=skipped)
    res.eval_loss_global_only = L.global_only_loss(c, trained, job.personal_reset)
    return res


def run_ditto(L: Learner, job: TrainJob) -> TrainResult:
    """Ditto's local update: the global model as the joint update, then the personal model pulled
    towards the downloaded global one (see the module docstring)."""
    ts, st, c = L.train_spec, L.trainable_state, job.client
    b = L.batches[c]
    gen = _seeded(job.seed)
    st.load(job.start_state)
    prox = st.proximal_term(job.prox_anchor, ts.prox_mu, ts.prox_form)
    train_loss = L._supervised_steps(c, gen, prox)
    align_reward, skipped = L.aligner.run(b.train_prompts, b.data.train, gen, st.trainable, prox,
                                          job.pref_help, job.pref_safe)
    global_after = st.extract()

    gen = _seeded(job.seed)
    st.load(st.initial if job.personal_start is None else job.personal_start)
    pull = st.proximal_term(job.start_state, ts.ditto_lambda, ts.prox_form)
    L._supervised_steps(c, gen, pull)
    L.aligner.run(b.train_prompts, b.data.train, gen, st.trainable, pull, job.pref_help, job.pref_safe)
    res = _result(L, job, train_loss, align_reward, global_after, personal_state=st.extract(),
                  align_steps_skipped=skipped)
    # the personalization gap: the global track's model against the personal one, same rows
    st.load(global_after)
    res.eval_loss_global_only = L._eval_loss(c)
    return res


_PROCEDURES = {"fedrep": run_fedrep, "ditto": run_ditto}


def run_local_scheme(L: Learner, job: TrainJob) -> TrainResult:
    """The local update of ``L.train_spec.local_scheme`` (not ``"joint"``: that is ``Learner.run``)."""
    return _PROCEDURES[L.train_spec.local_scheme](L, job)
