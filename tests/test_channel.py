"""Channel physics and placement against closed forms and hand computations."""

import math

import numpy as np
import pytest
from scipy import integrate

from pwffsim.net import channel as ch
from pwffsim.net.placement import place_uniform_disc, place_uniform_square

C = 299_792_458.0


# ---------------------------------------------------------------------------- conversions
def test_dbm_w_conversions():
    assert ch.dbm_to_w(30.0) == pytest.approx(1.0)
    assert ch.dbm_to_w(0.0) == pytest.approx(1e-3)
    assert ch.dbm_to_w(23.0) == pytest.approx(0.19952623149688797)
    assert ch.w_to_dbm(1.0) == pytest.approx(30.0)
    assert ch.w_to_dbm(0.1) == pytest.approx(20.0)
    assert ch.w_to_dbm(0.0) == -math.inf
    assert ch.db_to_linear(10.0) == pytest.approx(10.0)
    assert ch.db_to_linear(-3.0) == pytest.approx(0.5011872336272722)
    assert ch.linear_to_db(100.0) == pytest.approx(20.0)
    np.testing.assert_allclose(ch.db_to_linear(np.array([0.0, 20.0])), [1.0, 100.0])
    np.testing.assert_allclose(ch.linear_to_db(np.array([1.0, 1000.0])), [0.0, 30.0])
    with pytest.raises(ValueError):
        ch.w_to_dbm(-1.0)


def test_noise_power():
    # -174 dBm/Hz over 1 MHz = -114 dBm = 10^(-11.4) mW = 10^(-14.4) W
    assert ch.noise_power_w(-174.0, 1e6) == pytest.approx(10 ** -14.4, rel=1e-12)
    assert ch.noise_power_w(-174.0, 1e6) == pytest.approx(3.981071705534973e-15, rel=1e-12)
    assert ch.noise_power_w(-174.0, 0.0) == 0.0


# ---------------------------------------------------------------------------- rates
def test_shannon_rate_hand_number():
    # 1 MHz, SNR 15 -> log2(16) = 4 -> 4 Mbit/s
    assert ch.shannon_rate_bps(1e6, 15.0) == pytest.approx(4e6)
    assert ch.shannon_rate_bps(0.0, 15.0) == 0.0
    assert ch.shannon_rate_bps(20e6, 0.0) == 0.0


def test_snr_and_fdma_rate_hand_number():
    # p = 0.1 W (20 dBm), path loss 100 dB -> g = 1e-10, N0 = -174 dBm/Hz, B = 1 MHz
    p, g, b = 0.1, 1e-10, 1e6
    n0 = 10 ** (-174 / 10) / 1000  # W/Hz
    snr = p * g / (n0 * b)  # = 1e-11 / 10^(-14.4) = 10^3.4
    assert snr == pytest.approx(10 ** 3.4)
    assert ch.sinr_linear(p, g, n0, b) == pytest.approx(10 ** 3.4)
    assert ch.fdma_rate_bps(b, p, g, n0) == pytest.approx(b * math.log2(1 + 10 ** 3.4))
    assert ch.fdma_rate_bps(b, p, g, n0) == pytest.approx(11.29513e6, rel=1e-6)  # 11 + log2(2512.886/2048)
    assert ch.fdma_rate_bps(0.0, p, g, n0) == 0.0
    assert ch.fdma_rate_bps(b, 0.0, g, n0) == 0.0
    with pytest.raises(ValueError):
        ch.fdma_rate_bps(-1.0, p, g, n0)
    # interference adds to the noise density: I0 = 3 N0 quarters the SNR
    assert ch.fdma_rate_bps(b, p, g, n0, 3 * n0) == pytest.approx(b * math.log2(1 + 10 ** 3.4 / 4))
    with pytest.raises(ValueError):
        ch.fdma_rate_bps(b, p, g, n0, -1e-21)


