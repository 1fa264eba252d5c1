"""3GPP TR 38.901 (V17.0.0) large-scale propagation: path loss, LOS probability and shadowing.

Scenarios: ``"UMa"`` (urban macro), ``"UMi"`` (urban micro, street canyon) and ``"RMa"`` (rural macro),
outdoor user terminals only (no O2I penetration loss, ``d_2D-out = d_2D``).

Sources
-------
* Path loss: TR 38.901 V17.0.0, Table 7.4.1-1 ("Pathloss models") and its notes 1 (breakpoint
  distance of UMa/UMi), 5 (breakpoint distance of RMa) and 6 (``f_c`` in GHz, distances in metres).
* LOS probability: Table 7.4.2-1 ("LOS probability").
* Shadow-fading standard deviations: Table 7.4.1-1 (column ``sigma_SF``).
* Shadow-fading decorrelation distances: Table 7.5-6 Part-1 (``SF`` correlation distance
  ``d_corr``), with the exponential autocorrelation of Gudmundson (Electronics Letters 27(23), 1991)
  and TR 38.901 sec. 7.6.3.1.

Conventions (as in :mod:`pwffsim.net.channel`)
---------------------------------------------
* Every quantity carries its unit in its name; the carrier is given in Hz (``carrier_hz``) and is
  converted to GHz inside the formulas, as the table prescribes.
* ``d_3D = sqrt(d_2D^2 + (h_BS - h_UT)^2)``.
* Validity range: ``10 m <= d_2D <= 5 km`` (UMa, UMi, RMa NLOS), ``<= 10 km`` (RMa LOS). Distances below
  10 m are clamped to 10 m (the near-field region where the model is undefined is given the 10 m
  value); distances above the upper limit are *not* clamped: the formulas are extrapolated.
* The numeric functions accept floats or numpy arrays for distances (broadcasting); a scalar input
  gives a Python ``float`` (or ``bool``) back, an array input gives an array back.
* Unknown scenarios, non-positive carriers and non-physical heights raise ``ValueError``.

Network side only: numpy and the standard library (never torch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .channel import SPEED_OF_LIGHT_MPS
from .checks import as_float_array, check_rng, nonnegative, positive, scalar_or_array

__all__ = [
    "SCENARIOS",
    "MIN_DISTANCE_2D_M",
    "DEFAULT_BS_HEIGHT_M",
    "SHADOWING_DECORRELATION_M",
    "default_bs_height_m",
    "breakpoint_distance_m",
    "path_loss_los_db",
    "path_loss_nlos_db",
    "path_loss_db",
    "los_probability",
    "draw_los",
    "shadowing_sigma_db",
    "shadowing_decorrelation_m",
    "CorrelatedShadowing",
]

SCENARIOS = ("UMa", "UMi", "RMa")

MIN_DISTANCE_2D_M = 10.0
"""Lower end of the validity range of Table 7.4.1-1; shorter 2D distances are clamped to it."""

DEFAULT_BS_HEIGHT_M = {"UMa": 25.0, "UMi": 10.0, "RMa": 35.0}
"""Default BS antenna heights of Table 7.4.1-1 (UMa ``h_BS = 25 m``, UMi ``10 m``, RMa ``35 m``)."""

SHADOWING_DECORRELATION_M = {
    ("UMa", True): 37.0, ("UMa", False): 50.0,
    ("UMi", True): 10.0, ("UMi", False): 13.0,
    ("RMa", True): 37.0, ("RMa", False): 120.0,
}
"""Shadow-fading correlation distance ``d_corr`` in m, TR 38.901 Table 7.5-6 Part-1 (key:
``(scenario, los)``)."""

# Effective environment height h_E of UMa/UMi (Table 7.4.1-1 note 1). For UMi h_E = 1 m always; for
# UMa h_E = 1 m with probability 1 / (1 + C(d_2D, h_UT)), and C = 0 for h_UT <= 13 m (Table 7.4.1-1
# note 1), so h_E = 1 m is exact for the usual h_UT = 1.5 m; the random h_E of high UMa terminals is
# not modelled.
_H_E_M = 1.0
# LOS-probability formula of UMa is defined for h_UT <= 23 m only (Table 7.4.2-1, C'(h_UT)).
_UMA_MAX_UT_HEIGHT_M = 23.0
# CorrelatedShadowing evaluates the field in chunks of this many points (bounded memory).
_FIELD_CHUNK = 4096


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _positive_scalar(x: Any, name: str) -> float:
    arr = positive(x, name)
    if arr.ndim != 0 or not math.isfinite(float(arr)):
        raise ValueError(f"{name} must be a finite scalar > 0, got {x!r}")
    return float(arr)


def _check_scenario(scenario: Any) -> str:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {list(SCENARIOS)}")
    return scenario


def _heights(scenario: str, h_bs_m: Any, h_ut_m: Any) -> tuple[float, float]:
    """Validated ``(h_BS, h_UT)`` in m; ``h_bs_m=None`` gives the scenario's default."""
    h_bs = DEFAULT_BS_HEIGHT_M[scenario] if h_bs_m is None else _positive_scalar(h_bs_m, "h_bs_m")
    h_ut = _positive_scalar(h_ut_m, "h_ut_m")
    if scenario in ("UMa", "UMi"):
        # effective heights h' = h - h_E must be positive for the breakpoint distance
        if h_bs <= _H_E_M or h_ut <= _H_E_M:
            raise ValueError(f"{scenario}: h_bs_m and h_ut_m must exceed h_E = {_H_E_M} m, "
                             f"got h_bs_m={h_bs!r}, h_ut_m={h_ut!r}")
    return h_bs, h_ut


