"""Transmit energy beyond the radiated power (PA efficiency, circuit power) and idle (wait) power
through the simulator, against hand-computed times and energies.

The idle rule (pwffsim/sim/idle.py): a device taking part in a round draws idle_power_w whenever it is
not receiving, computing or transmitting, from its round's start until the round's aggregation ends
(asynchronous: until the server takes its update), or until it is stopped or drops out."""
import math

import pytest

from pwffsim.scenario import scenario_from_dict
from pwffsim.sim.engine import Simulation

from conftest import StubLearner, event_rows as rows

B_UL, B_DL = 20e6, 10e6
P_DBM, BS_DBM, N0_DBM_HZ = 23.0, 46.0, -174.0
CPU_HZ, FPC, KAPPA, RX_W = 1.5e9, 4.0, 1e-28, 0.1
PAYLOAD, FLOPS = 400_000, 2e10
BITS = 8 * PAYLOAD
IDLE_W, AGG_S = 0.3, 0.02


def w(dbm):
    return 10 ** ((dbm - 30) / 10)


def hand(d_m):
    """Times and energies of one client's round alone in its cell (no fading, no shadowing)."""
    g = 10 ** (-(128.1 + 37.6 * math.log10(d_m / 1000)) / 10)
    n0 = w(N0_DBM_HZ)
    t_dl = BITS / (B_DL * math.log2(1 + w(BS_DBM) * g / (n0 * B_DL)))
    t_ul = BITS / (B_UL * math.log2(1 + w(P_DBM) * g / (n0 * B_UL)))
    t_c = FLOPS / (CPU_HZ * FPC)
    return dict(t_dl=t_dl, t_c=t_c, t_ul=t_ul, t=t_dl + t_c + t_ul, e_dl=RX_W * t_dl,
                e_c=KAPPA * (FLOPS / FPC) * CPU_HZ ** 2, e_ul=w(P_DBM) * t_ul)


def scenario(positions, profile=None, **fl):
    return scenario_from_dict({
        "cells": [{"uplink_bandwidth_hz": B_UL, "downlink_bandwidth_hz": B_DL, "bs_tx_power_dbm": BS_DBM,
                   "noise_density_dbm_hz": N0_DBM_HZ}],
        "devices": {"count": len(positions), "placement": "explicit", "positions_m": positions,
                    "profiles": [{"cpu_hz": CPU_HZ, "flops_per_cycle": FPC, "kappa": KAPPA, "tx_power_dbm": P_DBM,
                                  "rx_power_w": RX_W, "battery_j": 1e6, **(profile or {})}]},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0},
        "fl": {"rounds": 1, "clients_per_round": len(positions), "aggregation_time_s": AGG_S, **fl},
        "pwff": {"scheme": "fedavg-all"},
    })


def run(sc):
    sim = Simulation(sc, learner=StubLearner(PAYLOAD, FLOPS))
    sim.run()
    return sim


def test_pa_efficiency_and_circuit_power_scale_the_transmit_energy_only():
    eta, p_c = 0.35, 0.12
    sim = run(scenario([[200.0, 0.0]], profile={"pa_efficiency": eta, "circuit_power_w": p_c}))
    h = hand(200.0)
    (up,) = rows(sim, "upload")
    assert up["t_end_s"] - up["t_start_s"] == pytest.approx(h["t_ul"], rel=1e-9)  # the radiated p sets the rate
    assert up["energy_j"] == pytest.approx((w(P_DBM) / eta + p_c) * h["t_ul"], rel=1e-9)
    assert rows(sim, "download")[0]["energy_j"] == pytest.approx(h["e_dl"], rel=1e-9)


