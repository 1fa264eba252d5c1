"""Topology loading, validation, hexagonal geometry, routing and backhaul transfer times."""
from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from pwffsim.net.topology import (Topology, TopologyError, hex7, hexagonal_sites, load_topology,
                                  topology_from_dict, write_topology_graphml, write_topology_toml)

ROOT = Path(__file__).resolve().parents[1]
TOPO_DIR = ROOT / "topologies"
SHIPPED = ["single_cell.toml", "hex7_uma.toml", "hex7_umi.toml", "hierarchical.toml", "hierarchical.graphml"]


# -- hexagonal geometry --------------------------------------------------------------------------------
def test_hexagonal_sites_one_ring_by_hand():
    isd = 500.0
    sites = hexagonal_sites(1, isd)
    assert len(sites) == 7
    assert sites[0] == (0.0, 0.0)
    # First ring at 30 + 60k degrees: (isd cos, isd sin).
    h = isd * math.sqrt(3) / 2  # 433.0127...
    expected = [(h, 250.0), (0.0, 500.0), (-h, 250.0), (-h, -250.0), (0.0, -500.0), (h, -250.0)]
    for got, want in zip(sites[1:], expected):
        assert got == pytest.approx(want, abs=1e-6)
    # Centre -> every ring site = ISD; consecutive ring sites, e.g. (h, 250) -> (0, 500):
    # sqrt(h^2 + 250^2) = sqrt(187500 + 62500) = 500 = ISD.
    for x, y in sites[1:]:
        assert math.hypot(x, y) == pytest.approx(isd, abs=1e-6)
    for (x1, y1), (x2, y2) in zip(sites[1:], sites[2:] + sites[1:2]):
        assert math.hypot(x2 - x1, y2 - y1) == pytest.approx(isd, abs=1e-6)
    # Opposite ring sites are 2 ISD apart.
    assert math.dist(sites[1], sites[4]) == pytest.approx(2 * isd, abs=1e-6)


def test_hexagonal_sites_two_rings_is_a_lattice():
    sites = hexagonal_sites(2, 200.0)
    assert len(sites) == 19
    assert len({(round(x, 3), round(y, 3)) for x, y in sites}) == 19
    for i, a in enumerate(sites):
        d = sorted(math.dist(a, b) for j, b in enumerate(sites) if j != i)
        assert d[0] == pytest.approx(200.0, abs=1e-6)  # nearest neighbour = ISD, none closer
    assert hexagonal_sites(0, 100.0) == [(0.0, 0.0)]
    with pytest.raises(ValueError):
        hexagonal_sites(-1)
    with pytest.raises(ValueError):
        hexagonal_sites(1, 0.0)


def test_hex7_defaults():
    uma, umi = hex7("UMa"), hex7("UMi")
    assert [b.id for b in uma.base_stations] == [f"bs{i}" for i in range(7)]
    assert math.dist((uma.base_stations[0].x_m, uma.base_stations[0].y_m),
                     (uma.base_stations[1].x_m, uma.base_stations[1].y_m)) == pytest.approx(500.0, abs=1e-6)
    assert math.dist((umi.base_stations[0].x_m, umi.base_stations[0].y_m),
                     (umi.base_stations[2].x_m, umi.base_stations[2].y_m)) == pytest.approx(200.0, abs=1e-6)
    assert {b.height_m for b in uma.base_stations} == {25.0}
    assert {b.height_m for b in umi.base_stations} == {10.0}
    assert {b.carrier_hz for b in uma.base_stations} == {3.5e9}
    assert uma.cloud == "cloud" and uma.channel_model == "UMa"
    # Star backhaul: 5 ms, 10 Gb/s; bs1 -> bs2 goes through the cloud.
    assert uma.route("bs1", "bs2") == ["bs1", "cloud", "bs2"]
    assert uma.transfer_time_s("bs3", "cloud", 1_250_000) == pytest.approx(0.005 + 1e7 / 10e9)
    assert hex7("UMa", isd_m=1000.0).base_stations[2].y_m == pytest.approx(1000.0)
    with pytest.raises(ValueError):
        hex7("Indoor")


