"""Large-scale link gains between moving devices and cells, and the A3 handover rule.

:class:`LinkBudget` gives the large-scale gain (path loss, LOS state, shadowing) of every
(device, cell) link at a position.  It asks a path-loss model (:mod:`pwffsim.net.pathloss`: path loss,
LOS probability, shadowing sigma, decorrelation distance) and draws the random parts per link from
their own streams, so a link's realisation never depends on query order:

* LOS iff ``u < P_LOS(d)`` with one uniform ``u`` per link (so a moving device's LOS state changes
  consistently with its distance); models without a LOS state (``macro-128.1-37.6``, ``free-space``)
  give ``P_LOS = 1``.  The shadowing sigma is the model's for the current LOS state (the model
  carries the scenario's sigma when the scenario sets one, see
  :func:`~pwffsim.net.pathloss.make_path_loss_model`).
* Shadowing is either one N(0, 1) draw per link (scaled by sigma) or, with ``correlated=True``, a
  spatially correlated field per cell and LOS state (Gudmundson exponential autocorrelation with the
  model's decorrelation distance), evaluated at the device's position.

:class:`A3Handover` is the event-A3 rule: hand over to the strongest neighbour once it has been
better than the serving cell by ``hysteresis_db`` for ``time_to_trigger_s`` continuously.

Never imports torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .pathloss import PathLossModel
from .tr38901 import CorrelatedShadowing


@dataclass
class CellSite:
    x_m: float
    y_m: float
    height_m: Optional[float]  # None: the path-loss model's default (the standard's mast height)
    carrier_hz: float
    tx_power_dbm: float


@dataclass(frozen=True)
class LinkComponents:
    """The large-scale parts of one link at one position."""

    distance_m: float      # 2D distance to the base station (m)
    los: bool              # line-of-sight state
    path_loss_db: float    # the path-loss model's loss for that distance and LOS state (dB)
    shadowing_db: float    # the shadowing loss drawn for the link (dB; positive = weaker)

    @property
    def gain_db(self) -> float:
        return -(self.path_loss_db + self.shadowing_db)


class LinkBudget:
    """Large-scale gain (dB, negative) of device ``k`` towards cell ``j`` at position ``xy``.

    ``model`` is a :class:`~pwffsim.net.pathloss.PathLossModel` object, with its shadowing sigma
    (``make_path_loss_model(name, sigma)`` makes one as the scenario does).
    """

    def __init__(self, model: PathLossModel, cells: Sequence[CellSite],
                 rng_for: Callable[..., np.random.Generator], n_devices: int, correlated: bool = False,
                 ue_height_m: float = 1.5):
        if not isinstance(model, PathLossModel):
            raise TypeError(f"model must be a PathLossModel (make_path_loss_model(name, sigma) makes one), "
                            f"got {model!r}")
        self.path_loss_model: PathLossModel = model
        self.cells = list(cells)
        self.ue_height_m = float(ue_height_m)
        self.correlated = correlated
        self.n_devices = int(n_devices)
        self._rng_for = rng_for
        # One uniform (LOS) and one standard normal (shadowing) per link, from the device's own stream,
        # drawn on the device's first query (so a device nobody asks about costs nothing, and the
        # realisation does not depend on which device is asked first).
        self._draws: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._fields: dict[tuple[int, bool], CorrelatedShadowing] = {}
        if correlated:
            for j in range(len(self.cells)):
                for los in (True, False):
                    d_corr = self.path_loss_model.decorrelation_distance_m(los)
                    self._fields[(j, los)] = CorrelatedShadowing(1.0, d_corr, rng_for(10_000 + j, int(los)))

    def link_draws(self, device: int) -> tuple[np.ndarray, np.ndarray]:
        """The device's LOS uniforms and shadowing normals towards every cell (drawn on first use)."""
        d = self._draws.get(device)
        if d is None:
            if not 0 <= device < self.n_devices:
                raise IndexError(f"device {device} out of range ({self.n_devices} devices)")
            rng = self._rng_for(device)
            n_cells = len(self.cells)
            d = self._draws[device] = (rng.uniform(size=n_cells), rng.standard_normal(size=n_cells))
        return d

    def distance_2d_m(self, cell: int, xy: np.ndarray) -> float:
        c = self.cells[cell]
        return float(math.hypot(xy[0] - c.x_m, xy[1] - c.y_m))

    def los(self, device: int, cell: int, xy: np.ndarray) -> bool:
        """LOS state of the link at ``xy``: ``u < P_LOS(d_2D)`` (always true where ``P_LOS = 1``,
        since ``u`` is in [0, 1))."""
        p = self.path_loss_model.los_probability(self.distance_2d_m(cell, xy), h_ut_m=self.ue_height_m)
        return bool(self.link_draws(device)[0][cell] < p)

    def components(self, device: int, cell: int, xy: np.ndarray) -> "LinkComponents":
        """What the large-scale gain of the link at ``xy`` is made of."""
        c = self.cells[cell]
        d = self.distance_2d_m(cell, xy)
        m = self.path_loss_model
        los = self.los(device, cell, xy)
        pl = m.path_loss_db(d, c.carrier_hz, los, h_bs_m=c.height_m, h_ut_m=self.ue_height_m)
        sigma = m.shadowing_sigma_db(los, d, c.carrier_hz, h_bs_m=c.height_m, h_ut_m=self.ue_height_m)
        if self.correlated:
            z = self._fields[(cell, los)].value_db(float(xy[0]), float(xy[1]))
        else:
            z = self.link_draws(device)[1][cell]
        return LinkComponents(d, los, float(pl), sigma * float(z))

    def gain_db(self, device: int, cell: int, xy: Optional[np.ndarray]) -> float:
        """Large-scale gain in dB (``-inf`` when the device is out of coverage, ``xy is None``)."""
        return -math.inf if xy is None else self.components(device, cell, xy).gain_db

    def rsrp_dbm(self, device: int, xy: Optional[np.ndarray]) -> np.ndarray:
        """Mean received power from every cell (dBm): BS power plus large-scale gain (no fading)."""
        return np.array([c.tx_power_dbm + self.gain_db(device, j, xy) for j, c in enumerate(self.cells)])


class A3Handover:
    """Event A3 with hysteresis and time-to-trigger (3GPP TS 38.331 sec. 5.5.4.4, simplified).

    Feed it the RSRP of every cell at successive sample times; :meth:`update` returns the target cell
    when a neighbour has stayed better than the serving cell by more than ``hysteresis_db`` for at
    least ``time_to_trigger_s`` (checked at the sample times, so the handover time is exact to one
    sampling step), else ``None``.
    """

    def __init__(self, hysteresis_db: float, time_to_trigger_s: float):
        self.hysteresis_db = float(hysteresis_db)
        self.time_to_trigger_s = float(time_to_trigger_s)
        self._candidate: Optional[int] = None
        self._since_s = math.nan

    def update(self, t_s: float, rsrp_dbm: np.ndarray, serving: int) -> Optional[int]:
        best = int(np.argmax(rsrp_dbm))
        if best != serving and rsrp_dbm[best] > rsrp_dbm[serving] + self.hysteresis_db:
            if self._candidate != best:
                self._candidate, self._since_s = best, t_s
            if t_s - self._since_s >= self.time_to_trigger_s - 1e-12:
                self._candidate, self._since_s = None, math.nan
                return best
        else:
            self._candidate, self._since_s = None, math.nan
        return None
