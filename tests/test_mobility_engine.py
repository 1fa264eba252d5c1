"""Mobility, handover and backhaul through the simulator, against hand-computed expectations."""
import math

import pytest

from pwffsim.scenario import load_scenario, scenario_from_dict
from pwffsim.sim.engine import Simulation

from conftest import StubLearner

V = 10.0          # m/s
X0, X1 = 50.0, 450.0
HYST, TTT, STEP, INTERRUPT = 3.0, 0.16, 0.1, 0.05
UL_BW, P_DBM, N0_DBM_HZ = 1e5, 23.0, -174.0   # uplink band (Hz), device power, noise density (defaults)


def two_cell_line(tmp_path, in_flight="continue"):
    trace = tmp_path / "line.csv"
    trace.write_text(f"t,id,x,y\n0,car,{X0},0\n{(X1 - X0) / V},car,{X1},0\n")
    return scenario_from_dict({
        "cells": [{"id": "A", "x_m": 0.0, "uplink_bandwidth_hz": UL_BW}, {"id": "B", "x_m": 500.0, "uplink_bandwidth_hz": UL_BW}],
        "devices": {"count": 1, "placement": "explicit", "positions_m": [[X0, 0.0]],
                    "profiles": [{"battery_j": 1e6, "cpu_hz": 1e9, "flops_per_cycle": 1.0, "tx_power_dbm": P_DBM}]},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0, "path_loss": "macro-128.1-37.6"},
        "mobility": {"model": "trace", "trace": str(trace), "sample_step_s": STEP},
        "handover": {"hysteresis_db": HYST, "time_to_trigger_s": TTT, "interruption_s": INTERRUPT, "in_flight": in_flight},
        "fl": {"rounds": 1, "clients_per_round": 1, "aggregation_time_s": 0.0},
        "pwff": {"scheme": "fedavg-all"},
    })


def expected_handover_time():
    # A3 entry: PL_A - PL_B > HYST with equal BS powers:  37.6 log10(x / (500 - x)) > HYST
    ratio = 10 ** (HYST / 37.6)
    x_c = 500 * ratio / (1 + ratio)
    return (x_c - X0) / V + TTT


def bits_sent_by_hand(t0, t1, cell_x):
    """Bits the car sends to the cell at ``cell_x`` over [t0, t1] alone on the band: positions are
    sampled every STEP (the car is at X0 + V k STEP over [k STEP, (k+1) STEP)), each interval at the
    single-user Shannon rate B log2(1 + p g / (N0 B)) with g from 128.1 + 37.6 log10(d_km)."""
    p_w, n0_w = 10 ** (P_DBM / 10) / 1000, 10 ** (N0_DBM_HZ / 10) / 1000
    total, k = 0.0, math.floor(t0 / STEP)
    while k * STEP < t1:
        a, b = max(t0, k * STEP), min(t1, (k + 1) * STEP)
        if b > a:
            d = abs(X0 + V * k * STEP - cell_x)
            g = 10 ** (-(128.1 + 37.6 * math.log10(d / 1000)) / 10)
            total += UL_BW * math.log2(1 + p_w * g / (n0_w * UL_BW)) * (b - a)
        k += 1
    return total


def test_straight_line_hands_over_once_at_expected_time_and_upload_sends_its_bits_at_hand_rates(tmp_path):
    payload = 2_000_000
    # compute ends at 15 s; the 16 Mbit upload over 100 kHz takes several seconds, across the handover
    learner = StubLearner(payload, flops=15e9)
    sim = Simulation(two_cell_line(tmp_path), learner=learner)
    sim.run()
    hos = [e for e in sim.events if e["kind"] == "handover"]
    assert len(hos) == 1, hos
    (ho,) = hos
    assert (ho["cell_from"], ho["cell"]) == ("A", "B")
    assert abs(ho["t_start_s"] - expected_handover_time()) <= STEP + 1e-9
    assert ho["t_end_s"] - ho["t_start_s"] == pytest.approx(INTERRUPT)
    (up,) = [e for e in sim.events if e["kind"] == "upload"]
    assert up["t_start_s"] < ho["t_start_s"] < up["t_end_s"], "the upload must be in flight at the handover"
    assert up["status"] == "ok" and up["cell"] == "B"
    # The bits the hand-computed rates carry over the upload's airtime (on A until the handover, on B
    # after the interruption) are the payload, exactly once: the remaining bits carry over, none lost
    # or sent twice.  (rate_bps x duration would be the payload by construction of rate_bps.)
    sent = (bits_sent_by_hand(up["t_start_s"], ho["t_start_s"], 0.0)
            + bits_sent_by_hand(ho["t_end_s"], up["t_end_s"], 500.0))
    assert sent == pytest.approx(8 * payload, rel=1e-9)
    assert sim.rounds[0]["aggregated"] == 1


def test_restart_policy_takes_longer_than_continue(tmp_path):
    ends = {}
    for policy in ("continue", "restart"):
        sim = Simulation(two_cell_line(tmp_path, policy), learner=StubLearner(2_000_000, flops=15e9))
        sim.run()
        (up,) = [e for e in sim.events if e["kind"] == "upload"]
        ends[policy] = up["t_end_s"]
    assert ends["restart"] > ends["continue"] + 1.0


