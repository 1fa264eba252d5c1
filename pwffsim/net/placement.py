"""Random placement of devices around a base station, or among several.

Network side only: numpy and the standard library (never torch). Every draw takes a
``numpy.random.Generator``; positions are in metres, as an ``(n, 2)`` array of ``(x, y)``.

``min_distance_m`` keeps devices away from the base stations ``sites_m`` (default: one at the
centre). With one site at the centre the draws are those of a single cell (the disc is sampled as
an annulus, the square by rejection); with other sites, points closer than ``min_distance_m`` to any
site are redrawn.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["place_uniform_disc", "place_uniform_square"]

_MAX_REDRAW_ROUNDS = 10_000  # rejection rounds before concluding the exclusion zones leave no room


def _check_common(rng, n: int, center_xy_m) -> tuple[int, np.ndarray]:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    center = np.asarray(center_xy_m, dtype=float)
    if center.shape != (2,) or not np.all(np.isfinite(center)):
        raise ValueError(f"center_xy_m must be a finite (x, y) pair in metres, got {center_xy_m!r}")
    return int(n), center


def _sites(sites_m, center: np.ndarray) -> tuple[np.ndarray, bool]:
    """The checked ``(m, 2)`` base-station positions, and whether they are just one at the centre."""
    if sites_m is None:
        return center[None, :], True
    sites = np.asarray(sites_m, dtype=float).reshape(-1, 2)
    if sites.shape[0] == 0 or not np.all(np.isfinite(sites)):
        raise ValueError(f"sites_m must be finite (x, y) positions in metres, at least one, got {sites_m!r}")
    return sites, bool(sites.shape[0] == 1 and np.array_equal(sites[0], center))


def _far_enough(pts: np.ndarray, sites: np.ndarray, r_min: float) -> np.ndarray:
    """The rows of ``pts`` at least ``r_min`` from every site."""
    if r_min <= 0 or pts.size == 0:
        return pts
    d = np.hypot(pts[:, None, 0] - sites[None, :, 0], pts[:, None, 1] - sites[None, :, 1])
    return pts[np.all(d >= r_min, axis=1)]


def _rejection(draw, n: int, sites: np.ndarray, r_min: float) -> np.ndarray:
    """``n`` points from ``draw(k)`` (k points), redrawing those closer than ``r_min`` to a site."""
    out = np.empty((n, 2))
    filled = 0
    for _ in range(_MAX_REDRAW_ROUNDS):
        if filled >= n:
            return out
        pts = _far_enough(draw(n - filled), sites, r_min)
        out[filled:filled + len(pts)] = pts
        filled += len(pts)
    if filled >= n:
        return out
    raise ValueError(f"min_distance_m={r_min} m around the base stations leaves (almost) no room in the placement area")


def place_uniform_disc(rng: np.random.Generator, n: int, center_xy_m: tuple[float, float],
                       radius_m: float, min_distance_m: float = 0.0, sites_m=None) -> np.ndarray:
    """``n`` points uniform (by area) over the disc of radius ``radius_m`` around ``center_xy_m``, none
    closer than ``min_distance_m`` to a site of ``sites_m`` (default: the centre).

    One site at the centre: the annulus ``min_distance_m <= r <= radius_m`` by inverse-CDF sampling,
    ``r = sqrt(U (R^2 - r0^2) + r0^2)``, ``theta = 2 pi V`` with U, V ~ U(0, 1) (the radial CDF of an
    area-uniform annulus is ``(r^2 - r0^2) / (R^2 - r0^2)``). Other sites: the same with ``r0 = 0``,
    too-close points redrawn. Returns an ``(n, 2)`` array in metres.
    """
    n, center = _check_common(rng, n, center_xy_m)
    r_max = float(radius_m)
    r_min = float(min_distance_m)
    if not math.isfinite(r_max) or r_max <= 0:
        raise ValueError(f"radius_m must be a finite radius > 0 m, got {radius_m!r}")
    if not math.isfinite(r_min) or r_min < 0 or r_min > r_max:
        raise ValueError(f"min_distance_m must be in [0, radius_m={r_max}] m, got {min_distance_m!r}")
    sites, single = _sites(sites_m, center)
    r0 = r_min if single else 0.0

    def draw(k: int) -> np.ndarray:
        u = rng.random(k)
        v = rng.random(k)
        r = np.sqrt(u * (r_max**2 - r0**2) + r0**2)
        theta = 2.0 * math.pi * v
        return center + np.column_stack((r * np.cos(theta), r * np.sin(theta)))

    return draw(n) if single else _rejection(draw, n, sites, r_min)


def place_uniform_square(rng: np.random.Generator, n: int, center_xy_m: tuple[float, float],
                         side_m: float, min_distance_m: float = 0.0, sites_m=None) -> np.ndarray:
    """``n`` points uniform in the axis-aligned square of side ``side_m`` centred on ``center_xy_m``
    (e.g. the 500 m x 500 m cell of Yang et al. 2021), conditioned on being at least
    ``min_distance_m`` from every site of ``sites_m`` (default: the centre; rejection sampling:
    too-close points are redrawn). Returns an ``(n, 2)`` array in metres.
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
    sites, _ = _sites(sites_m, center)
    return _rejection(lambda k: center + rng.uniform(-half, half, size=(k, 2)), n, sites, r_min)