def _d2d_m(d_2d_m: Any) -> np.ndarray:
    """2D distance clamped below at 10 m (Table 7.4.1-1 validity range)."""
    return np.maximum(nonnegative(d_2d_m, "d_2d_m (2D distance in metres)"), MIN_DISTANCE_2D_M)


def _d3d_m(d_2d: np.ndarray, h_bs: float, h_ut: float) -> np.ndarray:
    """``d_3D = sqrt(d_2D^2 + (h_BS - h_UT)^2)`` (TR 38.901 Fig. 7.4.1-1)."""
    return np.sqrt(d_2d ** 2 + (h_bs - h_ut) ** 2)


def _fc_ghz(carrier_hz: Any) -> float:
    return _positive_scalar(carrier_hz, "carrier_hz") / 1e9


def _building_street(building_height_m: Any, street_width_m: Any) -> tuple[float, float]:
    return (_positive_scalar(building_height_m, "building_height_m"),
            _positive_scalar(street_width_m, "street_width_m"))


# --------------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------------
def default_bs_height_m(scenario: str) -> float:
    """Default BS antenna height of Table 7.4.1-1: UMa 25 m, UMi 10 m, RMa 35 m."""
    return DEFAULT_BS_HEIGHT_M[_check_scenario(scenario)]


def breakpoint_distance_m(scenario: str, carrier_hz: float, h_bs_m: float | None = None,
                          h_ut_m: float = 1.5) -> float:
    """Breakpoint distance of the LOS path loss, m (``f_c`` in Hz here, ``c`` = speed of light).

    * UMa, UMi: ``d'_BP = 4 h'_BS h'_UT f_c / c`` with effective heights ``h' = h - h_E``,
      ``h_E = 1 m`` (TR 38.901 Table 7.4.1-1, note 1).
    * RMa: ``d_BP = 2 pi h_BS h_UT f_c / c`` with the actual heights (Table 7.4.1-1, note 5).
    """
    scenario = _check_scenario(scenario)
    f_hz = _positive_scalar(carrier_hz, "carrier_hz")
    h_bs, h_ut = _heights(scenario, h_bs_m, h_ut_m)
    if scenario == "RMa":
        return 2.0 * math.pi * h_bs * h_ut * f_hz / SPEED_OF_LIGHT_MPS
    return 4.0 * (h_bs - _H_E_M) * (h_ut - _H_E_M) * f_hz / SPEED_OF_LIGHT_MPS


# --------------------------------------------------------------------------------------------------
# path loss
# --------------------------------------------------------------------------------------------------
def _rma_pl1_db(d_3d: np.ndarray, fc_ghz: float, h_bldg: float) -> np.ndarray:
    """RMa ``PL1 = 20 log10(40 pi d_3D f_c / 3) + min(0.03 h^1.72, 10) log10(d_3D)
    - min(0.044 h^1.72, 14.77) + 0.002 log10(h) d_3D`` (Table 7.4.1-1)."""
    return (20.0 * np.log10(40.0 * math.pi * d_3d * fc_ghz / 3.0)
            + min(0.03 * h_bldg ** 1.72, 10.0) * np.log10(d_3d)
            - min(0.044 * h_bldg ** 1.72, 14.77)
            + 0.002 * math.log10(h_bldg) * d_3d)


