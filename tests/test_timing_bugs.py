"""Issue 9's timing bugs, each against a hand computation (closed forms written out with ``math``).

1. inter-cell interference: n FDMA uploads of a cell put ``sum(p g)`` over the whole band (a density
   ``sum(p g) / B``) on a neighbour's base station, not ``sum(p g) / (B / n)``;
2. a transfer handed over into a busy cell continues with its remaining bits at its share there;
3. a stop that lands on the instant an activity completes: the completion counts (it is "by" the
   deadline), and the stop ends the client's round before its next activity starts;
4. a transfer requested during a handover interruption waits for the interruption to end.
"""
import math

import pytest

from pwffsim.scenario import scenario_from_dict
from pwffsim.sim.engine import Simulation

from conftest import StubLearner

UL_BW, DL_BW = 1e5, 20e6
P_UE_DBM, P_BS_DBM, N0_DBM_HZ = 23.0, 46.0, -174.0
CPU_HZ = 1e9


def _w(dbm):
    return 10 ** (dbm / 10) / 1000


def _gain(d_m):
    return 10 ** (-(128.1 + 37.6 * math.log10(d_m / 1000)) / 10)


def _rate(bw_hz, p_w, g, interference_psd=0.0):
    return bw_hz * math.log2(1 + p_w * g / ((_w(N0_DBM_HZ) + interference_psd) * bw_hz))


def _cell(cid, x):
    return {"id": cid, "x_m": x, "uplink_bandwidth_hz": UL_BW, "downlink_bandwidth_hz": DL_BW,
            "bs_tx_power_dbm": P_BS_DBM, "noise_density_dbm_hz": N0_DBM_HZ}


def _profile(battery_j=1e6):
    return {"battery_j": battery_j, "cpu_hz": CPU_HZ, "flops_per_cycle": 1.0, "tx_power_dbm": P_UE_DBM,
            "rx_power_w": 0.1}


def _uploads(sim):
    return {e["client"]: e for e in sim.events if e["kind"] == "upload"}


# ---------------------------------------------------------------------------- bug 1
def test_interference_from_a_cell_is_its_total_power_over_the_whole_band():
    """Victim 100 m from cell A; four uploads 100 m from cell B (B at 1000 m), all starting together.
    While B's four uploads last, A's base station sees I0 = sum_i p g_iA / B."""
    b_x = 1000.0
    interferers = [[b_x + 100, 0.0], [b_x, 100.0], [b_x - 100, 0.0], [b_x, -100.0]]
    sc = scenario_from_dict({
        "cells": [_cell("A", 0.0), _cell("B", b_x)],
        "devices": {"count": 5, "placement": "explicit", "positions_m": [[-100.0, 0.0]] + interferers,
                    "profiles": [_profile()]},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0, "interference": True},
        "fl": {"rounds": 1, "clients_per_round": 5, "aggregation_time_s": 0.0},
        "pwff": {"scheme": "fedavg-all"},
    })
    payload = 40_000
    sim = Simulation(sc, learner=StubLearner(payload, flops=1e9))
    sim.run()
    ups = _uploads(sim)
    assert len({round(u["t_start_s"], 12) for u in ups.values()}) == 1  # they start together
    p = _w(P_UE_DBM)
    i0_at_a = sum(p * _gain(math.hypot(x, y)) for x, y in interferers) / UL_BW
    t_victim = 8 * payload / _rate(UL_BW, p, _gain(100.0), i0_at_a)
    up = ups[0]
    assert all(ups[k]["t_end_s"] > up["t_end_s"] for k in range(1, 5))  # B's uploads outlast it
    assert up["t_end_s"] - up["t_start_s"] == pytest.approx(t_victim, rel=1e-9)
    # the mutant that spreads the interference over the FDMA share (B / 4) is 4x too strong
    t_wrong = 8 * payload / _rate(UL_BW, p, _gain(100.0), 4 * i0_at_a)
    assert abs(t_wrong - t_victim) / t_victim > 0.05


# ---------------------------------------------------------------------------- bugs 2 and 4
X_A, X_B, CELL_B_X = 150.0, 420.0, 500.0
STEP, TTT, INTERRUPT, HYST = 0.25, 0.5, 0.25, 3.0
T_JUMP = 5.0
T_HO = T_JUMP + TTT


def _moving(tmp_path, static_in_b=(), in_flight="continue"):
    """Device 0 jumps from X_A to X_B at T_JUMP (A3 fires at T_HO); further devices stand in cell B."""
    trace = tmp_path / "jump.csv"
    rows = [f"0,car,{X_A},0", f"{T_JUMP - STEP},car,{X_A},0", f"{T_JUMP},car,{X_B},0"]
    rows += [f"0,s{i},{x},0" for i, x in enumerate(static_in_b)]
    trace.write_text("t,id,x,y\n" + "\n".join(rows) + "\n")
    n = 1 + len(static_in_b)
    return scenario_from_dict({
        "cells": [_cell("A", 0.0), _cell("B", CELL_B_X)],
        "devices": {"count": n, "placement": "explicit", "positions_m": [[X_A, 0.0]] + [[x, 0.0] for x in static_in_b],
                    "profiles": [_profile()]},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0, "interference": False},
        "mobility": {"model": "trace", "trace": str(trace), "sample_step_s": STEP,
                     "client_ids": ["car"] + [f"s{i}" for i in range(len(static_in_b))]},
        "handover": {"hysteresis_db": HYST, "time_to_trigger_s": TTT, "interruption_s": INTERRUPT,
                     "in_flight": in_flight},
        "fl": {"rounds": 1, "clients_per_round": n, "aggregation_time_s": 0.0},
        "pwff": {"scheme": "fedavg-all"},
    })


