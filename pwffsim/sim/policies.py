"""Aggregation policies and client selection: small classes behind one narrow interface.

A policy decides which clients a round selects, how long the server waits for them, and which of the
arrived updates it aggregates.  The weighted-mean arithmetic lives once, in
:func:`pwffsim.learn.aggregate.weighted_mean`.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np


class AggregationPolicy:
    """Base class: synchronous FedAvg (wait for every selected client)."""

    name = "sync"

    def select(self, rng: np.random.Generator, candidates: Sequence[int], k: int) -> list[int]:
        """Uniform random selection of ``min(k, len(candidates))`` clients, returned sorted."""
        cands = list(candidates)
        if not cands:
            return []
        k = min(k, len(cands))
        picked = rng.choice(len(cands), size=k, replace=False)
        return sorted(cands[i] for i in picked)

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


def make_policy(name: str, deadline_s: Optional[float] = None) -> AggregationPolicy:
    if name == "sync":
        return SyncPolicy()
    if name == "deadline":
        if deadline_s is None:
            raise ValueError("policy 'deadline' needs deadline_s")
        return DeadlinePolicy(deadline_s)
    raise ValueError(f"unknown policy '{name}', expected one of: sync, deadline")