def test_sinr_with_interference():
    # p = 0.2 W, g = 1e-10, N0 = 4e-21 W/Hz, B = 1 MHz -> N = 4e-15 W; I0 = 6e-21 W/Hz -> I = 6e-15 W
    assert ch.sinr_linear(0.2, 1e-10, 4e-21, 1e6) == pytest.approx(2e-11 / 4e-15, rel=1e-12)
    assert ch.sinr_linear(0.2, 1e-10, 4e-21, 1e6, 6e-21) == pytest.approx(2e-11 / 1e-14, rel=1e-12)
    assert ch.sinr_linear(0.0, 1e-10, 4e-21, 1e6, 1e-21) == 0.0
    assert ch.sinr_linear(0.2, 1e-10, 0.0, 1e6, 0.0) == math.inf
    assert ch.sinr_linear(0.2, 1e-10, 4e-21, 0.0) == math.inf  # no bandwidth, no noise
    # no gain, no signal, whatever the power (inf x 0 is 0 here, never NaN), with or without noise
    assert ch.sinr_linear(math.inf, 0.0, 4e-21, 1e6) == ch.sinr_linear(math.inf, 0.0, 0.0, 1e6) == 0.0
    assert ch.fdma_rate_bps(1e6, math.inf, 0.0, 4e-21) == 0.0
    np.testing.assert_array_equal(ch.sinr_linear(np.array([math.inf, 0.2]), 0.0, 0.0, 1e6), [0.0, 0.0])
    np.testing.assert_allclose(ch.sinr_linear(np.array([0.1, 0.2]), 1e-10, 4e-21, 1e6, 6e-21),
                               [1000.0, 2000.0])
    with pytest.raises(ValueError):
        ch.sinr_linear(0.2, 1e-10, 4e-21, 1e6, -1e-21)
    with pytest.raises(ValueError):
        ch.sinr_linear(0.2, math.nan, 4e-21, 1e6)


def test_fdma_rate_is_shannon_of_sinr_bit_for_bit_scalars_and_arrays():
    rng = np.random.default_rng(5)
    b = 10 ** rng.uniform(4, 8, 200)
    p = 10 ** rng.uniform(-3, 0, 200)
    g = 10 ** rng.uniform(-16, -6, 200)
    n0 = 10 ** rng.uniform(-21, -20, 200)
    i0 = 10 ** rng.uniform(-23, -18, 200)
    arr = ch.fdma_rate_bps(b, p, g, n0, i0)
    for k in range(200):
        one = ch.fdma_rate_bps(float(b[k]), float(p[k]), float(g[k]), float(n0[k]), float(i0[k]))
        assert isinstance(one, float)
        assert one == arr[k] == ch.shannon_rate_bps(b[k], ch.sinr_linear(p[k], g[k], n0[k], b[k], i0[k]))
    # the rate uses numpy's log2 (the array path's), not math.log2, which differs in the last bit
    np.testing.assert_array_equal(arr, b * np.log2(1.0 + p * g / ((n0 + i0) * b)))


# ---------------------------------------------------------------------------- Rayleigh closed forms
@pytest.mark.parametrize("snr_db", [-10.0, 0.0, 10.0, 20.0, 30.0])
def test_rayleigh_capacity_vs_quadrature(snr_db):
    rho = 10 ** (snr_db / 10)
    val, _ = integrate.quad(lambda x: math.log2(1 + rho * x) * math.exp(-x), 0, math.inf, limit=200)
    assert ch.rayleigh_ergodic_capacity_bps(1.0, rho) == pytest.approx(val, rel=1e-7)
    assert ch.rayleigh_ergodic_capacity_bps(5e6, rho) == pytest.approx(5e6 * val, rel=1e-7)


