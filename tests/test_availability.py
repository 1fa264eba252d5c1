"""Availability: both readers on the shipped traces, interval edges, periodic wrap, id mapping,
malformed files and the no-torch rule."""
from __future__ import annotations

import math
import pathlib
import re
import subprocess
import sys

import pytest

from pwffsim.net.availability import (
    Availability,
    AvailabilityError,
    always_online,
    read_availability_csv,
    read_fedscale_behaviour_json,
)

TRACES = pathlib.Path(__file__).resolve().parent.parent / "traces"
CSV = TRACES / "availability_example.csv"
FEDSCALE = TRACES / "availability_fedscale_example.json"


# --------------------------------------------------------------------------------------------------
# independent parsers (plain string splitting / regex), used as the reference
# --------------------------------------------------------------------------------------------------
def _csv_reference(path: pathlib.Path) -> dict[int, list[tuple[float, float]]]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    assert lines[0].split(",") == ["client", "start_s", "end_s"]
    out: dict[int, list[tuple[float, float]]] = {}
    for ln in lines[1:]:
        c, s, e = ln.split(",")
        out.setdefault(int(c), []).append((float(s), float(e)))
    return {c: sorted(v) for c, v in out.items()}


def _fedscale_reference(path: pathlib.Path):
    """{key: (active, inactive, finish_time)} read with regexes, one client per line."""
    out = {}
    for ln in path.read_text().splitlines():
        m = re.match(r'\s*"(\w+)": \{(.*)\}', ln)
        if not m:
            continue
        body = m.group(2)
        nums = lambda name: [float(x) for x in re.search(rf'"{name}": \[([^\]]*)\]', body).group(1).split(",")
                             if x.strip()]
        fin = float(re.search(r'"finish_time": ([0-9.]+)', body).group(1))
        out[m.group(1)] = (nums("active"), nums("inactive"), fin)
    return out


def _ref_online(ivs, t):
    return any(s <= t < e for s, e in ivs)


# --------------------------------------------------------------------------------------------------
# shipped files
# --------------------------------------------------------------------------------------------------
def test_csv_shipped_file_matches_reference():
    ref = _csv_reference(CSV)
    av = read_availability_csv(CSV)
    assert len(ref) == 8 and av.clients == sorted(ref)
    for c, ivs in ref.items():
        assert av.intervals(c) == ivs  # the file has no overlapping rows, so merging changes nothing
        for t in [x / 2 for x in range(-10, 1300)]:
            assert av.online(c, t) == _ref_online(ivs, t), (c, t)
    # beyond the trace (not periodic) every listed client is offline, a client not listed is online
    assert not any(av.online(c, 600.0) for c in ref)
    assert av.online(99, 1234.0)


def test_fedscale_shipped_file_matches_reference():
    ref = _fedscale_reference(FEDSCALE)
    assert len(ref) == 8
    av = read_fedscale_behaviour_json(FEDSCALE)
    keys = sorted(ref, key=int)  # natural order of the keys: "1" < "2" < ... < "10"
    assert av.clients == list(range(len(keys)))
    assert av.names == {i: k for i, k in enumerate(keys)}
    for i, k in enumerate(keys):
        act, ina, fin = ref[k]
        ivs = [(a, ina[j] if j < len(ina) else fin) for j, a in enumerate(act)]
        assert av.intervals(i) == ivs
        for t in [x / 2 for x in range(0, 4 * int(fin))]:  # two full periods
            assert av.online(i, t) == _ref_online(ivs, t % fin), (k, t)


def test_fedscale_unmatched_active_runs_to_finish_and_wraps():
    av = read_fedscale_behaviour_json(FEDSCALE)
    c = {v: k for k, v in av.names.items()}["7"]  # active [300], inactive []
    assert not av.online(c, 299.9) and av.online(c, 300.0) and av.online(c, 599.9)
    assert not av.online(c, 600.0)  # wraps: offline again from 0 to 300
    assert av.next_change_s(c, 100.0) == 300.0
    assert av.next_change_s(c, 300.0) == 600.0
    assert av.online_until_s(c, 450.0) == 600.0
    assert av.next_change_s(c, 600.0) == 900.0


