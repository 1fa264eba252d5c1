"""TR 38.901 path loss, LOS probability and shadowing against values written out by hand.

The expected values below re-type the formulas of TR 38.901 V17.0.0 Table 7.4.1-1 / 7.4.2-1 with
``math`` on concrete numbers; they never call the module's helpers.
"""

import math
import subprocess
import sys

import numpy as np
import pytest

from pwffsim.net import tr38901 as tr

C = 299_792_458.0
log10 = math.log10


# ---------------------------------------------------------------------------- breakpoints
def test_breakpoint_distances_by_hand():
    # UMa: 4 (25-1)(1.5-1) 3.5e9 / c = 48 * 3.5e9 / c
    assert tr.breakpoint_distance_m("UMa", 3.5e9, 25.0, 1.5) == pytest.approx(48 * 3.5e9 / C, rel=1e-12)
    assert tr.breakpoint_distance_m("UMa", 3.5e9, 25.0, 1.5) == pytest.approx(560.39, abs=0.01)
    # UMi: 4 (10-1)(1.5-1) f / c = 18 f / c
    assert tr.breakpoint_distance_m("UMi", 3.5e9, 10.0, 1.5) == pytest.approx(18 * 3.5e9 / C, rel=1e-12)
    assert tr.breakpoint_distance_m("UMi", 28e9, 10.0, 1.5) == pytest.approx(18 * 28e9 / C, rel=1e-12)
    assert tr.breakpoint_distance_m("UMi", 28e9, 10.0, 1.5) == pytest.approx(1681.16, abs=0.01)
    # RMa: 2 pi 35 1.5 f / c (actual heights)
    assert tr.breakpoint_distance_m("RMa", 3.5e9, 35.0, 1.5) == pytest.approx(
        2 * math.pi * 35 * 1.5 * 3.5e9 / C, rel=1e-12)
    assert tr.breakpoint_distance_m("RMa", 3.5e9, 35.0, 1.5) == pytest.approx(3851.1, abs=0.1)
    # defaults: BS heights per scenario
    assert tr.breakpoint_distance_m("UMa", 3.5e9) == tr.breakpoint_distance_m("UMa", 3.5e9, 25.0, 1.5)
    assert tr.breakpoint_distance_m("RMa", 3.5e9) == tr.breakpoint_distance_m("RMa", 3.5e9, 35.0, 1.5)
    assert [tr.default_bs_height_m(s) for s in tr.SCENARIOS] == [25.0, 10.0, 35.0]


# ---------------------------------------------------------------------------- path loss
def test_uma_path_loss_by_hand():
    fc = 3.5
    dbp = 4 * 24 * 0.5 * 3.5e9 / C  # ~560 m
    # LOS before the breakpoint, d_2D = 100 m
    d3 = math.sqrt(100 ** 2 + 23.5 ** 2)
    assert tr.path_loss_los_db("UMa", 100.0, 3.5e9) == pytest.approx(28 + 22 * log10(d3) + 20 * log10(fc), abs=1e-9)
    # LOS after the breakpoint, d_2D = 1000 m
    d3 = math.sqrt(1000 ** 2 + 23.5 ** 2)
    pl2 = 28 + 40 * log10(d3) + 20 * log10(fc) - 9 * log10(dbp ** 2 + 23.5 ** 2)
    assert tr.path_loss_los_db("UMa", 1000.0, 3.5e9) == pytest.approx(pl2, abs=1e-9)
    # NLOS at 100 m and 1000 m (PL' dominates: max(PL_LOS, PL'))
    for d in (100.0, 1000.0):
        d3 = math.sqrt(d ** 2 + 23.5 ** 2)
        nlos = 13.54 + 39.08 * log10(d3) + 20 * log10(fc) - 0.6 * (1.5 - 1.5)
        assert tr.path_loss_nlos_db("UMa", d, 3.5e9) == pytest.approx(nlos, abs=1e-9)
        assert tr.path_loss_nlos_db("UMa", d, 3.5e9) >= tr.path_loss_los_db("UMa", d, 3.5e9)


