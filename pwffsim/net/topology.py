"""Network topology: base stations, edge/cloud servers and the backhaul graph between them.

Network side only: numpy, networkx and the standard library (never torch).

A topology is one TOML file (format in ``topologies/README.md``) or a GraphML file written by
:func:`networkx.write_graphml`; :func:`load_topology` validates either and returns a
:class:`Topology`.  Errors are raised as :class:`TopologyError`, whose message is one line naming
the file, the field, what was expected and what was given, e.g.::

    topo.toml: field 'links[2].b': a known base station or server id; given 'edge9'

Model
-----
* Each base station is one omni-directional cell (sectorisation is not modelled).  It *hangs off*
  one server (``server``; default: the cloud), which is where its uploads are first aggregated.
* Servers are ``"edge"`` or ``"cloud"``; there is exactly one cloud.
* ``[[links]]`` are undirected backhaul edges with a one-way latency (s) and a capacity (bit/s).
  Routes are shortest paths by latency.  The time to move ``nbytes`` along a route is the sum of
  the link latencies plus ``8 nbytes / min(capacity)``: the bottleneck link sets the rate, the
  message is pipelined through the others (store-and-forward per hop is ignored), and there is no
  contention between concurrent transfers.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import networkx as nx
import numpy as np

__all__ = [
    "CHANNEL_MODEL_HINTS",
    "SERVER_KINDS",
    "HEX_SCENARIOS",
    "TopologyError",
    "BaseStation",
    "Server",
    "Link",
    "Topology",
    "load_topology",
    "topology_from_dict",
    "hexagonal_sites",
    "hex7",
    "write_topology_toml",
    "write_topology_graphml",
]

CHANNEL_MODEL_HINTS = ("UMa", "UMi", "RMa", "macro-128.1-37.6", "free-space")
SERVER_KINDS = ("edge", "cloud")

HEX_SCENARIOS: dict[str, dict[str, float]] = {
    # 3GPP TR 38.901 Table 7.2-1 (UMa, UMi-street canyon) and Table 7.2-3 (RMa): inter-site
    # distance and BS antenna height.  Transmit powers are the usual macro / micro evaluation
    # values (46 dBm macro, 41 dBm micro; TR 36.814 / TR 38.901 evaluation assumptions).
    "UMa": {"isd_m": 500.0, "height_m": 25.0, "tx_power_dbm": 46.0},
    "UMi": {"isd_m": 200.0, "height_m": 10.0, "tx_power_dbm": 41.0},
    "RMa": {"isd_m": 1732.0, "height_m": 35.0, "tx_power_dbm": 46.0},
}
"""Per-scenario defaults of :func:`hex7`."""

# field -> (required, default, check) for one [[base_stations]] entry; check in {"real", "pos"}.
_BS_NUMERIC = {
    "x_m": (True, None, "real"),
    "y_m": (True, None, "real"),
    "height_m": (False, 25.0, "pos"),
    "carrier_hz": (False, 2e9, "pos"),
    "uplink_bandwidth_hz": (False, 20e6, "pos"),
    "downlink_bandwidth_hz": (False, 20e6, "pos"),
    "tx_power_dbm": (False, 46.0, "real"),
}
_BS_KEYS = ("id", *_BS_NUMERIC, "server")
_SERVER_KEYS = ("id", "kind")
_LINK_KEYS = ("a", "b", "latency_s", "capacity_bps")
_TOP_KEYS = ("name", "channel_model", "base_stations", "servers", "links")


class TopologyError(ValueError):
    """A topology file is malformed, or a query names an unknown node.  ``str(err)`` is one line."""


# --------------------------------------------------------------------------------------------------
# data classes
# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------
def _given(value: Any) -> str:
    s = repr(value)
    return s if len(s) <= 60 else s[:57] + "..."


def _err(source: str, fld: str, expected: str, value: Any) -> TopologyError:
    return TopologyError(f"{source}: field '{fld}': {expected}; given {_given(value)}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _number(source: str, fld: str, v: Any, check: str) -> float:
    if not _is_number(v) or not math.isfinite(float(v)):
        raise _err(source, fld, "a finite number", v)
    if check == "pos" and v <= 0:
        raise _err(source, fld, "a number > 0", v)
    if check == "nonneg" and v < 0:
        raise _err(source, fld, "a number >= 0", v)
    return float(v)


def _ident(source: str, fld: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _err(source, fld, "a non-empty string id", v)
    return v


def _table(source: str, fld: str, v: Any, allowed: Iterable[str]) -> dict:
    if not isinstance(v, dict):
        raise _err(source, fld, "a table", v)
    for key in v:
        if key not in allowed:
            raise _err(source, f"{fld}.{key}" if fld else key, f"unknown key (allowed: {', '.join(allowed)})", v[key])
    return v


def _required(source: str, fld: str, entry: dict, key: str) -> Any:
    if key not in entry:
        raise TopologyError(f"{source}: field '{fld}.{key}': required but missing")
    return entry[key]


def _array(source: str, data: dict, key: str, required: bool) -> list:
    if key not in data:
        if required:
            raise TopologyError(f"{source}: field '{key}': required but missing")
        return []
    v = data[key]
    if not isinstance(v, list):
        raise _err(source, key, f"an array of tables ([[{key}]])", v)
    return v


def _validate(data: Any, source: str, where: Callable[[str, int], str] | None = None) -> Topology:
    """Validate the dict form of a topology.  ``where(section, i)`` names entry ``i`` of a section
    in error messages (default ``section[i]``; GraphML import names nodes and edges instead)."""
    where = where or (lambda section, i: f"{section}[{i}]")
    if not isinstance(data, dict):
        raise TopologyError(f"{source}: expected a table of topology fields; given {_given(data)}")
    _table(source, "", data, _TOP_KEYS)

    name = data.get("name", Path(source).stem if source and not source.startswith("<") else "topology")
    name = _ident(source, "name", name)
    channel_model = data.get("channel_model")
    if channel_model is not None and channel_model not in CHANNEL_MODEL_HINTS:
        raise _err(source, "channel_model", f"one of {', '.join(CHANNEL_MODEL_HINTS)}", channel_model)

    raw_bs = _array(source, data, "base_stations", required=True)
    raw_servers = _array(source, data, "servers", required=True)
    raw_links = _array(source, data, "links", required=False)
    if not raw_bs:
        raise _err(source, "base_stations", "at least one [[base_stations]] entry", raw_bs)

    seen: dict[str, str] = {}

    def claim(fld: str, ident: str) -> None:
        if ident in seen:
            raise _err(source, fld, f"an id unique among base stations and servers (already used by {seen[ident]})", ident)
        seen[ident] = fld

    # Ids first, in file order (base stations, then servers), so a duplicate names the later entry.
    for i, entry in enumerate(raw_bs):
        loc = where("base_stations", i)
        _table(source, loc, entry, _BS_KEYS)
        claim(f"{loc}.id", _ident(source, f"{loc}.id", _required(source, loc, entry, "id")))

    servers: list[Server] = []
    for i, entry in enumerate(raw_servers):
        loc = where("servers", i)
        _table(source, loc, entry, _SERVER_KEYS)
        sid = _ident(source, f"{loc}.id", _required(source, loc, entry, "id"))
        claim(f"{loc}.id", sid)
        kind = _required(source, loc, entry, "kind")
        if kind not in SERVER_KINDS:
            raise _err(source, f"{loc}.kind", "one of 'edge', 'cloud'", kind)
        servers.append(Server(sid, kind))
    clouds = [s.id for s in servers if s.kind == "cloud"]
    if len(clouds) != 1:
        raise _err(source, "servers", "exactly one server with kind = 'cloud'", clouds)
    cloud = clouds[0]
    server_ids = {s.id for s in servers}

    stations: list[BaseStation] = []
    bs_where: dict[str, str] = {}
    for i, entry in enumerate(raw_bs):
        loc = where("base_stations", i)
        bid = entry["id"]
        values: dict[str, Any] = {}
        for key, (required, default, check) in _BS_NUMERIC.items():
            v = _required(source, loc, entry, key) if required else entry.get(key, default)
            values[key] = _number(source, f"{loc}.{key}", v, check)
        server = entry.get("server", cloud)
        if server not in server_ids:
            raise _err(source, f"{loc}.server", f"the id of a [[servers]] entry (one of {sorted(server_ids)})", server)
        stations.append(BaseStation(id=bid, server=server, **values))
        bs_where[bid] = loc

    graph = nx.Graph()
    graph.graph["name"] = name
    if channel_model is not None:
        graph.graph["channel_model"] = channel_model
    for bs in stations:
        attrs = asdict(bs)
        del attrs["id"]
        graph.add_node(bs.id, kind="bs", **attrs)
    for s in servers:
        graph.add_node(s.id, kind=s.kind)

    link_where: dict[frozenset, str] = {}
    for i, entry in enumerate(raw_links):
        loc = where("links", i)
        _table(source, loc, entry, _LINK_KEYS)
        ends = []
        for key in ("a", "b"):
            node = _ident(source, f"{loc}.{key}", _required(source, loc, entry, key))
            if node not in graph:
                raise _err(source, f"{loc}.{key}", "a known base station or server id", node)
            ends.append(node)
        a, b = ends
        if a == b:
            raise _err(source, f"{loc}.b", f"a node other than a ({a!r}): no self-links", b)
        pair = frozenset(ends)
        if pair in link_where:
            raise _err(source, f"{loc}.b", f"at most one link per pair of nodes (duplicate of {link_where[pair]})", b)
        link_where[pair] = loc
        latency = _number(source, f"{loc}.latency_s", _required(source, loc, entry, "latency_s"), "nonneg")
        capacity = _number(source, f"{loc}.capacity_bps", _required(source, loc, entry, "capacity_bps"), "pos")
        graph.add_edge(a, b, latency_s=latency, capacity_bps=capacity)

    reachable = nx.node_connected_component(graph, cloud)
    for node in graph.nodes:
        if node not in reachable:
            loc = bs_where.get(node) or next(where("servers", i) for i, s in enumerate(servers) if s.id == node)
            raise _err(source, f"{loc}.id", f"a node connected to the cloud {cloud!r} through [[links]]", node)

    return Topology(name=name, channel_model=channel_model, base_stations=stations, servers=servers, graph=graph)


def topology_from_dict(data: dict[str, Any], source: str = "<topology>") -> Topology:
    """Validate the dict form of a topology (as read from TOML); ``source`` prefixes error messages."""
    return _validate(data, source)


# --------------------------------------------------------------------------------------------------
# loading and writing
# --------------------------------------------------------------------------------------------------
def _dict_from_graphml(g: nx.Graph, source: str) -> tuple[dict[str, Any], Callable[[str, int], str]]:
    """Turn a graph read from GraphML into the dict form, plus the names of its entries."""
    data: dict[str, Any] = {}
    for key in ("name", "channel_model"):
        if key in g.graph:
            data[key] = g.graph[key]
    names: dict[str, list[str]] = {"base_stations": [], "servers": [], "links": []}
    bss, servers, links = [], [], []
    for node, attrs in g.nodes(data=True):
        label = f"node[{node!r}]"
        if "kind" not in attrs:
            raise TopologyError(f"{source}: field '{label}.kind': required but missing")
        entry = {k: v for k, v in attrs.items() if k != "kind"}
        entry["id"] = node
        if attrs["kind"] == "bs":
            bss.append(entry)
            names["base_stations"].append(label)
        elif attrs["kind"] in SERVER_KINDS:
            entry["kind"] = attrs["kind"]
            servers.append(entry)
            names["servers"].append(label)
        else:
            raise _err(source, f"{label}.kind", "one of 'bs', 'edge', 'cloud'", attrs["kind"])
    for a, b, attrs in g.edges(data=True):
        entry = {"a": a, "b": b, **attrs}
        links.append(entry)
        names["links"].append(f"edge[{a!r}, {b!r}]")
    data.update(base_stations=bss, servers=servers, links=links)
    return data, lambda section, i: names[section][i]


def load_topology(path: str | Path) -> Topology:
    """Read and validate a ``.toml`` or ``.graphml`` topology file."""
    p = Path(path)
    source = str(path)
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".graphml"):
        raise TopologyError(f"{source}: expected a .toml or .graphml topology file")
    if not p.is_file():
        raise TopologyError(f"{source}: file not found")
    if suffix == ".toml":
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise TopologyError(f"{source}: cannot read as a UTF-8 TOML file") from None
        except tomllib.TOMLDecodeError as exc:
            raise TopologyError(f"{source}: not valid TOML: {exc}") from None
        return _validate(data, source)
    try:
        g = nx.read_graphml(p)
    except Exception as exc:  # ParseError, NetworkXError, KeyError, ... from the XML reader
        msg = " ".join(str(exc).split())
        raise TopologyError(f"{source}: not valid GraphML: {exc.__class__.__name__}: {msg}") from None
    if g.is_directed():
        raise TopologyError(f"{source}: expected an undirected GraphML graph (edgedefault=\"undirected\")")
    data, where = _dict_from_graphml(g, source)
    return _validate(data, source, where)


def _to_dict(topo: Topology) -> dict[str, Any]:
    data: dict[str, Any] = {"name": topo.name}
    if topo.channel_model is not None:
        data["channel_model"] = topo.channel_model
    data["base_stations"] = [asdict(bs) for bs in topo.base_stations]
    data["servers"] = [asdict(s) for s in topo.servers]
    data["links"] = [asdict(link) for link in topo.links]
    return data


def write_topology_toml(topo: Topology, path: str | Path, header: str | None = None) -> None:
    """Write ``topo`` as TOML (every field explicit); :func:`load_topology` reads it back equal.
    ``header`` lines, if given, are written first as ``#`` comments."""
    import tomli_w

    data = _to_dict(topo)
    sections = {key: data.pop(key) for key in ("base_stations", "servers", "links")}
    # Scalars first, then every entry as its own [[section]] table (tomli_w would inline short ones).
    parts = [tomli_w.dumps(data)]
    for key, entries in sections.items():
        parts += [f"[[{key}]]\n" + tomli_w.dumps(entry) for entry in entries]
    text = "\n".join(parts)
    if header:
        text = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) + "\n" + text
    Path(path).write_text(text, encoding="utf-8")


