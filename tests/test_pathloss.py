"""Path-loss models behind one interface: each class against its closed form typed out by hand (with
``math``, never the module's helpers), the registry against the scenario schema, and the link budget
asking the model."""

import math
import typing

import numpy as np
import pytest

from pwffsim.net import pathloss as pl
from pwffsim.net.links import CellSite, LinkBudget
from pwffsim.scenario import ChannelConfig

C = 299_792_458.0
log10 = math.log10


def d3d(d_2d, h_bs, h_ut=1.5):
    return math.hypot(d_2d, h_bs - h_ut)


# ---------------------------------------------------------------------------- single-slope formulas
def test_macro_path_loss_hand_values():
    assert pl.path_loss_macro_db(1000.0) == pytest.approx(128.1)
    # 37.6 * log10(0.25) = 37.6 * (-0.6020599913) = -22.63745567
    assert pl.path_loss_macro_db(250.0) == pytest.approx(128.1 - 22.637455673, abs=1e-8)
    # 37.6 * log10(0.1) = -37.6
    assert pl.path_loss_macro_db(100.0) == pytest.approx(90.5)
    np.testing.assert_allclose(pl.path_loss_macro_db(np.array([100.0, 1000.0])), [90.5, 128.1])
    # clamp to 1 m: 128.1 + 37.6 * (-3)
    assert pl.path_loss_macro_db(0.0) == pytest.approx(128.1 - 112.8)
    assert pl.path_loss_macro_db(0.5) == pytest.approx(pl.path_loss_macro_db(1.0))
    with pytest.raises(ValueError, match=">= 0"):
        pl.path_loss_macro_db(-1.0)


def test_free_space_path_loss_hand_value():
    f = 2e9
    expected = 20 * math.log10(4 * math.pi * f / C)  # d = 1 m
    # 4 pi * 2e9 / c = 83.8332 -> 20 log10(83.8332) = 38.4684 dB
    assert expected == pytest.approx(38.4684, abs=1e-3)
    assert pl.path_loss_free_space_db(1.0, f) == pytest.approx(expected, abs=1e-10)
    # doubling distance adds 20 log10(2) = 6.0206 dB
    assert pl.path_loss_free_space_db(200.0, f) - pl.path_loss_free_space_db(100.0, f) == pytest.approx(
        6.020599913, abs=1e-8)


# ---------------------------------------------------------------------------- single-slope models
def test_macro_36814_closed_form():
    m = pl.Macro36814(shadowing_sigma_db=7.0)
    for d_m in (250.0, 2000.0):
        assert m.path_loss_db(d_m, 2e9) == pytest.approx(128.1 + 37.6 * log10(d_m / 1000), abs=1e-10)
    assert m.path_loss_db(250.0, 28e9, los=False) == m.path_loss_db(250.0, 2e9)  # carrier, LOS ignored
    assert m.los_probability(5000.0) == 1.0
    assert m.shadowing_sigma_db(True, 100.0, 2e9) == m.shadowing_sigma_db(False, 100.0, 2e9) == 7.0
    assert m.decorrelation_distance_m(True) == m.decorrelation_distance_m(False) == 50.0


def test_free_space_closed_form():
    m = pl.FreeSpace(shadowing_sigma_db=0.0)
    for d_m, f in ((100.0, 2e9), (1500.0, 3.5e9)):
        assert m.path_loss_db(d_m, f) == pytest.approx(20 * log10(4 * math.pi * d_m * f / C), abs=1e-10)
    assert m.los_probability(1e4) == 1.0
    assert m.shadowing_sigma_db(True, 100.0, 2e9) == 0.0


# ---------------------------------------------------------------------------- TR 38.901 models
def test_uma_closed_form():
    m, f, fc = pl.UMa(), 3.5e9, 3.5
    d = 100.0  # below d'_BP = 4 * 24 * 0.5 * f / c ~ 560 m
    assert m.path_loss_db(d, f, True, h_bs_m=25.0) == pytest.approx(
        28.0 + 22 * log10(d3d(d, 25.0)) + 20 * log10(fc), abs=1e-9)
    d = 300.0
    los = 28.0 + 22 * log10(d3d(d, 25.0)) + 20 * log10(fc)
    nlos = 13.54 + 39.08 * log10(d3d(d, 25.0)) + 20 * log10(fc) - 0.6 * (1.5 - 1.5)
    assert m.path_loss_db(d, f, False, h_bs_m=25.0) == pytest.approx(max(los, nlos), abs=1e-9)
    assert m.los_probability(100.0) == pytest.approx(18 / 100 + math.exp(-100 / 63) * (1 - 18 / 100), abs=1e-12)
    assert m.los_probability(10.0) == 1.0
    assert (m.shadowing_sigma_db(True, d, f), m.shadowing_sigma_db(False, d, f)) == (4.0, 6.0)
    assert (m.decorrelation_distance_m(True), m.decorrelation_distance_m(False)) == (37.0, 50.0)