def path_loss_los_db(scenario: str, d_2d_m, carrier_hz: float, h_bs_m: float | None = None,
                     h_ut_m: float = 1.5, street_width_m: float = 20.0,
                     building_height_m: float = 5.0):
    """LOS path loss in dB, TR 38.901 V17.0.0 Table 7.4.1-1 (``f_c`` in GHz, distances in m).

    * UMa: ``PL1 = 28.0 + 22 log10(d_3D) + 20 log10(f_c)`` for ``10 m <= d_2D <= d'_BP``;
      ``PL2 = 28.0 + 40 log10(d_3D) + 20 log10(f_c) - 9 log10(d'_BP^2 + (h_BS - h_UT)^2)`` beyond.
    * UMi-Street Canyon: ``PL1 = 32.4 + 21 log10(d_3D) + 20 log10(f_c)``;
      ``PL2 = 32.4 + 40 log10(d_3D) + 20 log10(f_c) - 9.5 log10(d'_BP^2 + (h_BS - h_UT)^2)``.
    * RMa: ``PL1 = 20 log10(40 pi d_3D f_c / 3) + min(0.03 h^1.72, 10) log10(d_3D)
      - min(0.044 h^1.72, 14.77) + 0.002 log10(h) d_3D`` for ``10 m <= d_2D <= d_BP``;
      ``PL2 = PL1(d_BP) + 40 log10(d_3D / d_BP)`` beyond, where ``PL1(d_BP)`` is ``PL1`` evaluated at
      the distance ``d_BP`` (the table's literal reading; some implementations use the 3D distance
      of the breakpoint instead, which differs by < 0.01 dB for the default heights).
      ``h`` = ``building_height_m``; ``street_width_m`` is unused in LOS.

    The breakpoint regime is decided on ``d_2D`` (see :func:`breakpoint_distance_m`); ``d_2D`` is
    clamped to >= 10 m. ``h_bs_m=None`` gives the scenario's default (25 / 10 / 35 m).
    """
    scenario = _check_scenario(scenario)
    fc = _fc_ghz(carrier_hz)
    h_bs, h_ut = _heights(scenario, h_bs_m, h_ut_m)
    h_bldg, _w = _building_street(building_height_m, street_width_m)
    d_bp = breakpoint_distance_m(scenario, carrier_hz, h_bs, h_ut)
    d_2d = _d2d_m(d_2d_m)
    d_3d = _d3d_m(d_2d, h_bs, h_ut)
    if scenario == "UMa":
        pl1 = 28.0 + 22.0 * np.log10(d_3d) + 20.0 * math.log10(fc)
        pl2 = (28.0 + 40.0 * np.log10(d_3d) + 20.0 * math.log10(fc)
               - 9.0 * math.log10(d_bp ** 2 + (h_bs - h_ut) ** 2))
    elif scenario == "UMi":
        pl1 = 32.4 + 21.0 * np.log10(d_3d) + 20.0 * math.log10(fc)
        pl2 = (32.4 + 40.0 * np.log10(d_3d) + 20.0 * math.log10(fc)
               - 9.5 * math.log10(d_bp ** 2 + (h_bs - h_ut) ** 2))
    else:  # RMa
        pl1 = _rma_pl1_db(d_3d, fc, h_bldg)
        pl2 = _rma_pl1_db(np.asarray(d_bp), fc, h_bldg) + 40.0 * np.log10(d_3d / d_bp)
    return scalar_or_array(np.where(d_2d <= d_bp, pl1, pl2))


