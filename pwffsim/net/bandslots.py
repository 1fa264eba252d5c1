"""The state of the transfers on one band, as arrays (struct of arrays), and the vector maths over it.

:class:`~pwffsim.net.radio.SharedBand` keeps its active transfers in one :class:`BandSlots`: slot ``i``
holds transfer ``trs[i]``; removing a slot moves the last one into its place.  Every per-transfer
quantity the band integrates (bits left, rate, seconds on the air, the battery's limit, the SINR
weights of packet errors) is one float64 array, so settling the band to a new instant and re-rating
all its transfers are a few numpy operations whatever the number of transfers.

A transfer's link gain is ``ls x fad``: ``ls`` (large scale: path loss, shadowing, LOS, or the whole
gain of a transfer given only a ``gain(t)`` callable) is re-queried when its validity ends
(``next_ls``: the next position sample, or the callable's ``next_change_s``); ``fad`` is the block
fading ``|h|^2`` read from a window of ``WINDOW`` future blocks of the link's
:class:`~pwffsim.net.channel.BlockFading` (the same values as ``BlockFading.gain(t)``, by the same block
index rule), refilled when the window is used up.

Never imports torch or simpy.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .channel import _BLOCK_EDGE_TOL

WINDOW = 128  # fading blocks held per slot before the window is refilled
_FLOATS = ("bits", "rate", "on_s", "on_cap", "p", "ls", "n0", "fad", "sinr", "isinr", "inv_acc", "tc", "next_ls",
           "drain")


class BandSlots:
    """Arrays over the active transfers of one band (the first ``n`` entries of each are live)."""

    def __init__(self, capacity: int = 8):
        self.n = 0
        self.trs: list[Any] = []
        self._alloc(capacity)

    def _alloc(self, cap: int) -> None:
        old_n, self.cap = self.n, cap
        for name in _FLOATS:
            a = np.zeros(cap)
            if old_n:
                a[:old_n] = getattr(self, name)[:old_n]
            setattr(self, name, a)
        base, win = np.zeros(cap, dtype=np.int64), np.ones((cap, WINDOW))
        if old_n:
            base[:old_n], win[:old_n] = self.base[:old_n], self.win[:old_n]
        self.base, self.win = base, win
        self.fading: list[Any] = self.fading[:old_n] if old_n else []

    # ------------------------------------------------------------------ membership
    def add(self, tr: Any, now: float, p: float, n0: float, ls: float, next_ls: float, fading: Any,
            on_cap: float) -> int:
        """A new slot for ``tr`` (its bits left, transmit power ``p``, receiver noise density ``n0``,
        large-scale gain ``ls`` valid until ``next_ls``, fading process or None, battery limit
        ``on_cap`` in seconds on the air)."""
        if self.n == self.cap:
            self._alloc(2 * self.cap)
        i = self.n
        self.n += 1
        self.trs.append(tr)
        self.fading.append(fading)
        vals = dict(bits=tr._bits_left, rate=0.0, on_s=0.0, on_cap=on_cap, p=p, ls=ls, n0=n0, fad=1.0, sinr=0.0,
                    isinr=0.0, inv_acc=tr._inv_sinr_bits, tc=math.inf, next_ls=next_ls, drain=tr.drain_power_w)
        for name, v in vals.items():
            getattr(self, name)[i] = v
        if fading is not None and not fading._static:
            self.tc[i] = fading.coherence_time_s
            self.refill(i, now)
        elif fading is not None:
            self.base[i], self.win[i, 0] = 0, fading.gain(0.0)
        else:
            self.base[i], self.win[i, 0] = 0, 1.0
        return i

    def remove(self, i: int) -> None:
        """Free slot ``i`` (the last slot moves into it)."""
        last = self.n - 1
        if i != last:
            for name in _FLOATS:
                a = getattr(self, name)
                a[i] = a[last]
            self.base[i], self.win[i] = self.base[last], self.win[last]
            moved = self.trs[last]
            self.trs[i], self.fading[i] = moved, self.fading[last]
            moved._slot = i
        self.trs.pop()
        self.fading.pop()
        self.n = last

    def refill(self, i: int, now: float) -> None:
        """Load the fading blocks from the one containing ``now`` into slot ``i``'s window."""
        f = self.fading[i]
        k = f.block_index(now)
        self.base[i] = k
        self.win[i] = f.blocks(k, WINDOW)

    # ------------------------------------------------------------------ time
    def settle(self, dt: float, stalled: bool) -> None:
        """Advance every slot by ``dt`` seconds at its current rate."""
        n = self.n
        rate = self.rate[:n]
        sent = rate * dt
        self.bits[:n] -= sent
        self.inv_acc[:n] += sent * self.isinr[:n]
        if stalled:  # a transfer at rate 0 is not on the air (no power drawn)
            self.on_s[:n] += dt * (rate > 0)
        else:
            self.on_s[:n] += dt

    def block_indices(self, now: float) -> np.ndarray:
        """Each slot's fading block at ``now``: ``floor(t / Tc)`` with BlockFading's edge tolerance."""
        n = self.n
        tc = self.tc[:n]
        k = np.floor(now / tc + _BLOCK_EDGE_TOL)
        k += (k + 1) * tc <= now  # round-off at large t / Tc: the block must end after now
        return k

    def read_fading(self, now: float) -> float:
        """Set every slot's fading gain at ``now``; returns the next block boundary of any slot."""
        n = self.n
        k = self.block_indices(now)
        col = k.astype(np.int64) - self.base[:n]
        if n and col.max() >= WINDOW:
            for i in np.flatnonzero(col >= WINDOW):
                self.refill(int(i), now)
            col = k.astype(np.int64) - self.base[:n]
        self.fad[:n] = self.win[np.arange(n), col]
        return float(((k + 1) * self.tc[:n]).min()) if n else math.inf

    def _times_left(self) -> np.ndarray:
        """Per slot, seconds from the settled instant to its last bit or its last joule (inf at rate 0)."""
        n = self.n
        rate = self.rate[:n]
        to_finish = np.divide(self.bits[:n], rate, out=np.full(n, math.inf), where=rate > 0)
        return np.minimum(to_finish, np.where(rate > 0, self.on_cap[:n] - self.on_s[:n], math.inf))

    def ends_within(self, tol_s: float) -> np.ndarray:
        """Slots whose last bit or last joule falls within ``tol_s`` from the settled instant."""
        return np.flatnonzero(self._times_left() <= tol_s)

    def time_to_next_end(self, stalled: bool) -> float:
        """Seconds from the settled instant to the first slot's last bit or last joule."""
        n = self.n
        if not n:
            return math.inf
        if stalled:
            return float(self._times_left().min())
        return float(np.minimum(self.bits[:n] / self.rate[:n], self.on_cap[:n] - self.on_s[:n]).min())