def write_topology_graphml(topo: Topology, path: str | Path) -> None:
    """Export ``topo.graph`` with :func:`networkx.write_graphml`; :func:`load_topology` reads it back equal."""
    nx.write_graphml(topo.graph, str(path))


# --------------------------------------------------------------------------------------------------
# generators
# --------------------------------------------------------------------------------------------------
def hexagonal_sites(n_rings: int = 1, isd_m: float = 500.0) -> list[tuple[float, float]]:
    """Site positions (m) of a hexagonal grid: the centre site, then ``n_rings`` rings around it.

    Ring ``k`` holds ``6k`` sites, so there are ``1 + 3 n (n + 1)`` in all (7 for one ring, 19 for
    two).  Orientation: the first ring's sites sit at distance ``isd_m`` at angles ``30 + 60 j``
    degrees (j = 0..5, counter-clockwise from the +x axis), i.e. the first one at
    ``(isd sqrt(3)/2, isd/2)``; neighbouring sites are ``isd_m`` apart.  Ring ``k`` starts at
    ``k`` ISD along 30 degrees and goes counter-clockwise.  Coordinates are rounded to 1e-9 m.
    """
    if isinstance(n_rings, bool) or not isinstance(n_rings, (int, np.integer)) or n_rings < 0:
        raise ValueError(f"n_rings must be an integer >= 0, got {n_rings!r}")
    if not _is_number(isd_m) or not math.isfinite(isd_m) or isd_m <= 0:
        raise ValueError(f"isd_m must be a finite distance > 0 m, got {isd_m!r}")
    dirs = [(math.cos(math.radians(30 + 60 * j)), math.sin(math.radians(30 + 60 * j))) for j in range(6)]
    sites = [(0.0, 0.0)]
    for k in range(1, int(n_rings) + 1):
        for j in range(6):
            # Side j runs from the corner k*d_j towards k*d_{j+1}, in steps of d_{j+2} (= d_{j+1} - d_j).
            cx, cy = k * dirs[j][0], k * dirs[j][1]
            sx, sy = dirs[(j + 2) % 6]
            for step in range(k):
                sites.append((cx + step * sx, cy + step * sy))
    return [(round(x * isd_m, 9) + 0.0, round(y * isd_m, 9) + 0.0) for x, y in sites]


