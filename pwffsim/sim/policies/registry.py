"""The one registry of aggregation policies: it feeds the scenario schema (``fl.policy``), the builder
(:func:`build_policy`) and ``pwffsim compare``.  Adding a policy: one module with its class, one line
here."""
from __future__ import annotations

from typing import Any

from .base import AggregationPolicy
from .deadline import DeadlinePolicy
from .fedasync import FedAsyncPolicy
from .fedavg import SyncPolicy
from .fedavgm import FedAvgMPolicy
from .fedbuff import FedBuffPolicy
from .hierarchical import HierarchicalPolicy
from .overselect import OverSelectionPolicy
from .semisync import SemiSyncPolicy

POLICIES: dict[str, type[AggregationPolicy]] = {cls.name: cls for cls in (
    SyncPolicy,
    DeadlinePolicy,
    OverSelectionPolicy,
    FedAvgMPolicy,
    HierarchicalPolicy,
    FedAsyncPolicy,
    FedBuffPolicy,
    SemiSyncPolicy,
)}


def policy_class(name: str) -> type[AggregationPolicy]:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy '{name}', expected one of: {', '.join(POLICIES)}") from None


def build_policy(fl: Any) -> AggregationPolicy:
    """The policy the scenario's ``[fl]`` section names, with its parameters."""
    return policy_class(fl.policy).from_config(fl)


def policy_reference() -> str:
    """One line per policy: the ``fl.policy`` description in the scenario reference."""
    sync = "; ".join(f"'{n}': {c.summary}" for n, c in POLICIES.items() if not c.asynchronous)
    asyn = "; ".join(f"'{n}': {c.summary}" for n, c in POLICIES.items() if c.asynchronous)
    return (f"{sync}. Asynchronous, with clients_per_round devices training concurrently "
            f"('rounds' counts aggregations): {asyn}.")
