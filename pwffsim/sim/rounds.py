"""The server's round loop: one skeleton, a synchronous and an asynchronous variant.

The skeleton (:class:`RoundLoop`) owns what both share: which devices are candidates (alive, battery
left, in coverage, online), waiting while none is, selection, starting a client's round together with
the process that stops it when its device goes offline, keeping personal parts, and closing an
aggregation (its trace rows, the flush, the callback).  The policy decides the rest through its hooks
(:mod:`pwffsim.sim.policies.base`); no loop names a policy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import simpy

from ..status import Kind, Status, StopCause
from .client import ClientLifecycle
from .recorder import Recorder
from .rows import PendingRows
from .state import ClientOutcome, ClientUpdate, ModelSplit, RunState
from .world import World


@dataclass
class RoundsConfig:
    """The ``[fl]`` knobs the loops read."""

    rounds: int
    clients_per_round: int
    aggregation_time_s: float


class _Both:
    """The clients in both ``a`` and ``b`` (iterated in ``a``'s order)."""

    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a, self.b = a, b

    def __contains__(self, k) -> bool:
        return k in self.b and k in self.a

    def __iter__(self):
        return (k for k in self.a if k in self.b)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class RoundLoop:
    """The skeleton both variants share; :meth:`run` is the server's SimPy process body."""

    def __init__(self, *, env: simpy.Environment, world: World, state: RunState, split: ModelSplit, policy: Any,
                 selector: Any, selection_rng: np.random.Generator, recorder: Recorder, clients: ClientLifecycle,
                 learner: Any, availability: Any, fl: RoundsConfig, pref_help: Sequence[float],
                 on_round: Optional[Callable[[dict], None]] = None):
        self.env, self.world, self.state, self.split, self.policy = env, world, state, split, policy
        self.selector, self.selection_rng, self.recorder, self.clients = selector, selection_rng, recorder, clients
        self.learner, self.availability, self.fl, self.pref_help = learner, availability, fl, pref_help
        self.rows = PendingRows(recorder, on_round)

    def run(self):
        raise NotImplementedError

    def finish(self) -> None:
        """Write the rows still waiting for measurements (at the end of the run)."""
        self.rows.write_ready(wait=True)

    # ------------------------------------------------------------------ candidates and selection
    def candidates(self, busy: Sequence[int] = ()) -> list[int]:
        """Devices that can take part now: alive, battery left, in coverage, online, not busy (in
        increasing order).  Static devices without an availability trace: one array pass (a device not
        made yet is as at the start), so a large population costs little per round."""
        from .selection import SortedIds

        world, now = self.world, self.env.now
        if not world.moving and self.availability is None:
            mask = world.usable_mask()
            if len(busy):
                mask[np.fromiter(busy, dtype=np.int64, count=len(busy))] = False
            return SortedIds(np.flatnonzero(mask))
        busy = set(busy)
        return SortedIds(k for k in range(len(world.devices)) if k not in busy and world.usable(k)
                         and world.available(k, now)
                         and (self.availability is None or self.availability.online(k, now)))

    def wait_for_candidates(self, what: str):
        """Wait until some device may come online or into coverage again; False if none ever will
        (the run stops, saying why)."""
        wait_s = self.time_to_next_availability_change()
        if wait_s is None:
            self.state.stopped_reason = f"no device with battery left before {what}"
            return False
        yield self.env.timeout(wait_s)  # every device is offline or out of coverage for now
        return True

    def time_to_next_availability_change(self) -> Optional[float]:
        """Seconds until some device with battery left may come online or into coverage again
        (None: no device will, so the run cannot go on)."""
        now = self.env.now
        t_next = math.inf
        for k in range(len(self.world.devices)):
            if not self.world.usable(k):
                continue
            if self.availability is not None:
                t_next = min(t_next, self.availability.next_change_s(k, now))
            if self.world.moving:
                t_next = min(t_next, self.world.next_position_change_s(k, now))
        return t_next - now if math.isfinite(t_next) else None

    def select(self, r: int, candidates: list[int], n: int) -> list[int]:
        return self.selector.select(self.selection_rng, candidates, n, self.selection_context(r, candidates))

    def selection_context(self, r: int, candidates: list[int]):
        """What the selector may read, each field computed only for the clients it asks about (the
        expected uplink rate costs a path-loss evaluation; the uniform selector reads nothing)."""
        from .selection import LazyMap, SelectionContext, SortedIds

        cands = candidates if isinstance(candidates, SortedIds) else SortedIds(sorted(set(map(int, candidates))))
        world, state, now = self.world, self.state, self.env.now
        last_loss, last_duration = state.last_loss, state.last_duration_s
        return SelectionContext(
            round=r, t_s=now, expected_rate_bps=LazyMap(cands, lambda k: self.expected_rate_bps(k, now)),
            battery_j=LazyMap(cands, world.battery_level_j),
            battery_capacity_j=LazyMap(cands, world.battery_capacity_j),
            num_samples=LazyMap(cands, lambda k: int(self.learner.num_samples(k))),
            last_loss=LazyMap(_Both(cands, last_loss), last_loss.__getitem__),
            last_duration_s=LazyMap(_Both(cands, last_duration), last_duration.__getitem__),
        )

    def expected_rate_bps(self, k: int, now: float) -> float:
        """Device ``k``'s uplink rate now on an equal FDMA share of its cell's band (large-scale gain,
        no fading)."""
        from ..net.channel import fdma_rate_bps

        dev = self.world.devices[k]
        band = self.world.cells[dev.cell].uplink
        b = band.bandwidth_hz / max(1, self.fl.clients_per_round)
        return fdma_rate_bps(b, dev.profile.tx_power_w, self.world.large_scale_gain(k, dev.cell, now),
                             band.noise_density_w_per_hz)

    # ------------------------------------------------------------------ clients
    def start_client(self, r: int, k: int, nbytes: int):
        """A client's round as a SimPy process."""
        return self.env.process(self.clients.round(r, self.world.devices[k], nbytes, nbytes))

    def watch_offline(self, proc, k: int) -> None:
        """Stop the client's round when its device goes offline (availability trace)."""
        if self.availability is None:
            return
        t_off = self.availability.online_until_s(k, self.env.now)
        if math.isfinite(t_off):
            self.env.process(self._go_offline(proc, k, t_off - self.env.now))

    def _go_offline(self, proc, k: int, delay_s: float):
        yield self.env.timeout(delay_s)
        if proc.is_alive:
            self.recorder.instant(self.state.round, self.world.devices[k], Kind.OFFLINE, self.env.now, Status.OFFLINE)
            proc.interrupt(StopCause.OFFLINE)

    def note_outcome(self, out: ClientOutcome, t_start: float) -> None:
        """What selectors remember of a client: its round's duration and its training loss."""
        if out.arrived:
            self.state.last_duration_s[out.client] = out.t_arrival_s - t_start
        if out.handle is not None:
            self.state.last_loss[out.client] = float(out.trained().train_loss)

    def keep_personal(self, k: int, res: Any) -> None:
        """Personal parts stay on the device: every client that finished computing keeps its own (and,
        under Ditto, its personal model)."""
        self.state.personal_state[k] = self.split.personal_part(res.state)
        personal_model = getattr(res, "personal_state", None)
        if personal_model is not None:
            self.state.personal_models[k] = personal_model

    def update_of(self, out: ClientOutcome, res: Any, staleness: int) -> ClientUpdate:
        return ClientUpdate(client=out.client, start=self.split.global_part(out.start_global),
                            params=self.split.global_part(res.state), num_samples=float(res.num_samples),
                            staleness=staleness)

    # ------------------------------------------------------------------ closing an aggregation
    @staticmethod
    def learning_metrics(aggregated: Sequence[Any], trained: Sequence[Any]) -> tuple[float, float]:
        """Sample-weighted mean training loss of the aggregated results, mean objective of the trained."""
        train_loss = math.nan
        if aggregated:
            weights = [float(res.num_samples) for res in aggregated]
            train_loss = float(np.dot(weights, [res.train_loss for res in aggregated]) / sum(weights))
        objective = float(np.mean([res.objective for res in trained])) if trained else math.nan
        return train_loss, objective

    def close_aggregation(self, r: int, t_start: float, t_agg: float, outcomes: Sequence[ClientOutcome],
                          aggregated: Sequence[ClientOutcome], trained: Sequence[ClientOutcome], nbytes: int,
                          staleness: dict) -> None:
        """The aggregate event now; the rounds row and one clients row per outcome (by client) as soon
        as their clients are measured (:mod:`.rows`): every value the run may still change is taken
        now.  ``aggregated`` / ``trained``: the outcomes whose results the round's learning metrics
        average (the order is the mean's)."""
        self.recorder.aggregate(r, t_agg, self.env.now, nbytes * len(aggregated))
        t_end = self.env.now
        by_client = sorted(outcomes, key=lambda o: o.client)
        devices = [self.world.devices[o.client] for o in by_client]
        batteries = [dev.battery.level_j for dev in devices]

        def write() -> None:
            metrics = self.learning_metrics([o.result() for o in aggregated], [o.result() for o in trained])
            self.recorder.round_row(r, t_start, t_end, outcomes, len(aggregated), nbytes, *metrics)
            for out, dev, battery_j in zip(by_client, devices, batteries):
                self.recorder.client_row(r, out, out.result(), staleness.get(id(out), -1), self.pref_help[out.client],
                                         battery_j, dev.profile.name)

        self.rows.add([o.handle for o in outcomes if o.handle is not None], write)

    def after_aggregation(self) -> None:
        """Flush; write the rows of earlier aggregations whose measurements are in."""
        self.rows.write_ready()