def test_umi_street_canyon_closed_form():
    m, f, fc = pl.UMiStreetCanyon(), 3.5e9, 3.5
    d = 50.0  # below d'_BP = 4 * 9 * 0.5 * f / c ~ 420 m
    assert m.path_loss_db(d, f, True, h_bs_m=10.0) == pytest.approx(
        32.4 + 21 * log10(d3d(d, 10.0)) + 20 * log10(fc), abs=1e-9)
    d = 200.0
    los = 32.4 + 21 * log10(d3d(d, 10.0)) + 20 * log10(fc)
    nlos = 35.3 * log10(d3d(d, 10.0)) + 22.4 + 21.3 * log10(fc) - 0.3 * (1.5 - 1.5)
    assert m.path_loss_db(d, f, False, h_bs_m=10.0) == pytest.approx(max(los, nlos), abs=1e-9)
    assert m.los_probability(d) == pytest.approx(18 / d + math.exp(-d / 36) * (1 - 18 / d), abs=1e-12)
    assert (m.shadowing_sigma_db(True, d, f), m.shadowing_sigma_db(False, d, f)) == (4.0, 7.82)
    assert (m.decorrelation_distance_m(True), m.decorrelation_distance_m(False)) == (10.0, 13.0)


def test_rma_closed_form():
    m, f, fc, h, w, h_bs = pl.RMa(), 3.5e9, 3.5, 5.0, 20.0, 35.0
    d = 1000.0  # below d_BP = 2 pi 35 1.5 f / c ~ 3848 m
    x = d3d(d, h_bs)
    los = (20 * log10(40 * math.pi * x * fc / 3) + min(0.03 * h ** 1.72, 10) * log10(x)
           - min(0.044 * h ** 1.72, 14.77) + 0.002 * log10(h) * x)
    assert m.path_loss_db(d, f, True, h_bs_m=h_bs) == pytest.approx(los, abs=1e-9)
    d = 2000.0
    x = d3d(d, h_bs)
    los = (20 * log10(40 * math.pi * x * fc / 3) + min(0.03 * h ** 1.72, 10) * log10(x)
           - min(0.044 * h ** 1.72, 14.77) + 0.002 * log10(h) * x)
    nlos = (161.04 - 7.1 * log10(w) + 7.5 * log10(h) - (24.37 - 3.7 * (h / h_bs) ** 2) * log10(h_bs)
            + (43.42 - 3.1 * log10(h_bs)) * (log10(x) - 3) + 20 * log10(fc)
            - (3.2 * log10(11.75 * 1.5) ** 2 - 4.97))
    assert m.path_loss_db(d, f, False, h_bs_m=h_bs) == pytest.approx(max(los, nlos), abs=1e-9)
    assert m.los_probability(d) == pytest.approx(math.exp(-(d - 10) / 1000), abs=1e-12)
    assert m.shadowing_sigma_db(True, 1000.0, f, h_bs_m=h_bs) == 4.0
    assert m.shadowing_sigma_db(True, 6000.0, f, h_bs_m=h_bs) == 6.0  # beyond d_BP
    assert m.shadowing_sigma_db(False, 1000.0, f, h_bs_m=h_bs) == 8.0
    assert (m.decorrelation_distance_m(True), m.decorrelation_distance_m(False)) == (37.0, 120.0)


# ---------------------------------------------------------------------------- registry
def test_registry_covers_every_scenario_path_loss_name():
    accepted = set(typing.get_args(ChannelConfig.model_fields["path_loss"].annotation))
    assert accepted == set(pl.PATH_LOSS_MODELS)
    for name, cls in pl.PATH_LOSS_MODELS.items():
        model = pl.make_path_loss_model(name, 5.0)
        assert type(model) is cls and model.name == name
        assert isinstance(model, pl.PathLossModel)


def test_make_path_loss_model_sigma_and_unknown_names():
    assert pl.make_path_loss_model("macro-128.1-37.6", 5.0).shadowing_sigma_db(True, 1.0, 2e9) == 5.0
    assert pl.make_path_loss_model("macro-128.1-37.6").shadowing_sigma_db(True, 1.0, 2e9) == 8.0
    assert pl.make_path_loss_model("UMa").shadowing_sigma_db(True, 100.0, 3.5e9) == 4.0  # the standard's
    assert pl.make_path_loss_model("UMa", 5.0).shadowing_sigma_db(True, 100.0, 3.5e9) == 5.0  # set: overrides
    with pytest.raises(ValueError, match="macro-128.1-37.6"):
        pl.make_path_loss_model("cost231")
    with pytest.raises(ValueError):
        pl.make_path_loss_model(["UMa"])


