"""Asynchronous rounds: keep ``clients_per_round`` devices training; aggregate buffered updates when the
policy says so (after each arrival, every M arrivals, or every period), each with its staleness; a
freed slot is refilled at once with the global version of that moment.

``rounds`` counts aggregations; a rounds row covers the window since the previous aggregation.
"""
from __future__ import annotations

import math

import simpy

from ..status import StopCause
from .rounds import RoundLoop
from .state import ClientOutcome

_TIME_EPS_S = 1e-12  # instants closer than this are the same instant


class AsyncRounds(RoundLoop):
    def run(self):
        env, policy = self.env, self.policy
        self.nbytes = self.state.payload_bytes()
        self.done = simpy.Store(env)
        self.busy: dict[int, simpy.Process] = {}
        self.buffer: list[tuple[ClientOutcome, object]] = []   # (outcome, result), in arrival order
        self.finished: list[ClientOutcome] = []
        self.t_window = env.now
        r = 0
        self.state.round = 0
        self.next_period = env.now + policy.period_s if policy.period_s else math.inf
        while r < self.fl.rounds:
            self.refill()
            flush = False
            if not self.busy:
                if self.buffer:
                    flush = True  # nothing more can arrive now: aggregate what is buffered
                elif not (yield from self.wait_for_candidates(f"aggregation {r}")):
                    break
                else:
                    continue
            periodic_due = (yield from self.wait_for_arrival(flush))
            if not (flush or (self.buffer and policy.ready(len(self.buffer))) or periodic_due):
                continue
            yield from self.aggregate_buffer(r)
            r += 1
            self.state.version += 1
            self.state.round = r
            self.state.rounds_done = r
            self.after_aggregation()
        # Devices still training when the run ends are stopped (their work is not aggregated).
        for proc in list(self.busy.values()):
            if proc.is_alive:
                proc.interrupt(StopCause.DEADLINE)

    def refill(self) -> None:
        """Fill the free training slots from the candidates."""
        cands = self.candidates(busy=self.busy)
        free = self.fl.clients_per_round - len(self.busy)
        if free <= 0 or not cands:
            return
        for k in self.select(self.state.round, cands, free):
            self.busy[k] = self.env.process(self._client(k))
            self.watch_offline(self.busy[k], k)

    def _client(self, k: int):
        out = yield from self.clients.round(self.state.round, self.world.devices[k], self.nbytes, self.nbytes)
        yield self.done.put((k, out))

    def wait_for_arrival(self, flush: bool):
        """Wait for the next finished client or the next period; returns whether a period is due."""
        env, period = self.env, self.policy.period_s
        if not flush:
            get = self.done.get()
            while self.next_period <= env.now + _TIME_EPS_S:  # periods that passed during an aggregation are skipped
                self.next_period += period
            waits = [get] + ([env.timeout(self.next_period - env.now)] if math.isfinite(self.next_period) else [])
            yield simpy.AnyOf(env, waits)
            if get.triggered:
                self.take(*get.value)
            else:
                get.cancel()
        periodic_due = env.now >= self.next_period - _TIME_EPS_S
        if periodic_due:
            self.next_period += period
        return periodic_due

    def take(self, k: int, out: ClientOutcome) -> None:
        """A client finished its round (in whatever state): free its slot, buffer its update if it arrived."""
        self.busy.pop(k, None)
        self.clients.finish_idle(k)  # its update is taken: it stops idling
        self.finished.append(out)
        self.note_outcome(out, out.t_start_s)
        if out.handle is not None:
            res = out.trained()
            self.keep_personal(k, res)
            if out.arrived:
                self.buffer.append((out, res))

    def aggregate_buffer(self, r: int):
        """Aggregate the buffered updates, each weighted by the policy for its staleness; write the rows."""
        env = self.env
        t_agg = env.now
        yield env.timeout(self.fl.aggregation_time_s)
        updates = [self.update_of(o, res, self.state.version - o.start_version) for o, res in self.buffer]
        yield from self.policy.aggregation_process(r, updates)
        trained = [o for o in self.finished if o.handle is not None]
        staleness = {id(o): u.staleness for (o, _), u in zip(self.buffer, updates)}
        self.close_aggregation(r, self.t_window, t_agg, self.finished, [o for o, _ in self.buffer], trained,
                               self.nbytes, staleness)
        self.buffer, self.finished = [], []
        self.t_window = env.now
