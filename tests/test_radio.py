"""FDMA band sharing and fading, against hand-computed schedules and closed forms."""
import math

import numpy as np
import pytest
import simpy
from scipy.special import exp1

from pwffsim.net.channel import BlockFading
from pwffsim.net.device import Battery
from pwffsim.net.radio import SharedBand, Transfer

B = 10e6
N0 = 10 ** (-174 / 10) / 1000  # W/Hz
P = 0.2  # W
G = 1e-11  # linear gain


def rate(bw, p=P, g=G):
    return bw * math.log2(1 + p * g / (N0 * bw))


def run_transfers(specs, shared=True):
    """specs: list of (start_s, bits, battery_j). Returns the transfers after the run."""
    env = simpy.Environment()
    band = SharedBand(env, B, N0, shared=shared)
    trs = []

    def starter(t0, tr):
        yield env.timeout(t0)
        yield band.start(tr)

    for t0, bits, bat in specs:
        tr = Transfer(device=len(trs), bits=bits, snr_power_w=P, drain_power_w=P, battery=Battery(bat),
                      gain=lambda t: G)
        trs.append(tr)
        env.process(starter(t0, tr))
    env.run()
    return trs


def test_single_upload_time_matches_shannon():
    (tr,) = run_transfers([(0.0, 8e6, 1e9)])
    assert tr.status == "ok"
    assert tr.duration_s == pytest.approx(8e6 / rate(B), rel=1e-9)
    assert tr.energy_j == pytest.approx(P * 8e6 / rate(B), rel=1e-9)


def test_fdma_two_uploads_follow_hand_schedule():
    s1, s2 = 2e6, 5e6
    a, b = run_transfers([(0.0, s1, 1e9), (0.0, s2, 1e9)])
    r_half = rate(B / 2)  # noise over half the band
    t1 = s1 / r_half
    t2 = t1 + (s2 - r_half * t1) / rate(B)  # the second gets the whole band, noise over B
    assert a.t_end_s == pytest.approx(t1, rel=1e-9)
    assert b.t_end_s == pytest.approx(t2, rel=1e-9)
    assert b.bits_left == 0.0
    # the noise term really changes: a schedule that ignored it would be measurably off
    assert abs(t2 - (t1 + (s2 - r_half * t1) / (2 * r_half))) / t2 > 1e-3


def test_fdma_staggered_start_carries_remaining_bits():
    s1, s2, t0 = 4e6, 1e6, 0.05
    a, b = run_transfers([(0.0, s1, 1e9), (t0, s2, 1e9)])
    left_a = s1 - rate(B) * t0
    t_b = t0 + s2 / rate(B / 2)
    left_a -= rate(B / 2) * (t_b - t0)
    t_a = t_b + left_a / rate(B)
    assert b.t_end_s == pytest.approx(t_b, rel=1e-9)
    assert a.t_end_s == pytest.approx(t_a, rel=1e-9)


def test_unshared_band_gives_each_receiver_the_whole_band():
    a, b = run_transfers([(0.0, 1e6, 1e9), (0.0, 3e6, 1e9)], shared=False)
    assert a.duration_s == pytest.approx(1e6 / rate(B), rel=1e-9)
    assert b.duration_s == pytest.approx(3e6 / rate(B), rel=1e-9)


def test_battery_empties_mid_upload_at_exact_time():
    bits = 8e6
    full_e = P * bits / rate(B)
    (tr,) = run_transfers([(0.0, bits, 0.4 * full_e)])
    assert tr.status == "dropped"
    assert tr.t_end_s == pytest.approx(0.4 * full_e / P, rel=1e-9)
    assert tr.energy_j == pytest.approx(0.4 * full_e, rel=1e-12)
    assert tr.battery.level_j == 0.0
    assert tr.bits_left == pytest.approx(0.6 * bits, rel=1e-9)


def test_upload_across_rayleigh_blocks_averages_to_ergodic_capacity():
    """A long upload over >= 1e5 fading blocks delivers at the ergodic capacity B e^{1/rho} E1(1/rho)/ln 2."""
    tc = 1e-3
    rho = 10.0  # mean SNR
    g_mean = rho * N0 * B / P
    env = simpy.Environment()
    band = SharedBand(env, B, N0)
    fad = BlockFading("rayleigh", tc, np.random.default_rng(7))
    c_erg = B * math.exp(1 / rho) * exp1(1 / rho) / math.log(2)
    n_blocks = 100_000
    bits = c_erg * n_blocks * tc
    tr = Transfer(device=0, bits=bits, snr_power_w=P, drain_power_w=P, battery=Battery(1e12),
                  gain=lambda t: g_mean * fad.gain(t), next_change_s=fad.next_boundary_s)
    band.start(tr)
    env.run()
    assert tr.status == "ok"
    assert tr.duration_s == pytest.approx(n_blocks * tc, rel=0.01)
    assert band.rate_updates >= n_blocks * 0.98
