"""The topology types: base stations, servers, backhaul links and the validated :class:`Topology`
with its routes and transfer times."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from ..pathloss_registry import PATH_LOSS_REGISTRY

# A topology's channel_model names a registered path-loss model: the scenario uses it unless it sets
# channel.path_loss.
CHANNEL_MODEL_HINTS = tuple(PATH_LOSS_REGISTRY)
SERVER_KINDS = ("edge", "cloud")


class TopologyError(ValueError):
    """A topology file is malformed, or a query names an unknown node.  ``str(err)`` is one line."""


@dataclass
class BaseStation:
    """One omni-directional cell.  Positions in metres, frequencies in Hz, power in dBm."""

    id: str
    x_m: float
    y_m: float
    height_m: float
    carrier_hz: float
    uplink_bandwidth_hz: float
    downlink_bandwidth_hz: float
    tx_power_dbm: float
    server: str
    noise_figure_db: float | None = None  # receiver noise figure (dB); None: the scenario's cells[0]


@dataclass
class Server:
    """An aggregation point: ``kind`` is ``"edge"`` or ``"cloud"``."""

    id: str
    kind: str


@dataclass(frozen=True)
class Link:
    """One undirected backhaul edge (as stored in :attr:`Topology.graph`)."""

    a: str
    b: str
    latency_s: float
    capacity_bps: float


@dataclass(eq=False)
class Topology:
    """A validated topology.

    ``graph`` has one node per base station and server (node attribute ``kind``: ``"bs"``,
    ``"edge"`` or ``"cloud"``; base-station nodes also carry their :class:`BaseStation` fields) and
    one edge per link (attributes ``latency_s`` and ``capacity_bps``).
    """

    name: str
    channel_model: str | None
    base_stations: list[BaseStation]
    servers: list[Server]
    graph: nx.Graph = field(repr=False)

    # -- lookups -----------------------------------------------------------------------------------
    @property
    def cloud(self) -> str:
        """Id of the (single) cloud server."""
        clouds = [s.id for s in self.servers if s.kind == "cloud"]
        if len(clouds) != 1:
            raise TopologyError(f"topology '{self.name}': expected exactly one cloud server, found {clouds}")
        return clouds[0]

    @property
    def links(self) -> list[Link]:
        """The backhaul edges, in the graph's edge order."""
        return [Link(str(a), str(b), float(d["latency_s"]), float(d["capacity_bps"]))
                for a, b, d in self.graph.edges(data=True)]

    def base_station(self, bs_id: str) -> BaseStation:
        for bs in self.base_stations:
            if bs.id == bs_id:
                return bs
        raise TopologyError(
            f"topology '{self.name}': unknown base station {bs_id!r}; known: {[b.id for b in self.base_stations]}"
        )

    def edge_of(self, bs_id: str) -> str:
        """Id of the server the cell ``bs_id`` hangs off (an edge server or the cloud)."""
        return self.base_station(bs_id).server

    # -- routing -----------------------------------------------------------------------------------
    def _check_node(self, node: str) -> None:
        if node not in self.graph:
            raise TopologyError(f"topology '{self.name}': unknown node {node!r}; known: {list(self.graph.nodes)}")

    def route(self, src: str, dst: str) -> list[str]:
        """Node ids from ``src`` to ``dst`` inclusive, the shortest path by summed ``latency_s``."""
        self._check_node(src)
        self._check_node(dst)
        try:
            return list(nx.shortest_path(self.graph, src, dst, weight="latency_s"))
        except nx.NetworkXNoPath:
            raise TopologyError(f"topology '{self.name}': no route from {src!r} to {dst!r}") from None

    def route_latency_s(self, src: str, dst: str) -> float:
        """Sum of the one-way link latencies along :meth:`route` (s)."""
        path = self.route(src, dst)
        return float(sum(self.graph.edges[u, v]["latency_s"] for u, v in zip(path, path[1:])))

    def bottleneck_bps(self, src: str, dst: str) -> float:
        """Smallest link capacity along :meth:`route` (bit/s); ``inf`` when ``src == dst``."""
        path = self.route(src, dst)
        return float(min((self.graph.edges[u, v]["capacity_bps"] for u, v in zip(path, path[1:])),
                         default=math.inf))

    def transfer_time_s(self, src: str, dst: str, nbytes: float) -> float:
        """Time to move ``nbytes`` from ``src`` to ``dst`` over the backhaul (s).

        ``sum(latency_s) + 8 nbytes / min(capacity_bps)`` along :meth:`route`: one bottleneck sets
        the rate, per-hop store-and-forward and contention are ignored.  0 when ``src == dst``.
        """
        if isinstance(nbytes, bool) or not isinstance(nbytes, (int, float, np.integer, np.floating)) \
                or not math.isfinite(nbytes) or nbytes < 0:
            raise TopologyError(f"topology '{self.name}': nbytes must be a finite number >= 0; given {nbytes!r}")
        path = self.route(src, dst)
        if len(path) == 1:
            return 0.0
        edges = [self.graph.edges[u, v] for u, v in zip(path, path[1:])]
        latency = sum(e["latency_s"] for e in edges)
        return float(latency + 8.0 * float(nbytes) / min(e["capacity_bps"] for e in edges))

    # -- comparison --------------------------------------------------------------------------------
    def _key(self) -> tuple:
        links = sorted((tuple(sorted((l.a, l.b))), l.latency_s, l.capacity_bps) for l in self.links)
        return (self.name, self.channel_model, self.base_stations, self.servers, links)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Topology):
            return NotImplemented
        return self._key() == other._key()
