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
remaining bits carry over across every change.  Changes at one instant (a hundred downloads starting
together) are settled once, by one zero-delay event of the band.  The device's battery is drained at
``drain_power_w`` while its transfer is on the air (the draw is taken from the battery when the
transfer leaves the band); a transfer whose battery empties stops at that exact instant with status
``Status.DROPPED``.

The band is not a SimPy process: it keeps one timer (a timeout with a callback) for its next change,
and its transfers' state is a set of arrays (:class:`~pwffsim.net.bandslots.BandSlots`), so one
change costs a few numpy operations however many transfers share the band.

Never imports torch.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Optional

import numpy as np
import simpy

from ..status import Status
from .bandslots import BandSlots
from .linkmodel import SHANNON, LinkAbstraction
from .transfer import Transfer, _never

__all__ = ["BAND_MODES", "SharedBand", "Transfer", "_never"]

# A transfer in flight carries Status.ACTIVE; an ended one Status.OK, LATE, DROPPED or OFFLINE; one
# handed over and waiting for its new cell Status.DETACHED.
_REL_EPS = 1e-12
BAND_MODES = ("fdma", "broadcast", "multicast", "fdma-split")
_SHARED_MODES = ("fdma", "fdma-split")
_ORDER = itertools.count()  # orders membership changes and rate computations (of every band)


def _joined(tr: Transfer) -> int:
    return tr._joined


