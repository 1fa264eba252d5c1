"""Path-loss models behind one interface: one class per model, one registry of their names.

A model is made from the scenario's channel section (``from_channel``: the shadowing sigma, if the
scenario sets one) and answers four questions about a (device, cell) link, from its geometry and
carrier:

* ``path_loss_db``: the mean path loss for a propagation condition (LOS or NLOS);
* ``los_probability``: the probability that the link is in line of sight;
* ``shadowing_sigma_db``: the standard deviation of the log-normal shadowing in that condition;
* ``decorrelation_distance_m``: the distance over which the shadowing decorrelates (for spatially
  correlated shadowing).

:class:`~pwffsim.net.links.LinkBudget` asks these questions and draws the random parts (LOS state,
shadowing) itself, so a model is deterministic.  The formulas stay cited small functions: those of
the single-slope models here (:func:`path_loss_macro_db`, :func:`path_loss_free_space_db`), those of
TR 38.901 in :mod:`pwffsim.net.tr38901`; the classes only bind them to one model.

Adding a model: one class following :class:`PathLossModel` (a ``name``, ``from_channel`` and the
four methods), in any module, plus its line in
:data:`~pwffsim.net.pathloss_registry.PATH_LOSS_REGISTRY` (which the scenario's ``channel.path_loss``
reads without importing numpy); :data:`PATH_LOSS_MODELS` maps the registered names to their classes.

Network side only: numpy and the standard library (never torch).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np

from . import tr38901
from .channel import SPEED_OF_LIGHT_MPS
from .checks import nonnegative, positive, scalar_or_array
from .pathloss_registry import PATH_LOSS_REGISTRY, path_loss_class

__all__ = [
    "path_loss_macro_db",
    "path_loss_free_space_db",
    "PathLossModel",
    "Macro36814",
    "FreeSpace",
    "UMa",
    "UMiStreetCanyon",
    "RMa",
    "PATH_LOSS_MODELS",
    "make_path_loss_model",
]


_MIN_DISTANCE_M = 1.0


# --------------------------------------------------------------------------------------------------
# single-slope formulas
# --------------------------------------------------------------------------------------------------
def _distance_m(d_m: Any) -> Any:
    """``d_m`` clamped to >= 1 m: a Python float for a Python float or int (the per-link fast path, no
    array checks), else an array."""
    if type(d_m) is float or type(d_m) is int:
        if not d_m >= 0:  # negative or NaN
            nonnegative(d_m, "d_m (distance in metres)")  # raises the usual error
        return max(float(d_m), _MIN_DISTANCE_M)
    d = nonnegative(d_m, "d_m (distance in metres)")
    return np.maximum(d, _MIN_DISTANCE_M)


def path_loss_macro_db(d_m):
    """Macro-cell path loss ``128.1 + 37.6 log10(d_km)`` dB.

    Source: 3GPP TR 36.814 V9.0.0, Table A.2.1.1.2-3 (macro cell, 2 GHz carrier), the model used by
    Yang et al. (IEEE TWC 2021) and Chen et al. (IEEE TWC 2021). ``d_m`` is clamped to >= 1 m.
    """
    d_km = _distance_m(d_m) / 1000.0
    if type(d_km) is float:  # numpy's log10 all the same: bit-identical to the array path
        return float(128.1 + 37.6 * np.log10(d_km))
    return scalar_or_array(128.1 + 37.6 * np.log10(d_km))


def path_loss_free_space_db(d_m, carrier_hz):
    """Free-space path loss ``20 log10(4 pi d f / c)`` dB (Friis transmission equation, isotropic
    antennas). ``d_m`` is clamped to >= 1 m."""
    d = _distance_m(d_m)
    if type(d) is float and type(carrier_hz) is float and carrier_hz > 0:
        return float(20.0 * np.log10(4.0 * math.pi * d * carrier_hz / SPEED_OF_LIGHT_MPS))
    f = positive(carrier_hz, "carrier_hz")
    return scalar_or_array(20.0 * np.log10(4.0 * math.pi * d * f / SPEED_OF_LIGHT_MPS))


# --------------------------------------------------------------------------------------------------
# the interface
# --------------------------------------------------------------------------------------------------
@runtime_checkable
class PathLossModel(Protocol):
    """What :class:`~pwffsim.net.links.LinkBudget` asks a path-loss model.

    Distances are 2D (horizontal) distances in m; ``h_bs_m`` / ``h_ut_m`` are the antenna heights of
    the base station and the user terminal (``h_bs_m=None``: the model's default, e.g. the standard's
    mast height); ``los`` is the propagation condition (a model without one treats every link as LOS).
    """

    name: str

    @classmethod
    def from_channel(cls, shadowing_sigma_db: Optional[float] = None) -> "PathLossModel":
        """The model as the scenario's channel section configures it: ``shadowing_sigma_db`` (set in
        ``channel.shadowing_sigma_db``) is the shadowing sigma of every link, in every LOS state;
        ``None`` keeps the model's own (the standard's, or a default)."""
        ...

    def path_loss_db(self, d_2d_m: float, carrier_hz: float, los: bool = True,
                     h_bs_m: Optional[float] = None, h_ut_m: float = 1.5) -> float:
        """Mean path loss in dB."""
        ...

    def los_probability(self, d_2d_m: float, h_ut_m: float = 1.5) -> float:
        """Probability of line of sight, in [0, 1]."""
        ...

    def shadowing_sigma_db(self, los: bool, d_2d_m: float, carrier_hz: float,
                           h_bs_m: Optional[float] = None, h_ut_m: float = 1.5) -> float:
        """Standard deviation of the log-normal shadowing in dB."""
        ...

    def decorrelation_distance_m(self, los: bool) -> float:
        """Shadowing decorrelation distance in m."""
        ...


# --------------------------------------------------------------------------------------------------
# single-slope models: always LOS, the scenario's shadowing sigma
# --------------------------------------------------------------------------------------------------
class _SingleSlope:
    """A model with no LOS state (every link is LOS) and one shadowing sigma, 8 dB unless the scenario
    sets ``channel.shadowing_sigma_db``."""

    name = ""
    DEFAULT_SIGMA_DB = 8.0
    """Shadowing sigma (dB) when the scenario sets none (TR 36.814 Table A.2.1.1.2-3: 8 dB)."""
    DECORRELATION_M = 50.0
    """Shadowing decorrelation distance (m) used for these models: 50 m (the UMa NLOS value of
    TR 38.901 Table 7.5-6; these models define none)."""

    def __init__(self, shadowing_sigma_db: float = DEFAULT_SIGMA_DB):
        self.sigma_db = float(shadowing_sigma_db)

    @classmethod
    def from_channel(cls, shadowing_sigma_db: Optional[float] = None) -> "_SingleSlope":
        """The model with the scenario's shadowing sigma (8 dB if it sets none)."""
        return cls(cls.DEFAULT_SIGMA_DB if shadowing_sigma_db is None else shadowing_sigma_db)

    def los_probability(self, d_2d_m: float, h_ut_m: float = 1.5) -> float:
        return 1.0

    def shadowing_sigma_db(self, los: bool, d_2d_m: float, carrier_hz: float,
                           h_bs_m: Optional[float] = None, h_ut_m: float = 1.5) -> float:
        return self.sigma_db

    def decorrelation_distance_m(self, los: bool) -> float:
        return self.DECORRELATION_M

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shadowing_sigma_db={self.sigma_db!r})"


