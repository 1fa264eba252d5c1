"""Aggregation policies: small classes behind one narrow interface.

A policy decides how many clients a round selects, how long the server waits for them (a deadline),
and how many arrivals it aggregates (the first ``n`` to arrive, for over-selection).  Which clients are
selected is the job of a :class:`~pwffsim.sim.selection.ClientSelector`; the weighted-mean arithmetic
lives once, in :func:`pwffsim.learn.aggregate.weighted_mean`.

Synchronous policies shipped: ``sync`` (wait for every selected client), ``deadline`` (aggregate what
arrived by ``deadline_s``; stragglers are stopped and marked late) and ``overselect`` (select
``ceil(K (1 + x))``, aggregate the first ``K`` to arrive, stop the rest: FedScale's over-commitment).
"""
from __future__ import annotations

import math
from typing import Optional


class AggregationPolicy:
    """Base class: synchronous FedAvg (wait for every selected client)."""

    name = "sync"

    def num_to_select(self, clients_per_round: int) -> int:
        return clients_per_round

    def num_to_aggregate(self, clients_per_round: int, selected: int) -> Optional[int]:
        """Aggregate the first ``n`` arrivals and stop the rest (None: every arrival)."""
        return None

    def deadline_s(self, round_index: int) -> Optional[float]:
        """Time after the round's start at which stragglers are stopped (None: wait for all)."""
        return None


class SyncPolicy(AggregationPolicy):
    name = "sync"


class DeadlinePolicy(AggregationPolicy):
    """Aggregate what arrived by ``deadline_s`` after the round started; stop the rest (status ``late``)."""

    name = "deadline"

    def __init__(self, deadline_s: float):
        if not (deadline_s > 0 and math.isfinite(deadline_s)):
            raise ValueError(f"deadline_s must be a positive finite number of seconds, got {deadline_s}")
        self._deadline_s = float(deadline_s)

    def deadline_s(self, round_index: int) -> Optional[float]:
        return self._deadline_s


class OverSelectionPolicy(AggregationPolicy):
    """Select ``ceil(K (1 + overcommit))`` clients, aggregate the first ``K`` to arrive (ties by client
    id), stop the others then (status ``late``); an optional deadline still applies."""

    name = "overselect"

    def __init__(self, overcommit: float, deadline_s: Optional[float] = None):
        if not (overcommit >= 0 and math.isfinite(overcommit)):
            raise ValueError(f"overcommit must be >= 0, got {overcommit}")
        self.overcommit = float(overcommit)
        self._deadline_s = deadline_s

    def num_to_select(self, clients_per_round: int) -> int:
        return math.ceil(clients_per_round * (1.0 + self.overcommit) - 1e-9)

    def num_to_aggregate(self, clients_per_round: int, selected: int) -> Optional[int]:
        return min(clients_per_round, selected)

    def deadline_s(self, round_index: int) -> Optional[float]:
        return self._deadline_s


POLICIES = ("sync", "deadline", "overselect")


def make_policy(name: str, deadline_s: Optional[float] = None, overcommit: float = 0.3) -> AggregationPolicy:
    if name == "sync":
        return SyncPolicy()
    if name == "deadline":
        if deadline_s is None:
            raise ValueError("policy 'deadline' needs deadline_s")
        return DeadlinePolicy(deadline_s)
    if name == "overselect":
        return OverSelectionPolicy(overcommit, deadline_s)
    raise ValueError(f"unknown policy '{name}', expected one of: {', '.join(POLICIES)}")
