"""The orchestrator's timing and energy against closed forms and hand-computed schedules.

These tests use the StubLearner (tests/conftest.py): payload size and FLOPs are fixed by the test, so
every delay and joule can be computed by hand from the system model's formulas.
"""
import math

import numpy as np
import pytest

from pwffsim.scenario import scenario_from_dict
from pwffsim.sim.engine import Simulation

from conftest import StubLearner

D_M = 200.0
B_UL, B_DL = 20e6, 10e6
P_DBM, BS_DBM, N0_DBM_HZ = 23.0, 46.0, -174.0
CPU_HZ, FPC, KAPPA, RX_W = 1.5e9, 4.0, 1e-28, 0.1
PAYLOAD, FLOPS = 400_000, 2e10


def w(dbm):
    return 10 ** ((dbm - 30) / 10)


def gain(d_m):
    return 10 ** (-(128.1 + 37.6 * math.log10(d_m / 1000)) / 10)


def hand(d_m=D_M):
    """Closed-form times and energies of one client's round (fading and shadowing off)."""
    n0 = w(N0_DBM_HZ)
    g = gain(d_m)
    r_dl = B_DL * math.log2(1 + w(BS_DBM) * g / (n0 * B_DL))
    r_ul = B_UL * math.log2(1 + w(P_DBM) * g / (n0 * B_UL))
    bits = 8 * PAYLOAD
    t_dl, t_c, t_ul = bits / r_dl, FLOPS / (CPU_HZ * FPC), bits / r_ul
    return dict(t_dl=t_dl, e_dl=RX_W * t_dl, t_c=t_c, e_c=KAPPA * (FLOPS / FPC) * CPU_HZ**2, t_ul=t_ul,
                e_ul=w(P_DBM) * t_ul, r_ul=r_ul)


def scenario(positions, battery_j=1e6, rounds=1, k=None, fading="none", shadowing=0.0, **fl):
    return scenario_from_dict({
        "cells": [{"uplink_bandwidth_hz": B_UL, "downlink_bandwidth_hz": B_DL, "bs_tx_power_dbm": BS_DBM,
                   "noise_density_dbm_hz": N0_DBM_HZ}],
        "devices": {"count": len(positions), "placement": "explicit", "positions_m": positions,
                    "profiles": [{"cpu_hz": CPU_HZ, "flops_per_cycle": FPC, "kappa": KAPPA, "tx_power_dbm": P_DBM,
                                  "rx_power_w": RX_W, "battery_j": battery_j}]},
        "channel": {"fading": fading, "shadowing_sigma_db": shadowing},
        "fl": {"rounds": rounds, "clients_per_round": k or len(positions), "aggregation_time_s": 0.0, **fl},
        "pwff": {"scheme": "fedavg-all"},  # the stub's one tensor is global
    })


def run(sc, learner=None):
    sim = Simulation(sc, learner=learner or StubLearner(PAYLOAD, FLOPS))
    sim.run()
    return sim


def ev(sim, kind, client=None):
    return [e for e in sim.events if e["kind"] == kind and (client is None or e["client"] == client)]


def test_upload_time_matches_shannon():
    sim = run(scenario([[D_M, 0.0]]))
    h = hand()
    (up,) = ev(sim, "upload")
    assert up["t_end_s"] - up["t_start_s"] == pytest.approx(h["t_ul"], rel=1e-9)
    assert up["energy_j"] == pytest.approx(w(P_DBM) * h["t_ul"], rel=1e-9)
    assert up["rate_bps"] == pytest.approx(h["r_ul"], rel=1e-9)
    (dl,) = ev(sim, "download")
    assert dl["t_end_s"] == pytest.approx(h["t_dl"], rel=1e-9)
    (cp,) = ev(sim, "compute")
    assert cp["t_end_s"] - cp["t_start_s"] == pytest.approx(h["t_c"], rel=1e-12)
    assert cp["energy_j"] == pytest.approx(h["e_c"], rel=1e-12)
    assert sim.rounds[0]["t_end_s"] == pytest.approx(h["t_dl"] + h["t_c"] + h["t_ul"], rel=1e-9)


