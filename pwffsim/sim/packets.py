"""Packet errors on uploads and their retransmission (``channel.packet_errors``; off by default).

An upload attempt that delivers all its bits fails with Chen et al.'s packet error rate
``q = 1 - exp(-m (I + B N0) / (P h)) = 1 - exp(-m / SINR)`` (:func:`pwffsim.net.channel.packet_error_rate`).
The SINR of an attempt whose SINR changed on the way (FDMA shares, fading blocks, interference) is the
bit-weighted harmonic mean of the SINRs its bits were sent at: ``1/SINR = sum_i (b_i / b) / SINR_i``,
``b_i`` the bits sent at ``SINR_i`` (so ``1 - q = prod_i (1 - q_i)^(b_i / b)``, and a constant SINR
gives Chen et al.'s formula exactly).  A failed attempt (status ``error`` in the events table) is
sent again in full at once; there is no limit on attempts but the round's own stops (deadline,
offline, battery).

Each attempt's uniform draw comes from its own stream ``SeedSequence([seed, STREAM_PACKET_ERRORS,
device, upload, attempt])``, ``upload`` counting the device's uploads from 0 (under a synchronous
policy with the device in every round, its round index): runs are reproducible, two uploads of one
device between two asynchronous aggregations draw independently, and two policies on one seed see
the same draw for the same device's n-th upload and attempt (common random numbers).
"""
from __future__ import annotations

import math

from ..net.channel import db_to_linear, packet_error_rate
from .world import STREAM_PACKET_ERRORS, stream


class PacketErrors:
    """Chen et al.'s packet errors with waterfall threshold ``m = 10^(waterfall_db / 10)``."""

    def __init__(self, seed: int, waterfall_db: float):
        self.seed = int(seed)
        self.waterfall_m = float(db_to_linear(waterfall_db))

    def error_probability(self, mean_inverse_sinr: float) -> float:
        """``q`` of an attempt whose bits saw ``1/SINR`` = ``mean_inverse_sinr`` on average."""
        if mean_inverse_sinr <= 0:
            return 0.0
        if math.isinf(mean_inverse_sinr):
            return 1.0
        return float(packet_error_rate(self.waterfall_m, 1.0 / mean_inverse_sinr))

    def draw(self, device: int, upload: int, attempt: int) -> float:
        """The attempt's uniform draw in [0, 1) (its own stream)."""
        return float(stream(self.seed, STREAM_PACKET_ERRORS, device, upload, attempt).random())

    def fails(self, device: int, upload: int, attempt: int, mean_inverse_sinr: float) -> bool:
        """Whether the attempt is lost: its draw falls below ``q``."""
        return self.draw(device, upload, attempt) < self.error_probability(mean_inverse_sinr)
