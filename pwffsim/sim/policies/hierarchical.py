"""``hierarchical``: hierarchical FL (e.g. HierFAVG, Liu et al., ICC 2020).  Every round each edge
server aggregates the updates of the cells that hang off it into its own edge model (clients download
from and upload to their edge server); every ``cloud_every`` rounds the edge models cross the backhaul
to the cloud, which averages them (weighted by the samples each edge aggregated since the last cloud
round) and sends the result back to every edge.  An optional deadline applies to each round."""
from __future__ import annotations

from typing import Optional

from .base import check_seconds
from .fedavg import SyncPolicy


class HierarchicalPolicy(SyncPolicy):
    name = "hierarchical"
    summary = ("edge servers aggregate their cells every round, the cloud aggregates every cloud_every rounds "
               "over the backhaul (needs a topology with edge servers)")
    parameters = ("cloud_every", "deadline_s")

    def __init__(self, cloud_every: int = 2, deadline_s: Optional[float] = None):
        if cloud_every < 1:
            raise ValueError(f"cloud_every must be >= 1, got {cloud_every}")
        self.cloud_every = int(cloud_every)
        self.deadline = check_seconds("deadline_s", deadline_s, allow_none=True)
        self.edges: list[str] = []
        self.edge_samples: dict[str, float] = {}  # samples each edge aggregated since the last cloud round

    def bind(self, server) -> None:
        super().bind(server)
        world = server.world
        topo = world.topology
        if topo is None:
            raise ValueError("policy 'hierarchical' needs a topology with edge servers")
        self.edges = sorted({topo.edge_of(c.id) for c in world.cells})
        if self.edges == [topo.cloud]:
            raise ValueError(f"policy 'hierarchical' needs edge servers, but every cell of topology "
                             f"{world.sc.topology} hangs off the cloud")
        server.state.edge_state = {e: dict(server.state.global_state) for e in self.edges}
        self.edge_samples = {e: 0.0 for e in self.edges}

    def deadline_s(self, round_index: int) -> Optional[float]:
        return self.deadline

    def cloud_round(self, round_index: int) -> bool:
        return (round_index + 1) % self.cloud_every == 0

    def start_model(self, dev) -> dict:
        return self.server.state.edge_state[self.server.world.edge_of(dev)]

    def aggregation_node(self, dev) -> str:
        return self.server.world.edge_of(dev)

    def aggregation_process(self, server_round, updates):
        """Each edge's FedAvg (:meth:`aggregate`) every round; the cloud's mean over the backhaul every
        ``cloud_every`` rounds."""
        srv = self.server
        state, world = srv.state, srv.world
        if not srv.split.global_keys:
            return
        self._edge_round(server_round, updates)
        if not self.cloud_round(server_round):
            return
        nbytes = state.payload_bytes()
        cloud = world.topology.cloud
        yield from self._backhaul_all(server_round, nbytes, {e: (e, cloud) for e in self.edges})
        contributing = [e for e in self.edges if self.edge_samples[e] > 0]
        if contributing:
            from ...learn.aggregate import weighted_mean

            state.global_state = weighted_mean([state.edge_state[e] for e in contributing],
                                               [self.edge_samples[e] for e in contributing])
        yield from self._backhaul_all(server_round, nbytes, {e: (cloud, e) for e in self.edges})
        for e in self.edges:
            state.edge_state[e] = dict(state.global_state)
            self.edge_samples[e] = 0.0

    def _edge_round(self, server_round: int, updates) -> None:
        """Each edge server aggregates the updates of its own cells."""
        state, world = self.server.state, self.server.world
        for e in self.edges:
            mine = [u for u in updates if world.edge_of(world.devices[u.client]) == e]
            if mine:
                state.edge_state[e] = self.aggregate(server_round, state.edge_state[e], mine)
                self.edge_samples[e] += sum(float(u.num_samples) for u in mine)

    def _backhaul_all(self, server_round: int, nbytes: int, legs: dict):
        """Every edge's leg at once; the process waits for the slowest."""
        from ..client import backhaul_rate_bps  # (not at import: the scenario schema imports this module)

        srv = self.server
        topo = srv.world.topology
        t0 = srv.env.now
        dt = {e: topo.transfer_time_s(src, dst, nbytes) for e, (src, dst) in legs.items()}
        yield srv.env.timeout(max(dt.values()))
        for e, (src, dst) in legs.items():
            srv.recorder.backhaul(server_round, None, t0, t0 + dt[e], backhaul_rate_bps(topo, src, dst), nbytes,
                                  src, dst)