def _tol(t: float) -> float:
    """Two instants this close are one (relative 1e-12)."""
    return _REL_EPS * max(1.0, abs(t))


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
        self.slots = BandSlots()
        self.rate_updates = 0  # how many times rates were recomputed (diagnostics)
        self.last_share_hz = self.bandwidth_hz       # each transfer's share at the last rate computation
        self.last_interference_psd = 0.0             # the interference PSD then (W/Hz)
        self._t_mark = env.now                       # the slots are settled up to here
        self._stalled = False                        # some transfer is at rate 0 (not on the air)
        self._t_end = self._t_fade = self._t_ls = math.inf  # next end / fading block / large-scale change
        self._t_next = math.inf                      # when the band next needs attention
        self._timer_at, self._timer_id = math.inf, 0  # the pending timer (only the newest one counts)
        self._busy = False                           # in the band's own timer (it arms itself after)
        self._joins = 0                              # transfers that joined so far (their order)
        self._rated = -1                             # _ORDER stamp of the last rate computation
        # Optional: interference power spectral density at this base station at time t (W/Hz), from
        # other cells' uploads; it is added to the noise density (SINR).  Callers poke() every band
        # whose interference changed.
        self.interference_psd = interference_psd
        # Optional: called (deferred, at the same simulated time) with (band, stamp) when transfers
        # join or leave this band, so that the bands it interferes with can poke(stamp).
        self.on_membership_change: Optional[Callable[["SharedBand"], None]] = None
        # Optional: called with (band, t) each time the band has (re)computed its transfers' rates
        # (each transfer then carries its rate, SINR, bandwidth share and interference): a link trace.
        self.on_rates: Optional[Callable[["SharedBand", float], None]] = None

    # ---------------------------------------------------------------- public
    @property
    def active(self) -> list[Transfer]:
        """The transfers on the band now, in the order they joined it."""
        return sorted(self.slots.trs, key=_joined)

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
        if tr._bits_left <= 0:
            tr.t_end_s = self.env.now
            tr.status = Status.OK
            tr.done.succeed(tr)
            return tr.done
        self._join(tr)
        return tr.done

    def cancel(self, tr: Transfer, status: str = Status.LATE) -> None:
        """Stop ``tr`` now (e.g. the round deadline passed): bits sent so far are lost.  A transfer
        whose last bit (or last joule) falls at this very instant ends as it would have (``ok`` or
        ``dropped``): a completion at the instant of a stop counts."""
        if tr.status != Status.ACTIVE or tr._band is not self:
            return
        self._settle()
        if tr.status != Status.ACTIVE:  # it ended exactly now
            return
        self._leave(tr, status)
        self._changed()

    def detach(self, tr: Transfer) -> bool:
        """Take ``tr`` off this band now (a handover), keeping its remaining bits and its energy so far;
        its ``done`` event stays pending until it is :meth:`attach`-ed to a band and ends there.
        Returns False if it had already ended."""
        if tr.status != Status.ACTIVE or tr._band is not self:
            return False
        self._settle()
        if tr.status != Status.ACTIVE:
            return False
        self._leave(tr, Status.DETACHED)
        # What this band predicted for it no longer holds: the band it joins next computes afresh.
        tr._rate_bps = 0.0
        self._changed()
        return True

    def attach(self, tr: Transfer, restart: bool = False) -> None:
        """Continue a detached transfer on this band (with its remaining bits, or all of them)."""
        if tr.status != Status.DETACHED:
            raise ValueError(f"attach() needs a detached transfer, got status {tr.status!r}")
        self._settle()
        if restart:
            tr._bits_left = float(tr.bits)
            tr._inv_sinr_bits = 0.0
        tr.status = Status.ACTIVE
        self._join(tr)

    def interference_psd_w_per_hz(self, gain_to_this_bs: Callable[[Transfer, float], float], t: float) -> float:
        """Power spectral density this band's active transfers cause at another base station whose
        band fully overlaps this one (reuse 1): the FDMA transfers sit on disjoint sub-bands that
        together cover the band, so their received powers ``p g`` add up over the whole bandwidth:
        ``sum_i p_i g_i / B`` (W/Hz).  ``gain_to_this_bs(tr, t)`` is the link gain from the
        transfer's device to that base station."""
        if not self.slots.n:
            return 0.0
        return sum(tr.snr_power_w * gain_to_this_bs(tr, t) for tr in self.active) / self.bandwidth_hz

    def share_hz(self, n_active: int) -> float:
        """Bandwidth of each active transfer (Hz): equal FDMA shares, or the whole band if unshared."""
        return self.bandwidth_hz / n_active if (self.shared and n_active > 0) else self.bandwidth_hz

    def power_of(self, slot: int) -> float:
        """The power slot ``slot`` sends on its share (W): ``P / n`` under ``fdma-split``."""
        p = float(self.slots.p[slot])
        return p / self.slots.n if self.mode == "fdma-split" else p

    def poke(self, since: Optional[int] = None) -> None:
        """Make the band recompute its rates now (e.g. the interference it sees changed); with
        ``since`` (the stamp of that change), not if it already recomputed after the change."""
        if since is not None and self._rated > since:
            return
        self._settle()
        self._t_next = self.env.now
        self._arm()

    # ---------------------------------------------------------------- membership
    def _join(self, tr: Transfer) -> None:
        now = self.env.now
        if tr.link is not None:
            ls, next_ls = tr.link.large_scale(now)
            fading = tr.link.fading()
        else:
            ls, next_ls, fading = tr.gain(now), tr.next_change_s(now), None
        on_cap = tr.battery.time_to_empty_s(tr.drain_power_w)
        self._joins += 1
        tr._joined = self._joins
        tr._band, tr._slot = self, self.slots.add(tr, now, tr.snr_power_w, self.noise_density_w_per_hz * tr.noise_factor,
                                                  ls, next_ls, fading, on_cap)
        self._t_ls = min(self._t_ls, next_ls)
        self._changed()

    def _leave(self, tr: Transfer, status: str) -> None:
        """Take ``tr`` off the band now with ``status``: its state goes back into it; its battery pays
        for its time on the air (all of it, if the battery emptied)."""
        s, i = self.slots, tr._slot
        tr._bits_left = max(0.0, float(s.bits[i])) if status != Status.OK else 0.0
        tr._inv_sinr_bits = float(s.inv_acc[i])
        tr._sinr, tr._n0 = float(s.sinr[i]), float(s.n0[i])
        tr._bandwidth_hz, tr._i0, tr._power_w = self.last_share_hz, self.last_interference_psd, self.power_of(i)
        if status == Status.DROPPED:
            tr._energy_j += tr.battery.drain_all()
        else:
            tr._energy_j += tr.battery.draw(tr.drain_power_w * float(s.on_s[i]))
        s.remove(i)
        tr._band, tr._slot = None, -1
        if status == Status.DETACHED:
            tr.status = status
            return
        tr.status, tr.t_end_s = status, self.env.now
        tr._rate_bps = tr.mean_rate_bps
        tr.done.succeed(tr)

    def _changed(self) -> None:
        """Transfers joined or left: recompute at this instant (once, however many change now), and
        tell the bands this one interferes with."""
        self._t_next = self.env.now
        self._arm()
        if self.on_membership_change is not None:
            ev, stamp = self.env.timeout(0), next(_ORDER)
            ev.callbacks.append(lambda _ev: self.on_membership_change(self, stamp))

    # ---------------------------------------------------------------- time
    def _settle(self) -> None:
        """Account every transfer's bits and time on the air up to now, and end the transfers whose
        last bit or last joule falls at now."""
        now = self.env.now
        dt = now - self._t_mark
        self._t_mark = now
        s = self.slots
        if not s.n:
            return
        if dt > 0:
            s.settle(dt, self._stalled)
        if now >= self._t_end - _tol(now):
            self._end_due(now)

    def _end_due(self, now: float) -> None:
        s, tol = self.slots, _tol(now)
        ended = []
        for i in s.ends_within(tol):
            rate = float(s.rate[i])
            to_finish = float(s.bits[i]) / rate
            to_empty = float(s.on_cap[i] - s.on_s[i])
            if to_empty <= tol and not (to_finish <= tol and to_finish <= to_empty):
                ended.append((s.trs[i], Status.DROPPED))  # the battery ran out before the last bit
            else:
                ended.append((s.trs[i], Status.OK))
        for tr, status in ended:
            self._leave(tr, status)
        if ended:
            self._changed()

    def _arm(self) -> None:
        """Have a timer pending at or before ``_t_next`` (the newest timer is the one that counts)."""
        t = self._t_next
        if self._busy or t >= self._timer_at or not math.isfinite(t):
            return
        self._timer_id += 1
        self._timer_at = t
        ev = self.env.timeout(max(0.0, t - self.env.now))
        ev.callbacks.append(lambda _ev, i=self._timer_id: self._on_timer(i))

    def _on_timer(self, timer_id: int) -> None:
        if timer_id != self._timer_id:
            return  # superseded by an earlier timer
        self._timer_at = math.inf
        now = self.env.now
        if now < self._t_next - _tol(now):  # woken early (the next change moved later): wait on
            self._arm()
            return
        self._busy = True
        self._settle()
        self._recompute()
        self._busy = False
        self._arm()

    def _recompute(self) -> None:
        """Recompute every active rate at now and the time of the band's next change."""
        now, s = self.env.now, self.slots
        self.rate_updates += 1
        self._rated = next(_ORDER)
        n = s.n
        if not n:
            self._t_end = self._t_fade = self._t_ls = self._t_next = math.inf
            return
        if now >= self._t_ls - _tol(now):
            self._refresh_large_scale(now)
        self._t_fade = s.read_fading(now)
        b = self.share_hz(n)
        i0 = 0.0 if self.interference_psd is None else float(self.interference_psd(now))
        self.last_share_hz, self.last_interference_psd = b, i0
        self._rate_all(b, i0)
        self._t_end = now + s.time_to_next_end(self._stalled)
        self._t_next = min(self._t_end, self._t_fade, self._t_ls)
        if self.on_rates is not None:
            self.on_rates(self, now)

    def _rate_all(self, b: float, i0: float) -> None:
        """SINR ``p g / ((N0 + I0) b)`` and rate of every slot; the multicast rule; stalls."""
        s = self.slots
        n = s.n
        p = s.p[:n] / n if self.mode == "fdma-split" else s.p[:n]
        signal = p * (s.ls[:n] * s.fad[:n])
        noise = (s.n0[:n] + i0) * b
        if signal.all() and noise.all():  # the usual case: no zero gain, no noiseless receiver
            sinr = signal / noise
            s.isinr[:n] = 1.0 / sinr
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                sinr = np.where(signal > 0, signal / noise, 0.0)
                s.isinr[:n] = np.where(sinr > 0, 1.0 / sinr, 0.0)
        s.sinr[:n] = sinr
        rate = self.link.rates_bps(b, sinr)
        if self.mode == "multicast":  # every receiver it reaches at the worst one's rate
            reached = rate > 0
            if reached.any():
                rate = np.where(reached, rate[reached].min(), 0.0)
        s.rate[:n] = rate
        self._stalled = not rate.all()

    def _refresh_large_scale(self, now: float) -> None:
        """Re-query the large-scale gains whose validity ended (position samples, gain callables)."""
        s, tol = self.slots, _tol(now)
        for i in np.flatnonzero(s.next_ls[:s.n] <= now + tol):
            tr = s.trs[i]
            if tr.link is not None:
                s.ls[i], s.next_ls[i] = tr.link.large_scale(now)
            else:
                s.ls[i], s.next_ls[i] = tr.gain(now), tr.next_change_s(now)
        self._t_ls = float(s.next_ls[:s.n].min())
