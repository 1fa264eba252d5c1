"""Public builders: each piece of a run made from a validated :class:`~pwffsim.scenario.Scenario` alone.

``pwffsim compare``, the benchmarks and the :class:`~pwffsim.sim.engine.Simulation` use these; none of
them needs a private name.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..scenario import Scenario
from .policies import AggregationPolicy, build_policy as _policy_from_fl
from .world import STREAM_PREFERENCE, stream, training_seed


def learner_spec_kwargs(sc: Scenario) -> dict[str, dict]:
    """The keyword arguments of the learning side's ModelSpec, DataSpec and TrainSpec for a scenario
    (``model`` / ``data`` / ``train``), plain and torch-free (network-only mode keys its cache on them)."""
    m, d, f, pw = sc.model, sc.data, sc.fl, sc.pwff
    model = dict(source=m.source, lora_rank=m.lora_rank, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
                 target_modules=tuple(m.target_modules) if m.target_modules else None, seed=sc.seed,
                 adapter_size=m.adapter_size, gguf_file=m.gguf_file, cost_model=m.cost_model,
                 update_dtype=m.update_dtype)
    data = dict(num_clients=sc.devices.count, train_samples_per_client=d.train_samples_per_client,
                eval_samples_per_client=d.eval_samples_per_client, num_topics=d.num_topics,
                dirichlet_alpha=d.dirichlet_alpha, seed=sc.seed, preference_divergence=d.preference_divergence)
    if d.source == "jsonl":  # the file's spec (pwffsim.learn.filedata.JsonlDataSpec); no built-in topics
        del data["num_topics"], data["preference_divergence"]
        data.update(source="jsonl", train_path=d.train_path, eval_path=d.eval_path, eval_share=d.eval_share,
                    fields=d.fields.model_dump(), split=d.split)
    train = dict(local_steps=f.local_steps, batch_size=f.batch_size, seq_len=f.seq_len,
                 learning_rate=f.learning_rate, eval_batches=f.eval_batches, prox_mu=pw.prox_mu,
                 prox_form=pw.prox_form, optimizer=f.optimizer, loss_average=f.loss_average,
                 align_kl_coef=pw.align_kl_coef,
                 align_steps=pw.align_steps, align_prompts=pw.align_prompts, align_samples=pw.align_samples,
                 align_max_new_tokens=pw.align_max_new_tokens, align_learning_rate=pw.align_learning_rate,
                 metric_prompts=pw.metric_prompts, help_reward=pw.help_reward, safe_reward=pw.safe_reward,
                 charge_measurement=f.charge_measurement, local_scheme=pw.local_scheme,
                 fedrep_global_steps=pw.fedrep_global_steps, ditto_lambda=pw.ditto_lambda)
    return {"model": model, "data": data, "train": train}


def learner_specs(sc: Scenario):
    """The learning side's (ModelSpec, DataSpec, TrainSpec) for a scenario."""
    from ..learn.filedata import make_data_spec
    from ..learn.model import ModelSpec
    from ..learn.train import TrainSpec

    kw = learner_spec_kwargs(sc)
    return ModelSpec(**kw["model"]), make_data_spec(**kw["data"]), TrainSpec(**kw["train"])


def train_sample_counts(sc: Scenario) -> int | list[int]:
    """Every client's training-set size as the learner counts it (torch-free): ``data.train_samples_per_client``,
    or with ``data.split = "by-field"`` each device's rows of the file less its held-out ones (the file is
    indexed, :func:`~pwffsim.learn.filedata.file_index`)."""
    if sc.data.source == "jsonl" and sc.data.split == "by-field":
        from ..learn.filedata import make_data_spec

        spec = make_data_spec(**learner_spec_kwargs(sc)["data"])
        return [spec.train_samples(c) for c in range(sc.devices.count)]
    return sc.data.train_samples_per_client


def network_only(sc: Scenario) -> bool:
    """Whether the scenario trains nothing (``learning.mode = "none"``)."""
    return sc.learning.mode == "none"


def build_learner(sc: Scenario):
    """The learner (a :class:`~pwffsim.learn.contract.Learner`) for a scenario: the real one, or in
    network-only mode (``learning.mode = "none"``) :class:`~pwffsim.learn.network_only.NetworkOnlyLearner`
    (no torch in this process; the stand-in loss is 1.0 under Oort selection, else NaN)."""
    if network_only(sc):
        from ..learn.network_only import NetworkOnlyLearner, charged_counts

        return NetworkOnlyLearner(charged_counts(learner_spec_kwargs(sc)), train_sample_counts(sc),
                                  sc.devices.count, stand_in_loss=1.0 if sc.fl.selection == "oort" else float("nan"),
                                  local_scheme=sc.pwff.local_scheme)
    from ..learn.train import Learner

    return Learner(*learner_specs(sc), torch_threads=sc.execution.torch_threads)