def test_umi_path_loss_by_hand():
    for f_hz, d_before, d_after in ((3.5e9, 100.0, 500.0), (28e9, 100.0, 2000.0)):
        fc = f_hz / 1e9
        dbp = 4 * 9 * 0.5 * f_hz / C
        assert d_before < dbp < d_after
        d3 = math.sqrt(d_before ** 2 + 8.5 ** 2)
        assert tr.path_loss_los_db("UMi", d_before, f_hz) == pytest.approx(
            32.4 + 21 * log10(d3) + 20 * log10(fc), abs=1e-9)
        d3 = math.sqrt(d_after ** 2 + 8.5 ** 2)
        assert tr.path_loss_los_db("UMi", d_after, f_hz) == pytest.approx(
            32.4 + 40 * log10(d3) + 20 * log10(fc) - 9.5 * log10(dbp ** 2 + 8.5 ** 2), abs=1e-9)
        for d in (d_before, d_after):
            d3 = math.sqrt(d ** 2 + 8.5 ** 2)
            nlos = 35.3 * log10(d3) + 22.4 + 21.3 * log10(fc) - 0.3 * 0.0
            assert tr.path_loss_nlos_db("UMi", d, f_hz) == pytest.approx(nlos, abs=1e-9)
            assert tr.path_loss_nlos_db("UMi", d, f_hz) >= tr.path_loss_los_db("UMi", d, f_hz)
    # a literal anchor: UMi 3.5 GHz LOS at 100 m ~ 85.31 dB
    assert tr.path_loss_los_db("UMi", 100.0, 3.5e9) == pytest.approx(85.314, abs=1e-3)


def _rma_pl1(d3, fc, h=5.0):
    return (20 * log10(40 * math.pi * d3 * fc / 3) + min(0.03 * h ** 1.72, 10) * log10(d3)
            - min(0.044 * h ** 1.72, 14.77) + 0.002 * log10(h) * d3)


def test_rma_path_loss_by_hand():
    fc = 3.5
    dbp = 2 * math.pi * 35 * 1.5 * 3.5e9 / C  # ~3851 m
    # h = 5: min(0.03*5^1.72, 10) = 0.4779..., min(0.044*5^1.72, 14.77) = 0.7009...
    assert 0.03 * 5 ** 1.72 == pytest.approx(0.47791, abs=1e-4)
    d3 = math.sqrt(1000 ** 2 + 33.5 ** 2)
    assert tr.path_loss_los_db("RMa", 1000.0, 3.5e9) == pytest.approx(_rma_pl1(d3, fc), abs=1e-9)
    d3 = math.sqrt(6000 ** 2 + 33.5 ** 2)
    pl2 = _rma_pl1(dbp, fc) + 40 * log10(d3 / dbp)
    assert tr.path_loss_los_db("RMa", 6000.0, 3.5e9) == pytest.approx(pl2, abs=1e-9)

    def nlos_prime(d, W=20.0, h=5.0, hbs=35.0, hut=1.5):
        d3 = math.sqrt(d ** 2 + (hbs - hut) ** 2)
        return (161.04 - 7.1 * log10(W) + 7.5 * log10(h) - (24.37 - 3.7 * (h / hbs) ** 2) * log10(hbs)
                + (43.42 - 3.1 * log10(hbs)) * (log10(d3) - 3) + 20 * log10(fc)
                - (3.2 * log10(11.75 * hut) ** 2 - 4.97))

    for d in (100.0, 1000.0):
        assert tr.path_loss_nlos_db("RMa", d, 3.5e9) == pytest.approx(nlos_prime(d), abs=1e-9)
        assert tr.path_loss_nlos_db("RMa", d, 3.5e9) >= tr.path_loss_los_db("RMa", d, 3.5e9)
    # at 10 m PL' < PL_LOS, so NLOS = max(...) = PL_LOS
    assert nlos_prime(10.0) < _rma_pl1(math.sqrt(100 + 33.5 ** 2), fc)
    assert tr.path_loss_nlos_db("RMa", 10.0, 3.5e9) == pytest.approx(
        _rma_pl1(math.sqrt(100 + 33.5 ** 2), fc), abs=1e-9)
    # non-default street width / building height reach the formula
    assert tr.path_loss_nlos_db("RMa", 1000.0, 3.5e9, street_width_m=10.0, building_height_m=10.0) == \
        pytest.approx(nlos_prime(1000.0, W=10.0, h=10.0), abs=1e-9)


