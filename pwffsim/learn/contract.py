"""The learning side's contract with the orchestrator.

The orchestrator (``pwffsim.sim``) never trains anything itself: it hands a :class:`TrainJob` to a
learner and gets a :class:`TrainResult` back, and it turns the FLOPs and payload sizes it is told into
simulated time and energy. This module states what it relies on, as a :class:`typing.Protocol`, so a
stub (``tests/conftest.py``), the real peft learner (:class:`pwffsim.learn.train.Learner`) or a
remote worker can stand behind the same calls.

Rules every learner keeps:

* **No notion of time.** A learner never sees simulated time, never imports simpy and never sleeps;
  cost is reported as FLOPs and tokens, and the simulator prices them with a device profile.
* **Deterministic given the job.** :meth:`Learner.run` depends only on the learner's construction and
  the job (``job.seed`` seeds every random draw), not on earlier calls or the process running it.
* **States are plain dicts** of CPU tensors keyed by parameter name; a learner returns new tensors
  and never modifies a state it was given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - type hints only: the contract imports without torch
    from torch import Tensor


#: The local procedures a learner may be asked for (``TrainJob.local_scheme``):
#:
#: * ``"joint"``: every trainable parameter trains together (the supervised then the alignment steps);
#: * ``"fedrep"`` (Collins et al. 2021): the personal part (LoRA) trains alone for the local steps,
#:   then the global part (adapters) alone for the learner's FedRep global steps; alignment trains the
#:   personal part only;
#: * ``"ditto"`` (Li et al. 2021): the global model (``start_state``) trains as in ``"joint"``, then
#:   the personal model ``personal_start`` trains from its own value with the pull
#:   ``lambda/2 ||v_k - w||^2`` towards the downloaded ``start_state``; returned in
#:   ``TrainResult.personal_state``.
LOCAL_SCHEMES = ("joint", "fedrep", "ditto")


@dataclass
class TrainJob:
    """One client's local update, as the orchestrator submits it."""
    client: int
    round: int
    seed: int
    start_state: dict[str, Tensor]  # full trainable state (LoRA keys as peft names them + adapters)
    pref_help: float = 0.5          # the client's weights of the personalized reward
    pref_safe: float = 0.5
    # The global part the client started from: proximal term mu/2 * sum_k ||theta_k - anchor_k||^2
    # over the anchor's keys (TrainSpec.prox_mu), as a proximal step after every optimizer step or
    # in every loss of the update (TrainSpec.prox_form).
    prox_anchor: dict[str, Tensor] | None = None
    # The personal part's initial values: eval_loss_global_only evaluates the trained state with them
    # in place of the trained personal part (the personalization gap on the client's own data).
    personal_reset: dict[str, Tensor] | None = None
    # The local procedure (one of LOCAL_SCHEMES): "joint" trains the whole state together (pwff,
    # lora-global, fedavg-all, local-only); "fedrep" alternates personal then global steps; "ditto"
    # also updates the device's personal full model from ``personal_start`` (see LOCAL_SCHEMES).
    local_scheme: str = "joint"
    # Ditto only: the device's own full personal model v_k (every trainable key); None: the
    # learner's initial state (a device's first update).
    personal_start: dict[str, Tensor] | None = None


@dataclass
class TrainResult:
    """What one local update returns: the trained state, its aggregation weight, metrics and cost."""
    client: int
    round: int
    state: dict[str, Tensor]  # trained trainable state (cpu clones), same keys
    num_samples: int          # client's train set size (aggregation weight)
    train_loss: float         # mean loss over the local steps (nan if local_steps == 0)
    eval_loss: float          # on the client's held-out eval set after training (nan if no eval)
    # Charged cost of this update: training and alignment, plus held-out eval and metric decoding
    # if the learner charges measurement (TrainSpec.charge_measurement); FLOPs, token positions.
    flops: float
    tokens: int
    # Reward metrics of greedy answers to the client's metric prompts (pwffsim.learn.metrics):
    reward_help: float = float("nan")   # mean helpfulness on the benign prompts
    reward_safe: float = float("nan")   # mean harmlessness on the borderline requests
    objective: float = float("nan")     # mean personal reward per prompt (rewards.prompt_reward)
    eval_loss_others: float = float("nan")  # loss on the reference clients' pooled held-out rows
    reward_help_borderline: float = float("nan")  # mean helpfulness on the borderline requests
    # eval_loss of the trained state with the personal part reset (job.personal_reset; nan without):
    # personalization gap = eval_loss_global_only - eval_loss, on the same rows
    eval_loss_global_only: float = float("nan")
    align_reward: float = float("nan")  # mean personalized reward of the sampled responses
    # RLOO steps skipped because every advantage was zero (no optimizer or proximal step)
    align_steps_skipped: int = 0
    # Ditto only: the device's personal full model v_k after its update (never uploaded); the
    # eval/reward/objective metrics above are then v_k's, ``state`` is the global track's.
    personal_state: dict[str, Tensor] | None = None
    # False while the held-out metrics above are still to be taken (a real learner's ``train``
    # returns such a result, its ``measure`` fills them in); a learner's ``run`` returns measured ones.
    measured: bool = True


