"""``deadline``: aggregate what arrived by a deadline after the round started; stop the stragglers
(status ``late``)."""
from __future__ import annotations

from typing import Optional

from .base import check_seconds
from .fedavg import SyncPolicy


class DeadlinePolicy(SyncPolicy):
    name = "deadline"
    summary = "aggregate what arrived by deadline_s (FedAvg); stragglers are stopped and marked late"
    parameters = ("deadline_s",)
    required = ("deadline_s",)

    def __init__(self, deadline_s: float):
        self.deadline = check_seconds("deadline_s", deadline_s)

    def deadline_s(self, round_index: int) -> Optional[float]:
        return self.deadline
