"""``fedasync``: FedAsync (Xie et al., 2019): every arrival is mixed in at once,
``global <- (1 - a_tau) global + a_tau update`` with ``a_tau = alpha (1 + tau)^(-a)`` (polynomial
staleness function)."""
from __future__ import annotations

from .base import AggregationPolicy


class FedAsyncPolicy(AggregationPolicy):
    name = "fedasync"
    summary = "mix each arrival in at once with weight alpha (1+tau)^-a"
    parameters = ("async_alpha", "async_staleness_exponent")
    asynchronous = True

    def __init__(self, async_alpha: float = 0.6, async_staleness_exponent: float = 0.5):
        self.alpha, self.a = float(async_alpha), float(async_staleness_exponent)

    def ready(self, buffered: int) -> bool:
        return buffered >= 1

    def mixing_weight(self, tau: int) -> float:
        return self.alpha * (1.0 + tau) ** (-self.a)

    def aggregate(self, server_round, current, updates):
        from ...learn.aggregate import mix

        out = current
        for u in updates:  # one at a time, in arrival order
            out = mix(out, u.params, self.mixing_weight(u.staleness))
        return out
