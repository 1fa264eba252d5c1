"""Aggregation policies: one base class (:mod:`.base`), one module per policy, one registry
(:mod:`.registry`).  See :class:`~pwffsim.sim.policies.base.AggregationPolicy`."""
from .base import AggregationPolicy, ServerView
from .deadline import DeadlinePolicy
from .fedasync import FedAsyncPolicy
from .fedavg import SyncPolicy
from .fedavgm import FedAvgMPolicy
from .fedbuff import FedBuffPolicy
from .hierarchical import HierarchicalPolicy
from .overselect import OverSelectionPolicy
from .registry import POLICIES, build_policy, policy_class, policy_reference
from .semisync import SemiSyncPolicy

__all__ = ["AggregationPolicy", "ServerView", "POLICIES", "build_policy", "policy_class", "policy_reference",
           "SyncPolicy", "DeadlinePolicy", "OverSelectionPolicy", "FedAvgMPolicy", "HierarchicalPolicy",
           "FedAsyncPolicy", "FedBuffPolicy", "SemiSyncPolicy"]
