"""Mobility: trace readers on the shipped traces and on tiny hand-made files, end policies,
transforms, id mapping, coverage area, malformed inputs and the synthetic models."""
from __future__ import annotations

import math
import pathlib
import re

import numpy as np
import pytest

from pwffsim.net.mobility import (
    MobilityError,
    MobilityModel,
    Trajectory,
    gauss_markov,
    load_trace,
    random_waypoint,
    read_csv_trace,
    read_ns2_movements,
    read_sumo_fcd,
    static_positions,
    straight_line,
)

TRACES = pathlib.Path(__file__).resolve().parent.parent / "traces"
FCD_FILES = ["grid_fcd.xml", "highway_fcd.xml"]


# --------------------------------------------------------------------------------------------------
# independent parsers (regex), used as the reference
# --------------------------------------------------------------------------------------------------
def _fcd_samples(path: pathlib.Path) -> dict[str, list[tuple[float, float, float]]]:
    out: dict[str, list[tuple[float, float, float]]] = {}
    t = None
    for line in path.read_text().splitlines():
        m = re.search(r'<timestep time="([^"]+)"', line)
        if m:
            t = float(m.group(1))
            continue
        m = re.search(r'<(?:vehicle|person) id="([^"]+)" x="([^"]+)" y="([^"]+)"', line)
        if m:
            out.setdefault(m.group(1), []).append((t, float(m.group(2)), float(m.group(3))))
    return out


def _ns2_reference(path: pathlib.Path):
    """Initial positions and commands, and a time-stepping reference position function."""
    init, cmds = {}, {}
    for line in path.read_text().splitlines():
        m = re.match(r"\$node_\((\w+)\) set ([XY])_ (\S+)", line)
        if m:
            init.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
        m = re.match(r'\$ns_ at (\S+) "\$node_\((\w+)\) setdest (\S+) (\S+) (\S+)"', line)
        if m:
            cmds.setdefault(m.group(2), []).append(tuple(float(m.group(i)) for i in (1, 3, 4, 5)))

    def ref(node: str, t: float) -> np.ndarray:
        p = np.array([init[node]["X"], init[node]["Y"]])
        cs = sorted(cmds.get(node, []))
        for j, (tc, x, y, v) in enumerate(cs):
            if tc >= t:
                break
            t_stop = min(t, cs[j + 1][0]) if j + 1 < len(cs) else t
            dest = np.array([x, y])
            d = np.linalg.norm(dest - p)
            if d > 0:
                p = p + (dest - p) * min(1.0, v * (t_stop - tc) / d)
        return p

    return init, cmds, ref


