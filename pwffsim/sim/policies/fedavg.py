"""``sync``: synchronous FedAvg (McMahan et al., AISTATS 2017): wait for every selected client, then
the sample-weighted mean of their global parts (the base class's defaults, named)."""
from __future__ import annotations

from .base import AggregationPolicy


class SyncPolicy(AggregationPolicy):
    name = "sync"
    summary = "wait for every selected client, FedAvg (sample-weighted mean)"