@pytest.mark.parametrize("in_flight", ["continue", "restart"])
def test_upload_handed_over_into_a_busy_cell_shares_its_band(tmp_path, in_flight):
    """The car's upload moves from A into B, where a static device (bob, 450 m from B) is uploading.
    Only ~0.1 s of the car's upload is left at the handover, less than the interruption: what cell A
    had predicted for it is long past when it joins B.  After the interruption the car and bob share
    B's band (half each) until one ends; the other then has it all."""
    payload, flops = 700_000, 2e9
    bob_x = CELL_B_X + 450.0
    sim = Simulation(_moving(tmp_path, static_in_b=[bob_x], in_flight=in_flight),
                     learner=StubLearner(payload, flops=flops))
    sim.run()
    bits, p = 8.0 * payload, _w(P_UE_DBM)
    dl = _rate(DL_BW, _w(P_BS_DBM), _gain(X_A))
    t_up = bits / dl + flops / CPU_HZ  # the car alone on A's uplink from t_up until T_HO
    sent = _rate(UL_BW, p, _gain(X_A)) * (T_JUMP - t_up) + _rate(UL_BW, p, _gain(X_B)) * (T_HO - T_JUMP)
    assert 0 < bits - sent < _rate(UL_BW, p, _gain(X_B)) * INTERRUPT  # the premise of the bug
    car_left = bits - sent if in_flight == "continue" else bits
    t_join = T_HO + INTERRUPT
    # bob: alone on B from his upload start to t_join, then half the band
    bob_up = bits / _rate(DL_BW, _w(P_BS_DBM), _gain(450.0)) + flops / CPU_HZ
    bob_left = bits - _rate(UL_BW, p, _gain(450.0)) * (t_join - bob_up)
    car_half, bob_half = _rate(UL_BW / 2, p, _gain(CELL_B_X - X_B)), _rate(UL_BW / 2, p, _gain(450.0))
    if car_left / car_half <= bob_left / bob_half:
        t_end = t_join + car_left / car_half
    else:  # bob ends first; then the car has the whole band
        t_bob = t_join + bob_left / bob_half
        t_end = t_bob + (car_left - car_half * (t_bob - t_join)) / _rate(UL_BW, p, _gain(CELL_B_X - X_B))
    ups = _uploads(sim)
    assert ups[1]["t_start_s"] == pytest.approx(bob_up, rel=1e-9) and ups[1]["t_start_s"] < T_HO
    assert ups[0]["cell"] == "B" and ups[0]["status"] == "ok"
    assert ups[0]["t_end_s"] == pytest.approx(t_end, rel=1e-9)
    assert ups[0]["t_end_s"] > t_join + 0.05  # (the bug ended it at once, at t_join)


def test_upload_requested_during_a_handover_interruption_waits_for_it(tmp_path):
    """The car's computation ends inside the interruption [T_HO, T_HO + I]: its upload cannot start on
    the new cell before the interruption ends, and draws no power while it waits."""
    payload = 20_000
    t_dl = 8.0 * payload / _rate(DL_BW, _w(P_BS_DBM), _gain(X_A))
    flops = (T_HO + INTERRUPT / 2 - t_dl) * CPU_HZ  # compute ends in the middle of the interruption
    sim = Simulation(_moving(tmp_path), learner=StubLearner(payload, flops=flops))
    sim.run()
    (ho,) = [e for e in sim.events if e["kind"] == "handover"]
    assert ho["t_start_s"] == pytest.approx(T_HO, rel=1e-12)
    (cp,) = [e for e in sim.events if e["kind"] == "compute"]
    assert T_HO < cp["t_end_s"] < T_HO + INTERRUPT
    up = _uploads(sim)[0]
    airtime = 8.0 * payload / _rate(UL_BW, _w(P_UE_DBM), _gain(CELL_B_X - X_B))
    assert up["cell"] == "B" and up["t_start_s"] == pytest.approx(cp["t_end_s"], rel=1e-12)
    assert up["t_end_s"] == pytest.approx(T_HO + INTERRUPT + airtime, rel=1e-9)
    assert up["energy_j"] == pytest.approx(_w(P_UE_DBM) * airtime, rel=1e-9)


