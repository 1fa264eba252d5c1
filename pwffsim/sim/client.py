"""A client's round as SimPy processes: backhaul down, download, compute, upload, backhaul up.

Each phase takes simulated time and energy from the network side (the cell's shared band, the device's
compute profile and battery, the topology's backhaul routes); the compute phase hands the real local
update to the training executor, whose result is needed only at the aggregation.  A phase stopped by
the server (``simpy.Interrupt`` with a :class:`~pwffsim.status.StopCause`) ends with the matching
status; a battery that empties ends the round with a dropout.

Same-instant rule: an activity that completes at the very instant a stop arrives completes (its row
says ``ok``; an upload that ends at the deadline has arrived "by" it), and the stop then ends the
client's round before its next activity starts.

Between its activities a device is idle and draws its ``idle_power_w`` (:mod:`pwffsim.sim.idle` states
the rule); an upload lost to a packet error is sent again (:mod:`pwffsim.sim.packets`).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import simpy

from ..net.channel import db_to_linear
from ..net.linkstate import LinkView
from ..net.radio import Transfer
from ..status import Kind, Status, StopCause
from .idle import IdleMeter, IdleMeters
from .recorder import Recorder
from .state import ClientOutcome, RunState
from .world import Device, World

_DIRECTION = {Kind.DOWNLOAD: "dl", Kind.UPLOAD: "ul"}


@functools.lru_cache(maxsize=64)
def _noise_factor(noise_figure_db: float) -> float:
    """``10^(NF/10)``, once per noise figure."""
    return float(db_to_linear(noise_figure_db))
_ACTIVE = (Kind.DOWNLOAD, Kind.COMPUTE, Kind.UPLOAD)  # the phases in which a device is not idle


def backhaul_rate_bps(topology: Any, src: str, dst: str) -> float:
    """The bottleneck rate of the backhaul route from ``src`` to ``dst`` (0 if they are one node)."""
    return 0.0 if src == dst else float(topology.bottleneck_bps(src, dst))


class ClientLifecycle:
    """Runs clients' rounds; ``in_flight`` maps a device to its transfer on the air (for handovers).

    ``job_for(round, client, start_global)`` builds the local-update job; ``policy`` says where a client
    downloads from and uploads to (cloud, or its edge server) and which model part it starts from;
    ``packet_errors`` (a :class:`~pwffsim.sim.packets.PacketErrors`, None: off) loses uploads.
    """

    def __init__(self, env: simpy.Environment, world: World, recorder: Recorder, state: RunState,
                 executor: Any, job_for: Callable, flops: float, policy: Any, packet_errors: Any = None):
        self.env, self.world, self.recorder, self.state = env, world, recorder, state
        self.executor, self.job_for, self.flops, self.policy = executor, job_for, flops, policy
        self.packet_errors = packet_errors
        self.uploads_started: dict[int, int] = {}  # device -> uploads it began (keys packet-error draws)
        self.in_flight: dict[int, tuple[Transfer, str]] = {}
        self.out_of_service_until_s: dict[int, float] = {}  # device -> end of its handover interruption
        self.idle = IdleMeters(env, recorder, self._emptied_while_idle)

    def round(self, r: int, dev: Device, down_bytes: int, up_bytes: int):
        """One client's round (a SimPy process body); returns its :class:`ClientOutcome`."""
        out = ClientOutcome(client=dev.index, start_global=self.policy.start_model(dev),
                            start_version=self.state.version, t_start_s=self.env.now)
        self.idle.begin(r, dev, out)
        phases = self._phases(down_bytes)
        for i, phase in enumerate(phases):
            status = yield from self._metered_phase(r, dev, phase, out, down_bytes, up_bytes)
            if phase == Kind.DOWNLOAD:
                out.downloaded = status == Status.OK  # (no download at all: not counted)
            if status == Status.OK and out.stop_cause is not None and i < len(phases) - 1:
                status = StopCause.status(out.stop_cause)  # stopped as this phase completed: no next one
            if status != Status.OK:
                if self.idle.end(dev.index) == Status.DROPPED:
                    status = Status.DROPPED  # the battery emptied while idle, at this very instant
                out.status = status
                if status == Status.DROPPED:
                    self.dropout(r, dev)
                return out
        out.t_arrival_s = self.env.now
        self.idle.returned(dev.index)  # its update arrived: it waits, idle, for the aggregation
        return out

    def _metered_phase(self, r: int, dev: Device, phase: str, out: ClientOutcome, down_bytes: int, up_bytes: int):
        """A phase; the idle meter runs through backhaul legs and pauses while the device is active."""
        if phase not in _ACTIVE:
            return (yield from self._phase(r, dev, phase, out, down_bytes, up_bytes))
        if self.idle.pause(dev.index) != Status.OK:
            return Status.DROPPED  # the battery emptied while idle, at the instant this phase was to start
        status = yield from self._phase(r, dev, phase, out, down_bytes, up_bytes)
        self.idle.resume(dev.index)
        return status

    def _emptied_while_idle(self, meter: IdleMeter) -> None:
        """A battery emptied while idle: stop the client's round (it records the dropout), or record the
        dropout of a device whose round already returned (its update arrived and is still aggregated)."""
        if meter.process is not None and meter.process.is_alive:
            meter.process.interrupt(StopCause.BATTERY)
        elif meter.dev.alive:
            self.dropout(meter.r, meter.dev)

    def finish_idle(self, k: int) -> None:
        """Device ``k``'s part in its round ends now (its update aggregated, or taken by the server)."""
        meter = self.idle.get(k)
        if meter is not None and self.idle.end(k) == Status.DROPPED and meter.dev.alive:
            self.dropout(meter.r, meter.dev)

    def _phases(self, down_bytes: int) -> tuple[str, ...]:
        # Nothing global (local-only): nothing to download or upload.
        if down_bytes <= 0:
            return (Kind.COMPUTE,)
        phases = (Kind.DOWNLOAD, Kind.COMPUTE, Kind.UPLOAD)
        if self.world.topology is not None:
            phases = ("backhaul-down", *phases, "backhaul-up")
        return phases

    def _phase(self, r: int, dev: Device, phase: str, out: ClientOutcome, down_bytes: int, up_bytes: int):
        if phase == Kind.COMPUTE:
            return (yield from self.compute(r, dev, out))
        if phase in (Kind.DOWNLOAD, Kind.UPLOAD):
            nbytes = down_bytes if phase == Kind.DOWNLOAD else up_bytes
            return (yield from self.transfer(r, dev, phase, nbytes, out))
        server, cell = self.policy.aggregation_node(dev), self.world.cell_id(dev)
        if phase == "backhaul-down":
            return (yield from self.backhaul(r, dev, server, cell, down_bytes, out))
        return (yield from self.backhaul(r, dev, cell, server, up_bytes, out))

    def dropout(self, r: int, dev: Device) -> None:
        dev.alive = False
        dev.t_dropout_s = self.env.now
        self.recorder.instant(r, dev, Kind.DROPOUT, self.env.now, Status.DROPPED)

    def transfer(self, r: int, dev: Device, kind: str, nbytes: int, out: ClientOutcome):
        """A download or upload over the serving cell's shared band (it may move cells at a handover).
        An upload lost to a packet error is sent again in full at once, each attempt its own row."""
        attempt = 0
        # The n-th upload of this device (not the round index: asynchronous policies may have a device
        # upload twice between two aggregations) keys its packet-error draws.
        upload_no = self.uploads_started.get(dev.index, 0)
        if kind == Kind.UPLOAD:
            self.uploads_started[dev.index] = upload_no + 1
        status = yield from self._attempt(r, dev, kind, nbytes, out, (upload_no, attempt))
        while status == Status.ERROR:
            if out.stop_cause is not None:  # stopped as the lost attempt ended: no new one
                return StopCause.status(out.stop_cause)
            attempt += 1
            status = yield from self._attempt(r, dev, kind, nbytes, out, (upload_no, attempt))
        return status

    def _attempt(self, r: int, dev: Device, kind: str, nbytes: int, out: ClientOutcome, attempt: tuple[int, int]):
        """One attempt of a transfer.  Requested during a handover interruption, it starts when the
        interruption ends (the event row spans the wait, in which the device is idle)."""
        direction = _DIRECTION[kind]
        t_request = self.env.now
        tr = None
        try:
            wait_s = self.out_of_service_until_s.get(dev.index, -math.inf) - t_request
            if wait_s > 0:
                yield from self._wait_out_of_service(dev, wait_s)
            tr = self._new_transfer(dev, direction, nbytes)
            tr.tag = (r, kind)
            self.in_flight[dev.index] = (tr, direction)
            yield self.world.cells[dev.cell].band(direction).start(tr)
        except simpy.Interrupt as stop:
            tr = self._stop_transfer(tr, dev, direction, nbytes, stop.cause, out)
        finally:
            self.in_flight.pop(dev.index, None)
        tr.t_start_s = t_request
        out.energy_j += tr.energy_j
        status = tr.status
        if status == Status.OK and kind == Kind.UPLOAD and self.packet_errors is not None \
                and self.packet_errors.fails(dev.index, *attempt, tr.mean_inverse_sinr):
            status = Status.ERROR
        self.recorder.event(r, dev, kind, tr.t_start_s, tr.t_end_s, nbytes, tr.mean_rate_bps, tr.energy_j, status)
        return status

    def _wait_out_of_service(self, dev: Device, wait_s: float):
        """Wait, idle, for the end of a handover interruption."""
        self.idle.resume(dev.index)
        yield self.env.timeout(wait_s)
        if self.idle.pause(dev.index) != Status.OK:  # the battery emptied at the very end of the wait
            raise simpy.Interrupt(StopCause.BATTERY)  # the transfer ends 'dropped', as if stopped now

    def _new_transfer(self, dev: Device, direction: str, nbytes: int) -> Transfer:
        """A download is received at the device's noise figure (the uplink band's N0 holds the base
        station's); an upload draws p / eta + P_c (:attr:`DeviceProfile.tx_drain_power_w`).  The band
        reads the link to whichever cell serves the device (it changes at a handover)."""
        prof, noise_factor = dev.profile, 1.0
        if direction == "dl":
            snr_p, drain_p = self.world.cells[dev.cell].bs_tx_power_w, prof.rx_power_w
            noise_factor = _noise_factor(prof.noise_figure_db)
        else:
            snr_p, drain_p = prof.tx_power_w, prof.tx_drain_power_w
        view = LinkView(dev.links, dev.index, direction, lambda: dev.cell)
        return Transfer(device=dev.index, bits=8.0 * nbytes, snr_power_w=snr_p, drain_power_w=drain_p,
                        battery=dev.battery, gain=view.gain, next_change_s=lambda t: dev.next_change_s(direction, t),
                        noise_factor=noise_factor, link=view)

    def _stop_transfer(self, tr: Optional[Transfer], dev: Device, direction: str, nbytes: int, cause: Any,
                       out: ClientOutcome) -> Transfer:
        """The transfer as a stop for ``cause`` leaves it now.  One that completes at this very instant
        completes (``out.stop_cause`` then ends the round after it)."""
        status = StopCause.status(cause)
        if tr is None:  # stopped while waiting for the end of a handover interruption
            tr = self._new_transfer(dev, direction, nbytes)
            tr.t_start_s = self.env.now
        if tr.done is None or tr.status == Status.DETACHED:  # not on any band now
            tr.status, tr.t_end_s = status, self.env.now
            tr.rate_bps = tr.mean_rate_bps
        else:
            self.world.cells[dev.cell].band(direction).cancel(tr, status)
        if tr.status != status:
            out.stop_cause = cause
        return tr

    def backhaul(self, r: int, dev: Device, src: str, dst: str, nbytes: int, out: ClientOutcome):
        """The model part crossing the backhaul graph (latency + bytes over the bottleneck)."""
        t0 = self.env.now
        dt = self.world.topology.transfer_time_s(src, dst, nbytes)
        status = Status.OK
        try:
            yield self.env.timeout(dt)
        except simpy.Interrupt as stop:
            if self.env.now < t0 + dt:
                status = StopCause.status(stop.cause)
            else:  # it completes at the instant of the stop
                out.stop_cause = stop.cause
        self.recorder.backhaul(r, dev, t0, self.env.now, backhaul_rate_bps(self.world.topology, src, dst), nbytes, src, dst,
                               status)
        return status

    def compute(self, r: int, dev: Device, out: ClientOutcome):
        """The local update: simulated time and energy from its FLOPs; the real training goes to the executor."""
        env = self.env
        t_c, e_c = dev.profile.compute_cost(self.flops)
        power = e_c / t_c if t_c > 0 else 0.0
        t0 = env.now
        handle = self.executor.submit(self.job_for(r, dev.index, out.start_global))
        enough = dev.battery.level_j >= e_c
        wait_s = t_c if enough else dev.battery.time_to_empty_s(power)
        try:
            yield env.timeout(wait_s)
        except simpy.Interrupt as stop:
            if env.now < t0 + wait_s:
                e = dev.battery.draw(power * (env.now - t0))
                out.energy_j += e
                handle.cancel()
                status = StopCause.status(stop.cause)
                self.recorder.event(r, dev, Kind.COMPUTE, t0, env.now, 0, 0.0, e, status)
                return status
            out.stop_cause = stop.cause  # it completes at the instant of the stop
        if enough:
            e, status = dev.battery.draw(e_c), Status.OK
            out.handle = handle
        else:
            e, status = dev.battery.drain_all(), Status.DROPPED
            handle.cancel()
        out.energy_j += e
        self.recorder.event(r, dev, Kind.COMPUTE, t0, env.now, 0, 0.0, e, status)
        return status