def path_loss_nlos_db(scenario: str, d_2d_m, carrier_hz: float, h_bs_m: float | None = None,
                      h_ut_m: float = 1.5, street_width_m: float = 20.0,
                      building_height_m: float = 5.0):
    """NLOS path loss in dB, ``PL_NLOS = max(PL_LOS, PL'_NLOS)``, TR 38.901 V17.0.0 Table 7.4.1-1
    (``f_c`` in GHz, distances in m):

    * UMa: ``PL'_NLOS = 13.54 + 39.08 log10(d_3D) + 20 log10(f_c) - 0.6 (h_UT - 1.5)``.
    * UMi-Street Canyon: ``PL'_NLOS = 35.3 log10(d_3D) + 22.4 + 21.3 log10(f_c) - 0.3 (h_UT - 1.5)``.
    * RMa: ``PL'_NLOS = 161.04 - 7.1 log10(W) + 7.5 log10(h) - (24.37 - 3.7 (h/h_BS)^2) log10(h_BS)
      + (43.42 - 3.1 log10(h_BS)) (log10(d_3D) - 3) + 20 log10(f_c)
      - (3.2 (log10(11.75 h_UT))^2 - 4.97)`` with ``W`` = ``street_width_m``, ``h`` =
      ``building_height_m``.

    ``PL_LOS`` is :func:`path_loss_los_db` with the same arguments; ``d_2D`` is clamped to >= 10 m.
    """
    scenario = _check_scenario(scenario)
    fc = _fc_ghz(carrier_hz)
    h_bs, h_ut = _heights(scenario, h_bs_m, h_ut_m)
    h_bldg, w = _building_street(building_height_m, street_width_m)
    d_2d = _d2d_m(d_2d_m)
    d_3d = _d3d_m(d_2d, h_bs, h_ut)
    if scenario == "UMa":
        pl_nlos = 13.54 + 39.08 * np.log10(d_3d) + 20.0 * math.log10(fc) - 0.6 * (h_ut - 1.5)
    elif scenario == "UMi":
        pl_nlos = 35.3 * np.log10(d_3d) + 22.4 + 21.3 * math.log10(fc) - 0.3 * (h_ut - 1.5)
    else:  # RMa
        pl_nlos = (161.04 - 7.1 * math.log10(w) + 7.5 * math.log10(h_bldg)
                   - (24.37 - 3.7 * (h_bldg / h_bs) ** 2) * math.log10(h_bs)
                   + (43.42 - 3.1 * math.log10(h_bs)) * (np.log10(d_3d) - 3.0)
                   + 20.0 * math.log10(fc)
                   - (3.2 * math.log10(11.75 * h_ut) ** 2 - 4.97))
    pl_los = np.asarray(path_loss_los_db(scenario, d_2d, carrier_hz, h_bs, h_ut, w, h_bldg))
    return scalar_or_array(np.maximum(pl_los, pl_nlos))


def path_loss_db(scenario: str, d_2d_m, carrier_hz: float, los, **kw):
    """Path loss in dB for a given propagation condition: :func:`path_loss_los_db` where ``los`` is
    true, :func:`path_loss_nlos_db` otherwise (``los`` may be a bool or a boolean array broadcasting
    with ``d_2d_m``). Keyword arguments (``h_bs_m``, ``h_ut_m``, ``street_width_m``,
    ``building_height_m``) are passed through. Source: TR 38.901 Table 7.4.1-1."""
    los_arr = np.asarray(los, dtype=bool)
    if los_arr.ndim == 0:
        fn = path_loss_los_db if bool(los_arr) else path_loss_nlos_db
        return fn(scenario, d_2d_m, carrier_hz, **kw)
    pl_los = np.asarray(path_loss_los_db(scenario, d_2d_m, carrier_hz, **kw))
    pl_nlos = np.asarray(path_loss_nlos_db(scenario, d_2d_m, carrier_hz, **kw))
    return scalar_or_array(np.where(los_arr, pl_los, pl_nlos))