def test_rayleigh_capacity_tiny_snr_asymptote():
    # 1/rho = 1e4 >> 700: E[log2(1+rho X)] ~ rho (1 - rho*E[X^2]/2 ...)/ln2 = (rho - rho^2)/ln 2 + O(rho^3)
    rho = 1e-4
    expected = (rho - rho**2 + 2 * rho**3) / math.log(2)
    assert ch.rayleigh_ergodic_capacity_bps(1.0, rho) == pytest.approx(expected, rel=1e-10)
    # continuity across the switch at 1/rho = 700
    a = ch.rayleigh_ergodic_capacity_bps(1.0, 1 / 699.999)
    b = ch.rayleigh_ergodic_capacity_bps(1.0, 1 / 700.001)
    assert a == pytest.approx(b, rel=1e-5)
    assert ch.rayleigh_ergodic_capacity_bps(1.0, 0.0) == 0.0


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_rayleigh_block_fading_mean_rate_matches_ergodic_capacity(snr_db):
    rho = 10 ** (snr_db / 10)
    b = 1e6
    tc = 0.01
    fad = ch.BlockFading("rayleigh", tc, np.random.default_rng(1234 + int(snr_db)))
    n = 100_000
    gains = np.array([fad.gain((k + 0.5) * tc) for k in range(n)])
    assert gains.mean() == pytest.approx(1.0, abs=0.015)
    mean_rate = np.mean(ch.shannon_rate_bps(b, rho * gains))
    assert mean_rate == pytest.approx(ch.rayleigh_ergodic_capacity_bps(b, rho), rel=0.01)


@pytest.mark.parametrize("snr_db,rate_bpshz", [(0.0, 0.5), (10.0, 2.0), (20.0, 6.0)])
def test_rayleigh_outage_vs_empirical(snr_db, rate_bpshz):
    rho = 10 ** (snr_db / 10)
    b = 1e6
    r = rate_bpshz * b
    rng = np.random.default_rng(7)
    x = ch.draw_fading_power(rng, "rayleigh", size=200_000)
    empirical = np.mean(b * np.log2(1 + rho * x) < r)
    expected = 1 - math.exp(-(2 ** rate_bpshz - 1) / rho)  # by hand
    assert ch.rayleigh_outage_probability(r, b, rho) == pytest.approx(expected, rel=1e-12)
    se = math.sqrt(expected * (1 - expected) / x.size)
    assert abs(empirical - expected) < 5 * se + 1e-12


def test_outage_edge_cases():
    assert ch.rayleigh_outage_probability(0.0, 1e6, 10.0) == 0.0
    assert ch.rayleigh_outage_probability(1e6, 1e6, 0.0) == 1.0
    assert ch.rayleigh_outage_probability(1e6, 0.0, 10.0) == 1.0


# ---------------------------------------------------------------------------- Rician
def test_rician_unit_mean_k0():
    rng = np.random.default_rng(11)
    x = ch.draw_fading_power(rng, "rician", size=200_000, rician_k_db=0.0)
    assert x.mean() == pytest.approx(1.0, abs=0.01)
    # K = 1: |h|^2 is noncentral chi-square; Var = (1 + 2K)/(1+K)^2 = 3/4
    assert x.var() == pytest.approx(0.75, rel=0.03)


def test_rician_large_k_nearly_deterministic():
    rng = np.random.default_rng(12)
    x = ch.draw_fading_power(rng, "rician", size=50_000, rician_k_db=40.0)  # K = 1e4
    assert x.mean() == pytest.approx(1.0, abs=1e-3)
    assert x.var() < 1e-3  # theory: (1 + 2K)/(1+K)^2 ~ 2e-4
    assert x.var() == pytest.approx((1 + 2e4) / (1 + 1e4) ** 2, rel=0.05)


def test_fading_none_and_bad_kind():
    rng = np.random.default_rng(0)
    assert ch.draw_fading_power(rng, "none") == 1.0
    np.testing.assert_array_equal(ch.draw_fading_power(rng, "none", size=3), np.ones(3))
    with pytest.raises(ValueError, match="rayleigh"):
        ch.draw_fading_power(rng, "nakagami")
    with pytest.raises(ValueError, match="rayleigh"):
        ch.BlockFading("nakagami", 1.0, rng)