def test_waiting_for_the_straggler_costs_idle_energy():
    near, far = hand(50.0), hand(480.0)
    sim = run(scenario([[50.0, 0.0], [480.0, 0.0]], profile={"idle_power_w": IDLE_W}))
    t_round_end = far["t"] + AGG_S
    assert sim.rounds[0]["t_end_s"] == pytest.approx(t_round_end, rel=1e-9)
    (idle0,), (idle1,) = rows(sim, "idle", 0), rows(sim, "idle", 1)  # no gaps before: one wait each
    assert idle0["t_start_s"] == pytest.approx(near["t"], rel=1e-9)
    assert idle0["t_end_s"] == pytest.approx(t_round_end, rel=1e-9)
    assert idle0["energy_j"] == pytest.approx(IDLE_W * (t_round_end - near["t"]), rel=1e-9)
    assert idle1["energy_j"] == pytest.approx(IDLE_W * AGG_S, rel=1e-9)
    for k, h in ((0, near), (1, far)):
        (c,) = [c for c in sim.clients if c["client"] == k]
        expected = h["e_dl"] + h["e_c"] + h["e_ul"] + IDLE_W * (t_round_end - h["t"])
        assert c["energy_j"] == pytest.approx(expected, rel=1e-9)
        assert 1e6 - sim.devices[k].battery.level_j == pytest.approx(expected, rel=1e-9)
    # with idle power 0 (the default) there is no idle row at all
    assert rows(run(scenario([[50.0, 0.0], [480.0, 0.0]])), "idle") == []


def test_battery_emptying_while_waiting_drops_the_device_at_that_instant_update_still_counts():
    near, far = hand(50.0), hand(480.0)
    x = 0.5 * (far["t"] - near["t"])  # it can idle this long after its upload
    battery = near["e_dl"] + near["e_c"] + near["e_ul"] + IDLE_W * x
    sc = scenario([[50.0, 0.0], [480.0, 0.0]], profile={"idle_power_w": IDLE_W})
    sc.devices.profiles = [sc.devices.profiles[0].model_copy(update={"name": "small", "battery_j": battery}),
                           sc.devices.profiles[0].model_copy(update={"name": "big"})]
    sc.devices.profile_of_device = ["small", "big"]
    sim = run(sc)
    (drop,) = rows(sim, "dropout")
    assert drop["client"] == 0 and drop["t_start_s"] == pytest.approx(near["t"] + x, rel=1e-9)
    (idle0,) = rows(sim, "idle", 0)
    assert idle0["status"] == "dropped" and idle0["t_end_s"] == drop["t_start_s"] and idle0["battery_j"] == 0.0
    assert sim.rounds[0]["aggregated"] == 2 and not sim.devices[0].alive
    import pandas as pd

    from pwffsim.report import energy_by_client

    assert energy_by_client(pd.DataFrame(sim.events)).loc[0, "idle"] == pytest.approx(IDLE_W * x, rel=1e-9)


def test_report_counts_a_straggler_that_dies_during_the_aggregation_as_aggregated():
    import pandas as pd

    from pwffsim.report import round_delay_breakdown

    far = hand(480.0)
    sc = scenario([[50.0, 0.0], [480.0, 0.0]], profile={"idle_power_w": IDLE_W})
    battery = far["e_dl"] + far["e_c"] + far["e_ul"] + IDLE_W * 0.5 * AGG_S
    sc.devices.profiles = [sc.devices.profiles[0].model_copy(update={"name": "big"}),
                           sc.devices.profiles[0].model_copy(update={"name": "small", "battery_j": battery})]
    sc.devices.profile_of_device = ["big", "small"]
    sim = run(sc)
    assert rows(sim, "dropout")[0]["t_start_s"] == pytest.approx(far["t"] + 0.5 * AGG_S, rel=1e-9)
    (row,) = round_delay_breakdown(pd.DataFrame(sim.events), pd.DataFrame(sim.rounds)).to_dict("records")
    assert (row["straggler"], row["straggler_aggregated"]) == (1, True)
    assert row["upload_s"] == pytest.approx(far["t_ul"], rel=1e-9)


def test_a_backhaul_leg_is_idle_time(tmp_path):
    latency, cap = 0.1, 1e9
    topo = tmp_path / "one.toml"
    topo.write_text('name = "one"\n[[base_stations]]\nid = "bs0"\nx_m = 0.0\ny_m = 0.0\n'
                    'uplink_bandwidth_hz = 20e6\ndownlink_bandwidth_hz = 10e6\n'
                    '[[servers]]\nid = "cloud"\nkind = "cloud"\n'
                    f'[[links]]\na = "bs0"\nb = "cloud"\nlatency_s = {latency}\ncapacity_bps = {cap}\n')
    sc = scenario([[200.0, 0.0]], profile={"idle_power_w": IDLE_W})
    sc.topology = str(topo)
    sim = run(sc)
    h, t_bh = hand(200.0), latency + BITS / cap
    first, last = rows(sim, "idle")
    assert (first["t_start_s"], first["t_end_s"]) == pytest.approx((0.0, t_bh), rel=1e-12)
    up_end = t_bh + h["t"]
    assert (last["t_start_s"], last["t_end_s"]) == pytest.approx((up_end, up_end + t_bh + AGG_S), rel=1e-9)
    assert first["energy_j"] + last["energy_j"] == pytest.approx(IDLE_W * (2 * t_bh + AGG_S), rel=1e-9)


