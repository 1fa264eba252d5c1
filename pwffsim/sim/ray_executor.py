"""Training on Ray actors (``execution.executor = "ray"``): a local Ray, or a cluster's.

:class:`RayExecutor` starts ``workers`` actors (one CPU each); each builds a
:class:`pwffsim.learn.train.Learner` once (the frozen base model stays loaded) and runs the jobs it is
sent. A job goes to the actor with the fewest jobs in flight (results depend only on the job, so any
assignment gives the same traces). The broadcast global part of a round's jobs is put in Ray's object
store once and every job carries a reference to it (:mod:`pwffsim.sim.ray_transport` says how it is
found without changing :class:`~pwffsim.learn.contract.TrainJob`).

``address`` None starts a local Ray with ``workers`` CPUs (``ray.init(address="local")``: never an
instance found through ``RAY_ADDRESS`` or ``ray start``), shut down at :meth:`RayExecutor.close`; an
address (``"auto"``, ``"host:port"``, ``"ray://host:port"``) joins an existing cluster, left running.
A Ray already initialised in this process is used as it is and left running. On a cluster every node
must import the same pwffsim (and torch) and read the scenario's files at the same paths.

Nothing outlives the run: actors are owned by this process (Ray ends them with it); a local Ray that
this executor started is watched by :mod:`pwffsim.sim.ray_reaper`, which kills what is left of it
(the raylet's agents linger otherwise) once this process is gone, even after a ``kill -9``.

Ray is imported only here, when chosen; without it, :func:`import_ray` raises a one-line
``ValueError`` naming the extra.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from .ray_transport import PartCache, SharedParts, pack, unpack

RAY_MISSING = "execution.executor='ray' needs Ray: pip install 'pwffsim[ray]'"


def import_ray():
    """The ``ray`` module, or ``ValueError(RAY_MISSING)``."""
    try:
        import ray
    except ImportError as err:
        raise ValueError(RAY_MISSING) from err
    return ray


class LearnerActor:
    """One worker (a Ray actor; a plain class, made remote by :class:`RayExecutor`): a learner built once."""

    def __init__(self, specs: tuple, torch_threads: int):
        import ray

        from ..learn.train import Learner

        self.learner = Learner(*specs, torch_threads=torch_threads)
        self.parts = PartCache(ray.get)

    def ready(self) -> int:
        return os.getpid()

    def run(self, packed) -> tuple:
        """The job's result and the seconds it took here."""
        from ..learn.contract import TrainJob

        t0 = time.perf_counter()
        result = self.learner.run(unpack(packed, self.parts, TrainJob))
        return result, time.perf_counter() - t0

    def call(self, method: str, *args) -> tuple:
        """``learner.<method>(*args)`` (a public method) and the seconds it took."""
        if method.startswith("_"):
            raise AttributeError(f"not a public learner method: {method!r}")
        t0 = time.perf_counter()
        value = getattr(self.learner, method)(*args)
        return value, time.perf_counter() - t0


class RayHandle:
    """A job (or call) in flight: :meth:`result` waits for it, :meth:`cancel` drops it."""

    def __init__(self, executor: "RayExecutor", ref: Any):
        self._executor, self._ref = executor, ref
        self._done, self._value, self._cancelled = False, None, False

    def result(self) -> Any:
        if self._cancelled:
            raise RuntimeError("result() of a cancelled training job")
        if not self._done:
            self._value = self._executor._fetch(self._ref)
            self._done, self._ref = True, None
        return self._value

    def cancel(self) -> bool:
        """Cancel the job if it is not finished (a queued job never runs; a running one finishes unseen)."""
        if self._done or self._cancelled:
            return False
        self._cancelled = True
        self._executor._cancel(self._ref)
        self._ref = None
        return True


def _start_reaper(ray) -> subprocess.Popen | None:
    """The watcher of the local Ray about to start (Linux only: it reads /proc)."""
    if not Path("/proc/self/stat").exists():
        return None
    script = Path(__file__).with_name("ray_reaper.py")
    markers = [os.path.dirname(os.path.abspath(ray.__file__)), "ray::"]
    return subprocess.Popen([sys.executable, str(script), str(os.getpid()), *markers], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, start_new_session=True)