class _TwoSlope:
    """A model written from the protocol alone (as README's "Where to add" says), outside pwffsim."""

    name = "two-slope"

    def __init__(self, sigma_db: float = 2.0):
        self.sigma_db = sigma_db

    @classmethod
    def from_channel(cls, shadowing_sigma_db=None):
        return cls() if shadowing_sigma_db is None else cls(shadowing_sigma_db)

    def path_loss_db(self, d_2d_m, carrier_hz, los=True, h_bs_m=None, h_ut_m=1.5):
        return 40.0 + 20.0 * log10(max(d_2d_m, 1.0))

    def los_probability(self, d_2d_m, h_ut_m=1.5):
        return 1.0

    def shadowing_sigma_db(self, los, d_2d_m, carrier_hz, h_bs_m=None, h_ut_m=1.5):
        return self.sigma_db

    def decorrelation_distance_m(self, los):
        return 20.0


def test_a_class_following_the_protocol_is_a_model_once_registered(monkeypatch):
    from pwffsim.net import pathloss_registry as reg

    members = [m for m in vars(pl.PathLossModel) if not m.startswith("_")]
    assert "from_channel" in members  # what make_path_loss_model calls is in the protocol
    monkeypatch.setitem(reg.PATH_LOSS_REGISTRY, "two-slope",
                        reg.PathLossEntry(f"{__name__}:_TwoSlope", "40 + 20 log10(d) dB (a test model)"))
    m = pl.make_path_loss_model("two-slope", 0.0)
    assert isinstance(m, _TwoSlope) and isinstance(m, pl.PathLossModel) and m.sigma_db == 0.0
    lb = LinkBudget(m, [CellSite(0.0, 0.0, 25.0, 2e9, 46.0)], _rng_for, n_devices=1)
    assert lb.gain_db(0, 0, np.array([100.0, 0.0])) == -80.0
    assert "'two-slope': 40 + 20 log10(d) dB" in reg.path_loss_reference()


def test_registry_names_and_reference_need_no_numpy():
    import subprocess
    import sys

    code = ("import sys, time; t = time.perf_counter(); import pwffsim.scenario; dt = time.perf_counter() - t; "
            "print(sorted(m for m in ('numpy', 'scipy', 'torch') if m in sys.modules), dt)")
    mods, _ = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.rsplit(" ", 1)
    assert mods == "[]"
    from pwffsim.net.pathloss_registry import path_loss_reference

    desc = ChannelConfig.model_fields["path_loss"].description
    assert path_loss_reference() in desc and all(f"'{n}'" in desc for n in pl.PATH_LOSS_MODELS)


# ---------------------------------------------------------------------------- the link budget asks the model
def _rng_for(*keys):
    return np.random.default_rng([7, *keys])


def test_link_budget_macro_gain_by_hand():
    cells = [CellSite(0.0, 0.0, 25.0, 2e9, 46.0), CellSite(600.0, 800.0, 25.0, 2e9, 40.0)]
    lb = LinkBudget(pl.make_path_loss_model("macro-128.1-37.6", 8.0), cells, _rng_for, n_devices=2)
    rng = _rng_for(1)  # device 1's stream: one uniform (LOS) then one normal (shadowing) per cell
    rng.uniform(size=2)
    z = rng.standard_normal(size=2)
    xy = np.array([300.0, 400.0])  # 500 m from both cells
    expected = -(128.1 + 37.6 * log10(0.5) + 8.0 * z)
    assert lb.gain_db(1, 0, xy) == pytest.approx(expected[0], abs=1e-9)
    np.testing.assert_allclose(lb.rsrp_dbm(1, xy), [46.0 + expected[0], 40.0 + expected[1]], atol=1e-9)
    assert lb.los(1, 0, xy) is True
    assert lb.gain_db(1, 0, None) == -math.inf


def test_link_budget_takes_a_model_object_only():
    cells = [CellSite(0.0, 0.0, 10.0, 3.5e9, 40.0)]
    by_name = LinkBudget(pl.make_path_loss_model("UMi"), cells, _rng_for, n_devices=3, correlated=True)
    by_object = LinkBudget(pl.UMiStreetCanyon(), cells, _rng_for, n_devices=3, correlated=True)
    assert by_object.path_loss_model.name == "UMi"
    for k, xy in enumerate(np.array([[20.0, 5.0], [120.0, -40.0], [400.0, 300.0]])):
        assert by_name.gain_db(k, 0, xy) == by_object.gain_db(k, 0, xy)
    # no sigma argument to be silently ignored: the model carries its sigma
    with pytest.raises(TypeError, match="PathLossModel"):
        LinkBudget("UMi", cells, _rng_for, n_devices=3)


def test_import_pulls_no_torch():
    import subprocess
    import sys

    code = "import sys, pwffsim.net.pathloss, pwffsim.net.links, pwffsim.net.radio; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
