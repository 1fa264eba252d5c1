"""Aggregation policies: small classes behind one narrow interface.

A policy decides how many clients a round selects, how long the server waits for them (a deadline),
and how many arrivals it aggregates (the first ``n`` to arrive, for over-selection).  Which clients are
selected is the job of a :class:`~pwffsim.sim.selection.ClientSelector`; the weighted-mean arithmetic
lives once, in :func:`pwffsim.learn.aggregate.weighted_mean`.

Synchronous policies: ``sync`` (wait for every selected client), ``deadline`` (aggregate what arrived
by ``deadline_s``; stragglers are stopped and marked late) and ``overselect`` (select
``ceil(K (1 + x))``, aggregate the first ``K`` to arrive, stop the rest: FedScale's over-commitment).
Asynchronous policies: ``fedasync``, ``fedbuff`` and ``semisync``; and ``hierarchical`` (edge
servers every round, the cloud every E rounds).  See their classes.
"""
from __future__ import annotations

import math
from typing import Optional


class AggregationPolicy:
    """Base class: synchronous FedAvg (wait for every selected client)."""

    name = "sync"
    asynchronous = False
    hierarchical = False

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


class AsyncPolicy(AggregationPolicy):
    """Asynchronous aggregation: ``clients_per_round`` devices train concurrently; each finished update
    is buffered with its staleness ``tau`` (global versions since the device downloaded), and a freed
    slot is refilled at once.  Subclasses decide when to aggregate and with which weights.

    ``aggregate(global, start_states, updates, samples, taus)`` returns the new global part.
    """

    asynchronous = True

    def ready(self, buffered: int) -> bool:
        """Aggregate now, given the number of buffered updates (arrival-driven policies)."""
        raise NotImplementedError

    period_s: Optional[float] = None  # time-driven policies aggregate every period_s instead


class FedAsyncPolicy(AsyncPolicy):
    """FedAsync (Xie et al., 2019): every arrival is mixed in at once,
    ``global <- (1 - a_tau) global + a_tau update`` with ``a_tau = alpha (1 + tau)^(-a)`` (polynomial
    staleness function)."""

    name = "fedasync"

    def __init__(self, alpha: float = 0.6, staleness_exponent: float = 0.5):
        self.alpha, self.a = float(alpha), float(staleness_exponent)

    def ready(self, buffered: int) -> bool:
        return buffered >= 1

    def mixing_weight(self, tau: int) -> float:
        return self.alpha * (1.0 + tau) ** (-self.a)

    def aggregate(self, glob, starts, updates, samples, taus):
        out = glob
        for upd, tau in zip(updates, taus):  # one at a time, in arrival order
            a = self.mixing_weight(tau)
            out = {k: ((1 - a) * out[k].double() + a * upd[k].double()).to(out[k].dtype) for k in out}
        return out


class FedBuffPolicy(AsyncPolicy):
    """FedBuff (Nguyen et al., AISTATS 2022): aggregate every ``buffer_size`` arrivals,
    ``global <- global + eta_g sum_i n_i s(tau_i) (update_i - start_i) / sum_i n_i`` with
    ``s(tau) = 1 / sqrt(1 + tau)`` (``start_i`` = the global part device i downloaded)."""

    name = "fedbuff"

    def __init__(self, buffer_size: int = 3, server_lr: float = 1.0):
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self.buffer_size, self.server_lr = int(buffer_size), float(server_lr)

    def ready(self, buffered: int) -> bool:
        return buffered >= self.buffer_size

    @staticmethod
    def staleness_weight(tau: int) -> float:
        return 1.0 / math.sqrt(1.0 + tau)

    def aggregate(self, glob, starts, updates, samples, taus):
        total = float(sum(samples))
        out = {}
        for k in glob:
            delta = sum(n * self.staleness_weight(t) * (u[k].double() - s[k].double())
                        for u, s, n, t in zip(updates, starts, samples, taus))
            out[k] = (glob[k].double() + self.server_lr * delta / total).to(glob[k].dtype)
        return out


class SemiSyncPolicy(FedBuffPolicy):
    """Semi-synchronous: every ``period_s`` the server aggregates whatever arrived since the last
    aggregation (FedBuff's staleness-weighted rule); devices keep training across periods."""

    name = "semisync"

    def __init__(self, period_s: float, server_lr: float = 1.0):
        super().__init__(buffer_size=1, server_lr=server_lr)
        if not (period_s > 0 and math.isfinite(period_s)):
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.period_s = float(period_s)

    def ready(self, buffered: int) -> bool:
        return False  # time-driven only


class HierarchicalPolicy(AggregationPolicy):
    """Hierarchical FL (e.g. HierFAVG, Liu et al., ICC 2020): every round each edge server aggregates
    the updates of the cells that hang off it into its own edge model (clients download from and upload
    to their edge server); every ``cloud_every`` rounds the edge models cross the backhaul to the cloud,
    which averages them (weighted by the samples each edge aggregated since the last cloud round) and
    sends the result back to every edge.  An optional deadline applies to each round."""

    name = "hierarchical"
    hierarchical = True

    def __init__(self, cloud_every: int = 2, deadline_s: Optional[float] = None):
        if cloud_every < 1:
            raise ValueError(f"cloud_every must be >= 1, got {cloud_every}")
        self.cloud_every = int(cloud_every)
        self._deadline_s = deadline_s

    def deadline_s(self, round_index: int) -> Optional[float]:
        return self._deadline_s

    def cloud_round(self, round_index: int) -> bool:
        return (round_index + 1) % self.cloud_every == 0


POLICIES = ("sync", "deadline", "overselect", "fedasync", "fedbuff", "semisync", "hierarchical")


def make_policy(name: str, deadline_s: Optional[float] = None, overcommit: float = 0.3,
                async_kw: Optional[dict] = None) -> AggregationPolicy:
    if name == "sync":
        return SyncPolicy()
    if name == "deadline":
        if deadline_s is None:
            raise ValueError("policy 'deadline' needs deadline_s")
        return DeadlinePolicy(deadline_s)
    if name == "overselect":
        return OverSelectionPolicy(overcommit, deadline_s)
    if name == "hierarchical":
        return HierarchicalPolicy(**(async_kw or {}), deadline_s=deadline_s)
    if name == "fedasync":
        return FedAsyncPolicy(**(async_kw or {}))
    if name == "fedbuff":
        return FedBuffPolicy(**(async_kw or {}))
    if name == "semisync":
        return SemiSyncPolicy(**(async_kw or {}))
    raise ValueError(f"unknown policy '{name}', expected one of: {', '.join(POLICIES)}")
