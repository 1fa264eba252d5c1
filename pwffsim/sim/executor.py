"""Where real training runs.

The orchestrator submits a :class:`~pwffsim.learn.contract.TrainJob` when a client's computation starts
in simulated time and asks for its result only at the aggregation event.  A job's result depends only
on the job and the learner's specs (its seed included), so the executor never changes a run's
tables: in-process and process-pool runs give identical traces.

* :class:`InProcessExecutor` runs a job lazily, when its result is first asked for (a job whose
  client dropped out or missed the deadline before finishing its computation is cancelled and never
  run); with ``execution.batch_clients > 1``, together with other pending jobs
  (:mod:`pwffsim.sim.batching`).
* :class:`ProcessPoolExecutor` sends each job to a pool of worker processes (``spawn``) as soon as it
  is submitted, so training overlaps the event loop and other clients' training.

Workers never outlive the run: each one watches its parent (:func:`_exit_with_parent`: a daemon thread
that ends the worker within :data:`PARENT_POLL_S` once the main process is gone, even after a
``kill -9`` of it) and ignores SIGINT, so a Ctrl-C reaches the main process alone, which stops the
pool (pending jobs cancelled) on its way out.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
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
    """Lazy: a job runs when its result is first asked for. ``batch_clients > 1`` with a learner
    that has ``run_many``: together with up to ``batch_clients - 1`` other pending jobs
    (:mod:`pwffsim.sim.batching`)."""

    def __init__(self, learner: Learner, batch_clients: int = 1):
        self.learner = learner
        self._batched = None
        if batch_clients > 1 and callable(getattr(learner, "run_many", None)):
            from .batching import PendingJobs

            self._batched = PendingJobs(learner, batch_clients)

    def submit(self, job: TrainJob) -> Handle:
        if self._batched is not None:
            return self._batched.submit(job)
        return _LazyHandle(self.learner, job)

    def close(self) -> None:
        pass


_WORKER_LEARNER: Learner | None = None

#: How often a worker checks that the main process is still there (s).
PARENT_POLL_S = 0.2


def _exit_with_parent(parent_pid: int, poll_s: float = PARENT_POLL_S) -> None:
    """Start a daemon thread that ends this process as soon as its parent ``parent_pid`` is gone (the
    process is then re-parented, so ``os.getppid()`` changes), whatever killed the parent."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="pwffsim-parent-watch", daemon=True).start()


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored inside the block (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _init_worker(specs: tuple[Any, Any, Any, int], parent_pid: int) -> None:
    from ..learn.train import Learner as TorchLearner

    global _WORKER_LEARNER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _exit_with_parent(parent_pid)
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
            initargs=((model_spec, data_spec, train_spec, torch_threads), os.getpid()),
        )

    def submit(self, job: TrainJob) -> cf.Future:
        # Workers start on demand inside submit: started with SIGINT ignored (kept across exec, and
        # Python keeps an ignored SIGINT ignored), a Ctrl-C cannot interrupt one while it imports.
        with _sigint_ignored():
            return self._pool.submit(_run_in_worker, job)

    def close(self) -> None:
        """Wait for the running jobs, cancel the pending ones, stop the workers."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Stop now (Ctrl-C, an error): cancel every pending job and terminate the workers without
        waiting for the running ones."""
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join(timeout=5)
