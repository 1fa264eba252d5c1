"""The learner of a parallel executor's workers, as the main process sees it.

With a pool (``execution.executor = "process"``) the workers train; the main process needs of the
learner only what the orchestrator reads (the initial state, which group each key is in, the charged
cost and payload, each client's sample count) and the final evaluation, which the workers run too.
So it builds no model of its own: :class:`RemoteLearner` asks one worker (``describe``) while the
others start, and sends every other call to the executor.  It is a complete
:class:`~pwffsim.learn.contract.Learner`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence


class RemoteLearner:
    """``executor``: one with ``call(method, *args) -> handle`` whose workers hold the real learner;
    ``train_samples``: every client's training-set size (an int for all, or one per client), as the
    scenario gives it without the learner (:func:`pwffsim.sim.builders.train_sample_counts`)."""

    def __init__(self, executor: Any, train_samples: int | Sequence[int]):
        self.executor = executor
        facts = executor.call("describe").result()
        self._initial = facts["initial_state"]
        self._groups: dict[str, str] = dict(facts["groups"])
        self._cost = tuple(facts["cost"])
        self.local_scheme: str = facts["local_scheme"]
        self._samples = train_samples

    def initial_state(self) -> dict:
        return {k: v.clone() for k, v in self._initial.items()}

    def parameter_group(self, key: str) -> str:
        return self._groups[key]

    def estimate_cost(self) -> tuple[float, int]:
        return self._cost

    def num_samples(self, client: int) -> int:
        n = self._samples
        return int(n) if isinstance(n, int) else int(n[client])

    def charged_payload_bytes(self, groups: tuple[str, ...]) -> int:
        return int(self.executor.call("charged_payload_bytes", tuple(groups)).result())

    def run(self, job: Any) -> Any:
        return self.executor.submit(job).result()

    def evaluate(self, state: Mapping, client: int) -> float:
        return self.executor.call("evaluate", state, client).result()

    def evaluate_metrics(self, state: Mapping, client: int, pref_help: float = 0.5, pref_safe: float = 0.5) -> dict:
        return self.executor.call("evaluate_metrics", state, client, pref_help, pref_safe).result()
