"""``fedavgm``: FedAvg with server momentum (FedAvgM, Hsu et al., "Measuring the effects of non-identical
data distribution", 2019): the FedAvg mean gives the pseudo-gradient ``g = global - mean``; the server
keeps a velocity ``v <- beta v + g`` (``v = g`` at the first aggregation) and steps
``global <- global - eta_g v``.  With ``beta = 0`` and ``eta_g = 1`` it is FedAvg."""
from __future__ import annotations

from .fedavg import SyncPolicy


class FedAvgMPolicy(SyncPolicy):
    name = "fedavgm"
    summary = "synchronous FedAvg with server momentum server_momentum and server step server_lr"
    parameters = ("server_momentum", "server_lr")

    def __init__(self, server_momentum: float = 0.9, server_lr: float = 1.0):
        if not 0.0 <= server_momentum < 1.0:
            raise ValueError(f"server_momentum must be in [0, 1), got {server_momentum}")
        self.server_momentum, self.server_lr = float(server_momentum), float(server_lr)
        self.velocity = None  # float64 tensors, per global key, after the first aggregation

    def bind(self, server) -> None:
        super().bind(server)
        self.velocity = None  # a new run starts without momentum

    def aggregate(self, server_round, current, updates):
        from ...learn.aggregate import momentum_step

        mean = super().aggregate(server_round, current, updates)
        new, self.velocity = momentum_step(current, mean, self.velocity, self.server_momentum, self.server_lr)
        return new