# ---------------------------------------------------------------------------- bug 3
def _one_device(**fl):
    return scenario_from_dict({
        "cells": [_cell("A", 0.0)],
        "devices": {"count": 1, "placement": "explicit", "positions_m": [[100.0, 0.0]], "profiles": [_profile()]},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0},
        "fl": {"rounds": 1, "clients_per_round": 1, "aggregation_time_s": 0.0, **fl},
        "pwff": {"scheme": "fedavg-all"},
    })


def _ends(kind, **fl):
    sim = Simulation(_one_device(**fl), learner=StubLearner(400_000, flops=3e9))
    sim.run()
    return sim, [e for e in sim.events if e["kind"] == kind][0]["t_end_s"]


def test_deadline_on_the_instant_a_download_ends_stops_the_round_there():
    _, t_dl = _ends("download")  # the download's end, as the simulator computes it
    sim = Simulation(_one_device(policy="deadline", deadline_s=t_dl), learner=StubLearner(400_000, flops=3e9))
    sim.run()
    kinds = [(e["kind"], e["status"]) for e in sim.events if e["client"] == 0]
    assert kinds == [("download", "ok")]  # it arrived in full; nothing starts after the stop
    assert (sim.rounds[0]["aggregated"], sim.rounds[0]["late"]) == (0, 1)
    assert sim.rounds[0]["t_end_s"] == t_dl
    assert sim.clients[0]["status"] == "late"


def test_deadline_on_the_instant_an_upload_ends_counts_the_update():
    _, t_up = _ends("upload")
    sim = Simulation(_one_device(policy="deadline", deadline_s=t_up), learner=StubLearner(400_000, flops=3e9))
    sim.run()
    assert (sim.rounds[0]["aggregated"], sim.rounds[0]["late"]) == (1, 0)  # "arrived by the deadline"
    assert sim.rounds[0]["t_end_s"] == t_up


def test_going_offline_on_the_instant_a_computation_ends_stops_before_the_upload(tmp_path):
    _, t_cp = _ends("compute")
    csv = tmp_path / "av.csv"
    csv.write_text(f"client,start_s,end_s\n0,0,{t_cp!r}\n")
    sim = Simulation(_one_device(availability=str(csv)), learner=StubLearner(400_000, flops=3e9))
    sim.run()
    kinds = sorted((e["kind"], e["status"]) for e in sim.events if e["client"] == 0)
    assert kinds == [("compute", "ok"), ("download", "ok"), ("offline", "offline")]  # no upload
    assert sim.clients[0]["status"] == "offline" and sim.rounds[0]["t_end_s"] == t_cp


def test_a_transfer_stalled_out_of_coverage_draws_no_power(tmp_path):
    """The car leaves (end = "leave") at T_JUMP in the middle of its upload: its radio is on the air
    only until then; the deadline (8 s) then stops the stalled upload."""
    trace = tmp_path / "leave.csv"
    trace.write_text(f"t,id,x,y\n0,car,{X_A},0\n{T_JUMP - STEP},car,{X_A},0\n")
    sc = scenario_from_dict({
        "cells": [_cell("A", 0.0)],
        "devices": {"count": 1, "placement": "explicit", "positions_m": [[X_A, 0.0]], "profiles": [_profile()]},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0},
        "mobility": {"model": "trace", "trace": str(trace), "sample_step_s": STEP, "end": "leave"},
        "fl": {"rounds": 1, "clients_per_round": 1, "aggregation_time_s": 0.0, "policy": "deadline",
               "deadline_s": 8.0},
        "pwff": {"scheme": "fedavg-all"},
    })
    payload, flops = 2_000_000, 2e9
    sim = Simulation(sc, learner=StubLearner(payload, flops=flops))
    sim.run()
    t_up = 8.0 * payload / _rate(DL_BW, _w(P_BS_DBM), _gain(X_A)) + flops / CPU_HZ
    up = _uploads(sim)[0]
    assert up["status"] == "late" and up["t_end_s"] == pytest.approx(8.0, rel=1e-12)
    assert up["energy_j"] == pytest.approx(_w(P_UE_DBM) * (T_JUMP - t_up), rel=1e-9)


def test_packet_error_draws_are_keyed_by_the_devices_nth_upload(monkeypatch):
    """Under FedBuff one device uploads several times between two aggregations (one round index):
    each upload attempt still draws from its own stream."""
    from pwffsim.sim.packets import PacketErrors

    keys = []
    orig = PacketErrors.fails

    def spy(self, device, upload, attempt, mean_inverse_sinr):
        keys.append((device, upload, attempt))
        return orig(self, device, upload, attempt, mean_inverse_sinr)

    monkeypatch.setattr(PacketErrors, "fails", spy)
    sc = _one_device(policy="fedbuff", buffer_size=3, rounds=1)
    sc.channel.packet_errors = True
    sim = Simulation(sc, learner=StubLearner(40_000, flops=1e8))
    sim.run()
    ups = [e for e in sim.events if e["kind"] == "upload"]
    assert len(ups) >= 3 and {e["round"] for e in ups} == {0}
    assert len(keys) == len(ups) and len(set(keys)) == len(keys)
    assert sorted({u for _, u, _ in keys}) == list(range(len({u for _, u, _ in keys})))
