"""The ns-2 activity file (``$ns_ at T "$g(ID) start|stop"``, as SUMO's traceExporter writes it): a
node is present only between its start and stop; the scenario's ``mobility.activity``; one-line errors
naming the file and line, exit 2 through the CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pwffsim.cli import main
from pwffsim.net.mobility import MobilityError, MobilityModel, load_trace, read_ns2_activity, read_ns2_movements
from pwffsim.scenario import ScenarioError, load_scenario

MOVES = """\
$node_(0) set X_ 0.0
$node_(0) set Y_ 0.0
$node_(r1#2) set X_ 10.0
$node_(r1#2) set Y_ 0.0
$node_(7) set X_ 20.0
$node_(7) set Y_ 0.0
$ns_ at 0.0 "$node_(r1#2) setdest 110.0 0.0 1.0"
"""

# the layout of sumolib.output.convert.ns2.writeNS2activity (a start and a stop per vehicle), plus a
# second interval and a start without stop
ACTIVITY = """\
# activity
$ns_ at 30.0 "$g(r1#2) start"; # SUMO-ID: r1#2
$ns_ at 115.0 "$g(r1#2) stop"; # SUMO-ID: r1#2
$ns_ at 0.0 "$g(0) start"
$ns_ at 10.0 "$g(0) stop"
$ns_ at 50 "$g(0) start"
"""


@pytest.fixture
def files(tmp_path):
    moves, act = tmp_path / "moves.ns2", tmp_path / "activity.tcl"
    moves.write_text(MOVES)
    act.write_text(ACTIVITY)
    return moves, act


def test_activity_intervals_by_node(files):
    _, act = files
    assert read_ns2_activity(act) == {"r1#2": [(30.0, 115.0)], "0": [(0.0, 10.0), (50.0, math.inf)]}


def test_node_present_only_between_start_and_stop(files):
    moves, act = files
    trajs = read_ns2_movements(moves, activity=act)
    car = trajs["r1#2"]
    assert car.position(0.0) is None and car.position(29.99) is None and car.position(115.0) is None
    np.testing.assert_allclose(car.position(30.0), [40, 0])  # moving since t = 0, shown from its start
    np.testing.assert_allclose(car.position(114.0), [110, 0])
    # arrives at 100 s (100 m at 1 m/s); the changes: its start, its arrival, its stop
    assert car.next_change_s(0.0) == 30.0 and car.next_change_s(50.0) == 100.0
    assert car.next_change_s(100.0) == 115.0 and car.next_change_s(115.0) == math.inf
    node0 = trajs["0"]
    assert node0.present(5.0) and not node0.present(10.0) and not node0.present(49.0) and node0.present(1e6)
    np.testing.assert_allclose(trajs["7"].position(0.0), [20, 0])  # not in the activity file: unaffected
    m = MobilityModel(load_trace(moves, activity=act), offset_m=(1.0, 0.0))
    assert m.client_ids == ["0", "7", "r1#2"] and not m.available(2, 20.0)
    np.testing.assert_allclose(m.position(2, 30.0), [41, 0])
    assert load_trace(moves)["r1#2"].present(0.0)  # without the activity file: present from t = 0


BAD = [
    # (content, line, words in the message)
    ('$ns_ at 1 "$g(0) start"\n$ns_ at 2 "$g(0) pause"\n', 2, "start|stop"),
    ('$ns_ at x "$g(0) start"\n', 1, "time"),
    ('$ns_ at -1 "$g(0) start"\n', 1, ">= 0"),
    ('\n$ns_ at 1 "$g(9) start"\n', 2, "moves.ns2"),
    ('$ns_ at 5 "$g(0) stop"\n', 1, "without a 'start'"),
    ('$ns_ at 1 "$g(0) start"\n$ns_ at 3 "$g(0) start"\n', 2, "'start' of node '0' at t=3"),
    ('$node_(0) set X_ 1\n', 1, "start|stop"),
]


@pytest.mark.parametrize("content,line,words", BAD)
def test_malformed_activity_is_one_line_naming_file_and_line(files, content, line, words):
    moves, act = files
    act.write_text(content)
    with pytest.raises(MobilityError) as exc:
        read_ns2_movements(moves, activity=act)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{act}:{line}: ") and words in msg, msg


def test_activity_needs_an_ns2_trace(files, tmp_path):
    _, act = files
    csv = tmp_path / "t.csv"
    csv.write_text("t,id,x,y\n0,0,1,2\n")
    with pytest.raises(MobilityError, match="ns-2"):
        load_trace(csv, activity=act)


def _scenario(tmp_path, activity):
    (tmp_path / "sub").mkdir(exist_ok=True)
    f = tmp_path / "sub" / "s.toml"
    f.write_text(f'[devices]\ncount = 3\n[fl]\nclients_per_round = 2\n'
                 f'[mobility]\nmodel = "trace"\ntrace = "../moves.ns2"\nactivity = "{activity}"\n')
    return f


def test_scenario_activity_is_relative_to_the_scenario_file(files, tmp_path):
    sc = load_scenario(_scenario(tmp_path, "../activity.tcl"))
    assert sc.mobility.activity == str(files[1].resolve())
    with pytest.raises(ScenarioError, match="mobility.activity"):
        load_scenario(_scenario(tmp_path, "../nope.tcl"))
    with pytest.raises(ScenarioError, match="'mobility'.*activity.*model='trace'"):
        load_scenario(None, overrides=[f"mobility.activity='{files[1]}'"])  # static devices


def test_cli_reports_a_malformed_activity_file_in_one_line_exit_2(files, tmp_path, capsys):
    f = _scenario(tmp_path, "../activity.tcl")
    assert main(["validate", str(f)]) == 0
    files[1].write_text('$ns_ at 1 "$g(0) start"\n$ns_ at 2 "$g(0) begin"\n')
    capsys.readouterr()
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{files[1]}:2:" in err[0]
    assert main(["run", str(f), "--out", str(tmp_path / "run"), "--no-plot", "--quiet"]) == 2
