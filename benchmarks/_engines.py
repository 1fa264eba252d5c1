"""The workload of ``benchmarks/vs_flower.py`` and its non-Flower engines (each runs in its own process).

Every engine runs the same local updates: pwffsim's own :meth:`pwffsim.learn.train.Learner.run` on the
same :class:`~pwffsim.learn.contract.TrainJob` (client, round, seed, start state = the global part it
downloaded + its own personal part, preferences, personal reset), in the rounds of a fixed *plan*: the
clients pwffsim's own selection trains each round (read once from a network-only pwffsim run of the
same scenario, :func:`make_plan`). An engine returns ``{"round_ends": [perf_counter at the end of each
round], "trained": [[round, client], ...], "global_l1": sum |final global part|}``.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import tempfile
import time
from typing import Any


def workload_overrides(rounds: int, clients: int, metrics: bool, extra: list[str]) -> list[str]:
    """The scenario overrides every engine shares: the built-in default scenario, ``rounds`` x
    ``clients``, alignment and proximal term off (as benchmarks/overhead.py), no final evaluation (no
    other engine has one) and, unless ``metrics``, no held-out metrics either; then ``extra``."""
    base = [f"fl.rounds={rounds}", f"fl.clients_per_round={clients}", "pwff.align_steps=0",
            "pwff.prox_mu=0", "fl.final_evaluation=none"]
    if not metrics:
        base += ["fl.eval_batches=0", "pwff.metric_prompts=0"]
    return base + list(extra)


def scenario(overrides: list[str]):
    from pwffsim.scenario import load_scenario

    return load_scenario(None, overrides=list(overrides))


def supported(overrides: list[str]) -> bool:
    """Whether this pwffsim's scenario validation accepts ``overrides`` (e.g. a newer executor)."""
    try:
        scenario(overrides)
    except Exception:  # noqa: BLE001 - a validation error of any kind means: not supported
        return False
    return True


def make_plan(overrides: list[str]) -> list[list[dict]]:
    """Per round, the clients pwffsim trains (``{"client", "seed", "pref_help"}``): its own selection,
    from a network-only run of the same scenario (``learning.mode = "none"``: nothing is trained, the
    selection and the network are the same; the pwffsim engines check they trained exactly these)."""
    from pwffsim.sim.builders import client_preferences
    from pwffsim.sim.engine import Simulation
    from pwffsim.sim.world import training_seed

    sc = scenario([*overrides, "learning.mode=none"])
    sim = Simulation(sc, out_dir=None)
    sim.run()
    pref = client_preferences(sc)
    plan: list[list[dict]] = [[] for _ in range(sc.fl.rounds)]
    for row in sorted(sim.clients, key=lambda c: (c["round"], c["client"])):
        if row["status"] == "ok":
            r, k = int(row["round"]), int(row["client"])
            plan[r].append({"client": k, "seed": training_seed(sc.seed, r, k), "pref_help": float(pref[k])})
    return plan


# ---------------------------------------------------------------------------- jobs, shared by engines
class Split:
    """The global keys (aggregated: ``pwff.global_groups``) and the personal part a client starts with."""

    def __init__(self, sc, group_of, init: dict):
        if sc.pwff.local_scheme == "ditto":
            raise SystemExit("vs_flower: pwff.scheme='ditto' (personal full models) is not supported")
        groups = set(sc.pwff.global_groups)
        self.global_keys = [k for k in init if group_of(k) in groups]
        self.initial_global = {k: init[k] for k in self.global_keys}
        self.initial_personal = {k: v for k, v in init.items() if k not in set(self.global_keys)}
        self.prox, self.local_scheme = sc.pwff.prox_mu > 0, sc.pwff.local_scheme

    def glob(self, state: dict) -> dict:
        return {k: state[k] for k in self.global_keys}

    def personal(self, state: dict) -> dict:
        return {k: v for k, v in state.items() if k not in set(self.global_keys)}

    def job(self, r: int, entry: dict, glob: dict, personal: dict | None):
        """The client's TrainJob, as pwffsim's orchestrator builds it (pwffsim.sim.builders.TrainJobs)."""
        from pwffsim.learn.contract import TrainJob

        w = entry["pref_help"]
        start = {**glob, **(self.initial_personal if personal is None else personal)}
        return TrainJob(client=entry["client"], round=r, seed=entry["seed"], start_state=start, pref_help=w,
                        pref_safe=1.0 - w, prox_anchor=glob if (glob and self.prox) else None,
                        local_scheme=self.local_scheme, personal_reset=self.initial_personal or None)


