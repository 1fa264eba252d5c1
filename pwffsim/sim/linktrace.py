"""The ``links`` trace: what every transfer's link looked like each time its band set its rate.

Each band calls :meth:`LinkTrace.on_rates` after it (re)computes its transfers' rates (a transfer
starts or ends, one of its fading blocks or position samples changes, transfers join or leave another
band it shares interference with); one row per active transfer then says where the device is, what
its link is made of (distance, LOS, path loss, shadowing, fading), what it was given (bandwidth share,
transfers sharing) and what it got (SNR, SINR, rate).  Under the default Shannon link abstraction and
per-receiver downlink, a reader can recompute every transfer's duration from these rows alone (under
multicast the rate is the worst receiver's; under truncated Shannon alpha and SE_max apply).  The
recorder names the columns.
"""
from __future__ import annotations

from ..net.radio import SharedBand
from .recorder import Recorder
from .world import World


class LinkTrace:
    def __init__(self, world: World, recorder: Recorder):
        self.world, self.recorder = world, recorder

    def attach(self) -> None:
        """Have every band of every cell report its rate computations."""
        for cell in self.world.cells:
            cell.uplink.on_rates = self.on_rates
            cell.downlink.on_rates = self.on_rates

    def on_rates(self, band: SharedBand, t: float) -> None:
        w = self.world
        active = band.active
        for tr in active:
            r, kind = tr.tag
            dev = w.devices[tr.device]
            direction = "dl" if kind == "download" else "ul"
            xy = w.position(dev.index, t)
            parts = None if xy is None else w.link.components(dev.index, dev.cell, xy)  # None: out of coverage
            fading = w.fading(dev.index, dev.cell, direction).gain(t)
            large_scale = w.large_scale_gain(dev.index, dev.cell, t)
            # the power on its share and the receiver's noise density (noise figures, multicast/FDMA downlink)
            snr_mean = tr.power_w * large_scale / (tr.noise_density_w_per_hz * tr.bandwidth_hz)
            self.recorder.link_row(t, r, kind, tr, w.cells[dev.cell].id, len(active), xy, parts, fading,
                                   snr_mean)