def test_path_loss_clamping_dispatch_and_errors():
    # d_2D < 10 m is clamped to 10 m
    assert tr.path_loss_los_db("UMa", 1.0, 3.5e9) == tr.path_loss_los_db("UMa", 10.0, 3.5e9)
    assert tr.path_loss_nlos_db("UMi", 0.0, 3.5e9) == tr.path_loss_nlos_db("UMi", 10.0, 3.5e9)
    # arrays broadcast, scalars give floats
    d = np.array([50.0, 300.0, 3000.0])
    arr = tr.path_loss_los_db("UMa", d, 3.5e9)
    assert isinstance(arr, np.ndarray)
    np.testing.assert_allclose(arr, [tr.path_loss_los_db("UMa", x, 3.5e9) for x in d])
    assert isinstance(tr.path_loss_los_db("UMa", 50.0, 3.5e9), float)
    assert tr.path_loss_db("UMi", 80.0, 3.5e9, los=True) == tr.path_loss_los_db("UMi", 80.0, 3.5e9)
    assert tr.path_loss_db("UMi", 80.0, 3.5e9, los=False, h_ut_m=3.0) == \
        tr.path_loss_nlos_db("UMi", 80.0, 3.5e9, h_ut_m=3.0)
    mixed = tr.path_loss_db("RMa", d, 3.5e9, los=np.array([True, False, True]))
    np.testing.assert_allclose(mixed, [tr.path_loss_los_db("RMa", 50.0, 3.5e9),
                                       tr.path_loss_nlos_db("RMa", 300.0, 3.5e9),
                                       tr.path_loss_los_db("RMa", 3000.0, 3.5e9)])
    with pytest.raises(ValueError):
        tr.path_loss_los_db("InH", 100.0, 3.5e9)
    with pytest.raises(ValueError):
        tr.path_loss_nlos_db("UMa", 100.0, 0.0)
    with pytest.raises(ValueError):
        tr.breakpoint_distance_m("UMa", -1.0)
    with pytest.raises(ValueError):
        tr.los_probability("Indoor", 10.0)
    with pytest.raises(ValueError):
        tr.path_loss_los_db("UMa", -5.0, 3.5e9)
    with pytest.raises(ValueError):
        tr.path_loss_los_db("UMi", 100.0, 3.5e9, h_ut_m=1.0)  # h'_UT = 0


# ---------------------------------------------------------------------------- LOS probability
def test_los_probability_by_hand():
    for s in ("UMa", "UMi"):
        assert tr.los_probability(s, 5.0) == 1.0
        assert tr.los_probability(s, 18.0) == 1.0
    for d in (50.0, 200.0):
        assert tr.los_probability("UMi", d) == pytest.approx(18 / d + math.exp(-d / 36) * (1 - 18 / d), abs=1e-12)
        assert tr.los_probability("UMa", d) == pytest.approx(18 / d + math.exp(-d / 63) * (1 - 18 / d), abs=1e-12)
    # UMa with a high terminal: C'(18 m) = (5/10)^1.5
    d = 200.0
    base = 18 / d + math.exp(-d / 63) * (1 - 18 / d)
    hand = base * (1 + 0.5 ** 1.5 * 1.25 * (d / 100) ** 3 * math.exp(-d / 150))
    assert tr.los_probability("UMa", d, h_ut_m=18.0) == pytest.approx(hand, abs=1e-12)
    assert tr.los_probability("UMa", d, h_ut_m=13.0) == pytest.approx(base, abs=1e-12)  # C' = 0
    assert tr.los_probability("RMa", 10.0) == 1.0
    assert tr.los_probability("RMa", 100.0) == pytest.approx(math.exp(-90 / 1000), abs=1e-12)
    # literal anchors
    assert tr.los_probability("UMi", 50.0) == pytest.approx(0.51959, abs=1e-4)
    assert tr.los_probability("UMa", 200.0) == pytest.approx(0.12805, abs=1e-4)
    with pytest.raises(ValueError):
        tr.los_probability("UMa", 100.0, h_ut_m=30.0)


