"""The radio terms beyond Yang et al. through the simulator, each against its closed form computed
here: receiver noise figures (cell, device profile, topology), the downlink as a multicast at its
worst receiver's rate and as unicast FDMA (asynchronous), the truncated Shannon bound, and Chen et
al.'s packet errors with retransmission (each attempt's draw from its own keyed stream)."""
import math

import numpy as np
import pytest

from pwffsim.net.radio import SharedBand, Transfer
from pwffsim.net.device import Battery
from pwffsim.scenario import scenario_from_dict
from pwffsim.sim.engine import Simulation
from pwffsim.sim.packets import PacketErrors

from conftest import StubLearner, event_rows as rows

B_UL, B_DL = 20e6, 10e6
P_DBM, BS_DBM, N0_DBM_HZ = 23.0, 46.0, -174.0
CPU_HZ, FPC, RX_W = 1.5e9, 4.0, 0.1
PAYLOAD, FLOPS = 400_000, 2e10
BITS = 8 * PAYLOAD
STREAM_PACKET_ERRORS = 10  # the stream key documented in pwffsim/sim/packets.py


def w(dbm):
    return 10 ** ((dbm - 30) / 10)


def gain(d_m):
    return 10 ** (-(128.1 + 37.6 * math.log10(d_m / 1000)) / 10)


def snr(p_w, d_m, b_hz, nf_db=0.0):
    return p_w * gain(d_m) / (w(N0_DBM_HZ) * 10 ** (nf_db / 10) * b_hz)


def shannon(b_hz, s):
    return b_hz * math.log2(1 + s)


def scenario(positions, channel=None, cell=None, profile=None, **fl):
    return scenario_from_dict({
        "cells": [{"uplink_bandwidth_hz": B_UL, "downlink_bandwidth_hz": B_DL, "bs_tx_power_dbm": BS_DBM,
                   "noise_density_dbm_hz": N0_DBM_HZ, **(cell or {})}],
        "devices": {"count": len(positions), "placement": "explicit", "positions_m": positions,
                    "profiles": [{"cpu_hz": CPU_HZ, "flops_per_cycle": FPC, "tx_power_dbm": P_DBM, "rx_power_w": RX_W,
                                  "battery_j": 1e6, **(profile or {})}]},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0, **(channel or {})},
        "fl": {"rounds": 1, "clients_per_round": len(positions), "aggregation_time_s": 0.0, **fl},
        "pwff": {"scheme": "fedavg-all"},
    })


def run(sc):
    sim = Simulation(sc, learner=StubLearner(PAYLOAD, FLOPS))
    sim.run()
    return sim


def duration(e):
    return e["t_end_s"] - e["t_start_s"]


# ---------------------------------------------------------------------------- noise figures
def test_noise_figures_of_the_base_station_and_of_the_device():
    d = 300.0
    sim = run(scenario([[d, 0.0]], cell={"noise_figure_db": 5.0}, profile={"noise_figure_db": 9.0}))
    (dl,), (ul,) = rows(sim, "download"), rows(sim, "upload")
    assert duration(dl) == pytest.approx(BITS / shannon(B_DL, snr(w(BS_DBM), d, B_DL, nf_db=9.0)), rel=1e-9)
    assert duration(ul) == pytest.approx(BITS / shannon(B_UL, snr(w(P_DBM), d, B_UL, nf_db=5.0)), rel=1e-9)
    # 0 dB (the default) is N0 itself
    base = run(scenario([[d, 0.0]]))
    assert duration(rows(base, "upload")[0]) == pytest.approx(BITS / shannon(B_UL, snr(w(P_DBM), d, B_UL)), rel=1e-9)


def test_topology_base_stations_set_their_noise_figure_or_take_cells0s(tmp_path):
    topo = tmp_path / "two.toml"
    topo.write_text('name = "two"\n'
                    '[[base_stations]]\nid = "a"\nx_m = 0.0\ny_m = 0.0\nnoise_figure_db = 7.0\n'
                    '[[base_stations]]\nid = "b"\nx_m = 500.0\ny_m = 0.0\n'
                    '[[servers]]\nid = "cloud"\nkind = "cloud"\n'
                    '[[links]]\na = "a"\nb = "cloud"\nlatency_s = 0.0\ncapacity_bps = 1e9\n'
                    '[[links]]\na = "b"\nb = "cloud"\nlatency_s = 0.0\ncapacity_bps = 1e9\n')
    sc = scenario_from_dict({"topology": str(topo), "cells": [{"noise_figure_db": 3.0}], "devices": {"count": 2},
                             "fl": {"clients_per_round": 2}})
    sim = Simulation(sc, learner=StubLearner(PAYLOAD, FLOPS))
    n0 = w(N0_DBM_HZ)
    assert sim.cells[0].uplink.noise_density_w_per_hz == pytest.approx(n0 * 10 ** 0.7, rel=1e-14)
    assert sim.cells[1].uplink.noise_density_w_per_hz == pytest.approx(n0 * 10 ** 0.3, rel=1e-14)
    assert [c.downlink.noise_density_w_per_hz for c in sim.cells] == pytest.approx([n0, n0], rel=1e-14)


