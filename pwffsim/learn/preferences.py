"""Each device's preferences over the two preference-dependent families of the built-in data.

Two families of prompts have answers that depend on who asks:

* **answer style** (every benign topic): *concise* (``"7"``) or *detailed*, the fact's full statement
  (``"3 plus 4 is 7 ."``); a device weighs them ``w_concise`` / ``w_detailed = 1 - w_concise``;
* **borderline requests** (the ``"borderline"`` topic): *comply* (helpful but harmful) or *refuse*
  (harmless); a device weighs them ``w_help`` / ``w_safe = 1 - w_help``.

**Preference divergence** ``d`` in [0, 1] (``data.preference_divergence``) runs from "everyone agrees"
to "two opposed camps". Every device belongs to camp ``b`` in {0, 1}, one fair coin of its own stream
``SeedSequence([seed, STREAM_CAMP, device])`` (so the camps do not change with ``d``: common random
numbers across divergence levels). Its weights are

    w_detailed = w_help = d * b,    w_concise = w_safe = 1 - d * b.

At ``d = 0`` every device has the consensus weights (concise answers, refuse borderline requests);
at ``d = 1`` camp 0 keeps them and camp 1 wants the opposite on both families (detailed answers,
comply). A device's local data follow its weights (:mod:`pwffsim.learn.clients`) and so do its rewards
(:mod:`pwffsim.learn.rewards`).

Without a divergence (``None``, the default) the built-in data keep their original form: every device
wants concise answers, and ``w_help`` comes from the scenario's ``pwff.preference`` rule.

Numpy only: the orchestrator reads the same weights without importing torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["STREAM_CAMP", "Preference", "camp", "divergent_preference", "check_divergence"]

#: Seed-stream tag of a device's camp draw.
STREAM_CAMP = 0xCA4F


@dataclass(frozen=True)
class Preference:
    """A device's weights on the preference-dependent answer forms, each in [0, 1]."""

    w_concise: float = 1.0  # answer style: weight on the concise answer (detailed: 1 - this)
    w_help: float = 0.5     # borderline requests: weight on complying (refusing: 1 - this)

    def __post_init__(self) -> None:
        for name in ("w_concise", "w_help"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} must lie in [0, 1], got {v}")

    @property
    def w_detailed(self) -> float:
        return 1.0 - self.w_concise

    @property
    def w_safe(self) -> float:
        return 1.0 - self.w_help


def check_divergence(d: float) -> float:
    if not (math.isfinite(d) and 0.0 <= d <= 1.0):
        raise ValueError(f"preference_divergence must lie in [0, 1], got {d}")
    return float(d)


def camp(seed: int, device: int) -> int:
    """Device ``device``'s camp, 0 or 1: one fair coin of its own stream (independent of the divergence,
    of the population and of every other draw)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), STREAM_CAMP, int(device)]))
    return int(rng.random() < 0.5)


def divergent_preference(divergence: float, seed: int, device: int) -> Preference:
    """The weights of ``device`` at preference divergence ``divergence`` (see the module docstring)."""
    w = check_divergence(divergence) * camp(seed, device)
    return Preference(w_concise=1.0 - w, w_help=w)
