"""Shared test helpers.

``StubLearner`` stands in for the real learner in tests of timing and energy, which do not depend on
what the model learns: its payload size and FLOPs are chosen by the test, and its "update" is a known
function of the client, so aggregation can be checked exactly.
"""
from __future__ import annotations

import math

import pytest
import torch

from pwffsim.learn.train import TrainResult


class StubLearner:
    def __init__(self, payload_bytes: int = 40_000, flops: float = 1e9, samples: dict | None = None):
        assert payload_bytes % 4 == 0
        self.payload_bytes = payload_bytes
        self.flops = flops
        self.samples = samples or {}
        self.jobs = []

    def initial_state(self):
        return {"w": torch.zeros(self.payload_bytes // 4, dtype=torch.float32)}

    def estimate_cost(self):
        return self.flops, 1000

    def num_samples(self, client: int) -> int:
        return self.samples.get(client, 10 + client)

    def parameter_group(self, key: str) -> str:
        return "lora"

    def evaluate_metrics(self, state, client, pref_help, pref_safe):
        return dict(eval_loss=math.nan, eval_loss_others=math.nan, reward_help=math.nan, reward_safe=math.nan,
                    objective=math.nan)

    def run(self, job):
        self.jobs.append((job.round, job.client))
        new = {"w": job.start_state["w"] + float(job.client + 1)}
        return TrainResult(client=job.client, round=job.round, state=new, num_samples=self.num_samples(job.client),
                           train_loss=1.0 / (job.round + 1), eval_loss=math.nan, flops=self.flops, tokens=1000,
                           eval_loss_others=math.nan, reward_help=math.nan, reward_safe=math.nan, objective=math.nan)


def event_rows(sim, kind, client=None):
    """The events rows of ``kind`` (of one client, if given), in the order they were written."""
    return [e for e in sim.events if e["kind"] == kind and (client is None or e["client"] == client)]


@pytest.fixture
def stub_learner():
    return StubLearner()