# ---------------------------------------------------------------------------- downlink as it is sent
DISTANCES = (100.0, 250.0, 400.0)


def test_per_receiver_downlink_is_the_default_each_at_its_own_snr():
    sim = run(scenario([[d, 0.0] for d in DISTANCES]))
    for k, d in enumerate(DISTANCES):
        (dl,) = rows(sim, "download", k)
        assert duration(dl) == pytest.approx(BITS / shannon(B_DL, snr(w(BS_DBM), d, B_DL)), rel=1e-9)


def test_multicast_broadcast_runs_at_the_worst_receivers_rate():
    sim = run(scenario([[d, 0.0] for d in DISTANCES], channel={"downlink": "multicast"}))
    r_worst = min(shannon(B_DL, snr(w(BS_DBM), d, B_DL)) for d in DISTANCES)
    for dl in rows(sim, "download"):
        assert dl["t_start_s"] == 0.0 and dl["t_end_s"] == pytest.approx(BITS / r_worst, rel=1e-9)
        assert dl["rate_bps"] == pytest.approx(r_worst, rel=1e-9)


def test_multicast_speeds_up_when_its_worst_receiver_leaves():
    # The far receiver's battery empties half-way through the multicast: the other two then go on at
    # the rate of the worse of them, with the bits they have left.
    rates = [shannon(B_DL, snr(w(BS_DBM), d, B_DL)) for d in DISTANCES]
    t_half = 0.5 * BITS / rates[2]
    sc = scenario([[d, 0.0] for d in DISTANCES], channel={"downlink": "multicast"})
    profiles = [sc.devices.profiles[0].model_copy(update={"name": "full"}),
                sc.devices.profiles[0].model_copy(update={"name": "weak", "battery_j": RX_W * t_half})]
    sc.devices.profiles = profiles
    sc.devices.profile_of_device = ["full", "full", "weak"]
    sim = run(sc)
    (drop,) = rows(sim, "dropout")
    assert drop["client"] == 2 and drop["t_start_s"] == pytest.approx(t_half, rel=1e-9)
    t_end = t_half + (BITS - rates[2] * t_half) / rates[1]
    for k in (0, 1):
        assert rows(sim, "download", k)[0]["t_end_s"] == pytest.approx(t_end, rel=1e-9)


def test_multicast_leaves_behind_a_receiver_it_cannot_reach():
    # Truncated Shannon with SINR_min = 40 dB: the far receiver's downlink SNR is below it (rate 0, it
    # stalls until the deadline), the others go on at the worst rate among them (both capped: 4.4 B).
    s_dl = [10 * math.log10(snr(w(BS_DBM), d, B_DL)) for d in DISTANCES]
    assert s_dl[2] < 40.0 < min(s_dl[:2]) and min(0.6 * math.log2(1 + 10 ** (s / 10)) for s in s_dl[:2]) > 4.4
    sim = run(scenario([[d, 0.0] for d in DISTANCES], channel={"downlink": "multicast", **TRUNCATED,
                                                               "truncated_sinr_min_db": 40.0},
                       policy="deadline", deadline_s=5.0))
    for k in (0, 1):
        assert rows(sim, "download", k)[0]["t_end_s"] == pytest.approx(BITS / (4.4 * B_DL), rel=1e-9)
    (far,) = rows(sim, "download", 2)
    assert far["status"] == "late" and far["t_end_s"] == pytest.approx(5.0) and far["energy_j"] == 0.0


def test_asynchronous_downloads_share_the_downlink_by_fdma_with_the_power_split():
    near, far = 100.0, 300.0
    sim = run(scenario([[near, 0.0], [far, 0.0]], channel={"downlink": "multicast"}, policy="fedasync", rounds=1))
    # Two unicast downloads at once: B/2 each, P/2 each (the SNR p g / (N0 b) is that of the whole band).
    r_near2 = shannon(B_DL / 2, snr(w(BS_DBM) / 2, near, B_DL / 2))
    r_far2 = shannon(B_DL / 2, snr(w(BS_DBM) / 2, far, B_DL / 2))
    r_far1 = shannon(B_DL, snr(w(BS_DBM), far, B_DL))
    t1 = BITS / r_near2
    assert rows(sim, "download", 0)[0]["t_end_s"] == pytest.approx(t1, rel=1e-9)
    assert rows(sim, "download", 1)[0]["t_end_s"] == pytest.approx(t1 + (BITS - r_far2 * t1) / r_far1, rel=1e-9)


# ---------------------------------------------------------------------------- truncated Shannon
TRUNCATED = {"link_abstraction": "truncated-shannon"}


