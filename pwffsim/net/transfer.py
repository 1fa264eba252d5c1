"""One transfer (upload or download) of a device, as a band carries it.

While a transfer is on a band its live quantities (bits left, rate, SINR, energy so far) are the
band's arrays (:mod:`pwffsim.net.bandslots`); the properties below read them there, and the band
copies them back into the transfer when it leaves (ends, or is detached at a handover).

Never imports torch or simpy.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

from ..status import Status
from .device import Battery


def _never(_t: float) -> float:
    return math.inf


class Transfer:
    """One transfer of ``bits`` by device ``device``.

    The link's linear power gain comes from ``link`` when given (a view with ``large_scale(t) ->
    (gain, valid_until_s)`` and ``fading()`` -> its :class:`~pwffsim.net.channel.BlockFading`, the
    whole gain being their product), else from ``gain(t)``, constant between ``t`` and
    ``next_change_s(t)``.  ``snr_power_w`` is the power it is sent with, ``drain_power_w`` what it
    draws from ``battery`` while on the air, ``noise_factor`` the receiver's noise over the band's N0.
    """

    __slots__ = ("device", "bits", "snr_power_w", "drain_power_w", "battery", "gain", "next_change_s",
                 "noise_factor", "link", "tag", "t_start_s", "t_end_s", "status", "done", "_bits_left",
                 "_energy_j", "_inv_sinr_bits", "_rate_bps", "_sinr", "_bandwidth_hz", "_i0", "_n0", "_power_w",
                 "_band", "_slot", "_joined")

    def __init__(self, device: int, bits: float, snr_power_w: float, drain_power_w: float, battery: Battery,
                 gain: Optional[Callable[[float], float]] = None, next_change_s: Callable[[float], float] = _never,
                 noise_factor: float = 1.0, tag: Any = None, link: Any = None):
        if not (bits >= 0 and math.isfinite(bits)):
            raise ValueError(f"transfer bits must be finite and >= 0, got {bits}")
        if gain is None and link is None:
            raise ValueError("a transfer needs a gain(t) callable or a link view")
        self.device, self.bits, self.battery = device, float(bits), battery
        self.snr_power_w, self.drain_power_w, self.noise_factor = snr_power_w, drain_power_w, noise_factor
        self.gain, self.next_change_s, self.link, self.tag = gain, next_change_s, link, tag
        self.t_start_s = self.t_end_s = math.nan
        self.status: str = Status.ACTIVE
        self.done = None
        self._bits_left, self._energy_j, self._inv_sinr_bits = float(bits), 0.0, 0.0
        self._rate_bps = self._sinr = self._bandwidth_hz = self._i0 = self._n0 = self._power_w = 0.0
        self._band, self._slot, self._joined = None, -1, 0

    def _live(self, name: str, own: float) -> float:
        band = self._band
        return own if band is None else float(getattr(band.slots, name)[self._slot])

    # Live while on a band, the last values after it left.
    @property
    def bits_left(self) -> float:
        return self._live("bits", self._bits_left)

    @bits_left.setter
    def bits_left(self, v: float) -> None:
        self._bits_left = float(v)

    @property
    def rate_bps(self) -> float:
        return self._live("rate", self._rate_bps)

    @rate_bps.setter
    def rate_bps(self, v: float) -> None:
        self._rate_bps = float(v)

    @property
    def sinr(self) -> float:
        """SINR (linear) at the last rate computation."""
        return self._live("sinr", self._sinr)

    @property
    def energy_j(self) -> float:
        """Energy drawn so far (J)."""
        band = self._band
        if band is None:
            return self._energy_j
        return self._energy_j + self.drain_power_w * float(band.slots.on_s[self._slot])

    @property
    def bandwidth_hz(self) -> float:
        """Its share of the band at the last rate computation (Hz)."""
        return self._bandwidth_hz if self._band is None else self._band.last_share_hz

    @property
    def interference_psd_w_per_hz(self) -> float:
        return self._i0 if self._band is None else self._band.last_interference_psd

    @property
    def noise_density_w_per_hz(self) -> float:
        """The receiver's N0 at the last rate computation (W/Hz)."""
        return self._live("n0", self._n0)

    @property
    def power_w(self) -> float:
        """The power sent on its share at the last rate computation (W)."""
        return self._power_w if self._band is None else self._band.power_of(self._slot)

    @property
    def duration_s(self) -> float:
        return self.t_end_s - self.t_start_s

    @property
    def bits_sent(self) -> float:
        return self.bits - self.bits_left

    @property
    def mean_rate_bps(self) -> float:
        d = self.duration_s
        return self.bits_sent / d if d > 0 else 0.0

    @property
    def mean_inverse_sinr(self) -> float:
        """``sum_i (b_i / b) / SINR_i`` over the SINRs its ``b`` bits were sent at (packet errors)."""
        sent = self.bits_sent
        inv = self._live("inv_acc", self._inv_sinr_bits)
        return inv / sent if sent > 0 else 0.0

    def __repr__(self) -> str:
        return (f"Transfer(device={self.device}, bits={self.bits:.6g}, bits_left={self.bits_left:.6g}, "
                f"status={self.status!r})")
