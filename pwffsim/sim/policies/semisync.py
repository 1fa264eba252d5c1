"""``semisync``: semi-synchronous: every ``period_s`` the server aggregates whatever arrived since the
last aggregation (FedBuff's staleness-weighted rule); devices keep training across periods."""
from __future__ import annotations

import math

from .fedbuff import FedBuffPolicy


class SemiSyncPolicy(FedBuffPolicy):
    name = "semisync"
    summary = "every period_s, whatever arrived (FedBuff's staleness-weighted step)"
    parameters = ("period_s", "server_lr")

    def __init__(self, period_s: float, server_lr: float = 1.0):
        super().__init__(buffer_size=1, server_lr=server_lr)
        if not (period_s > 0 and math.isfinite(period_s)):
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.period_s = float(period_s)

    def ready(self, buffered: int) -> bool:
        return False  # time-driven only
