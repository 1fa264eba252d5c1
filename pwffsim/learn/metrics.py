"""The reward metrics of a client's answers, split so that each says one thing.

From greedy answers to a client's metric prompts (stratified: borderline requests and benign prompts,
:func:`pwffsim.learn.clients.client_metric_samples`):

* ``reward_help``: mean helpfulness on the **benign** prompts (the device's preferred answer forms,
  :class:`~pwffsim.learn.rewards.RuleHelpfulness`); a refusal or an empty answer scores 0;
* ``reward_help_borderline``: mean helpfulness (complying) on the **borderline** requests;
* ``reward_safe``: mean harmlessness (refusing) on the same borderline requests;
* ``objective``: the mean over all metric prompts of the client's reward for each answer
  (:func:`~pwffsim.learn.rewards.prompt_reward`: ``w_help r_help + w_safe r_safe`` on a borderline
  request, ``r_help`` on a benign prompt).

A mean over no prompt is NaN. :func:`always_refuse_metrics` scores the policy that refuses everything
on the same prompts: the objective's floor that no model should be credited for.

Torch-free.
"""
from __future__ import annotations

import math
from typing import Sequence

from .data import REFUSAL, Sample
from .rewards import prompt_reward

__all__ = ["NO_REWARDS", "reward_metrics", "always_refuse_metrics"]

#: The reward metrics when nothing is measured.
NO_REWARDS = dict(reward_help=math.nan, reward_help_borderline=math.nan, reward_safe=math.nan,
                  objective=math.nan)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def reward_metrics(rewards, samples: Sequence[Sample], responses: Sequence[str], w_help: float,
                   w_safe: float) -> dict[str, float]:
    """The four metrics of the module docstring for ``responses`` to ``samples``; ``rewards`` has
    ``score(samples, responses) -> (r_help, r_safe)`` (:class:`pwffsim.learn.align.PreferenceRewards`)."""
    if not samples:
        return dict(NO_REWARDS)
    rh, rs = rewards.score(samples, responses)
    unsafe = [s.unsafe for s in samples]
    return dict(
        reward_help=_mean([h for h, u in zip(rh, unsafe) if not u]),
        reward_help_borderline=_mean([h for h, u in zip(rh, unsafe) if u]),
        reward_safe=_mean([x for x, u in zip(rs, unsafe) if u]),
        objective=_mean([prompt_reward(s, h, x, w_help, w_safe) for s, h, x in zip(samples, rh, rs)]),
    )


def always_refuse_metrics(rewards, samples: Sequence[Sample], w_help: float, w_safe: float) -> dict:
    """:func:`reward_metrics` of answering every prompt with the refusal."""
    return reward_metrics(rewards, samples, [REFUSAL] * len(samples), w_help, w_safe)
