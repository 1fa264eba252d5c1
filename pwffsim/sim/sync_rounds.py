"""Synchronous rounds: select, broadcast, wait (for all, a deadline, or the first n), aggregate.

Each round the policy says how many clients to select, the deadline after which stragglers are stopped
and how many arrivals count; the clients that arrive in time are aggregated by the policy's rule.
"""
from __future__ import annotations

import simpy

from ..status import Status, StopCause
from .rounds import RoundLoop
from .state import ClientOutcome


class SyncRounds(RoundLoop):
    def run(self):
        r = 0
        while r < self.fl.rounds:
            self.state.round = r
            candidates = self.candidates()
            if not candidates:
                if not (yield from self.wait_for_candidates(f"round {r}")):
                    break
                continue  # the round has not happened yet
            yield from self.one_round(r, candidates)
            r += 1

    def one_round(self, r: int, candidates: list[int]):
        env = self.env
        selected = self.select(r, candidates, self.policy.num_to_select(self.fl.clients_per_round))
        t_start = env.now
        nbytes = self.state.payload_bytes()
        procs = {k: self.start_client(r, k, nbytes) for k in selected}
        for k in selected:
            self.watch_offline(procs[k], k)
        outcomes = yield from self.collect(r, procs)
        for o in outcomes.values():
            self.note_outcome(o, t_start)
        t_agg = env.now
        yield env.timeout(self.fl.aggregation_time_s)
        results = {k: o.trained() for k, o in sorted(outcomes.items()) if o.handle is not None}
        arrived = [k for k in sorted(outcomes) if outcomes[k].arrived]
        for k, res in results.items():
            self.keep_personal(k, res)
        updates = [self.update_of(outcomes[k], results[k], 0) for k in arrived]
        yield from self.policy.aggregation_process(r, updates)
        for k in sorted(outcomes):
            self.clients.finish_idle(k)  # the round ends: those waiting for it stop idling
        self.close_aggregation(r, t_start, t_agg, list(outcomes.values()), [outcomes[k] for k in arrived],
                               [outcomes[k] for k in sorted(results)], nbytes, {id(outcomes[k]): 0 for k in arrived})
        self.state.rounds_done = r + 1
        self.state.version = r + 1
        self.after_aggregation()

    def collect(self, r: int, procs: dict):
        """Wait for the selected clients until all are done, the deadline passes or enough arrived;
        stop the rest.  Returns every client's outcome (in selection order)."""
        need = self.policy.num_to_aggregate(self.fl.clients_per_round, len(procs))
        pending, arrivals = yield from self.wait(procs, self.policy.deadline_s(r), need)
        for k in sorted(pending):
            procs[k].interrupt(StopCause.DEADLINE)
        if pending:
            yield simpy.AllOf(self.env, [procs[k] for k in sorted(pending)])
        outcomes: dict[int, ClientOutcome] = {k: p.value for k, p in procs.items()}
        if need is not None:
            # More arrived at the same instant than are needed (some as they were being stopped):
            # the first `need` by (time, id) count.
            for _, k in sorted((o.t_arrival_s, k) for k, o in outcomes.items() if o.arrived)[need:]:
                outcomes[k].status = Status.LATE
        return outcomes

    def wait(self, procs: dict, deadline_s, need):
        """Wait until every client is done, ``deadline_s`` passed (None: no deadline) or ``need`` arrived
        (None: all).  Returns (clients still pending, [(arrival time, client)])."""
        env = self.env
        deadline_ev = env.timeout(deadline_s) if deadline_s is not None else None
        stop_on = [deadline_ev] if deadline_ev is not None else []
        pending = set(procs)
        arrivals: list[tuple[float, int]] = []
        while pending:
            # Fresh conditions each time: SimPy detaches a nested condition once its parent has fired.
            yield simpy.AnyOf(env, [procs[k] for k in sorted(pending)] + stop_on)
            for k in sorted(pending):
                if not procs[k].is_alive:
                    pending.discard(k)
                    if procs[k].value.arrived:
                        arrivals.append((procs[k].value.t_arrival_s, k))
            if (deadline_ev is not None and deadline_ev.processed) or (need is not None and len(arrivals) >= need):
                break
        return pending, arrivals