# --------------------------------------------------------------------------------------------------
# shipped traces
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FCD_FILES)
def test_sumo_fcd_matches_file(name):
    path = TRACES / name
    ref = _fcd_samples(path)
    trajs = read_sumo_fcd(path)
    assert set(trajs) == set(ref) and len(ref) >= 5
    for nid, samples in ref.items():
        tr = trajs[nid]
        assert len(tr) == len(samples)
        for t, x, y in samples[:: max(1, len(samples) // 7)] + [samples[-1]]:
            np.testing.assert_allclose(tr.position(t), [x, y], atol=1e-9)
        (t0, x0, y0), (t1, x1, y1) = samples[len(samples) // 2], samples[len(samples) // 2 + 1]
        np.testing.assert_allclose(tr.position((t0 + t1) / 2), [(x0 + x1) / 2, (y0 + y1) / 2], atol=1e-9)
    assert load_trace(path).keys() == trajs.keys()


def test_sumo_fcd_grid_has_vehicles_and_persons():
    trajs = read_sumo_fcd(TRACES / "grid_fcd.xml")
    assert {"0", "9", "ped0"} <= set(trajs)
    # natural order: "2" before "10" style sorting of the trace ids
    assert MobilityModel(trajs).client_ids[:3] == ["0", "1", "2"]


def test_ns2_shipped_file_matches_reference():
    path = TRACES / "walkers.ns2"
    init, cmds, ref = _ns2_reference(path)
    trajs = read_ns2_movements(path)
    assert set(trajs) == set(init) == {"0", "1", "2", "3", "4"}
    for nid, tr in trajs.items():
        np.testing.assert_allclose(tr.position(0.0), [init[nid]["X"], init[nid]["Y"]])
        for t in np.linspace(0.0, 420.0, 85):
            np.testing.assert_allclose(tr.position(t), ref(nid, t), atol=1e-6)
        # halfway through the first movement: midpoint of start and (reached or interrupted) end
        tc = cmds[nid][0][0]
        t_next = tr.next_change_s(tc)
        np.testing.assert_allclose(tr.position((tc + t_next) / 2), (ref(nid, tc) + ref(nid, t_next)) / 2, atol=1e-6)


def test_csv_shipped_file_matches_rows():
    path = TRACES / "grid_pedestrians.csv"
    rows: dict[str, list] = {}
    for line in path.read_text().splitlines()[1:]:
        t, nid, x, y = line.split(",")
        rows.setdefault(nid, []).append((float(t), float(x), float(y)))
    trajs = read_csv_trace(path)
    assert set(trajs) == set(rows)
    for nid, rs in rows.items():
        rs.sort()
        for t, x, y in rs[::9]:
            np.testing.assert_allclose(trajs[nid].position(t), [x, y])
        (t0, x0, y0), (t1, x1, y1) = rs[3], rs[4]
        np.testing.assert_allclose(trajs[nid].position((t0 + t1) / 2), [(x0 + x1) / 2, (y0 + y1) / 2])
    # the CSV rows are a subsample of the FCD pedestrians
    fcd = read_sumo_fcd(TRACES / "grid_fcd.xml")
    for nid, rs in rows.items():
        for t, x, y in rs[::11]:
            np.testing.assert_allclose(fcd[nid].position(t), [x, y])


# --------------------------------------------------------------------------------------------------
# ns-2 semantics on a tiny file
# --------------------------------------------------------------------------------------------------
NS2_TINY = """\
# two nodes
$node_(0) set X_ 0.0
$node_(0) set Y_ 0.0
$node_(0) set Z_ 0.0
$node_(1) set X_ 5.0
$node_(1) set Y_ 6.0

$ns_ at 20.0 "$node_(0) setdest 30.0 0.0 2.0"
$ns_ at 2.0 "$node_(0) setdest 30.0 40.0 5.0"
$god_ set-dist 0 1 1
$ns_ at 30.0 "$node_(0) setdest 0.0 0.0 1.0"
"""


def test_ns2_setdest_by_hand(tmp_path):
    f = tmp_path / "tiny.ns2"
    f.write_text(NS2_TINY)
    trajs = read_ns2_movements(f)
    tr = trajs["0"]
    # waits at the origin until 2 s, then 50 m at 5 m/s: arrives at 12 s
    np.testing.assert_allclose(tr.position(1.0), [0, 0])
    np.testing.assert_allclose(tr.position(7.0), [15, 20])
    np.testing.assert_allclose(tr.position(12.0), [30, 40])
    np.testing.assert_allclose(tr.position(15.0), [30, 40])
    assert tr.speed_mps(7.0) == pytest.approx(5.0)
    assert tr.speed_mps(15.0) == 0.0
    assert tr.next_change_s(7.0) == pytest.approx(12.0)
    # from 20 s towards (30, 0) at 2 m/s (would arrive at 40 s) ...
    np.testing.assert_allclose(tr.position(25.0), [30, 30])
    assert tr.speed_mps(25.0) == pytest.approx(2.0)
    # ... interrupted at 30 s at (30, 20), then back to the origin at 1 m/s
    np.testing.assert_allclose(tr.position(30.0), [30, 20])
    d = math.hypot(30, 20)
    np.testing.assert_allclose(tr.position(40.0), np.array([30, 20]) * (1 - 10 / d))
    assert tr.stop_s == pytest.approx(30 + d)
    np.testing.assert_allclose(tr.position(100.0), [0, 0])
    # node 1 never moves
    np.testing.assert_allclose(trajs["1"].position(50.0), [5, 6])
    assert trajs["1"].next_change_s(0.0) == math.inf


def test_ns2_zero_speed_stops_node(tmp_path):
    f = tmp_path / "stop.tcl"
    f.write_text('$node_(a) set X_ 0\n$node_(a) set Y_ 0\n$ns_ at 0 "$node_(a) setdest 10 0 1"\n'
                 '$ns_ at 4 "$node_(a) setdest 10 0 0"\n')
    tr = load_trace(f)["a"]
    np.testing.assert_allclose(tr.position(2.0), [2, 0])
    np.testing.assert_allclose(tr.position(9.0), [4, 0])


# --------------------------------------------------------------------------------------------------
# Trajectory and MobilityModel behaviour
# --------------------------------------------------------------------------------------------------
def test_end_policies_hold_and_leave():
    tr = straight_line((0, 0), (30, 40), 5.0, t0_s=10.0)
    assert tr.stop_s == pytest.approx(20.0)
    assert tr.position(0.0) is None and tr.position(5.0, end="hold") is None  # absent before its first sample
    np.testing.assert_allclose(tr.position(15.0), [15, 20])
    np.testing.assert_allclose(tr.position(25.0), [30, 40])  # hold (default)
    assert tr.position(25.0, end="leave") is None
    np.testing.assert_allclose(tr.position(20.0, end="leave"), [30, 40])  # present at the last sample
    assert tr.speed_mps(15.0) == pytest.approx(5.0) and tr.speed_mps(25.0) == 0.0 and tr.speed_mps(5.0) == 0.0
    assert tr.next_change_s(0.0) == 10.0 and tr.next_change_s(10.0) == 20.0 and tr.next_change_s(20.0) == math.inf

    hold = MobilityModel({"a": tr})
    leave = MobilityModel({"a": tr}, end="leave")
    np.testing.assert_allclose(hold.position(0, 30.0), [30, 40])
    assert leave.position(0, 30.0) is None and not leave.available(0, 30.0)
    assert leave.speed_mps(0, 30.0) == 0.0 and leave.next_change_s(0, 30.0) == math.inf
    # static nodes never leave
    static = MobilityModel(static_positions(np.array([[1.0, 2.0], [3.0, 4.0]])), end="leave")
    np.testing.assert_allclose(static.position(1, 1e6), [3, 4])
    assert static.next_change_s(0, 0.0) == math.inf
    with pytest.raises(ValueError):
        MobilityModel({"a": tr}, end="vanish")


def test_offset_and_scale():
    tr = straight_line((0, 0), (10, 0), 2.0)
    m = MobilityModel({"a": tr}, offset_m=(100.0, -50.0), scale=3.0)
    np.testing.assert_allclose(m.position(0, 2.5), [3 * 5 + 100, -50])
    assert m.speed_mps(0, 2.5) == pytest.approx(6.0)
    np.testing.assert_allclose(tr.position(2.5), [5, 0])  # the original is unchanged


def test_client_id_mapping_and_natural_order():
    num = {"10": 10.0, "2": 2.0, "1": 1.0, "veh10": 110.0, "veh9": 109.0}
    trajs = {k: straight_line((v, 0), (v, 1), 1.0) for k, v in num.items()}
    m = MobilityModel(trajs)
    assert m.client_ids == ["1", "2", "10", "veh9", "veh10"] and m.num_clients == 5
    np.testing.assert_allclose(m.position(2, 0.0), [10, 0])
    m2 = MobilityModel(trajs, client_ids=["veh9", "2"])
    assert m2.num_clients == 2
    np.testing.assert_allclose(m2.position(1, 0.0), [2, 0])
    with pytest.raises(ValueError, match="nope"):
        MobilityModel(trajs, client_ids=["nope"])
    with pytest.raises(ValueError):
        m2.position(2, 0.0)


def test_area_out_of_coverage():
    tr = straight_line((0, 50), (200, 50), 10.0)  # x = 10 t
    m = MobilityModel({"a": tr}, area=(0.0, 0.0, 100.0, 100.0))
    np.testing.assert_allclose(m.position(0, 5.0), [50, 50])
    np.testing.assert_allclose(m.position(0, 10.0), [100, 50])  # the edge is inside
    assert m.position(0, 10.5) is None and m.position(0, 30.0) is None
    # the simulator is told when the node crosses the edge
    assert m.next_change_s(0, 3.0) == pytest.approx(10.0)
    assert m.next_change_s(0, 12.0) == pytest.approx(20.0)


# --------------------------------------------------------------------------------------------------
# malformed files
# --------------------------------------------------------------------------------------------------
FCD_HEAD = '<?xml version="1.0"?>\n<fcd-export>\n'
MALFORMED = [
    # (file name, content, expected line)
    ("nonnum.xml", FCD_HEAD + '<timestep time="0">\n<vehicle id="v" x="abc" y="1"/>\n</timestep>\n</fcd-export>\n', 4),
    ("noattr.xml", FCD_HEAD + '<timestep time="0">\n<vehicle id="v" x="1"/>\n</timestep>\n</fcd-export>\n', 4),
    ("backwards.xml", FCD_HEAD + '<timestep time="1">\n<vehicle id="v" x="1" y="1"/>\n</timestep>\n'
     '<timestep time="0.5">\n<vehicle id="v" x="2" y="1"/>\n</timestep>\n</fcd-export>\n', 7),
    ("broken.xml", FCD_HEAD + '<timestep time="0">\n<vehicle id="v" x="1" y="1">\n</fcd-export>\n', 5),
    ("empty.xml", "", 1),
    ("wrongroot.xml", '<?xml version="1.0"?>\n<routes>\n</routes>\n', 2),
    ("notime.xml", FCD_HEAD + '<timestep>\n<vehicle id="v" x="1" y="1"/>\n</timestep>\n</fcd-export>\n', 3),
    ("unknown.ns2", "$node_(0) set X_ 1\n$node_(0) set Y_ 1\n$node_(0) move 3 4\n", 3),
    ("badnum.ns2", '$node_(0) set X_ 1\n$node_(0) set Y_ 1\n\n$ns_ at 1.0 "$node_(0) setdest 2 x 1"\n', 4),
    ("noinit.ns2", '# c\n$node_(0) set X_ 1\n$ns_ at 1.0 "$node_(0) setdest 2 2 1"\n', 2),
    ("empty.ns2", "# only a comment\n", 1),
    ("nocol.csv", "t,id,x\n0,a,1\n", 1),
    ("badval.csv", "t,id,x,y\n0,a,1,2\n1,a,one,2\n", 3),
    ("short.csv", "t,id,x,y\n0,a,1,2\n1,a,1\n", 3),
    ("dup.csv", "t,id,x,y\n0,a,1,2\n1,a,1,2\n0,a,3,3\n", 4),
    ("empty.csv", "", 1),
]


@pytest.mark.parametrize("name,content,line", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_files_raise_one_line_error(tmp_path, name, content, line):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(MobilityError) as exc:
        load_trace(f)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{f}:{line}: "), msg
    assert isinstance(exc.value, ValueError)


def test_missing_file_and_unknown_format(tmp_path):
    missing = tmp_path / "nope.xml"
    for path in (missing, tmp_path / "nope.ns2", tmp_path / "nope.csv", tmp_path / "nope.dat"):
        with pytest.raises(MobilityError, match=re.escape(str(path))):
            load_trace(path)
    f = tmp_path / "trace.dat"
    f.write_text("t,id,x,y\n0,a,1,2\n")
    with pytest.raises(MobilityError, match="extension"):
        load_trace(f)
    np.testing.assert_allclose(load_trace(f, fmt="csv")["a"].position(0), [1, 2])


# --------------------------------------------------------------------------------------------------
# synthetic models
# --------------------------------------------------------------------------------------------------
AREA = (0.0, 0.0, 400.0, 300.0)


def _segment_speeds(tr: Trajectory) -> np.ndarray:
    return np.linalg.norm(np.diff(tr.xy_m, axis=0), axis=1) / np.diff(tr.t_s)


def _inside(tr: Trajectory, area) -> bool:
    xmin, ymin, xmax, ymax = area
    x, y = tr.xy_m[:, 0], tr.xy_m[:, 1]
    return bool(np.all((x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)))


def test_random_waypoint_area_speeds_determinism():
    trajs = random_waypoint(np.random.default_rng(3), 8, AREA, speed_range_mps=(2.0, 6.0),
                            pause_s=(1.0, 4.0), duration_s=500.0)
    assert list(trajs) == [str(k) for k in range(8)]
    for tr in trajs.values():
        assert _inside(tr, AREA)
        assert tr.start_s == 0.0 and tr.stop_s == pytest.approx(500.0)
        sp = _segment_speeds(tr)
        moving = sp[sp > 1e-9]
        assert moving.size > 3
        assert np.all((moving >= 2.0 - 1e-9) & (moving <= 6.0 + 1e-9))
        assert np.any(sp == 0.0)  # pauses
    again = random_waypoint(np.random.default_rng(3), 8, AREA, speed_range_mps=(2.0, 6.0),
                            pause_s=(1.0, 4.0), duration_s=500.0)
    for k in trajs:
        np.testing.assert_array_equal(trajs[k].xy_m, again[k].xy_m)
    other = random_waypoint(np.random.default_rng(4), 8, AREA, duration_s=500.0)
    assert not np.array_equal(other["0"].xy_m, trajs["0"].xy_m)


def test_gauss_markov_area_mean_speed_determinism():
    trajs = gauss_markov(np.random.default_rng(11), 10, AREA, mean_speed_mps=5.0, alpha=0.75,
                         step_s=1.0, duration_s=600.0)
    speeds = []
    for tr in trajs.values():
        assert _inside(tr, AREA)
        assert tr.stop_s == pytest.approx(600.0)
        speeds.extend(tr.speed_mps(t) for t in np.arange(0.5, 600.0, 1.0))
    assert np.mean(speeds) == pytest.approx(5.0, rel=0.05)
    assert np.std(speeds) > 0.3  # the speed does vary
    again = gauss_markov(np.random.default_rng(11), 10, AREA, mean_speed_mps=5.0, alpha=0.75,
                         step_s=1.0, duration_s=600.0)
    for k in trajs:
        np.testing.assert_array_equal(trajs[k].xy_m, again[k].xy_m)
    # fast nodes in a small area do bounce, and stay inside
    small = (0.0, 0.0, 50.0, 50.0)
    for tr in gauss_markov(np.random.default_rng(2), 3, small, mean_speed_mps=20.0, duration_s=120.0).values():
        assert _inside(tr, small)
        assert len(tr) > 121  # extra samples at the bounces


def test_trajectory_validation():
    with pytest.raises(ValueError):
        Trajectory([1.0, 1.0], [[0, 0], [1, 1]])
    with pytest.raises(ValueError):
        Trajectory([], np.zeros((0, 2)))
    with pytest.raises(ValueError):
        straight_line((0, 0), (1, 1), 0.0)
    t, xy = np.array([0.0, 1.0]), np.array([[0.0, 0.0], [1.0, 1.0]])
    tr = Trajectory(t, xy)
    t[0], xy[1] = -1.0, [9.0, 9.0]  # the caller's arrays stay writable ...
    assert tr.t_s[0] == 0.0 and tr.xy_m[1].tolist() == [1.0, 1.0]  # ... and are not shared
    np.testing.assert_allclose(tr.position(0.5), [0.5, 0.5])


@pytest.mark.parametrize("seed", range(40))
def test_trajectory_copies_its_samples_and_interpolates_them(seed):
    """Property, on random trajectories (seeded numpy draws; hypothesis is not a dependency): a
    Trajectory owns copies of its samples (writing to the caller's arrays afterwards changes
    nothing), passes through every sample, and is linear between two samples."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    rows = [(rng.uniform(0.01, 100.0), rng.uniform(-1e3, 1e3), rng.uniform(-1e3, 1e3)) for _ in range(n)]
    frac = float(rng.uniform())
    t = np.cumsum([r[0] for r in rows])
    xy = np.array([[r[1], r[2]] for r in rows])
    t_before, xy_before = t.copy(), xy.copy()
    tr = Trajectory(t, xy)
    t += 5.0
    xy[:] = 0.0
    np.testing.assert_array_equal(tr.t_s, t_before)
    np.testing.assert_array_equal(tr.xy_m, xy_before)
    for ti, pi in zip(t_before, xy_before):
        np.testing.assert_allclose(tr.position(ti), pi, rtol=0, atol=1e-9)
    for i in range(len(t_before) - 1):
        ti = t_before[i] + frac * (t_before[i + 1] - t_before[i])
        w = (ti - t_before[i]) / (t_before[i + 1] - t_before[i])
        np.testing.assert_allclose(tr.position(ti), xy_before[i] + w * (xy_before[i + 1] - xy_before[i]),
                                   rtol=0, atol=1e-9)


def test_mobility_never_imports_torch():
    import subprocess
    import sys

    code = "import sys, pwffsim.net.mobility; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
