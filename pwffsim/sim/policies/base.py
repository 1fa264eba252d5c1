"""The one interface every aggregation policy implements (Flower's strategy shape).

A policy owns its rule: *which* updates it aggregates (the synchronous hooks: how many clients a round
selects, its deadline, how many arrivals count; the asynchronous hooks: when the buffer is ready),
*when* (synchronous rounds or asynchronous arrivals), and *with which weights* (:meth:`aggregate`).
The arithmetic of averaging lives once, in :mod:`pwffsim.learn.aggregate`; the round loops
(:mod:`pwffsim.sim.sync_rounds`, :mod:`pwffsim.sim.async_rounds`) and the client lifecycle
(:mod:`pwffsim.sim.client`) call these hooks and never name a policy.

Policies are built from the scenario's ``[fl]`` section: :attr:`parameters` lists the ``fl`` fields
the constructor takes (in the order ``pwffsim compare`` reads ``NAME:P1,P2``), :attr:`required` those
that must be set.  Importing a policy never imports torch (the maths is imported when it runs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

from ..state import ClientUpdate


@dataclass
class ServerView:
    """What a policy may use of the running server (given once, at :meth:`AggregationPolicy.bind`)."""

    env: Any                             # simpy.Environment (simulated time)
    world: Any                           # cells, devices, topology
    state: Any                           # RunState: global, personal and edge parts, versions
    split: Any                           # ModelSplit: which keys are global
    recorder: Any                        # Recorder (trace rows)


class AggregationPolicy:
    """Base class: synchronous FedAvg with every hook at its default.  A policy sets :attr:`name` and
    :attr:`summary` and overrides the hooks and the :meth:`aggregate` rule it changes."""

    name: ClassVar[str]
    summary: ClassVar[str]                       # one line for the scenario reference
    parameters: ClassVar[tuple[str, ...]] = ()   # [fl] fields the constructor takes, by the same names
    required: ClassVar[tuple[str, ...]] = ()     # of those, the ones that must not be None
    asynchronous: ClassVar[bool] = False
    server: Optional[ServerView] = None

    @classmethod
    def from_config(cls, fl: Any) -> "AggregationPolicy":
        return cls(**{p: getattr(fl, p) for p in cls.parameters})

    def bind(self, server: ServerView) -> None:
        """Called once before each run: a policy resets its own per-run state here and checks the
        world it needs.  The same policy object may serve several runs, one after the other."""
        self.server = server

    # ---------------------------------------------------------------- synchronous rounds
    def num_to_select(self, clients_per_round: int) -> int:
        return clients_per_round

    def num_to_aggregate(self, clients_per_round: int, selected: int) -> Optional[int]:
        """Aggregate the first ``n`` arrivals and stop the rest (None: every arrival)."""
        return None

    def deadline_s(self, round_index: int) -> Optional[float]:
        """Time after the round's start at which stragglers are stopped (None: wait for all)."""
        return None

    # ---------------------------------------------------------------- asynchronous arrivals
    period_s: Optional[float] = None  # time-driven policies aggregate every period_s

    def ready(self, buffered: int) -> bool:
        """Aggregate now, given the number of buffered updates (arrival-driven policies)."""
        return False

    # ---------------------------------------------------------------- where models travel
    def start_model(self, dev: Any) -> dict:
        """The global part a client downloads at the start of its round."""
        return self.server.state.global_state

    def aggregation_node(self, dev: Any) -> str:
        """The topology node a device's updates travel to over the backhaul."""
        return self.server.world.topology.cloud

    # ---------------------------------------------------------------- the rule
    def aggregate(self, server_round: int, current: dict, updates: Sequence[ClientUpdate]) -> dict:
        """The new global part from the current one and the clients' updates (global parts only).
        By default FedAvg: the sample-weighted mean of the updates."""
        from ...learn.aggregate import weighted_mean

        return weighted_mean([u.params for u in updates], [float(u.num_samples) for u in updates])

    def aggregation_process(self, server_round: int, updates: Sequence[ClientUpdate]):
        """A SimPy process body run at the aggregation instant; by default it replaces the global part
        by :meth:`aggregate` (if anything arrived and anything is global) and takes no time."""
        srv = self.server
        if updates and srv.split.global_keys:
            srv.state.global_state = self.aggregate(server_round, srv.state.global_state, updates)
        return
        yield  # a generator that takes no simulated time

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "server")
        return f"{type(self).__name__}({args})"


def check_seconds(name: str, value: Optional[float], allow_none: bool = False) -> Optional[float]:
    """``value`` (s) as a float if it is a positive finite number (or None when allowed), else ValueError."""
    if value is None and allow_none:
        return None
    if value is None or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number of seconds, got {value}")
    return float(value)
