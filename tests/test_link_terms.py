"""The model terms beyond Yang et al. against their closed forms, formula by formula: receiver noise
figure, truncated Shannon (3GPP TR 36.942 A.1), Chen et al.'s packet error rate, the transmit drain
power with PA efficiency and circuit power, and a topology's per-base-station noise figure.  Each
expected value is written out here from the formula, never taken from the code."""
import math
from pathlib import Path

import numpy as np
import pytest

from pwffsim.net import channel as ch
from pwffsim.net.device import DeviceProfile, transmit_drain_power_w
from pwffsim.net.linkmodel import SHANNON, LinkAbstraction
from pwffsim.net.topology import TopologyError, load_topology, topology_from_dict, write_topology_graphml, \
    write_topology_toml

N0 = 10 ** (-174 / 10) / 1000  # W/Hz
TOPOLOGIES = Path(__file__).resolve().parents[1] / "topologies"


# ---------------------------------------------------------------------------- noise figure
def test_effective_noise_density_is_n0_times_noise_factor():
    for nf_db in (0.0, 5.0, 9.0, 2.5):
        assert ch.effective_noise_density_w_per_hz(N0, nf_db) == pytest.approx(N0 * 10 ** (nf_db / 10), rel=1e-14)
    assert ch.effective_noise_density_w_per_hz(N0, 0.0) == N0  # bit for bit: defaults keep the traces
    np.testing.assert_allclose(ch.effective_noise_density_w_per_hz(N0, np.array([3.0, 10.0])),
                               [N0 * 10 ** 0.3, N0 * 10.0], rtol=1e-14)
    with pytest.raises(ValueError):
        ch.effective_noise_density_w_per_hz(N0, -1.0)


def test_noise_figure_lowers_the_snr_by_its_db():
    p, g, b, nf_db = 0.2, 1e-11, 5e6, 7.0
    snr = ch.sinr_linear(p, g, N0, b)
    snr_nf = ch.sinr_linear(p, g, ch.effective_noise_density_w_per_hz(N0, nf_db), b)
    assert 10 * math.log10(snr) - 10 * math.log10(snr_nf) == pytest.approx(nf_db, rel=1e-12)


# ---------------------------------------------------------------------------- truncated Shannon
def truncated_by_hand(b, sinr, alpha, sinr_min_db, se_max):
    if 10 * math.log10(sinr) < sinr_min_db:
        return 0.0
    return min(alpha * b * math.log2(1 + sinr), b * se_max)


@pytest.mark.parametrize("sinr_db", [-15.0, -10.5, -9.9, 0.0, 5.0, 10.0, 14.0, 30.0])
def test_truncated_shannon_three_regions(sinr_db):
    b, alpha, smin_db, se_max = 1e6, 0.6, -10.0, 4.4
    sinr = 10 ** (sinr_db / 10)
    got = ch.truncated_shannon_rate_bps(b, sinr, alpha, 10 ** (smin_db / 10), se_max)
    assert got == pytest.approx(truncated_by_hand(b, sinr, alpha, smin_db, se_max), rel=1e-12, abs=0.0)
    link = LinkAbstraction.truncated(alpha, smin_db, se_max)
    assert link.rate_bps(b, sinr) == pytest.approx(got, rel=1e-15)


def test_truncated_shannon_hand_numbers():
    # SINR 3 -> log2(4) = 2 bit/s/Hz; alpha 0.4 -> 0.8 bit/s/Hz over 10 MHz = 8 Mbit/s (uplink table)
    assert ch.truncated_shannon_rate_bps(10e6, 3.0, 0.4, 0.1, 2.0) == pytest.approx(8e6, rel=1e-14)
    # SINR 1023 -> log2(1024) = 10; 0.4 x 10 = 4 > 2.0: capped at 2 bit/s/Hz -> 20 Mbit/s
    assert ch.truncated_shannon_rate_bps(10e6, 1023.0, 0.4, 0.1, 2.0) == pytest.approx(20e6, rel=1e-14)
    # below SINR_min (0.05 < 0.1): nothing
    assert ch.truncated_shannon_rate_bps(10e6, 0.05, 0.4, 0.1, 2.0) == 0.0
    # at SINR_min exactly: alpha B log2(1.1)
    assert ch.truncated_shannon_rate_bps(10e6, 0.1, 0.4, 0.1, 2.0) == pytest.approx(0.4 * 10e6 * math.log2(1.1))
    assert ch.truncated_shannon_rate_bps(0.0, 3.0, 0.4, 0.1, 2.0) == 0.0
    np.testing.assert_allclose(ch.truncated_shannon_rate_bps(10e6, np.array([0.05, 3.0, 1023.0]), 0.4, 0.1, 2.0),
                               [0.0, 8e6, 20e6], rtol=1e-14)
    with pytest.raises(ValueError):
        ch.truncated_shannon_rate_bps(10e6, 3.0, 0.0, 0.1, 2.0)