def test_two_equal_clients_share_the_uplink_for_their_whole_upload():
    # Two devices on equal channels finish computing together: each gets B/2 for the whole upload.
    sim = run(scenario([[D_M, 0.0], [-D_M, 0.0]]))
    n0, g = w(N0_DBM_HZ), gain(D_M)
    r_half = (B_UL / 2) * math.log2(1 + w(P_DBM) * g / (n0 * B_UL / 2))
    for up in ev(sim, "upload"):
        assert up["t_end_s"] - up["t_start_s"] == pytest.approx(8 * PAYLOAD / r_half, rel=1e-9)


def test_dropout_at_exact_time_battery_empties_and_not_aggregated():
    h = hand()
    battery = h["e_dl"] + h["e_c"] + 0.5 * h["e_ul"]
    learner = StubLearner(PAYLOAD, FLOPS)
    sim = Simulation(scenario([[D_M, 0.0]], battery_j=battery), learner=learner)
    sim.run()
    (drop,) = ev(sim, "dropout")
    assert drop["t_start_s"] == pytest.approx(h["t_dl"] + h["t_c"] + 0.5 * h["t_ul"], rel=1e-9)
    (up,) = ev(sim, "upload")
    assert up["status"] == "dropped" and up["battery_j"] == 0.0
    assert up["t_end_s"] == drop["t_start_s"]
    assert sim.rounds[0]["aggregated"] == 0 and sim.rounds[0]["dropped"] == 1
    assert float(sim.state.global_state["w"].abs().max()) == 0.0  # nothing was aggregated
    assert sim.devices[0].alive is False


def test_dropout_during_compute():
    h = hand()
    battery = h["e_dl"] + 0.25 * h["e_c"]
    sim = run(scenario([[D_M, 0.0]], battery_j=battery))
    (drop,) = ev(sim, "dropout")
    assert drop["t_start_s"] == pytest.approx(h["t_dl"] + 0.25 * h["t_c"], rel=1e-9)
    assert ev(sim, "upload") == []


def test_aggregation_is_sample_weighted_mean():
    samples = {0: 5, 1: 20, 2: 75}
    learner = StubLearner(PAYLOAD, FLOPS, samples=samples)
    sim = Simulation(scenario([[100.0, 0.0], [0.0, 150.0], [-120.0, -40.0]]), learner=learner)
    sim.run()
    expected = sum(n * (k + 1) for k, n in samples.items()) / sum(samples.values())
    got = sim.state.global_state["w"]
    assert float(got.min()) == pytest.approx(expected, rel=1e-6) and float(got.max()) == pytest.approx(expected, rel=1e-6)


def test_deadline_stops_stragglers_and_marks_them_late():
    near, far = hand(50.0), hand(480.0)
    t_near = near["t_dl"] + near["t_c"] + near["t_ul"]
    t_far = far["t_dl"] + far["t_c"] + far["t_ul"]
    assert t_near < t_far
    deadline = 0.5 * (t_near + t_far)
    sim = run(scenario([[50.0, 0.0], [480.0, 0.0]], policy="deadline", deadline_s=deadline))
    r0 = sim.rounds[0]
    assert (r0["aggregated"], r0["late"]) == (1, 1)
    (late_up,) = [e for e in ev(sim, "upload", client=1)]
    assert late_up["status"] == "late" and late_up["t_end_s"] == pytest.approx(deadline, rel=1e-12)
    assert float(sim.state.global_state["w"][0]) == pytest.approx(1.0)  # client 0's update alone
    assert [c["status"] for c in sim.clients] == ["ok", "late"]


def test_energy_balance_every_device():
    sc = scenario_from_dict({
        "seed": 3,
        "devices": {"count": 12, "profiles": [{"battery_j": 30.0, "name": "small", "share": 1},
                                              {"battery_j": 300.0, "name": "big", "share": 1, "tx_power_dbm": 10}]},
        "channel": {"fading": "rayleigh", "coherence_time_s": 0.01},
        "fl": {"rounds": 6, "clients_per_round": 6},
        "pwff": {"scheme": "fedavg-all"},
    })
    sim = run(sc, StubLearner(4_000_000, 2e11))
    assert ev(sim, "dropout"), "the scenario is meant to empty some batteries"
    for d in sim.devices:
        spent = sum(e["energy_j"] for e in sim.events if e["client"] == d.index)
        assert d.battery.capacity_j - d.battery.level_j == pytest.approx(spent, abs=1e-9)
        for e in sim.events:
            if e["client"] == d.index:
                assert e["battery_j"] >= 0.0
    # per-round energies add up too
    assert sum(r["energy_j"] for r in sim.rounds) == pytest.approx(sum(e["energy_j"] for e in sim.events), rel=1e-12)
    # every round starts after the previous one ended, events lie inside their round
    for r in sim.rounds:
        inside = [e for e in sim.events if e["round"] == r["round"]]
        assert all(r["t_start_s"] <= e["t_start_s"] <= e["t_end_s"] <= r["t_end_s"] + 1e-12 for e in inside)


