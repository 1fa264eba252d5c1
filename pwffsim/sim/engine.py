"""The orchestrator's front door: :class:`Simulation` builds one run from a scenario and runs it.

It wires the rooms together and owns none of their logic:

* :mod:`~pwffsim.sim.world`: cells, devices, links, random streams;
* :mod:`~pwffsim.sim.state`: the run state (global, personal and edge parts, versions);
* :mod:`~pwffsim.sim.client`: a client's round as SimPy processes; :mod:`~pwffsim.sim.handover`:
  movement between cells and inter-cell interference;
* :mod:`~pwffsim.sim.sync_rounds` / :mod:`~pwffsim.sim.async_rounds`: the round loop
  (:mod:`~pwffsim.sim.rounds` is their shared skeleton), driven by the aggregation policy
  (:mod:`~pwffsim.sim.policies`);
* :mod:`~pwffsim.sim.recorder`: the only code that names trace columns;
* :mod:`~pwffsim.sim.builders`: learner, executor, policy, selector from the scenario.

All delays and energies come from the network side; all model updates come from real training (or
from whatever :class:`~pwffsim.learn.contract.Learner` is passed in).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import simpy

from ..scenario import Scenario
from ..trace import TraceWriter
from .async_rounds import AsyncRounds
from .builders import (TrainJobs, build_executor, build_learner, build_learner_and_executor, build_policy, build_selector, check_local_scheme,
                       client_preferences, load_availability)
from .client import ClientLifecycle
from .handover import Handovers, wire_interference
from .linktrace import LinkTrace
from .packets import PacketErrors
from .policies import AggregationPolicy, ServerView
from .recorder import Recorder
from .rounds import RoundsConfig
from .state import ModelSplit, RunState
from .sync_rounds import SyncRounds
from .world import STREAM_SELECTION, World, stream


class Simulation:
    """One run of a scenario.

    ``learner`` (default: the real learner built from the scenario) follows the
    :class:`~pwffsim.learn.contract.Learner` protocol; ``executor`` runs its jobs (default from
    ``execution.executor``); ``policy`` overrides ``fl.policy``; ``on_round`` is called with every rounds
    row as it is written.  After :meth:`run`, ``events``, ``rounds``, ``clients`` and ``final`` hold the
    trace rows (dicts keyed by the columns of :data:`pwffsim.trace.SCHEMAS`).
    """

    def __init__(self, scenario: Scenario, out_dir: Optional[str] = None, learner: Any = None,
                 executor: Any = None, policy: Optional[AggregationPolicy] = None,
                 on_round: Optional[Callable[[dict], None]] = None):
        self.sc = scenario
        self.env = simpy.Environment()
        self.world = World(scenario, self.env)
        self.cells, self.devices = self.world.cells, self.world.devices
        self._own_executor = executor is None
        if learner is None and executor is None:
            self.learner, self.executor = build_learner_and_executor(scenario)
        else:
            self.learner = learner if learner is not None else build_learner(scenario)
            self.executor = executor if executor is not None else build_executor(scenario, self.learner)
        try:
            self._set_up(scenario, policy, on_round, out_dir)
        except BaseException:  # an invalid run: no worker is left behind
            if self._own_executor:
                getattr(self.executor, "abort", self.executor.close)()
            raise

    def _set_up(self, scenario: Scenario, policy: Optional[AggregationPolicy],
                on_round: Optional[Callable[[dict], None]], out_dir: Optional[str]) -> None:
        check_local_scheme(scenario, self.learner)
        self.policy = policy if policy is not None else build_policy(scenario)
        self.recorder = Recorder(None, self.world.cell_id)
        init = self.learner.initial_state()
        self.split = ModelSplit.of(self.learner, init, scenario.pwff.global_groups)
        self.state = RunState(global_state=self.split.global_part(init),
                              charged_payload_bytes=self.split.charged_payload_bytes)
        self.pref_help = client_preferences(scenario)
        self.flops, self.tokens = self.learner.estimate_cost()
        self.selection_rng = stream(scenario.seed, STREAM_SELECTION)
        self.on_round = on_round
        self.policy.bind(ServerView(self.env, self.world, self.state, self.split, self.recorder))
        self.selector = build_selector(scenario)
        self.availability = load_availability(scenario)
        self.world.set_downlink(scenario.channel.downlink, self.policy.asynchronous)
        if scenario.channel.interference and len(self.cells) > 1:
            wire_interference(self.world)
        if scenario.trace.links:
            LinkTrace(self.world, self.recorder).attach()
        # Last, once everything is valid: an invalid run writes nothing.
        self.recorder.writer = TraceWriter(out_dir) if out_dir is not None else None

    # The trace rows and the model split, as the Python API has always exposed them.
    events = property(lambda self: self.recorder.events)
    rounds = property(lambda self: self.recorder.rounds)
    clients = property(lambda self: self.recorder.clients)
    final = property(lambda self: self.recorder.final)
    links = property(lambda self: self.recorder.links)
    writer = property(lambda self: self.recorder.writer)
    global_keys = property(lambda self: self.split.global_keys)
    personal_keys = property(lambda self: self.split.personal_keys)

    def _round_loop(self):
        sc = self.sc
        errors = PacketErrors(sc.seed, sc.channel.per_waterfall_db) if sc.channel.packet_errors else None
        clients = ClientLifecycle(self.env, self.world, self.recorder, self.state, self.executor,
                                  TrainJobs(sc, self.state, self.split, self.pref_help), self.flops, self.policy,
                                  packet_errors=errors)
        loop = AsyncRounds if self.policy.asynchronous else SyncRounds
        fl = RoundsConfig(sc.fl.rounds, sc.fl.clients_per_round, sc.fl.aggregation_time_s)
        server = loop(env=self.env, world=self.world, state=self.state, split=self.split, policy=self.policy,
                      selector=self.selector, selection_rng=self.selection_rng, recorder=self.recorder,
                      clients=clients, learner=self.learner, availability=self.availability, fl=fl,
                      pref_help=self.pref_help, on_round=self.on_round)
        return server, clients

    def run(self) -> dict:
        """Run to the last round (or until no device can take part); write the traces; return the summary."""
        try:
            server, clients = self._round_loop()
            proc = self.env.process(server.run())
            if self.world.moving and len(self.cells) > 1:
                ho = self.sc.handover
                handovers = Handovers(self.env, self.world, clients, self.recorder, self.state, ho.hysteresis_db,
                                      ho.time_to_trigger_s, ho.interruption_s, ho.in_flight == "restart")
                for dev in self.devices:
                    self.env.process(handovers.track(dev))
            self.env.run(until=proc)
            server.finish()  # the rows still waiting for their clients' measurements
            self._final_evaluation()
        except BaseException:  # Ctrl-C or an error: stop the training at once, no job is waited for
            if self._own_executor:
                getattr(self.executor, "abort", self.executor.close)()
            raise
        else:
            if self._own_executor:
                self.executor.close()
        summary = self.summary()
        self.recorder.close(summary)
        return summary

    def _learner_call(self, method: str, *args):
        """``learner.<method>(*args)`` through the executor (in a worker, for a pool), as a handle
        whose ``result()`` gives the answer; on the learner itself for an executor without ``call``."""
        call = getattr(self.executor, "call", None)
        if callable(call):
            return call(method, *args)
        from .executor import InProcessExecutor

        return InProcessExecutor(self.learner).call(method, *args)

    def _final_evaluation(self) -> None:
        """Evaluate the clients' final models (the global part and each one's own personal part; under
        Ditto each one's personal model, or the global model if it never trained): every client
        (``fl.final_evaluation = "all"``), those that trained at least once (``"trained"``) or none
        (``"none"``). Beside each: its global-only model (its personal part at its initial values;
        Ditto: the global model) on the same rows (the personalization gap), the initial model (the
        base) and always refusing (``objective_always_refuse``), so every scheme is read against them.
        Every evaluation is asked for first and read after, so a pool runs them in parallel."""
        trained = self.recorder.trained_rounds()
        which = self.sc.fl.final_evaluation
        clients = range(len(self.devices)) if which == "all" else sorted(trained) if which == "trained" else ()
        base = self.split.initial_model  # the initial state (the base: no fine-tuning)
        has_loss = callable(getattr(self.learner, "evaluate", None))  # optional: a state's eval loss alone
        glob = self.state.global_state
        global_only = {**glob, **self.split.initial_personal}
        ditto = self.sc.pwff.local_scheme == "ditto"
        asked = []
        for k in clients:
            if ditto:
                state = self.state.personal_models.get(k, global_only)
            else:
                state = {**glob, **self.state.personal_state.get(k, self.split.initial_personal)}
            w_help = float(self.pref_help[k])
            nothing_personal = state is global_only or not (ditto or self.split.personal_keys)
            asked.append((k, w_help, nothing_personal,
                          self._learner_call("evaluate_metrics", state, k, w_help, 1.0 - w_help),
                          None if nothing_personal or not has_loss else self._learner_call("evaluate", global_only, k),
                          self._learner_call("evaluate_metrics", base, k, w_help, 1.0 - w_help)))
        for k, w_help, nothing_personal, metrics, loss_global_only, metrics_base in asked:
            m = dict(metrics.result())
            if nothing_personal:
                m["eval_loss_global_only"] = m["eval_loss"]
            elif loss_global_only is not None:
                m["eval_loss_global_only"] = loss_global_only.result()
            m["objective_base"] = metrics_base.result()["objective"]
            self.recorder.final_row(k, w_help, trained.get(k, 0), m)

    def summary(self) -> dict:
        return self.recorder.summary(
            scenario=self.sc.name, seed=self.sc.seed, stopped_reason=self.state.stopped_reason,
            flops_per_update=self.flops, scheme=self.sc.pwff.scheme, payload_bytes=self.state.payload_bytes(),
            devices_alive=self.world.devices_alive(),
            models={"trained_model": self.sc.model.source,
                    "charged_model": self.sc.model.cost_model or self.sc.model.source,
                    "learning_mode": self.sc.learning.mode})