@pytest.mark.parametrize("d_m, capped", [(200.0, True), (480.0, False)])
def test_truncated_shannon_upload_and_download_times(d_m, capped):
    sim = run(scenario([[d_m, 0.0]], channel=TRUNCATED))
    s_ul, s_dl = snr(w(P_DBM), d_m, B_UL), snr(w(BS_DBM), d_m, B_DL)
    assert (0.4 * math.log2(1 + s_ul) > 2.0) == capped  # TR 36.942 A.1 uplink: alpha 0.4, 2.0 bit/s/Hz
    r_ul = B_UL * min(0.4 * math.log2(1 + s_ul), 2.0)
    r_dl = B_DL * min(0.6 * math.log2(1 + s_dl), 4.4)  # downlink: alpha 0.6, 4.4 bit/s/Hz
    assert duration(rows(sim, "upload")[0]) == pytest.approx(BITS / r_ul, rel=1e-9)
    assert duration(rows(sim, "download")[0]) == pytest.approx(BITS / r_dl, rel=1e-9)


def test_truncated_shannon_below_sinr_min_sends_nothing():
    d = 480.0
    assert 10 * math.log10(snr(w(P_DBM), d, B_UL)) < 20.0 < 10 * math.log10(snr(w(BS_DBM), d, B_DL))
    sim = run(scenario([[d, 0.0]], channel={**TRUNCATED, "truncated_sinr_min_db": 20.0}, policy="deadline",
                       deadline_s=10.0))
    (up,) = rows(sim, "upload")
    assert up["status"] == "late" and up["t_end_s"] == pytest.approx(10.0) and up["rate_bps"] == 0.0
    assert up["energy_j"] == 0.0  # a stalled transfer draws no power


# ---------------------------------------------------------------------------- packet errors
PER_DB = 7.5  # m = 10^0.75 ~ 5.6: with an SNR ~ 6 at 480 m, q ~ 0.6


def per_by_hand(d_m):
    return 1 - math.exp(-(10 ** (PER_DB / 10)) * (w(N0_DBM_HZ) * B_UL) / (w(P_DBM) * gain(d_m)))


def attempts_by_hand(seed, q, device=0, round_index=0):
    a = 0
    while np.random.default_rng(np.random.SeedSequence([seed, STREAM_PACKET_ERRORS, device, round_index, a])).random() < q:
        a += 1
    return a + 1


def test_lost_uploads_are_sent_again_each_attempt_a_row():
    d = 480.0
    q = per_by_hand(d)
    seed = next(s for s in range(200) if attempts_by_hand(s, q) >= 3)
    sc = scenario([[d, 0.0]], channel={"packet_errors": True, "per_waterfall_db": PER_DB})
    sc.seed = seed
    sim = run(sc)
    ups = rows(sim, "upload")
    n = attempts_by_hand(seed, q)
    t_ul = BITS / shannon(B_UL, snr(w(P_DBM), d, B_UL))
    assert [u["status"] for u in ups] == ["error"] * (n - 1) + ["ok"]
    for a, u in enumerate(ups):
        assert duration(u) == pytest.approx(t_ul, rel=1e-9) and u["energy_j"] == pytest.approx(w(P_DBM) * t_ul, rel=1e-9)
    assert ups[-1]["t_end_s"] - ups[0]["t_start_s"] == pytest.approx(n * t_ul, rel=1e-9)
    assert sim.rounds[0]["aggregated"] == 1
    # Common random numbers: another policy on the same seed sees the same draws.
    sc_deadline = sc.model_copy(deep=True)
    sc_deadline.fl.deadline_s = 1e6
    sc_deadline.fl.policy = "deadline"
    assert [u["status"] for u in rows(run(sc_deadline), "upload")] == [u["status"] for u in ups]


def test_empirical_failure_frequency_matches_the_packet_error_rate():
    per = PacketErrors(seed=5, waterfall_db=PER_DB)
    s = 6.0
    q = 1 - math.exp(-(10 ** (PER_DB / 10)) / s)
    n = 40_000
    fails = sum(per.fails(k % 200, k // 200, 0, 1.0 / s) for k in range(n))
    assert abs(fails / n - q) < 4 * math.sqrt(q * (1 - q) / n)


def test_an_attempts_sinr_is_the_bit_weighted_harmonic_mean_of_what_it_saw():
    import simpy

    env = simpy.Environment()
    n0, b = w(N0_DBM_HZ), 1e6
    band = SharedBand(env, b, n0)
    g_a, g_b, p = 1e-12, 4e-12, 0.2
    a = Transfer(device=0, bits=4e6, snr_power_w=p, drain_power_w=p, battery=Battery(1e9), gain=lambda t: g_a)
    bb = Transfer(device=1, bits=1e6, snr_power_w=p, drain_power_w=p, battery=Battery(1e9), gain=lambda t: g_b)
    band.start(a)
    band.start(bb)
    env.run()
    s_a2, s_b2, s_a1 = p * g_a / (n0 * b / 2), p * g_b / (n0 * b / 2), p * g_a / (n0 * b)
    t_b = 1e6 / ((b / 2) * math.log2(1 + s_b2))  # b's upload ends; a's first bits went at its half-band SINR
    bits_1 = (b / 2) * math.log2(1 + s_a2) * t_b
    assert a.mean_inverse_sinr == pytest.approx((bits_1 / s_a2 + (4e6 - bits_1) / s_a1) / 4e6, rel=1e-9)
    assert bb.mean_inverse_sinr == pytest.approx(1 / s_b2, rel=1e-12)
