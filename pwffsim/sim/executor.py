"""Where real training runs.

The orchestrator submits a :class:`~pwffsim.learn.contract.TrainJob` when a client's computation starts
in simulated time and asks for its result only at the aggregation event.  A job's result depends only
on the job and the learner's specs (its seed included), so the executor never changes a run's
tables: in-process and process-pool runs give identical traces.

* :class:`InProcessExecutor` runs a job lazily, when its result is first asked for (a job whose
  client dropped out or missed the deadline before finishing its computation is cancelled and never
  run).
* :class:`ProcessPoolExecutor` sends each job to a pool of worker processes (``spawn``) as soon as it
  is submitted, so training overlaps the event loop and other clients' training.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from typing import Any, Protocol

from ..learn.contract import Learner, TrainJob, TrainResult


class Handle(Protocol):
    def result(self) -> TrainResult: ...
    def cancel(self) -> bool: ...


class TrainingExecutor(Protocol):
    def submit(self, job: TrainJob) -> Handle: ...
    def close(self) -> None: ...


class _LazyHandle:
    def __init__(self, learner: Learner, job: TrainJob):
        self._learner = learner
        self._job: TrainJob | None = job
        self._result: TrainResult | None = None

    def result(self) -> TrainResult:
        if self._result is None:
            if self._job is None:
                raise RuntimeError("result() of a cancelled training job")
            self._result = self._learner.run(self._job)
            self._job = None
        return self._result

    def cancel(self) -> bool:
        if self._result is None:
            self._job = None
            return True
        return False


class InProcessExecutor:
    def __init__(self, learner: Learner):
        self.learner = learner

    def submit(self, job: TrainJob) -> _LazyHandle:
        return _LazyHandle(self.learner, job)

    def close(self) -> None:
        pass


_WORKER_LEARNER: Learner | None = None


def _init_worker(specs: tuple[Any, Any, Any, int]) -> None:
    from ..learn.train import Learner as TorchLearner

    global _WORKER_LEARNER
    model_spec, data_spec, train_spec, threads = specs
    _WORKER_LEARNER = TorchLearner(model_spec, data_spec, train_spec, torch_threads=threads)


def _run_in_worker(job: TrainJob) -> TrainResult:
    assert _WORKER_LEARNER is not None, "worker not initialised"
    return _WORKER_LEARNER.run(job)


class ProcessPoolExecutor:
    def __init__(self, model_spec: Any, data_spec: Any, train_spec: Any, torch_threads: int, workers: int):
        ctx = mp.get_context("spawn")
        self._pool = cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker,
            initargs=((model_spec, data_spec, train_spec, torch_threads),),
        )

    def submit(self, job: TrainJob) -> cf.Future:
        return self._pool.submit(_run_in_worker, job)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
