"""Validation of the dict form of a topology (as read from TOML, or converted from GraphML).

Every error is one line naming the source, the field, what was expected and what was given.  The
checks run in a fixed order (top-level fields; the ids of base stations, then of servers; the
servers and the single cloud; the base stations' numbers and servers; the links; connectivity), so
the first problem in file order is the one reported.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

import networkx as nx
import numpy as np

from .model import CHANNEL_MODEL_HINTS, SERVER_KINDS, BaseStation, Server, Topology, TopologyError

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
_BS_KEYS = ("id", *_BS_NUMERIC, "server", "noise_figure_db")  # noise_figure_db: optional, >= 0 (dB)
_SERVER_KEYS = ("id", "kind")
_LINK_KEYS = ("a", "b", "latency_s", "capacity_bps")
_TOP_KEYS = ("name", "channel_model", "base_stations", "servers", "links")
# field -> check of one [[links]] entry's numbers (all required).
_LINK_NUMERIC = {"latency_s": "nonneg", "capacity_bps": "pos"}
# [[section]] -> required?
_SECTIONS = {"base_stations": True, "servers": True, "links": False}


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

def _default_where(section: str, i: int) -> str:
    return f"{section}[{i}]"


def _validate(data: Any, source: str, where: Callable[[str, int], str] | None = None) -> Topology:
    """Validate the dict form of a topology.  ``where(section, i)`` names entry ``i`` of a section
    in error messages (default ``section[i]``; GraphML import names nodes and edges instead)."""
    return _Validator(source, where or _default_where).run(data)


def topology_from_dict(data: dict[str, Any], source: str = "<topology>") -> Topology:
    """Validate the dict form of a topology (as read from TOML); ``source`` prefixes error messages."""
    return _validate(data, source)


class _Validator:
    """One validation of one topology dict; ``seen`` maps every id claimed so far to its field."""

    def __init__(self, source: str, where: Callable[[str, int], str]):
        self.source = source
        self.where = where
        self.seen: dict[str, str] = {}

    def run(self, data: Any) -> Topology:
        source = self.source
        if not isinstance(data, dict):
            raise TopologyError(f"{source}: expected a table of topology fields; given {_given(data)}")
        _table(source, "", data, _TOP_KEYS)
        name, channel_model = self._header(data)
        raw = {key: _array(source, data, key, required) for key, required in _SECTIONS.items()}
        if not raw["base_stations"]:
            raise _err(source, "base_stations", "at least one [[base_stations]] entry", raw["base_stations"])
        # Ids first, in file order (base stations, then servers), so a duplicate names the later entry.
        for i, entry in enumerate(raw["base_stations"]):
            self._entry_id("base_stations", i, entry, _BS_KEYS)
        servers = self._servers(raw["servers"])
        cloud = self._cloud(servers)
        stations = [self._station(i, entry, servers, cloud) for i, entry in enumerate(raw["base_stations"])]
        graph = _graph(name, channel_model, stations, servers)
        self._links(graph, raw["links"])
        self._check_connected(graph, cloud, stations, servers)
        return Topology(name=name, channel_model=channel_model, base_stations=stations, servers=servers, graph=graph)

    # -- top level and ids -------------------------------------------------------------------------
    def _header(self, data: dict) -> tuple[str, str | None]:
        """``name`` (default: the file's stem, or "topology") and ``channel_model``."""
        source = self.source
        name = data.get("name", Path(source).stem if source and not source.startswith("<") else "topology")
        name = _ident(source, "name", name)
        channel_model = data.get("channel_model")
        if channel_model is not None and channel_model not in CHANNEL_MODEL_HINTS:
            raise _err(source, "channel_model", f"one of {', '.join(CHANNEL_MODEL_HINTS)}", channel_model)
        return name, channel_model

    def _entry_id(self, section: str, i: int, entry: Any, allowed: Iterable[str]) -> str:
        """Check entry ``i`` of ``section`` is a table of ``allowed`` keys with a new ``id``; claim it."""
        loc = self.where(section, i)
        _table(self.source, loc, entry, allowed)
        ident = _ident(self.source, f"{loc}.id", _required(self.source, loc, entry, "id"))
        if ident in self.seen:
            raise _err(self.source, f"{loc}.id",
                       f"an id unique among base stations and servers (already used by {self.seen[ident]})", ident)
        self.seen[ident] = f"{loc}.id"
        return ident

    # -- servers and base stations -----------------------------------------------------------------
    def _servers(self, raw_servers: list) -> list[Server]:
        servers: list[Server] = []
        for i, entry in enumerate(raw_servers):
            sid = self._entry_id("servers", i, entry, _SERVER_KEYS)
            loc = self.where("servers", i)
            kind = _required(self.source, loc, entry, "kind")
            if kind not in SERVER_KINDS:
                raise _err(self.source, f"{loc}.kind", "one of 'edge', 'cloud'", kind)
            servers.append(Server(sid, kind))
        return servers

    def _cloud(self, servers: list[Server]) -> str:
        clouds = [s.id for s in servers if s.kind == "cloud"]
        if len(clouds) != 1:
            raise _err(self.source, "servers", "exactly one server with kind = 'cloud'", clouds)
        return clouds[0]

    def _station(self, i: int, entry: dict, servers: list[Server], cloud: str) -> BaseStation:
        """Base station ``i``: its numbers (:data:`_BS_NUMERIC`, in that order), then its server."""
        source, loc = self.source, self.where("base_stations", i)
        values: dict[str, Any] = {}
        for key, (required, default, check) in _BS_NUMERIC.items():
            v = _required(source, loc, entry, key) if required else entry.get(key, default)
            values[key] = _number(source, f"{loc}.{key}", v, check)
        server_ids = {s.id for s in servers}
        server = entry.get("server", cloud)
        if server not in server_ids:
            raise _err(source, f"{loc}.server", f"the id of a [[servers]] entry (one of {sorted(server_ids)})", server)
        nf = entry.get("noise_figure_db")
        if nf is not None:
            nf = _number(source, f"{loc}.noise_figure_db", nf, "nonneg")
        return BaseStation(id=entry["id"], server=server, noise_figure_db=nf, **values)

    # -- links and connectivity --------------------------------------------------------------------
    def _links(self, graph: nx.Graph, raw_links: list) -> None:
        """Add each ``[[links]]`` entry to ``graph`` as an edge with its latency and capacity."""
        source = self.source
        link_where: dict[frozenset, str] = {}
        for i, entry in enumerate(raw_links):
            loc = self.where("links", i)
            _table(source, loc, entry, _LINK_KEYS)
            a, b = self._link_ends(graph, loc, entry)
            pair = frozenset((a, b))
            if pair in link_where:
                raise _err(source, f"{loc}.b", f"at most one link per pair of nodes (duplicate of {link_where[pair]})", b)
            link_where[pair] = loc
            numbers = {key: _number(source, f"{loc}.{key}", _required(source, loc, entry, key), check)
                       for key, check in _LINK_NUMERIC.items()}
            graph.add_edge(a, b, **numbers)

    def _link_ends(self, graph: nx.Graph, loc: str, entry: dict) -> tuple[str, str]:
        ends = []
        for key in ("a", "b"):
            node = _ident(self.source, f"{loc}.{key}", _required(self.source, loc, entry, key))
            if node not in graph:
                raise _err(self.source, f"{loc}.{key}", "a known base station or server id", node)
            ends.append(node)
        a, b = ends
        if a == b:
            raise _err(self.source, f"{loc}.b", f"a node other than a ({a!r}): no self-links", b)
        return a, b

    def _check_connected(self, graph: nx.Graph, cloud: str, stations: list[BaseStation],
                         servers: list[Server]) -> None:
        """Every node must reach the cloud; the first one (in graph order) that does not is reported."""
        reachable = nx.node_connected_component(graph, cloud)
        for node in graph.nodes:
            if node not in reachable:
                loc = next(self.where(section, i) for section, entries in (("base_stations", stations),
                                                                            ("servers", servers))
                           for i, e in enumerate(entries) if e.id == node)
                raise _err(self.source, f"{loc}.id", f"a node connected to the cloud {cloud!r} through [[links]]", node)


def _graph(name: str, channel_model: str | None, stations: list[BaseStation], servers: list[Server]) -> nx.Graph:
    """One node per base station (``kind="bs"`` and its fields) and server (``kind`` edge/cloud)."""
    graph = nx.Graph()
    graph.graph["name"] = name
    if channel_model is not None:
        graph.graph["channel_model"] = channel_model
    for bs in stations:
        attrs = {k: v for k, v in asdict(bs).items() if v is not None}  # an unset noise figure is absent
        del attrs["id"]
        graph.add_node(bs.id, kind="bs", **attrs)
    for s in servers:
        graph.add_node(s.id, kind=s.kind)
    return graph
