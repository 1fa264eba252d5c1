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
  is submitted, so training overlaps the event loop and other clients' training.  Each worker builds
  its learner once (the frozen base stays loaded); a job carries only its trainable state and seeds,
  each state dict as one safetensors buffer (:mod:`.wire`).  A learner that trains and measures apart
  (:class:`~pwffsim.learn.contract.MeasuresApart`) has a job's held-out measurement sent back to the
  pool as soon as its training returns: the aggregation waits only for the training
  (:meth:`_PoolHandle.trained`), the trace rows for the measurement (:meth:`_PoolHandle.result`), so
  one round's measurements fill the workers the round barrier leaves idle.

Both also run any learner method for the orchestrator (:meth:`call`: the final evaluation).

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
from dataclasses import replace
from typing import Any, Mapping, Protocol

from ..learn.contract import Learner, MeasuresApart, TrainJob, TrainResult
from .wire import PackCache, PackedState, pack_job, pack_result, unpack_job, unpack_result


class Handle(Protocol):
    """A submitted job. Optional beside these: ``trained()`` (the result as far as the aggregation
    needs it: state, weight, training loss) and ``done()`` (the full result is there without waiting);
    without them, ``result()`` serves for both and the result counts as ready."""

    def result(self) -> TrainResult: ...
    def cancel(self) -> bool: ...


class TrainingExecutor(Protocol):
    def submit(self, job: TrainJob) -> Handle: ...
    def close(self) -> None: ...


_UNSET = object()


class _LazyHandle:
    """A job, or any learner call, run when its result is first asked for."""

    def __init__(self, learner: Learner, job: Any, method: str = "run", args: tuple = ()):
        self._learner, self._method = learner, method
        self._args: tuple | None = (job,) if method == "run" else args
        self._result: Any = _UNSET

    def result(self) -> Any:
        if self._result is _UNSET:
            if self._args is None:
                raise RuntimeError(f"result() of a cancelled {self._method} call")
            self._result = getattr(self._learner, self._method)(*self._args)
            self._args = None
        return self._result

    trained = result

    def done(self) -> bool:
        return True  # ready whenever asked: it runs then

    def cancel(self) -> bool:
        if self._result is _UNSET:
            self._args = None
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

    def call(self, method: str, *args: Any) -> _LazyHandle:
        """``learner.<method>(*args)``, run when its result is asked for."""
        return _LazyHandle(self.learner, None, method, args)

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
    try:
        _WORKER_LEARNER = TorchLearner(model_spec, data_spec, train_spec, torch_threads=threads)
    except Exception as e:  # raised again by every call, so the main process reports it (one line)
        global _WORKER_ERROR
        _WORKER_ERROR = e


_WORKER_ERROR: Exception | None = None


def _worker_learner() -> Any:
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
    assert _WORKER_LEARNER is not None, "worker not initialised"
    return _WORKER_LEARNER


def _started_in_worker() -> int:
    """Nothing: submitted once per worker when the pool is made, so every worker starts (and builds
    its learner) at once, not at the first round's jobs."""
    return os.getpid()


def _train_in_worker(job: TrainJob) -> TrainResult:
    """The training of a (packed) job; measured too if the learner cannot measure apart."""
    learner = _worker_learner()
    train = learner.train if isinstance(learner, MeasuresApart) else learner.run
    return pack_result(train(unpack_job(job)))


def _measure_in_worker(job: TrainJob, trained: TrainResult) -> TrainResult:
    """The held-out metrics of a trained result; returned without its states (the caller has them)."""
    res = _worker_learner().measure(unpack_job(job), unpack_result(trained))
    return replace(res, state={}, personal_state=None)


def _call_in_worker(method: str, args: tuple) -> Any:
    args = tuple(a.unpack() if isinstance(a, PackedState) else a for a in args)
    return getattr(_worker_learner(), method)(*args)


def _run_many_in_worker(jobs: list) -> list:
    """A group of (packed) jobs through the learner's batched ``run_many`` (:mod:`.pool_batches`)."""
    return [pack_result(r) for r in _worker_learner().run_many([unpack_job(j) for j in jobs])]