def test_shadowing():
    x = ch.draw_shadowing_db(np.random.default_rng(3), 8.0, size=100_000)
    assert x.mean() == pytest.approx(0.0, abs=0.1)
    assert x.std() == pytest.approx(8.0, rel=0.02)
    np.testing.assert_array_equal(ch.draw_shadowing_db(np.random.default_rng(3), 0.0, size=4), np.zeros(4))
    assert ch.draw_shadowing_db(np.random.default_rng(3), 0.0) == 0.0
    with pytest.raises(ValueError):
        ch.draw_shadowing_db(np.random.default_rng(3), -1.0)


# ---------------------------------------------------------------------------- coherence time
def test_coherence_time_hand():
    v, f = 30.0, 2e9
    fd = v * f / C  # ~200.14 Hz
    assert fd == pytest.approx(200.138, abs=1e-3)
    assert ch.coherence_time_s(v, f) == pytest.approx(0.423 / fd, rel=1e-12)
    assert ch.coherence_time_s(v, f) == pytest.approx(2.11355e-3, rel=1e-4)
    assert ch.coherence_time_s(0.0, f) == math.inf
    with pytest.raises(ValueError):
        ch.coherence_time_s(-1.0, f)


# ---------------------------------------------------------------------------- BlockFading
def test_block_fading_query_order_independent():
    tc = 0.002
    a = ch.BlockFading("rayleigh", tc, np.random.default_rng(42))
    b = ch.BlockFading("rayleigh", tc, np.random.default_rng(42))
    times = np.random.default_rng(0).uniform(0, 100.0, size=500)  # spans many chunks
    ga = [a.gain(t) for t in times]
    gb = [b.gain(t) for t in times[::-1]][::-1]
    assert ga == gb
    # a third link, queried far ahead first, then from the start
    c = ch.BlockFading("rayleigh", tc, np.random.default_rng(42))
    c.gain(1e4)
    assert [c.gain(t) for t in times] == ga
    # a different seed gives a different realisation
    d = ch.BlockFading("rayleigh", tc, np.random.default_rng(43))
    assert [d.gain(t) for t in times] != ga


