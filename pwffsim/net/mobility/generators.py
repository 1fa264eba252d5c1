"""Synthetic mobility: static nodes, straight lines, random waypoint and Gauss-Markov.

Random models take a ``numpy.random.Generator`` and draw from it in a fixed order (start positions
of all nodes first, then node by node), so a seed gives the same trajectories on every run.
"""

from __future__ import annotations

import math

import numpy as np

from .common import _check_area, _check_n, _check_rng
from .trajectory import Trajectory


def _start_positions(rng, n: int, area, start_positions) -> np.ndarray:
    xmin, ymin, xmax, ymax = area
    if start_positions is None:
        return np.column_stack((rng.uniform(xmin, xmax, n), rng.uniform(ymin, ymax, n)))
    p = np.asarray(start_positions, dtype=float)
    if p.shape != (n, 2) or not np.all(np.isfinite(p)):
        raise ValueError(f"start_positions must be a finite ({n}, 2) array in metres, got shape {p.shape}")
    if np.any(p[:, 0] < xmin) or np.any(p[:, 0] > xmax) or np.any(p[:, 1] < ymin) or np.any(p[:, 1] > ymax):
        raise ValueError(f"start_positions must lie inside area {area}")
    return p


def static_positions(positions: np.ndarray) -> dict[str, Trajectory]:
    """Fixed nodes: ``{"0": ..., "1": ...}``, one single-sample trajectory per row of the ``(n, 2)``
    array (end policy fixed to ``"hold"``: a static node never leaves)."""
    p = np.asarray(positions, dtype=float)
    if p.ndim != 2 or p.shape[1] != 2 or not np.all(np.isfinite(p)):
        raise ValueError(f"positions must be a finite (n, 2) array in metres, got shape {p.shape}")
    return {str(i): Trajectory([0.0], p[i:i + 1], end="hold") for i in range(p.shape[0])}


def straight_line(start_xy, end_xy, speed_mps: float, t0_s: float = 0.0) -> Trajectory:
    """Constant-speed straight movement from ``start_xy`` (at ``t0_s``) to ``end_xy``."""
    a = np.asarray(start_xy, dtype=float)
    b = np.asarray(end_xy, dtype=float)
    if a.shape != (2,) or b.shape != (2,) or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError(f"start_xy and end_xy must be finite (x, y) pairs, got {start_xy!r}, {end_xy!r}")
    v = float(speed_mps)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"speed_mps must be a finite speed > 0 m/s, got {speed_mps!r}")
    t0 = float(t0_s)
    d = float(np.hypot(*(b - a)))
    if d == 0.0:
        return Trajectory([t0], [a])
    return Trajectory([t0, t0 + d / v], [a, b])


def random_waypoint(rng: np.random.Generator, n: int, area, speed_range_mps=(1.0, 15.0),
                    pause_s=(0.0, 5.0), duration_s: float = 600.0,
                    start_positions=None) -> dict[str, Trajectory]:
    """Random waypoint model (Johnson & Maltz 1996; Camp, Boleng & Davies 2002, sec. 2.1): each node
    repeatedly picks a destination uniform in ``area = (xmin, ymin, xmax, ymax)`` and a speed uniform
    in ``speed_range_mps``, travels there in a straight line, then pauses for a time uniform in
    ``pause_s``; sampled until ``duration_s`` (the last leg is cut there). Returns ``{"0": ...}``.
    """
    _check_rng(rng)
    n = _check_n(n)
    area = _check_area(area)
    vmin, vmax = (float(v) for v in speed_range_mps)
    if not (math.isfinite(vmax) and 0 < vmin <= vmax):
        raise ValueError(f"speed_range_mps must be (vmin, vmax) with 0 < vmin <= vmax, got {speed_range_mps!r}")
    pmin, pmax = (float(v) for v in pause_s)
    if not (math.isfinite(pmax) and 0 <= pmin <= pmax):
        raise ValueError(f"pause_s must be (min, max) with 0 <= min <= max, got {pause_s!r}")
    duration = float(duration_s)
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration_s must be finite and > 0, got {duration_s!r}")
    starts = _start_positions(rng, n, area, start_positions)
    return {str(k): _waypoint_path(rng, starts[k].copy(), area, (vmin, vmax), (pmin, pmax), duration)
            for k in range(n)}


