"""An upload carried across a handover (``in_flight = "continue"``), timed by hand.

The device stands still at X_A (served by cell A), jumps between two position samples to X_B (much
nearer cell B), and stands still again: sampled positions are therefore known exactly, the gain is
piecewise constant with known values, and the A3 rule fires exactly ``time_to_trigger_s`` after the
first sample at X_B.  Fading and shadowing are off, the path loss is the 128.1 + 37.6 log10(d_km)
macro model, and cell B is idle (no other device), so every rate is the single-user Shannon rate
``B log2(1 + p g / (N0 B))`` written out below with ``math`` (never the package's helpers).

Time line (all times are exact binary fractions, so the sampling instants are exact floats):

    0 .. T_DL          download from A (whole downlink band, BS power)
    T_DL .. T_UP       compute: FLOPs / (cpu_hz x flops_per_cycle)
    T_UP .. T_JUMP     upload on A at d = X_A             (rate R1)
    T_JUMP .. T_HO     upload on A at d = X_B             (rate R2; A3 condition holds, time-to-trigger)
    T_HO .. T_HO + I   handover interruption: nothing sent
    T_HO + I .. end    the remaining bits on B at d = 500 - X_B  (rate R3)
"""
import math

import pytest

from pwffsim.scenario import scenario_from_dict
from pwffsim.sim.engine import Simulation

from conftest import StubLearner

X_A, X_B, CELL_B_X = 150.0, 420.0, 500.0
STEP, TTT, INTERRUPT, HYST = 0.25, 0.5, 0.25, 3.0
T_JUMP = 5.0                        # first position sample at X_B (the previous one, 4.75 s, is at X_A)
UL_BW, DL_BW = 1e5, 20e6            # Hz
P_UE_DBM, P_BS_DBM, N0_DBM_HZ = 23.0, 46.0, -174.0
CPU_HZ, FLOPS = 1e9, 2e9            # flops_per_cycle = 1: 2 s of compute
PAYLOAD = 2_000_000                 # bytes each way


def _w(dbm):
    return 10 ** (dbm / 10) / 1000


def _gain(d_m):
    return 10 ** (-(128.1 + 37.6 * math.log10(d_m / 1000)) / 10)


def _rate(bw_hz, p_dbm, d_m):
    return bw_hz * math.log2(1 + _w(p_dbm) * _gain(d_m) / (_w(N0_DBM_HZ) * bw_hz))


def _scenario(tmp_path, in_flight="continue"):
    trace = tmp_path / "jump.csv"
    trace.write_text(f"t,id,x,y\n0,car,{X_A},0\n{T_JUMP - STEP},car,{X_A},0\n{T_JUMP},car,{X_B},0\n")
    return scenario_from_dict({
        "cells": [{"id": "A", "x_m": 0.0, "uplink_bandwidth_hz": UL_BW, "downlink_bandwidth_hz": DL_BW,
                   "bs_tx_power_dbm": P_BS_DBM, "noise_density_dbm_hz": N0_DBM_HZ},
                  {"id": "B", "x_m": CELL_B_X, "uplink_bandwidth_hz": UL_BW, "downlink_bandwidth_hz": DL_BW,
                   "bs_tx_power_dbm": P_BS_DBM, "noise_density_dbm_hz": N0_DBM_HZ}],
        "devices": {"count": 1, "placement": "explicit", "positions_m": [[X_A, 0.0]],
                    "profiles": [{"battery_j": 1e6, "cpu_hz": CPU_HZ, "flops_per_cycle": 1.0,
                                  "tx_power_dbm": P_UE_DBM}]},
        "channel": {"path_loss": "macro-128.1-37.6", "fading": "none", "shadowing_sigma_db": 0.0,
                    "interference": False},
        "mobility": {"model": "trace", "trace": str(trace), "sample_step_s": STEP},
        "handover": {"hysteresis_db": HYST, "time_to_trigger_s": TTT, "interruption_s": INTERRUPT,
                     "in_flight": in_flight},
        "fl": {"rounds": 1, "clients_per_round": 1, "aggregation_time_s": 0.0},
        "pwff": {"scheme": "fedavg-all"},
    })


def test_hand_computed_setup_is_what_the_test_claims():
    """The hand computation's premises: A3 holds at X_B but not at X_A, the upload starts on A before
    the jump, and about half the bits are left at the handover (so losing some would show)."""
    pl = lambda d: 128.1 + 37.6 * math.log10(d / 1000)  # noqa: E731
    assert pl(X_A) < pl(CELL_B_X - X_A)                        # at X_A, A is the strongest
    assert pl(X_B) - pl(CELL_B_X - X_B) > HYST                 # at X_B, B beats A by more than the hysteresis
    t_up = 8 * PAYLOAD / _rate(DL_BW, P_BS_DBM, X_A) + FLOPS / CPU_HZ
    assert t_up < T_JUMP - STEP
    sent = _rate(UL_BW, P_UE_DBM, X_A) * (T_JUMP - t_up) + _rate(UL_BW, P_UE_DBM, X_B) * TTT
    assert 0.2 < sent / (8 * PAYLOAD) < 0.8


@pytest.mark.parametrize("in_flight", ["continue", "restart"])
def test_upload_end_time_across_a_handover_by_hand(tmp_path, in_flight):
    sim = Simulation(_scenario(tmp_path, in_flight), learner=StubLearner(PAYLOAD, flops=FLOPS))
    sim.run()
    bits = 8.0 * PAYLOAD

    t_dl = bits / _rate(DL_BW, P_BS_DBM, X_A)
    t_up = t_dl + FLOPS / CPU_HZ
    t_ho = T_JUMP + TTT
    r1 = _rate(UL_BW, P_UE_DBM, X_A)                 # on A, at X_A
    r2 = _rate(UL_BW, P_UE_DBM, X_B)                 # still on A, at X_B (distance X_B from A)
    r3 = _rate(UL_BW, P_UE_DBM, CELL_B_X - X_B)      # on B, at X_B
    sent_on_a = r1 * (T_JUMP - t_up) + r2 * (t_ho - T_JUMP)
    left = bits - sent_on_a if in_flight == "continue" else bits
    t_end = t_ho + INTERRUPT + left / r3

    (ho,) = [e for e in sim.events if e["kind"] == "handover"]
    assert (ho["cell_from"], ho["cell"]) == ("A", "B")
    assert ho["t_start_s"] == pytest.approx(t_ho, rel=1e-12)
    assert ho["t_end_s"] == pytest.approx(t_ho + INTERRUPT, rel=1e-12)

    (dl,) = [e for e in sim.events if e["kind"] == "download"]
    assert dl["t_end_s"] == pytest.approx(t_dl, rel=1e-9)
    (up,) = [e for e in sim.events if e["kind"] == "upload"]
    assert up["bytes"] == PAYLOAD
    assert up["status"] == "ok" and up["cell"] == "B"
    assert up["t_start_s"] == pytest.approx(t_up, rel=1e-9)
    assert up["t_end_s"] == pytest.approx(t_end, rel=1e-9)
    # the radio draws p while on the air, not during the interruption
    airtime = (t_ho - t_up) + (t_end - t_ho - INTERRUPT)
    assert up["energy_j"] == pytest.approx(_w(P_UE_DBM) * airtime, rel=1e-9)
    assert sim.rounds[0]["aggregated"] == 1