def test_shannon_link_is_the_shannon_kernel_bit_for_bit():
    p, g, b = 0.2, 3e-12, 4e6
    assert SHANNON.rate_bps(b, ch.sinr_linear(p, g, N0, b)) == ch.fdma_rate_bps(b, p, g, N0)


# ---------------------------------------------------------------------------- packet error rate
def test_packet_error_rate_is_chens_formula():
    m = 10 ** (0.023 / 10)
    for p, h, i_w, b in [(0.2, 1e-11, 0.0, 1e6), (0.1, 3e-12, 2e-14, 5e6), (0.01, 1e-13, 1e-15, 20e6)]:
        q_hand = 1 - math.exp(-m * (i_w + b * N0) / (p * h))  # Chen et al. 2021: q = 1 - exp(-m (I + B N0)/(P h))
        sinr = ch.sinr_linear(p, h, N0, b, i_w / b)
        assert ch.packet_error_rate(m, sinr) == pytest.approx(q_hand, rel=1e-12)
    assert ch.packet_error_rate(m, 0.0) == 1.0
    assert ch.packet_error_rate(m, math.inf) == 0.0
    np.testing.assert_allclose(ch.packet_error_rate(2.0, np.array([1.0, 4.0])),
                               [1 - math.exp(-2.0), 1 - math.exp(-0.5)], rtol=1e-14)
    with pytest.raises(ValueError):
        ch.packet_error_rate(0.0, 1.0)


# ---------------------------------------------------------------------------- transmit energy
def test_transmit_drain_power_is_p_over_eta_plus_circuit():
    assert transmit_drain_power_w(0.2, 0.35, 0.1) == pytest.approx(0.2 / 0.35 + 0.1, rel=1e-15)
    assert transmit_drain_power_w(0.2) == 0.2  # eta 1, P_c 0: Yang et al.'s p, bit for bit
    prof = DeviceProfile("x", 1e9, 1e9, 1.0, 1e-28, 0.1995, 0.1, 10.0, pa_efficiency=0.5, circuit_power_w=0.05)
    assert prof.tx_drain_power_w == pytest.approx(0.1995 / 0.5 + 0.05, rel=1e-15)
    for bad in [(0.2, 0.0, 0.0), (0.2, 1.5, 0.0), (0.2, 0.5, -0.1)]:
        with pytest.raises(ValueError):
            transmit_drain_power_w(*bad)


# ---------------------------------------------------------------------------- topology noise figure
def _topo(**bs_extra):
    return {"name": "t", "base_stations": [{"id": "bs0", "x_m": 0.0, "y_m": 0.0, **bs_extra},
                                           {"id": "bs1", "x_m": 100.0, "y_m": 0.0}],
            "servers": [{"id": "cloud", "kind": "cloud"}],
            "links": [{"a": "bs0", "b": "cloud", "latency_s": 0.0, "capacity_bps": 1e9},
                      {"a": "bs1", "b": "cloud", "latency_s": 0.0, "capacity_bps": 1e9}]}


def test_topology_noise_figure_per_base_station(tmp_path):
    topo = topology_from_dict(_topo(noise_figure_db=5))
    assert [b.noise_figure_db for b in topo.base_stations] == [5.0, None]
    write_topology_toml(topo, tmp_path / "t.toml")
    write_topology_graphml(topo, tmp_path / "t.graphml")
    assert load_topology(tmp_path / "t.toml") == topo
    assert load_topology(tmp_path / "t.graphml") == topo
    with pytest.raises(TopologyError, match=r"base_stations\[0\]\.noise_figure_db"):
        topology_from_dict(_topo(noise_figure_db=-1.0))


def test_shipped_38901_topologies_use_5_db_at_the_base_station():
    for name in ("hex7_uma", "hex7_umi", "hierarchical"):
        assert {b.noise_figure_db for b in load_topology(TOPOLOGIES / f"{name}.toml").base_stations} == {5.0}
    assert {b.noise_figure_db for b in load_topology(TOPOLOGIES / "single_cell.toml").base_stations} == {None}