def _stop_reaper(reaper: subprocess.Popen | None) -> None:
    """Close the reaper's stdin (it kills what is left of the local Ray and exits); wait for it."""
    if reaper is None:
        return
    try:
        reaper.stdin.close()
        reaper.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        reaper.kill()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """``ConnectionError`` at once if nothing listens at a ``host:port`` / ``ray://host:port`` address (Ray
    itself retries for minutes); ``"auto"`` and the like are left to Ray."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(f"nothing answers at {hostport} ({err.strerror or err})") from err


def init_ray(ray, workers: int, address: str | None) -> None:
    """``ray.init``, quietly: a new local Ray with ``workers`` CPUs (address None), or join ``address``."""
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the accelerator env var FutureWarning of ray.init
        if address is None:
            # Ray starts its workers at nice 15; here they do the run's training: nice 0, as in-process
            ray.init(address="local", num_cpus=workers, num_gpus=0, include_dashboard=False,
                     _system_config={"worker_niceness": 0}, **quiet)
        else:  # a cluster's workers import this very pwffsim (shipped once, cached by Ray by its hash)
            check_reachable(address)
            package = str(Path(__file__).resolve().parents[1])
            ray.init(address=address, runtime_env={"py_modules": [package]}, **quiet)


class RayExecutor:
    """Runs :class:`~pwffsim.learn.contract.TrainJob` s on ``workers`` Ray actors (see the module)."""

    def __init__(self, model_spec: Any, data_spec: Any, train_spec: Any, torch_threads: int, workers: int,
                 address: str | None = None):
        ray = import_ray()
        self._ray, self.address = ray, address
        self.stats = {"init_s": 0.0, "wait_s": 0.0, "worker_s": 0.0, "jobs": 0}
        self._started, self._reaper = False, None
        t0 = time.perf_counter()
        if not ray.is_initialized():
            self._reaper = _start_reaper(ray) if address is None else None
            try:
                init_ray(ray, workers, address)
            except BaseException as err:  # e.g. no cluster at that address: one line (Ctrl-C: as it is)
                _stop_reaper(self._reaper)
                if not isinstance(err, Exception):
                    raise
                what = "start a local Ray" if address is None else f"join the Ray cluster at {address!r}"
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise ValueError(f"execution.executor='ray': cannot {what}: {first}") from err
            self._started = True
        self.stats["init_s"] = time.perf_counter() - t0
        actor = ray.remote(num_cpus=1)(LearnerActor)
        specs = (model_spec, data_spec, train_spec)
        self._actors = [actor.remote(specs, torch_threads) for _ in range(workers)]
        self._in_flight: list[list] = [[] for _ in self._actors]
        self._next = 0  # round-robin among the least loaded
        self._shared = SharedParts(ray.put)
        self._closed = False

    # -- dispatch ------------------------------------------------------------------------------------
    def _pick(self) -> int:
        """The actor with the fewest jobs in flight (finished ones pruned); ties: round-robin."""
        for i, refs in enumerate(self._in_flight):
            if refs:
                _, pending = self._ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
                self._in_flight[i] = pending
        n = len(self._actors)
        order = [(self._next + k) % n for k in range(n)]
        best = min(order, key=lambda i: len(self._in_flight[i]))
        self._next = (best + 1) % n
        return best

    def _send(self, method: str, *args) -> RayHandle:
        if self._closed:
            raise RuntimeError("the Ray executor is closed")
        i = self._pick()
        ref = getattr(self._actors[i], method).remote(*args)
        self._in_flight[i].append(ref)
        return RayHandle(self, ref)

    def submit(self, job: Any) -> RayHandle:
        """Send ``job`` to an actor (its global part by reference) and return its handle at once."""
        return self._send("run", pack(job, self._shared))

    def call(self, method_name: str, *args) -> RayHandle:
        """Run ``learner.<method_name>(*args)`` on an actor's learner (e.g. ``"evaluate_metrics"``)."""
        return self._send("call", method_name, *args)

    def warm_up(self) -> list[int]:
        """Wait until every actor has built its learner; their process ids."""
        return self._ray.get([a.ready.remote() for a in self._actors])

    def _fetch(self, ref: Any) -> Any:
        t0 = time.perf_counter()
        value, worker_s = self._ray.get(ref)
        self.stats["wait_s"] += time.perf_counter() - t0
        self.stats["worker_s"] += worker_s
        self.stats["jobs"] += 1
        return value

    def _cancel(self, ref: Any) -> None:
        try:
            self._ray.cancel(ref)
        except Exception:  # already finished, or Ray is going away: nothing to stop
            pass

    # -- ending --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Wait for the running jobs, cancel the pending ones, stop the actors; then ``ray.shutdown()`` if
        this executor called ``ray.init`` (a local Ray stops; a joined cluster goes on without us)."""
        if self._closed:
            return
        pending = [r for refs in self._in_flight for r in refs]
        for ref in pending:
            self._cancel(ref)  # queued ones never run; a running one finishes
        if pending:
            self._ray.wait(pending, num_returns=len(pending), timeout=None, fetch_local=False)
        self._end()

    def abort(self) -> None:
        """Stop now (Ctrl-C, an error): kill the actors without waiting for their jobs."""
        if not self._closed:
            self._end()

    def _end(self) -> None:
        self._closed = True
        self.stats["puts"] = self._shared.puts
        self._shared.clear()
        for a in self._actors:
            try:
                self._ray.kill(a, no_restart=True)
            except Exception:  # already gone (its node died, Ray shut down)
                pass
        self._in_flight = [[] for _ in self._actors]
        if self._started:
            try:
                self._ray.shutdown()
            finally:
                _stop_reaper(self._reaper)
