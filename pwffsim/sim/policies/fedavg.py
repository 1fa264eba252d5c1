"""``sync``: synchronous FedAvg (McMahan et al., AISTATS 2017): wait for every selected client, then
the sample-weighted mean of their global parts."""
from __future__ import annotations

from typing import Sequence

from ..state import ClientUpdate
from .base import AggregationPolicy


def fedavg(updates: Sequence[ClientUpdate]) -> dict:
    """Sample-weighted mean of the updates' global parts."""
    from ...learn.aggregate import weighted_mean

    return weighted_mean([u.params for u in updates], [float(u.num_samples) for u in updates])


class SyncPolicy(AggregationPolicy):
    name = "sync"
    summary = "wait for every selected client, FedAvg (sample-weighted mean)"

    def aggregate(self, server_round, current, updates):
        return fedavg(updates)
