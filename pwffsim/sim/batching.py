"""Batched in-process training (``execution.batch_clients = K``): the lazy in-process executor, but a
job whose result is asked for runs together with up to ``K - 1`` other pending jobs (submitted, not
cancelled, not yet run; the earliest submitted first) through the learner's ``run_many``
(:meth:`pwffsim.learn.train.Learner.run_many`), and their results are kept until asked for.

A job's result depends only on the job, so running it earlier changes nothing but the float round-off
of the batched computation (:mod:`pwffsim.learn.batched`). A job run early and cancelled afterwards
(its client dropped out before its computation ended) was computed for nothing: the price of batching
without knowing the future. If ``run_many`` raises, the asked-for job runs alone (``learner.run``), so
its own error, if it has one, reaches its caller and the other jobs stay pending.
"""
from __future__ import annotations

from typing import Any

from ..learn.contract import TrainJob, TrainResult


class BatchedHandle:
    """One submitted job of a :class:`PendingJobs`."""

    def __init__(self, jobs: "PendingJobs", job: TrainJob):
        self._jobs = jobs
        self.job: TrainJob | None = job
        self._result: TrainResult | None = None

    def result(self) -> TrainResult:
        if self._result is None:
            if self.job is None:
                raise RuntimeError("result() of a cancelled training job")
            self._jobs.run_with(self)
        return self._result

    def cancel(self) -> bool:
        """Drop the job if it has not run (True); a job already run keeps its result (False)."""
        if self._result is None:
            self._jobs.discard(self)
            self.job = None
            return True
        return False

    def _done(self, result: TrainResult) -> None:
        self._result, self.job = result, None


class PendingJobs:
    """The submitted jobs not yet run, in submission order; runs up to ``size`` at a time."""

    def __init__(self, learner: Any, size: int):
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        self.learner, self.size = learner, size
        self._pending: dict[int, BatchedHandle] = {}  # id -> handle, insertion (submission) order

    def submit(self, job: TrainJob) -> BatchedHandle:
        h = BatchedHandle(self, job)
        self._pending[id(h)] = h
        return h

    def discard(self, h: BatchedHandle) -> None:
        self._pending.pop(id(h), None)

    def run_with(self, h: BatchedHandle) -> None:
        """Run ``h``'s job with up to ``size - 1`` other pending jobs and store every result."""
        others = [o for o in self._pending.values() if o is not h][:self.size - 1]
        batch = [h, *others]
        try:
            results = self.learner.run_many([b.job for b in batch])
        except Exception:  # noqa: BLE001 - the asked-for job alone, with its own error if any
            batch, results = [h], [self.learner.run(h.job)]
        for b, r in zip(batch, results):
            self.discard(b)
            b._done(r)