# --------------------------------------------------------------------------------------------------
# LOS probability
# --------------------------------------------------------------------------------------------------
def los_probability(scenario: str, d_2d_m, h_ut_m: float = 1.5):
    """LOS probability of an outdoor UT, TR 38.901 V17.0.0 Table 7.4.2-1 (``d_2D`` in m):

    * RMa: 1 for ``d_2D <= 10 m``; ``exp(-(d_2D - 10) / 1000)`` beyond.
    * UMi-Street Canyon: 1 for ``d_2D <= 18 m``; ``18/d_2D + exp(-d_2D/36) (1 - 18/d_2D)`` beyond.
    * UMa: 1 for ``d_2D <= 18 m``; ``[18/d_2D + exp(-d_2D/63) (1 - 18/d_2D)]
      (1 + C'(h_UT) (5/4) (d_2D/100)^3 exp(-d_2D/150))`` beyond, with ``C'(h_UT) = 0`` for
      ``h_UT <= 13 m`` and ``((h_UT - 13)/10)^1.5`` for ``13 m < h_UT <= 23 m`` (UMa with ``h_UT``
      above 23 m raises ``ValueError``: the table does not define it).

    ``h_ut_m`` is only used by UMa. The result is clipped to [0, 1] (the UMa expression can exceed 1
    slightly for high terminals at mid distances).
    """
    scenario = _check_scenario(scenario)
    d = nonnegative(d_2d_m, "d_2d_m (2D distance in metres)")
    h_ut = _positive_scalar(h_ut_m, "h_ut_m")
    with np.errstate(divide="ignore", invalid="ignore"):
        if scenario == "RMa":
            p = np.where(d <= 10.0, 1.0, np.exp(-(d - 10.0) / 1000.0))
        elif scenario == "UMi":
            p = np.where(d <= 18.0, 1.0, 18.0 / d + np.exp(-d / 36.0) * (1.0 - 18.0 / d))
        else:  # UMa
            if h_ut > _UMA_MAX_UT_HEIGHT_M:
                raise ValueError(f"UMa LOS probability is defined for h_ut_m <= "
                                 f"{_UMA_MAX_UT_HEIGHT_M} m (Table 7.4.2-1), got {h_ut!r}")
            c_prime = 0.0 if h_ut <= 13.0 else ((h_ut - 13.0) / 10.0) ** 1.5
            base = 18.0 / d + np.exp(-d / 63.0) * (1.0 - 18.0 / d)
            corr = 1.0 + c_prime * 1.25 * (d / 100.0) ** 3 * np.exp(-d / 150.0)
            p = np.where(d <= 18.0, 1.0, base * corr)
    return scalar_or_array(np.clip(p, 0.0, 1.0))


def draw_los(rng: np.random.Generator, scenario: str, d_2d_m, h_ut_m: float = 1.5):
    """Draw the propagation condition: LOS with probability :func:`los_probability`.

    One uniform per link is always consumed (also where the probability is 0 or 1), so the random
    stream does not depend on the geometry (common random numbers). A scalar distance gives a Python
    ``bool``, an array a boolean array of the same shape.
    """
    check_rng(rng)
    p = np.asarray(los_probability(scenario, d_2d_m, h_ut_m))
    if p.ndim == 0:
        return bool(rng.random() < p)
    return rng.random(p.shape) < p


# --------------------------------------------------------------------------------------------------
# shadowing
# --------------------------------------------------------------------------------------------------
def shadowing_sigma_db(scenario: str, los: bool, d_2d_m=None, carrier_hz: float | None = None,
                       h_bs_m: float | None = None, h_ut_m: float = 1.5):
    """Shadow-fading standard deviation ``sigma_SF`` in dB, TR 38.901 Table 7.4.1-1:

    * UMa: LOS 4, NLOS 6.  * UMi-Street Canyon: LOS 4, NLOS 7.82.
    * RMa: LOS 4 for ``d_2D <= d_BP`` and 6 beyond (so ``d_2d_m`` and ``carrier_hz`` are required,
      ``ValueError`` otherwise); NLOS 8.

    ``d_2d_m`` may be an array (a scalar ``los`` is required); other scenarios ignore it.
    """
    scenario = _check_scenario(scenario)
    los = bool(los)
    if scenario == "UMa":
        return 4.0 if los else 6.0
    if scenario == "UMi":
        return 4.0 if los else 7.82
    if not los:
        return 8.0
    if d_2d_m is None or carrier_hz is None:
        raise ValueError("RMa LOS shadowing sigma depends on d_2D vs d_BP: give d_2d_m and carrier_hz")
    d_bp = breakpoint_distance_m(scenario, carrier_hz, h_bs_m, h_ut_m)
    d_2d = _d2d_m(d_2d_m)
    return scalar_or_array(np.where(d_2d <= d_bp, 4.0, 6.0))


