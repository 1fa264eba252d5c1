"""``overselect``: FedScale's over-commitment: select ``ceil(K (1 + x))`` clients, aggregate the first
``K`` to arrive (ties by client id), stop the others then (status ``late``); an optional deadline still
applies."""
from __future__ import annotations

import math
from typing import Optional

from .base import check_seconds
from .fedavg import SyncPolicy


class OverSelectionPolicy(SyncPolicy):
    name = "overselect"
    summary = "select ceil(K (1 + overcommit)), aggregate the first K to arrive (FedAvg), stop the rest"
    parameters = ("overcommit", "deadline_s")

    def __init__(self, overcommit: float, deadline_s: Optional[float] = None):
        if not (overcommit >= 0 and math.isfinite(overcommit)):
            raise ValueError(f"overcommit must be >= 0, got {overcommit}")
        self.overcommit = float(overcommit)
        self.deadline = check_seconds("deadline_s", deadline_s, allow_none=True)

    def num_to_select(self, clients_per_round: int) -> int:
        return math.ceil(clients_per_round * (1.0 + self.overcommit) - 1e-9)

    def num_to_aggregate(self, clients_per_round: int, selected: int) -> Optional[int]:
        return min(clients_per_round, selected)

    def deadline_s(self, round_index: int) -> Optional[float]:
        return self.deadline