# --------------------------------------------------------------------------------------------------
# edges, next_change, online_until
# --------------------------------------------------------------------------------------------------
def test_edges_and_next_change():
    av = Availability({0: [(10.0, 20.0), (30.0, 40.0)]})
    assert not av.online(0, 9.999) and av.online(0, 10.0) and av.online(0, 19.999)
    assert not av.online(0, 20.0)  # [start, end)
    assert av.next_change_s(0, 0.0) == 10.0
    assert av.next_change_s(0, 10.0) == 20.0  # strictly after t
    assert av.next_change_s(0, 15.0) == 20.0
    assert av.next_change_s(0, 20.0) == 30.0
    assert av.next_change_s(0, 40.0) == math.inf
    assert av.online_until_s(0, 10.0) == 20.0
    assert av.online_until_s(0, 25.0) == 25.0  # offline: nothing left
    # a client without intervals follows default_online
    assert av.online(5, 15.0) and av.next_change_s(5, 15.0) == math.inf
    assert av.online_until_s(5, 15.0) == math.inf
    off = Availability({0: [(0.0, 1.0)]}, default_online=False)
    assert not off.online(5, 0.5) and off.online_until_s(5, 0.5) == 0.5
    assert av.online_clients([0, 5, 3], 35.0) == [0, 3, 5]
    assert av.online_clients([0, 5], 25.0) == [5]


def test_merge_overlapping_and_touching():
    av = Availability({0: [(30.0, 40.0), (10.0, 20.0), (20.0, 25.0), (15.0, 18.0), (50.0, 50.0)]})
    assert av.intervals(0) == [(10.0, 25.0), (30.0, 40.0)]
    assert av.next_change_s(0, 12.0) == 25.0  # 20 is not a flip


def test_periodic_wrap():
    av = Availability({0: [(0.0, 10.0), (50.0, 100.0)], 1: [(20.0, 30.0)]}, period_s=100.0)
    # client 0 is online across the period boundary (50..110 continuously)
    assert av.online(0, 99.9) and av.online(0, 100.0) and av.online(0, 205.0)
    assert not av.online(0, 110.0) and not av.online(0, 210.0)
    assert av.next_change_s(0, 60.0) == 110.0  # 100 is not a flip
    assert av.next_change_s(0, 100.0) == 110.0
    assert av.next_change_s(0, 120.0) == 150.0
    assert av.online_until_s(0, 95.0) == 110.0
    # client 1
    assert av.online(1, 320.0) and not av.online(1, 330.0)
    assert av.next_change_s(1, 30.0) == 120.0
    assert av.next_change_s(1, 95.0) == 120.0
    assert av.next_change_s(1, -5.0) == 20.0
    # an interval crossing the period end wraps; one longer than the period means always online
    w = Availability({0: [(90.0, 120.0)], 1: [(5.0, 500.0)]}, period_s=100.0)
    assert w.intervals(0) == [(0.0, 20.0), (90.0, 100.0)]
    assert w.online(0, 15.0) and w.online(0, 195.0) and not w.online(0, 50.0)
    assert w.next_change_s(0, 95.0) == 120.0
    assert w.online(1, 1.0) and w.next_change_s(1, 1.0) == math.inf
    # a pattern online from 0 but not at the period end flips at every period start
    z = Availability({0: [(0.0, 30.0)]}, period_s=60.0)
    assert z.next_change_s(0, 40.0) == 60.0 and z.next_change_s(0, 60.0) == 90.0


def test_per_client_period_and_always_online():
    av = Availability({0: [(0.0, 5.0)], 1: [(0.0, 5.0)]}, period_s={0: 10.0})
    assert av.online(0, 12.0) and not av.online(1, 12.0)
    ao = always_online(3)
    assert ao.clients == [0, 1, 2]
    assert all(ao.online(c, t) for c in range(4) for t in (-1e9, 0.0, 1e9))
    assert ao.next_change_s(1, 0.0) == math.inf and ao.online_until_s(1, 0.0) == math.inf
    with pytest.raises(ValueError):
        always_online(-1)


def test_constructor_validation():
    with pytest.raises(ValueError, match="before its start"):
        Availability({0: [(5.0, 1.0)]})
    with pytest.raises(ValueError, match="period_s"):
        Availability({0: [(0.0, 1.0)]}, period_s=0.0)
    with pytest.raises(ValueError):
        Availability({0: [(float("nan"), 1.0)]})