def hex7(scenario: str = "UMa", isd_m: float | None = None, carrier_hz: float = 3.5e9, *,
         height_m: float | None = None, tx_power_dbm: float | None = None,
         uplink_bandwidth_hz: float = 20e6, downlink_bandwidth_hz: float = 20e6,
         backhaul_latency_s: float = 0.005, backhaul_capacity_bps: float = 10e9,
         name: str | None = None) -> Topology:
    """The 3GPP 7-site hexagonal layout (one ring, :func:`hexagonal_sites`).

    ``scenario`` picks the defaults of :data:`HEX_SCENARIOS` (TR 38.901 Table 7.2-1: UMa ISD 500 m,
    BS height 25 m; UMi ISD 200 m, height 10 m; RMa ISD 1732 m, height 35 m).  Each site is ONE
    omni-directional cell ``bs0``..``bs6`` (``bs0`` at the centre): the usual three 120-degree
    sectors per site are not modelled.  Every cell hangs off a single ``cloud`` server through a
    star backhaul (default 5 ms, 10 Gb/s per link).  ``channel_model`` is set to ``scenario``.
    """
    if scenario not in HEX_SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(HEX_SCENARIOS)}, got {scenario!r}")
    defaults = HEX_SCENARIOS[scenario]
    isd = defaults["isd_m"] if isd_m is None else isd_m
    sites = hexagonal_sites(1, isd)
    data = {
        "name": name or f"hex7-{scenario.lower()}",
        "channel_model": scenario,
        "base_stations": [
            {"id": f"bs{i}", "x_m": x, "y_m": y,
             "height_m": defaults["height_m"] if height_m is None else height_m,
             "carrier_hz": carrier_hz, "uplink_bandwidth_hz": uplink_bandwidth_hz,
             "downlink_bandwidth_hz": downlink_bandwidth_hz,
             "tx_power_dbm": defaults["tx_power_dbm"] if tx_power_dbm is None else tx_power_dbm,
             "server": "cloud"}
            for i, (x, y) in enumerate(sites)
        ],
        "servers": [{"id": "cloud", "kind": "cloud"}],
        "links": [{"a": f"bs{i}", "b": "cloud", "latency_s": backhaul_latency_s, "capacity_bps": backhaul_capacity_bps}
                  for i in range(len(sites))],
    }
    return topology_from_dict(data, source=f"<hex7 {scenario}>")