def test_draw_los_frequency_and_determinism():
    rng = np.random.default_rng(1)
    draws = tr.draw_los(rng, "UMi", np.full(20_000, 50.0))
    assert draws.dtype == bool
    p = 18 / 50 + math.exp(-50 / 36) * (1 - 18 / 50)
    assert draws.mean() == pytest.approx(p, abs=0.015)
    assert tr.draw_los(np.random.default_rng(3), "UMa", 10.0) is True
    a = tr.draw_los(np.random.default_rng(7), "RMa", np.array([100.0, 2000.0, 9000.0]))
    b = tr.draw_los(np.random.default_rng(7), "RMa", np.array([100.0, 2000.0, 9000.0]))
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- shadowing
def test_shadowing_sigmas():
    assert tr.shadowing_sigma_db("UMa", True) == 4.0
    assert tr.shadowing_sigma_db("UMa", False) == 6.0
    assert tr.shadowing_sigma_db("UMi", True) == 4.0
    assert tr.shadowing_sigma_db("UMi", False) == 7.82
    assert tr.shadowing_sigma_db("RMa", False) == 8.0
    assert tr.shadowing_sigma_db("RMa", True, d_2d_m=1000.0, carrier_hz=3.5e9) == 4.0  # < d_BP ~ 3851 m
    assert tr.shadowing_sigma_db("RMa", True, d_2d_m=6000.0, carrier_hz=3.5e9) == 6.0
    with pytest.raises(ValueError):
        tr.shadowing_sigma_db("RMa", True)
    assert tr.shadowing_decorrelation_m("UMa", True) == 37.0
    assert tr.shadowing_decorrelation_m("UMi", False) == 13.0
    assert tr.shadowing_decorrelation_m("RMa", False) == 120.0


def test_correlated_shadowing_statistics():
    sigma, d_corr = 6.0, 50.0
    field = tr.CorrelatedShadowing(sigma, d_corr, np.random.default_rng(0))
    rng = np.random.default_rng(123)
    n = 4_000
    x = rng.uniform(0, 100 * d_corr, n)
    y = rng.uniform(0, 100 * d_corr, n)
    s = field.value_db(x, y)
    assert s.shape == (n,)
    assert np.std(s) == pytest.approx(sigma, rel=0.1)
    assert abs(np.mean(s)) < 0.15 * sigma
    # correlation at separation d_corr in random directions ~ e^-1, averaged over a few fields
    corrs = []
    for seed in range(4):
        f = tr.CorrelatedShadowing(sigma, d_corr, np.random.default_rng(seed))
        phi = rng.uniform(0, 2 * math.pi, n)
        a = f.value_db(x, y)
        b = f.value_db(x + d_corr * np.cos(phi), y + d_corr * np.sin(phi))
        corrs.append(np.corrcoef(a, b)[0, 1])
    assert np.mean(corrs) == pytest.approx(math.exp(-1), abs=0.08)
    # nearby points are strongly, far points barely correlated
    b_near = field.value_db(x + 1.0, y)
    b_far = field.value_db(x + 10 * d_corr, y)
    assert np.corrcoef(s, b_near)[0, 1] > 0.9
    assert abs(np.corrcoef(s, b_far)[0, 1]) < 0.15