def fedavg(states: list[dict], weights: list[float]) -> dict:
    from pwffsim.learn.aggregate import weighted_mean

    return weighted_mean(states, weights)


def l1(state: dict) -> float:
    return float(sum(float(t.double().abs().sum()) for t in state.values()))


def _result(ends: list[float], plan: list[list[dict]], glob: dict) -> dict:
    trained = [[r, e["client"]] for r, entries in enumerate(plan) for e in entries]
    return {"round_ends": ends, "trained": trained, "global_l1": l1(glob)}


# ---------------------------------------------------------------------------- bare loops
def bare_one(overrides: list[str], plan: list[list[dict]]) -> dict:
    """A plain loop over rounds: each selected client's Learner.run, then FedAvg of the global part."""
    from pwffsim.sim.builders import build_learner

    sc = scenario(overrides)
    learner = build_learner(sc)
    split = Split(sc, learner.parameter_group, learner.initial_state())
    glob, personal, ends = split.initial_global, {}, []
    for r, entries in enumerate(plan):
        results = [learner.run(split.job(r, e, glob, personal.get(e["client"]))) for e in entries]
        for e, res in zip(entries, results):
            personal[e["client"]] = split.personal(res.state)
        if results:
            glob = fedavg([split.glob(res.state) for res in results], [res.num_samples for res in results])
        ends.append(time.perf_counter())
    return _result(ends, plan, glob)


_WORKER: dict[str, Any] = {}


def _bare_worker_init(overrides: list[str]) -> None:
    from pwffsim.sim.builders import build_learner

    _WORKER["learner"] = build_learner(scenario(overrides))


def _bare_worker_info() -> tuple[dict, dict[str, str]]:
    """The initial state and every key's group (the main process builds no model)."""
    learner = _WORKER["learner"]
    init = learner.initial_state()
    return init, {k: learner.parameter_group(k) for k in init}


def _bare_worker_run(job) -> tuple[dict, int]:
    res = _WORKER["learner"].run(job)
    return res.state, res.num_samples


def bare_pool(overrides: list[str], plan: list[list[dict]], workers: int = 2) -> dict:
    """The same jobs on ``workers`` spawned processes (each builds its Learner once), round barrier kept:
    a round's clients go to the workers (one job at a time each), then FedAvg in this process."""
    sc = scenario(overrides)
    with mp.get_context("spawn").Pool(workers, initializer=_bare_worker_init, initargs=(overrides,)) as pool:
        init, groups = pool.apply(_bare_worker_info)
        split = Split(sc, groups.__getitem__, init)
        glob, personal, ends = split.initial_global, {}, []
        for r, entries in enumerate(plan):
            jobs = [split.job(r, e, glob, personal.get(e["client"])) for e in entries]
            results = pool.map(_bare_worker_run, jobs, chunksize=1)
            for e, (state, _) in zip(entries, results):
                personal[e["client"]] = split.personal(state)
            if results:
                glob = fedavg([split.glob(state) for state, _ in results], [n for _, n in results])
            ends.append(time.perf_counter())
    return _result(ends, plan, glob)


# ---------------------------------------------------------------------------- pwffsim
#: pwffsim engine name -> the execution overrides it adds to the workload.
PWFFSIM_ENGINES = {
    "pwffsim-inprocess": ["execution.executor=inprocess"],
    "pwffsim-process2": ["execution.executor=process", "execution.workers=2"],
    "pwffsim-ray2": ["execution.executor=ray", "execution.workers=2"],
    "pwffsim-batched5": ["execution.executor=inprocess", "execution.batch_clients=5"],
    "pwffsim-process2-batched5": ["execution.executor=process", "execution.workers=2", "execution.batch_clients=5"],
}


def run_pwffsim(overrides: list[str], plan: list[list[dict]], engine: str) -> dict:
    """The whole simulator (SimPy network, executor, trace writer to a temporary directory)."""
    from pwffsim.sim.engine import Simulation

    sc = scenario([*overrides, *PWFFSIM_ENGINES[engine]])
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        sim = Simulation(sc, out_dir=tmp, on_round=lambda row: ends.append(time.perf_counter()))
        sim.run()
    trained = sorted([int(c["round"]), int(c["client"])] for c in sim.clients
                     if not math.isnan(c["train_loss"]))
    return {"round_ends": ends, "trained": trained, "global_l1": l1(sim.state.global_state)}