def _waypoint_path(rng: np.random.Generator, p: np.ndarray, area, speeds, pauses, duration: float) -> Trajectory:
    """One random-waypoint node from ``p``: per leg a destination (x, then y), a speed and, if the
    leg ends before ``duration``, a pause are drawn, in that order."""
    xmin, ymin, xmax, ymax = area
    (vmin, vmax), (pmin, pmax) = speeds, pauses
    t = 0.0
    ts, xy = [0.0], [p.copy()]
    while t < duration:
        dest = np.array([rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)])
        v = rng.uniform(vmin, vmax)
        d = float(np.hypot(*(dest - p)))
        t_arrive = t + d / v
        if t_arrive >= duration:
            xy.append(p + (dest - p) * ((duration - t) / (t_arrive - t)))
            ts.append(duration)
            break
        if t_arrive > t:
            ts.append(t_arrive)
            xy.append(dest.copy())
        t, p = t_arrive, dest
        pause = rng.uniform(pmin, pmax)
        if pause > 0:
            t_end = min(t + pause, duration)
            ts.append(t_end)
            xy.append(p.copy())
            t = t_end
    return Trajectory(ts, xy)


def gauss_markov(rng: np.random.Generator, n: int, area, mean_speed_mps: float = 5.0, alpha: float = 0.75,
                 step_s: float = 1.0, duration_s: float = 600.0, start_positions=None,
                 speed_std_mps: float | None = None, direction_std_rad: float = math.pi / 4) -> dict[str, Trajectory]:
    """Gauss-Markov mobility (Liang & Haas, INFOCOM 1999; as described in Camp et al. 2002, sec. 2.6).

    Every ``step_s`` the speed and direction are updated as
    ``s_n = alpha s_{n-1} + (1 - alpha) s_mean + sqrt(1 - alpha^2) N(0, sigma_s^2)`` and
    ``d_n = alpha d_{n-1} + (1 - alpha) d_mean + sqrt(1 - alpha^2) N(0, sigma_d^2)``, so the stationary
    speed is ``N(s_mean, sigma_s^2)`` (clipped at 0). ``sigma_s`` defaults to ``mean_speed_mps / 4``
    and ``sigma_d`` to pi/4; ``d_mean`` is uniform per node, the initial speed is ``s_mean`` and the
    initial direction uniform. The node moves in a straight line at ``(s, d)`` during each step and
    is reflected (specularly) at the edges of ``area``, with an extra sample at every bounce so the
    path stays exact; the mean direction is mirrored too, so memory does not push the node back into
    the edge. Returns ``{"0": ...}``.
    """
    _check_rng(rng)
    n = _check_n(n)
    area = _check_area(area)
    s_mean, a, step, duration, sig_s, sig_d = _gauss_markov_params(
        mean_speed_mps, alpha, step_s, duration_s, speed_std_mps, direction_std_rad)
    xmin, ymin, xmax, ymax = area
    lo = np.array([xmin, ymin])
    hi = np.array([xmax, ymax])
    starts = _start_positions(rng, n, area, start_positions)
    root = math.sqrt(1.0 - a * a)
    n_steps = int(math.ceil(duration / step - 1e-9))
    out = {}
    for k in range(n):
        d_mean = rng.uniform(0.0, 2.0 * math.pi)
        node = _GaussMarkovNode(starts[k].copy(), s_mean, rng.uniform(0.0, 2.0 * math.pi), d_mean)
        for _ in range(n_steps):
            node.move(min(step, duration - node.t), lo, hi)
            node.sample()
            node.s = _ar1(a, node.s, s_mean, root, sig_s, rng)
            node.d = _ar1(a, node.d, node.d_mean, root, sig_d, rng)
        out[str(k)] = Trajectory(node.ts, node.xy)
    return out


