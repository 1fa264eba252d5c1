"""One client's local update and its analytic cost.

A local update = supervised fine-tuning of the trainable state (LoRA + bottleneck adapters) on the
client's instruction data, then (``TrainSpec.align_steps > 0``) local multi-objective alignment with
RLOO on the client's personalized reward ``w_help * r_help + w_safe * r_safe``, then held-out metrics
(``TrainSpec.local_scheme = "joint"``; the FedRep and Ditto procedures are in
:mod:`pwffsim.learn.local_schemes`, reached from :meth:`Learner.run`).

The learning side knows nothing about simulated time and never imports simpy: the simulator turns
the FLOPs reported here into compute time and energy with a device profile.

Reproducibility: :meth:`Learner.run` depends only on the specs and the job. It seeds torch with
``job.seed``, samples batches from a ``torch.Generator`` seeded with ``job.seed``, loads
``job.start_state`` into the (reused) peft model by direct parameter copies and builds a new
optimizer per job (``TrainSpec.optimizer``, AdamW or SGD: one for the supervised steps, one for the
alignment steps; :mod:`pwffsim.learn.optim`), so neither earlier calls nor the process running it
matter. Alignment sampling uses ``torch.multinomial`` with the same
``torch.Generator``. Bit-identical
results across processes additionally need the same torch build and thread count (``torch_threads``,
default 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from .align import PreferenceRewards, ResponseSampler, RLOOAligner
from .batches import ClientBatches, ClientsView, Rows, epoch_order
from .contract import LOCAL_SCHEMES, TrainJob, TrainResult
from .cost import update_cost
from .costmodel import charged_model
from .data import DataSpec
from .metrics import NO_REWARDS, always_refuse_metrics, reward_metrics
from .model import ModelSpec, build_peft_model, position_limit
from .optim import (LOSS_AVERAGES, OPTIMIZERS, held_out_totals, make_optimizer, position_cross_entropy,
                    response_loss)
from .state import GROUPS, PROX_FORMS, TrainableState

__all__ = ["GROUPS", "Learner", "TrainJob", "TrainResult", "TrainSpec"]


def _not_positive_finite(v: float) -> bool:
    return not (v > 0 and math.isfinite(v))


#: ``(field, requirement, violated(value))`` of :class:`TrainSpec`, checked in this order.
_TRAIN_SPEC_LIMITS: tuple[tuple[str, str, Callable[[float], bool]], ...] = (
    ("local_steps", ">= 0", lambda v: v < 0),
    ("batch_size", ">= 1", lambda v: v < 1),
    ("seq_len", ">= 2", lambda v: v < 2),
    ("learning_rate", "> 0", _not_positive_finite),
    ("eval_batches", ">= 0", lambda v: v < 0),
    ("prox_mu", "finite and >= 0", lambda v: not (v >= 0 and math.isfinite(v))),
    ("align_steps", ">= 0", lambda v: v < 0),
    ("metric_prompts", ">= 0", lambda v: v < 0),
    ("align_prompts", ">= 1", lambda v: v < 1),
    ("align_samples", ">= 2 (leave-one-out baseline)", lambda v: v < 2),
    ("align_max_new_tokens", ">= 1", lambda v: v < 1),
    ("align_learning_rate", "> 0", _not_positive_finite),
    ("align_kl_coef", "finite and >= 0", lambda v: not (v >= 0 and math.isfinite(v))),
    ("fedrep_global_steps", ">= 0", lambda v: v < 0),
    ("ditto_lambda", "finite and >= 0", lambda v: not (v >= 0 and math.isfinite(v))),
)
#: ``(field, choices)`` of :class:`TrainSpec`'s named options.
_TRAIN_SPEC_CHOICES = (("local_scheme", LOCAL_SCHEMES), ("optimizer", OPTIMIZERS),
                       ("loss_average", LOSS_AVERAGES), ("prox_form", PROX_FORMS))


@dataclass(frozen=True)
class TrainSpec:
    local_steps: int = 5
    batch_size: int = 8
    seq_len: int = 32
    learning_rate: float = 3e-3
    eval_batches: int = 1  # 0 = no eval (eval_loss, eval_loss_others nan)
    prox_mu: float = 0.0   # proximal weight mu (term mu/2 ||theta - anchor||^2 on job.prox_anchor)
    # "decoupled": exact proximal step after every optimizer step; "gradient": the term in the loss
    # (pwffsim.learn.state.ProximalTerm)
    prox_form: str = "decoupled"
    optimizer: str = "adamw"       # "adamw" | "sgd" (plain SGD), both phases (pwffsim.learn.optim)
    loss_average: str = "sample"   # "sample" (mean of per-row means) | "token" (pwffsim.learn.optim)
    align_steps: int = 0   # RLOO alignment steps after the supervised ones; 0 = no alignment
    align_prompts: int = 8         # prompts per alignment step (from the client's training data)
    align_samples: int = 4         # K sampled responses per prompt (RLOO needs K >= 2)
    # Fixed generation length (no early stop: fixed FLOPs). 14 fits every built-in answer + eos
    # (the longest borderline answers have 12 words); metrics decode greedily to the same length.
    align_max_new_tokens: int = 14
    align_learning_rate: float = 2e-3
    # KL-to-reference coefficient beta of RLOO (reward r - beta * KL; 0 = none; pwffsim.learn.align)
    align_kl_coef: float = 0.0
    metric_prompts: int = 8        # held-out prompts for reward metrics (greedy); 0 = none (nan)
    help_reward: str = "help-rule"  # reward models (pwffsim.learn.rewards.build_reward_model)
    safe_reward: str = "safe-rule"
    # Charge the measurement (held-out eval and greedy metric decoding) to the device's FLOPs too;
    # default: only training and alignment are charged (pwffsim.learn.cost).
    charge_measurement: bool = False
    # The local procedure (pwffsim.learn.contract.LOCAL_SCHEMES; pwffsim.learn.local_schemes) and its
    # knobs: FedRep's supervised steps on the global part (adapters) after the personal ones, Ditto's
    # pull lambda/2 ||v_k - w||^2 of the personal model towards the downloaded global one.
    local_scheme: str = "joint"
    fedrep_global_steps: int = 1
    ditto_lambda: float = 0.1

    def __post_init__(self) -> None:
        for name, requirement, violated in _TRAIN_SPEC_LIMITS:
            value = getattr(self, name)
            if violated(value):
                raise ValueError(f"{name} must be {requirement}, got {value}")
        for name, choices in _TRAIN_SPEC_CHOICES:
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")


def _check_preferences(job: TrainJob) -> None:
    for name in ("pref_help", "pref_safe"):
        v = getattr(job, name)
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {v}")


class Learner:
    """Runs clients' local updates on one reused peft model (LoRA + bottleneck adapters); implements
    :class:`pwffsim.learn.contract.Learner` by coordinating its rooms: the trainable state
    (:mod:`.state`), the tokenised client tensors (:mod:`.batches`), generation and RLOO alignment
    (:mod:`.align`) and the analytic cost model (:mod:`.cost`).

    **Trainable state**: one dict, LoRA keys as peft names them
    (``...c_attn.lora_A.weight``), adapter keys their parameter names (``...mlp.adapter.down.weight``).
    :meth:`parameter_group` tells ``"lora"`` from ``"adapter"``; the caller decides which group is
    global (aggregated) or personal; the learner takes and returns the full state.

    **A local update** (:meth:`run`): ``local_steps`` supervised steps of ``optimizer`` (loss on the
    response tokens, averaged per sample or per token: ``loss_average``, :mod:`pwffsim.learn.optim`),
    then ``align_steps`` RLOO steps (:mod:`pwffsim.learn.align`), both with the proximal term
    ``prox_mu/2 * sum_k ||theta_k - anchor_k||^2`` over ``job.prox_anchor``'s keys (by default an
    exact proximal step after each optimizer step, ``prox_form``,
    :class:`~pwffsim.learn.state.ProximalTerm`); then the held-out
    metrics: ``eval_loss`` (own eval rows), ``eval_loss_others`` (a fixed pool of other clients'
    eval rows, as many rows as the own eval, round-robin over ``DataSpec.reference_clients``
    reference clients drawn once from the seed, :func:`~pwffsim.learn.clients.reference_clients`: a
    cross-client measure), ``eval_loss_global_only`` (own eval rows, the personal part reset to
    ``job.personal_reset``: the personalization gap ``eval_loss_global_only - eval_loss`` is measured
    on the same data) and the reward metrics of greedy answers to the client's ``metric_prompts``
    stratified prompts (:mod:`pwffsim.learn.metrics`).

    **FLOPs model**: analytic, in :mod:`pwffsim.learn.cost`; :meth:`estimate_cost` (the charged
    FLOPs: training and alignment, plus evaluation and metrics with
    ``TrainSpec.charge_measurement``) equals what :meth:`run` reports, and ``cost_breakdown`` holds
    every part and which are charged.
    """

    def __init__(self, model_spec: ModelSpec, data_spec: DataSpec, train_spec: TrainSpec,
                 torch_threads: int | None = 1):
        if torch_threads is not None:
            torch.set_num_threads(int(torch_threads))
        self.model_spec, self.data_spec, self.train_spec = model_spec, data_spec, train_spec
        ts = train_spec
        self.model, self.tokenizer = build_peft_model(model_spec)
        self.model.eval()
        n_pos = position_limit(self.model.config)
        if n_pos is not None and ts.seq_len > n_pos:
            raise ValueError(f"seq_len {ts.seq_len} exceeds the model's {n_pos} positions")
        # Per-client data and tensors are made on a client's first use (cached, LRU): nothing here.
        self.batches = ClientBatches(data_spec, self.tokenizer, ts.seq_len,
                                     eval_rows=ts.eval_batches * ts.batch_size,
                                     metric_prompts=ts.metric_prompts)
        need_gen = ts.metric_prompts > 0 or ts.align_steps > 0
        if need_gen and n_pos is not None and self.prompt_len + ts.align_max_new_tokens > n_pos:
            raise ValueError(f"prompt length {self.prompt_len} + align_max_new_tokens "
                             f"{ts.align_max_new_tokens} exceeds the model's {n_pos} positions")
        self.sampler = ResponseSampler(self.model, self.tokenizer, self.batches.eos,
                                       ts.align_max_new_tokens)
        self.rewards = PreferenceRewards(ts.help_reward, ts.safe_reward) if need_gen else None
        self.aligner = RLOOAligner(self.model, self.sampler, self.rewards, ts, self.prompt_len)
        self.trainable_state = TrainableState(self.model)
        # What devices are charged for: this model, or model_spec.cost_model built on meta.
        self.charged = charged_model(self.model, model_spec)
        if ts.local_scheme == "fedrep" and not (self.group_keys("lora") and self.group_keys("adapter")):
            raise ValueError("local_scheme 'fedrep' trains LoRA (personal) and adapters (global) in turn: "
                             "the model needs both (adapter_size > 0)")
        self._cost, self.cost_breakdown = update_cost(
            self.charged.per_token, ts, self.charged.trainable_params, self.prompt_len,
            len(self.clients), self.charged.per_token_by_group)

    # ---------------------------------------------------------------------------------- info
    @property
    def prompt_len(self) -> int:
        """The fixed (left-padded) prompt length ``P`` in tokens."""
        return self.batches.prompt_len

    @property
    def local_scheme(self) -> str:
        """The local procedure this learner runs (``TrainSpec.local_scheme``; every job must ask for it)."""
        return self.train_spec.local_scheme

    @property
    def num_clients(self) -> int:
        return self.data_spec.num_clients

    @property
    def clients(self) -> ClientsView:
        """Every client's :class:`~pwffsim.learn.clients.ClientData` by index, made on first use."""
        return ClientsView(self.batches)

    @property
    def param_counts(self) -> dict:
        total = sum(p.numel() for p in self.model.parameters())
        st = self.trainable_state
        return {"total": int(total), "trainable": st.numel(),
                **{g: st.numel(st.group_keys(g)) for g in GROUPS}}

    def parameter_group(self, key: str) -> str:
        """``"lora"`` or ``"adapter"`` for a key of the trainable state (``KeyError`` otherwise)."""
        return self.trainable_state.parameter_group(key)

    def group_keys(self, group: str) -> list[str]:
        """The trainable-state keys of ``group`` (``"lora"`` or ``"adapter"``), in model order."""
        return self.trainable_state.group_keys(group)

    def num_samples(self, client: int) -> int:
        """``client``'s training-set size, from the spec (O(1): makes nothing)."""
        return self.data_spec.train_samples(self._check_client(client))

    def client_tensors(self, client: int) -> Rows:
        """``(input_ids, labels)`` of ``client``'s training set, as :meth:`run` samples them."""
        return self.batches[self._check_client(client)].train

    def initial_state(self) -> dict[str, Tensor]:
        """The trainable state right after initialisation (LoRA B = 0 and adapter up-projections = 0:
        the model equals the base)."""
        return {k: v.clone() for k, v in self.trainable_state.initial.items()}

    def estimate_cost(self) -> tuple[float, int]:
        """The charged ``(flops, tokens)`` of one :meth:`run` (see :mod:`pwffsim.learn.cost`;
        every part in :attr:`cost_breakdown`)."""
        return self._cost

    def charged_payload_bytes(self, groups) -> int:
        """Bytes of a transfer of the parameter ``groups`` (the global ones) as charged: their
        parameters in the charged model x ``update_dtype`` bytes (:mod:`pwffsim.learn.costmodel`)."""
        return self.charged.payload_bytes(groups)

    def describe(self) -> dict:
        """What an orchestrator in another process needs of this learner, in plain values: the
        ``initial_state``, every key's ``groups`` (:meth:`parameter_group`), ``cost``
        (:meth:`estimate_cost`) and ``local_scheme`` (see :class:`pwffsim.sim.remote.RemoteLearner`)."""
        init = self.initial_state()
        return {"initial_state": init, "groups": {k: self.parameter_group(k) for k in init},
                "cost": self.estimate_cost(), "local_scheme": self.local_scheme}

    # ---------------------------------------------------------------------------------- work
    def _check_client(self, client: int) -> int:
        if not 0 <= client < self.num_clients:
            raise ValueError(f"client {client} out of range 0..{self.num_clients - 1}")
        return client

    @torch.no_grad()
    def _loss_on(self, rows: Rows | None) -> float:
        """Mean cross-entropy (nats) of ``rows``' response tokens, in batches (nan if no rows):
        ``loss_average = "sample"`` the mean over rows of each row's per-token mean, ``"token"`` the
        mean over every response token (:mod:`pwffsim.learn.optim`)."""
        if rows is None or rows[0].shape[0] == 0:
            return float("nan")
        ids, labels = rows
        self.model.eval()
        bs, total, count = self.train_spec.batch_size, 0.0, 0
        for i in range(0, ids.shape[0], bs):
            x, y = ids[i:i + bs], labels[i:i + bs]
            t, n = held_out_totals(position_cross_entropy(self.model(input_ids=x).logits, y), y,
                                   self.train_spec.loss_average)
            total, count = total + t, count + n
        return total / count if count else float("nan")

    def _eval_loss(self, client: int) -> float:
        return self._loss_on(self.batches[client].eval)

    def _metrics(self, client: int, pref_help: float, pref_safe: float) -> dict:
        """Held-out losses and the reward metrics of greedy answers (:mod:`pwffsim.learn.metrics`)."""
        b = self.batches[client]
        out = dict(eval_loss=self._eval_loss(client), eval_loss_others=self._loss_on(b.eval_others),
                   **NO_REWARDS)
        if b.metric_samples:
            ids, mask = b.metric_prompts
            responses = self.sampler.decode(self.sampler.generate(ids, mask, None))
            out.update(reward_metrics(self.rewards, b.metric_samples, responses, pref_help, pref_safe))
        return out

    def evaluate(self, state: Mapping[str, Tensor], client: int) -> float:
        """Eval loss of ``state`` on ``client``'s held-out set (same rows as in :meth:`run`)."""
        self.trainable_state.load(state)
        return self._eval_loss(self._check_client(client))

    def evaluate_metrics(self, state: Mapping[str, Tensor], client: int,
                         pref_help: float = 0.5, pref_safe: float = 0.5) -> dict:
        """The held-out metrics of :meth:`run` for ``state`` without training: ``eval_loss``,
        ``eval_loss_others``, ``reward_help``, ``reward_help_borderline``, ``reward_safe``,
        ``objective`` (:mod:`pwffsim.learn.metrics`), and ``objective_always_refuse``: the objective
        of refusing every metric prompt (the floor). Costs no FLOPs in the traces (it is not a local
        update)."""
        c = self._check_client(client)
        self.trainable_state.load(state)
        m = self._metrics(c, pref_help, pref_safe)
        samples = self.batches[c].metric_samples
        m["objective_always_refuse"] = (always_refuse_metrics(self.rewards, samples, pref_help, pref_safe)
                                        ["objective"] if samples else float("nan"))
        return m

    def _supervised_steps(self, client: int, gen: torch.Generator, prox, params=None,
                          steps: int | None = None) -> float:
        """``steps`` (default ``local_steps``) steps of a fresh ``optimizer`` on ``params`` (default
        every trainable parameter) on batches of ``client``'s training rows, drawn in
        :func:`~pwffsim.learn.batches.epoch_order`, each followed by the proximal step
        (``prox_form = "decoupled"``) or with the term in the loss (``"gradient"``); the mean loss
        (without the proximal term; nan if no step)."""
        ts = self.train_spec
        steps = ts.local_steps if steps is None else steps
        ids, labels = self.batches[client].train
        order = epoch_order(ids.shape[0], steps * ts.batch_size, gen)
        losses = []
        if steps:
            opt = make_optimizer(ts.optimizer, self.trainable_state.trainable if params is None else params,
                                 ts.learning_rate)
            self.model.train()
            for s in range(steps):
                idx = order[s * ts.batch_size:(s + 1) * ts.batch_size]
                loss = response_loss(self.model, ids[idx], labels[idx], ts.loss_average)
                losses.append(loss.detach())
                if prox.in_loss:
                    loss = loss + prox()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                prox.after_step(ts.learning_rate)
            opt.zero_grad(set_to_none=True)
        return float(torch.stack(losses).mean()) if losses else float("nan")

    def global_only_loss(self, client: int, state: Mapping[str, Tensor],
                         personal_reset: Mapping[str, Tensor] | None) -> float:
        """Eval loss of ``state`` with its personal part at its initial values ``personal_reset``
        (the personalization gap's reference, on the same rows); nan without a personal part."""
        if not personal_reset:
            return float("nan")
        self.trainable_state.load({**state, **personal_reset})
        return self._eval_loss(client)

    def check_job(self, job: TrainJob) -> int:
        """``job.client`` once the job is checked (client in range, preferences finite and >= 0, the
        learner's local scheme); the errors :meth:`run` raises."""
        c = self._check_client(job.client)
        _check_preferences(job)
        if job.local_scheme != self.local_scheme:
            raise ValueError(f"a {job.local_scheme!r} job for a learner built for local_scheme "
                             f"{self.local_scheme!r} (TrainSpec.local_scheme)")
        return c

    def run(self, job: TrainJob) -> TrainResult:
        """One local update of ``job.client`` (see the class docstring); deterministic given
        ``job`` (see the module docstring): :meth:`train`, then :meth:`measure`."""
        res = self.train(job)
        return res if res.measured else self._measure_loaded(job, res)

    def train(self, job: TrainJob) -> TrainResult:
        """The training of :meth:`run` alone: the trained state, its weight, training loss and cost;
        the held-out metrics are NaN and ``measured`` False until :meth:`measure` (the aggregation
        needs only this part; a pool measures while the next round trains). Under ``fedrep`` and
        ``ditto`` the result comes measured (their metrics are taken between their phases)."""
        c = self.check_job(job)
        if self.local_scheme != "joint":
            from .local_schemes import run_local_scheme

            return run_local_scheme(self, job)
        b = self.batches[c]  # made now if this is the client's first use (draws no torch randomness)
        torch.manual_seed(job.seed)
        gen = torch.Generator().manual_seed(job.seed)
        st = self.trainable_state
        st.load(job.start_state)
        prox = st.proximal_term(job.prox_anchor, self.train_spec.prox_mu, self.train_spec.prox_form)
        train_loss = self._supervised_steps(c, gen, prox)
        align_reward, skipped = self.aligner.run(b.train_prompts, b.data.train, gen,
                                                 st.trainable, prox, job.pref_help, job.pref_safe)
        return self.joint_result(job, st.extract(), train_loss, _NOT_MEASURED, align_reward, skipped, measured=False)

    def run_many(self, jobs: Sequence[TrainJob]) -> list[TrainResult]:
        """The local updates of ``jobs`` (in order), the supervised steps of those that can be
        computed together batched (:mod:`pwffsim.learn.batched`): each result equals :meth:`run`'s
        up to float round-off."""
        from .batched import run_many

        return run_many(self, list(jobs))

    def measure(self, job: TrainJob, res: TrainResult) -> TrainResult:
        """``res`` (of :meth:`train` for ``job``) with the held-out metrics of its trained state: the
        same values :meth:`run` gives (greedy decoding and eval losses draw no randomness)."""
        if res.measured:
            return res
        self._check_client(job.client)
        self.trainable_state.load(res.state)
        return self._measure_loaded(job, res)

    def _measure_loaded(self, job: TrainJob, res: TrainResult) -> TrainResult:
        """:meth:`measure` with ``res.state`` already in the model."""
        self.model.eval()
        m = self._metrics(job.client, job.pref_help, job.pref_safe)
        global_only = self.global_only_loss(job.client, res.state, job.personal_reset)
        return replace(res, eval_loss=m["eval_loss"], reward_help=m["reward_help"], reward_safe=m["reward_safe"],
                       objective=m["objective"], eval_loss_others=m["eval_loss_others"],
                       reward_help_borderline=m["reward_help_borderline"], eval_loss_global_only=global_only,
                       measured=True)

    def joint_result(self, job: TrainJob, trained: dict[str, Tensor], train_loss: float, m: Mapping,
                     align_reward: float, skipped: int, measured: bool = True) -> TrainResult:
        """A joint update's result: its trained state, losses, metrics ``m`` (:meth:`_metrics`'s and
        ``eval_loss_global_only``) and the learner's constant cost."""
        flops, tokens = self._cost
        return TrainResult(client=job.client, round=job.round, state=trained,
                           num_samples=self.batches[job.client].train[0].shape[0], train_loss=train_loss,
                           eval_loss=m["eval_loss"], flops=flops, tokens=tokens,
                           reward_help=m["reward_help"], reward_safe=m["reward_safe"],
                           objective=m["objective"], eval_loss_others=m["eval_loss_others"],
                           reward_help_borderline=m["reward_help_borderline"],
                           eval_loss_global_only=m["eval_loss_global_only"], align_reward=align_reward,
                           align_steps_skipped=skipped, measured=measured)


#: The held-out metrics of a result not measured yet (:meth:`Learner.train`).
_NOT_MEASURED = {name: math.nan for name in ("eval_loss", "reward_help", "reward_safe", "objective",
                                             "eval_loss_others", "reward_help_borderline", "eval_loss_global_only")}