# Three cells on a line; each device stands 10-15 m from the boundary between two cells, so its two
# strongest cells differ by less than 2.5 dB (37.6 log10(d_far / d_near)): far below the Rayleigh
# fading swings, so a handover rule that moved a device that does not move would fire here.
EDGE_CELLS_X = (0.0, 400.0, 800.0)
EDGE_DEVICES_X = (190.0, 215.0, 585.0, 612.0)


@pytest.mark.parametrize("how", ["static", "standing-on-a-trace"])
def test_devices_that_do_not_move_never_hand_over(tmp_path, how):
    mobility = {"model": "static"}
    if how == "standing-on-a-trace":  # the handover process runs (a trace), but the positions never change
        trace = tmp_path / "standing.csv"
        trace.write_text("t,id,x,y\n" + "".join(f"{t},{k},{x},0\n" for k, x in enumerate(EDGE_DEVICES_X)
                                                 for t in (0, 1000)))
        mobility = {"model": "trace", "trace": str(trace), "sample_step_s": 0.1}
    sc = scenario_from_dict({
        "cells": [{"id": f"c{j}", "x_m": x} for j, x in enumerate(EDGE_CELLS_X)],
        "devices": {"count": len(EDGE_DEVICES_X), "placement": "explicit",
                    "positions_m": [[x, 0.0] for x in EDGE_DEVICES_X],
                    "profiles": [{"battery_j": 1e6, "cpu_hz": 1e9, "flops_per_cycle": 1.0}]},
        "channel": {"fading": "rayleigh", "coherence_time_s": 0.05, "shadowing_sigma_db": 0.0},
        "mobility": mobility,
        "handover": {"hysteresis_db": 3.0, "time_to_trigger_s": 0.16},
        "fl": {"rounds": 3, "clients_per_round": len(EDGE_DEVICES_X)},
        "pwff": {"scheme": "fedavg-all"},
    })
    sim = Simulation(sc, learner=StubLearner(40_000, flops=2e9))  # 2 s of compute per round
    sim.run()
    assert sim.rounds[-1]["t_end_s"] > 5.0  # some 50 position samples per device
    assert not [e for e in sim.events if e["kind"] == "handover"]
    # each device stays in its strongest (nearest) cell in every event, and the devices use all three cells
    nearest = {k: f"c{min(range(3), key=lambda j: abs(EDGE_CELLS_X[j] - x))}" for k, x in enumerate(EDGE_DEVICES_X)}
    assert set(nearest.values()) == {"c0", "c1", "c2"}
    for e in sim.events:
        if e["client"] >= 0 and e["kind"] in ("download", "compute", "upload"):
            assert e["cell"] == nearest[e["client"]], e


def test_backhaul_legs_follow_topology_routes(tmp_path):
    from pathlib import Path

    from pwffsim.net.topology import load_topology

    topo_path = Path(__file__).resolve().parents[1] / "topologies" / "hierarchical.toml"
    sc = load_scenario(None, overrides=[f"topology='{topo_path}'", "fl.rounds=1", "devices.count=4",
                                        "fl.clients_per_round=4", "devices.placement='square'",
                                        "devices.side_m=600", "pwff.scheme='fedavg-all'"])
    payload = 400_000
    sim = Simulation(sc, learner=StubLearner(payload, 1e9))
    sim.run()
    topo = load_topology(topo_path)
    bh = [e for e in sim.events if e["kind"] == "backhaul"]
    assert len(bh) == 8
    for e in bh:
        want = topo.transfer_time_s(e["cell_from"], e["cell"], payload)
        assert e["t_end_s"] - e["t_start_s"] == pytest.approx(want, rel=1e-12)
        assert e["energy_j"] == 0.0
        # the rate column is the bits' rate on the route (its smallest capacity), the latency excluded
        path = topo.route(e["cell_from"], e["cell"])
        hops = [topo.graph.edges[u, v] for u, v in zip(path, path[1:])]
        assert e["rate_bps"] == min(h["capacity_bps"] for h in hops)
        latency = sum(h["latency_s"] for h in hops)
        assert e["rate_bps"] == pytest.approx(8 * payload / (want - latency), rel=1e-9)
    # every download starts when its backhaul leg ended; arrival after the upward leg
    for k in range(4):
        down = [e for e in bh if e["client"] == k and e["cell_from"] == topo.cloud][0]
        dl = [e for e in sim.events if e["client"] == k and e["kind"] == "download"][0]
        assert dl["t_start_s"] == pytest.approx(down["t_end_s"])


def test_interference_slows_concurrent_uploads_in_other_cells(tmp_path):
    durations = {}
    for interference in (False, True):
        sc = scenario_from_dict({
            "cells": [{"id": "A", "x_m": 0.0}, {"id": "B", "x_m": 400.0}],
            "devices": {"count": 2, "placement": "explicit", "positions_m": [[150.0, 0.0], [250.0, 0.0]]},
            "channel": {"fading": "none", "shadowing_sigma_db": 0.0, "interference": interference},
            "fl": {"rounds": 1, "clients_per_round": 2, "aggregation_time_s": 0.0},
            "pwff": {"scheme": "fedavg-all"},
        })
        sim = Simulation(sc, learner=StubLearner(4_000_000, 1e9))
        sim.run()
        durations[interference] = [e["t_end_s"] - e["t_start_s"] for e in sim.events if e["kind"] == "upload"]
    assert all(b > 1.5 * a for a, b in zip(durations[False], durations[True]))
