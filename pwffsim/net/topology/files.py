"""Reading and writing topology files: TOML and GraphML."""

from __future__ import annotations

import tomllib
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import networkx as nx

from .model import SERVER_KINDS, Topology, TopologyError
from .validate import _err, _validate


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
    data["base_stations"] = [{k: v for k, v in asdict(bs).items() if v is not None} for bs in topo.base_stations]
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
