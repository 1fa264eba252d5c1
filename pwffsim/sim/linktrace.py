"""The ``links`` trace: what every transfer's link looked like each time its band set its rate.

Each band calls :meth:`LinkTrace.on_rates` after it (re)computes its transfers' rates (a transfer
starts or ends, a fading block or position sample changes, interference changes); one row per active
transfer then says where the device is, what its link is made of (distance, LOS, path loss,
shadowing, fading), what it was given (bandwidth share, transfers sharing) and what it got (SNR,
SINR, rate).  A reader can recompute every transfer's duration from these rows alone.
"""
from __future__ import annotations

import math

from ..net.radio import SharedBand
from .recorder import Recorder
from .world import World


def _db(x: float) -> float:
    return 10.0 * math.log10(x) if x > 0 else -math.inf


class LinkTrace:
    def __init__(self, world: World, recorder: Recorder):
        self.world, self.recorder = world, recorder

    def attach(self) -> None:
        """Have every band of every cell report its rate computations."""
        for cell in self.world.cells:
            cell.uplink.on_rates = self.on_rates
            cell.downlink.on_rates = self.on_rates

    def on_rates(self, band: SharedBand, t: float) -> None:
        for tr in band.active:
            r, kind = tr.tag
            self.recorder.link_row(t=t, round=r, client=tr.device, kind=kind, **self._link(band, tr, kind, t))

    def _link(self, band: SharedBand, tr, kind: str, t: float) -> dict:
        w = self.world
        dev = w.devices[tr.device]
        direction = "dl" if kind == "download" else "ul"
        xy = w.position(dev.index, t)
        fading = w.fading(dev.index, dev.cell, direction).gain(t)
        large_scale = w.large_scale_gain(dev.index, dev.cell, t)
        # the power on its share and the receiver's noise density (noise figures, multicast/FDMA downlink)
        snr_mean = tr.power_w * large_scale / (tr.noise_density_w_per_hz * tr.bandwidth_hz)
        row = dict(cell=w.cells[dev.cell].id, fading_db=_db(fading), bandwidth_hz=tr.bandwidth_hz,
                   sharing=len(band.active), interference_dbm_hz=_db(tr.interference_psd_w_per_hz * 1e3),
                   snr_mean_db=_db(snr_mean), sinr_db=_db(tr.sinr), rate_bps=tr.rate_bps)
        if xy is None:  # out of coverage
            return {**row, "x_m": math.nan, "y_m": math.nan, "distance_m": math.nan, "los": -1,
                    "path_loss_db": math.inf, "shadowing_db": math.nan}
        parts = w.link.components(dev.index, dev.cell, xy)
        return {**row, "x_m": float(xy[0]), "y_m": float(xy[1]), "distance_m": parts.distance_m,
                "los": int(parts.los), "path_loss_db": parts.path_loss_db, "shadowing_db": parts.shadowing_db}