def test_dead_devices_are_never_selected_again():
    # Each battery holds one round and half an upload more: a device's first round completes, its
    # second ends in a dropout during compute (after the download, e_dl < e_ul / 2 by hand), and then
    # it is dead.  So whatever the selection order, there are exactly 2 x 2 = 4 rounds, each device
    # drops exactly once, and the run stops for want of a device (rounds=6 asks for more).
    h = hand()
    assert h["e_dl"] < 0.5 * h["e_ul"] < h["e_dl"] + h["e_c"]
    sim = run(scenario([[D_M, 0.0], [-D_M, 0.0]], battery_j=h["e_dl"] + h["e_c"] + h["e_ul"] * 1.5, rounds=6, k=1))
    drops = [e for e in sim.events if e["kind"] == "dropout"]
    assert sorted(e["client"] for e in drops) == [0, 1], "each device must die exactly once"
    dead = {e["client"]: e for e in drops}
    for e in sim.events:
        if e["client"] in dead and e is not dead[e["client"]]:
            assert e["round"] <= dead[e["client"]]["round"] and e["t_end_s"] <= dead[e["client"]]["t_start_s"], e
    for k in (0, 1):
        rounds_of_k = sorted({e["round"] for e in sim.events if e["client"] == k and e["kind"] == "download"})
        assert len(rounds_of_k) == 2 and rounds_of_k[-1] == dead[k]["round"]
    assert [r["aggregated"] for r in sim.rounds].count(1) == 2 and len(sim.rounds) == 4
    assert "no device with battery left" in sim.state.stopped_reason


@pytest.mark.parametrize("policy", ["sync", "deadline", "fedasync"])
def test_energy_balance_with_idle_power_pa_efficiency_and_circuit_power(policy):
    # The balance of test_energy_balance_every_device with every energy term on (idle power, PA
    # efficiency, circuit power) and the radio terms too (multicast / unicast downlink, truncated
    # Shannon, packet errors): battery drop = sum of the device's event energies, to 1e-9 J.  Slow
    # 'big' devices make the small ones wait (under the deadline, some die waiting).
    extra = {"idle_power_w": 1.0, "pa_efficiency": 0.3, "circuit_power_w": 0.2}
    sc = scenario_from_dict({
        "seed": 3,
        "devices": {"count": 12, "profiles": [{"battery_j": 30.0, "name": "small", "share": 1, **extra},
                                              {"battery_j": 300.0, "name": "big", "share": 1, "tx_power_dbm": 10,
                                               "cpu_hz": 1e9, **extra}]},
        "channel": {"fading": "rayleigh", "coherence_time_s": 0.01, "downlink": "multicast",
                    "link_abstraction": "truncated-shannon", "packet_errors": True, "per_waterfall_db": 10.0},
        "fl": {"rounds": 30 if policy == "fedasync" else 6, "clients_per_round": 6, "policy": policy,
               "deadline_s": 20.0},
        "pwff": {"scheme": "fedavg-all"},
    })
    sim = run(sc, StubLearner(4_000_000, 2e11))
    assert ev(sim, "dropout") and ev(sim, "idle")
    if policy == "deadline":
        assert [e for e in ev(sim, "idle") if e["status"] == "dropped"], "some battery must empty while idle"
    else:
        assert [e for e in ev(sim, "upload") if e["status"] == "error"], "some upload must be sent again"
    for d in sim.devices:
        spent = sum(e["energy_j"] for e in sim.events if e["client"] == d.index)
        assert d.battery.capacity_j - d.battery.level_j == pytest.approx(spent, abs=1e-9)
        assert all(e["battery_j"] >= 0.0 for e in sim.events if e["client"] == d.index)
    if policy != "fedasync":  # a synchronous round accounts for every event of its clients
        assert sum(r["energy_j"] for r in sim.rounds) == pytest.approx(sum(e["energy_j"] for e in sim.events),
                                                                       rel=1e-12)