def test_asynchronous_update_idles_until_the_server_takes_it():
    # Two near-equal clients: the first arrival is taken at once and aggregated for agg_s; the second
    # arrives during that aggregation and idles from its upload's end until the server takes it, at
    # the aggregation's end.  (Their uploads overlap on the band: the times are read from the rows.)
    agg_s = 0.1
    sim = run(scenario([[200.0, 0.0], [205.0, 0.0]], profile={"idle_power_w": IDLE_W}, policy="fedasync", rounds=2,
                       aggregation_time_s=agg_s))
    t_a, t_b = (rows(sim, "upload", k)[0]["t_end_s"] for k in (0, 1))
    assert t_a < t_b < t_a + agg_s
    first_b = rows(sim, "idle", 1)[0]
    assert (first_b["t_start_s"], first_b["t_end_s"]) == (t_b, pytest.approx(t_a + agg_s, rel=1e-12))
    assert first_b["energy_j"] == pytest.approx(IDLE_W * (t_a + agg_s - t_b), rel=1e-9)
    assert not [e for e in rows(sim, "idle", 0) if e["t_start_s"] == t_a]  # taken at once: no wait


def test_a_handover_interruption_during_an_upload_is_idle(tmp_path):
    from test_mobility_engine import INTERRUPT, two_cell_line

    sc = two_cell_line(tmp_path)
    sc.devices.profiles = [sc.devices.profiles[0].model_copy(update={"idle_power_w": IDLE_W})]
    sim = Simulation(sc, learner=StubLearner(2_000_000, flops=15e9))
    sim.run()
    (ho,), (up,) = rows(sim, "handover"), rows(sim, "upload")
    assert up["t_start_s"] < ho["t_start_s"] < up["t_end_s"]
    inside = [e for e in rows(sim, "idle") if up["t_start_s"] <= e["t_start_s"] < up["t_end_s"]]
    assert [(e["t_start_s"], e["t_end_s"]) for e in inside] == [(ho["t_start_s"], ho["t_start_s"] + INTERRUPT)]
    assert inside[0]["energy_j"] == pytest.approx(IDLE_W * INTERRUPT, rel=1e-9)
    p_w = 10 ** (23.0 / 10) / 1000
    assert up["energy_j"] == pytest.approx(p_w * (up["t_end_s"] - up["t_start_s"] - INTERRUPT), rel=1e-9)


def test_an_idle_interval_ending_as_the_battery_empties_empties_it():
    # Same instant: the interval that ends exactly when the battery's last joule goes drains it all
    # (status 'dropped'), leaving no crumb of round-off in the battery.
    import simpy

    from pwffsim.net.device import Battery, DeviceProfile
    from pwffsim.sim.idle import IdleMeter
    from pwffsim.sim.recorder import Recorder
    from pwffsim.sim.state import ClientOutcome

    class Dev:
        index, alive = 0, True
        profile = DeviceProfile("p", 1e9, 1e9, 1.0, 1e-28, 0.2, 0.1, 1.0, idle_power_w=0.3)
        battery = Battery(1.0)

    env, rec, out, emptied = simpy.Environment(), Recorder(None, lambda d: "c"), ClientOutcome(client=0), []
    meter = IdleMeter(env, Dev, rec, 0, out, emptied.append)
    meter.resume()
    env.run(until=1.0 / 0.3)  # stops before the empty-watch at the same instant fires
    assert meter.pause() == "dropped" and Dev.battery.level_j == 0.0 and out.energy_j == 1.0
    (row,) = rec.events
    assert row["kind"] == "idle" and row["status"] == "dropped" and row["t_end_s"] == pytest.approx(1.0 / 0.3)
    env.run(until=10.0)
    assert emptied == []  # the stale watch does nothing
