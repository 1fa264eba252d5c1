"""How a cell shares its band among the transfers active at each instant (SimPy).

A :class:`SharedBand` holds the transfers in flight on one band of one cell.  Its ``mode``:

* ``"fdma"`` (``shared=True``, the uplink): the band is split by FDMA into equal shares among the
  active transfers, so transfer k gets ``b = B / n`` and rate ``b log2(1 + p g_k / (N0 b))`` (Yang et
  al., IEEE TWC 2021);
* ``"broadcast"`` (``shared=False``, the downlink by default): each receiver decodes the whole band at
  its own SNR;
* ``"multicast"``: one transmission on the whole band to every active receiver, all at the rate of
  the worst of them, ``min_k B log2(1 + SNR_k)`` (each keeps its own remaining bits); a receiver it
  cannot reach at all (rate 0: out of coverage, or below the truncated bound's SINR_min) stalls
  without holding the others back;
* ``"fdma-split"`` (unicast downloads): equal shares ``B / n``, the base station's power split
  equally among them too, ``P / n`` each (constant power spectral density).

The rate of a receiver at SINR ``s`` on bandwidth ``b`` is ``link.rate_bps(b, s)``: Shannon, or the
truncated Shannon bound (:class:`~pwffsim.net.linkmodel.LinkAbstraction`).  A transfer's receiver
sees ``N0 x noise_factor`` (the band's ``N0`` already holds the base station's noise figure; a
download's ``noise_factor`` is the device's, ``10^(NF/10)``).

Rates are piecewise constant.  They are recomputed whenever a transfer starts, ends, is cancelled,
whenever any link's gain changes (a fading block ends, a position sample moves), and whenever a
battery empties; between two such instants every transfer's remaining bits fall linearly, and the
remaining bits carry over across every change.  The device's battery is drained at ``drain_power_w``
while its transfer is active; a transfer whose battery empties stops at that exact instant with
status ``Status.DROPPED``.

Never imports torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import simpy

from ..status import Status
from .channel import sinr_linear
from .device import Battery
from .linkmodel import SHANNON, LinkAbstraction

# A transfer in flight carries Status.ACTIVE; an ended one Status.OK, LATE, DROPPED or OFFLINE; one
# handed over and waiting for its new cell Status.DETACHED.
_REL_EPS = 1e-12
BAND_MODES = ("fdma", "broadcast", "multicast", "fdma-split")
_SHARED_MODES = ("fdma", "fdma-split")


def _never(_t: float) -> float:
    return math.inf


@dataclass(eq=False)
class Transfer:
    """One transfer (upload or download) of ``bits`` by one device.

    ``gain(t)`` is the linear power gain of the link at time t (path loss, shadowing and fading),
    constant between ``t`` and ``next_change_s(t)``.
    """

    device: int
    bits: float
    snr_power_w: float
    drain_power_w: float
    battery: Battery
    gain: Callable[[float], float]
    next_change_s: Callable[[float], float] = _never
    noise_factor: float = 1.0  # the receiver's noise over the band's N0 (a download: the device's 10^(NF/10))
    # Filled in by the band:
    bits_left: float = field(init=False)
    t_start_s: float = field(init=False, default=math.nan)
    t_end_s: float = field(init=False, default=math.nan)
    energy_j: float = field(init=False, default=0.0)
    status: str = field(init=False, default=Status.ACTIVE)
    rate_bps: float = field(init=False, default=0.0)
    sinr: float = field(init=False, default=0.0)              # at the last rate computation (linear)
    bandwidth_hz: float = field(init=False, default=0.0)      # its share of the band then (Hz)
    interference_psd_w_per_hz: float = field(init=False, default=0.0)
    noise_density_w_per_hz: float = field(init=False, default=0.0)  # the receiver's N0 then (W/Hz)
    power_w: float = field(init=False, default=0.0)         # the power sent on its share then (W)
    _inv_sinr_bits: float = field(init=False, default=0.0)  # sum over rate segments of bits / SINR
    _bits_mark: float = field(init=False, default=0.0)      # bits_left at the last rate computation
    tag: Any = field(default=None, compare=False)             # the caller's bookkeeping (e.g. round, kind)
    done: Optional[simpy.Event] = field(init=False, default=None)
    _t_finish: float = field(init=False, default=math.inf)
    _t_empty: float = field(init=False, default=math.inf)

    def __post_init__(self) -> None:
        if not (self.bits >= 0 and math.isfinite(self.bits)):
            raise ValueError(f"transfer bits must be finite and >= 0, got {self.bits}")
        self.bits_left = float(self.bits)

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
        return self._inv_sinr_bits / sent if sent > 0 else 0.0

    def _close_segment(self) -> None:
        """Account the bits sent since the last rate computation at the SINR they were sent at."""
        sent = self._bits_mark - self.bits_left
        if sent > 0 and self.sinr > 0:
            self._inv_sinr_bits += sent / self.sinr
        self._bits_mark = self.bits_left


class SharedBand:
    """One band of one cell, shared by FDMA among active transfers (or broadcast, unshared)."""

    def __init__(self, env: simpy.Environment, bandwidth_hz: float, noise_density_w_per_hz: float,
                 shared: bool = True, name: str = "",
                 interference_psd: Optional[Callable[[float], float]] = None, mode: Optional[str] = None,
                 link: LinkAbstraction = SHANNON):
        if bandwidth_hz <= 0:
            raise ValueError(f"bandwidth_hz must be > 0, got {bandwidth_hz}")
        self.env = env
        self.bandwidth_hz = float(bandwidth_hz)
        self.noise_density_w_per_hz = float(noise_density_w_per_hz)
        self.set_mode(mode or ("fdma" if shared else "broadcast"))
        self.link = link
        self.name = name
        self.active: list[Transfer] = []
        self._t_last = env.now
        self._wake: simpy.Event = env.event()
        self.rate_updates = 0  # how many times rates were recomputed (diagnostics)
        # Optional: interference power spectral density at this base station at time t (W/Hz), from
        # other cells' uploads; it is added to the noise density (SINR).  Callers poke() every band
        # whose interference changed.
        self.interference_psd = interference_psd
        # Optional: called (deferred, at the same simulated time) when transfers join or leave this
        # band, so that bands this one interferes with can recompute their rates.
        self.on_membership_change: Optional[Callable[["SharedBand"], None]] = None
        # Optional: called with (band, t) each time the band has (re)computed its transfers' rates
        # (each transfer then carries its rate, SINR, bandwidth share and interference): a link trace.
        self.on_rates: Optional[Callable[["SharedBand", float], None]] = None
        env.process(self._run())

    # ---------------------------------------------------------------- public
    def set_mode(self, mode: str) -> None:
        """How the band is shared (:data:`BAND_MODES`, see the module docstring); set before use."""
        if mode not in BAND_MODES:
            raise ValueError(f"unknown band mode {mode!r}; expected one of {list(BAND_MODES)}")
        self.mode, self.shared = mode, mode in _SHARED_MODES

    def start(self, tr: Transfer) -> simpy.Event:
        """Begin ``tr`` now; the returned event fires (value ``tr``) when it ends for any reason."""
        self._settle()
        tr.t_start_s = self.env.now
        tr.done = self.env.event()
        tr.status = Status.ACTIVE
        if tr.bits_left <= 0:
            self._finish(tr, Status.OK)
            return tr.done
        self.active.append(tr)
        self._poke()
        self._membership_changed()
        return tr.done

    def cancel(self, tr: Transfer, status: str = Status.LATE) -> None:
        """Stop ``tr`` now (e.g. the round deadline passed): bits sent so far are lost.  A transfer
        whose last bit (or last joule) falls at this very instant ends as it would have (``ok`` or
        ``dropped``): a completion at the instant of a stop counts."""
        if tr.status != Status.ACTIVE:
            return
        self._settle()
        if tr.status != Status.ACTIVE:  # it ended exactly now
            return
        self.active.remove(tr)
        self._finish(tr, status)
        self._poke()
        self._membership_changed()

    def detach(self, tr: Transfer) -> bool:
        """Take ``tr`` off this band now (a handover), keeping its remaining bits and its energy so far;
        its ``done`` event stays pending until it is :meth:`attach`-ed to a band and ends there.
        Returns False if it had already ended."""
        if tr.status != Status.ACTIVE or tr not in self.active:
            return False
        self._settle()
        if tr.status != Status.ACTIVE:
            return False
        self.active.remove(tr)
        tr._close_segment()
        tr.status = Status.DETACHED
        # What this band predicted for it no longer holds: the band it joins next computes afresh.
        tr.rate_bps, tr._t_finish, tr._t_empty = 0.0, math.inf, math.inf
        self._poke()
        self._membership_changed()
        return True

    def attach(self, tr: Transfer, restart: bool = False) -> None:
        """Continue a detached transfer on this band (with its remaining bits, or all of them)."""
        if tr.status != Status.DETACHED:
            raise ValueError(f"attach() needs a detached transfer, got status {tr.status!r}")
        self._settle()
        if restart:
            tr.bits_left = tr._bits_mark = float(tr.bits)
            tr._inv_sinr_bits = 0.0
        tr.status = Status.ACTIVE
        self.active.append(tr)
        self._poke()
        self._membership_changed()

    def interference_psd_w_per_hz(self, gain_to_this_bs: Callable[[Transfer, float], float], t: float) -> float:
        """Power spectral density this band's active transfers cause at another base station whose
        band fully overlaps this one (reuse 1): the FDMA transfers sit on disjoint sub-bands that
        together cover the band, so their received powers ``p g`` add up over the whole bandwidth:
        ``sum_i p_i g_i / B`` (W/Hz).  ``gain_to_this_bs(tr, t)`` is the link gain from the
        transfer's device to that base station."""
        if not self.active:
            return 0.0
        return sum(tr.snr_power_w * gain_to_this_bs(tr, t) for tr in self.active) / self.bandwidth_hz

    def share_hz(self, n_active: int) -> float:
        """Bandwidth of each active transfer (Hz): equal FDMA shares, or the whole band if unshared."""
        return self.bandwidth_hz / n_active if (self.shared and n_active > 0) else self.bandwidth_hz

    # ---------------------------------------------------------------- internals
    def poke(self) -> None:
        """Make the band recompute its rates now (e.g. the interference it sees changed)."""
        self._settle()
        self._poke()

    def _poke(self) -> None:
        if not self._wake.triggered:
            self._wake.succeed()

    def _membership_changed(self) -> None:
        if self.on_membership_change is not None:
            ev = self.env.timeout(0)
            ev.callbacks.append(lambda _ev: self.on_membership_change(self))

    def _finish(self, tr: Transfer, status: str) -> None:
        tr.status = status
        tr.t_end_s = self.env.now
        tr.rate_bps = tr.mean_rate_bps
        if status == Status.OK:
            tr.bits_left = 0.0
        tr._close_segment()
        tr.done.succeed(tr)

    def _settle(self) -> None:
        """Account bits and energy of every active transfer from the last update to now, and end the
        transfers whose last bit or last joule falls at now."""
        now = self.env.now
        dt = now - self._t_last
        self._t_last = now
        if not self.active:
            return
        ended: list[tuple[Transfer, str]] = []
        for tr in self.active:
            tol = _REL_EPS * max(1.0, abs(now))
            empties = tr._t_empty <= now + tol
            finishes = tr._t_finish <= now + tol
            if empties and not (finishes and tr._t_finish <= tr._t_empty):
                # The battery ran out before the last bit: it stops at exactly t_empty.
                tr.energy_j += tr.battery.drain_all()
                tr.bits_left = max(0.0, tr.bits_left - tr.rate_bps * dt)
                ended.append((tr, Status.DROPPED))
                continue
            if tr.rate_bps > 0:  # a stalled transfer (out of coverage: gain 0) has its radio idle
                tr.energy_j += tr.battery.draw(tr.drain_power_w * dt)
            if finishes:
                ended.append((tr, Status.OK))
            else:
                tr.bits_left = max(0.0, tr.bits_left - tr.rate_bps * dt)
        for tr, status in ended:
            self.active.remove(tr)
            self._finish(tr, status)
        if ended:
            self._membership_changed()

    def _reschedule(self) -> float:
        """Recompute every active rate at now; return the time of the next change."""
        now = self.env.now
        self.rate_updates += 1
        b = self.share_hz(len(self.active))
        t_next = math.inf
        i0 = 0.0 if self.interference_psd is None else self.interference_psd(now)
        for tr in self.active:
            tr._close_segment()
            n0 = self.noise_density_w_per_hz * tr.noise_factor
            p = tr.snr_power_w / len(self.active) if self.mode == "fdma-split" else tr.snr_power_w
            sinr = sinr_linear(p, tr.gain(now), n0, b, i0)
            tr.rate_bps, tr.sinr = self.link.rate_bps(b, sinr), sinr
            tr.bandwidth_hz, tr.interference_psd_w_per_hz = b, i0
            tr.noise_density_w_per_hz, tr.power_w = n0, p
        if self.mode == "multicast":  # every receiver it reaches at the worst one's rate
            worst = min((tr.rate_bps for tr in self.active if tr.rate_bps > 0), default=0.0)
            for tr in self.active:
                tr.rate_bps = worst if tr.rate_bps > 0 else 0.0
        for tr in self.active:
            r = tr.rate_bps
            tr._t_finish = now + tr.bits_left / r if r > 0 else math.inf
            tr._t_empty = now + tr.battery.time_to_empty_s(tr.drain_power_w) if r > 0 else math.inf
            t_next = min(t_next, tr._t_finish, tr._t_empty, tr.next_change_s(now))
        if self.on_rates is not None:
            self.on_rates(self, now)
        return t_next

    def _run(self):
        env = self.env
        while True:
            if not self.active:
                self._wake = env.event()
                yield self._wake
                continue
            t_next = self._reschedule()
            self._wake = env.event()
            if math.isfinite(t_next):
                yield env.timeout(max(0.0, t_next - env.now)) | self._wake
            else:
                yield self._wake
            self._settle()
