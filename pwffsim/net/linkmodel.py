"""Link-level abstraction of one direction of a cell: how a receiver's SINR becomes a rate.

The formulas are in :mod:`pwffsim.net.channel`; this module only picks one per direction, so a band
(:class:`pwffsim.net.radio.SharedBand`) calls ``link.rate_bps(bandwidth_hz, sinr)`` whichever is on.

* ``LinkAbstraction()`` (the default): the Shannon bound ``B log2(1 + SINR)`` (Yang et al.).
* ``LinkAbstraction.truncated(alpha, sinr_min_db, se_max)``: the truncated Shannon bound of 3GPP
  TR 36.942 Annex A.1.

Network side only (never torch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .channel import db_to_linear, shannon_rate_bps, truncated_shannon_rate_bps


@dataclass(frozen=True)
class LinkAbstraction:
    """SINR -> rate of one direction: Shannon unless ``is_truncated``."""

    is_truncated: bool = False
    alpha: float = 1.0
    sinr_min_linear: float = 0.0
    se_max_bps_per_hz: float = math.inf

    @classmethod
    def truncated(cls, alpha: float, sinr_min_db: float, se_max_bps_per_hz: float) -> "LinkAbstraction":
        """TR 36.942 A.1: 0 below ``sinr_min_db``, ``alpha B log2(1 + SINR)`` above, at most ``B se_max``."""
        return cls(True, float(alpha), float(db_to_linear(sinr_min_db)), float(se_max_bps_per_hz))

    def rate_bps(self, bandwidth_hz: float, sinr: float) -> float:
        """Rate (bit/s) of a receiver at ``sinr`` (linear) on ``bandwidth_hz``."""
        if not self.is_truncated:
            return shannon_rate_bps(bandwidth_hz, sinr)
        return truncated_shannon_rate_bps(bandwidth_hz, sinr, self.alpha, self.sinr_min_linear,
                                          self.se_max_bps_per_hz)

    def rates_bps(self, bandwidth_hz: float, sinr: np.ndarray) -> np.ndarray:
        """:meth:`rate_bps` of an array of SINRs on one bandwidth, as one vector operation (the same
        formulas: ``B log2(1 + SINR)``, truncated as TR 36.942 A.1 says when ``is_truncated``)."""
        shannon = bandwidth_hz * np.log2(1.0 + sinr)
        if not self.is_truncated:
            return shannon
        capped = np.minimum(self.alpha * shannon, bandwidth_hz * self.se_max_bps_per_hz)
        return np.where(sinr < self.sinr_min_linear, 0.0, capped)


SHANNON = LinkAbstraction()
