"""Aggregation policies: one abstract base (:mod:`.base`), one module per policy, one registry
(:mod:`.registry`).  See :class:`~pwffsim.sim.policies.base.AggregationPolicy`."""
from .base import AggregationPolicy, ServerView
from .registry import POLICIES, build_policy, policy_class, policy_reference

__all__ = ["AggregationPolicy", "ServerView", "POLICIES", "build_policy", "policy_class", "policy_reference"]