def _gauss_markov_params(mean_speed_mps, alpha, step_s, duration_s, speed_std_mps, direction_std_rad):
    """Checked ``(s_mean, alpha, step, duration, sigma_s, sigma_d)`` of :func:`gauss_markov`."""
    s_mean = float(mean_speed_mps)
    if not math.isfinite(s_mean) or s_mean < 0:
        raise ValueError(f"mean_speed_mps must be finite and >= 0, got {mean_speed_mps!r}")
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    step = float(step_s)
    duration = float(duration_s)
    if not (math.isfinite(step) and step > 0 and math.isfinite(duration) and duration > 0):
        raise ValueError(f"step_s and duration_s must be finite and > 0, got {step_s!r}, {duration_s!r}")
    sig_s = s_mean / 4.0 if speed_std_mps is None else float(speed_std_mps)
    sig_d = float(direction_std_rad)
    if sig_s < 0 or sig_d < 0:
        raise ValueError("speed_std_mps and direction_std_rad must be >= 0")
    return s_mean, a, step, duration, sig_s, sig_d


def _ar1(a: float, x: float, mean: float, root: float, sigma: float, rng: np.random.Generator) -> float:
    """One Gauss-Markov update ``a x + (1 - a) mean + root N(0, sigma^2)`` (no draw when sigma = 0)."""
    if sigma > 0:
        return a * x + (1.0 - a) * mean + root * rng.normal(0.0, sigma)
    return a * x + (1.0 - a) * mean


def _first_edge_hit(p: np.ndarray, vel: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[float, np.ndarray]:
    """Time until ``p`` moving at ``vel`` first reaches an edge of ``[lo, hi]`` (``inf`` if never) and
    which axes it hits then (both at a corner, within 1e-12 s)."""
    tau = math.inf
    hit = np.zeros(2, dtype=bool)
    for ax in (0, 1):
        if vel[ax] > 0:
            tc = (hi[ax] - p[ax]) / vel[ax]
        elif vel[ax] < 0:
            tc = (lo[ax] - p[ax]) / vel[ax]
        else:
            continue
        if tc < tau - 1e-12:
            tau, hit = tc, np.array([ax == 0, ax == 1])
        elif abs(tc - tau) <= 1e-12:
            hit[ax] = True
    return tau, hit


class _GaussMarkovNode:
    """One Gauss-Markov node: position ``p`` at time ``t``, speed ``s``, heading ``d``, mean heading
    ``d_mean``, and the samples ``ts``/``xy`` so far."""

    __slots__ = ("p", "t", "s", "d", "d_mean", "ts", "xy")

    def __init__(self, p: np.ndarray, s: float, d: float, d_mean: float):
        self.p, self.t, self.s, self.d, self.d_mean = p, 0.0, s, d, d_mean
        self.ts, self.xy = [0.0], [p.copy()]

    def move(self, dt: float, lo: np.ndarray, hi: np.ndarray) -> None:
        """Straight motion at ``(s, d)`` for ``dt``, reflected specularly at the edges of ``[lo, hi]``."""
        vel = max(self.s, 0.0) * np.array([math.cos(self.d), math.sin(self.d)])
        remaining = dt
        while remaining > 0:
            tau, hit = _first_edge_hit(self.p, vel, lo, hi)
            if tau >= remaining:
                self.p = self.p + vel * remaining
                self.t += remaining
                remaining = 0.0
            else:
                tau = max(tau, 0.0)
                self.p = self.p + vel * tau
                self.t += tau
                remaining -= tau
                vel = np.where(hit, -vel, vel)
                self._bounce(tau, hit, lo, hi)
            self.p = np.clip(self.p, lo, hi)

    def _bounce(self, tau: float, hit: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """A sample at the bounce point; the heading (and the mean heading) mirrored like the velocity."""
        if tau > 0 and self.t > self.ts[-1]:
            self.ts.append(self.t)
            self.xy.append(np.clip(self.p, lo, hi))
        if hit[0]:
            self.d, self.d_mean = math.pi - self.d, math.pi - self.d_mean
        if hit[1]:
            self.d, self.d_mean = -self.d, -self.d_mean

    def sample(self) -> None:
        """A sample at the current time, unless one is there already."""
        if self.t > self.ts[-1]:
            self.ts.append(self.t)
            self.xy.append(self.p.copy())