def shadowing_decorrelation_m(scenario: str, los: bool) -> float:
    """Shadow-fading correlation distance in m, TR 38.901 Table 7.5-6 Part-1: UMa LOS 37 / NLOS 50,
    UMi-Street Canyon LOS 10 / NLOS 13, RMa LOS 37 / NLOS 120."""
    return SHADOWING_DECORRELATION_M[(_check_scenario(scenario), bool(los))]


class CorrelatedShadowing:
    """Spatially correlated log-normal shadowing field ``S(x, y)`` in dB, zero mean, standard deviation
    ``sigma_db`` and exponential autocorrelation ``E[S(r) S(r + delta)] = sigma^2 exp(-|delta| / d_corr)``
    (Gudmundson, Electronics Letters 27(23), 1991; TR 38.901 sec. 7.6.3.1, ``d_corr`` from Table 7.5-6).

    Implementation: sum of ``n_sinusoids`` random plane waves (spectral / random-phase method)::

        S(r) = sigma sqrt(2/N) sum_n cos(k_n . r + phi_n)

    with independent phases ``phi_n ~ U[0, 2 pi)``, directions ``theta_n ~ U[0, 2 pi)`` and wave numbers
    ``|k_n|`` drawn from the radial law of the 2-D power spectrum of ``exp(-r/d_corr)``, which is
    ``S(k) ∝ d_corr^2 / (1 + k^2 d_corr^2)^(3/2)``; its radial CDF is
    ``F(k) = 1 - 1/sqrt(1 + k^2 d_corr^2)``, sampled by inversion: ``k = sqrt((1-u)^-2 - 1) / d_corr``.
    Then ``E[cos(k . delta)] = exp(-|delta| / d_corr)`` exactly, so the correlation over realisations is
    exactly exponential; the marginal is Gaussian up to O(1/N) (central limit theorem), and the spatial
    mean square of one realisation is ``sigma^2`` exactly. All parameters are drawn once at construction,
    so ``value_db`` is a deterministic, continuous function of position, defined on the whole plane and
    independent of the order in which points are queried.
    """

    def __init__(self, sigma_db: float, decorrelation_m: float, rng: np.random.Generator,
                 n_sinusoids: int = 1024):
        sigma = nonnegative(sigma_db, "sigma_db")
        if sigma.ndim != 0 or not math.isfinite(float(sigma)):
            raise ValueError(f"sigma_db must be a finite scalar >= 0, got {sigma_db!r}")
        d_corr = _positive_scalar(decorrelation_m, "decorrelation_m")
        check_rng(rng)
        n = int(n_sinusoids)
        if n < 1 or n != n_sinusoids:
            raise ValueError(f"n_sinusoids must be a positive integer, got {n_sinusoids!r}")
        self.sigma_db = float(sigma)
        self.decorrelation_m = d_corr
        self.n_sinusoids = n
        u = rng.random(n)
        theta = rng.uniform(0.0, 2.0 * math.pi, n)
        self._phase = rng.uniform(0.0, 2.0 * math.pi, n)
        k = np.sqrt(1.0 / (1.0 - u) ** 2 - 1.0) / d_corr  # rad/m; u in [0, 1) so finite
        self._kx = k * np.cos(theta)
        self._ky = k * np.sin(theta)
        self._amp = self.sigma_db * math.sqrt(2.0 / n)

    def value_db(self, x_m, y_m):
        """Shadowing in dB at position(s) ``(x_m, y_m)`` (broadcasting); a scalar point gives a float."""
        x = as_float_array(x_m, "x_m")
        y = as_float_array(y_m, "y_m")
        x, y = np.broadcast_arrays(x, y)
        shape = x.shape
        xf = x.ravel()
        yf = y.ravel()
        out = np.empty(xf.size)
        for start in range(0, xf.size, _FIELD_CHUNK):
            sl = slice(start, start + _FIELD_CHUNK)
            arg = np.outer(xf[sl], self._kx) + np.outer(yf[sl], self._ky) + self._phase
            out[sl] = self._amp * np.cos(arg).sum(axis=1)
        return scalar_or_array(out.reshape(shape))

    def __repr__(self) -> str:
        return (f"CorrelatedShadowing(sigma_db={self.sigma_db!r}, "
                f"decorrelation_m={self.decorrelation_m!r}, n_sinusoids={self.n_sinusoids!r})")
