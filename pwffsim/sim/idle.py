"""Idle (wait) power: what a device draws while it takes part in a round and is not active.

The rule.  A device selected for a round draws its profile's ``idle_power_w`` whenever it is neither
receiving, computing nor transmitting, from the instant its round starts (its selection) until

* its update arrived: the end of the round's aggregation (synchronous policies; so waiting for the
  stragglers costs energy), or the instant the server takes its update (asynchronous policies);
* otherwise: the instant its round ends, stopped (deadline, over-selection), offline or dropped out.

Idle time thus covers the backhaul legs of its model (with a topology), a handover interruption
inside a transfer (the transfer sends nothing then; its row spans it, the idle row lies inside) and
the wait for the aggregation.  Each idle interval of positive length is one events row of kind
``idle``, energy ``idle_power_w x`` its duration.  A battery that empties while idle drops the device
at that instant: the idle row ends there with status ``dropped``, the activity in progress (a backhaul
leg, a transfer in a handover interruption) ends ``dropped`` and a ``dropout`` row follows; a device
whose update had already arrived drops out too, and its update is still aggregated.  The run ends at
its last aggregation: nothing after it is charged.  With ``idle_power_w = 0`` (the default) no meter
exists: nothing is drawn and no row is written.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import simpy

from ..status import Kind, Status

_REL_EPS = 1e-12  # an interval that ends this close to the battery's empty time empties it


class IdleMeter:
    """The idle intervals of one client's round: :meth:`resume` when the device becomes idle,
    :meth:`pause` when an activity starts, :meth:`close` when its part in the round ends."""

    def __init__(self, env: simpy.Environment, dev: Any, recorder: Any, r: int, out: Any,
                 on_empty: Callable[["IdleMeter"], None]):
        self.env, self.dev, self.recorder, self.r, self.out = env, dev, recorder, r, out
        self.power_w = float(dev.profile.idle_power_w)
        self.on_empty = on_empty
        self.process = env.active_process  # the client's round, while it runs (None once it returned)
        self._t0: Optional[float] = None   # start of the running interval (None: not idle now)
        self._epoch = 0                    # bumped at every pause, so a stale empty-watch does nothing
        self.closed = False

    def resume(self) -> None:
        """The device is idle from now on (no-op if it already is, or the meter is closed)."""
        if self.closed or self._t0 is not None:
            return
        self._t0 = self.env.now
        self._epoch += 1
        t_empty = self.dev.battery.time_to_empty_s(self.power_w)
        if math.isfinite(t_empty):
            epoch = self._epoch
            self.env.timeout(t_empty).callbacks.append(lambda _ev: self._empties(epoch))

    def pause(self) -> str:
        """The device stops being idle now: draw the interval's energy and write its row.  Returns
        ``Status.DROPPED`` if the battery empties at this very instant, else ``Status.OK``."""
        if self._t0 is None:
            return Status.OK
        t0, now = self._t0, self.env.now
        self._t0, self._epoch = None, self._epoch + 1
        battery = self.dev.battery
        t_empty = t0 + battery.time_to_empty_s(self.power_w)
        if t_empty <= now + _REL_EPS * max(1.0, abs(now)):
            self._row(t0, battery.drain_all(), Status.DROPPED)
            self.closed = True
            return Status.DROPPED
        self._row(t0, battery.draw(self.power_w * (now - t0)), Status.OK)
        return Status.OK

    def close(self) -> str:
        """The device's part in the round ends now; returns :meth:`pause`'s status."""
        status = self.pause()
        self.closed = True
        return status

    def _empties(self, epoch: int) -> None:
        if epoch != self._epoch or self.closed:
            return
        t0 = self._t0
        self._t0, self.closed = None, True
        self._row(t0, self.dev.battery.drain_all(), Status.DROPPED)
        self.on_empty(self)

    def _row(self, t0: float, energy_j: float, status: str) -> None:
        self.out.energy_j += energy_j
        now = self.env.now
        if now > t0 or energy_j > 0:
            self.recorder.event(self.r, self.dev, Kind.IDLE, t0, now, 0, 0.0, energy_j, status)


class IdleMeters:
    """The open meters of a run, one per device taking part in a round with ``idle_power_w > 0``.

    ``on_empty(meter)`` is called when a battery empties while idle (the lifecycle stops the client's
    round or, if it already returned, records the dropout)."""

    def __init__(self, env: simpy.Environment, recorder: Any, on_empty: Callable[[IdleMeter], None]):
        self.env, self.recorder, self.on_empty = env, recorder, on_empty
        self.open: dict[int, IdleMeter] = {}

    def begin(self, r: int, dev: Any, out: Any) -> None:
        """The device's round starts now (called from the client's round process)."""
        if dev.profile.idle_power_w > 0:
            meter = IdleMeter(self.env, dev, self.recorder, r, out, self.on_empty)
            self.open[dev.index] = meter
            meter.resume()

    def get(self, k: int) -> Optional[IdleMeter]:
        return self.open.get(k)

    def pause(self, k: int) -> str:
        meter = self.open.get(k)
        return Status.OK if meter is None else meter.pause()

    def resume(self, k: int) -> None:
        meter = self.open.get(k)
        if meter is not None:
            meter.resume()

    def returned(self, k: int) -> None:
        """The client's round process returned with its update arrived: idle goes on until :meth:`end`."""
        meter = self.open.get(k)
        if meter is not None:
            meter.process = None

    def end(self, k: int) -> str:
        """The device's part in the round ends now: ``Status.DROPPED`` if its battery empties at this
        instant (or already emptied while idle), else ``Status.OK``."""
        meter = self.open.pop(k, None)
        if meter is None:
            return Status.OK
        was_closed = meter.closed
        status = meter.close()
        return Status.DROPPED if (was_closed and meter.dev.battery.empty) else status
