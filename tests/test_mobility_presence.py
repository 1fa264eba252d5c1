"""When a trace node exists: not before its first sample (a vehicle inserted at 580 s is absent until
then), only between its ns-2 activity start and stop, and associated with its strongest cell when it
appears.  Through the readers, the model and the simulator."""
from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from pwffsim.net.mobility import MobilityModel, Trajectory, read_sumo_fcd, straight_line
from pwffsim.scenario import scenario_from_dict
from pwffsim.sim.engine import Simulation
from pwffsim.sim.world import World

from conftest import StubLearner

FCD_LATE = """<?xml version="1.0"?>
<fcd-export>
  <timestep time="0.00"><vehicle id="early" x="100.0" y="0.0" speed="0"/></timestep>
  <timestep time="580.00"><vehicle id="early" x="100.0" y="0.0" speed="0"/>
    <vehicle id="late" x="450.0" y="0.0" speed="5"/></timestep>
  <timestep time="581.00"><vehicle id="late" x="455.0" y="0.0" speed="5"/></timestep>
</fcd-export>
"""


# --------------------------------------------------------------------------------------------------
# bug 5: a trace node is absent before its first sample
# --------------------------------------------------------------------------------------------------
def test_trajectory_is_absent_before_its_first_sample():
    tr = straight_line((0, 0), (30, 40), 5.0, t0_s=10.0)
    for end in (None, "hold", "leave"):
        assert tr.position(0.0, end) is None and tr.position(9.999, end) is None
        assert not tr.present(5.0, end)
    np.testing.assert_allclose(tr.position(10.0), [0, 0])  # present from its first sample on
    assert tr.speed_mps(5.0) == 0.0 and tr.next_change_s(0.0) == 10.0


def test_fcd_vehicle_inserted_late_is_unavailable_until_then(tmp_path):
    f = tmp_path / "late.xml"
    f.write_text(FCD_LATE)
    m = MobilityModel(read_sumo_fcd(f))
    assert m.client_ids == ["early", "late"]
    assert m.position(1, 0.0) is None and not m.available(1, 579.9) and m.speed_mps(1, 100.0) == 0.0
    assert m.next_change_s(1, 0.0) == 580.0
    np.testing.assert_allclose(m.position(1, 580.0), [450, 0])
    np.testing.assert_allclose(m.position(1, 580.5), [452.5, 0])
    np.testing.assert_allclose(m.position(0, 0.0), [100, 0])


def test_static_and_generated_nodes_are_present_from_zero():
    tr = Trajectory([0.0], [[1.0, 2.0]])
    np.testing.assert_allclose(tr.position(0.0), [1, 2])
    assert tr.present(0.0)


def _two_cells_late_car(tmp_path, rounds=2, flops=600e9):
    f = tmp_path / "late.xml"
    f.write_text(FCD_LATE)
    return scenario_from_dict({
        "cells": [{"id": "A", "x_m": 0.0}, {"id": "B", "x_m": 500.0}],
        "devices": {"count": 2, "placement": "explicit", "positions_m": [[100.0, 0.0], [100.0, 0.0]],
                    "profiles": [{"battery_j": 1e9, "cpu_hz": 1e9, "flops_per_cycle": 1.0}]},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0},
        "mobility": {"model": "trace", "trace": str(f), "sample_step_s": 1.0},
        "fl": {"rounds": rounds, "clients_per_round": 2, "aggregation_time_s": 0.0},
        "pwff": {"scheme": "fedavg-all"},
    })


def test_late_vehicle_is_associated_with_its_strongest_cell_when_it_appears(tmp_path):
    w = World(_two_cells_late_car(tmp_path), simpy.Environment())
    assert w.position(1, 0.0) is None and not w.available(1, 0.0)
    assert [d.cell for d in w.devices] == [0, 1]  # "late" appears at x = 450 m: cell B
    np.testing.assert_allclose(w.devices[1].position_m, [450, 0])


def test_late_vehicle_is_not_selected_before_it_is_inserted(tmp_path):
    # compute takes 600 s, so round 2 starts after the late car (580 s) is in
    sim = Simulation(_two_cells_late_car(tmp_path), learner=StubLearner(40_000, flops=600e9))
    sim.run()
    r1, r2 = sim.rounds
    assert r1["selected"] == 1 and r1["aggregated"] == 1
    assert r2["t_start_s"] > 580.0 and r2["selected"] == 2
    late = [e for e in sim.events if e["client"] == 1 and e["kind"] in ("download", "upload")]
    assert late and all(e["t_start_s"] >= 580.0 and e["cell"] == "B" for e in late)
    assert not [e for e in sim.events if e["kind"] == "handover"]  # attached to B on arrival, not handed over