def test_correlated_shadowing_is_exponential_at_several_lags():
    """Ensemble correlation at lags d = 0.25, 0.5, 1 and 2 d_corr against Gudmundson's exp(-d / d_corr).

    At d = d_corr the exponential and a Gaussian exp(-(d / d_corr)^2) agree (both e^-1), so one lag
    cannot tell them apart; at the others they differ by 0.16, 0.17 and 0.12:

        d / d_corr        0.25    0.5     1      2
        exp(-d/dc)        0.779   0.607   0.368  0.135
        exp(-(d/dc)^2)    0.939   0.779   0.368  0.018

    Estimator: for each of M = 10 independent fields (own seed), the sample correlation of S(r) and
    S(r + d u) over n = 1500 random points r spread over 200 x 200 d_corr and random unit vectors u;
    then the mean over fields.  Its standard error (spread of the M estimates / sqrt(M); they vary
    through the field's finite number of sinusoids and the n points) is about 0.004 at small lags and
    0.01 at 2 d_corr, measured below.  Tolerance 0.05: at least 4 standard errors (asserted), and
    under half the smallest Gaussian-vs-exponential gap (0.117), so a Gaussian correlation misses
    at three lags by more than 6 SE.
    """
    d_corr, m_fields, n, tol = 50.0, 10, 1500, 0.05
    lags = np.array([0.25, 0.5, 1.0, 2.0])
    rng = np.random.default_rng(2024)
    est = np.empty((m_fields, lags.size))
    for m in range(m_fields):
        field = tr.CorrelatedShadowing(3.0, d_corr, np.random.default_rng(500 + m))
        x = rng.uniform(0, 200 * d_corr, n)
        y = rng.uniform(0, 200 * d_corr, n)
        a = field.value_db(x, y)
        for i, lag in enumerate(lags):
            phi = rng.uniform(0, 2 * math.pi, n)
            b = field.value_db(x + lag * d_corr * np.cos(phi), y + lag * d_corr * np.sin(phi))
            est[m, i] = np.corrcoef(a, b)[0, 1]
    mean = est.mean(axis=0)
    se = est.std(axis=0, ddof=1) / math.sqrt(m_fields)
    assert np.all(4 * se <= tol), se
    want = np.array([math.exp(-lag) for lag in lags])
    assert np.all(np.abs(mean - want) <= tol), (mean, want)
    gaussian = np.array([math.exp(-lag ** 2) for lag in lags])
    assert np.sum(np.abs(gaussian - want) > 2 * tol) == 3  # the lags do discriminate


def test_correlated_shadowing_deterministic():
    f1 = tr.CorrelatedShadowing(4.0, 37.0, np.random.default_rng(42))
    f2 = tr.CorrelatedShadowing(4.0, 37.0, np.random.default_rng(42))
    f3 = tr.CorrelatedShadowing(4.0, 37.0, np.random.default_rng(43))
    pts = (np.array([0.0, 10.0, 500.0]), np.array([0.0, -20.0, 3000.0]))
    np.testing.assert_array_equal(f1.value_db(*pts), f2.value_db(*pts))
    assert not np.allclose(f1.value_db(*pts), f3.value_db(*pts))
    # query order does not matter; a scalar point gives a float equal to the array entry
    v = f1.value_db(500.0, 3000.0)
    assert isinstance(v, float)
    assert v == pytest.approx(f1.value_db(*pts)[2], abs=1e-9)
    assert tr.CorrelatedShadowing(0.0, 37.0, np.random.default_rng(1)).value_db(3.0, 4.0) == 0.0
    with pytest.raises(ValueError):
        tr.CorrelatedShadowing(4.0, 0.0, np.random.default_rng(1))


def test_import_pulls_no_torch():
    code = "import sys, pwffsim.net.tr38901; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
