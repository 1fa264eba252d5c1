"""Movement between cells: the per-device A3 handover process, and uplink interference between cells.

A device's association is re-evaluated at every position sample; when the A3 rule fires, a transfer
on the air is detached from the old cell's band, the device is out of service for
``handover.interruption_s``, and the transfer then continues (or restarts) on the new cell's band with
its remaining bits.  A transfer the device begins during the interruption waits for its end
(:class:`~pwffsim.sim.client.ClientLifecycle` reads ``out_of_service_until_s``).  A download moved to
the new cell is sent with the new base station's power.
"""
from __future__ import annotations

import simpy

from ..net.links import A3Handover
from ..net.radio import SharedBand
from ..status import Status
from .client import ClientLifecycle
from .recorder import Recorder
from .state import RunState
from .world import Device, World


class Handovers:
    def __init__(self, env: simpy.Environment, world: World, clients: ClientLifecycle, recorder: Recorder,
                 state: RunState, hysteresis_db: float, time_to_trigger_s: float, interruption_s: float,
                 restart_in_flight: bool):
        self.env, self.world, self.clients, self.recorder, self.state = env, world, clients, recorder, state
        self.hysteresis_db, self.time_to_trigger_s = hysteresis_db, time_to_trigger_s
        self.interruption_s, self.restart_in_flight = interruption_s, restart_in_flight

    def track(self, dev: Device):
        """Re-evaluate the device's association every sample step; A3 handover with time-to-trigger."""
        env, w = self.env, self.world
        rule = A3Handover(self.hysteresis_db, self.time_to_trigger_s)
        k = 1
        while True:
            yield env.timeout(max(0.0, k * w.step_s - env.now))
            k += 1
            if not dev.alive:
                return
            xy = w.position(dev.index, env.now)
            if xy is None:
                continue
            target = rule.update(env.now, w.link.rsrp_dbm(dev.index, xy), dev.cell)
            if target is not None:
                yield from self.hand_over(dev, target)

    def hand_over(self, dev: Device, target: int):
        env, cells = self.env, self.world.cells
        old = dev.cell
        flight = self.clients.in_flight.get(dev.index)
        moved, meter = None, None
        if flight is not None:
            tr, direction = flight
            if cells[old].band(direction).detach(tr):
                moved = (tr, direction)
                meter = self.clients.idle.get(dev.index)  # its transfer sends nothing: the device idles
                if meter is not None:
                    meter.resume()
                if direction == "dl":
                    tr.snr_power_w = cells[target].bs_tx_power_w
        dev.cell = target
        t0 = env.now
        self.clients.out_of_service_until_s[dev.index] = t0 + self.interruption_s
        yield env.timeout(self.interruption_s)
        if moved is not None and moved[0].status == Status.DETACHED:
            if meter is not None:
                meter.pause()  # (a battery that empties at this instant drops the transfer on the new band)
            cells[dev.cell].band(moved[1]).attach(moved[0], restart=self.restart_in_flight)
        self.recorder.handover(self.state.round, dev, t0, env.now, cells[old].id, cells[target].id)


def wire_interference(world: World) -> None:
    """Uplink SINR: each cell's uplink sees the other cells' active uploads (full reuse)."""
    bands = [c.uplink for c in world.cells]
    devices = world.devices
    for j, band in enumerate(bands):
        def psd(t, j=j):
            return sum(other.interference_psd_w_per_hz(
                lambda tr, tt: devices[tr.device].gain(j, "ul", tt), t)
                for i, other in enumerate(bands) if i != j)
        band.interference_psd = psd

    def poke_others(changed: SharedBand, stamp: int) -> None:
        for b in bands:
            if b is not changed:
                b.poke(since=stamp)

    for band in bands:
        band.on_membership_change = poke_others
