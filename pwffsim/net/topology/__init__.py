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

Layout
------
``model`` (the types, routes and transfer times), ``validate`` (the checks of the dict form and
:func:`topology_from_dict`), ``files`` (:func:`load_topology` and the TOML / GraphML writers) and
``hexagonal`` (:func:`hexagonal_sites`, :func:`hex7`).
"""

from __future__ import annotations

from .files import load_topology, write_topology_graphml, write_topology_toml
from .hexagonal import HEX_SCENARIOS, hex7, hexagonal_sites
from .model import CHANNEL_MODEL_HINTS, SERVER_KINDS, BaseStation, Link, Server, Topology, TopologyError
from .validate import topology_from_dict

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