# --------------------------------------------------------------------------------------------------
# id mapping
# --------------------------------------------------------------------------------------------------
def test_csv_natural_order_and_client_map(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("end_s,client,start_s,note\n"
                 "5,dev10,0,x\n"
                 "# a comment\n"
                 "\n"
                 "7,dev2,1,y\n"
                 "9,dev1,3,z\n"
                 "inf,dev2,20,w\n")
    av = read_availability_csv(p)
    assert av.names == {0: "dev1", 1: "dev2", 2: "dev10"}
    assert av.intervals(0) == [(3.0, 9.0)]
    assert av.intervals(1) == [(1.0, 7.0), (20.0, math.inf)]
    assert av.intervals(2) == [(0.0, 5.0)]
    assert av.next_change_s(1, 25.0) == math.inf and av.online_until_s(1, 25.0) == math.inf
    m = read_availability_csv(p, client_map={"dev1": 7, "dev2": 3, "dev10": 4})
    assert m.clients == [3, 4, 7] and m.intervals(7) == [(3.0, 9.0)]
    with pytest.raises(AvailabilityError, match=r"a\.csv:6: .*client_map"):
        read_availability_csv(p, client_map={"dev10": 0, "dev2": 1})


def test_fedscale_natural_order(tmp_path):
    p = tmp_path / "f.json"
    p.write_text('{"10": {"active": [0], "inactive": [1], "finish_time": 10},'
                 ' "9": {"active": [2], "inactive": [3], "finish_time": 10},'
                 ' "100": {"active": [4], "inactive": [5], "finish_time": 10}}')
    av = read_fedscale_behaviour_json(p)
    assert av.names == {0: "9", 1: "10", 2: "100"}
    assert av.intervals(0) == [(2.0, 3.0)] and av.intervals(2) == [(4.0, 5.0)]


# --------------------------------------------------------------------------------------------------
# malformed files
# --------------------------------------------------------------------------------------------------
CSV_BAD = [
    ("missing_column", "client,start_s\n0,1\n", 1, "missing end_s"),
    ("non_numeric", "client,start_s,end_s\n0,0,10\n1,abc,10\n", 3, "expected a number for start_s"),
    ("end_before_start", "client,start_s,end_s\n0,0,10\n\n0,20,15\n", 4, "end_s >= start_s"),
    ("short_row", "client,start_s,end_s\n0,0\n", 2, "expected 3 fields"),
    ("empty_id", "client,start_s,end_s\n,0,1\n", 2, "non-empty client id"),
    ("nan", "client,start_s,end_s\n0,nan,1\n", 2, "expected a number"),
    ("empty_file", "", 1, "empty file"),
]


@pytest.mark.parametrize("name,text,line,what", CSV_BAD, ids=[c[0] for c in CSV_BAD])
def test_csv_malformed(tmp_path, name, text, line, what):
    p = tmp_path / f"{name}.csv"
    p.write_text(text)
    with pytest.raises(AvailabilityError) as ei:
        read_availability_csv(p)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}:{line}: "), msg
    assert what in msg
    assert isinstance(ei.value, ValueError)


JSON_BAD = [
    ("bad_json", '{\n  "1": {"active": [0], "inactive": [1], "finish_time": 10},\n  "2": {"active": [0,\n}\n',
     "4", "expected valid JSON"),
    ("active_not_list", '{"1": {"active": 0, "inactive": [1], "finish_time": 10}}', "?", "'active' to be a list"),
    ("inactive_not_list", '{"1": {"active": [0], "inactive": "1", "finish_time": 10}}', "?",
     "'inactive' to be a list"),
    ("inactive_missing", '{"1": {"active": [0], "finish_time": 10}}', "?", "'inactive' to be a list"),
    ("non_numeric_time", '{"1": {"active": ["a"], "inactive": [1], "finish_time": 10}}', "?", "finite numbers"),
    ("inactive_before_active", '{"1": {"active": [5], "inactive": [1], "finish_time": 10}}', "?",
     "inactive[0] >= active[0]"),
    ("no_finish_time", '{"1": {"active": [0], "inactive": [1]}}', "?", "finish_time"),
    ("too_many_inactive", '{"1": {"active": [0], "inactive": [1, 2], "finish_time": 10}}', "?", "at most"),
    ("not_an_object", '[1, 2]', "?", "JSON object"),
    ("client_not_object", '{"1": [0, 1]}', "?", "expected an object"),
]


@pytest.mark.parametrize("name,text,line,what", JSON_BAD, ids=[c[0] for c in JSON_BAD])
def test_fedscale_malformed(tmp_path, name, text, line, what):
    p = tmp_path / f"{name}.json"
    p.write_text(text)
    with pytest.raises(AvailabilityError) as ei:
        read_fedscale_behaviour_json(p)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}:{line}: "), msg
    assert what in msg


def test_missing_file(tmp_path):
    with pytest.raises(AvailabilityError, match="cannot open"):
        read_availability_csv(tmp_path / "nope.csv")
    with pytest.raises(AvailabilityError, match="cannot open"):
        read_fedscale_behaviour_json(tmp_path / "nope.json")


def test_no_torch_import():
    code = ("import sys; import pwffsim.net.availability, pwffsim.sim.selection; "
            "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
