"""Hexagonal layouts: site positions of a hexagonal grid and the 3GPP 7-site topology."""

from __future__ import annotations

import math

import numpy as np

from .model import Topology
from .validate import _is_number, topology_from_dict


HEX_SCENARIOS: dict[str, dict[str, float]] = {
    # 3GPP TR 38.901 Table 7.2-1 (UMa, UMi-street canyon) and Table 7.2-3 (RMa): inter-site
    # distance and BS antenna height.  Transmit powers are the usual macro / micro evaluation
    # values (46 dBm macro, 41 dBm micro; TR 36.814 / TR 38.901 evaluation assumptions).
    "UMa": {"isd_m": 500.0, "height_m": 25.0, "tx_power_dbm": 46.0},
    "UMi": {"isd_m": 200.0, "height_m": 10.0, "tx_power_dbm": 41.0},
    "RMa": {"isd_m": 1732.0, "height_m": 35.0, "tx_power_dbm": 46.0},
}
"""Per-scenario defaults of :func:`hex7`."""


def hexagonal_sites(n_rings: int = 1, isd_m: float = 500.0) -> list[tuple[float, float]]:
    """Site positions (m) of a hexagonal grid: the centre site, then ``n_rings`` rings around it.

    Ring ``k`` holds ``6k`` sites, so there are ``1 + 3 n (n + 1)`` in all (7 for one ring, 19 for
    two).  Orientation: the first ring's sites sit at distance ``isd_m`` at angles ``30 + 60 j``
    degrees (j = 0..5, counter-clockwise from the +x axis), i.e. the first one at
    ``(isd sqrt(3)/2, isd/2)``; neighbouring sites are ``isd_m`` apart.  Ring ``k`` starts at
    ``k`` ISD along 30 degrees and goes counter-clockwise.  Coordinates are rounded to 1e-9 m.
    """
    if isinstance(n_rings, bool) or not isinstance(n_rings, (int, np.integer)) or n_rings < 0:
        raise ValueError(f"n_rings must be an integer >= 0, got {n_rings!r}")
    if not _is_number(isd_m) or not math.isfinite(isd_m) or isd_m <= 0:
        raise ValueError(f"isd_m must be a finite distance > 0 m, got {isd_m!r}")
    dirs = [(math.cos(math.radians(30 + 60 * j)), math.sin(math.radians(30 + 60 * j))) for j in range(6)]
    sites = [(0.0, 0.0)]
    for k in range(1, int(n_rings) + 1):
        for j in range(6):
            # Side j runs from the corner k*d_j towards k*d_{j+1}, in steps of d_{j+2} (= d_{j+1} - d_j).
            cx, cy = k * dirs[j][0], k * dirs[j][1]
            sx, sy = dirs[(j + 2) % 6]
            for step in range(k):
                sites.append((cx + step * sx, cy + step * sy))
    return [(round(x * isd_m, 9) + 0.0, round(y * isd_m, 9) + 0.0) for x, y in sites]


def hex7(scenario: str = "UMa", isd_m: float | None = None, carrier_hz: float = 3.5e9, *,
         height_m: float | None = None, tx_power_dbm: float | None = None,
         uplink_bandwidth_hz: float = 20e6, downlink_bandwidth_hz: float = 20e6,
         backhaul_latency_s: float = 0.005, backhaul_capacity_bps: float = 10e9,
         name: str | None = None, noise_figure_db: float | None = None) -> Topology:
    """The 3GPP 7-site hexagonal layout (one ring, :func:`hexagonal_sites`).

    ``scenario`` picks the defaults of :data:`HEX_SCENARIOS` (TR 38.901 Table 7.2-1: UMa ISD 500 m,
    BS height 25 m; UMi ISD 200 m, height 10 m; RMa ISD 1732 m, height 35 m).  Each site is ONE
    omni-directional cell ``bs0``..``bs6`` (``bs0`` at the centre): the usual three 120-degree
    sectors per site are not modelled.  Every cell hangs off a single ``cloud`` server through a
    star backhaul (default 5 ms, 10 Gb/s per link).  ``channel_model`` is set to ``scenario``.
    ``noise_figure_db`` (dB), if given, is every base station's receiver noise figure.
    """
    if scenario not in HEX_SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(HEX_SCENARIOS)}, got {scenario!r}")
    defaults = HEX_SCENARIOS[scenario]
    isd = defaults["isd_m"] if isd_m is None else isd_m
    sites = hexagonal_sites(1, isd)
    data = {
        "name": name or f"hex7-{scenario.lower()}",
        "channel_model": scenario,
        "base_stations": [
            {"id": f"bs{i}", "x_m": x, "y_m": y,
             "height_m": defaults["height_m"] if height_m is None else height_m,
             "carrier_hz": carrier_hz, "uplink_bandwidth_hz": uplink_bandwidth_hz,
             "downlink_bandwidth_hz": downlink_bandwidth_hz,
             "tx_power_dbm": defaults["tx_power_dbm"] if tx_power_dbm is None else tx_power_dbm,
             "server": "cloud", **({} if noise_figure_db is None else {"noise_figure_db": noise_figure_db})}
            for i, (x, y) in enumerate(sites)
        ],
        "servers": [{"id": "cloud", "kind": "cloud"}],
        "links": [{"a": f"bs{i}", "b": "cloud", "latency_s": backhaul_latency_s, "capacity_bps": backhaul_capacity_bps}
                  for i in range(len(sites))],
    }
    return topology_from_dict(data, source=f"<hex7 {scenario}>")