class Macro36814(_SingleSlope):
    """Macro cell ``128.1 + 37.6 log10(d_km)`` dB, 3GPP TR 36.814 Table A.2.1.1.2-3 (2 GHz; the
    carrier and the heights are ignored), see :func:`path_loss_macro_db`."""

    name = "macro-128.1-37.6"

    def path_loss_db(self, d_2d_m: float, carrier_hz: float, los: bool = True,
                     h_bs_m: Optional[float] = None, h_ut_m: float = 1.5) -> float:
        return path_loss_macro_db(d_2d_m)


class FreeSpace(_SingleSlope):
    """Free space ``20 log10(4 pi d f / c)`` dB (Friis) over the 2D distance (heights ignored), see
    :func:`path_loss_free_space_db`."""

    name = "free-space"

    def path_loss_db(self, d_2d_m: float, carrier_hz: float, los: bool = True,
                     h_bs_m: Optional[float] = None, h_ut_m: float = 1.5) -> float:
        return path_loss_free_space_db(d_2d_m, carrier_hz)


# --------------------------------------------------------------------------------------------------
# 3GPP TR 38.901 models: LOS probability, the standard's sigma and decorrelation distances
# --------------------------------------------------------------------------------------------------
class _TR38901:
    """One scenario of TR 38.901 V17.0.0 (outdoor terminals): Tables 7.4.1-1 (path loss, sigma_SF),
    7.4.2-1 (LOS probability) and 7.5-6 (decorrelation distance), via :mod:`pwffsim.net.tr38901`.

    ``shadowing_sigma_db``: ``None`` (default) gives the standard's sigma for the LOS state; a value
    replaces it in every state (0: no shadowing)."""

    name = ""

    def __init__(self, shadowing_sigma_db: Optional[float] = None):
        self.sigma_db = None if shadowing_sigma_db is None else float(shadowing_sigma_db)

    @classmethod
    def from_channel(cls, shadowing_sigma_db: Optional[float] = None) -> "_TR38901":
        """The model with the standard's sigma, or the scenario's if it sets one."""
        return cls(shadowing_sigma_db)

    def path_loss_db(self, d_2d_m: float, carrier_hz: float, los: bool = True,
                     h_bs_m: Optional[float] = None, h_ut_m: float = 1.5) -> float:
        return tr38901.path_loss_db(self.name, d_2d_m, carrier_hz, los, h_bs_m=h_bs_m, h_ut_m=h_ut_m)

    def los_probability(self, d_2d_m: float, h_ut_m: float = 1.5) -> float:
        return tr38901.los_probability(self.name, d_2d_m, h_ut_m=h_ut_m)

    def shadowing_sigma_db(self, los: bool, d_2d_m: float, carrier_hz: float,
                           h_bs_m: Optional[float] = None, h_ut_m: float = 1.5) -> float:
        if self.sigma_db is not None:
            return self.sigma_db
        return tr38901.shadowing_sigma_db(self.name, los, d_2d_m=d_2d_m, carrier_hz=carrier_hz,
                                          h_bs_m=h_bs_m, h_ut_m=h_ut_m)

    def decorrelation_distance_m(self, los: bool) -> float:
        return tr38901.shadowing_decorrelation_m(self.name, los)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shadowing_sigma_db={self.sigma_db!r})"


class UMa(_TR38901):
    """Urban macro (TR 38.901), default BS height 25 m."""

    name = "UMa"


class UMiStreetCanyon(_TR38901):
    """Urban micro, street canyon (TR 38.901), default BS height 10 m."""

    name = "UMi"


class RMa(_TR38901):
    """Rural macro (TR 38.901), default BS height 35 m, street width 20 m, building height 5 m."""

    name = "RMa"


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------
PATH_LOSS_MODELS: dict[str, type] = {name: path_loss_class(name) for name in PATH_LOSS_REGISTRY}
"""Name (as in the scenario's ``channel.path_loss``) -> model class, for the models registered when
this module was imported (:data:`~pwffsim.net.pathloss_registry.PATH_LOSS_REGISTRY` is the registry)."""


def make_path_loss_model(name: str, shadowing_sigma_db: Optional[float] = None) -> PathLossModel:
    """The model registered as ``name``, configured as the scenario's channel section does it:
    ``shadowing_sigma_db`` (``channel.shadowing_sigma_db`` when set) replaces the model's sigma,
    ``None`` keeps it."""
    return path_loss_class(name).from_channel(shadowing_sigma_db)