def check_local_scheme(sc: Scenario, learner: Any) -> None:
    """``ValueError`` unless ``learner`` runs the scenario's local procedure (``pwff.local_scheme``): a
    learner that states its ``local_scheme`` (:class:`~pwffsim.learn.contract.RunsLocalScheme`) must
    state this one; one that does not is taken to follow each job's ``local_scheme``, except for
    Ditto, whose personal models only a learner built for it returns."""
    want, stated = sc.pwff.local_scheme, getattr(learner, "local_scheme", None)
    if stated is None and want == "ditto":
        raise ValueError(f"pwff.scheme='ditto' keeps a personal model per device: it needs a learner built for "
                         f"local_scheme 'ditto' (TrainResult.personal_state), not {type(learner).__name__}")
    if stated is not None and stated != want:
        raise ValueError(f"pwff.scheme={sc.pwff.scheme!r} runs the local procedure {want!r}, but the learner "
                         f"was built for {stated!r}")


def trains_in_workers(sc: Scenario) -> bool:
    """Whether the scenario's training runs in workers (``execution.executor`` a pool of processes or
    Ray actors, and something to train)."""
    return sc.execution.executor in ("process", "ray") and not network_only(sc)


def build_executor(sc: Scenario, learner: Any = None):
    """Where training runs: in this process (lazily, on ``learner``), a pool of worker processes or
    Ray actors (each with its own learner; ``learner`` is not used)."""
    from .executor import InProcessExecutor, ProcessPoolExecutor

    ex = sc.execution
    if trains_in_workers(sc) and ex.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(*learner_specs(sc), torch_threads=ex.torch_threads, workers=ex.workers, address=ex.address)
    if trains_in_workers(sc):
        return ProcessPoolExecutor(*learner_specs(sc), torch_threads=ex.torch_threads, workers=ex.workers,
                                   batch_clients=ex.batch_clients)
    return InProcessExecutor(learner if learner is not None else build_learner(sc), batch_clients=ex.batch_clients)


def build_learner_and_executor(sc: Scenario) -> tuple[Any, Any]:
    """The learner the orchestrator talks to and the executor that trains: in-process, the learner
    itself; with workers, a :class:`~pwffsim.sim.remote.RemoteLearner` of theirs (this process then
    builds no model: the workers start while one of them describes its learner)."""
    if not trains_in_workers(sc):
        learner = build_learner(sc)
        return learner, build_executor(sc, learner)
    from .remote import RemoteLearner

    executor = build_executor(sc)
    try:
        return RemoteLearner(executor, train_sample_counts(sc)), executor
    except BaseException:
        getattr(executor, "abort", executor.close)()
        raise


def build_policy(sc: Scenario) -> AggregationPolicy:
    """The aggregation policy ``fl.policy`` names, with its ``[fl]`` parameters (see the registry)."""
    return _policy_from_fl(sc.fl)


# selector name -> {constructor argument: [fl] field}
_SELECTOR_PARAMETERS = {"battery": {"threshold_fraction": "battery_threshold"}, "oort": {"epsilon": "oort_epsilon"}}


def build_selector(sc: Scenario):
    from .selection import make_selector

    fl = sc.fl
    return make_selector(fl.selection, **{arg: getattr(fl, field)
                                          for arg, field in _SELECTOR_PARAMETERS.get(fl.selection, {}).items()})


def load_availability(sc: Scenario):
    """The availability trace of ``fl.availability`` (None: always online)."""
    if sc.fl.availability is None:
        return None
    from ..net.availability import read_availability_csv, read_fedscale_behaviour_json

    path = sc.fl.availability
    return read_fedscale_behaviour_json(path) if path.endswith(".json") else read_availability_csv(path)


def client_preferences(sc: Scenario) -> np.ndarray:
    """w_help of every client (w_safe = 1 - w_help), from ``data.preference_divergence``
    (:mod:`pwffsim.learn.preferences`, numpy only) or else the scenario's preference rule."""
    pw = sc.pwff
    n = sc.devices.count
    if sc.data.preference_divergence is not None:
        from ..learn.preferences import divergent_preference

        d = sc.data.preference_divergence
        return np.array([divergent_preference(d, sc.seed, k).w_help for k in range(n)])
    if pw.preference == "explicit":
        return np.asarray(pw.w_help_per_client, dtype=float)
    if pw.preference == "fixed":
        return np.full(n, pw.w_help)
    return stream(sc.seed, STREAM_PREFERENCE).uniform(0.0, 1.0, size=n)


class TrainJobs:
    """Builds a client's local-update job: it starts from the global part it downloaded and its own
    personal part; the proximal term anchors the global part; the personal part's initial values
    (if it has one) measure the personalization gap."""

    def __init__(self, sc: Scenario, state: Any, split: Any, pref_help: np.ndarray):
        self.seed, self.prox = sc.seed, sc.pwff.prox_mu > 0
        self.local_scheme = sc.pwff.local_scheme
        self.state, self.split, self.pref_help = state, split, pref_help

    def __call__(self, r: int, client: int, glob: dict):
        from ..learn.contract import TrainJob

        start = {**glob, **self.state.personal_state.get(client, self.split.initial_personal)}
        w_help = float(self.pref_help[client])
        # Ditto: the device's own personal model (the initial state until it first trains)
        personal = (self.state.personal_models.get(client, self.split.initial_model)
                    if self.local_scheme == "ditto" else None)
        return TrainJob(client=client, round=r, seed=training_seed(self.seed, r, client), start_state=start,
                        pref_help=w_help, pref_safe=1.0 - w_help,
                        prox_anchor=glob if (glob and self.prox) else None, local_scheme=self.local_scheme,
                        personal_start=personal, personal_reset=self.split.initial_personal or None)