@runtime_checkable
class Learner(Protocol):
    """What the orchestrator calls on a learner (and nothing else)."""

    def initial_state(self) -> dict[str, Tensor]:
        """A fresh copy of the trainable state before any update (the round-0 global model).

        Keys are parameter names, values CPU tensors; the payload size of a transfer is
        ``pwffsim.learn.aggregate.state_nbytes`` of (a part of) this state, unless the learner
        states it (:class:`ChargesPayload`). Must return a new dict of new tensors on every call."""
        ...

    def parameter_group(self, key: str) -> str:
        """The group (``"lora"`` or ``"adapter"``) of a key of the trainable state; the scenario
        decides which groups are global (aggregated) and which stay personal. ``KeyError`` for a key
        that is not in the state."""
        ...

    def estimate_cost(self) -> tuple[float, int]:
        """``(flops, tokens)`` charged for one local update: floating-point operations (FLOPs, not
        FLOP/s) and token positions computed, of the work the device is charged for (the real
        learner: training and alignment; held-out measurement only if it is told to charge it).
        Analytic and constant for a learner: it equals what every :meth:`run` reports, so the
        simulator can price an update before it runs. No timing."""
        ...

    def num_samples(self, client: int) -> int:
        """Size of ``client``'s training set (count of samples): its FedAvg aggregation weight."""
        ...

    def run(self, job: TrainJob) -> TrainResult:
        """Run one local update of ``job.client`` from ``job.start_state``.

        Deterministic given the learner and ``job`` (every random draw seeded by ``job.seed``);
        must not depend on earlier calls, must not modify ``job.start_state`` and knows nothing of
        simulated time. ``result.flops`` / ``result.tokens`` equal :meth:`estimate_cost`."""
        ...

    def evaluate_metrics(self, state: Mapping[str, Tensor], client: int,
                         pref_help: float, pref_safe: float) -> dict:
        """Held-out metrics of ``state`` for ``client`` without training: ``eval_loss`` and
        ``eval_loss_others`` (mean cross-entropy, nats per token), ``reward_help`` and
        ``reward_safe`` (mean rewards in [0, 1]) and ``objective`` (the personalized reward with the
        weights ``pref_help`` / ``pref_safe``); optionally ``reward_help_borderline`` and
        ``objective_always_refuse`` (:mod:`pwffsim.learn.metrics`); ``nan`` (or absent) for what the
        learner does not measure.
        Deterministic; costs nothing in the traces (it is not a local update)."""
        ...


@runtime_checkable
class ChargesPayload(Protocol):
    """Optional, beside :class:`Learner`: a learner that states the payload it charges.

    The real learner charges the update of the model it is told to charge
    (``model.cost_model``, :mod:`pwffsim.learn.costmodel`), which may be a real LLM while a tiny model
    is trained, and in ``model.update_dtype``. The orchestrator asks once, with the global groups of
    the scheme; a learner without this method (e.g. the tests' stub) is charged the global tensors'
    own bytes."""

    def charged_payload_bytes(self, groups: tuple[str, ...]) -> int:
        """Bytes of one transfer of the parameter ``groups`` (those of :meth:`Learner.parameter_group`
        that the scenario makes global): what is broadcast and what each client uploads. Constant for
        a learner; ``0`` for no groups."""
        ...


@runtime_checkable
class RunsLocalScheme(Protocol):
    """Optional, beside :class:`Learner`: a learner built for one local procedure of
    :data:`LOCAL_SCHEMES` (its cost, :meth:`Learner.estimate_cost`, is that procedure's).

    The orchestrator checks that it is the scenario's (``pwff.scheme`` ``"fedrep"`` / ``"ditto"``,
    else ``"joint"``). A learner without it (e.g. the tests' stub) is taken to run what each job
    asks; ``"ditto"`` needs a learner that states it (it must return ``TrainResult.personal_state``)."""

    local_scheme: str


@runtime_checkable
class MeasuresApart(Protocol):
    """Optional, beside :class:`Learner`: a learner whose local update splits into the training the
    aggregation needs and the held-out measurement only the traces need, so that a parallel executor
    can measure one round's clients while the next round trains. ``measure(job, train(job))`` equals
    ``run(job)`` exactly."""

    def train(self, job: TrainJob) -> TrainResult:
        """:meth:`Learner.run` without its held-out metrics (NaN; ``measured`` False), unless the
        learner measures as it trains (then the full, measured result)."""
        ...

    def measure(self, job: TrainJob, result: TrainResult) -> TrainResult:
        """``result`` (of :meth:`train` for ``job``) with its held-out metrics; ``result`` itself if
        it is already measured."""
        ...


@runtime_checkable
class RunsMany(Protocol):
    """Optional, beside :class:`Learner`: several local updates at once (the real learner batches
    them, :mod:`pwffsim.learn.batched`). The in-process executor with ``execution.batch_clients > 1``
    calls it with the pending jobs; a learner without it (e.g. the tests' stub) runs them one by
    one."""

    def run_many(self, jobs: Sequence[TrainJob]) -> list[TrainResult]:
        """``[run(job) for job in jobs]``, each result equal to its :meth:`Learner.run` (up to float
        round-off); raises what ``run`` would for any of them."""
        ...