def _measurement_job(job: TrainJob) -> TrainJob:
    """What measuring needs of a job: its client, preferences and personal reset (no start state)."""
    return replace(job, start_state={}, prox_anchor=None, personal_start=None)


class _PoolHandle:
    """A job in the pool: its training future and, once that returns unmeasured, the measurement
    sent straight back to the pool (from the pool's result thread, so no worker waits for the event
    loop to ask)."""

    def __init__(self, executor: "ProcessPoolExecutor", job: TrainJob):
        self._executor = executor
        self._measure_job = executor.pack(_measurement_job(job))
        self._measured: cf.Future = cf.Future()
        self._trained: TrainResult | None = None
        self._train = executor._submit(_train_in_worker, executor.pack(job))
        self._train.add_done_callback(self._on_trained)

    def _on_trained(self, fut: cf.Future) -> None:
        if self._passed_on(fut):
            return
        if fut.result().measured:
            self._measured.set_result(None)
            return
        try:
            self._executor._submit(_measure_in_worker, self._measure_job, fut.result()).add_done_callback(
                self._on_measured)
        except RuntimeError as e:  # the pool is shutting down (an abort): nothing will ask
            self._measured.set_exception(e)

    def _on_measured(self, fut: cf.Future) -> None:
        if not self._passed_on(fut):
            self._measured.set_result(fut.result())

    def _passed_on(self, fut: cf.Future) -> bool:
        """True if the measurement is settled already or ``fut``'s cancellation or error settles it."""
        if self._measured.done():
            return True
        if fut.cancelled():
            self._measured.cancel()
            return True
        if fut.exception() is not None:
            self._measured.set_exception(fut.exception())
            return True
        return False

    def trained(self) -> TrainResult:
        """The training's result (the held-out metrics may still be NaN: see :meth:`result`)."""
        if self._trained is None:
            self._trained = unpack_result(self._train.result())
        return self._trained

    def done(self) -> bool:
        """Whether :meth:`result` returns without waiting."""
        return self._measured.done()

    def result(self) -> TrainResult:
        """The full, measured result (waits for the measurement if it is still running)."""
        trained = self.trained()
        if trained.measured:
            return trained
        measured = self._measured.result()
        return replace(measured, state=trained.state, personal_state=trained.personal_state)

    def cancel(self) -> bool:
        return self._train.cancel()


class ProcessPoolExecutor:
    """``batch_clients > 1``: each worker computes groups of jobs together (:mod:`.pool_batches`)."""

    def __init__(self, model_spec: Any, data_spec: Any, train_spec: Any, torch_threads: int, workers: int,
                 batch_clients: int = 1):
        ctx = mp.get_context("spawn")
        self._pool = cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker,
            initargs=((model_spec, data_spec, train_spec, torch_threads), os.getpid()),
        )
        self._packs = PackCache()
        self._batches = None
        if batch_clients > 1:
            from .pool_batches import PoolBatches

            self._batches = PoolBatches(lambda jobs: self._submit(_run_many_in_worker, jobs), self.pack,
                                        batch_clients, workers)
        for _ in range(workers):  # start every worker now (each spawned by a submit finding none idle)
            self._submit(_started_in_worker)

    def pack(self, job: TrainJob) -> TrainJob:
        return pack_job(job, self._packs)

    def _submit(self, fn: Any, *args: Any) -> cf.Future:
        # Workers start on demand inside submit: started with SIGINT ignored (kept across exec, and
        # Python keeps an ignored SIGINT ignored), a Ctrl-C cannot interrupt one while it imports.
        with _sigint_ignored():
            return self._pool.submit(fn, *args)

    def submit(self, job: TrainJob) -> Handle:
        if self._batches is not None:
            return self._batches.submit(job)
        return _PoolHandle(self, job)

    def call(self, method: str, *args: Any) -> cf.Future:
        """``learner.<method>(*args)`` in a worker (state dict arguments sent packed)."""
        packed = tuple(self._packs.pack(a) if isinstance(a, Mapping) else a for a in args)
        return self._submit(_call_in_worker, method, packed)

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
