"""Node mobility: trajectories read from real traces (SUMO FCD, ns-2 setdest, CSV) or drawn from
synthetic models (random waypoint, Gauss-Markov), mapped to federated-learning clients.

Network side only: numpy and the standard library (never torch).

Conventions
-----------
* Positions are metres, as ``(x, y)``; times are seconds (``_s``); speeds m/s (``_mps``).
* A :class:`Trajectory` is piecewise linear between its samples. Before its first sample a node is
  absent (``position`` returns ``None``: a vehicle SUMO inserts at 580 s does not exist before);
  after its last one the *end policy* decides: ``"hold"`` (stays at the last position) or
  ``"leave"`` (``None``: the node has left the scenario). With activity intervals
  (``Trajectory.active_s``, from an ns-2 activity file: :func:`read_ns2_activity`) a node is
  present only between a ``start`` and its ``stop``.
* :class:`MobilityModel` maps client ``k`` to one trajectory, transforms positions
  ``p' = scale * p + offset`` and, with an ``area``, reports a node outside it as out of coverage
  (``None``). The simulator treats ``None`` as "client unavailable".
* ``next_change_s`` gives the next time at which the piecewise-linear motion changes (a sample
  time, or the moment the node crosses the coverage-area edge): the simulator re-evaluates the
  channel there.
* Readers raise :class:`MobilityError` (a ``ValueError``) whose message is one line,
  ``"{path}:{line}: {what was expected}"``.
* Random models take a ``numpy.random.Generator``; nothing here touches a global random state.

Layout
------
``common`` (error, id order, argument checks), ``trajectory`` (:class:`Trajectory`), ``model``
(:class:`MobilityModel`), ``records`` (file opening, the CSV row reader shared with
:mod:`pwffsim.net.availability`, number parsing), one module per trace format (``fcd``, ``ns2`` and
its activity file ``ns2activity``, ``csvtrace``), ``load`` (:func:`load_trace`) and ``generators``
(static, straight line, random waypoint, Gauss-Markov).
"""

from __future__ import annotations

from .common import END_POLICIES, MobilityError, natural_key
from .csvtrace import read_csv_trace
from .fcd import read_sumo_fcd
from .generators import gauss_markov, random_waypoint, static_positions, straight_line
from .load import TRACE_FORMATS, load_trace
from .model import MobilityModel
from .ns2 import read_ns2_movements
from .ns2activity import read_ns2_activity
from .records import read_csv_records
from .trajectory import Trajectory

__all__ = [
    "END_POLICIES",
    "MobilityError",
    "Trajectory",
    "MobilityModel",
    "natural_key",
    "read_sumo_fcd",
    "read_ns2_movements",
    "read_ns2_activity",
    "read_csv_trace",
    "load_trace",
    "static_positions",
    "random_waypoint",
    "gauss_markov",
    "straight_line",
]
