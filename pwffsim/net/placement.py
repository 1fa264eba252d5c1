"""Random placement of devices around a base station.

Network side only: numpy and the standard library (never torch). Every draw takes a
``numpy.random.Generator``; positions are in metres, as an ``(n, 2)`` array of ``(x, y)``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["place_uniform_disc", "place_uniform_square"]


def _check_common(rng, n: int, center_xy_m) -> tuple[int, np.ndarray]:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    center = np.asarray(center_xy_m, dtype=float)
    if center.shape != (2,) or not np.all(np.isfinite(center)):
        raise ValueError(f"center_xy_m must be a finite (x, y) pair in metres, got {center_xy_m!r}")
    return int(n), center


def place_uniform_disc(rng: np.random.Generator, n: int, center_xy_m: tuple[float, float],
                       radius_m: float, min_distance_m: float = 0.0) -> np.ndarray:
    """``n`` points uniform (by area) over the annulus ``min_distance_m <= r <= radius_m`` around
    ``center_xy_m``.

    Inverse-CDF sampling: ``r = sqrt(U (R^2 - r0^2) + r0^2)``, ``theta = 2 pi V`` with U, V ~ U(0, 1)
    (the radial CDF of an area-uniform annulus is ``(r^2 - r0^2) / (R^2 - r0^2)``).
    Returns an ``(n, 2)`` array in metres.
    """
    n, center = _check_common(rng, n, center_xy_m)
    r_max = float(radius_m)
    r_min = float(min_distance_m)
    if not math.isfinite(r_max) or r_max <= 0:
        raise ValueError(f"radius_m must be a finite radius > 0 m, got {radius_m!r}")
    if not math.isfinite(r_min) or r_min < 0 or r_min > r_max:
        raise ValueError(f"min_distance_m must be in [0, radius_m={r_max}] m, got {min_distance_m!r}")
    u = rng.random(n)
    v = rng.random(n)
    r = np.sqrt(u * (r_max**2 - r_min**2) + r_min**2)
    theta = 2.0 * math.pi * v
    return center + np.column_stack((r * np.cos(theta), r * np.sin(theta)))


def place_uniform_square(rng: np.random.Generator, n: int, center_xy_m: tuple[float, float],
                         side_m: float, min_distance_m: float = 0.0) -> np.ndarray:
    """``n`` points uniform in the axis-aligned square of side ``side_m`` centred on ``center_xy_m``
    (e.g. the 500 m x 500 m cell of Yang et al. 2021), conditioned on being at least
    ``min_distance_m`` from the centre (rejection sampling: too-close points are redrawn).
    Returns an ``(n, 2)`` array in metres.
    """
    n, center = _check_common(rng, n, center_xy_m)
    side = float(side_m)
    r_min = float(min_distance_m)
    if not math.isfinite(side) or side <= 0:
        raise ValueError(f"side_m must be a finite side length > 0 m, got {side_m!r}")
    half = side / 2.0
    if not math.isfinite(r_min) or r_min < 0 or r_min >= half * math.sqrt(2.0):
        raise ValueError(
            f"min_distance_m must be in [0, side_m/sqrt(2)={half * math.sqrt(2.0):.6g}) m "
            f"(the half-diagonal of the square), got {min_distance_m!r}")
    out = np.empty((n, 2))
    filled = 0
    while filled < n:
        need = n - filled
        pts = rng.uniform(-half, half, size=(need, 2))
        if r_min > 0:
            pts = pts[np.hypot(pts[:, 0], pts[:, 1]) >= r_min]
        out[filled:filled + len(pts)] = pts
        filled += len(pts)
    return center + out