@pytest.mark.parametrize("kind", ["rayleigh", "rician"])
def test_block_fading_follows_its_documented_streams(kind):
    """Block k is entry k mod 4096 of the chunk drawn from default_rng([key, k // 4096]), the key being
    the link Generator's first 63-bit integer: rebuilt here from that rule alone, whatever the order and
    the size of the reads (a Rayleigh chunk is drawn in parts as it is read)."""
    fad = ch.BlockFading(kind, 0.01, np.random.default_rng(7), rician_k_db=6.0)
    key = int(np.random.default_rng(7).integers(0, 2**63 - 1))

    def expected(k):
        gen = np.random.default_rng([key, k // 4096])
        if kind == "rayleigh":
            return gen.standard_exponential(4096)[k % 4096]
        z = gen.standard_normal((2, 4096)) * math.sqrt(0.5)
        los, scatter = math.sqrt(10**0.6 / (10**0.6 + 1)), math.sqrt(1 / (10**0.6 + 1))
        return ((los + scatter * z[0]) ** 2 + (scatter * z[1]) ** 2)[k % 4096]

    for k in [3, 0, 300, 4095, 4096, 9000, 257, 511, 2000]:
        assert fad.block_gain(k) == pytest.approx(expected(k), rel=1e-15)
    window = fad.blocks(4000, 300)  # across a chunk edge
    assert window == pytest.approx([expected(k) for k in range(4000, 4300)], rel=1e-15)


def test_block_fading_constant_within_block_and_boundaries():
    tc = 0.1
    fad = ch.BlockFading("rician", tc, np.random.default_rng(5), rician_k_db=3.0)
    for k in [0, 1, 7, 123, 10_000]:
        g = fad.gain(k * tc + 0.25 * tc)
        assert fad.gain(k * tc + 0.01 * tc) == g
        assert fad.gain(k * tc + 0.99 * tc) == g
        # exactly on a boundary: t belongs to the new block
        assert fad.block_index(k * tc) == k
        assert fad.gain(k * tc) == g
        assert fad.next_boundary_s(k * tc) == pytest.approx((k + 1) * tc)
    assert fad.gain(0.05) != fad.gain(0.15)
    t = 0.0
    seen = []
    for _ in range(1000):
        nxt = fad.next_boundary_s(t)
        assert nxt > t
        assert fad.block_index(nxt) == fad.block_index(t) + 1
        seen.append(nxt)
        t = nxt
    assert all(b > a for a, b in zip(seen, seen[1:]))
    assert seen[-1] == pytest.approx(1000 * tc)


def test_block_fading_static_cases():
    none = ch.BlockFading("none", 0.01, np.random.default_rng(0))
    assert none.gain(3.7) == 1.0
    assert none.block_index(3.7) == 0
    assert none.next_boundary_s(3.7) == math.inf
    frozen = ch.BlockFading("rayleigh", math.inf, np.random.default_rng(0))
    g = frozen.gain(0.0)
    assert g > 0 and frozen.gain(1e6) == g
    assert frozen.next_boundary_s(5.0) == math.inf
    with pytest.raises(ValueError):
        ch.BlockFading("rayleigh", 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError):
        none.gain(-1.0)


# ---------------------------------------------------------------------------- placement
def test_disc_placement_bounds_and_mean_radius():
    rng = np.random.default_rng(9)
    center = (100.0, -50.0)
    pts = place_uniform_disc(rng, 50_000, center, 250.0)
    assert pts.shape == (50_000, 2)
    r = np.hypot(pts[:, 0] - center[0], pts[:, 1] - center[1])
    assert r.max() <= 250.0 + 1e-9
    assert r.mean() == pytest.approx(2 * 250.0 / 3, rel=0.01)  # E[r] = 2R/3 for area-uniform disc
    # area uniformity: P(r < R/2) = 1/4
    assert np.mean(r < 125.0) == pytest.approx(0.25, abs=0.01)


def test_disc_placement_annulus():
    rng = np.random.default_rng(10)
    pts = place_uniform_disc(rng, 20_000, (0.0, 0.0), 500.0, min_distance_m=35.0)
    r = np.hypot(pts[:, 0], pts[:, 1])
    assert r.min() >= 35.0 - 1e-9 and r.max() <= 500.0 + 1e-9
    # E[r] over annulus = 2/3 (R^3 - r0^3)/(R^2 - r0^2)
    expected = 2 / 3 * (500.0**3 - 35.0**3) / (500.0**2 - 35.0**2)
    assert r.mean() == pytest.approx(expected, rel=0.01)
    with pytest.raises(ValueError):
        place_uniform_disc(rng, 5, (0.0, 0.0), 10.0, min_distance_m=20.0)


def test_square_placement():
    rng = np.random.default_rng(11)
    pts = place_uniform_square(rng, 10_000, (250.0, 250.0), 500.0, min_distance_m=50.0)
    assert pts.shape == (10_000, 2)
    assert pts.min() >= 0.0 and pts.max() <= 500.0
    r = np.hypot(pts[:, 0] - 250.0, pts[:, 1] - 250.0)
    assert r.min() >= 50.0
    # uniform in the square minus a disc: mean x stays at the centre
    assert pts[:, 0].mean() == pytest.approx(250.0, abs=5.0)
    assert place_uniform_square(rng, 0, (0.0, 0.0), 10.0).shape == (0, 2)


def test_placement_reproducible():
    a = place_uniform_disc(np.random.default_rng(1), 100, (0.0, 0.0), 500.0, 10.0)
    b = place_uniform_disc(np.random.default_rng(1), 100, (0.0, 0.0), 500.0, 10.0)
    np.testing.assert_array_equal(a, b)
    c = place_uniform_square(np.random.default_rng(1), 100, (0.0, 0.0), 500.0, 10.0)
    d = place_uniform_square(np.random.default_rng(1), 100, (0.0, 0.0), 500.0, 10.0)
    np.testing.assert_array_equal(c, d)