# -- shipped files -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fname", SHIPPED)
def test_load_every_shipped_file(fname):
    topo = load_topology(TOPO_DIR / fname)
    assert topo.base_stations
    assert topo.graph.nodes[topo.cloud]["kind"] == "cloud"
    for bs in topo.base_stations:
        assert topo.graph.nodes[bs.id]["kind"] == "bs"
        assert topo.route(bs.id, topo.cloud)[-1] == topo.cloud


def test_shipped_files_content():
    single = load_topology(TOPO_DIR / "single_cell.toml")
    (bs,) = single.base_stations
    assert (bs.x_m, bs.y_m, bs.carrier_hz, bs.uplink_bandwidth_hz) == (0.0, 0.0, 2e9, 20e6)
    assert single.edge_of("bs0") == "cloud" and len(single.links) == 1
    assert load_topology(TOPO_DIR / "hex7_uma.toml") == hex7("UMa", noise_figure_db=5.0)  # 38.901: 5 dB at the BS
    assert load_topology(TOPO_DIR / "hex7_umi.toml") == hex7("UMi", noise_figure_db=5.0)


def test_shipped_files_match_generator(tmp_path):
    spec = importlib.util.spec_from_file_location("make_topologies", TOPO_DIR / "make_topologies.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for path in mod.main(tmp_path):
        assert load_topology(path) == load_topology(TOPO_DIR / path.name), path.name
        if path.suffix == ".toml":
            assert path.read_text() == (TOPO_DIR / path.name).read_text(), path.name


def test_toml_and_graphml_give_the_same_topology():
    t = load_topology(TOPO_DIR / "hierarchical.toml")
    g = load_topology(TOPO_DIR / "hierarchical.graphml")
    assert t == g
    assert t.base_stations == g.base_stations and t.servers == g.servers
    assert nx.utils.graphs_equal(t.graph, g.graph)


# -- routing on the hierarchical layout ------------------------------------------------------------------
@pytest.fixture(params=["hierarchical.toml", "hierarchical.graphml"])
def hier(request) -> Topology:
    return load_topology(TOPO_DIR / request.param)


def test_hierarchical_edge_of_and_routes(hier):
    assert hier.cloud == "cloud"
    assert [hier.edge_of(b) for b in ("bs0", "bs1", "bs2", "bs3")] == ["edge0", "edge0", "edge1", "edge1"]
    assert hier.route("bs0", "cloud") == ["bs0", "edge0", "cloud"]
    assert hier.route("bs0", "bs1") == ["bs0", "edge0", "bs1"]
    assert hier.route("bs1", "bs3") == ["bs1", "edge0", "cloud", "edge1", "bs3"]
    assert hier.route("edge1", "edge1") == ["edge1"]
    with pytest.raises(TopologyError, match="unknown base station 'edge0'"):
        hier.edge_of("edge0")
    with pytest.raises(TopologyError, match="unknown node 'bs9'"):
        hier.route("bs9", "cloud")


def test_hierarchical_transfer_times_by_hand(hier):
    nbytes = 1_000_000  # 8e6 bits
    # bs0 -> edge0 (1 ms, 1 Gb/s) -> cloud (20 ms, 100 Mb/s): 0.021 s + 8e6 / 1e8 = 0.021 + 0.08
    assert hier.transfer_time_s("bs0", "cloud", nbytes) == pytest.approx(0.101, rel=1e-12)
    # bs0 -> edge0: 0.001 + 8e6 / 1e9 = 0.009
    assert hier.transfer_time_s("bs0", "edge0", nbytes) == pytest.approx(0.009, rel=1e-12)
    # bs0 -> edge0 -> bs1: 0.002 + 0.008
    assert hier.transfer_time_s("bs0", "bs1", nbytes) == pytest.approx(0.010, rel=1e-12)
    # bs0 -> edge0 -> cloud -> edge1 -> bs2: 0.042 + 0.08
    assert hier.transfer_time_s("bs0", "bs2", nbytes) == pytest.approx(0.122, rel=1e-12)
    assert hier.transfer_time_s("cloud", "bs3", 0) == pytest.approx(0.021, rel=1e-12)
    assert hier.transfer_time_s("bs2", "bs2", nbytes) == 0.0
    with pytest.raises(TopologyError, match="nbytes"):
        hier.transfer_time_s("bs0", "cloud", -1)


def test_route_prefers_lower_latency():
    data = {
        "base_stations": [{"id": "bs0", "x_m": 0.0, "y_m": 0.0}],
        "servers": [{"id": "e0", "kind": "edge"}, {"id": "c", "kind": "cloud"}],
        "links": [{"a": "bs0", "b": "c", "latency_s": 0.05, "capacity_bps": 1e9},
                  {"a": "bs0", "b": "e0", "latency_s": 0.01, "capacity_bps": 1e9},
                  {"a": "e0", "b": "c", "latency_s": 0.01, "capacity_bps": 1e6}],
    }
    topo = topology_from_dict(data)
    assert topo.route("bs0", "c") == ["bs0", "e0", "c"]  # 20 ms beats 50 ms although slower
    assert topo.transfer_time_s("bs0", "c", 125) == pytest.approx(0.02 + 1000 / 1e6)
    assert topo.edge_of("bs0") == "c"  # server defaults to the cloud
    topo.graph.remove_edge("bs0", "c")
    topo.graph.remove_edge("e0", "c")
    with pytest.raises(TopologyError, match="no route from 'bs0' to 'c'"):
        topo.route("bs0", "c")


# -- malformed files ------------------------------------------------------------------------------------
GOOD = """
name = "t"
[[base_stations]]
id = "bs0"
x_m = 0.0
y_m = 0.0
uplink_bandwidth_hz = 20e6
server = "edge0"
[[servers]]
id = "edge0"
kind = "edge"
[[servers]]
id = "cloud"
kind = "cloud"
[[links]]
a = "bs0"
b = "edge0"
latency_s = 0.001
capacity_bps = 1e9
[[links]]
a = "edge0"
b = "cloud"
latency_s = 0.02
capacity_bps = 1e8
"""

BAD = [
    # (replace old -> new in GOOD, field named in the message)
    ('a = "edge0"\nb = "cloud"', 'a = "edge0"\nb = "cloud9"', "links[1].b"),
    ('uplink_bandwidth_hz = 20e6', 'uplink_bandwidth_hz = 0.0', "base_stations[0].uplink_bandwidth_hz"),
    ('uplink_bandwidth_hz = 20e6', 'uplink_bandwidth_hz = "wide"', "base_stations[0].uplink_bandwidth_hz"),
    ('capacity_bps = 1e8', 'capacity_bps = -1e8', "links[1].capacity_bps"),
    ('latency_s = 0.02', 'latency_s = -0.02', "links[1].latency_s"),
    ('id = "edge0"\nkind = "edge"', 'id = "bs0"\nkind = "edge"', "servers[0].id"),
    ('id = "cloud"\nkind = "cloud"', 'id = "cloud"\nkind = "edge"', "servers"),
    ('kind = "edge"', 'kind = "fog"', "servers[0].kind"),
    ('server = "edge0"', 'server = "edge7"', "base_stations[0].server"),
    ('server = "edge0"', 'server = "bs0"', "base_stations[0].server"),
    ('x_m = 0.0\n', '', "base_stations[0].x_m"),
    ('y_m = 0.0', 'y_m = 0.0\nheigth_m = 25.0', "base_stations[0].heigth_m"),
    ('a = "edge0"\nb = "cloud"', 'a = "edge0"\nb = "edge0"', "links[1].b"),
    ('a = "edge0"\nb = "cloud"', 'a = "edge0"\nb = "bs0"', "links[1].b"),  # duplicate link
    ('[[links]]\na = "edge0"\nb = "cloud"\nlatency_s = 0.02\ncapacity_bps = 1e8', '', "base_stations[0].id"),  # cut off
    ('name = "t"', 'name = "t"\nchannel_model = "Indoor"', "channel_model"),
    ('capacity_bps = 1e8', 'capacity_bps = nan', "links[1].capacity_bps"),
]


def _write(tmp_path, text, name="bad.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_fixture_loads(tmp_path):
    topo = load_topology(_write(tmp_path, GOOD))
    assert topo.edge_of("bs0") == "edge0"
    assert topo.base_stations[0].carrier_hz == 2e9  # default filled in


@pytest.mark.parametrize("old,new,fld", BAD, ids=[b[2] + ":" + b[1][:20] for b in BAD])
def test_malformed_toml_names_file_and_field(tmp_path, old, new, fld):
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: field '{fld}'"), msg


def test_malformed_file_level_errors(tmp_path):
    for text, needle in [("name = \n", "not valid TOML"), ("[[links]]\na = 1\n", "field 'base_stations': required")]:
        path = _write(tmp_path, text)
        with pytest.raises(TopologyError) as info:
            load_topology(path)
        assert str(info.value).startswith(f"{path}: ") and needle in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(TopologyError, match="file not found"):
        load_topology(tmp_path / "missing.toml")
    with pytest.raises(TopologyError, match=r"\.toml or \.graphml"):
        load_topology(_write(tmp_path, GOOD, "topo.yaml"))
    with pytest.raises(TopologyError, match="not valid GraphML") as info:
        load_topology(_write(tmp_path, "<graphml><oops", "x.graphml"))
    assert "\n" not in str(info.value)


def test_malformed_graphml_names_node_and_edge(tmp_path):
    topo = load_topology(TOPO_DIR / "hierarchical.toml")
    g = topo.graph.copy()
    g.nodes["bs0"]["carrier_hz"] = -1.0
    path = tmp_path / "bad.graphml"
    nx.write_graphml(g, path)
    with pytest.raises(TopologyError, match=rf"^{path}: field 'node\['bs0'\]\.carrier_hz': a number > 0; given -1\.0$"):
        load_topology(path)
    g = topo.graph.copy()
    g.edges["edge1", "cloud"]["capacity_bps"] = 0.0
    nx.write_graphml(g, path)
    with pytest.raises(TopologyError, match=r"field 'edge\['edge1', 'cloud'\]\.capacity_bps'"):
        load_topology(path)
    g = topo.graph.copy()
    g.remove_edge("edge1", "cloud")  # bs2, bs3 and edge1 cut off from the cloud
    nx.write_graphml(g, path)
    with pytest.raises(TopologyError, match=r"field 'node\['bs2'\]\.id': a node connected to the cloud"):
        load_topology(path)


# -- round trips ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: hex7("UMi"), lambda: load_topology(TOPO_DIR / "hierarchical.toml")])
def test_write_load_round_trip(tmp_path, make):
    topo = make()
    write_topology_toml(topo, tmp_path / "t.toml", header="a comment\nover two lines")
    back = load_topology(tmp_path / "t.toml")
    assert back == topo
    assert back.base_stations == topo.base_stations and back.links == topo.links
    write_topology_graphml(topo, tmp_path / "t.graphml")
    assert load_topology(tmp_path / "t.graphml") == topo


def test_equality_sees_differences():
    a, b = hex7("UMa"), hex7("UMa")
    assert a == b
    b.graph.edges["bs1", "cloud"]["latency_s"] = 0.006
    assert a != b
    assert hex7("UMa") != hex7("UMa", carrier_hz=2e9)


def test_topology_module_does_not_import_torch():
    code = "import sys, pwffsim.net.topology; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
