"""Wireless channel physics: unit conversions, SINR -> rate, fading and coherence time.

Path loss (models, formulas) is in :mod:`pwffsim.net.pathloss` and :mod:`pwffsim.net.tr38901`.

Network side only: numpy, scipy (imported when a Rayleigh capacity is asked for) and the standard
library (never torch).

Conventions
-----------
* Every quantity carries its unit in its name (``_m``, ``_hz``, ``_w``, ``_dbm``, ``_db``, ``_s``,
  ``_bps``); ``_linear`` marks a dimensionless power ratio.
* Formulas are small pure functions; each cites its source in its docstring.
* Random draws are separate functions that take a ``numpy.random.Generator``; nothing here touches a
  global random state.
* The numeric functions accept floats or numpy arrays (broadcasting); a scalar input gives a
  Python ``float`` back, an array input gives an array back.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .checks import as_float_array, check_rng, nonnegative, positive, scalar_or_array

__all__ = [
    "SPEED_OF_LIGHT_MPS",
    "FADING_KINDS",
    "dbm_to_w",
    "w_to_dbm",
    "db_to_linear",
    "linear_to_db",
    "noise_power_w",
    "effective_noise_density_w_per_hz",
    "sinr_linear",
    "shannon_rate_bps",
    "fdma_rate_bps",
    "truncated_shannon_rate_bps",
    "packet_error_rate",
    "rayleigh_ergodic_capacity_bps",
    "rayleigh_outage_probability",
    "coherence_time_s",
    "draw_shadowing_db",
    "draw_fading_power",
    "BlockFading",
]

SPEED_OF_LIGHT_MPS = 299_792_458.0
"""Speed of light in vacuum, m/s (exact, SI definition)."""

FADING_KINDS = ("none", "rayleigh", "rician")

# Tolerance (in units of one block) used to put a time lying on a block boundary into the new block.
_BLOCK_EDGE_TOL = 1e-9


# --------------------------------------------------------------------------------------------------
# unit conversions
# --------------------------------------------------------------------------------------------------
def dbm_to_w(p_dbm: float) -> float:
    """Power in dBm -> watts: ``P_W = 10^(P_dBm/10) / 1000`` (definition of the dBm)."""
    return scalar_or_array(10.0 ** (as_float_array(p_dbm, "p_dbm") / 10.0) / 1000.0)


def w_to_dbm(p_w: float) -> float:
    """Power in watts -> dBm: ``10 log10(1000 P_W)``; 0 W gives -inf dBm (definition of the dBm)."""
    arr = nonnegative(p_w, "p_w (power in watts)")
    with np.errstate(divide="ignore"):
        return scalar_or_array(10.0 * np.log10(arr * 1000.0))


def db_to_linear(x_db):
    """Power ratio in dB -> linear: ``10^(x/10)``."""
    return scalar_or_array(10.0 ** (as_float_array(x_db, "x_db") / 10.0))


def linear_to_db(x):
    """Linear power ratio -> dB: ``10 log10(x)``; 0 gives -inf dB."""
    arr = nonnegative(x, "x (linear power ratio)")
    with np.errstate(divide="ignore"):
        return scalar_or_array(10.0 * np.log10(arr))


def noise_power_w(noise_density_dbm_hz: float, bandwidth_hz: float) -> float:
    """Thermal noise power over a band: ``N = N0 * B`` with ``N0`` given in dBm/Hz.

    E.g. -174 dBm/Hz (kT at 290 K) over 1 MHz is -114 dBm ~ 3.98e-15 W.
    """
    b = nonnegative(bandwidth_hz, "bandwidth_hz")
    n0_w_per_hz = np.asarray(dbm_to_w(noise_density_dbm_hz))
    return scalar_or_array(n0_w_per_hz * b)


def effective_noise_density_w_per_hz(noise_density_w_per_hz, noise_figure_db):
    """Noise density a receiver with noise figure ``NF`` sees: ``N0 10^(NF/10)`` (W/Hz); ``NF = 0`` dB
    gives ``N0`` bit for bit.  Source: Friis, "Noise figures of radio receivers", Proc. IRE 1944 (the
    noise factor ``10^(NF/10)`` multiplies the input-referred thermal noise)."""
    n0 = nonnegative(noise_density_w_per_hz, "noise_density_w_per_hz")
    return scalar_or_array(n0 * 10.0 ** (nonnegative(noise_figure_db, "noise_figure_db") / 10.0))


# --------------------------------------------------------------------------------------------------
# SINR and rates
# --------------------------------------------------------------------------------------------------
# Each formula is written once, as a scalar kernel; arrays map the same kernel (np.vectorize), so a
# scalar and an array element give the same bits.  Scalars skip numpy's array machinery: the band
# recomputes rates on every change, and the numpy version cost ~37 us per call.
_SCALAR_TYPES = frozenset((float, int, np.float64))
_SINR_ARGS = ("power_w", "gain", "noise_density_w_per_hz", "bandwidth_hz", "interference_psd_w_per_hz")
_FDMA_ARGS = ("bandwidth_hz",) + _SINR_ARGS[:3] + _SINR_ARGS[4:]


def _sinr_kernel(p, g, n0, b, i0):
    """``p g / ((N0 + I0) B)``: the one place of the SINR formula.  A zero signal gives 0 (also an
    infinite power on a zero gain: no gain, no signal), a positive signal over zero noise ``inf``."""
    if p == 0 or g == 0:  # no power or no gain: no signal (the arguments are checked >= 0)
        return 0.0
    signal = p * g
    noise = (n0 + i0) * b
    if noise == 0:
        return math.inf
    return signal / noise


def _shannon_kernel(b, sinr):
    """``B log2(1 + sinr)``: the one place of the Shannon formula; ``B = 0`` gives 0.  ``np.log2``,
    not ``math.log2``: the two differ in the last bit for about 0.1% of arguments."""
    if b == 0:
        return 0.0
    return b * np.log2(1.0 + sinr)


_sinr_array = np.vectorize(_sinr_kernel, otypes=[float])
_shannon_array = np.vectorize(_shannon_kernel, otypes=[float])


def _checked(args: tuple, names: tuple) -> tuple | None:
    """``args`` if they are all real scalars >= 0 (``ValueError`` if one is negative or NaN);
    ``None`` if any of them is not a plain scalar (the caller takes the array path)."""
    for x in args:
        if type(x) not in _SCALAR_TYPES:
            return None
    for x, name in zip(args, names):
        if not x >= 0:
            raise ValueError(f"{name} must be >= 0 and not NaN, got {x!r}")
    return args


def _checked_arrays(args: tuple, names: tuple) -> list[np.ndarray]:
    return [nonnegative(x, name) for x, name in zip(args, names)]


def sinr_linear(power_w, gain, noise_density_w_per_hz, bandwidth_hz, interference_psd_w_per_hz=0.0):
    """Received SINR ``p g / ((N0 + I0) B)`` (linear), ``I0`` the interference power spectral
    density in W/Hz (0: the SNR).  A zero signal (``p = 0`` or ``g = 0``, even with ``p = inf``)
    gives 0; ``B = 0`` with a positive signal ``inf``.

    Source: standard FDMA uplink model, Yang et al. IEEE TWC 2021, eq. for ``r_k``, with the
    interference of other cells added to the noise.
    """
    args = (power_w, gain, noise_density_w_per_hz, bandwidth_hz, interference_psd_w_per_hz)
    if _checked(args, _SINR_ARGS) is not None:
        return float(_sinr_kernel(*args))
    return scalar_or_array(_sinr_array(*_checked_arrays(args, _SINR_ARGS)))


def shannon_rate_bps(bandwidth_hz, sinr_linear):
    """Shannon capacity ``B log2(1 + sinr)`` bit/s (Shannon 1948). ``B = 0`` gives 0."""
    args = (bandwidth_hz, sinr_linear)
    if _checked(args, ("bandwidth_hz", "sinr_linear")) is not None:
        return float(_shannon_kernel(*args))
    return scalar_or_array(_shannon_array(*_checked_arrays(args, ("bandwidth_hz", "sinr_linear"))))


def fdma_rate_bps(bandwidth_hz, power_w, gain, noise_density_w_per_hz, interference_psd_w_per_hz=0.0):
    """FDMA rate of one transfer on its share ``B`` of the band (uplink or downlink alike): the
    Shannon rate at the SINR, ``r = B log2(1 + p g / ((N0 + I0) B))`` bit/s; ``B = 0`` gives 0.

    Source: Yang et al., "Energy Efficient Federated Learning Over Wireless Communication Networks",
    IEEE TWC 2021 (uplink rate of user k with bandwidth b_k), with interference added to the noise.
    """
    b, p, g, n0, i0 = args = (bandwidth_hz, power_w, gain, noise_density_w_per_hz,
                              interference_psd_w_per_hz)
    if _checked(args, _FDMA_ARGS) is not None:
        return float(_shannon_kernel(b, _sinr_kernel(p, g, n0, b, i0)))
    b, p, g, n0, i0 = _checked_arrays(args, _FDMA_ARGS)
    return scalar_or_array(_shannon_array(b, _sinr_array(p, g, n0, b, i0)))


def _truncated_kernel(b, sinr, alpha, sinr_min, se_max):
    """``0`` below ``sinr_min``, else ``min(alpha B log2(1 + sinr), B se_max)``: the one place of the
    truncated Shannon formula (its log2 term is the Shannon kernel's)."""
    if b == 0 or sinr < sinr_min:
        return 0.0
    return min(alpha * _shannon_kernel(b, sinr), b * se_max)


_truncated_array = np.vectorize(_truncated_kernel, otypes=[float])


def truncated_shannon_rate_bps(bandwidth_hz, sinr_linear, alpha, sinr_min_linear, se_max_bps_per_hz):
    """Attenuated, truncated Shannon bound (link adaptation over a finite set of modulation and coding
    schemes): ``0`` for ``SINR < SINR_min``, else ``alpha B log2(1 + SINR)`` capped at ``B SE_max``.

    Source: 3GPP TR 36.942, Annex A.1 (``Thr = 0`` below ``SINR_MIN``, ``alpha S(SINR)`` up to
    ``SINR_MAX``, ``Thr_MAX`` above; LTE: downlink 0.6, -10 dB, 4.4 bit/s/Hz, uplink 0.4, -10 dB,
    2.0 bit/s/Hz).  ``B = 0`` gives 0."""
    args = (bandwidth_hz, sinr_linear, alpha, sinr_min_linear, se_max_bps_per_hz)
    names = ("bandwidth_hz", "sinr_linear", "alpha", "sinr_min_linear", "se_max_bps_per_hz")
    positive(alpha, "alpha"), positive(se_max_bps_per_hz, "se_max_bps_per_hz")
    if _checked(args, names) is not None:
        return float(_truncated_kernel(*args))
    return scalar_or_array(_truncated_array(*_checked_arrays(args, names)))


def packet_error_rate(waterfall_m, sinr_linear):
    """Packet error rate of an uplink transmission at SINR ``gamma``:
    ``q = 1 - exp(-m (I + B N0) / (P h)) = 1 - exp(-m / gamma)``, ``m`` the waterfall threshold.

    Source: M. Chen, Z. Yang, W. Saad, C. Yin, H. V. Poor, S. Cui, "A joint learning and
    communications framework for federated learning over wireless networks", IEEE TWC 20(1), 2021,
    sec. II.  ``m > 0``; ``gamma = 0`` gives 1, ``gamma = inf`` gives 0."""
    m = float(positive(waterfall_m, "waterfall_m"))
    g = nonnegative(sinr_linear, "sinr_linear")
    with np.errstate(divide="ignore"):
        return scalar_or_array(-np.expm1(-m / g))


def _exp_e1(x: np.ndarray) -> np.ndarray:
    """``exp(x) E1(x)`` for x > 0, without overflow.

    Direct ``exp(x) * scipy.special.exp1(x)`` for x < 700; beyond, the asymptotic series
    ``(1/x) sum_k (-1)^k k! / x^k`` (Abramowitz & Stegun 5.1.51), truncated after k = 5
    (relative error < 720/x^6 ~ 6e-15 at x = 700).
    """
    import scipy.special  # here, not at module level: importing scipy.special costs ~0.3 s

    x = np.asarray(x, dtype=float)
    out = np.empty_like(x)
    small = x < 700.0
    xs = x[small]
    out[small] = np.exp(xs) * scipy.special.exp1(xs)
    xl = x[~small]
    inv = 1.0 / xl
    series = 1.0 + inv * (-1.0 + inv * (2.0 + inv * (-6.0 + inv * (24.0 + inv * (-120.0)))))
    out[~small] = inv * series
    return out


def rayleigh_ergodic_capacity_bps(bandwidth_hz, mean_snr_linear):
    """Ergodic capacity of a Rayleigh-faded link with mean SNR ``rho``:
    ``B E[log2(1 + rho |h|^2)] = B exp(1/rho) E1(1/rho) / ln 2`` bit/s, ``|h|^2 ~ Exp(1)``.

    Source: e.g. Alouini & Goldsmith, IEEE TVT 1999 ("Capacity of Rayleigh fading channels under
    different adaptive transmission ... techniques"), eq. (34); E1 via ``scipy.special.exp1``.
    ``rho = 0`` or ``B = 0`` gives 0; ``rho = inf`` gives inf.
    """
    b = nonnegative(bandwidth_hz, "bandwidth_hz")
    rho = nonnegative(mean_snr_linear, "mean_snr_linear")
    b, rho = np.broadcast_arrays(b, rho)
    b = np.array(b, dtype=float)
    rho = np.array(rho, dtype=float)
    out = np.zeros(np.broadcast(b, rho).shape)
    pos = (rho > 0) & (b > 0)
    finite = pos & np.isfinite(rho)
    out[finite] = b[finite] * _exp_e1(1.0 / rho[finite]) / math.log(2.0)
    out[pos & ~np.isfinite(rho)] = math.inf
    return scalar_or_array(out)


def rayleigh_outage_probability(rate_bps, bandwidth_hz, mean_snr_linear):
    """Outage probability under Rayleigh fading:
    ``P(B log2(1 + rho |h|^2) < R) = 1 - exp(-(2^(R/B) - 1) / rho)``.

    Source: Tse & Viswanath, "Fundamentals of Wireless Communication" (2005), sec. 5.4.1.
    ``R = 0`` gives 0; ``R > 0`` with ``B = 0`` or ``rho = 0`` gives 1.
    """
    r = nonnegative(rate_bps, "rate_bps")
    b = nonnegative(bandwidth_hz, "bandwidth_hz")
    rho = nonnegative(mean_snr_linear, "mean_snr_linear")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        threshold = np.expm1(np.log(2.0) * r / b)  # 2^(R/B) - 1, exact for small R/B
        p = -np.expm1(-threshold / rho)
        p = np.where(r == 0, 0.0, p)
        p = np.where((r > 0) & ((b == 0) | (rho == 0)), 1.0, p)
    return scalar_or_array(np.clip(p, 0.0, 1.0))


def coherence_time_s(speed_mps: float, carrier_hz: float) -> float:
    """Coherence time ``T_c = 0.423 / f_D`` with maximum Doppler ``f_D = v f / c``.

    Source: Rappaport, "Wireless Communications: Principles and Practice", 2nd ed., eq. (5.40.c)
    (geometric mean of the 50%-correlation and 1/f_D rules). Speed 0 gives ``math.inf``.
    """
    v = float(nonnegative(speed_mps, "speed_mps"))
    f = float(positive(carrier_hz, "carrier_hz"))
    if v == 0.0:
        return math.inf
    f_doppler_hz = v * f / SPEED_OF_LIGHT_MPS
    return 0.423 / f_doppler_hz


# --------------------------------------------------------------------------------------------------
# random draws
# --------------------------------------------------------------------------------------------------
def draw_shadowing_db(rng: np.random.Generator, sigma_db: float, size=None):
    """Log-normal shadowing in dB: ``X ~ N(0, sigma_db^2)``.

    The standard normal draws are always consumed (also for ``sigma_db = 0``, which returns zeros), so
    that changing sigma does not shift the rest of the random stream (common random numbers).
    """
    check_rng(rng)
    sigma = float(nonnegative(sigma_db, "sigma_db"))
    z = rng.standard_normal(size)
    if sigma == 0.0:
        return 0.0 if size is None else np.zeros(np.shape(z))
    x = sigma * z
    return float(x) if size is None else x


def draw_fading_power(rng: np.random.Generator, kind: str, size=None, rician_k_db: float = 0.0):
    """Small-scale fading power gain ``|h|^2`` with unit mean.

    * ``"none"``: 1 (no draw is consumed).
    * ``"rayleigh"``: ``|h|^2 ~ Exp(1)`` (h ~ CN(0, 1)).
    * ``"rician"``: ``h = sqrt(K/(K+1)) + sqrt(1/(K+1)) CN(0, 1)``, ``K = 10^(rician_k_db/10)``
      (Goldsmith, "Wireless Communications" 2005, sec. 3.2.1); ``E|h|^2 = 1``.
    """
    check_rng(rng)
    if kind == "none":
        return 1.0 if size is None else np.ones(size)
    if kind == "rayleigh":
        x = rng.standard_exponential(size)
        return float(x) if size is None else x
    if kind == "rician":
        k_db = float(as_float_array(rician_k_db, "rician_k_db"))
        k = 10.0 ** (k_db / 10.0)
        los = math.sqrt(k / (k + 1.0))
        scatter = math.sqrt(1.0 / (k + 1.0))
        shape = () if size is None else (size if isinstance(size, tuple) else (size,))
        z = rng.standard_normal((2,) + tuple(shape)) * math.sqrt(0.5)  # CN(0,1): re, im ~ N(0, 1/2)
        x = (los + scatter * z[0]) ** 2 + (scatter * z[1]) ** 2
        return float(x) if size is None else x
    raise ValueError(f"unknown fading kind {kind!r}; expected one of {list(FADING_KINDS)}")


from .fading import BlockFading  # noqa: E402  (re-exported; it draws with draw_fading_power)
