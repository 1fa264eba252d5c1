"""``fedbuff``: FedBuff (Nguyen et al., AISTATS 2022): aggregate every ``buffer_size`` arrivals,
``global <- global + eta_g sum_i n_i s(tau_i) (update_i - start_i) / sum_i n_i`` with
``s(tau) = 1 / sqrt(1 + tau)`` (``start_i`` = the global part device i downloaded)."""
from __future__ import annotations

import math

from .base import AggregationPolicy


class FedBuffPolicy(AggregationPolicy):
    name = "fedbuff"
    summary = "every buffer_size arrivals, staleness-weighted (1/sqrt(1+tau)) server step of size server_lr"
    parameters = ("buffer_size", "server_lr")
    asynchronous = True

    def __init__(self, buffer_size: int = 3, server_lr: float = 1.0):
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self.buffer_size, self.server_lr = int(buffer_size), float(server_lr)

    def ready(self, buffered: int) -> bool:
        return buffered >= self.buffer_size

    @staticmethod
    def staleness_weight(tau: int) -> float:
        return 1.0 / math.sqrt(1.0 + tau)

    def aggregate(self, server_round, current, updates):
        from ...learn.aggregate import apply_weighted_deltas

        total = float(sum(u.num_samples for u in updates))
        coefficients = [u.num_samples * self.staleness_weight(u.staleness) for u in updates]
        return apply_weighted_deltas(current, [u.start for u in updates], [u.params for u in updates],
                                     coefficients, total, self.server_lr)
